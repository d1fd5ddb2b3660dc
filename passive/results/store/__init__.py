"""The findings store: one SQLite file (WAL journal) that keeps findings across runs (see :mod:`.store`)."""

from passive.core.errors import StoreError
from passive.results.store.merge import Identity, StoreWriter, identity_of
from passive.results.store.runs import CaptureDigest, capture_digest, save_run
from passive.results.store.schema import MIGRATIONS, SCHEMA_LATEST
from passive.results.store.store import FindingStore, parse_time

__all__ = [
    "MIGRATIONS",
    "SCHEMA_LATEST",
    "CaptureDigest",
    "FindingStore",
    "Identity",
    "StoreError",
    "StoreWriter",
    "capture_digest",
    "identity_of",
    "parse_time",
    "save_run",
]
