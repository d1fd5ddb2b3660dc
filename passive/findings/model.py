"""Findings as the detectors build them: one per (server, kind[, key]), deduplicated, with bounded evidence.

This is the domain object only. The kinds themselves (and severities) are declared in :mod:`passive.findings.kinds`;
the JSON record and masking are built at output time by :mod:`passive.results.records`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from passive.findings.kinds import SEVERITY_ORDER, FindingType, Severity, rank

__all__ = [
    "MAX_DETAILS",
    "MAX_EVIDENCE",
    "MAX_NAMES",
    "SCHEMA_VERSION",
    "SEVERITY_ORDER",
    "EvidenceRecord",
    "Finding",
    "FindingSet",
    "FindingType",
    "Severity",
    "rank",
]

SCHEMA_VERSION = "1.0"
# Evidence entries kept per finding (a finding cites its proof, it does not archive the session); the rest counted
# in ``evidence_dropped``.
MAX_EVIDENCE = 8
# Per-occurrence details and clients kept per finding; the rest counted in ``details_dropped``.
MAX_DETAILS = 50
# Names gathered in list fields (users, workstations) per finding.
MAX_NAMES = 50


@dataclass(frozen=True)
class EvidenceRecord:
    """One line that proves a finding: where it was seen and the line as sent (bounded by the dissector)."""

    file: str | None
    frame: int | None
    timestamp: float | None
    side: str
    line: str
    first_frame: int | None = None
    described: bool = False  # the line describes what was seen ("[TLS ClientHello ...]"), it does not quote it


@dataclass
class Finding:
    """One (server, kind[, key]) finding. ``fields`` holds the kind's own schema fields."""

    type: FindingType
    protocol: str
    server: str
    severity: Severity
    source: str = "passive"
    key: tuple[Any, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)
    details_dropped: int = 0
    clients: list[str] = field(default_factory=list)
    last_client: str | None = None
    count: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    evidence: list[EvidenceRecord] = field(default_factory=list)
    evidence_dropped: int = 0

    def seen(self, timestamp: float | None, client: str | None, count: bool = True) -> None:
        """One more occurrence (``count=False``: the same occurrence seen later, which only moves last_seen)."""
        self.count += count
        if timestamp is not None:
            self.first_seen = timestamp if self.first_seen is None else min(self.first_seen, timestamp)
            self.last_seen = timestamp if self.last_seen is None else max(self.last_seen, timestamp)
        if client:
            self.last_client = client
            if client not in self.clients and len(self.clients) < MAX_DETAILS:
                self.clients.append(client)

    def add_evidence(self, record: EvidenceRecord) -> None:
        if record in self.evidence:
            return
        if len(self.evidence) < MAX_EVIDENCE:
            self.evidence.append(record)
        else:
            self.evidence_dropped += 1

    def add_detail(self, detail: dict[str, Any]) -> None:
        if len(self.details) < MAX_DETAILS:
            self.details.append(detail)
        else:
            self.details_dropped += 1

    def add_name(self, name: str, values: str) -> None:
        """Add ``values`` to the list field ``name`` once, up to :data:`MAX_NAMES` entries."""
        names = self.fields.setdefault(name, [])
        if values not in names and len(names) < MAX_NAMES:
            names.append(values)

    def raise_severity(self, severity: Severity) -> None:
        if rank(severity) > rank(self.severity):
            self.severity = severity


class FindingSet:
    """All findings of a run, deduplicated; insertion order is the order they were first seen."""

    # Distinct findings kept: traffic chooses how many servers and user names there are (2e5 made-up user names
    # cost 1 GiB). Past this a new finding is handed out detached, updated, and forgotten; ``dropped`` counts those.
    MAX_FINDINGS = 20_000

    def __init__(self, max_findings: int = MAX_FINDINGS) -> None:
        self._findings: dict[tuple[Any, ...], Finding] = {}
        self.max_findings = max_findings
        self.dropped = 0

    def get(
        self, kind: FindingType, protocol: str, server: str, severity: Severity, key: tuple[Any, ...] = ()
    ) -> Finding:
        index = (kind, server, key)
        finding = self._findings.get(index)
        if finding is None:
            finding = Finding(kind, protocol, server, severity, key=key)
            if len(self._findings) < self.max_findings:
                self._findings[index] = finding
            else:
                self.dropped += 1
        return finding

    def find(self, kind: FindingType, server: str, key: tuple[Any, ...] = ()) -> Finding | None:
        return self._findings.get((kind, server, key))

    def discard(self, finding: Finding) -> None:
        """Forget a finding (long-running monitors keep only recent ones; the store keeps the rest)."""
        index = (finding.type, finding.server, finding.key)
        if self._findings.get(index) is finding:
            del self._findings[index]

    def __iter__(self) -> Iterator[Finding]:
        return iter(self._findings.values())

    def __len__(self) -> int:
        return len(self._findings)
