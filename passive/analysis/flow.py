"""The per-flow handler: a reassembled TCP flow's bytes, per side, in capture order, into the protocol's dissector;
its events into the session's detectors (and, with ``--events``, into the session record)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dissectors import events as ev
from dissectors.linebuffer import SKIP_ALL
from dissectors.registry import SESSION_TYPES
from dissectors.session import MailSession
from passive.analysis.budget import DissectorBudget
from passive.analysis.classify import FirstLines, PortCheck
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.detectors.base import locate
from passive.analysis.relays import RelayLedger
from passive.analysis.stats import RunStats
from passive.analysis.tunnel import MAX_TUNNELS, TunnelCheck, hop
from passive.capture import reassembly
from passive.capture.held import HeldBudget
from passive.capture.tunnels import vnet_label
from passive.findings.model import FindingSet

if TYPE_CHECKING:
    from passive.capture.joined import FileMap


@dataclass
class SessionRecord:
    """One session's events, for ``--events`` (serialised, and masked, at output time)."""

    protocol: str
    server: str
    client: str
    file: str | None  # where the session began
    events: list[ev.Event] = field(default_factory=list)
    events_dropped: int = 0
    files: FileMap | None = None  # its stream's files: the one holding each event's frame

    def locate(self, frame: int | None) -> tuple[str | None, int | None]:
        """The file holding the stream's ``frame`` and the frame's number there (the session's file when unknown)."""
        return locate(self.files, self.file, frame)


class Options(Protocol):
    keep_events: bool
    max_events_per_session: int
    max_flows: int


class Analysis(Protocol):
    """Where a flow's findings, counters and events go (:class:`~passive.analysis.pipeline.Analysis`)."""

    options: Options
    findings: FindingSet
    stats: RunStats
    budget: DissectorBudget
    held: HeldBudget[EngineHandler]
    sessions: list[SessionRecord]
    flows_ignored: int
    file: str | None
    files: FileMap | None
    relays: RelayLedger
    recording: Any  # in a worker process: what its sessions record for the main one (passive.analysis.merge)

    def session_analyzer(self, context: SessionContext) -> SessionAnalyzer: ...


