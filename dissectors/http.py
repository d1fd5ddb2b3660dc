"""HTTP/1.x as a carrier of authentication, sans-I/O: NTLM and Negotiate ([MS-NTHT], RFC 4559) and Basic
(RFC 7617) in ``Authorization`` / ``WWW-Authenticate`` and their ``Proxy-`` forms.

Requests and responses are read on any port, with keep-alive and pipelining (responses answer requests in order);
bodies are skipped by their framing (``Content-Length``, ``chunked``, or up to the close) and never read. A
``Negotiate`` token is unwrapped (:mod:`dissectors.gssapi`) to its NTLMSSP message; Kerberos tokens are named, not
decoded. Events are the mail sessions' vocabulary: :class:`~dissectors.events.HttpExchange` (which request and
response an authentication step belongs to), ``AuthStart`` / ``SaslStep`` (NTLMSSP decoded) / ``AuthResult``
(the status of the response to a request that carried credentials: 401 and 407 fail, anything else succeeds), and
``Credentials`` for Basic (mechanism ``HTTP-BASIC``). After a ``101 Switching Protocols`` the rest of the connection
is not HTTP and is not read. After a ``CONNECT`` the client's bytes wait, unread, for the proxy's answer: a 2xx
sets :attr:`~dissectors.session.MailSession.tunnel` (the target as the request named it, and the bytes either side
sent past the answer), and the rest of the connection is the client's session with that target, read by whoever
reads sessions; any other answer (407, 403) leaves the connection HTTP, and the waiting bytes are read as such.
"""

from __future__ import annotations

from collections import deque

from dissectors import events as ev
from dissectors import gssapi, ntlmssp, sasl
from dissectors.http_resync import AUTHENTICATE, NEGOTIATE, Doubt, match_after_gap
from dissectors.http_syntax import (
    MAX_CHALLENGES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    STATUS_LINE,
    Message,
    Request,
    SideState,
    body_framing,
    quoted,
    request_line,
    size_value,
    split_challenges,
)
from dissectors.linebuffer import MAX_HELD, MAX_LINE, Line, Raw, wire_text
from dissectors.session import MailSession
from dissectors.socks import host_text

# How much of a request path and Host header a finding keeps.
MAX_PATH = 256
MAX_HOST = 255
# "Read to the close": a body without length counts down from here (bytes are counted, never kept).
UNTIL_CLOSE = 1 << 62

_AUTH_HEADERS = {"authorization", "proxy-authorization"}
_CHALLENGE_HEADERS = {"www-authenticate", "proxy-authenticate"}
# Names a Negotiate token's mechanism goes by in events (the NTLM detector follows "NTLM").
_MECHANISMS = {"ntlmssp": "NTLM", "kerberos": "KERBEROS", "negoex": "NEGOEX", "spnego": "SPNEGO"}


