"""A compressed capture expanded by a process of its own: ``python -m passive.capture.expand COMPRESSION`` reads the
compressed bytes on its standard input and writes them expanded to its standard output, the pipe the compiled
scanner reads (:class:`passive.capture.piped.PipedCapture`).

It reads as the pure-Python reader does (:class:`~passive.capture.pcapfile.Decompressed`: a stream cut short gives
all before the cut), and holds what one decoder step gives. A damaged stream or a read error ends it with
:data:`DAMAGED` and one line on standard error saying why; its reader going away (a stop request, the analysis
ended) ends it quietly at its next write. Ctrl-C is the analysis's to handle: this process ignores it and ends when
its reader does.
"""

from __future__ import annotations

import os
import signal
import sys

from passive.capture.pcapfile import Decompressed
from passive.capture.piped import CHUNK, DECODER_ERRORS
from passive.core.errors import one_line

DAMAGED = 3
"""The exit status that says the stream was damaged or could not be read (the reason on standard error)."""


def expand(compression: str, source: int = 0, target: int = 1) -> str | None:
    """Expand the stream on ``source`` into ``target``; why it stopped early (damage), or None."""
    reader = Decompressed(compression, open(source, "rb", closefd=False))  # noqa: SIM115 - closed below
    try:
        while chunk := reader.read(CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(target, view) :]
    except BrokenPipeError:
        return None  # the scanner stopped reading
    except DECODER_ERRORS as exc:  # all before the damage was passed on
        return one_line(exc)
    finally:
        reader.close()
    return None


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    damage = expand(argv[0])
    if damage is None:
        return 0
    sys.stderr.write(damage + "\n")
    return DAMAGED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
