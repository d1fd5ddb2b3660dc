"""The facts a report shows, as plain data: an executive summary, one card per server,
remediation per finding, evidence, a passive/active comparison and a timeline.

Everything here is plain data with display-ready, control-free strings; templates only lay it out and escape it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passive.findings.model import SEVERITY_ORDER
from passive.results.report.charts import BarChart, Timeline
from passive.results.report.fixes import GENERAL_OWNERS

# Most severe first, as the report lists them.
SEVERITIES = tuple(str(s) for s in reversed(SEVERITY_ORDER))
LEAK_SEVERITIES = frozenset(SEVERITIES[:-1])
# Servers named in one sentence of the summary (and per remediation item); the rest are counted.
LISTED = 10
# Past this many servers the report shows tables grouped by AD domain, subnet and software instead of one card per
# server: 50 cards are about 17 printed pages, and a card per server of 2,000 is a book nobody reads.
CARDS_UP_TO = 50
# Rows of the server table on the first page; past it the first page shows groups (it must fit one printed page).
FIRST_PAGE_ROWS = 15
# Actions on the first page.
ACTIONS = 5


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
class CardFix:
    """A change for one server: the finding it removes, the setting, who owns it and where it is documented."""

    issue: str  # fixes.NTLM, CLEARTEXT, ...
    finding: str
    owner: str
    setting: str
    reference: str
    note: str

    @property
    def literal(self) -> bool:
        """The setting is configuration text (shown as code), not an instruction to people."""
        return self.owner not in GENERAL_OWNERS


@dataclass
class ServerCard:
    server: str
    protocols: list[str]
    severity: str
    sources: list[str]
    banner: str | None = None
    banner_host: str | None = None  # the internal host an Exchange greeting encodes
    software: str | None = None
    starttls_offered: bool | None = None
    tls_used: bool | None = None
    host: list[tuple[str, str]] = field(default_factory=list)
    users: list[str] = field(default_factory=list)  # NTLM users and those of credentials
    ntlm_users: list[str] = field(default_factory=list)  # those of NTLM AUTHENTICATE messages alone
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
    name: str | None = None  # the host name the server gives (NTLM DNS or NetBIOS name)
    ad_domain: str | None = None  # its AD domain (DNS name, else NetBIOS)
    leaks: list[str] = field(default_factory=list)  # what leaks, in words, from the same facts as the tables
    authentication: list[str] = field(default_factory=list)  # authentication without TLS, in sentences
    issues: list[str] = field(default_factory=list)  # fixes.NTLM, CLEARTEXT, ... in the order found
    fixes: list[CardFix] = field(default_factory=list)
    software_note: str | None = None  # how the settings were chosen when the banner names no software
    verification: list[tuple[str, str]] = field(default_factory=list)  # finding title, how to verify
    first_seen: str | None = None

    @property
    def exposed(self) -> bool:
        return self.severity in LEAK_SEVERITIES

    @property
    def leak_summary(self) -> str:
        return "; ".join(self.leaks) if self.leaks else "nothing"


@dataclass
class Action:
    """One of the changes that remove the most risk across servers."""

    owner: str
    setting: str
    reference: str
    removes: str  # what it removes, in words
    servers: list[str]
    weight: int

    @property
    def servers_text(self) -> str:
        return listing(self.servers, 3)

    @property
    def literal(self) -> bool:
        return self.owner not in GENERAL_OWNERS


@dataclass
class Group:
    """Servers sharing an AD domain, a subnet or a software, in one row."""

    name: str
    servers: int
    exposed: int
    leaks: str
    severity: str


@dataclass
class InputFile:
    path: str
    kind: str  # capture, findings, store, capture (from store)
    sha256: str | None
    size: int | None


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
    verdict: tuple[str, str] = ("", "")  # headline, the rest of the sentence
    window: str | None = None  # the capture window, first to last packet seen with a finding
    server_counts: list[tuple[str, int]] = field(default_factory=list)  # servers by their top severity
    first_page_rows: list[ServerCard] = field(default_factory=list)
    first_page_groups: list[Group] = field(default_factory=list)
    first_page_grouping: str = ""
    actions: list[Action] = field(default_factory=list)
    inputs: list[InputFile] = field(default_factory=list)
    groupings: list[tuple[str, list[Group]]] = field(default_factory=list)  # by what, groups

    @property
    def nothing_leaked(self) -> bool:
        return self.servers_exposed == 0

    @property
    def compact(self) -> bool:
        """Tables instead of cards: too many servers for a card each."""
        return len(self.cards) > CARDS_UP_TO
