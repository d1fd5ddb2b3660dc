"""Sharing the store with other processes: how long a statement waits for another writer, and the retries where
SQLite reports the store locked without waiting at all.

SQLite serialises writers. A statement that finds the store locked waits up to :data:`BUSY_TIMEOUT` (SQLite's busy
handler) and then fails. In two cases SQLite does not wait but fails at once, because waiting could deadlock: a
connection that holds a read lock and wants to write while another process writes, which is what switching a store
that another process is creating right now to the WAL journal amounts to. Opening a store and merging one run are
therefore retried as a whole, with growing pauses, for up to :data:`LOCK_WAIT_LIMIT` in all; past that the command
gives up with one line naming the store and how long it waited.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from passive.core.errors import StoreError

# Seconds one statement waits for another process's write lock. Merging one run holds the lock for milliseconds
# and `watch` commits once a second, so this is only reached when another process holds the store far longer.
BUSY_TIMEOUT = 10.0
# Seconds in all that opening a store, or merging one run into it, is retried while the store is locked: enough
# for dozens of `analyze --db` runs finishing together to take their turns, short enough that a store another
# program keeps locked ends in an error instead of a hang.
LOCK_WAIT_LIMIT = 60.0
# Pause before the first retry; each further pause doubles, up to the second value. Each pause is shortened at
# random by up to half, so processes that collided do not retry in step.
RETRY_FIRST_PAUSE = 0.02
RETRY_MAX_PAUSE = 0.5

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6

T = TypeVar("T")


class StoreLocked(StoreError):
    """Another process kept the store locked longer than leakscope waits."""


def is_locked(error: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, extended codes included."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(error) or "busy" in str(error)


def locked_error(path: str, waited: float, what: str) -> StoreLocked:
    return StoreLocked(
        f"{path}: locked by another process (another leakscope writing to it?); gave up {what} "
        f"after waiting {waited:.0f} s"
    )


def retrying(path: str, action: Callable[[], T], what: str, undo: Callable[[], None] | None = None) -> T:
    """``action()``, run again after a pause while it fails because the store is locked (``undo()`` runs before
    each retry), for at most :data:`LOCK_WAIT_LIMIT` seconds in all."""
    started = time.monotonic()
    pause = RETRY_FIRST_PAUSE
    while True:
        try:
            return action()
        except (sqlite3.OperationalError, StoreLocked) as error:
            if isinstance(error, sqlite3.OperationalError) and not is_locked(error):
                raise
            waited = time.monotonic() - started
            if waited >= LOCK_WAIT_LIMIT:
                raise locked_error(path, waited, what) from None
        if undo is not None:
            undo()
        time.sleep(min(pause, LOCK_WAIT_LIMIT - waited) * random.uniform(0.5, 1.0))
        pause = min(pause * 2, RETRY_MAX_PAUSE)
