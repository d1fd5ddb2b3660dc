"""Mail analysis of reassembled TCP streams: pick the dissector for each flow, feed it, run the detectors.

The engine hands each flow's bytes, per side, in capture order; :class:`MailFlow` is the per-flow handler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dissectors import events as ev
from dissectors.imap import ImapSession
from dissectors.pop3 import Pop3Session
from dissectors.registry import MAIL_PORTS as MAIL_PORTS  # re-exported: where callers look for it
from dissectors.registry import PORT_PROTOCOLS, identify
from dissectors.session import MailSession
from dissectors.smtp import SmtpSession
from passive.analysis.detectors.session import RunStats, SessionAnalyzer, SessionContext
from passive.capture.flow import Chunk, CloseReason, Direction, Flow
from passive.findings.model import SECRET_MASK, FindingSet, redact_line

SESSION_TYPES: dict[str, type[MailSession]] = {"smtp": SmtpSession, "pop3": Pop3Session, "imap": ImapSession}
# In port-independent mode, bytes held per side while the first lines are awaited.
MAX_UNCLASSIFIED = 4096


@dataclass
class AnalysisOptions:
    all_ports: bool = False
    local_domains: frozenset[str] = frozenset()
    keep_events: bool = False
    show_secrets: bool = False  # in --events output; findings are masked at output time
    # Events kept per session for --events; past that a session's events are counted, not kept.
    max_events_per_session: int = 2000


@dataclass
class SessionRecord:
    protocol: str
    server: str
    client: str
    file: str | None
    events: list[dict[str, Any]] = field(default_factory=list)
    events_dropped: int = 0


class Analysis:
    """One run over one or more captures: findings, counters, and (optionally) per-session events."""

    def __init__(self, options: AnalysisOptions | None = None) -> None:
        self.options = options or AnalysisOptions()
        self.findings = FindingSet()
        self.stats = RunStats()
        self.sessions: list[SessionRecord] = []
        self.flows_ignored = 0
        self.file: str | None = None

    def flow(self, server_ip: str, server_port: int, client_ip: str, client_port: int, partial: bool) -> MailFlow:
        # Standard ports say the protocol; anywhere else the server's greeting will.
        protocol = PORT_PROTOCOLS.get(server_port)
        return MailFlow(self, _endpoint(server_ip, server_port), _endpoint(client_ip, client_port), protocol, partial)

    def handler_factory(self, flow: Flow) -> EngineHandler:
        """For the capture engine: one handler per reassembled TCP flow."""
        return EngineHandler(self, flow)


class EngineHandler:
    """Adapts the capture engine's per-flow callbacks to a :class:`MailFlow`."""

    def __init__(self, analysis: Analysis, flow: Flow) -> None:
        self.analysis = analysis
        self.mail: MailFlow | None = None

    def _mail(self, flow: Flow) -> MailFlow:
        if self.mail is None:
            # Created on first data: only then does the engine know whether the flow was picked up mid-stream.
            self.mail = MailFlow(
                self.analysis, flow.server, flow.client, PORT_PROTOCOLS.get(flow.server_port), flow.partial
            )
        return self.mail

    def on_open(self, flow: Flow) -> None:
        pass

    def on_data(self, flow: Flow, direction: Direction, chunk: Chunk) -> None:
        self._mail(flow).data(_SIDES[direction], chunk.data, chunk.frame, chunk.ts)

    def on_gap(self, flow: Flow, direction: Direction, missing: int, frame: int, ts: float) -> None:
        self._mail(flow).gap(_SIDES[direction], missing, frame, ts)

    def on_close(self, flow: Flow, reason: CloseReason) -> None:
        if self.mail is not None:
            self.mail.close()


