"""HTTP/1.x message syntax (RFC 9112, RFC 9110 section 11): start lines, a message's headers held within bounds, and
the challenge lists of ``WWW-Authenticate`` and ``Authorization`` headers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dissectors import events as ev
from dissectors.held import size_of, sizes_of
from dissectors.linebuffer import Line
from dissectors.session import COMMAND_OVERHEAD

# Header lines kept per message; a message with more is read to its end, the rest ignored (and reported).
MAX_HEADERS = 128
MAX_HEADER_BYTES = 128 * 1024
"""Memory a message's start line and headers may take (names, values, and each line as evidence cites it), past
which further header lines and folded continuations are ignored as past :data:`MAX_HEADERS`: 128 lines of 64 KiB
held 16 MiB a side, and folded lines grew one value without end. The largest Negotiate token (Kerberos with a
large PAC: 64 KiB of base64) fits beside the usual headers."""
# Challenges read from one WWW-Authenticate / Authorization header ("Negotiate, NTLM, Basic realm=...").
MAX_CHALLENGES = 8

_REQUEST_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]{0,31}) (\S+) HTTP/(\d)\.(\d)$")
# A CONNECT with a stray word before its version ("CONNECT host:25 / HTTP/1.0"), as spam tools send it to proxies.
_CONNECT_LINE = re.compile(r"^(CONNECT) (\S+) \S+ HTTP/(\d)\.(\d)$", re.IGNORECASE)
STATUS_LINE = re.compile(r"^HTTP/(\d)\.(\d) (\d{3})(?:\s(.*))?$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s+(.*))?$")


# A chunk size of more than 15 hex digits is no chunk size (2**60 bytes); nor is a Content-Length of 19 digits.
MAX_SIZE_DIGITS = 15


def request_line(text: str) -> re.Match[str] | None:
    return _REQUEST_LINE.match(text) or _CONNECT_LINE.match(text)


@dataclass
class Message:
    """A request's or response's start line and headers (those past the limits counted in ``dropped``); ``held``:
    the memory they take (:data:`MAX_HEADER_BYTES`)."""

    start: Line
    headers: list[tuple[str, str, Line]] = field(default_factory=list)
    dropped: int = 0
    held: int = 0

    def __post_init__(self) -> None:
        self.held = COMMAND_OVERHEAD + size_of(self.start.text)

    def values(self, name: str) -> list[str]:
        return [value for header, value, _line in self.headers if header == name]

    def add(self, text: str, line: Line) -> None:
        """A header line, kept (the line cut to what evidence quotes) when within the limits."""
        name, _, value = text.partition(":")
        name, value = name.strip().lower(), value.strip()
        cited = line._replace(text=line.text[: ev.MAX_EVIDENCE_TEXT])
        size = COMMAND_OVERHEAD + sizes_of(name, value, cited.text)
        if len(self.headers) >= MAX_HEADERS or self.held + size > MAX_HEADER_BYTES:
            self.dropped += 1
            return
        self.headers.append((name, value, cited))
        self.held += size

    def fold(self, text: str) -> None:
        """An obsolete continuation line (RFC 9112 section 5.2): joined to the last header's value when within the
        limit."""
        name, value, line = self.headers[-1]
        joined = f"{value} {text.strip()}"
        grown = size_of(joined) - size_of(value)
        if self.held + grown > MAX_HEADER_BYTES:
            self.dropped += 1
            return
        self.headers[-1] = (name, joined, line)
        self.held += grown


def split_challenges(value: str) -> list[tuple[str, str]]:
    """``Negotiate, NTLM TlRM..., Basic realm="a, b"`` -> [(scheme, rest)]; parameters stay with their scheme."""
    parts: list[str] = []
    current, quoted, escaped = [], False, False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    out: list[tuple[str, str]] = []
    for part in parts:
        if re.match(r"^[A-Za-z0-9_-]+\s*=", part) and not re.match(r"^\S+\s", part):
            if out:  # an auth-param of the scheme before it
                out[-1] = (out[-1][0], f"{out[-1][1]}, {part}".strip(", "))
            continue
        match = _SCHEME.match(part)
        if not match:
            continue
        if len(out) >= MAX_CHALLENGES:
            break
        out.append((match.group(1), (match.group(2) or "").strip()))
    return out


def quoted(side: ev.Side, text: str, limit: int) -> str:
    """A line an anomaly names: a server's quoted (its start), a client's only measured. What a client sends where
    no start line or chunk size fits is a body or a request line with two spaces before its version: a form's
    password, a query's token, which the masking of client lines (by what they are) cannot tell from other text."""
    if side is ev.Side.SERVER:
        return repr(text[:limit])
    return f"a client line of {len(text)} characters"


def size_value(text: str, base: int) -> int | None:
    """A chunk size (``base`` 16) or a Content-Length (10), or None when ``text`` is none."""
    text = text.strip()
    digits = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
    if not text or len(text) > MAX_SIZE_DIGITS or any(c not in digits for c in text):
        return None
    return int(text, base)


def body_framing(message: Message, server: bool, until_close: bool) -> tuple[bool, int, str | None]:
    """How the body after ``message``'s headers is framed (RFC 9112 section 6.3): ``(chunked, size, unframed)``.
    ``size`` is the body's length (0: none; -1: up to the close, a response's ``Transfer-Encoding`` without
    ``chunked``, or one without a length when ``until_close``); ``unframed`` names what cannot be framed (a request's
    ``Transfer-Encoding`` without ``chunked``, a ``Content-Length`` that is no number or disagrees with another)."""
    codings = [c.strip() for c in ",".join(message.values("transfer-encoding")).lower().split(",") if c.strip()]
    lengths = message.values("content-length")
    if codings and codings[-1] == "chunked":
        return True, 0, None
    if codings:
        return (False, -1, None) if server else (False, 0, f"Transfer-Encoding {codings[-1][:40]!r} without chunked")
    if lengths:
        size = size_value(lengths[0], 10)
        if size is None or any(value.strip() != lengths[0].strip() for value in lengths):
            return False, 0, f"Content-Length {lengths[0][:40]!r}"
        return False, size, None
    return False, -1 if until_close else 0, None


@dataclass
class Request:
    """A request that carried or may be answered with authentication, held until its response."""

    method: str
    path: str
    host: str | None
    evidence: ev.Evidence
    auth: str | None = None  # the mechanism of the credentials or NTLM message the request carried
    held: int = 0
    ntlm: str | None = None  # the kind of NTLM message it carried, when a NEGOTIATE or an AUTHENTICATE

    def __post_init__(self) -> None:
        self.held = COMMAND_OVERHEAD + size_of(self.method) + size_of(self.path) + size_of(self.host)

    @property
    def frame(self) -> int | None:
        return self.evidence.frame


@dataclass
class SideState:
    """Parse state of one direction."""

    state: str = "start"  # start, headers, body, chunk-size, chunk-data, chunk-end, trailers, opaque
    synced: bool = True  # False after a gap or a mid-stream pickup: lines are skipped up to a start line
    message: Message | None = None
    # The server's: the frame of its segment before the one its message's status line began (None: that line began
    # no segment, or lost bytes came before it), for dissectors.http_resync.Doubt.trusts.
    began_after: int | None = None
