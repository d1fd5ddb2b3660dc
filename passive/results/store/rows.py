"""Reading what a row holds without trusting it: a store file can be damaged (a bad disk, a partial copy, an edit
with another tool), and SQLite hands back whatever bytes a TEXT column holds. Columns are read as bytes
(``CAST(... AS BLOB)``) and decoded here, so a damaged record is one record skipped and counted, never an exception."""

from __future__ import annotations

import json
from typing import Any


def parse_record(stored: bytes | str | None, kind: str | None = "finding") -> dict[str, Any] | None:
    """The JSON object a record or summary column holds, or None when it is not UTF-8, not JSON or not an object
    (for a finding record: one without a ``type`` and ``server`` string)."""
    if stored is None:
        return None
    try:
        text = stored.decode("utf-8") if isinstance(stored, bytes) else stored
        record = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    if kind == "finding" and not (isinstance(record.get("type"), str) and isinstance(record.get("server"), str)):
        return None
    return record


def stored_text(stored: bytes | str | None) -> str | None:
    """A column shown as text (a command, a capture file's name): bytes that are not UTF-8 become U+FFFD."""
    if stored is None or isinstance(stored, str):
        return stored
    return stored.decode("utf-8", "replace")
