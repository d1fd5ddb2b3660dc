"""Ctrl-C while a command reads captures: the first stops the reading and lets the command write what was read, the
second exits at once.

:func:`interruptible` installs the SIGINT handler for the length of a command. The first signal sets the
:class:`~passive.capture.stop.StopFlag` the capture readers poll between packets: they stop there, the flows read so
far are finished, and the command writes its outputs as usual, the summary marked ``"partial": true``. The command
then ends with one note on standard error and exit status 130, whatever status it would have had. A second signal
ends the process on the spot, with status 130 and no traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import click

from passive.analysis.pipeline import Results
from passive.capture.stop import StopFlag
from passive.cli.errors import EXIT_INTERRUPTED
from passive.core.text import printable

# Shown again if a progress display hid it when the process ends on the spot.
_SHOW_CURSOR = "\x1b[?25h"


class Interruption:
    """One command's stop flag, and the results whose reading it may have cut short (for the closing note)."""

    def __init__(self) -> None:
        self.stop = StopFlag()
        self.results: list[Results] = []
        self.immediate = False  # a Ctrl-C now raises KeyboardInterrupt (work that does not poll the flag)

    @contextlib.contextmanager
    def at_once(self) -> Iterator[None]:
        """Around work that does not poll the stop flag (a probe): Ctrl-C there stops the command at once, as a
        second Ctrl-C would."""
        self.immediate = True
        try:
            yield
        finally:
            self.immediate = False

    @property
    def requested(self) -> bool:
        return self.stop.requested

    def partial(self) -> dict[str, Any]:
        """What a document made of these results adds when a capture was not read to its end (else nothing)."""
        cut = [r.stopped_at for r in self.results if r.stopped_at is not None]
        unread = [path for r in self.results for path in r.not_read]
        if not cut and not unread:
            return {}
        return {"partial": True, "stopped_at": cut[0] if cut else None, "not_read": unread}

    def note(self) -> str:
        """What was not read, in one line."""
        cut = [r.stopped_at for r in self.results if r.stopped_at is not None]
        unread = [path for r in self.results for path in r.not_read]
        parts = [_stopped_at(where) for where in cut]
        if unread:
            names = ", ".join(printable(path) for path in unread[:3]) + (", ..." if len(unread) > 3 else "")
            parts.append(f"{len(unread)} capture(s) not read ({names})")
        if not parts:
            return "interrupted after the captures were read: every output is whole"
        return "interrupted: " + "; ".join(parts) + "; what was read is written, marked partial"


def _stopped_at(where: dict[str, Any]) -> str:
    text = f"stopped after packet {where['packets']:,} of {printable(where['file'])}"
    if where.get("size") and where.get("bytes") is not None:  # worker processes sharing a file say no position
        text += f" ({where['bytes'] / where['size']:.0%} of its bytes)"
    return text


def _exit_now(signum: int, frame: Any) -> None:
    """The second Ctrl-C: end the process at once (no cleanup, no traceback)."""
    try:
        if sys.stderr.isatty():
            sys.stderr.write(_SHOW_CURSOR)
        sys.stderr.write("\nleakscope: interrupted again: exiting at once\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def interruptible() -> Iterator[Interruption]:
    """For the length of a command: the first SIGINT requests a stop, the second exits. On the way out of a stopped
    command, its note and exit status 130 replace whatever status it would have ended with (errors propagate)."""
    run = Interruption()

    def on_sigint(signum: int, frame: Any) -> None:
        if run.immediate:
            raise KeyboardInterrupt
        if run.stop.requested:
            _exit_now(signum, frame)
        run.stop.requested = True

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread (a test runner's worker): leave signals alone
        previous = None
    try:
        yield run
    except SystemExit:
        if not run.stop.requested:
            raise
    finally:
        if previous is not None and not run.stop.requested:
            signal.signal(signal.SIGINT, previous)  # once stopped, a further Ctrl-C still means "at once"
    if run.stop.requested:
        # Only the note and the exit are left: a further Ctrl-C (while the interpreter shuts down, when handlers
        # are reset) must not turn status 130 into death by SIGINT.
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        click.echo(f"leakscope: {run.note()}", err=True)
        raise SystemExit(EXIT_INTERRUPTED)
