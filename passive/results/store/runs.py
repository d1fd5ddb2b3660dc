"""One finished run merged at once (``analyze --db``), and the content digest that keeps a capture file from being
merged twice."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from passive.core.errors import StoreError, UsageError
from passive.findings.model import Finding
from passive.results.redaction import Redactor
from passive.results.store.locking import retrying
from passive.results.store.merge import StoreWriter
from passive.results.store.store import FindingStore


@dataclass(frozen=True)
class CaptureDigest:
    """A capture file's content digest, the store's identity for it whatever its name."""

    path: str
    sha256: str
    size: int


def capture_digest(path: str | Path) -> CaptureDigest:
    """SHA-256 of the file's bytes (as stored: a gzip capture is hashed compressed).

    Only a regular file has one before it is analyzed: a pipe (``<(zcat x.pcap.gz)``, a FIFO) or a device would be
    read empty by hashing it first, so it is refused (:class:`UsageError`) before anything is read.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UsageError(
                f"{path}: a pipe or device cannot be merged into a store (the content digest that keeps a capture "
                "from being merged twice needs the whole file before analysis); save it to a file, or leave out --db"
            )
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
    redactor: Redactor | None = None,
) -> int:
    """Merge one finished run's findings into the store at ``path`` (created if missing), recording its captures;
    returns how many damaged stored records the merge replaced.

    All or nothing, in one transaction: an interrupted merge leaves the store as it was, and a capture file another
    run merged in the meantime makes this one merge nothing (``StoreError``). While another process writes, the
    merge waits its turn (:mod:`.locking`).
    """
    findings, captures = list(findings), list(captures)
    store = FindingStore(path, commit_interval=float("inf"), commit_every=sys.maxsize)

    def merge() -> int:
        store.replaced = 0
        writer = StoreWriter(store, command, redactor)
        for capture in captures:
            if not writer.add_capture(capture.sha256, capture.path, capture.size):
                raise StoreError(f"{capture.path}: merged into {path} by another run meanwhile; not merged again")
        for finding in findings:
            writer.write(finding)
        writer.finish(summary)
        return store.replaced

    try:
        return retrying(store.path, merge, "merging this run's findings", undo=store.rollback)
    except BaseException:
        store.rollback()
        raise
    finally:
        store.close()