_SIDES = {Direction.CLIENT_TO_SERVER: ev.Side.CLIENT, Direction.SERVER_TO_CLIENT: ev.Side.SERVER}


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class MailFlow:
    """Per-flow handler: dissector plus detectors; in port-independent mode it first waits for a greeting."""

    def __init__(self, analysis: Analysis, server: str, client: str, protocol: str | None, partial: bool) -> None:
        self.analysis = analysis
        self.server = server
        self.client = client
        self.partial = partial
        self.session: MailSession | None = None
        self.analyzer: SessionAnalyzer | None = None
        self.record: SessionRecord | None = None
        self.ignored = False
        self._held: list[tuple[ev.Side, bytes, int | None, float | None]] = []
        self._held_size = 0
        if protocol is not None:
            self._start(protocol)

    def _start(self, protocol: str) -> None:
        analysis = self.analysis
        self.session = SESSION_TYPES[protocol](partial=self.partial)
        context = SessionContext(
            protocol, self.server, self.client, analysis.file, local_domains=analysis.options.local_domains
        )
        self.analyzer = SessionAnalyzer(context, analysis.findings, analysis.stats)
        if analysis.options.keep_events:
            self.record = SessionRecord(protocol, self.server, self.client, analysis.file)
            analysis.sessions.append(self.record)

    def data(self, side: ev.Side, data: bytes, frame: int | None, timestamp: float | None) -> None:
        if self.ignored:
            return
        if self.session is None:
            self._hold(side, data, frame, timestamp)
            return
        self._deliver(self.session.receive(side, data, frame, timestamp))

    def _hold(self, side: ev.Side, data: bytes, frame: int | None, timestamp: float | None) -> None:
        """Port-independent mode: keep the first bytes until they say which protocol this is."""
        self._held.append((side, data, frame, timestamp))
        self._held_size += len(data)
        server = b"".join(chunk for s, chunk, _f, _t in self._held if s is ev.Side.SERVER)
        client = b"".join(chunk for s, chunk, _f, _t in self._held if s is ev.Side.CLIENT)
        protocol = identify(server, client)
        if protocol is None and self._held_size < MAX_UNCLASSIFIED:
            return
        held, self._held, self._held_size = self._held, [], 0
        if not protocol:
            self.ignored = True
            self.analysis.flows_ignored += 1
            return
        self._start(protocol)
        for held_side, chunk, held_frame, held_timestamp in held:
            self.data(held_side, chunk, held_frame, held_timestamp)

    def gap(self, side: ev.Side, size: int, frame: int | None, timestamp: float | None) -> None:
        if self.session is not None:
            self._deliver(self.session.gap(side, size, frame, timestamp))
        elif not self.ignored:
            self.ignored = True  # lost bytes before we even knew what this flow is
            self.analysis.flows_ignored += 1

    def close(self) -> None:
        if self.analyzer is not None:
            self.analyzer.close()
        elif not self.ignored and self._held:
            self.analysis.flows_ignored += 1

    def _deliver(self, events: list[ev.Event]) -> None:
        if not events:
            return
        assert self.analyzer is not None
        self.analyzer.feed(events)
        record = self.record
        if record is not None:
            room = self.analysis.options.max_events_per_session - len(record.events)
            show = self.analysis.options.show_secrets
            record.events.extend(event_dict(e, show) for e in events[: max(room, 0)])
            record.events_dropped += max(0, len(events) - max(room, 0))


def event_dict(event: ev.Event, show_secrets: bool = False) -> dict[str, Any]:
    """An event as JSON-ready fields (NTLM messages decoded to the schema, bytes as hex); what carries a clear-text
    secret (credentials, the base64 steps of other mechanisms than NTLM) is masked unless ``show_secrets``."""
    secret = not show_secrets and (
        isinstance(event, ev.Credentials)
        or (isinstance(event, ev.SaslStep) and event.mechanism != "NTLM" and event.side is ev.Side.CLIENT)
        or (isinstance(event, ev.AuthStart) and event.initial_response and event.mechanism != "NTLM")
    )
    line = redact_line(event.evidence.line) if secret else event.evidence.line
    result: dict[str, Any] = {
        "event": type(event).__name__,
        "side": str(event.side),
        "frame": event.evidence.frame,
        "time": event.evidence.timestamp,
        "line": line,
    }
    for name, value in vars(event).items():
        if name in ("side", "evidence"):
            continue
        if name == "ntlm" and value is not None:
            value = value.to_dict()
        elif secret and name in ("password", "data") and value:
            value = SECRET_MASK
        elif isinstance(value, bytes):
            value = value.hex()
        result[name] = value
    return result
