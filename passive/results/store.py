"""The findings store: one SQLite file (WAL journal) that keeps findings across runs.

Findings are deduplicated per (type, server, key, source), the key being what tells findings of one type apart on
one server (for clear-text credentials the mechanism and user, for open relays accepted or denied). Each stored
row holds the finding's record in the schema of docs/schema.md, merged across every run that saw it: ``count``
adds up, ``first_seen``/``last_seen`` widen, ``evidence``, ``details``, ``clients``, ``users`` and
``workstations`` are unioned up to the same bounds as in memory (what does not fit is counted in
``evidence_dropped``/``details_dropped``), severity only rises, and the other fields take the latest run's values.

Writers (``leakscope watch``, ``leakscope analyze --db``) group their writes in a transaction committed every
``commit_interval`` seconds or ``commit_every`` findings, so a process killed with SIGKILL loses at most that
interval; with the WAL journal a commit is atomic, so the file is never left half-written.

Passwords are never written: records are stored masked, whatever ``--show-secrets`` says.

``leakscope analyze --db`` also records the SHA-256 of each capture file it merged (table ``captures``): a file
already merged, under any name, is not merged again, so analyzing the same capture twice does not double its counts.
The digest is of the file as stored: the same packets in another file (compressed, re-saved, cut) are another file.

Reading::

    with FindingStore("findings.db", create=False) as store:
        records = store.query(type="ntlm-info", server="10.0.0.5:25", since="2026-11-01T00:00:00Z")
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from passive.findings.model import MAX_DETAILS, MAX_EVIDENCE, Finding, Severity, iso_time
from passive.results.records import finding_record

__all__ = [
    "MIGRATIONS",
    "CaptureDigest",
    "FindingStore",
    "StoreError",
    "StoreWriter",
    "capture_digest",
    "parse_time",
    "save_run",
]

# Versioned schema steps, applied in order, each recorded in schema_migrations. Never edit a released step:
# append a new one.
MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (
        1,
        "findings deduplicated per (type, server, key, source), merged record as JSON",
        (
            """CREATE TABLE findings (
                id INTEGER PRIMARY KEY,
                type TEXT NOT NULL,
                server TEXT NOT NULL,
                key TEXT NOT NULL,
                source TEXT NOT NULL,
                protocol TEXT NOT NULL,
                severity TEXT NOT NULL,
                count INTEGER NOT NULL,
                first_seen REAL,
                last_seen REAL,
                record TEXT NOT NULL,
                updated_at REAL NOT NULL,
                UNIQUE (type, server, key, source)
            )""",
            "CREATE INDEX findings_last_seen ON findings (last_seen)",
            "CREATE INDEX findings_server ON findings (server)",
        ),
    ),
    (
        2,
        "runs: which command wrote when, and its summary",
        (
            """CREATE TABLE runs (
                id INTEGER PRIMARY KEY,
                command TEXT NOT NULL,
                started_at REAL NOT NULL,
                ended_at REAL,
                summary TEXT
            )""",
        ),
    ),
    (
        3,
        "captures: content digest of every capture file analyze merged, so one file is never counted twice",
        (
            """CREATE TABLE captures (
                sha256 TEXT PRIMARY KEY,
                path TEXT NOT NULL,
                size INTEGER NOT NULL,
                run_id INTEGER NOT NULL,
                added_at REAL NOT NULL
            )""",
        ),
    ),
]
SCHEMA_LATEST = MIGRATIONS[-1][0]
_SEVERITY_ORDER = {str(s): i for i, s in enumerate(Severity)}
# Fields whose values are lists of names gathered over time: unioned across runs instead of replaced.
_UNION_FIELDS = ("users", "workstations")


class StoreError(Exception):
    """The store cannot be opened, read or written; ``str(error)`` is a one-line message."""


Identity = tuple[str, str, str, str]  # type, server, key (JSON), source


def identity_of(finding: Finding) -> Identity:
    key = json.dumps(list(finding.key), ensure_ascii=False, default=str)
    return (str(finding.type), finding.server, key, finding.source)


def parse_time(value: float | datetime | str) -> float:
    """Seconds since the epoch from a number, a datetime (naive means UTC) or an ISO 8601 string."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise StoreError(f"not an ISO 8601 time: {value!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class FindingStore:
    """An open store. ``FindingStore(":memory:")`` keeps everything in memory (nothing survives the process)."""

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        commit_interval: float = 1.0,
        commit_every: int = 500,
    ) -> None:
        self.path = str(path)
        self.commit_interval = commit_interval
        self.commit_every = max(1, commit_every)
        if self.path != ":memory:":
            target = Path(self.path)
            if target.is_dir():
                raise StoreError(f"{self.path}: is a directory, not a findings store")
            if not create and not target.exists():
                raise StoreError(f"{self.path}: no such findings store")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open: {exc}") from None
        self._pending = 0
        self._last_commit = time.monotonic()
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL with WAL: every commit survives the process being killed; only an OS crash may lose the last.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.OperationalError as exc:  # cannot open, locked, read-only, disk full
            self._db.close()
            raise StoreError(f"{self.path}: cannot use: {exc}") from None
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path}: not a findings store ({exc})") from None
        except StoreError:
            self._db.close()
            raise

    # -- schema --------------------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "schema_migrations" not in tables:
                if tables:
                    raise StoreError(f"{self.path}: an SQLite database, but not a findings store")
                db.execute(
                    "CREATE TABLE schema_migrations "
                    "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
                )
            current = db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
            if current > SCHEMA_LATEST:
                raise StoreError(
                    f"{self.path}: written by a newer leakscope "
                    f"(store schema {current}, this one knows {SCHEMA_LATEST})"
                )
            for version, description, statements in MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                    (version, description, time.time()),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        return self._db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]

    # -- writing -------------------------------------------------------------------------------------------------

    def writer(self, command: str) -> StoreWriter:
        """Start a run (recorded in ``runs``) and return the writer that merges its findings in."""
        return StoreWriter(self, command)

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def _wrote(self) -> None:
        self._pending += 1
        if self._pending >= self.commit_every:
            self.commit()

    def maybe_commit(self) -> bool:
        """Commit when ``commit_interval`` has passed since the last commit; True when it committed."""
        if time.monotonic() - self._last_commit >= self.commit_interval:
            self.commit()
            return True
        return False

    def rollback(self) -> None:
        """Forget what was written since the last commit."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot roll back: {exc}") from None

    def commit(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot commit: {exc}") from None
        self._pending = 0
        self._last_commit = time.monotonic()

    def _execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, parameters)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    # -- reading -------------------------------------------------------------------------------------------------

    def query(
        self,
        type: str | None = None,
        server: str | None = None,
        since: float | datetime | str | None = None,
        source: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored records (docs/schema.md, merged across runs), oldest first; ``since`` filters on last_seen."""
        clauses: list[str] = []
        parameters: list[Any] = []
        for column, value in (("type", type), ("server", server), ("source", source)):
            if value is not None:
                clauses.append(f"{column} = ?")
                parameters.append(value)
        if since is not None:
            clauses.append("last_seen >= ?")
            parameters.append(parse_time(since))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._execute(
            f"SELECT record FROM findings {where} ORDER BY first_seen IS NULL, first_seen, id", tuple(parameters)
        )
        return [json.loads(row[0]) for row in rows]

    def runs(self) -> list[dict[str, Any]]:
        rows = self._execute("SELECT id, command, started_at, ended_at, summary FROM runs ORDER BY id")
        return [
            {
                "id": run_id,
                "command": command,
                "started_at": iso_time(started),
                "ended_at": iso_time(ended),
                "summary": json.loads(summary) if summary else None,
            }
            for run_id, command, started, ended, summary in rows
        ]

    def known_capture(self, sha256: str) -> dict[str, Any] | None:
        """Where a capture file with this content digest was merged before: its path, run and time, or None."""
        row = self._execute("SELECT path, run_id, added_at FROM captures WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            return None
        return {"path": row[0], "run": row[1], "added_at": iso_time(row[2])}

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound file."""
        return self._execute("PRAGMA integrity_check").fetchone()[0]

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._db.close()

    def __enter__(self) -> FindingStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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

    def __init__(self, store: FindingStore, command: str) -> None:
        self.store = store
        self._done: dict[Identity, _Contribution] = {}
        store._begin()  # the run's row lands with its findings, or not at all
        cursor = store._execute("INSERT INTO runs (command, started_at) VALUES (?, ?)", (command, time.time()))
        self.run_id = cursor.lastrowid
        self.written = 0

    def write(self, finding: Finding) -> tuple[dict[str, Any], bool]:
        """Merge the finding's current state in; returns the merged record and whether the store was new to it."""
        store = self.store
        ident = identity_of(finding)
        record = finding_record(finding, show_secrets=False)
        store._begin()
        row = store._execute(
            "SELECT record, first_seen, last_seen FROM findings "
            "WHERE type = ? AND server = ? AND key = ? AND source = ?",
            ident,
        ).fetchone()
        done = self._done.get(ident) if row is not None else None
        stored = json.loads(row[0]) if row is not None else {}
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
                *ident,
                merged["protocol"],
                merged["severity"],
                merged["count"],
                first_seen,
                last_seen,
                json.dumps(merged, ensure_ascii=False, default=str),
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

    def add_capture(self, sha256: str, path: str, size: int) -> bool:
        """Record that this run merges the capture file with this digest; False if another run already did."""
        self.store._begin()
        cursor = self.store._execute(
            "INSERT OR IGNORE INTO captures (sha256, path, size, run_id, added_at) VALUES (?, ?, ?, ?, ?)",
            (sha256, path, size, self.run_id, time.time()),
        )
        return cursor.rowcount == 1

    def forget(self, finding: Finding) -> None:
        """The finding left memory: a later one with the same identity adds to the stored row afresh."""
        self._done.pop(identity_of(finding), None)

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        """Record the end of the run and commit."""
        store = self.store
        store._begin()
        store._execute(
            "UPDATE runs SET ended_at = ?, summary = ? WHERE id = ?",
            (time.time(), json.dumps(summary, default=str) if summary is not None else None, self.run_id),
        )
        store.commit()


def _merge(stored: dict[str, Any], record: dict[str, Any], done: _Contribution) -> dict[str, Any]:
    """The stored record with the run's new state folded in (``done`` says what of the run is already in)."""
    if not stored:
        return dict(record)
    merged = dict(record)  # latest values for the kind's own fields and the guidance texts
    merged["count"] = stored.get("count", 0) + record["count"] - done.count
    if _SEVERITY_ORDER.get(stored.get("severity"), 0) > _SEVERITY_ORDER.get(record["severity"], 0):
        merged["severity"] = stored["severity"]
    merged["client"] = record.get("client") or stored.get("client")
    merged["clients"], _ = _union(stored.get("clients") or [], record.get("clients") or [], MAX_DETAILS)
    for name in _UNION_FIELDS:
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


@dataclass(frozen=True)
class CaptureDigest:
    """A capture file's content digest, the store's identity for it whatever its name."""

    path: str
    sha256: str
    size: int


def capture_digest(path: str | Path) -> CaptureDigest:
    """SHA-256 of the file's bytes (as stored: a gzip capture is hashed compressed)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
                size += len(block)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read to record it in the store: {exc.strerror or exc}") from None
    return CaptureDigest(str(path), digest.hexdigest(), size)


def save_run(
    path: str | Path,
    findings: Iterable[Finding],
    command: str,
    summary: dict[str, Any] | None,
    captures: Iterable[CaptureDigest] = (),
) -> None:
    """Merge one finished run's findings into the store at ``path`` (created if missing), recording its captures.

    All or nothing, in one transaction: an interrupted merge leaves the store as it was, and a capture file another
    run merged in the meantime makes this one merge nothing (``StoreError``).
    """
    store = FindingStore(path, commit_interval=float("inf"), commit_every=sys.maxsize)
    try:
        writer = store.writer(command)
        for capture in captures:
            if not writer.add_capture(capture.sha256, capture.path, capture.size):
                raise StoreError(f"{capture.path}: merged into {path} by another run meanwhile; not merged again")
        for finding in findings:
            writer.write(finding)
        writer.finish(summary)
    except BaseException:
        store.rollback()
        raise
    finally:
        store.close()
