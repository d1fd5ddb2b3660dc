"""Findings: the stable output records, deduplicated per server and kind, with bounded evidence.

Field names are documented in docs/schema.md and versioned by SCHEMA_VERSION; they are never renamed casually.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = "1.0"
# Evidence entries kept per finding, and per-exchange details kept per finding: the rest is counted.
MAX_EVIDENCE = 8
MAX_DETAILS = 50


class Severity(enum.StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class FindingType(enum.StrEnum):
    NTLM_INFO = "ntlm-info"
    AUTH_METHODS = "auth-methods"
    CLEARTEXT_CREDENTIALS = "cleartext-credentials"
    MAIL_SERVICE = "mail-service"
    OPEN_RELAY = "open-relay"


def iso_time(timestamp: float | None) -> str | None:
    """ISO 8601 UTC with microseconds; None when absent or outside years 1-9999 (a pcapng block can say anything)."""
    if timestamp is None:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


SECRET_MASK = "********"
# Fields that hold a secret in the clear; masked unless secrets are asked for.
SECRET_FIELDS = ("password",)


def redact_line(line: str) -> str:
    """Keep the words that say what was sent, mask the rest: ``PASS ********``, ``AUTH PLAIN ********``,
    ``a1 LOGIN ********``, ``a1 AUTHENTICATE PLAIN ********``; a bare SASL line becomes ``********``."""
    words = line.split()
    if not words:
        return SECRET_MASK
    first = words[0].upper()
    if first in ("PASS", "APOP"):
        keep = 1
    elif first == "AUTH" or (len(words) > 1 and words[1].upper() == "LOGIN"):
        keep = 2
    elif len(words) > 1 and words[1].upper() == "AUTHENTICATE":
        keep = 3
    else:
        keep = 0
    return " ".join([*words[:keep], SECRET_MASK])


@dataclass(frozen=True)
class EvidenceRecord:
    file: str | None
    frame: int | None
    timestamp: float | None
    side: str
    line: str
    first_frame: int | None = None
    secret: bool = False  # the line carries a password or token (plain or base64)

    def to_dict(self, show_secrets: bool = False) -> dict[str, Any]:
        record = {
            "file": self.file,
            "frame": self.frame,
            "time": iso_time(self.timestamp),
            "side": self.side,
            "line": self.line if show_secrets or not self.secret else redact_line(self.line),
        }
        if self.first_frame is not None:
            record["first_frame"] = self.first_frame
        return record


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

    def raise_severity(self, severity: Severity) -> None:
        order = list(Severity)
        if order.index(severity) > order.index(self.severity):
            self.severity = severity

    def to_dict(self, show_secrets: bool = False) -> dict[str, Any]:
        """The schema record; passwords and the evidence lines that carry them are masked unless ``show_secrets``."""
        from passive.findings.kinds import GUIDANCE  # one table of texts, kept with the texts

        guidance = GUIDANCE[self.type]
        record: dict[str, Any] = {
            "type": str(self.type),
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "protocol": self.protocol,
            "server": self.server,
            "severity": str(self.severity),
            "reference": guidance.reference(self.protocol),
        }
        record.update(self.fields)
        record.update(
            client=self.last_client,
            clients=self.clients,
            count=self.count,
            first_seen=iso_time(self.first_seen),
            last_seen=iso_time(self.last_seen),
            details=self.details,
            details_dropped=self.details_dropped,
            evidence=[e.to_dict(show_secrets) for e in self.evidence],
            evidence_dropped=self.evidence_dropped,
            remediation=guidance.remediation,
            verification=guidance.verification,
        )
        if not show_secrets:
            for name in SECRET_FIELDS:
                if record.get(name):
                    record[name] = SECRET_MASK
        return record


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

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._findings.values())

    def __len__(self) -> int:
        return len(self._findings)
