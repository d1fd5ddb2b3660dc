"""A request to stop reading, polled by the file readers at packet boundaries.

Whoever wants a run to end early (the command line, on Ctrl-C) sets :attr:`StopFlag.requested`, from a signal
handler or another thread; a reader that sees it between two packets stops there, as if its file had ended, so the
flows already read are finished through the usual end-of-capture path. The reader then sets :attr:`StopFlag.cut`:
its file was not read to the end.
"""

from __future__ import annotations


class StopFlag:
    """Set :attr:`requested` to stop; a reader that stopped before the end of its file sets :attr:`cut`.

    Plain attributes, not a lock or an event: one attribute read per packet is all a reader pays, and a signal
    handler may set it at any point.
    """

    __slots__ = ("cut", "requested")

    def __init__(self) -> None:
        self.requested = False
        self.cut = False
