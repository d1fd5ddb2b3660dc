"""What a side's line reading hands out (:mod:`dissectors.linebuffer`): lines, raw runs, overflows and the lax end
lines of bodies, each with the frame and time of the bytes that made it; and how wire bytes become text."""

from __future__ import annotations

from typing import NamedTuple


def wire_text(raw: bytes) -> str:
    """Text from the wire as NTLM OEM strings are read: UTF-8 when the bytes are UTF-8, else Latin-1 (a server's
    single-byte code page). Never a replacement character: every byte stays visible, and escaping is the display's."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class Line(NamedTuple):
    """A line without its CR LF. ``frame``/``timestamp`` are those of the packet that completed it (where tshark
    shows a reassembled PDU); ``first_frame`` is where it began. Items are named tuples: immutable, and made once
    per line at a third of a frozen dataclass's cost."""

    text: str
    frame: int | None
    timestamp: float | None
    first_frame: int | None = None


class Resumed(Line):
    """The first line after lost bytes, read from their first byte because it looks like a line of a carried
    protocol (:meth:`LineBuffer.resync`): it may still be the tail of a line the loss cut, so what it shows is not
    proof (a prompt in it does not show where the other side is)."""

    __slots__ = ()


class Raw(NamedTuple):
    """A run of bytes that is not lines; ``data`` holds at most MAX_KEPT_RAW of its ``size`` bytes."""

    data: bytes
    size: int
    frame: int | None
    timestamp: float | None


class LaxEnd(NamedTuple):
    """The end line of a body read with ``exact_end`` (:meth:`LineBuffer.expect_dot_body`) that is not exactly CR LF
    "." CR LF (RFC 5321 section 4.1.1.4): a bare LF or a bare CR before or after the dot, or more CRs. Servers differ
    on it (the SMTP smuggling of CVE-2023-51764): the dissector decides by the server's replies. ``certain`` is false
    when the line ending before the dot went unread (dropped below Python with fewer than its last two bytes passed
    on), so the line may be exact after all; ``after`` is how the dot's own line ended (``\\r\\n``, CRs before its
    LF counted as one CR; ``\\n``; or ``\\r``, CRs without a LF); ``bare_cr``, that a bare CR ended the line before the
    dot or the dot's own: only a server that takes a bare CR for a line end ends a message there."""

    frame: int | None
    timestamp: float | None
    first_frame: int | None
    certain: bool
    after: bytes
    bare_cr: bool = False

    @property
    def crlf_after(self) -> bool:
        return self.after == b"\r\n"


class Overflow(NamedTuple):
    """A line longer than MAX_LINE; skipped up to the next newline."""

    size: int
    frame: int | None
    timestamp: float | None


Item = Line | Raw | Overflow | LaxEnd

# What the next bytes of a side are when nobody needs to read them (LineBuffer.skippable): what a packet capture
# may drop before they reach the dissector, saying only how many there were (LineBuffer.skip).
SKIP_DOT = 1  # inside a dot-terminated body: bytes without a line starting with a dot
SKIP_RAW = 2  # inside a raw run that is only counted off: fewer bytes than are left of it
SKIP_ALL = 3  # everything (the session is TLS from here on)
