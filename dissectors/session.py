"""What every mail session dissector shares: bounded line buffers per side, TLS cut-off, SASL translation.

A dissector is sans-I/O: :meth:`MailSession.receive` takes the bytes one side sent (with the frame number and
timestamp they came from, when known) and returns the events they complete. The passive pipeline feeds it
reassembled streams in capture order; the active probe feeds it socket bytes.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from dissectors import events as ev
from dissectors import sasl
from dissectors.linebuffer import MAX_LINE, Line, LineBuffer, Overflow, Raw

# Commands a client may pipeline before the server answers; past this the oldest are forgotten (and reported).
MAX_PENDING = 128


class MailSession:
    """Base class: subclasses implement ``_client_line``, ``_server_line`` and, if they use raw runs, ``_raw``."""

    protocol: sasl.Protocol

    def __init__(self, partial: bool = False, max_line: int = MAX_LINE) -> None:
        # A session picked up mid-stream has no greeting and may start in any state.
        self.partial = partial
        # The probe passes its own, shorter, line limit: no line it would refuse costs dissector time.
        self.buffers = {ev.Side.CLIENT: LineBuffer(max_line), ev.Side.SERVER: LineBuffer(max_line)}
        self.tls = False
        self.tls_bytes = 0
        self.greeted = False
        self.authenticated = False
        self.auth = sasl.AuthTracker(self.protocol)
        self.pending: deque[Any] = deque()
        self._out: list[ev.Event] = []
        self._line: Line = Line("", None, None)
        self._seen_data = False

    # -- feeding ------------------------------------------------------------------------------------------------

    def receive(
        self, side: ev.Side, data: bytes, frame: int | None = None, timestamp: float | None = None
    ) -> list[ev.Event]:
        out: list[ev.Event] = []
        self._out = out
        if self.tls:
            self.tls_bytes += len(data)
            return out
        if not self._seen_data and data:
            self._seen_data = True
            if data[:2] == b"\x16\x03" and not self.partial:
                # A TLS record from the first byte: implicit TLS (465, 993, 995 or anywhere else).
                described = ev.Evidence.description(implicit_tls_evidence(data), frame, timestamp)
                self._start_tls("implicit", True, side, described)
                self.tls_bytes += len(data)
                return out
        buffer = self.buffers[side]
        for item in buffer.feed(data, frame, timestamp):
            if isinstance(item, Line):
                self._line = item
                if side is ev.Side.CLIENT:
                    self._client_line(item.text)
                else:
                    self._server_line(item.text)
            elif isinstance(item, Raw):
                self._raw(side, item)
            elif isinstance(item, Overflow):
                self._line = Line("", item.frame, item.timestamp)
                self._anomaly(side, "line_too_long", f"{item.size} bytes without a newline; skipped to the next one")
            if self.tls:
                break  # the rest of this chunk is the TLS handshake: not ours to read
        return out

    def gap(self, side: ev.Side, size: int, frame: int | None = None, timestamp: float | None = None) -> list[ev.Event]:
        """Bytes were lost on one side: drop the partial line, forget what was waiting for an answer, resync."""
        out: list[ev.Event] = []
        self._out = out
        if self.tls:
            return out
        self.buffers[side].resync()
        self.pending.clear()
        self._line = Line("", frame, timestamp)
        self._anomaly(side, "gap", f"{size} bytes missing; resynchronised at the next line")
        self._after_gap(side)
        return out

    # -- hooks for subclasses -----------------------------------------------------------------------------------

    def _client_line(self, text: str) -> None:
        raise NotImplementedError

    def _server_line(self, text: str) -> None:
        raise NotImplementedError

    def _raw(self, side: ev.Side, item: Raw) -> None:
        """Raw runs are requested by the subclass; the default ignores them."""

    def _after_gap(self, side: ev.Side) -> None:
        """Reset protocol state that a gap makes unreliable."""

    # -- helpers ------------------------------------------------------------------------------------------------

    def _evidence(self, text: str | None = None) -> ev.Evidence:
        line = self._line
        return ev.Evidence.of(line.text if text is None else text, line.frame, line.timestamp, line.first_frame)

    def _emit(self, event: ev.Event) -> None:
        self._out.append(event)

    def _anomaly(self, side: ev.Side, code: str, detail: str) -> None:
        self._emit(ev.Anomaly(side, self._evidence(), code, detail))

    def _push_pending(self, item: Any) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.pending.popleft()
            self._anomaly(ev.Side.CLIENT, "too_many_pending_commands", f"more than {MAX_PENDING} unanswered commands")
        self.pending.append(item)

    def _start_tls(
        self, command: str, accepted: bool, side: ev.Side = ev.Side.SERVER, evidence: ev.Evidence | None = None
    ) -> None:
        self._emit(ev.StartTls(side, evidence or self._evidence(), command, accepted))
        if accepted:
            self.tls = True
            for buffer in self.buffers.values():
                self.tls_bytes += buffer.buffered
                buffer.resync()

    def _sasl(self, side: ev.Side, results: list[sasl.SaslEvent]) -> None:
        """Translate the SASL tracker's events into session events with evidence."""
        evidence = self._evidence()
        mechanism = self.auth.exchange.mechanism if self.auth.exchange else ""
        for result in results:
            if isinstance(result, sasl.SaslStarted):
                mechanism = result.mechanism
                self._emit(ev.AuthStart(side, evidence, result.mechanism, result.initial_response))
            elif isinstance(result, sasl.SaslBlob):
                self._emit(ev.SaslStep(side, evidence, mechanism, result.data, result.ntlm, result.anomalies))
            elif isinstance(result, sasl.SaslCredentials):
                self._emit(
                    ev.Credentials(
                        side,
                        evidence,
                        result.mechanism,
                        result.user,
                        result.password,
                        result.authzid,
                        result.secret_kind,
                    )
                )
            elif isinstance(result, sasl.SaslCancelled):
                self._emit(ev.AuthCancelled(side, evidence, mechanism))
            elif isinstance(result, sasl.SaslOutcome):
                if result.success:
                    self.authenticated = True
                self._emit(ev.AuthResult(side, evidence, result.mechanism, result.success, result.text))
            elif isinstance(result, sasl.SaslAnomaly):
                self._emit(ev.Anomaly(side, evidence, result.code, result.detail))


def unique_upper(words: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for word in words:
        if word:
            seen.setdefault(word.upper(), None)
    return list(seen)


# TLS handshake message types (RFC 8446 section 4) a connection can start with.
_HELLO_NAMES = {1: "ClientHello", 2: "ServerHello"}


def implicit_tls_evidence(record: bytes) -> str:
    """The evidence line for a stream that starts with a TLS handshake record: what it was, never its bytes."""
    hello = _HELLO_NAMES.get(record[5], "handshake message") if len(record) > 5 else "handshake record"
    return f"[TLS {hello} from the first byte: implicit TLS]"
