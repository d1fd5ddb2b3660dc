"""The store's SQLite schema, as versioned migration steps."""

from __future__ import annotations

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
