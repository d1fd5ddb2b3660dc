"""HTTP/1.x as a carrier of authentication, sans-I/O: NTLM and Negotiate ([MS-NTHT], RFC 4559) and Basic
(RFC 7617) in ``Authorization`` / ``WWW-Authenticate`` and their ``Proxy-`` forms.

Requests and responses are read on any port, with keep-alive and pipelining (responses answer requests in order);
bodies are skipped by their framing (``Content-Length``, ``chunked``, or up to the close) and never read. A
``Negotiate`` token is unwrapped (:mod:`dissectors.gssapi`) to its NTLMSSP message; Kerberos tokens are named, not
decoded. Events are the mail sessions' vocabulary: :class:`~dissectors.events.HttpExchange` (which request and
response an authentication step belongs to), ``AuthStart`` / ``SaslStep`` (NTLMSSP decoded) / ``AuthResult``
(the status of the response to a request that carried credentials: 401 and 407 fail, anything else succeeds), and
``Credentials`` for Basic (mechanism ``HTTP-BASIC``). After a ``101 Switching Protocols`` or an accepted
``CONNECT`` the rest of the connection is not HTTP and is not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dissectors import events as ev
from dissectors import gssapi, ntlmssp, sasl
from dissectors.held import size_of, sizes_of
from dissectors.linebuffer import MAX_LINE, Line, Raw, wire_text
from dissectors.session import COMMAND_OVERHEAD, MailSession

# Header lines kept per message; a message with more is read to its end, the rest ignored (and reported).
MAX_HEADERS = 128
MAX_HEADER_BYTES = 128 * 1024
"""Memory a message's start line and headers may take (names, values, and each line as evidence cites it), past
which further header lines and folded continuations are ignored as past :data:`MAX_HEADERS`: 128 lines of 64 KiB
held 16 MiB a side, and folded lines grew one value without end. The largest Negotiate token (Kerberos with a
large PAC: 64 KiB of base64) fits beside the usual headers."""
# Challenges read from one WWW-Authenticate / Authorization header ("Negotiate, NTLM, Basic realm=...").
MAX_CHALLENGES = 8
# A chunk size of more than 15 hex digits is no chunk size (2**60 bytes); nor is a Content-Length of 19 digits.
MAX_SIZE_DIGITS = 15
# How much of a request path and Host header a finding keeps.
MAX_PATH = 256
MAX_HOST = 255
# "Read to the close": a body without length counts down from here (bytes are counted, never kept).
UNTIL_CLOSE = 1 << 62

_REQUEST_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]{0,31}) (\S+) HTTP/(\d)\.(\d)$")
_STATUS_LINE = re.compile(r"^HTTP/(\d)\.(\d) (\d{3})(?:\s(.*))?$")
_AUTH_HEADERS = {"authorization", "proxy-authorization"}
_CHALLENGE_HEADERS = {"www-authenticate", "proxy-authenticate"}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s+(.*))?$")
# Names a Negotiate token's mechanism goes by in events (the NTLM detector follows "NTLM").
_MECHANISMS = {"ntlmssp": "NTLM", "kerberos": "KERBEROS", "negoex": "NEGOEX", "spnego": "SPNEGO"}


def _quoted(side: ev.Side, text: str, limit: int) -> str:
    """A line an anomaly names: a server's quoted (its start), a client's only measured. What a client sends where
    no start line or chunk size fits is a body or a request line with two spaces before its version: a form's
    password, a query's token, which the masking of client lines (by what they are) cannot tell from other text."""
    if side is ev.Side.SERVER:
        return repr(text[:limit])
    return f"a client line of {len(text)} characters"


@dataclass
class _Message:
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


@dataclass
class _Request:
    """A request that carried or may be answered with authentication, held until its response."""

    method: str
    path: str
    host: str | None
    evidence: ev.Evidence
    auth: str | None = None  # the mechanism of the credentials or NTLM message the request carried
    held: int = 0

    def __post_init__(self) -> None:
        self.held = COMMAND_OVERHEAD + size_of(self.method) + size_of(self.path) + size_of(self.host)


