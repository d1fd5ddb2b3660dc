"""A progress display for long captures, driven by the engine's packet counter from a side thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from passive.capture.counters import CaptureCounters
from passive.core.text import printable

# Short runs finish before this and show nothing.
DELAY_SECONDS = 1.0


@contextlib.contextmanager
def packet_progress(console: Console, label: str, counters: CaptureCounters) -> Iterator[None]:
    """Show packets read and flows while the body runs, only on a terminal and only if it takes a while."""
    if not console.is_terminal:
        yield
        return
    stop = threading.Event()

    def show() -> None:
        if stop.wait(DELAY_SECONDS):
            return
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("")
            while not stop.wait(0.25):
                progress.update(
                    task,
                    description=(f"{printable(label)}: {counters.packets_read:,} packets, {counters.flows:,} flows"),
                )

    thread = threading.Thread(target=show, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
