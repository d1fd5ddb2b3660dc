"""Times as every output writes them: ISO 8601 UTC with microseconds and a ``Z``."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime

# Whole seconds whose date and time of day are remembered: a run's times fall in few distinct seconds (a capture's
# packets, its findings' first and last sightings), so most times only format their microseconds; working out a
# date for each took 3.2 µs a time, this 1.4 µs (a finding record writes four or more).
SECONDS_REMEMBERED = 4096


@functools.lru_cache(maxsize=SECONDS_REMEMBERED)
def _second(whole: int) -> str:
    return datetime.fromtimestamp(whole, UTC).isoformat(timespec="seconds").removesuffix("+00:00")


def iso_time(timestamp: float | None) -> str | None:
    """None when absent or outside years 1-9999 (a pcapng block can say anything)."""
    if timestamp is None:
        return None
    try:
        # Rounded to the microsecond half to even, as datetime.fromtimestamp rounds (a carry moves the second).
        fraction, whole = math.modf(timestamp)
        micro = round(fraction * 1e6)
        if micro >= 1_000_000:
            whole, micro = whole + 1, micro - 1_000_000
        elif micro < 0:
            whole, micro = whole - 1, micro + 1_000_000
        return f"{_second(int(whole))}.{micro:06d}Z"
    except (ValueError, OverflowError, OSError):
        return None
