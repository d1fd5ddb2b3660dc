"""Bounded line splitting for one direction of a text protocol, with raw-byte runs for literals and BDAT chunks,
and dot-terminated bodies (an SMTP message, a POP3 RETR answer) skipped to their end without being split into lines.

Every item handed out carries the frame number and timestamp of the chunk in which its first byte arrived.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from dissectors.line_items import (
    SKIP_ALL,
    SKIP_DOT,
    SKIP_RAW,
    Item,
    LaxEnd,
    Line,
    Overflow,
    Raw,
    Resumed,
    wire_text,
)
from dissectors.line_kinds import line_start

# The items and the skip rules live in dissectors.line_items; they are named here too, where readers look for them.
__all__ = [
    "MAX_HELD", "MAX_KEPT_RAW", "MAX_LINE", "SKIP_ALL", "SKIP_DOT", "SKIP_RAW", "Item", "LaxEnd", "Line",
    "LineBuffer", "Overflow", "Raw", "Resumed", "wire_text",
]  # fmt: skip

# RFC 5321 allows 512-byte command lines and 1000-byte text lines; SASL blobs and IMAP commands run longer.
# Past this a line is not buffered any further: it is reported and skipped up to the next newline.
MAX_LINE = 64 * 1024
# How much of a raw run (an IMAP literal) is kept for the dissector; the rest is counted and dropped.
MAX_KEPT_RAW = 8 * 1024
# Bytes kept unread while the dissector waits for the other side to say what they are (an IMAP literal before the
# server's continuation, a TLS record before the server answers it): a line's worth. Past this the holder decides.
MAX_HELD = MAX_LINE

# Inside a dot-terminated body: where the next line begins with a dot (the end, or a dot-stuffed line), and the
# carriage returns after that dot (the end line is "." then any CRs, as the line splitter strips them). With
# ``exact_end`` (SMTP), a dot right after a bare CR begins a line too, and a "." line may end in CRs without a LF: a
# server that takes a bare CR for a line end (Cisco Secure Email cleaning bare CRs and LFs into CR LF, its default)
# ends a message at ``\r.\r``.
_LINE_DOT = b"\n."
_CR_DOT = b"\r."
_CRS = re.compile(rb"\r*")
# Where a body is in its terminator hunt: inside a line, at the start of one, just after a line's leading dot.
_MID_LINE, _LINE_START, _AFTER_DOT = 0, 1, 2


class LineBuffer:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._pending = bytearray()
        self._pending_frame: int | None = None
        self._pending_timestamp: float | None = None
        self._discarding = False  # inside an overlong line, or resyncing after a gap
        self._resuming = False  # resyncing, and no byte read since: the first line may be taken whole (resync)
        self._raw_left = 0
        self._raw_kept = bytearray()
        self._raw_size = 0
        self._raw_frame: int | None = None
        self._raw_timestamp: float | None = None
        self._holding = False
        self._held = bytearray()
        self._held_frame: int | None = None
        self._held_timestamp: float | None = None
        self._keep_raw = True
        self._body = False  # inside a dot-terminated body (expect_dot_body)
        self._body_state = _MID_LINE
        self._body_crs = 0  # carriage returns after the end line's dot so far (a longer line is no end line)
        self._dot_frame: int | None = None  # the chunk where the end line's dot arrived, and its time
        self._dot_timestamp: float | None = None
        # With exact_end: a line ending other than CR LF "." CR LF ends the body as a LaxEnd item (or, with
        # lax_is_body, not at all; with bare_cr_is_body, not when a bare CR ended it or the line before); how the
        # line before the dot ended: CR LF, a bare LF or a bare CR (None: unread, dropped below).
        self._exact_end = False
        self._lax_is_body = False
        self._bare_cr_is_body = False
        self._before: bytes | None = b"\r\n"
        self._lax: tuple[bool, bytes, bool] | None = None  # the body just ended on a LaxEnd: its last three fields
        self._tail_cr: bool | None = None  # the body's last byte read was a CR (None: unread)

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
    def held_data(self) -> bytes:
        """A copy of the bytes held so far (they stay held)."""
        return bytes(self._held)

    @property
    def holding(self) -> bool:
        return self._holding

    @property
    def held(self) -> int:
        return len(self._held)

    def expect_raw(self, size: int, keep: bool = True) -> None:
        """The next ``size`` bytes are raw (an IMAP literal, a BDAT chunk), not lines; with ``keep`` false none of
        them is copied (the :class:`Raw` item's data is empty): the run is only counted off."""
        self._raw_left = max(0, size)
        self._raw_size = self._raw_left
        self._raw_kept.clear()
        self._raw_frame = None
        self._keep_raw = keep

    def lose(self, size: int) -> int | None:
        """``size`` bytes were lost (a gap) inside a raw run kept by nobody that had at least that many left: they are
        counted off as if read, and reading goes on where it would have. Returns what is left of the run (0: it ended
        with them, and the caller ends it: no :class:`Raw` item is handed out for it); None, nothing changed, when
        the lost bytes may run past the run's end (where they ended is not known then)."""
        if not self._raw_left or self._keep_raw or size > self._raw_left or self._holding or self._held:
            return None
        self._raw_left -= size
        return self._raw_left

    @property
    def at_line_start(self) -> bool:
        """Does the next byte fed begin a line: nothing partial held, no run or body being counted off, no line being
        skipped (but after :meth:`resync`, whose first line may be taken whole)?"""
        if self._pending or self._raw_left or self._body or self._holding:
            return False
        return not self._discarding or self._resuming

    def expect_dot_body(
        self, exact_end: bool = False, lax_is_body: bool = False, bare_cr_is_body: bool = False
    ) -> None:
        """What follows (from the start of a line) is a dot-terminated body (RFC 5321 section 4.5.2, RFC 1939
        section 3): it is skipped without being split into lines, dot-stuffed lines included, and only its end
        line is handed out, as the :class:`Line` ``"."``. Nothing of the body is kept. With ``exact_end``, an end
        line other than CR LF "." CR LF is handed out as a :class:`LaxEnd`; with ``lax_is_body`` too (the body goes
        on after the LaxEnd it ended on), it is body, and only an exact end line ends it; with ``bare_cr_is_body``,
        such a line with a bare CR is body, and one with LFs only is still handed out."""
        self._body = True
        self._body_state = _LINE_START
        self._exact_end = exact_end
        self._lax_is_body, self._bare_cr_is_body = exact_end and lax_is_body, exact_end and bare_cr_is_body
        if self._lax_is_body or self._bare_cr_is_body:  # the line before is the lax end line, as it ended
            self._tail_cr = self._before == b"\r"  # it ended in a CR when the body's first byte was not yet read
        else:
            self._before = b"\r\n"  # the line before the body (the DATA command's) is not looked at
            self._tail_cr = False  # the byte before the body is a newline (not a previous body's last byte)

    def resume_body(self) -> None:
        """After :meth:`resync` inside a dot-terminated body read with ``exact_end`` (bytes of the body were lost):
        what follows is still body, from somewhere inside a line, so only a dot after the next line break can begin
        its end line."""
        self.expect_dot_body(exact_end=True)
        self._discarding = self._resuming = False  # the body's skipping finds the next line break itself
        self._body_state = _MID_LINE
        self._before = None  # how the line before a dot ended: found by reading on (None: unread)
        self._tail_cr = False  # a dot right after the lost bytes begins no line

    def end_body(self) -> None:
        """The body ended where nobody could see it (its end line among lost bytes, as the other side's answer
        showed): what follows is lines again."""
        self._body = False
        self._body_state = _MID_LINE

    @property
    def in_body(self) -> bool:
        return self._body

    def skippable(self) -> tuple[int, int, bool] | None:
        """Whether bytes may be dropped unread here: ``(SKIP_DOT, 0, at_line_start)`` inside a body (neither just
        after a line's leading dot, nor read on past a lax end line, nor holding anything; ``at_line_start``: a dot
        next would begin a line, after a LF or, with ``exact_end``, after a CR), ``(SKIP_RAW, left, False)`` inside
        a raw run kept by nobody; None otherwise. The one dropping them must keep to the rule of the mode (see
        :meth:`skip`)."""
        if self._holding or self._held or self._pending or self._discarding:
            return None
        if self._body:
            # Past a lax end line only CR LF "." CR LF ends the body: the CR before a dot must not go unread.
            if self._body_state == _AFTER_DOT or self._lax_is_body or self._bare_cr_is_body:
                return None
            # With exact_end, a dot after a CR read last (or maybe: unread) would begin a line too.
            return SKIP_DOT, 0, self._body_state == _LINE_START or (self._exact_end and self._tail_cr is not False)
        if self._raw_left and not self._keep_raw:
            return SKIP_RAW, self._raw_left, False
        return None

    def skip(
        self, size: int, at_line_start: bool, frame: int | None, timestamp: float | None, tail: bytes = b""
    ) -> None:
        """``size`` bytes were dropped unread where :meth:`skippable` allowed it: inside a body, bytes in which no
        line starts with a dot, after a LF or a CR (``at_line_start``: their last byte was a LF); inside a raw run,
        fewer bytes than are left of it. The state is what reading them would have left; ``tail``, their last bytes
        (up to two, as many as the one dropping them kept), says whether a line ending among them was CR LF, and
        whether they ended in a CR."""
        if self._body:
            self._body_state = _LINE_START if at_line_start else _MID_LINE
            self._tail_cr = tail[-1:] == b"\r" if tail else None  # None: not seen
            self._before = (b"\r\n" if tail == b"\r\n" else b"\n") if at_line_start and len(tail) == 2 else None
        elif self._raw_left:
            if self._raw_frame is None:
                self._raw_frame, self._raw_timestamp = frame, timestamp
            self._raw_left -= min(size, self._raw_left - 1)  # the run's last byte is always read

    def resync(self) -> None:
        """Drop the partial line (and anything held): bytes were lost, or given up, and what follows may start
        inside a line. It is skipped to the first newline, once (the capture layer hands the bytes after a gap on as
        they are), unless the first chunk fed next holds a whole line that looks like a line of a carried protocol
        (:func:`dissectors.line_kinds.line_start`, the test a flow picked up mid-stream passes): a segment begins
        where the sender's write began, mostly, and a reply, a tagged response or a command there began a line.

        Lost bytes end anywhere, though, and the tail of a cut line may look like a line (``...limit of 10334
        bytes`` cut before ``334``). Taking it whole is never taken for proof: it is handed out as :class:`Resumed`,
        and the session does not let a prompt in it end the doubt the gap left (:class:`dissectors.sasl.AuthTracker`:
        no reply is a verdict until a prompt shows where the server is). The verdicts a line read after a gap can
        give are those a whole line there gives: the commands awaiting replies were forgotten at the gap, and the
        exchanges the server may still answer are in doubt; the prompts it would pass for are only read as steps."""
        self._resuming = True
        self._pending.clear()
        self._raw_left = 0
        self._raw_kept.clear()
        self._body = False
        self._holding = False
        self._held.clear()
        self._discarding = True

    def shed(self) -> None:
        """Drop what is held without losing the place: a partial line is skipped to its end, a raw run is still
        counted off (what was kept of it is dropped), a body is still skipped to its end, bytes held unread are
        dropped and reading resumes at the next newline after them."""
        if self._pending or self._held:
            self._discarding = True
        self._resuming = False
        self._pending.clear()
        self._raw_kept.clear()
        self._holding = False
        self._held.clear()

    @property
    def buffered(self) -> int:
        """Bytes held: the partial line, the kept part of a raw run, the bytes held unread."""
        return len(self._pending) + len(self._raw_kept) + len(self._held)

    def buffered_with(self, other: LineBuffer) -> int:
        """:attr:`buffered` of this buffer and ``other`` (a session's two sides) together, in one call: a session
        is asked what it holds after every chunk."""
        mine = len(self._pending) + len(self._raw_kept) + len(self._held)
        return mine + len(other._pending) + len(other._raw_kept) + len(other._held)

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
            if self._body:
                position = self._skip_body(data, position, frame, timestamp)
                if self._body:
                    return
                if self._lax is not None:
                    lax, self._lax = self._lax, None
                    yield LaxEnd(frame, timestamp, self._dot_frame, *lax)
                else:
                    yield Line(".", frame, timestamp, self._dot_frame)
                continue
            if self._raw_left:
                position = self._take_raw(data, position, frame, timestamp)
                if not self._raw_left:
                    kept = bytes(self._raw_kept)
                    self._raw_kept.clear()
                    yield Raw(kept, self._raw_size, self._raw_frame, self._raw_timestamp)
                continue
            newline = data.find(b"\n", position)
            if self._discarding:
                resumed = self._skip_line(data, position, newline, frame, timestamp)
                if newline < 0:
                    return
                position = newline + 1
                yield from resumed
                continue
            if not self._pending:
                if newline >= 0 and newline - position <= self.max_line:  # a whole line here: taken without a copy
                    line = data[position:newline].rstrip(b"\r")
                    position = newline + 1
                    yield Line(wire_text(line), frame, timestamp, frame)
                    continue
                self._pending_frame, self._pending_timestamp = frame, timestamp
            end = size if newline < 0 else newline
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

    def _skip_line(
        self, data: bytes, position: int, newline: int, frame: int | None, timestamp: float | None
    ) -> tuple[Resumed, ...]:
        """Skipping from ``position`` to the ``newline`` (-1: none in ``data``, still skipping): the line up to it,
        when it is the first line fed after :meth:`resync`, whole, and like a line of a carried protocol (taken
        whole, not skipped: see there); else nothing."""
        resuming, self._resuming = self._resuming, False
        if newline < 0:
            return ()
        self._discarding = False
        if not resuming or not 0 < newline - position <= self.max_line:
            return ()  # the skipped line is not copied
        line = data[position:newline]
        return (Resumed(wire_text(line.rstrip(b"\r")), frame, timestamp, frame),) if line_start(line) else ()

    def _take_raw(self, data: bytes, position: int, frame: int | None, timestamp: float | None) -> int:
        """Count off (and keep, up to MAX_KEPT_RAW) the raw run's bytes from ``position``; where reading goes on."""
        take = min(self._raw_left, len(data) - position)
        if self._raw_frame is None:
            self._raw_frame, self._raw_timestamp = frame, timestamp
        room = MAX_KEPT_RAW - len(self._raw_kept) if self._keep_raw else 0
        if room > 0:
            self._raw_kept += data[position : position + min(take, room)]
        self._raw_left -= take
        return position + take

    def _skip_body(self, data: bytes, position: int, frame: int | None, timestamp: float | None) -> int:
        """Skip body bytes from ``position``: where reading goes on (the body ended just before it), or the end of
        ``data`` with the body still on. Only lines starting with a dot are looked at, each found by a C-level search
        (with ``exact_end``, one for ``\\n.`` and one for ``\\r.``, each run again only once passed: linear); the
        state carries over chunk boundaries (a dot or its CR LF in the next segment)."""
        size = len(data)
        state = self._body_state
        bare_cr = self._exact_end  # a dot after a bare CR begins a line, and CRs without a LF may end a "." line
        next_lf, next_cr = -2, -2 if bare_cr else -1  # the next "\n." and "\r." (-1: none left, -2: not looked for)
        if state == _MID_LINE and bare_cr and self._tail_cr and position < size and data[position] == 46:
            state, self._before = self._at_dot(frame, timestamp), b"\r"  # "\r" | "."
            position += 1
        while True:
            if state == _AFTER_DOT:
                after = _CRS.match(data, position).end()
                self._body_crs += after - position
                position = after
                if self._body_crs >= self.max_line:  # "." and a line's worth of CRs: a long line, not the end
                    state = _MID_LINE
                elif position == size:
                    break
                elif data[position] == 10 or (bare_cr and self._body_crs):  # "." CR* LF, or "." CR+ then no LF
                    lf = data[position] == 10
                    position += lf
                    if self._dot_line_ended((b"\r\n" if self._body_crs else b"\n") if lf else b"\r"):
                        return position
                    state = _LINE_START  # the body goes on past a lax end line: the next line starts here
                    continue
                else:
                    state = _MID_LINE  # a dot-stuffed line ("..") or any other line starting with a dot
            elif state == _LINE_START:
                if position == size:
                    break
                if data[position] == 46:  # "."
                    state = self._at_dot(frame, timestamp)
                    position += 1
                    continue
                state = _MID_LINE
            if next_lf != -1 and next_lf < position:
                next_lf = data.find(_LINE_DOT, position)
            if next_cr != -1 and next_cr < position:
                next_cr = data.find(_CR_DOT, position)
            found = next_cr if next_lf < 0 or 0 <= next_cr < next_lf else next_lf
            if found < 0:
                if size and data[size - 1] == 10:
                    state = _LINE_START
                    self._before = _ending(data[size - 2] == 13 if size > 1 else self._tail_cr)
                else:
                    state = _MID_LINE
                position = size
                break
            state = self._at_dot(frame, timestamp)
            cr = data[found - 1] == 13 if found else self._tail_cr
            self._before = b"\r" if found == next_cr else _ending(cr)
            position = found + 2
        self._body_state = state
        if size:
            self._tail_cr = data[size - 1] == 13
        return size

    def _at_dot(self, frame: int | None, timestamp: float | None) -> int:
        """A line starts with a dot here: the state just after it."""
        self._body_crs, self._dot_frame, self._dot_timestamp = 0, frame, timestamp
        return _AFTER_DOT

    def _dot_line_ended(self, after: bytes) -> bool:
        """The "." line just read ended (``after``: CR LF, CRs and a LF counted as one; a bare LF; or CRs without a
        LF): whether the body ends with it (as the "." line, or a LaxEnd); else it goes on from the next line."""
        before, crs = self._before, self._body_crs
        if self._exact_end and (after != b"\r\n" or crs != 1 or before != b"\r\n"):
            bare_cr = before == b"\r" or after == b"\r"
            self._before = after  # for the body going on after it (passed over, or read on once decided)
            if self._lax_is_body or (bare_cr and self._bare_cr_is_body):
                return False
            self._lax = (before is not None or crs != 1 or after != b"\r\n", after, bare_cr)
        self._body = self._exact_end = self._lax_is_body = self._bare_cr_is_body = False
        self._body_state = _MID_LINE
        return True

    def cut_at_cr(self) -> LaxEnd | None:
        """With ``exact_end``: a "." line ended by CRs with nothing after them yet (a client waiting for the answer
        to ``\\r.\\r``), when the other side speaks: the end of the body for a server that takes a bare CR for
        a line end (whether it did, its replies say), as a LaxEnd dated by its dot; None when the body is not
        there."""
        if not self._body or self._body_state != _AFTER_DOT or not 0 < self._body_crs < self.max_line:
            return None
        if not self._exact_end or self._lax_is_body or self._bare_cr_is_body:
            return None
        self._dot_line_ended(b"\r")
        self._tail_cr = True  # a LF sent next would belong to no line before it
        assert self._lax is not None
        item = LaxEnd(self._dot_frame, self._dot_timestamp, self._dot_frame, *self._lax)
        self._lax = None
        return item


def _ending(cr: bool | None) -> bytes | None:
    """How a line ended by a LF ended, by whether a CR came before it (None: unread)."""
    return None if cr is None else b"\r\n" if cr else b"\n"
