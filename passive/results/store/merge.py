"""Merging findings into the store: one row per finding identity, counts added, lists unioned up to the
same bounds as in memory, severity only rising."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from passive.core.text import printable
from passive.core.times import iso_time
from passive.findings.kinds import KINDS
from passive.findings.model import MAX_DETAILS, MAX_EVIDENCE, Finding, rank
from passive.results.jsonio import dumps
from passive.results.records import finding_record
from passive.results.redaction import Redactor
from passive.results.store.rows import parse_record

Identity = tuple[str, str, str, str]  # type, server, key (JSON), source


def identity_of(finding: Finding) -> Identity:
    key = dumps(list(finding.key)) if finding.key else "[]"  # most kinds have no key: dumps([]) without the encoder
    return (str(finding.type), finding.server, key, finding.source)


# Fields whose values are lists of names gathered over time: unioned across runs instead of replaced.
UNION_FIELDS: tuple[str, ...] = tuple(sorted({name for kind in KINDS.values() for name in kind.union_fields}))


@dataclass
class _Contribution:
    """What one run has already merged into a stored row (its lists only grow by appending)."""

    count: int = 0
    details: int = 0
    details_dropped: int = 0
    evidence: int = 0
    evidence_dropped: int = 0


class StoreWriter:
    """Merges one run's findings into the store; call :meth:`write` again whenever a finding changed."""

    def __init__(self, store: Any, command: str, redactor: Redactor | None = None) -> None:
        self.store = store
        self._done: dict[Identity, _Contribution] = {}
        store._begin()  # the run's row lands with its findings, or not at all
        cursor = store._execute("INSERT INTO runs (command, started_at) VALUES (?, ?)", (command, time.time()))
        self.run_id = cursor.lastrowid
        self.written = 0
        # Records are stored masked, whatever the command line asked for.
        self.redactor = redactor if redactor is not None else Redactor(show_secrets=False)

    def write(self, finding: Finding, ident: Identity | None = None) -> tuple[dict[str, Any], bool]:
        """Merge the finding's current state in; returns the merged record and whether the store was new to it.
        ``ident`` is the finding's :func:`identity_of`, when the caller has it at hand."""
        store = self.store
        ident = ident if ident is not None else identity_of(finding)
        record = finding_record(finding, redactor=self.redactor)
        stored_as = self._stored_identity(finding, ident)
        store._begin()
        row = store._execute(
            "SELECT CAST(record AS BLOB), first_seen, last_seen FROM findings "
            "WHERE type = ? AND server = ? AND key = ? AND source = ?",
            stored_as,
        ).fetchone()
        stored = parse_record(row[0]) if row is not None else {}
        if stored is None:  # a damaged row: the finding's current state replaces it
            store.replaced += 1
            row, stored = None, {}
        done = self._done.get(ident) if row is not None else None
        merged = _merge(stored, record, done or _Contribution())
        first_seen = _earliest(row[1] if row else None, finding.first_seen)
        last_seen = _latest(row[2] if row else None, finding.last_seen)
        merged["first_seen"], merged["last_seen"] = iso_time(first_seen), iso_time(last_seen)
        store._execute(
            """INSERT INTO findings
                   (type, server, key, source, protocol, severity, count, first_seen, last_seen, record, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (type, server, key, source) DO UPDATE SET
                   protocol = excluded.protocol, severity = excluded.severity, count = excluded.count,
                   first_seen = excluded.first_seen, last_seen = excluded.last_seen, record = excluded.record,
                   updated_at = excluded.updated_at""",
            (
                *stored_as,
                merged["protocol"],
                merged["severity"],
                merged["count"],
                first_seen,
                last_seen,
                dumps(merged),
                time.time(),
            ),
        )
        self._done[ident] = _Contribution(
            count=record["count"],
            details=len(record["details"]),
            details_dropped=record["details_dropped"],
            evidence=len(record["evidence"]),
            evidence_dropped=record["evidence_dropped"],
        )
        self.written += 1
        store._wrote()
        return merged, row is None

    def _stored_identity(self, finding: Finding, ident: Identity) -> Identity:
        """The identity as the store keeps it: the key's text scrubbed of the run's secrets as the record is (a
        user name that is a password, typed in the wrong field, is a secret too), so that no column holds one."""
        if not finding.key:
            return ident
        key = [self.redactor.text(part) if isinstance(part, str) else part for part in finding.key]
        return (ident[0], ident[1], dumps(key), ident[3])

    def add_capture(self, sha256: str, path: str, size: int) -> bool:
        """Record that this run merges the capture file with this digest; False if another run already did. The
        name is kept as shown (control characters and bytes that are not UTF-8 escaped): the digest identifies."""
        self.store._begin()
        cursor = self.store._execute(
            "INSERT OR IGNORE INTO captures (sha256, path, size, run_id, added_at) VALUES (?, ?, ?, ?, ?)",
            (sha256, printable(path), size, self.run_id, time.time()),
        )
        return cursor.rowcount == 1

    def forget(self, finding: Finding, ident: Identity | None = None) -> None:
        """The finding left memory: a later one with the same identity adds to the stored row afresh."""
        self._done.pop(ident if ident is not None else identity_of(finding), None)

    def progress(self, summary: dict[str, Any]) -> None:
        """The run's summary so far (a run that never finishes keeps the last one); committed with the findings."""
        self.store._begin()
        self.store._execute("UPDATE runs SET summary = ? WHERE id = ?", (dumps(summary), self.run_id))

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        """Record the end of the run and commit."""
        store = self.store
        store._begin()
        store._execute(
            "UPDATE runs SET ended_at = ?, summary = ? WHERE id = ?",
            (time.time(), dumps(summary) if summary is not None else None, self.run_id),
        )
        store.commit()


def _merge(stored: dict[str, Any], record: dict[str, Any], done: _Contribution) -> dict[str, Any]:
    """The stored record with the run's new state folded in (``done`` says what of the run is already in)."""
    if not stored:
        return dict(record)
    merged = dict(record)  # latest values for the kind's own fields and the guidance texts
    merged["count"] = stored.get("count", 0) + record["count"] - done.count
    if rank(stored.get("severity", "")) > rank(record["severity"]):
        merged["severity"] = stored["severity"]
    merged["client"] = record.get("client") or stored.get("client")
    merged["clients"], _ = _union(stored.get("clients") or [], record.get("clients") or [], MAX_DETAILS)
    for name in UNION_FIELDS:
        if name in record or name in stored:
            merged[name], _ = _union(stored.get(name) or [], record.get(name) or [], MAX_DETAILS)
    details, overflow = _union(stored.get("details") or [], record["details"][done.details :], MAX_DETAILS)
    merged["details"] = details
    merged["details_dropped"] = (
        stored.get("details_dropped", 0) + record["details_dropped"] - done.details_dropped + overflow
    )
    evidence, overflow = _union(stored.get("evidence") or [], record["evidence"][done.evidence :], MAX_EVIDENCE)
    merged["evidence"] = evidence
    merged["evidence_dropped"] = (
        stored.get("evidence_dropped", 0) + record["evidence_dropped"] - done.evidence_dropped + overflow
    )
    return merged


def _union(kept: list[Any], new: list[Any], limit: int) -> tuple[list[Any], int]:
    """``kept`` plus the items of ``new`` it lacks, up to ``limit``; also how many did not fit."""
    result = list(kept)
    overflow = 0
    for item in new:
        if item in result:
            continue
        if len(result) < limit:
            result.append(item)
        else:
            overflow += 1
    return result, overflow


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)
