"""What every mail session dissector shares: bounded line buffers per side, TLS cut-off, SASL translation.

A dissector is sans-I/O: :meth:`MailSession.receive` takes the bytes one side sent (with the frame number and
timestamp they came from, when known) and returns the events they complete. The passive pipeline feeds it
reassembled streams in capture order; the active probe feeds it socket bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from dissectors import events as ev
from dissectors import sasl
from dissectors.linebuffer import MAX_HELD, MAX_LINE, SKIP_ALL, LaxEnd, Line, LineBuffer, Overflow, Raw, Resumed
from dissectors.sasl_ntlm import ntlm_message
from dissectors.tls_records import implicit_tls_evidence, looks_like_clear_text, may_begin_tls_record

# Where quoted lines of a multi-line answer were: the frame where the first began, the frame that completed the
# last, and that frame's time.
Span = tuple[int | None, int | None, float | None]

# Commands a client may pipeline before the server answers; past this the oldest are forgotten (and reported).
MAX_PENDING = 128
# Bytes those commands may hold (their arguments; 128 MAIL FROM lines of 64 KiB held 16 MiB): a real pipeline of
# MAIL, a hundred RCPTs and DATA holds a few KiB. Past this the oldest are forgotten, as past MAX_PENDING.
MAX_PENDING_BYTES = 256 * 1024
# What a remembered command costs besides its strings: the object, its fields, its slot.
COMMAND_OVERHEAD = 256
# Characters of a command's verb (or IMAP command name) kept: the longest real one is a dozen; a longer word is no
# command either way, and a 64 KiB one would be kept whole for every remembered command.
MAX_VERB = 64
# What no session holds between calls (buffered_bytes): the caps here, in linebuffer and in each protocol's module
# add up to about 1.6 MiB for IMAP, the largest, counting lines of characters beyond U+FFFF (four bytes each).
MAX_SESSION_BYTES = 2 * 1024 * 1024
CLIENT, SERVER = ev.Side.CLIENT, ev.Side.SERVER
_NO_LINE = Line("", None, None)


class MailSession:
    """Base class: subclasses implement ``_client_line``, ``_server_line`` and, if they use raw runs, ``_raw``."""

    protocol: sasl.Protocol
    tunnel: ev.Tunnel | None = None  # set once the rest of the connection is a session through a proxy's tunnel
    # The server answers each command in turn, AUTH too (SMTP, POP3; IMAP names it by tag): AuthTracker.unclaimed.
    verdicts_in_order = False

    def __init__(self, partial: bool = False, max_line: int = MAX_LINE) -> None:
        # A session picked up mid-stream has no greeting and may start in any state.
        self.partial = partial
        # The probe passes its own, shorter, line limit: no line it would refuse costs dissector time.
        self.buffers = {CLIENT: LineBuffer(max_line), SERVER: LineBuffer(max_line)}
        self.tls = False
        self.tls_bytes = 0
        self.greeted = False
        self.authenticated = False
        self.auth = sasl.AuthTracker(self.protocol, self.verdicts_in_order)
        self.pending: deque[Any] = deque()
        self._pending_bytes = 0
        self._out: list[ev.Event] = []
        self._line: Line = _NO_LINE
        self._seen_data = False
        # The client's first bytes were a TLS record: believed once the server answers in TLS too.
        self._tls_hello: ev.Evidence | None = None
        # The server accepted STARTTLS: believed once the client's next bytes are TLS (its StartTls waits till then).
        self._starttls: ev.StartTls | None = None
        self._starttls_gap = False  # bytes of the client's were lost after that acceptance (its hello, perhaps)
        self._server_spoke = False  # a byte came from the server (else the capture may hold one side only)
        # Bytes of the server's were lost before its greeting: its first reply may answer a command instead.
        self._greeting_lost = False

    # -- feeding ------------------------------------------------------------------------------------------------

    def receive(
        self, side: ev.Side, data: bytes, frame: int | None = None, timestamp: float | None = None
    ) -> list[ev.Event]:
        """The events the bytes ``side`` sent complete."""
        out: list[ev.Event] = []
        self._out = out
        try:  # the hot path: one call per chunk, its rare cases (the stream's first bytes, TLS) apart
            if side is SERVER and data:
                self._server_spoke = True
            if self.tls:
                self.tls_bytes += len(data)
            elif (self._seen_data and self._tls_hello is None and self._starttls is None) or not self._took_tls(
                side, data, frame, timestamp
            ):
                self._consume(side, data, frame, timestamp)
                if self.buffers[CLIENT].held > MAX_HELD:
                    self._after_receive(side)
        finally:  # as in _collect, without a closure per chunk
            self._out = []
            self._line = _NO_LINE
        return out

    def gap(self, side: ev.Side, size: int, frame: int | None = None, timestamp: float | None = None) -> list[ev.Event]:
        """Bytes were lost on one side: drop the partial line, forget what was waiting for an answer, resync."""
        return self._collect(lambda: self._gap(side, size, frame, timestamp))

    def close(self, frame: int | None = None, timestamp: float | None = None) -> list[ev.Event]:
        """The connection ended: bytes still held for an answer that never came are read as they are."""
        return self._collect(lambda: self._close(frame, timestamp))

    def shed(self, frame: int | None = None, timestamp: float | None = None) -> list[ev.Event]:
        """Drop every partial state (told to by whoever bounds all sessions together), with an anomaly: partial lines
        skipped to their end, bytes held and commands awaiting replies forgotten; on from the next line, as at a gap."""
        return self._collect(lambda: self._shed(frame, timestamp))

    def skippable(self, side: ev.Side) -> tuple[int, int, bool] | None:
        """Whether the next bytes ``side`` sends may be dropped unread, and by which rule
        (:meth:`dissectors.linebuffer.LineBuffer.skippable`; ``SKIP_ALL`` once the session is TLS): message bodies,
        literals nobody reads and ciphertext are most of a mail session's bytes and none of its findings."""
        if self.tls:
            return SKIP_ALL, 0, False
        if self._tls_hello is not None or self._starttls is not None:
            return None
        return self.buffers[side].skippable()

    def may_skip(self) -> bool:
        """Whether either side's next bytes may be dropped unread (:meth:`skippable`)."""
        if self.tls:
            return True
        if self._tls_hello is not None or self._starttls is not None:
            return False
        buffers = self.buffers
        return buffers[CLIENT].skippable() is not None or buffers[SERVER].skippable() is not None

    def skipped(
        self, side: ev.Side, size: int, at_line_start: bool, frame: int | None, ts: float | None, tail: bytes = b""
    ) -> None:
        """``size`` bytes ``side`` sent were dropped unread, as :meth:`skippable` allowed (``tail``: their last
        bytes, as many as the one dropping them kept, up to two)."""
        self._server_spoke = self._server_spoke or (side is SERVER and size > 0)
        if self.tls:
            self.tls_bytes += size
        else:
            self.buffers[side].skip(size, at_line_start, frame, ts, tail)

    def buffered_bytes(self) -> int:
        """Bytes held between calls: partial lines, held bytes, kept literals, pending commands, ``_state_bytes``."""
        held = self._pending_bytes + self._state_bytes() + self.buffers[CLIENT].buffered_with(self.buffers[SERVER])
        auth = self.auth
        return held if auth.exchange is None and not auth.awaiting else held + auth.held_bytes()

    def _collect(self, work: Callable[[], None]) -> list[ev.Event]:
        out: list[ev.Event] = []
        self._out = out
        try:
            work()
        finally:
            # Nothing of this call outlives it but the state counted in buffered_bytes (the last line: 64 KiB).
            self._out = []
            self._line = _NO_LINE
        return out

    def _took_tls(self, side: ev.Side, data: bytes, frame: int | None, timestamp: float | None) -> bool:
        """The stream's first bytes, or the server's after a client's TLS record: whether they are TLS (counted,
        not read). A client's TLS record waits, unread, for the server's answer. After the server accepted
        STARTTLS, the next bytes: the client's TLS record confirms it (:meth:`_starttls_answered`)."""
        if self._starttls is not None:
            return bool(data) and self._starttls_answered(side, data)
        if self._seen_data:  # the client sent a TLS record first
            return side is SERVER and bool(data) and self._tls_answered(data)
        if not data:
            return False
        self._seen_data = True
        if data[:2] == b"\x16\x03" and not self.partial:
            described = ev.Evidence.description(implicit_tls_evidence(data), frame, timestamp)
            if side is SERVER:  # the server speaks TLS from its first byte: implicit TLS (465, 993, 995...)
                self._start_tls("implicit", True, side, described)
                self.tls_bytes += len(data)
                return True
            self._tls_hello = described  # the client's bytes wait, unread, for the server's answer
            self.buffers[CLIENT].hold()
        return False

    def _consume(self, side: ev.Side, data: bytes, frame: int | None, timestamp: float | None) -> None:
        read_line = self._client_line if side is CLIENT else self._server_line
        for item in self.buffers[side].feed(data, frame, timestamp):
            kind = item.__class__
            if kind is Line:
                self._line = item
                read_line(item.text)
            elif kind is Raw:
                self._raw(side, item)
            elif kind is Overflow:
                self._line = Line("", item.frame, item.timestamp)
                self._anomaly(side, "line_too_long", f"{item.size} bytes without a newline; skipped to the next one")
            elif kind is LaxEnd:
                self._line = Line(".", item.frame, item.timestamp, item.first_frame)
                self._lax_end(item)
            elif kind is Resumed:  # maybe a cut line's tail (LineBuffer.resync): a prompt in it shows nothing
                self._line, doubt = Line(*item), self.auth.doubt
                read_line(item.text)
                self.auth.doubt = self.auth.doubt or doubt
            if self.tls:
                break  # the rest of this chunk is the TLS handshake: not ours to read

    def _lax_end(self, item: LaxEnd) -> None:
        """A body's end line not exactly CR LF "." CR LF (asked for with ``expect_dot_body(exact_end=True)``): the
        end, unless the protocol decides otherwise."""
        self._client_line(".")

    def _gap(self, side: ev.Side, size: int, frame: int | None, timestamp: float | None) -> None:
        if self.tls:
            return
        self.buffers[side].resync()
        self._greeting_lost = self._greeting_lost or (side is SERVER and not self.greeted)
        if self._tls_hello is not None:  # whatever answered the client's TLS record is lost with it
            self._tls_hello = None
            self.buffers[CLIENT].resync()
        self._starttls_gap |= self._starttls is not None and side is CLIENT  # next bytes may be inside its TLS record
        self._line = Line("", frame, timestamp)
        self._anomaly(side, "gap", f"{size} bytes missing; resynchronised at the next line")
        # What was lost decides which exchanges go on (AuthTracker.gap): the commands awaiting replies may be owed.
        self._sasl(side, self.auth.gap(side is SERVER, size, bool(self.pending)))
        self._clear_pending()
        self._after_gap(side)

    def _close(self, frame: int | None, timestamp: float | None) -> None:
        self._line = Line("", frame, timestamp)
        if self._tls_hello is not None and not self.tls:
            self._tls_not_answered("the connection ended without an answer from the server")
        if self._starttls is not None:  # nothing followed the server's acceptance: what it accepted is all there is
            self._tls_began()

    def _shed(self, frame: int | None, timestamp: float | None) -> None:
        held = self.buffered_bytes()
        for buffer in self.buffers.values():
            buffer.shed()
        self._tls_hello = None
        self._clear_pending()
        self.auth.forget()
        self._shed_state()
        self._line = Line("", frame, timestamp)
        detail = f"{held} bytes of partial state dropped to keep within the run's dissector budget"
        self._anomaly(CLIENT, "dissector_budget", detail)

    # -- implicit TLS -------------------------------------------------------------------------------------------

    def _tls_answered(self, data: bytes) -> bool:
        """The server's first bytes after the client's TLS record: TLS too (a handshake or an alert) confirms
        implicit TLS; anything else means the session is plain text after all."""
        hello = self._tls_hello
        assert hello is not None
        if data[:1] in (b"\x15", b"\x16") and data[1:2] == b"\x03":
            self._tls_hello = None
            self._start_tls("implicit", True, CLIENT, hello)
            self.tls_bytes += len(data)
            return True
        self._tls_not_answered("the server answered in plain text")
        return False

    def _tls_not_answered(self, why: str) -> None:
        hello = self._tls_hello
        assert hello is not None
        self._tls_hello = None
        self._emit(ev.Anomaly(CLIENT, hello, "tls_not_answered", f"TLS record from the client not taken: {why}"))
        held, frame, timestamp = self.buffers[CLIENT].release()
        self._consume(CLIENT, held, frame, timestamp)

    def _after_receive(self, side: ev.Side) -> None:
        """More than MAX_HELD of the client's bytes held for an answer slow to come: they are read as they are."""
        if self._tls_hello is not None and self.buffers[CLIENT].held > MAX_HELD:
            self._tls_not_answered(f"more than {MAX_HELD} bytes from the client and no answer")

    # -- hooks for subclasses -----------------------------------------------------------------------------------

    def _client_line(self, text: str) -> None:
        raise NotImplementedError

    def _server_line(self, text: str) -> None:
        raise NotImplementedError

    def _raw(self, side: ev.Side, item: Raw) -> None:
        """Raw runs are requested by the subclass; the default ignores them."""

    def _after_gap(self, side: ev.Side) -> None:
        """Reset protocol state that a gap makes unreliable."""

    def _state_bytes(self) -> int:
        """Bytes the protocol keeps besides lines and pending commands (a reply being assembled, say)."""
        return 0

    def _shed_state(self) -> None:
        """Drop what ``_state_bytes`` counts."""

    # -- helpers ------------------------------------------------------------------------------------------------

    def _evidence(self, text: str | None = None) -> ev.Evidence:
        line = self._line
        return ev.Evidence.of(line.text if text is None else text, line.frame, line.timestamp, line.first_frame)

    def _cite(self, span: Span | None) -> Span:
        """``span`` (the lines of a multi-line answer cited so far) grown by the current line."""
        line = self._line
        return (span[0] if span else line.first_frame or line.frame), line.frame, line.timestamp

    def _span_evidence(self, text: str, span: Span | None) -> ev.Evidence:
        """Evidence quoting lines of a multi-line answer, placed at the frames that carried them (``span``), not
        at its last line's; the current line's without a span."""
        if span is None:
            return self._evidence(text)
        return ev.Evidence.of(text, span[1], span[2], span[0])

    def _emit(self, event: ev.Event) -> None:
        self._out.append(event)

    def _anomaly(self, side: ev.Side, code: str, detail: str) -> None:
        self._emit(ev.Anomaly(side, self._evidence(), code, detail))

    def _push_pending(self, item: Any) -> None:
        """Remember a command awaiting its reply (``item.held`` says its bytes); the oldest go past the caps."""
        self.pending.append(item)
        self._pending_bytes += item.held
        forgotten = 0
        while len(self.pending) > MAX_PENDING or (self._pending_bytes > MAX_PENDING_BYTES and len(self.pending) > 1):
            self._pending_bytes -= self.pending.popleft().held
            forgotten += 1
        if forgotten:
            limit = f"{MAX_PENDING} unanswered commands or {MAX_PENDING_BYTES} bytes of them"
            self._anomaly(CLIENT, "too_many_pending_commands", f"more than {limit}; {forgotten} forgotten")

    def _pop_pending(self) -> Any:
        item = self.pending.popleft()
        self._pending_bytes -= item.held
        return item

    def _forget_last(self, verb: str) -> None:
        """Forget the last command with this verb still awaiting its reply (its reply is known to be lost)."""
        for index in range(len(self.pending) - 1, -1, -1):
            if getattr(self.pending[index], "verb", None) == verb:
                self._pending_bytes -= self.pending[index].held
                del self.pending[index]
                return

    def _clear_pending(self) -> None:
        self.pending.clear()
        self._pending_bytes = 0

    def _start_tls(
        self, command: str, accepted: bool, side: ev.Side = ev.Side.SERVER, evidence: ev.Evidence | None = None
    ) -> None:
        event = ev.StartTls(side, evidence or self._evidence(), command, accepted)
        if not accepted or command == "implicit":
            self._emit(event)
            self.tls = accepted
            return
        # The server accepted: TLS begins when the client's next bytes are a TLS record. A client that carries on in
        # clear text sends what follows (an AUTH, a password) in the clear, and it is read.
        self._starttls = event
        self._starttls_gap = False

    def _starttls_answered(self, side: ev.Side, data: bytes) -> bool:
        """The first bytes after the server accepted STARTTLS: a TLS record (any type, its header maybe cut after
        its first byte) begins TLS, the server's too (its hello came before the acceptance, or was lost), and so do the
        client's bytes after a gap unless clear text (a record's middle); the client's clear text means it carried on
        without; the server's clear text is read as it is."""
        record = may_begin_tls_record(data)
        if record or (side is CLIENT and self._starttls_gap and not looks_like_clear_text(data)):
            self._tls_began()
            self.tls_bytes += len(data)
            return True
        if side is SERVER:
            return False
        event, self._starttls = self._starttls, None
        assert event is not None
        detail = f"the server accepted {event.command}, but the client carried on in clear text"
        code = "starttls_not_used" if event.command in ev.STARTTLS_COMMANDS else "anonymoustls_not_used"
        self._emit(ev.Anomaly(SERVER, event.evidence, code, detail))  # citing the acceptance
        return False

    def tls_began(self) -> list[ev.Event]:
        """A caller that made the TLS handshake itself after the server accepted STARTTLS (the probe): TLS began."""
        return self._collect(lambda: self._starttls is not None and self._tls_began())

    def _tls_began(self) -> None:
        event, self._starttls = self._starttls, None
        assert event is not None
        self._emit(event)
        self.tls = True
        for buffer in self.buffers.values():
            self.tls_bytes += buffer.buffered
            buffer.resync()

    def _sasl(self, side: ev.Side, results: list[sasl.SaslEvent]) -> None:
        """Translate the SASL tracker's events into session events with evidence, each naming its exchange."""
        if not results:
            return
        evidence = self._evidence()
        for result in results:
            if isinstance(result, sasl.SaslStarted):
                self._emit(ev.AuthStart(side, evidence, result.mechanism, result.initial_response, result.attempt))
            elif isinstance(result, sasl.SaslBlob):
                self._emit(ev.SaslStep(side, evidence, result.mechanism, result.data, result.ntlm, result.anomalies))
            elif isinstance(result, sasl.SaslCredentials):
                fields = (result.mechanism, result.user, result.password, result.authzid, result.secret_kind)
                self._emit(ev.Credentials(side, evidence, *fields, result.carrier, result.attempt))
            elif isinstance(result, sasl.SaslCancelled):
                self._emit(ev.AuthCancelled(side, evidence, result.mechanism, result.attempt))
            elif isinstance(result, sasl.SaslOutcome):
                # IMAP, POP3: no login after one succeeded (or UNAUTHENTICATE): a refusal then read nothing (SMTP: 503)
                again = self.authenticated and self.protocol is not sasl.Protocol.SMTP
                judged = result.judged and (result.success or not again)
                self.authenticated = self.authenticated or result.success
                verdict = (result.mechanism, result.success, result.text, result.attempt, judged)
                self._emit(ev.AuthResult(side, evidence, *verdict))
            elif isinstance(result, sasl.SaslAbandoned):
                self._emit(ev.AuthAbandoned(side, evidence, result.mechanism, result.reason, result.attempt))
            elif isinstance(result, sasl.SaslAnomaly):
                self._emit(ev.Anomaly(side, evidence, result.code, result.detail))

    def _stray_challenge(self, text: str) -> bool:
        """A server continuation that answers no AUTH the capture holds (the client's side not captured, or lost
        in a gap) and carries an NTLM message, raw or in a GSS-API token: the server's CHALLENGE says what it
        always says, so its step is read all the same, with an anomaly, as one of an exchange picked up mid-way.
        False (nothing emitted) for any other line."""
        reply = sasl.classify_server_line(self.protocol, text)
        if reply.kind is not sasl.ReplyKind.CONTINUE or not reply.text:
            return False
        decoded = sasl.decode_base64(reply.text)
        message, _ = ntlm_message(decoded.data, "GSSAPI")
        if message is None:
            return False
        evidence = self._evidence()
        detail = "NTLM message from the server outside any exchange the capture holds: read as one picked up mid-way"
        self._emit(ev.Anomaly(SERVER, evidence, "unsolicited_challenge", detail))
        self._emit(ev.SaslStep(SERVER, evidence, "NTLM", decoded.data, message, list(decoded.anomalies)))
        return True

    def _sasl_client(self, text: str) -> bool:
        """Give a client line to the open SASL exchange if it is one of its steps (True); otherwise the exchange
        hears that the client moved on, and the line is the caller's to read as a command (False)."""
        if self.auth.claims(text):
            self._sasl(CLIENT, self.auth.client_line(text))
            return True
        results = self.auth.unclaimed(self.verdicts_in_order)
        self._sasl(CLIENT, results)
        if any(isinstance(result, sasl.SaslAbandoned) for result in results):
            self._auth_abandoned()
        return False

    def _auth_abandoned(self) -> None:
        """An exchange ended without its verdict: the protocol forgets the command that awaited it."""
