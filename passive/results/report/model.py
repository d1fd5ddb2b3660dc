"""The facts a report shows, as plain data: an executive summary, one card per server,
remediation per finding, evidence, a passive/active comparison and a timeline.

Everything here is plain data with display-ready, control-free strings; templates only lay it out and escape it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passive.findings.model import SEVERITY_ORDER
from passive.results.report.charts import BarChart, Timeline

# Most severe first, as the report lists them.
SEVERITIES = tuple(str(s) for s in reversed(SEVERITY_ORDER))
LEAK_SEVERITIES = frozenset(SEVERITIES[:-1])
# Servers named in one sentence of the summary (and per remediation item); the rest are counted.
LISTED = 10


def listing(items: list[str], limit: int = LISTED) -> str:
    """Items joined with commas; past ``limit`` the rest is counted so a summary stays a summary."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


@dataclass
class Credential:
    mechanism: str | None
    user: str | None
    secret: str | None
    secret_kind: str | None
    outcome: str | None
    count: int
    clients: str | None


@dataclass
class EvidenceRow:
    finding: str
    file: str | None
    frame: str | None
    time: str | None
    side: str | None
    line: str | None


@dataclass
class FindingRow:
    type: str
    title: str
    severity: str
    source: str
    count: int
    first_seen: str | None
    last_seen: str | None


@dataclass
class ServerCard:
    server: str
    protocols: list[str]
    severity: str
    sources: list[str]
    banner: str | None = None
    software: str | None = None
    starttls_offered: bool | None = None
    tls_used: bool | None = None
    host: list[tuple[str, str]] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    workstations: list[str] = field(default_factory=list)
    mechanisms: list[str] = field(default_factory=list)
    cleartext_mechanisms: list[str] = field(default_factory=list)
    mechanisms_after_tls: list[str] | None = None
    credentials: list[Credential] = field(default_factory=list)
    relay: str = "No relay attempt seen."
    relay_state: str = "unknown"  # open, internal, refused, unknown
    findings: list[FindingRow] = field(default_factory=list)
    evidence: list[EvidenceRow] = field(default_factory=list)
    evidence_dropped: int = 0

    @property
    def exposed(self) -> bool:
        return self.severity in LEAK_SEVERITIES


@dataclass
class RemediationItem:
    type: str
    title: str
    severity: str
    servers: list[str]
    remediation: list[str]
    verification: list[str]

    @property
    def servers_text(self) -> str:
        return listing(self.servers, 3 * LISTED)


@dataclass
class Comparison:
    server: str
    rows: list[tuple[str, str, str, str]]  # fact, passive, active, verdict


@dataclass
class NessusRow:
    """One Nessus plugin result and what the evidence says of it."""

    server: str
    plugin: str
    verdict: str  # confirmed, refuted, not-observed
    reason: str
    evidence: str


@dataclass
class TimelineEntry:
    time: str
    server: str
    title: str
    severity: str


@dataclass
class Report:
    title: str
    generated: str
    redacted: bool
    servers_seen: int
    servers_exposed: int
    severity_counts: list[tuple[str, int]]
    learned: list[str]
    scope: list[tuple[str, str]]
    cards: list[ServerCard]
    remediation: list[RemediationItem]
    comparisons: list[Comparison]
    timeline_entries: list[TimelineEntry]
    severity_chart: BarChart
    timeline_chart: Timeline | None
    nessus: list[NessusRow] = field(default_factory=list)
    nessus_totals: list[tuple[str, int]] = field(default_factory=list)

    @property
    def nothing_leaked(self) -> bool:
        return self.servers_exposed == 0


