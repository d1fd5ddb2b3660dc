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
    "INVENTORY_KINDS",
    "MAX_DETAILS",
    "MAX_EVIDENCE",
    "MAX_FIELD_TEXT",
    "MAX_NAMES",
    "RESERVED_SHARES",
    "SCHEMA_VERSION",
    "SEVERITY_ORDER",
    "EvidenceRecord",
    "Finding",
    "FindingSet",
    "FindingType",
    "Severity",
    "bounded",
    "rank",
]

SCHEMA_VERSION = "1.1"
# Evidence entries kept per finding (a finding cites its proof, it does not archive the session); the rest counted
# in ``evidence_dropped``.
MAX_EVIDENCE = 8
# Per-occurrence details and clients kept per finding; the rest counted in ``details_dropped``.
MAX_DETAILS = 50
# Names gathered in list fields (users, workstations) per finding.
MAX_NAMES = 50
# Characters of one text value a finding keeps in its fields, details and name lists (passwords, tokens, names,
# addresses are far shorter; 20 000 findings of made-up users with 48 KB passwords held 1.1 GiB). Longer text is
# cut, as evidence lines are.
MAX_FIELD_TEXT = 4096


# Values that hold no text: returned as they are, before any isinstance test (most of a detail's values).
_TEXTLESS = frozenset({int, float, bool, type(None)})


def bounded(value: Any) -> Any:
    """``value`` with every string in it cut at MAX_FIELD_TEXT characters (dicts and lists followed)."""
    if value.__class__ in _TEXTLESS:
        return value
    if isinstance(value, str):
        return value[:MAX_FIELD_TEXT]
    if isinstance(value, dict):
        return {name: bounded(item) for name, item in value.items()}
    if isinstance(value, list):
        return [bounded(item) for item in value]
    if type(value) is tuple:
        return tuple(bounded(item) for item in value)
    return value


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

    @classmethod
    def of(
        cls,
        file: str | None,
        frame: int | None,
        timestamp: float | None,
        side: str,
        line: str,
        first_frame: int | None,
        described: bool,
    ) -> EvidenceRecord:
        """The record of these fields, filled as pickle fills it (its fields in order), not by the frozen
        dataclass's __init__, which sets each field with a call of object.__setattr__ (a record per cited event)."""
        record = object.__new__(cls)
        record.__dict__.update(
            file=file,
            frame=frame,
            timestamp=timestamp,
            side=side,
            line=line,
            first_frame=first_frame,
            described=described,
        )
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
    network: str | None = None  # the overlay's virtual network the server was seen in ("vxlan-vni:42"), if any
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
            first, last = self.first_seen, self.last_seen
            if first is None or timestamp < first:
                self.first_seen = timestamp
            if last is None or timestamp > last:
                self.last_seen = timestamp
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

    def set_fields(self, **values: Any) -> None:
        """Set fields of the kind's schema, text cut at :data:`MAX_FIELD_TEXT`."""
        for name, value in values.items():
            self.fields[name] = bounded(value)

    def add_detail(self, detail: dict[str, Any]) -> None:
        if len(self.details) < MAX_DETAILS:
            self.details.append(bounded(detail))
        else:
            self.details_dropped += 1

    def add_name(self, name: str, values: str) -> None:
        """Add ``values`` to the list field ``name`` once, up to :data:`MAX_NAMES` entries."""
        values = values[:MAX_FIELD_TEXT]
        names = self.fields.setdefault(name, [])
        if values not in names and len(names) < MAX_NAMES:
            names.append(values)

    def raise_severity(self, severity: Severity) -> None:
        if rank(severity) > rank(self.severity):
            self.severity = severity


# Kinds that list what exists (servers, what they offer): when the set is full, they make room for the others, the
# oldest first, mail-service before auth-methods. 20 000 one-packet fake servers filled the set with them before.
INVENTORY_KINDS = (FindingType.MAIL_SERVICE, FindingType.AUTH_METHODS)
# The share of the set each kind is sure to get whatever floods the others (made-up user names, fake NTLM servers,
# relay attempts): a new finding of a kind under its share takes the place of the oldest finding of the kind most
# over its own. The rest of the set goes to whoever comes first.
RESERVED_SHARES = {
    FindingType.CLEARTEXT_CREDENTIALS: 0.25,
    FindingType.NTLM_INFO: 0.25,
    FindingType.OPEN_RELAY: 0.05,
}


class FindingSet:
    """All findings of a run, deduplicated; insertion order is the order they were first seen."""

    # Distinct findings kept: traffic chooses how many servers and user names there are (2e5 made-up user names
    # cost 1 GiB). Past this a new finding is handed out detached, updated, and forgotten (or takes the place of
    # an inventory finding, see INVENTORY_KINDS and RESERVED_SHARES); ``dropped`` counts those not kept.
    MAX_FINDINGS = 20_000

    def __init__(self, max_findings: int = MAX_FINDINGS) -> None:
        self._findings: dict[tuple[Any, ...], Finding] = {}
        self._by_kind: dict[FindingType, dict[tuple[Any, ...], None]] = {kind: {} for kind in FindingType}
        self.max_findings = max_findings
        self.reserved = {kind: int(max_findings * share) for kind, share in RESERVED_SHARES.items()}
        self.dropped = 0  # findings not kept: new ones refused, and kept ones evicted
        self.evicted = 0  # of which kept ones that made room for a more valuable kind

    def get(
        self, kind: FindingType, protocol: str, server: str, severity: Severity, key: tuple[Any, ...] = ()
    ) -> Finding:
        index = (kind, server, key)
        finding = self._findings.get(index)
        if finding is None:
            finding = Finding(kind, protocol, server, severity, key=key)
            if len(self._findings) >= self.max_findings and not self._make_room(kind):
                self.dropped += 1
                return finding
            self._findings[index] = finding
            self._by_kind[kind][index] = None
        return finding

    def _make_room(self, kind: FindingType) -> bool:
        """Evict one finding for a new one of ``kind``: the oldest inventory finding if ``kind`` is not inventory;
        else, if ``kind`` is under its reserved share, the oldest of the kind most over its own share."""
        if kind not in INVENTORY_KINDS:
            for inventory in INVENTORY_KINDS:
                if self._by_kind[inventory]:
                    self._evict(next(iter(self._by_kind[inventory])))
                    return True
        if len(self._by_kind[kind]) >= self.reserved.get(kind, 0):
            return False
        excess = {other: len(self._by_kind[other]) - share for other, share in self.reserved.items()}
        victim = max(excess, key=excess.__getitem__)
        if excess[victim] <= 0:
            return False
        self._evict(next(iter(self._by_kind[victim])))
        return True

    def _evict(self, index: tuple[Any, ...]) -> None:
        del self._findings[index]
        del self._by_kind[index[0]][index]
        self.evicted += 1
        self.dropped += 1

    def find(self, kind: FindingType, server: str, key: tuple[Any, ...] = ()) -> Finding | None:
        return self._findings.get((kind, server, key))

    def discard(self, finding: Finding) -> None:
        """Forget a finding (long-running monitors keep only recent ones; the store keeps the rest)."""
        index = (finding.type, finding.server, finding.key)
        if self._findings.get(index) is finding:
            del self._findings[index]
            del self._by_kind[finding.type][index]

    def __iter__(self) -> Iterator[Finding]:
        return iter(self._findings.values())

    def __len__(self) -> int:
        return len(self._findings)