class HttpSession(MailSession):
    protocol = sasl.Protocol.HTTP

    def __init__(self, partial: bool = False, max_line: int = MAX_LINE) -> None:
        super().__init__(partial, max_line)
        self.sides = {ev.Side.CLIENT: SideState(synced=not partial), ev.Side.SERVER: SideState(synced=not partial)}
        self.responses = 0  # complete responses read (the probe stops after the one it asked for)
        # The latest final response: status, the schemes its WWW-Authenticate headers offered, its Server header.
        self.last_status: int | None = None
        self.last_schemes: list[str] = []
        self.last_server: str | None = None
        self._open: str | None = None  # mechanism of an NTLM/Negotiate exchange in progress on this connection
        # The client's bytes after a CONNECT went unanswered past MAX_HELD: until the server answers, a CONNECT among
        # them does not hold what follows it (each would hold all that came after it again, growing without bound).
        self._gave_up_holding = False
        self._owed = 0  # responses still to come to requests forgotten past MAX_PENDING (_push_pending)
        # Bytes of the server's were lost: the requests awaiting responses may have been answered among them, and
        # which one a response answers is decided by dissectors.http_resync until it is known again.
        self._unsure = False
        # What lost bytes (or a pickup mid-stream: the server's bytes before it came before any captured) left unknown.
        self.doubt = Doubt(adrift=partial, latest=0 if partial else None)

    def _push_pending(self, item: Request) -> None:
        """Past the caps the oldest requests are forgotten, but the server still answers them first, in turn: their
        responses are owed, and answer none of the requests kept (after 129 pipelined requests, a 200 to one was the
        answer to a Basic login the server refused with 401: a wrong password taken for a right one)."""
        kept = len(self.pending)
        super()._push_pending(item)
        self._owed += kept + 1 - len(self.pending)
        self.doubt.answered(kept + 1 - len(self.pending))  # those forgotten first were kept at a client gap first

    def _pop_pending(self) -> Request:
        self.doubt.answered()
        return super()._pop_pending()  # type: ignore[no-any-return]

    def _clear_pending(self) -> None:
        super()._clear_pending()
        self._owed = 0
        self.doubt.kept = 0

    def _anomaly(self, side: ev.Side, code: str, detail: str) -> None:
        super()._anomaly(side, code, detail)
        self.doubt.head = self.doubt.head and side is ev.Side.CLIENT  # a server line too long began its chunk
        state = self.sides[ev.Side.CLIENT]
        if code == "line_too_long" and side is ev.Side.CLIENT and state.state == "start" and state.synced:
            # A request line too long to read is still a request the server answers (414), in turn: it waits.
            self._push_pending(Request("", "", None, self._evidence()))

    # -- lines ----------------------------------------------------------------------------------------------------

    def _client_line(self, text: str) -> None:
        self._line_of(ev.Side.CLIENT, text)

    def _server_line(self, text: str) -> None:
        head, self.doubt.head = self.doubt.head, False
        state = self.sides[ev.Side.SERVER]
        starting = state.state == "start"
        self._line_of(ev.Side.SERVER, text)
        if starting:  # whether the status line (if this was one) began a segment of the server's, and after which
            state.began_after = self.doubt.before if head else None

    def _line_of(self, side: ev.Side, text: str) -> None:
        state = self.sides[side]
        if state.state == "start":
            self._start_line(side, state, text)
        elif state.state in ("headers", "trailers"):
            self._header_line(side, state, text)
        elif state.state == "chunk-size":
            size = size_value(text.split(";", 1)[0], 16)
            if size is None:
                self._anomaly(side, "bad_chunk_size", f"not a chunk size: {quoted(side, text, 40)}; reading stopped")
                state.state = "opaque"
            elif size == 0:
                state.state = "trailers"
            else:
                state.state = "chunk-data"
                self.buffers[side].expect_raw(size, keep=False)  # chunk data: counted off, not read
        elif state.state == "chunk-end":
            state.state = "chunk-size"  # the CR LF after a chunk's data

    def _raw(self, side: ev.Side, item: Raw) -> None:
        self.doubt.head = self.doubt.head and side is ev.Side.CLIENT
        state = self.sides[side]
        if state.state == "chunk-data":
            state.state = "chunk-end"
        elif state.state == "body":
            self._message_done(side, state)

    def _gap(self, side: ev.Side, size: int, frame: int | None, timestamp: float | None) -> None:
        """As every session's, but the requests awaiting responses are kept: lost bytes of the server's may have
        answered some, and the responses after them say which when they can (:meth:`_answered`); those of the client's
        may have held more requests (:class:`~dissectors.http_resync.Doubt`). Inside a body: :meth:`_lost_in_body`."""
        if self.tls:
            super()._gap(side, size, frame, timestamp)
            return
        in_body = self._lost_in_body(side, size, frame, timestamp)
        if side is ev.Side.SERVER:
            self.doubt.server_gap(where_known=in_body)
        if in_body:
            return
        kept, self.pending = self.pending, deque()
        held, owed, before = self._pending_bytes, self._owed, self.doubt.kept
        super()._gap(side, size, frame, timestamp)
        # The requests read from the client's bytes held after a CONNECT (_after_gap) come after those kept.
        read, self.pending, self._pending_bytes, self._owed = self.pending, kept, held, owed
        self.doubt.kept = before
        for request in read:
            self._push_pending(request)
        if side is ev.Side.CLIENT:
            self.doubt.client_gap(len(self.pending))
        else:
            self._unsure = bool(self.pending) or bool(self._owed)

    def _lost_in_body(self, side: ev.Side, size: int, frame: int | None, timestamp: float | None) -> bool:
        """Were the ``size`` bytes lost all inside the body or chunk being skipped, whose length said where it ends?
        Then they are counted off (LineBuffer.lose), reading goes on where it would have, and nothing is in doubt."""
        state = self.sides[side]
        left = self.buffers[side].lose(size) if state.state in ("body", "chunk-data") else None
        if left is None:
            return False
        self._line = Line("", frame, timestamp)
        self._anomaly(side, "gap", f"{size} bytes missing inside a body of known length; read on after them")
        if not left:
            self._raw(side, Raw(b"", size, frame, timestamp))
        return True

    def _after_gap(self, side: ev.Side) -> None:
        self.sides[side] = SideState(synced=False)
        self._open = None
        if side is ev.Side.SERVER and self.tunnel is None:
            self._read_held()  # the answer to a CONNECT may be among the lost bytes

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

    def _start_line(self, side: ev.Side, state: SideState, text: str) -> None:
        if not text:
            return  # an empty line between messages is allowed (RFC 9112 2.2)
        matched = request_line(text) if side is ev.Side.CLIENT else STATUS_LINE.match(text)
        if not matched:
            if state.synced:
                self._anomaly(side, "not_http", f"not an HTTP start line: {quoted(side, text, 60)}; skipped")
                state.synced = False
            if side is ev.Side.SERVER and self.doubt.adrift:  # the tail of a response, maybe to a request waiting
                self._unsure = self._unsure or bool(self.pending) or bool(self._owed)
            return
        state.synced = True
        state.state = "headers"
        state.message = Message(self._line)

    def _header_line(self, side: ev.Side, state: SideState, text: str) -> None:
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

    def _message_done(self, side: ev.Side, state: SideState) -> None:
        state.state, state.message = "start", None
        if side is ev.Side.SERVER:
            self.responses += 1
            self.doubt.response_ended(len(self.pending))

    def _framing(self, side: ev.Side, state: SideState, message: Message, until_close: bool) -> None:
        """Skip the body as the headers frame it (:func:`~dissectors.http_syntax.body_framing`)."""
        chunked, size, unframed = body_framing(message, side is ev.Side.SERVER, until_close)
        if chunked:
            state.state = "chunk-size"
        elif unframed:
            self._anomaly(side, "bad_framing", f"{unframed}: the body cannot be framed; this side is not read further")
            state.state = "opaque"
        elif size:
            state.state = "body"
            self.buffers[side].expect_raw(UNTIL_CLOSE if size < 0 else size, keep=False)  # counted off, not read
        else:
            self._message_done(side, state)

    # -- requests -------------------------------------------------------------------------------------------------

    def _request(self, state: SideState, message: Message) -> None:
        match = request_line(message.start.text)
        assert match is not None
        method, target = match.group(1).upper(), match.group(2)
        host = (message.values("host") or [None])[0]
        if method == "CONNECT":  # authority form (RFC 9110 9.3.6): the server the tunnel is to, as the client named it
            path = target[:MAX_PATH]
        else:
            if "://" in target:  # absolute form (a proxy request): the authority is the host
                authority, _, rest = target.split("://", 1)[1].partition("/")
                host, target = host or authority.rpartition("@")[2], "/" + rest
            path = target.split("?", 1)[0][:MAX_PATH]
        host = host[:MAX_HOST] if host else None
        request = Request(method, path, host, _evidence(message.start))
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
        if method == "CONNECT" and state.state == "start" and not self._gave_up_holding:
            self.buffers[ev.Side.CLIENT].hold()  # a tunnel's first bytes, or HTTP again: the answer says

    def _credentials(self, request: Request, value: str, evidence: ev.Evidence) -> None:
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
            request.auth = self._token(ev.Side.CLIENT, scheme, token, evidence, request)

    # -- responses ------------------------------------------------------------------------------------------------

    def _response(self, state: SideState, message: Message) -> None:
        match = STATUS_LINE.match(message.start.text)
        assert match is not None
        status = int(match.group(3))
        if 100 <= status < 200 and status != 101:
            state.state, state.message = "start", None  # interim: the request is still waiting for its answer
            return
        request = self._answered(message.start.frame, state.began_after)
        self._gave_up_holding = False  # an answer came: a CONNECT may wait for its own again
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

    def _answered(self, frame: int | None, began_after: int | None) -> Request | None:
        """The request the final response whose status line came in ``frame`` answers: the oldest awaiting one, unless
        a forgotten request's response is owed (_push_pending). After a gap (dissectors.http_resync): none unless the
        status line is known to be a response (Doubt.trusts, ``began_after``), nor one sent after lost bytes of the
        client's (Doubt.past_kept); after one of the server's, the one match_after_gap shows, if any."""
        doubt = self.doubt
        if doubt.adrift:
            if not doubt.trusts(began_after, self.pending, frame):
                self._unsure = self._unsure or bool(self.pending) or bool(self._owed)  # it may answer one of them
                return None
            doubt.adrift = False
        if doubt.past_kept(self._owed):
            return None
        if not self._unsure:
            request = self._pop_pending() if self.pending and not self._owed else None
            self._owed -= bool(self._owed)
            return request
        match = match_after_gap(self.pending, self._owed, frame)
        self._owed -= match.forgotten
        for _ in range(match.unseen):
            self._pop_pending()
        self._unsure = not match.sure
        if match.answers and doubt.past_kept(self._owed):
            self._unsure = True  # the one it shows was sent after the client's bytes were lost: not known either
            return None
        return self._pop_pending() if match.answers else None

    def _body_of_response(self, state: SideState, message: Message, request: Request | None, status: int) -> None:
        method = request.method if request else ""
        if status == 101 or (method == "CONNECT" and 200 <= status < 300):
            self._message_done(ev.Side.SERVER, state)
            state.state = "opaque"  # another protocol (or a tunnel) from here on: not read as HTTP
            self.sides[ev.Side.CLIENT].state = "opaque"
            if request is not None and status != 101:
                self.buffers[ev.Side.SERVER].hold()  # the tunnel's first bytes, handed over with the client's
                self.tunnel = ev.Tunnel("http-connect", host_text(request.path.encode()))
            return
        if method == "HEAD" or status in (204, 304):
            self._message_done(ev.Side.SERVER, state)
        else:
            self._framing(ev.Side.SERVER, state, message, until_close=True)
        if method == "CONNECT":
            self._read_held()  # refused: the connection is still HTTP

    def _read_held(self) -> None:
        """The client's bytes held after a CONNECT, read as HTTP (it was refused, or its answer will not come)."""
        buffer = self.buffers[ev.Side.CLIENT]
        if buffer.holding:
            held, frame, timestamp = buffer.release()
            if held:
                self._consume(ev.Side.CLIENT, held, frame, timestamp)

    def receive(
        self, side: ev.Side, data: bytes, frame: int | None = None, timestamp: float | None = None
    ) -> list[ev.Event]:
        """As every session's; once a CONNECT was accepted, the bytes past the answer are handed to the tunnel."""
        if side is ev.Side.SERVER and data:
            self.doubt.server_chunk(frame, self.buffers[side].at_line_start)
        events = super().receive(side, data, frame, timestamp)
        tunnel = self.tunnel
        if tunnel is not None and self.buffers[ev.Side.SERVER].holding:
            rest = [(side, *self.buffers[side].release()) for side in (ev.Side.CLIENT, ev.Side.SERVER)]
            rest.sort(key=lambda item: item[2] or 0)  # in the order they came (by frame)
            tunnel.rest = [item for item in rest if item[1]]
        return events

    def skipped(
        self, side: ev.Side, size: int, at_line_start: bool, frame: int | None, ts: float | None, tail: bytes = b""
    ) -> None:
        """As every session's; the server's bytes dropped unread came in a segment of their own (Doubt)."""
        super().skipped(side, size, at_line_start, frame, ts, tail)
        if side is ev.Side.SERVER and size:
            self.doubt.server_chunk(frame, False)

    def _after_receive(self, side: ev.Side) -> None:
        super()._after_receive(side)
        if self.tunnel is None and self.buffers[ev.Side.CLIENT].held > MAX_HELD:
            self._gave_up_holding = True
            self._read_held()  # a CONNECT left waiting this long: the client's bytes are read as they are

    # -- tokens ---------------------------------------------------------------------------------------------------

    def _token(
        self, side: ev.Side, scheme: str, token: str, evidence: ev.Evidence, request: Request | None = None
    ) -> str | None:
        """One NTLM / Negotiate token: AuthStart when it opens an exchange, then its SaslStep. Returns the mechanism
        the token turned out to be; ``request`` (the client's) learns whether it was a NEGOTIATE or an AUTHENTICATE."""
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
        if request is not None and isinstance(message, (ntlmssp.NegotiateMessage, ntlmssp.AuthenticateMessage)):
            request.ntlm = NEGOTIATE if isinstance(message, ntlmssp.NegotiateMessage) else AUTHENTICATE
        if side is ev.Side.CLIENT and (
            self._open is None or isinstance(message, ntlmssp.NegotiateMessage) or self._open != mechanism
        ):
            self._emit(ev.AuthStart(side, evidence, mechanism, True))
        self._open = mechanism
        self._emit(ev.SaslStep(side, evidence, mechanism, decoded.data, message, anomalies))
        return mechanism


def _evidence(line: Line) -> ev.Evidence:
    return ev.Evidence.of(line.text, line.frame, line.timestamp, line.first_frame)