class EngineHandler:
    """Adapts the capture engine's per-flow callbacks to a :class:`MailFlow`. A flow whose protocol only its port
    says (``by_port``) is held until its first lines confirm it or show another protocol (:class:`PortCheck`): then
    it is ignored, as a flow of no mail protocol, or read as HTTP when they show HTTP. When a proxy lets the client
    through (a session's ``tunnel``: an accepted CONNECT, a SOCKS handshake), the rest of the flow is a new stream,
    held likewise until its first lines name its protocol (:mod:`passive.analysis.tunnel`)."""

    def __init__(self, analysis: Analysis, protocol: str, by_port: bool = False) -> None:
        self.analysis = analysis
        self.protocol = protocol
        self.mail: MailFlow | None = None
        self.by_port = by_port
        self.check: PortCheck | TunnelCheck | None = None
        self.ignored = False
        self.target: str | None = None  # the server a proxy was asked for, once the flow goes through its tunnel
        self.proxy = ""  # how that server was reached (passive.analysis.tunnel.hop)
        self.tunnels = 0
        self.flow: reassembly.Flow | None = None  # the flow, once a check holds its bytes (to let them go)

    def _mail(self, flow: reassembly.Flow) -> MailFlow:
        if self.mail is None:
            # Created on first data: only then does the engine know whether the flow was picked up mid-stream.
            network = vnet_label(flow.vnet) if flow.vnet else ()
            server, partial = (flow.server, flow.partial) if self.target is None else (self.target, False)
            self.mail = MailFlow(self.analysis, server, flow.client, self.protocol, partial, network, self.proxy)
        return self.mail

    def on_open(self, flow: reassembly.Flow) -> None:
        pass

    def on_data(self, flow: reassembly.Flow, direction: reassembly.Direction, chunk: reassembly.Chunk) -> None:
        mail = self.mail
        if mail is None:  # the flow's first bytes, or its port check goes on (a flow ignored has no MailFlow)
            if not self.ignored and (self.by_port or self.check is not None):
                self._port_check(flow, direction is reassembly.Direction.SERVER_TO_CLIENT, *chunk[:3])
            elif not self.ignored:
                mail = self._mail(flow)
        if mail is not None:
            data, frame, ts, _offset = chunk
            mail.data(_SIDES[direction], data, frame, ts)
            if mail.session.tunnel is not None:
                self._through(flow, mail)
            elif not flow.skip_wanted and mail.session.may_skip():  # asked once per batch (Flow.want_skip)
                flow.want_skip()
        if self.ignored and not flow.skip_wanted:
            flow.want_skip()  # nothing more of it is read: the scanner may drop the rest (skippable)

    def _port_check(self, flow: reassembly.Flow, from_server: bool, data: bytes, frame: int, ts: float | None) -> None:
        check = self.check = self.check or PortCheck(self.protocol, flow.partial)
        verdict = check.add(from_server, data, frame, ts)
        if verdict is not None:
            self._release(flow, refuted=verdict)
            return
        self.flow = flow
        for victim in self.analysis.held.hold(self, len(data)):  # past MAX_PORT_CHECK_HELD: the largest give up
            self.analysis.stats.port_check_evictions += 1
            victim.give_up()

    def give_up(self) -> None:
        """What the flow's check holds is over the run's bound: the check ends as at a gap (the port's protocol
        stands; a tunnel's stream, with no port to stand, is not read)."""
        if self.check is not None and self.flow is not None:
            self._release(self.flow, refuted=self.check.refuted_at_end)

    def _through(self, flow: reassembly.Flow, mail: MailFlow) -> None:
        """The proxy let the client through: its session ends, and the rest of the flow is a new stream, whose
        first bytes (those the handshake's reading already took) are checked first."""
        tunnel = mail.session.tunnel
        assert tunnel is not None
        mail.close()
        self.mail, self.tunnels = None, self.tunnels + 1
        if self.tunnels > MAX_TUNNELS:
            self.ignored = True
            return
        self.proxy, self.target = hop(tunnel, mail.server, self.proxy), tunnel.target
        self.check = TunnelCheck()
        for side, data, frame, ts in tunnel.rest:
            self._feed(flow, side, data, frame, ts)

    def _feed(self, flow: reassembly.Flow, side: ev.Side, data: bytes, frame: int | None, ts: float | None) -> None:
        """Bytes held (by a check, or by a handshake's reading) go where new ones would: the check, or the session,
        which may open a tunnel of its own on them."""
        if self.ignored:
            return
        mail = self.mail
        if mail is None:
            self._port_check(flow, side is ev.Side.SERVER, data, frame or 0, ts)
            return
        mail.data(side, data, frame, ts)
        if mail.session.tunnel is not None:
            self._through(flow, mail)

    def skippable(self, flow: reassembly.Flow, direction: reassembly.Direction) -> tuple[int, int, bool] | None:
        """Whether the capture may drop what ``direction`` sends next unread (passive.capture.skipping)."""
        if self.ignored:  # no mail (a tunnel carrying TLS, a Redis server on port 25): nothing more is read
            return SKIP_ALL, 0, False
        mail = self.mail
        if mail is None or self.check is not None:
            return None
        # A session the dissector budget may make give up its state is read: that would be dated by its latest
        # bytes, which the capture may be dropping (passive.capture.skipping).
        analysis = self.analysis
        if not analysis.budget.never_sheds(mail.session.buffered_bytes(), analysis.options.max_flows):
            return None
        return mail.session.skippable(_SIDES[direction])

    def on_skip(
        self,
        flow: reassembly.Flow,
        direction: reassembly.Direction,
        size: int,
        at_line_start: bool,
        frame: int,
        ts: float,
        tail: bytes = b"",
    ) -> None:
        if self.mail is not None and not self.ignored:
            self.mail.skipped(_SIDES[direction], size, at_line_start, frame, ts, tail)

    def _release(self, flow: reassembly.Flow, refuted: bool) -> None:
        """The port check is over: the held bytes go to the dissector, or the flow is no mail after all."""
        check, self.check, self.flow = self.check, None, None
        self.analysis.held.forget(self)
        if refuted and check is not None and check.shown is not None:
            self.protocol, refuted = check.shown, False  # another protocol that is read: HTTP on a mail port
        if refuted:
            self.ignored = True
            self.analysis.flows_ignored += 1
            return
        self._mail(flow)
        for from_server, data, frame, timestamp in check.held if check is not None else ():
            self._feed(flow, ev.Side.SERVER if from_server else ev.Side.CLIENT, data, frame, timestamp)

    def on_gap(
        self, flow: reassembly.Flow, direction: reassembly.Direction, missing: int, frame: int, ts: float
    ) -> None:
        if self.ignored:
            return
        if self.check is not None:  # what follows lost bytes tells nothing more: the port's protocol, if one
            self._release(flow, refuted=self.check.refuted_at_end)
            if self.ignored:
                return
        self._mail(flow).gap(_SIDES[direction], missing, frame, ts)

    def on_close(self, flow: reassembly.Flow, reason: reassembly.CloseReason) -> None:
        if self.check is not None:
            self._release(flow, refuted=self.check.refuted_at_end)
        if self.mail is not None:
            self.mail.close()


_SIDES = {reassembly.Direction.CLIENT_TO_SERVER: ev.Side.CLIENT, reassembly.Direction.SERVER_TO_CLIENT: ev.Side.SERVER}


