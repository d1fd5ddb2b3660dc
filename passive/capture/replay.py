"""A stream read once (standard input, a named pipe, a device) whose first bytes, those sniffing its format read, are
read again by the reader that follows (:func:`~passive.capture.pcapfile.sniff_kind`), or handed to a compiled scanner
reading the stream's own descriptor (:meth:`Replay.take_prefix`)."""

from __future__ import annotations

import io
from typing import Any, BinaryIO


class Replay:
    """A stream that can be read once, whose first bytes (those sniffing read) are read again after
    :meth:`rewind`. It never seeks or asks for the size, so a pipe, a FIFO or a device is read as it comes."""

    mode = "rb"

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.kept = b""  # what was read while recording
        self.pos = 0  # next byte of ``kept`` to hand out again
        self.recording = True

    def read(self, size: int = -1) -> bytes:
        if self.pos < len(self.kept):
            end = len(self.kept) if size is None or size < 0 else min(len(self.kept), self.pos + size)
            data = self.kept[self.pos : end]
            self.pos = end
            if not self.recording and self.pos == len(self.kept):
                self.kept, self.pos = b"", 0  # handed out again: no longer needed
            return data
        data = self.fh.read(size)
        if self.recording:
            self.kept += data
            self.pos = len(self.kept)
        return data

    def rewind(self, recording: bool = False) -> None:
        """Read again from the first byte; with ``recording``, go on keeping what is read."""
        self.pos = 0
        self.recording = recording

    def take_prefix(self, at_least: int) -> bytes:
        """Everything taken from the stream so far and not handed out (what sniffing read, and what the buffered
        file holds beyond it), read on to ``at_least`` bytes where the stream has them: a reader of the stream's own
        descriptor starts with these, then reads on. They stay to be read again first (:meth:`read`), by a reader that
        takes over should that one fail before it read the descriptor."""
        prefix = self.kept[self.pos :]
        fh: Any = self.fh
        try:
            if isinstance(fh, io.BufferedReader):
                prefix += fh.read1(len(fh.peek(1)))  # the buffer's bytes, and no read more than peek's
                fh = fh.raw
            while len(prefix) < at_least and (more := fh.read(at_least - len(prefix))):
                prefix += more
        finally:
            self.kept, self.pos, self.recording = prefix, 0, False
        return prefix

    def close(self) -> None:
        self.fh.close()
