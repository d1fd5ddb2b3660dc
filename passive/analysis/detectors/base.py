"""What every detector shares: the session it belongs to, and how it makes and touches findings.

A detector reads its own session's events and state; it never reads the run's shared state (the finding set, the
statistics, the relay ledger). What it changes there is an **effect**: a module-level function
``effect(finding, shared, *args)`` that the session applies (:meth:`Session.apply`) to the finding it names (or
None) and the run's :class:`Shared` state, and whatever depends on that state (a field set unless a finding already
has one, an attempt counted among a finding's) is decided inside the effect. One process applies an effect at once;
a worker process records it, with plain arguments, for the main process to apply where one process would have
(:mod:`passive.analysis.merge`), so that the detectors' work is spread over the workers and the results stay one
process's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

from dissectors import events as ev
from passive.analysis.relays import RelayLedger
from passive.analysis.stats import RunStats
from passive.findings.model import EvidenceRecord, Finding, FindingSet, FindingType, Severity

if TYPE_CHECKING:
    from passive.capture.joined import FileMap


@dataclass
class SessionContext:
    """Who talks to whom in one session, and where it was seen."""

    protocol: str  # "smtp" | "pop3" | "imap" | "http"
    server: str  # "ip:port"
    client: str  # "ip:port"
    file: str | None = None  # where the session began
    source: str = "passive"
    # The files of the session's stream (passive.capture.joined numbers frames on through a ring buffer's files):
    # evidence names the file that holds its frame, and the frame's number in it. None: frames are the file's.
    files: FileMap | None = None
    # The flow was picked up mid-stream (its handshake not in the capture: a ring buffer's piece read apart, a
    # capture begun during the session): what happened before it, an AUTH say, is unknown.
    partial: bool = False
    # The virtual network of an overlay the session travels in, as (kind, id) (passive.capture.tunnels.vnet_label),
    # or (): tenants reuse addresses, so it is part of the identity of the session's findings (their key).
    network: tuple[str, int] | tuple[()] = ()
    # How the session's server was reached through a proxy's tunnel ("socks5 10.0.0.1:1080": the handshake and the
    # proxy; passive.analysis.tunnel), or "": ``server`` is then the server the client asked the proxy for.
    proxy: str = ""


def locate(files: FileMap | None, file: str | None, frame: int | None) -> tuple[str | None, int | None]:
    """The file of ``files`` (a stream's) holding its ``frame`` and the frame's number there; ``file`` and ``frame``
    as they are without a map or a frame."""
    located = files.locate(frame) if files is not None and frame is not None else None
    return located if located is not None else (file, frame)


class Shared(NamedTuple):
    """The run's state that every session's effects change."""

    findings: FindingSet
    stats: RunStats
    relays: RelayLedger


Effect = Callable[..., None]
"""``effect(finding, shared, *args)``: a change to the run's :class:`Shared` state (see the module docstring)."""


class Session(Protocol):
    """What a detector sees of its session (:class:`~passive.analysis.detectors.session.SessionAnalyzer`)."""

    context: SessionContext
    tls: bool
    authenticated: bool
    server_names: set[str]

    def finding(
        self, kind: FindingType, severity: Severity, key: tuple[Any, ...] = (), held: bool = False
    ) -> Finding: ...

    def apply(self, effect: Effect, finding: Finding | None, *args: Any) -> None: ...

    def seen_later(self, finding: Finding, timestamp: float | None) -> None: ...


def touched(finding: Finding, shared: Shared, client: str, evidence: EvidenceRecord) -> None:
    """One more occurrence, cited (seen when its evidence was)."""
    finding.seen(evidence.timestamp, client)
    finding.add_evidence(evidence)


def cited(finding: Finding, shared: Shared, evidence: EvidenceRecord) -> None:
    finding.add_evidence(evidence)


def seen(finding: Finding, shared: Shared, timestamp: float | None, client: str | None) -> None:
    finding.seen(timestamp, client)


def counted(_finding: None, shared: Shared, counter: str, name: str | None = None) -> None:
    """One more in the run's statistics: the counter ``counter`` (``name``: under that name)."""
    stats = shared.stats
    if name is None:
        setattr(stats, counter, getattr(stats, counter) + 1)
    else:
        getattr(stats, counter)[name] += 1


Handlers = dict[type[ev.Event], str]


class Detector:
    """One kind of finding (``KIND``). ``HANDLERS`` maps the event types it reads to the names of its methods; the
    session dispatches each event to every detector that declared it (h11's ``READERS`` idea). A subclass in a module
    of this package is found by :func:`passive.analysis.detectors.detector_classes`; nothing else lists it."""

    KIND: ClassVar[FindingType]
    HANDLERS: ClassVar[Handlers] = {}

    def __init__(self, session: Session) -> None:
        self.session = session
        self.context = session.context
        self._cited: tuple[ev.Event | None, EvidenceRecord | None] = (None, None)  # the last event cited, its record

    def handlers(self) -> list[tuple[type[ev.Event], Callable[[Any], None]]]:
        return [(event_type, getattr(self, name)) for event_type, name in self.HANDLERS.items()]

    def finding(self, kind: FindingType, severity: Severity, key: tuple[Any, ...] = (), held: bool = False) -> Finding:
        """The run's finding of the session's server of ``kind`` (and ``key``), for the effects of the call at hand;
        ``held``: kept by the detector for the rest of the session instead (a finding not held is asked for again
        by each call that changes it)."""
        return self.session.finding(kind, severity, key, held)

    def evidence(self, event: ev.Event) -> EvidenceRecord:
        """The record citing ``event``; the same record again for the event this detector cited last (the inventory
        cites a session's first event when it counts it, then again when it reads it as the greeting), which a
        worker then sends the main process once."""
        cited, record = self._cited
        if event is cited:
            return record  # type: ignore[return-value]
        e = event.evidence
        first = e.first_frame
        if self.context.files is None:  # frames are numbered in the session's one file
            file, frame = self.context.file, e.frame
        else:
            file, frame = self.locate(e.frame)
            if first is not None:
                began_in, first = self.locate(first)
                if began_in != file:
                    first = None  # a line begun in an earlier file has no first frame in this one
        record = EvidenceRecord.of(file, frame, e.timestamp, str(event.side), e.line, first, e.described)
        self._cited = (event, record)
        return record

    def locate(self, frame: int | None) -> tuple[str | None, int | None]:
        """The file holding the stream's ``frame`` (a ring buffer's piece) and the frame's number in it."""
        return locate(self.context.files, self.context.file, frame)

    def record(self, finding: Finding, event: ev.Event) -> None:
        """Cite the event's line as evidence."""
        self.session.apply(cited, finding, self.evidence(event))

    def touch(self, finding: Finding, event: ev.Event) -> None:
        """One more occurrence, cited."""
        self.session.apply(touched, finding, self.context.client, self.evidence(event))

    def count(self, counter: str, name: str | None = None) -> None:
        """One more in the run's statistics (:func:`counted`)."""
        self.session.apply(counted, None, counter, name)

    def close(self) -> None:
        """The session ended."""
