"""Times as every output writes them: ISO 8601 UTC with microseconds and a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_time(timestamp: float | None) -> str | None:
    """None when absent or outside years 1-9999 (a pcapng block can say anything)."""
    if timestamp is None:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
