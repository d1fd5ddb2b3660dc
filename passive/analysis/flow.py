"""The per-flow handler: a reassembled TCP flow's bytes, per side, in capture order, into the protocol's dissector;
its events into the session's detectors (and, with ``--events``, into the session record)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from dissectors import events as ev
from dissectors.registry import MAX_FIRST_LINE, PORT_PROTOCOLS, SESSION_TYPES, identify
from dissectors.session import MailSession
from passive.analysis.budget import DissectorBudget
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.stats import RunStats
from passive.capture import reassembly
from passive.findings.model import FindingSet

# In port-independent mode, bytes held per side while the first lines are awaited.
MAX_UNCLASSIFIED = 4096


@dataclass
class SessionRecord:
    """One session's events, for ``--events`` (serialised, and masked, at output time)."""

    protocol: str
    server: str
    client: str
    file: str | None
    events: list[ev.Event] = field(default_factory=list)
    events_dropped: int = 0


class Options(Protocol):
    local_domains: frozenset[str]
    keep_events: bool
    max_events_per_session: int


class Analysis(Protocol):
    """Where a flow's findings, counters and events go (:class:`~passive.analysis.pipeline.Analysis`)."""

    options: Options
    findings: FindingSet
    stats: RunStats
    budget: DissectorBudget
    sessions: list[SessionRecord]
    flows_ignored: int
    file: str | None


class EngineHandler:
    """Adapts the capture engine's per-flow callbacks to a :class:`MailFlow`."""

    def __init__(self, analysis: Analysis, flow: reassembly.Flow) -> None:
        self.analysis = analysis
        self.mail: MailFlow | None = None

    def _mail(self, flow: reassembly.Flow) -> MailFlow:
        if self.mail is None:
            # Created on first data: only then does the engine know whether the flow was picked up mid-stream.
            self.mail = MailFlow(
                self.analysis, flow.server, flow.client, PORT_PROTOCOLS.get(flow.server_port), flow.partial
            )
        return self.mail

    def on_open(self, flow: reassembly.Flow) -> None:
        pass

    def on_data(self, flow: reassembly.Flow, direction: reassembly.Direction, chunk: reassembly.Chunk) -> None:
        self._mail(flow).data(_SIDES[direction], chunk.data, chunk.frame, chunk.ts)

    def on_gap(
        self, flow: reassembly.Flow, direction: reassembly.Direction, missing: int, frame: int, ts: float
    ) -> None:
        self._mail(flow).gap(_SIDES[direction], missing, frame, ts)

    def on_close(self, flow: reassembly.Flow, reason: reassembly.CloseReason) -> None:
        if self.mail is not None:
            self.mail.close()


_SIDES = {reassembly.Direction.CLIENT_TO_SERVER: ev.Side.CLIENT, reassembly.Direction.SERVER_TO_CLIENT: ev.Side.SERVER}


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
        self._last: tuple[int | None, float | None] = (None, None)  # frame and time of the latest bytes
        self._start_bytes = {ev.Side.SERVER: bytearray(), ev.Side.CLIENT: bytearray()}
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
        self._last = (frame, timestamp)
        self._deliver(self.session.receive(side, data, frame, timestamp))
        self.analysis.budget.update(self, self.session.buffered_bytes())

    def _hold(self, side: ev.Side, data: bytes, frame: int | None, timestamp: float | None) -> None:
        """Port-independent mode: keep the first bytes until they say which protocol this is."""
        self._held.append((side, data, frame, timestamp))
        self._held_size += len(data)
        # What identify() reads of each side (a first line, at most MAX_FIRST_LINE bytes), kept as it comes: joining
        # every held chunk again for each new one was quadratic in the number of chunks.
        start = self._start_bytes[side]
        start += data[: MAX_FIRST_LINE + 1 - len(start)]
        protocol = identify(bytes(self._start_bytes[ev.Side.SERVER]), bytes(self._start_bytes[ev.Side.CLIENT]))
        if protocol is None and self._held_size < MAX_UNCLASSIFIED:
            return
        held, self._held, self._held_size = self._held, [], 0
        self._start_bytes = {ev.Side.SERVER: bytearray(), ev.Side.CLIENT: bytearray()}
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
            self.analysis.budget.update(self, self.session.buffered_bytes())
        elif not self.ignored:
            self.ignored = True  # lost bytes before we even knew what this flow is
            self.analysis.flows_ignored += 1

    def close(self) -> None:
        if self.session is not None:
            self._deliver(self.session.close(*self._last))  # what was held for an answer that never came
            self.analysis.budget.forget(self)
        if self.analyzer is not None:
            self.analyzer.close()
        elif not self.ignored and self._held:
            self.analysis.flows_ignored += 1

    def shed(self) -> int:
        """The run's dissector budget is spent: the session drops its partial state (see passive.analysis.budget)."""
        assert self.session is not None
        self._deliver(self.session.shed(*self._last))
        return self.session.buffered_bytes()

    def _deliver(self, events: list[ev.Event]) -> None:
        if not events:
            return
        assert self.analyzer is not None
        self.analyzer.feed(events)
        record = self.record
        if record is not None:
            room = max(self.analysis.options.max_events_per_session - len(record.events), 0)
            record.events.extend(events[:room])
            record.events_dropped += max(0, len(events) - room)
