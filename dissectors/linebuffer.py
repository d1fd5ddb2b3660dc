"""Bounded line splitting for one direction of a text protocol, with raw-byte runs for literals and BDAT chunks.

Every item handed out carries the frame number and timestamp of the chunk in which its first byte arrived.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# RFC 5321 allows 512-byte command lines and 1000-byte text lines; SASL blobs and IMAP commands run longer.
# Past this a line is not buffered any further: it is reported and skipped up to the next newline.
MAX_LINE = 64 * 1024
# How much of a raw run (an IMAP literal) is kept for the dissector; the rest is counted and dropped.
MAX_KEPT_RAW = 8 * 1024
# Bytes kept unread while the dissector waits for the other side to say what they are (an IMAP literal before the
# server's continuation, a TLS record before the server answers it): a line's worth. Past this the holder decides.
MAX_HELD = MAX_LINE


def wire_text(raw: bytes) -> str:
    """Text from the wire as NTLM OEM strings are read: UTF-8 when the bytes are UTF-8, else Latin-1 (a server's
    single-byte code page). Never a replacement character: every byte stays visible, and escaping is the display's."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@dataclass(frozen=True)
class Line:
    """A line without its CR LF. ``frame``/``timestamp`` are those of the packet that completed it (where tshark
    shows a reassembled PDU); ``first_frame`` is where it began."""

    text: str
    frame: int | None
    timestamp: float | None
    first_frame: int | None = None


@dataclass(frozen=True)
class Raw:
    """A run of bytes that is not lines; ``data`` holds at most MAX_KEPT_RAW of its ``size`` bytes."""

    data: bytes
    size: int
    frame: int | None
    timestamp: float | None


@dataclass(frozen=True)
class Overflow:
    """A line longer than MAX_LINE; skipped up to the next newline."""

    size: int
    frame: int | None
    timestamp: float | None


Item = Line | Raw | Overflow


class LineBuffer:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._pending = bytearray()
        self._pending_frame: int | None = None
        self._pending_timestamp: float | None = None
        self._discarding = False  # inside an overlong line, or resyncing after a gap
        self._raw_left = 0
        self._raw_kept = bytearray()
        self._raw_size = 0
        self._raw_frame: int | None = None
        self._raw_timestamp: float | None = None
        self._holding = False
        self._held = bytearray()
        self._held_frame: int | None = None
        self._held_timestamp: float | None = None

    def hold(self) -> None:
        """Keep what follows the current item unread (in :attr:`held`) until :meth:`release`."""
        self._holding = True

    def release(self) -> tuple[bytes, int | None, float | None]:
        """Stop holding; the bytes held (to be fed again), with the frame and time of the last chunk among them."""
        held = bytes(self._held)
        self._holding = False
        self._held.clear()
        return held, self._held_frame, self._held_timestamp

    @property
    def holding(self) -> bool:
        return self._holding

    @property
    def held(self) -> int:
        return len(self._held)

    def expect_raw(self, size: int) -> None:
        """The next ``size`` bytes are raw (an IMAP literal, a BDAT chunk), not lines."""
        self._raw_left = max(0, size)
        self._raw_size = self._raw_left
        self._raw_kept.clear()
        self._raw_frame = None

    def resync(self) -> None:
        """Drop the partial line (and anything held) and skip to the next newline: bytes were lost, or given up,
        and what follows starts mid-line."""
        self._pending.clear()
        self._raw_left = 0
        self._raw_kept.clear()
        self._holding = False
        self._held.clear()
        self._discarding = True

    def shed(self) -> None:
        """Drop what is held without losing the place: a partial line is skipped to its end, a raw run is still
        counted off (what was kept of it is dropped), bytes held unread are dropped and reading resumes at the
        next newline after them."""
        if self._pending or self._held:
            self._discarding = True
        self._pending.clear()
        self._raw_kept.clear()
        self._holding = False
        self._held.clear()

    @property
    def buffered(self) -> int:
        """Bytes held: the partial line, the kept part of a raw run, the bytes held unread."""
        return len(self._pending) + len(self._raw_kept) + len(self._held)

    def feed(self, data: bytes, frame: int | None = None, timestamp: float | None = None) -> Iterator[Item]:
        """Yield the items ``data`` completes. A consumer may call :meth:`expect_raw` while handling a line: the
        bytes right after that line are then handed out as one :class:`Raw` item."""
        position = 0
        size = len(data)
        while position < size:
            if self._holding:
                self._held += data[position:]
                self._held_frame, self._held_timestamp = frame, timestamp
                return
            if self._raw_left:
                take = min(self._raw_left, size - position)
                if self._raw_frame is None:
                    self._raw_frame, self._raw_timestamp = frame, timestamp
                room = MAX_KEPT_RAW - len(self._raw_kept)
                if room > 0:
                    self._raw_kept += data[position : position + min(take, room)]
                self._raw_left -= take
                position += take
                if not self._raw_left:
                    kept = bytes(self._raw_kept)
                    self._raw_kept.clear()
                    yield Raw(kept, self._raw_size, self._raw_frame, self._raw_timestamp)
                continue
            newline = data.find(b"\n", position)
            end = size if newline < 0 else newline
            if self._discarding:
                if newline < 0:
                    return
                self._discarding = False
                position = newline + 1
                continue
            if not self._pending:
                self._pending_frame, self._pending_timestamp = frame, timestamp
            if len(self._pending) + (end - position) > self.max_line:
                overflow = len(self._pending) + end - position
                self._pending.clear()
                if newline < 0:
                    self._discarding = True
                    position = size
                else:
                    position = newline + 1
                yield Overflow(overflow, self._pending_frame, self._pending_timestamp)
                continue
            self._pending += data[position:end]
            if newline < 0:
                return
            line = bytes(self._pending).rstrip(b"\r")
            self._pending.clear()
            position = newline + 1
            yield Line(wire_text(line), frame, timestamp, self._pending_frame)
