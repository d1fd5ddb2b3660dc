"""What every detector shares: the session it belongs to, and how it makes and touches findings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

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


def locate(files: FileMap | None, file: str | None, frame: int | None) -> tuple[str | None, int | None]:
    """The file of ``files`` (a stream's) holding its ``frame`` and the frame's number there; ``file`` and ``frame``
    as they are without a map or a frame."""
    located = files.locate(frame) if files is not None and frame is not None else None
    return located if located is not None else (file, frame)


class Session(Protocol):
    """What a detector sees of its session (:class:`~passive.analysis.detectors.session.SessionAnalyzer`)."""

    context: SessionContext
    findings: FindingSet
    stats: RunStats
    tls: bool
    authenticated: bool
    server_names: set[str]
    relays: RelayLedger

    def finding(self, kind: FindingType, severity: Severity, key: tuple[Any, ...] = ()) -> Finding: ...


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

    def handlers(self) -> list[tuple[type[ev.Event], Callable[[Any], None]]]:
        return [(event_type, getattr(self, name)) for event_type, name in self.HANDLERS.items()]

    def finding(self, kind: FindingType, severity: Severity, key: tuple[Any, ...] = ()) -> Finding:
        return self.session.finding(kind, severity, key)

    def evidence(self, event: ev.Event) -> EvidenceRecord:
        e = event.evidence
        file, frame = self.locate(e.frame)
        first = e.first_frame
        if first is not None and self.context.files is not None:
            began_in, first = self.locate(first)
            if began_in != file:
                first = None  # a line begun in an earlier file has no first frame in this one
        return EvidenceRecord(file, frame, e.timestamp, str(event.side), e.line, first, e.described)

    def locate(self, frame: int | None) -> tuple[str | None, int | None]:
        """The file holding the stream's ``frame`` (a ring buffer's piece) and the frame's number in it."""
        return locate(self.context.files, self.context.file, frame)

    def record(self, finding: Finding, event: ev.Event) -> None:
        """Cite the event's line as evidence."""
        finding.add_evidence(self.evidence(event))

    def touch(self, finding: Finding, event: ev.Event) -> None:
        """One more occurrence, cited."""
        finding.seen(event.evidence.timestamp, self.context.client)
        self.record(finding, event)

    def close(self) -> None:
        """The session ended."""