class MailFlow:
    """Per-flow handler of a flow whose protocol is known: dissector plus detectors."""

    def __init__(
        self,
        analysis: Analysis,
        server: str,
        client: str,
        protocol: str,
        partial: bool,
        network: tuple[str, int] | tuple[()] = (),
        proxy: str = "",
    ) -> None:
        self.analysis = analysis
        self.server = server
        self.client = client
        self.partial = partial
        self.session: MailSession = SESSION_TYPES[protocol](partial=partial)
        context = SessionContext(
            protocol, server, client, analysis.file, files=analysis.files, partial=partial, network=network, proxy=proxy
        )
        self.analyzer = analysis.session_analyzer(context)
        self.record: SessionRecord | None = None
        self._last: tuple[int | None, float | None] = (None, None)  # frame and time of the latest bytes
        self._first: float | None = None  # time of the first bytes
        if analysis.options.keep_events and analysis.recording is None:  # a worker's events go to the main process
            self.record = SessionRecord(protocol, server, client, analysis.file, files=analysis.files)
            analysis.sessions.append(self.record)

    def data(self, side: ev.Side, data: bytes, frame: int | None, timestamp: float | None) -> None:
        self._last = (frame, timestamp)
        if self._first is None:
            self._first = timestamp
        session = self.session
        events = session.receive(side, data, frame, timestamp)
        if events:
            self._deliver(events)
        held, budget = session.buffered_bytes(), self.analysis.budget
        if held or self in budget.holders:  # most chunks end on a line's end: nothing held before nor after
            budget.update(self, held)

    def skipped(
        self,
        side: ev.Side,
        size: int,
        at_line_start: bool,
        frame: int | None,
        timestamp: float | None,
        tail: bytes = b"",
    ) -> None:
        """Bytes the capture dropped unread where the dissector allowed it: they make no event."""
        self._last = (frame, timestamp)
        self.session.skipped(side, size, at_line_start, frame, timestamp, tail)

    def gap(self, side: ev.Side, size: int, frame: int | None, timestamp: float | None) -> None:
        self._deliver(self.session.gap(side, size, frame, timestamp))
        self.analysis.budget.update(self, self.session.buffered_bytes())

    def close(self) -> None:
        self._deliver(self.session.close(*self._last))  # what was held for an answer that never came
        self.analysis.budget.forget(self)
        service = self.analyzer.service
        if service is not None and self._first is not None:
            service.quiet_session(self._first, self._last[1])
        self.analyzer.close()

    def shed(self) -> int:
        """The run's dissector budget is spent: the session drops its partial state (see passive.analysis.budget)."""
        self._deliver(self.session.shed(*self._last))
        return self.session.buffered_bytes()

    def _deliver(self, events: list[ev.Event]) -> None:
        if not events:
            return
        self.analyzer.feed(events)
        record = self.record
        if record is not None:
            room = max(self.analysis.options.max_events_per_session - len(record.events), 0)
            record.events.extend(events[:room])
            record.events_dropped += max(0, len(events) - room)


class UnknownFlow:
    """A flow fed directly (not through the capture layer) on a port that says no protocol: its first lines decide
    (:class:`~passive.analysis.classify.FirstLines`), then it is a :class:`MailFlow`, or it is ignored."""

    def __init__(self, analysis: Analysis, server: str, client: str, partial: bool) -> None:
        self.analysis, self.server, self.client, self.partial = analysis, server, client, partial
        self.first: FirstLines | None = FirstLines()
        self.mail: MailFlow | None = None

    def data(self, side: ev.Side, data: bytes, frame: int | None, timestamp: float | None) -> None:
        if self.mail is not None:
            self.mail.data(side, data, frame, timestamp)
            return
        if self.first is None:
            return
        verdict = self.first.add(side is ev.Side.SERVER, data, frame, timestamp)
        if verdict is None:
            return
        held, self.first = self.first.held, None
        if not verdict:
            self.analysis.flows_ignored += 1
            return
        self.mail = MailFlow(self.analysis, self.server, self.client, verdict, self.partial)
        for from_server, chunk, held_frame, held_time in held:
            self.mail.data(ev.Side.SERVER if from_server else ev.Side.CLIENT, chunk, held_frame, held_time)

    def gap(self, side: ev.Side, size: int, frame: int | None, timestamp: float | None) -> None:
        if self.mail is not None:
            self.mail.gap(side, size, frame, timestamp)
        elif self.first is not None:  # bytes lost before the flow said what it is
            self.first = None
            self.analysis.flows_ignored += 1

    def close(self) -> None:
        if self.mail is not None:
            self.mail.close()
        elif self.first is not None and self.first.held:
            self.analysis.flows_ignored += 1
