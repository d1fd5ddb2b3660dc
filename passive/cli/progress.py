"""One progress display for a whole run, on standard error and only when it is a terminal.

While captures are read it shows, refreshed from a side thread: which file (``file k/N`` when there are several),
bytes read with percent and ETA (by bytes of the input files as stored, so the compressed position for a
compressed file; bytes alone for a pipe, whose size nobody knows), packets, flows and findings so far. What comes
after the reading (rendering the tables, the report, merging into the store) is a named phase of the same display,
so no stretch of the run is silent. Before anything is written to standard output the display is cleared
(:meth:`RunProgress.pause`), so that it never mixes with the output on a shared terminal.

Counters are read without a lock: plain integers the reading thread updates, a glimpse a few times a second.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from passive.capture.counters import CaptureCounters
from passive.capture.stop import StopFlag
from passive.core.files import regular_file_size
from passive.core.text import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

# Short runs finish before this and show nothing.
DELAY_SECONDS = 1.0
# How often the text is recomputed (rich redraws on its own at its refresh rate).
REFRESH_SECONDS = 0.25
_UNITS = ("B", "kB", "MB", "GB", "TB")


def human_bytes(count: float) -> str:
    """Bytes as a person reads them: 1.2 GB (powers of 1000, as ls -h --si and rich show file sizes)."""
    for unit in _UNITS:
        if count < 1000 or unit == _UNITS[-1]:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


# What rich reads to take a stream that is not a terminal for one (rich.console.Console.is_terminal).
_TERMINAL_OVERRIDES = ("TTY_COMPATIBLE", "FORCE_COLOR")


def stderr_console() -> Console | None:
    """The console the display is drawn on, or None when standard error is no terminal, as rich decides. rich
    loads only when it could say yes: a run whose standard error is a file or a pipe never loads it (40 ms)."""
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        plain = isatty is None or not isatty()
    except ValueError:  # closed
        plain = True
    if plain and not any(name in os.environ for name in _TERMINAL_OVERRIDES):
        return None
    # rich's imports, here only. rich.progress is loaded now, in the main thread, so that the display's side thread
    # finds it loaded (an import there could hold a module lock while workers are forked).
    import rich.progress  # noqa: F401
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    return console if console.is_terminal else None


def _eta(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class RunProgress:
    """The display of one run: :meth:`file` wraps the reading of each capture (``around_file`` of the pipeline),
    :meth:`watch` is given the results being filled (for the findings count), :meth:`phase` names what follows."""

    def __init__(self, paths: Sequence[str], stop: StopFlag | None = None) -> None:
        self.console = stderr_console()
        self.enabled = self.console is not None
        self.stop = stop
        self.sizes = [regular_file_size(path) for path in paths]
        self.total = sum(s for s in self.sizes if s is not None) if None not in self.sizes else None
        self.index = 0  # files started
        self.name = ""
        self.counters: CaptureCounters | None = None
        self.results: Any = None  # the pipeline's Results: len(results.findings)
        self.file_base = 0  # counters.bytes_read when the current file started
        self.done_before = 0  # bytes of the files read before the current one (those of known size)
        self.reading_since: float | None = None  # when the first file started
        self.file_since = 0.0  # when the current one did
        self.phase_name: str | None = None
        self._lock = threading.Lock()
        self._live: Progress | None = None
        self._task: Any = None
        self._paused = False
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunProgress:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="leakscope-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
        self.pause()

    def watch(self, results: Any) -> None:
        self.results = results

    @contextlib.contextmanager
    def file(self, path: str, counters: CaptureCounters) -> Iterator[None]:
        """Around the reading of the next capture."""
        self.index += 1
        self.name, self.counters, self.file_base = path, counters, counters.bytes_read
        self.file_since = time.monotonic()
        if self.reading_since is None:
            self.reading_since = self.file_since
        try:
            yield
        finally:
            size = self.sizes[self.index - 1] if self.index <= len(self.sizes) else None
            self.done_before += size or 0

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """A step after the reading (rendering, the store): shown on the same display until it ends."""
        self.phase_name, self._paused = name, False
        try:
            yield
        finally:
            self.phase_name = None

    def pause_for_stdout(self) -> None:
        """Clear the display if standard output shares the terminal: the output is about to be written there."""
        if sys.stdout is not None and sys.stdout.isatty():
            self.pause()

    def pause(self) -> None:
        """Clear the display now (before writing to standard output); a later :meth:`phase` shows it again."""
        with self._lock:
            self._paused = True
            if self._live is not None:
                self._live.stop()
                self._live = None

    def _run(self) -> None:
        if self._closed.wait(DELAY_SECONDS):
            return
        while True:
            with self._lock:
                if not self._paused and (self.phase_name or self.counters is not None):
                    self._show(self.describe())
            if self._closed.wait(REFRESH_SECONDS):
                return

    def _show(self, text: str) -> None:
        if self._live is None:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # loaded: stderr_console

            # The text holds a file name, which whoever named the file chose: never read as markup.
            columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn())
            self._live = Progress(
                *columns, console=self.console, transient=True, redirect_stdout=False, redirect_stderr=False
            )
            self._live.start()
            self._task = self._live.add_task("")
        self._live.update(self._task, description=text)

    def describe(self) -> str:
        """The display's text now."""
        findings = len(self.results.findings) if self.results is not None else 0
        if self.phase_name:
            return f"{self.phase_name}: {findings:,} findings"
        counters = self.counters
        assert counters is not None
        parts = [f"file {self.index}/{len(self.sizes)}"] if len(self.sizes) > 1 else []
        parts.append(printable(self.name))
        parts.append(self._position(counters.bytes_read - self.file_base))
        parts.append(f"{counters.packets_read:,} packets, {counters.flows:,} flows, {findings:,} findings")
        text = " · ".join(parts)
        if self.stop is not None and self.stop.requested:
            text = "stopping (Ctrl-C again to quit at once): " + text
        return text

    def _position(self, in_file: int) -> str:
        """Bytes read, and percent and ETA when the sizes are known: of every file, else of this one."""
        size = self.sizes[self.index - 1] if 0 < self.index <= len(self.sizes) else None
        if size is None:
            return f"{human_bytes(in_file)} read"
        if self.total is not None:
            done, whole, since = self.done_before + in_file, self.total, self.reading_since or self.file_since
        else:
            done, whole, since = in_file, size, self.file_since
        whole = max(whole, 1)
        fraction = min(done / whole, 1.0)
        text = f"{fraction:.0%} of {human_bytes(whole)}"
        elapsed = time.monotonic() - since
        if 0 < fraction < 1 and elapsed > 0:
            text += f", ETA {_eta(elapsed * (1 - fraction) / fraction)}"
        return text
