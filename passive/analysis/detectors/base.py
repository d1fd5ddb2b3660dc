"""What every detector shares: the session it belongs to, and how it makes and touches findings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from dissectors import events as ev
from passive.findings.model import EvidenceRecord, Finding, FindingType, Severity

if TYPE_CHECKING:
    from passive.analysis.detectors.session import SessionAnalyzer


@dataclass
class SessionContext:
    """Who talks to whom in one session, and where it was seen."""

    protocol: str  # "smtp" | "pop3" | "imap"
    server: str  # "ip:port"
    client: str  # "ip:port"
    file: str | None = None
    source: str = "passive"
    local_domains: frozenset[str] = frozenset()


Handlers = dict[type[ev.Event], str]


class Detector:
    """One kind of finding. ``HANDLERS`` maps the event types it reads to the names of its methods; the session
    dispatches each event to every detector that declared it (h11's ``READERS`` idea)."""

    HANDLERS: ClassVar[Handlers] = {}

    def __init__(self, session: SessionAnalyzer) -> None:
        self.session = session
        self.context = session.context

    def handlers(self) -> list[tuple[type[ev.Event], Callable[[Any], None]]]:
        return [(event_type, getattr(self, name)) for event_type, name in self.HANDLERS.items()]

    def finding(self, kind: FindingType, severity: Severity, key: tuple[Any, ...] = ()) -> Finding:
        return self.session.finding(kind, severity, key)

    def record(self, finding: Finding, event: ev.Event) -> None:
        """Cite the event's line as evidence."""
        e = event.evidence
        finding.add_evidence(
            EvidenceRecord(
                self.context.file, e.frame, e.timestamp, str(event.side), e.line, e.first_frame, e.described
            )
        )

    def touch(self, finding: Finding, event: ev.Event) -> None:
        """One more occurrence, cited."""
        finding.seen(event.evidence.timestamp, self.context.client)
        self.record(finding, event)

    def close(self) -> None:
        """The session ended."""