@dataclass
class _Side:
    """Parse state of one direction."""

    state: str = "start"  # start, headers, body, chunk-size, chunk-data, chunk-end, trailers, opaque
    synced: bool = True  # False after a gap or a mid-stream pickup: lines are skipped up to a start line
    message: _Message | None = None


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


def _size(text: str, base: int) -> int | None:
    text = text.strip()
    digits = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
    if not text or len(text) > MAX_SIZE_DIGITS or any(c not in digits for c in text):
        return None
    return int(text, base)


class HttpSession(MailSession):
    protocol = sasl.Protocol.HTTP

    def __init__(self, partial: bool = False, max_line: int = MAX_LINE) -> None:
        super().__init__(partial, max_line)
        self.sides = {ev.Side.CLIENT: _Side(synced=not partial), ev.Side.SERVER: _Side(synced=not partial)}
        self.responses = 0  # complete responses read (the probe stops after the one it asked for)
        # The latest final response: status, the schemes its WWW-Authenticate headers offered, its Server header.
        self.last_status: int | None = None
        self.last_schemes: list[str] = []
        self.last_server: str | None = None
        self._open: str | None = None  # mechanism of an NTLM/Negotiate exchange in progress on this connection

    # -- lines ----------------------------------------------------------------------------------------------------

    def _client_line(self, text: str) -> None:
        self._line_of(ev.Side.CLIENT, text)

    def _server_line(self, text: str) -> None:
        self._line_of(ev.Side.SERVER, text)

    def _line_of(self, side: ev.Side, text: str) -> None:
        state = self.sides[side]
        if state.state == "start":
            self._start_line(side, state, text)
        elif state.state in ("headers", "trailers"):
            self._header_line(side, state, text)
        elif state.state == "chunk-size":
            size = _size(text.split(";", 1)[0], 16)
            if size is None:
                self._anomaly(side, "bad_chunk_size", f"not a chunk size: {_quoted(side, text, 40)}; reading stopped")
                state.state = "opaque"
            elif size == 0:
                state.state = "trailers"
            else:
                state.state = "chunk-data"
                self.buffers[side].expect_raw(size, keep=False)  # chunk data: counted off, not read
        elif state.state == "chunk-end":
            state.state = "chunk-size"  # the CR LF after a chunk's data

    def _raw(self, side: ev.Side, item: Raw) -> None:
        state = self.sides[side]
        if state.state == "chunk-data":
            state.state = "chunk-end"
        elif state.state == "body":
            self._message_done(side, state)

    def _after_gap(self, side: ev.Side) -> None:
        self.sides[side] = _Side(synced=False)
        self._open = None

    def _state_bytes(self) -> int:
        held = 0
        for state in self.sides.values():
            if state.message is not None:
                held += state.message.held
        return held

    def _shed_state(self) -> None:
        """The messages being read are dropped: their sides look for their next start line, as after a gap."""
        for side, state in list(self.sides.items()):
            if state.message is not None:
                self._after_gap(side)

    def _start_line(self, side: ev.Side, state: _Side, text: str) -> None:
        if not text:
            return  # an empty line between messages is allowed (RFC 9112 2.2)
        pattern = _REQUEST_LINE if side is ev.Side.CLIENT else _STATUS_LINE
        if not pattern.match(text):
            if state.synced:
                self._anomaly(side, "not_http", f"not an HTTP start line: {_quoted(side, text, 60)}; skipped")
                state.synced = False
            return
        state.synced = True
        state.state = "headers"
        state.message = _Message(self._line)

    def _header_line(self, side: ev.Side, state: _Side, text: str) -> None:
        message = state.message
        if text:
            if message is None or state.state == "trailers":
                return
            if text[0] in " \t" and message.headers:  # obsolete line folding
                message.fold(text)
            else:
                message.add(text, self._line)
            return
        if state.state == "trailers" or message is None:
            self._message_done(side, state)
            return
        if message.dropped:
            limit = f"{MAX_HEADERS} or {MAX_HEADER_BYTES} bytes"
            self._anomaly(side, "too_many_headers", f"{message.dropped} header lines past {limit} ignored")
        if side is ev.Side.CLIENT:
            self._request(state, message)
        else:
            self._response(state, message)

    def _message_done(self, side: ev.Side, state: _Side) -> None:
        state.state, state.message = "start", None
        if side is ev.Side.SERVER:
            self.responses += 1

    def _framing(self, side: ev.Side, state: _Side, message: _Message, until_close: bool) -> None:
        """Skip the body as the headers frame it (RFC 9112 6.3); ``until_close``: a response without a length."""
        codings = [c.strip() for c in ",".join(message.values("transfer-encoding")).lower().split(",") if c.strip()]
        lengths = message.values("content-length")
        if codings and codings[-1] == "chunked":
            state.state = "chunk-size"
        elif codings and side is ev.Side.SERVER:
            self._body(side, state, UNTIL_CLOSE)
        elif codings:
            self._unframed(side, state, f"Transfer-Encoding {codings[-1][:40]!r} without chunked")
        elif lengths:
            size = _size(lengths[0], 10)
            if size is None or any(value.strip() != lengths[0].strip() for value in lengths):
                self._unframed(side, state, f"Content-Length {lengths[0][:40]!r}")
            elif size:
                self._body(side, state, size)
            else:
                self._message_done(side, state)
        elif until_close:
            self._body(side, state, UNTIL_CLOSE)
        else:
            self._message_done(side, state)

    def _body(self, side: ev.Side, state: _Side, size: int) -> None:
        state.state = "body"
        self.buffers[side].expect_raw(size, keep=False)  # the body: counted off, not read

    def _unframed(self, side: ev.Side, state: _Side, what: str) -> None:
        self._anomaly(side, "bad_framing", f"{what}: the body cannot be framed; this side is not read further")
        state.state = "opaque"

    # -- requests -------------------------------------------------------------------------------------------------

    def _request(self, state: _Side, message: _Message) -> None:
        match = _REQUEST_LINE.match(message.start.text)
        assert match is not None
        method, target = match.group(1).upper(), match.group(2)
        host = (message.values("host") or [None])[0]
        if "://" in target:  # absolute form (a proxy request): the authority is the host
            authority, _, rest = target.split("://", 1)[1].partition("/")
            host, target = host or authority.rpartition("@")[2], "/" + rest
        path = target.split("?", 1)[0][:MAX_PATH]
        host = host[:MAX_HOST] if host else None
        request = _Request(method, path, host, _evidence(message.start))
        announced = False
        for name, value, line in message.headers:
            if name not in _AUTH_HEADERS:
                continue
            if not announced:
                self._emit(ev.HttpExchange(ev.Side.CLIENT, request.evidence, method, path, host))
                announced = True
            self._credentials(request, value, _evidence(line))
        self._push_pending(request)
        self._framing(ev.Side.CLIENT, state, message, until_close=False)

    def _credentials(self, request: _Request, value: str, evidence: ev.Evidence) -> None:
        scheme, _, token = value.strip().partition(" ")
        scheme = scheme.lower()
        token = token.strip()
        if scheme == "basic":
            decoded = sasl.decode_base64(token)
            text = wire_text(decoded.data or b"")
            user, colon, password = text.partition(":")
            if decoded.data is None or not colon:
                self._emit(ev.Anomaly(ev.Side.CLIENT, evidence, "bad_basic_credentials", "not base64 user:password"))
                return
            request.auth = "HTTP-BASIC"
            self._emit(ev.Credentials(ev.Side.CLIENT, evidence, "HTTP-BASIC", user, password, carrier=token))
        elif scheme in ("ntlm", "negotiate", "kerberos") and token:
            request.auth = self._token(ev.Side.CLIENT, scheme, token, evidence)

    # -- responses ------------------------------------------------------------------------------------------------

    def _response(self, state: _Side, message: _Message) -> None:
        match = _STATUS_LINE.match(message.start.text)
        assert match is not None
        status = int(match.group(3))
        if 100 <= status < 200 and status != 101:
            state.state, state.message = "start", None  # interim: the request is still waiting for its answer
            return
        request: _Request | None = self._pop_pending() if self.pending else None
        evidence = _evidence(message.start)
        self.last_status, self.last_server = status, (message.values("server") or [None])[0]
        self.last_schemes = [
            scheme for name, value, _line in message.headers if name in _CHALLENGE_HEADERS
            for scheme, _rest in split_challenges(value)
        ][:MAX_CHALLENGES]  # fmt: skip
        tokens = [
            (scheme.lower(), rest, line)
            for name, value, line in message.headers
            if name in _CHALLENGE_HEADERS
            for scheme, rest in split_challenges(value)
            if scheme.lower() in ("ntlm", "negotiate", "kerberos") and rest and "=" not in rest.rstrip("=")
        ]
        if tokens or (request is not None and request.auth):
            method, path, host = (request.method, request.path, request.host) if request else ("", "", None)
            self._emit(ev.HttpExchange(ev.Side.SERVER, evidence, method, path, host, status))
        continued = False
        for scheme, token, line in tokens[:MAX_CHALLENGES]:
            mechanism = self._token(ev.Side.SERVER, scheme, token, _evidence(line))
            continued = continued or (mechanism is not None and status in (401, 407))
        if request is not None and request.auth and not continued:
            success = status not in (401, 407)
            self._emit(ev.AuthResult(ev.Side.SERVER, evidence, request.auth, success, message.start.text))
            self._open = None
        self._body_of_response(state, message, request, status)

    def _body_of_response(self, state: _Side, message: _Message, request: _Request | None, status: int) -> None:
        method = request.method if request else ""
        if status == 101 or (method == "CONNECT" and 200 <= status < 300):
            self._message_done(ev.Side.SERVER, state)
            state.state = "opaque"  # another protocol (or a tunnel) from here on: not read
            self.sides[ev.Side.CLIENT].state = "opaque"
            return
        if method == "HEAD" or status in (204, 304):
            self._message_done(ev.Side.SERVER, state)
            return
        self._framing(ev.Side.SERVER, state, message, until_close=True)

    # -- tokens ---------------------------------------------------------------------------------------------------

    def _token(self, side: ev.Side, scheme: str, token: str, evidence: ev.Evidence) -> str | None:
        """One NTLM / Negotiate token: AuthStart when it opens an exchange, then its SaslStep. Returns the mechanism
        the token turned out to be."""
        decoded = sasl.decode_base64(token)
        anomalies = list(decoded.anomalies)
        if decoded.data is None:
            self._emit(ev.Anomaly(side, evidence, "bad_base64", f"{scheme} token is not base64"))
            return None
        wrapped = gssapi.unwrap(decoded.data)
        anomalies += list(wrapped.anomalies)
        mechanism = _MECHANISMS.get(wrapped.mechanism, scheme.upper())
        message: ntlmssp.Message | None = None
        if wrapped.ntlm is not None:
            message = ntlmssp.decode(wrapped.ntlm)
        elif scheme == "ntlm":
            anomalies.append("not_ntlmssp")
        if side is ev.Side.CLIENT and (
            self._open is None or isinstance(message, ntlmssp.NegotiateMessage) or self._open != mechanism
        ):
            self._emit(ev.AuthStart(side, evidence, mechanism, True))
        self._open = mechanism
        self._emit(ev.SaslStep(side, evidence, mechanism, decoded.data, message, anomalies))
        return mechanism


def _evidence(line: Line) -> ev.Evidence:
    return ev.Evidence.of(line.text, line.frame, line.timestamp, line.first_frame)
