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

Several processes may write one store at once: each waits its turn (see :mod:`.locking` for how long), and gives
up with a one-line error after :data:`~.locking.LOCK_WAIT_LIMIT` seconds.

Passwords are never written: records are stored masked, whatever ``--show-secrets`` says. Records are stored as
leakscope writes JSON (control, bidi and invisible characters as ``\\uXXXX`` escapes), so reading the file with
another tool shows no raw control character. A record that cannot be read back (not UTF-8, not JSON: a damaged
file) is skipped and counted in :attr:`FindingStore.skipped`; a merge into its row replaces it.

``leakscope analyze --db`` also records the SHA-256 of each capture file it merged (table ``captures``): a file
already merged, under any name, is not merged again, so analyzing the same capture twice does not double its counts.
The digest is of the file as stored: the same packets in another file (compressed, re-saved, cut) are another file.

Reading::

    with FindingStore("findings.db", create=False) as store:
        records = store.query(type="ntlm-info", server="10.0.0.5:25", since="2026-11-01T00:00:00Z")
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from passive.core.errors import StoreError
from passive.core.files import PRIVATE_MODE
from passive.core.times import iso_time
from passive.results.redaction import Redactor
from passive.results.store.locking import BUSY_TIMEOUT, is_locked, locked_error, retrying
from passive.results.store.merge import StoreWriter
from passive.results.store.rows import parse_record, stored_text
from passive.results.store.schema import MIGRATIONS, SCHEMA_LATEST


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


def _check_path(path: str, create: bool) -> None:
    """A directory or a missing store (without ``create``) is refused; a new store file is created readable by its
    owner alone (SQLite gives its -wal and -shm files the same mode): it holds user names and host names."""
    target = Path(path)
    if target.is_dir():
        raise StoreError(f"{path}: is a directory, not a findings store")
    if target.exists():
        return
    if not create:
        raise StoreError(f"{path}: no such findings store")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:  # another process created it meanwhile
        pass
    except OSError as exc:
        raise StoreError(f"{path}: cannot create: {exc.strerror or exc}") from None


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
        self.skipped = 0  # stored records that could not be read (not UTF-8, not JSON): left out of what is read
        self.replaced = 0  # such records a merge overwrote with the finding's current state
        if self.path != ":memory:":
            _check_path(self.path, create)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open: {exc}") from None
        self._pending = 0
        self._last_commit = time.monotonic()
        try:
            retrying(self.path, self._prepare, "opening it")
        except sqlite3.OperationalError as exc:  # cannot open, read-only, disk full
            self._db.close()
            raise StoreError(f"{self.path}: cannot use: {exc}") from None
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path}: not a findings store ({exc})") from None
        except StoreError:
            self._db.close()
            raise

    def _prepare(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL with WAL: every commit survives the process being killed; only an OS crash may lose the last.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    # -- schema --------------------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        db = self._db
        if self._schema_version() == SCHEMA_LATEST:
            return  # up to date: reading needs no write lock, so readers never wait for a writer here
        db.execute("BEGIN IMMEDIATE")
        try:
            current = self._schema_version()
            if current is None:
                db.execute(
                    "CREATE TABLE schema_migrations "
                    "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
                )
                current = 0
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
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _schema_version(self) -> int | None:
        """The store's schema version; None for an empty database; an error for another SQLite database."""
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_migrations" not in tables:
            if tables:
                raise StoreError(f"{self.path}: an SQLite database, but not a findings store")
            return None
        return self._db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]

    @property
    def schema_version(self) -> int:
        return self._db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]

    # -- writing -------------------------------------------------------------------------------------------------

    def writer(self, command: str, redactor: Redactor | None = None) -> StoreWriter:
        """Start a run (recorded in ``runs``) and return the writer that merges its findings in."""
        return StoreWriter(self, command, redactor)

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._execute("BEGIN IMMEDIATE")

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
            if is_locked(exc):
                raise locked_error(self.path, BUSY_TIMEOUT, "committing") from None
            raise StoreError(f"{self.path}: cannot commit: {exc}") from None
        self._pending = 0
        self._last_commit = time.monotonic()

    def _execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, parameters)
        except sqlite3.Error as exc:
            if is_locked(exc):
                raise locked_error(self.path, BUSY_TIMEOUT, "writing") from None
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
            f"SELECT CAST(record AS BLOB) FROM findings {where} ORDER BY first_seen IS NULL, first_seen, id",
            tuple(parameters),
        )
        records = []
        for (stored,) in rows:
            record = parse_record(stored)
            if record is None:
                self.skipped += 1
            else:
                records.append(record)
        return records

    def runs(self) -> list[dict[str, Any]]:
        rows = self._execute(
            "SELECT id, CAST(command AS BLOB), started_at, ended_at, CAST(summary AS BLOB) FROM runs ORDER BY id"
        )
        runs = []
        for run_id, command, started, ended, stored in rows:
            summary = parse_record(stored, kind=None) if stored is not None else None
            if stored is not None and summary is None:
                self.skipped += 1
            runs.append(
                {
                    "id": run_id,
                    "command": stored_text(command),
                    "started_at": iso_time(started),
                    "ended_at": iso_time(ended),
                    "summary": summary,
                }
            )
        return runs

    def known_capture(self, sha256: str) -> dict[str, Any] | None:
        """Where a capture file with this content digest was merged before: its path, run and time, or None."""
        row = self._execute(
            "SELECT CAST(path AS BLOB), run_id, added_at FROM captures WHERE sha256 = ?", (sha256,)
        ).fetchone()
        if row is None:
            return None
        return {"path": stored_text(row[0]), "run": row[1], "added_at": iso_time(row[2])}

    def captures(self) -> list[dict[str, Any]]:
        """Every capture file merged into the store, by content digest: path (first name), sha256, size, run."""
        rows = self._execute("SELECT path, sha256, size, run_id FROM captures ORDER BY added_at, path")
        return [{"path": p, "sha256": digest, "size": size, "run": run} for p, digest, size, run in rows]

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


