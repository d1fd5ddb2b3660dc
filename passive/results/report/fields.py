"""Read finding records defensively: a findings file is input like any other, so every field may be missing,
of the wrong type or hostile. Strings come back control-free (``printable``); templates escape them for HTML or
Markdown."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from passive.core.text import printable

# Longest string a report shows from a record; evidence lines are at most 512 characters in the schema already.
MAX_TEXT = 600
# Items of any list a report shows (the schema keeps the first 50 clients/details and 8 evidence entries).
MAX_ITEMS = 50


def text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A display string, or None for absent/empty values. Lists are joined with commas."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(t for t in (text(v, limit) for v in value[:MAX_ITEMS]) if t) or None
    if isinstance(value, dict):
        return None
    shown = printable(str(value)[:limit])
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def texts(value: Any) -> list[str]:
    """A list of display strings (a lone string counts as a list of one)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [t for t in (text(v) for v in items[:MAX_ITEMS] if not isinstance(v, list | dict)) if t]


def flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) < 1e15 else None  # NaN and absurd values are absent


def objects(value: Any) -> list[dict[str, Any]]:
    """The dicts of a list field (``details``, ``evidence``), bounded."""
    if not isinstance(value, list):
        return []
    return [item for item in value[:MAX_ITEMS] if isinstance(item, dict)]


def timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time (or seconds since the epoch, as ``details[].time`` holds) as a datetime in UTC; None when
    there is none, or when it is outside what a datetime holds once in UTC (``0001-01-01T00:00:00+14:00``)."""
    try:
        if isinstance(value, str) and len(value) <= 40:
            moment = datetime.fromisoformat(value)
            return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        seconds = number(value)
        if seconds is not None:
            return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def show_time(moment: datetime | None, precise: bool = False) -> str | None:
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f UTC" if precise else "%Y-%m-%d %H:%M:%S UTC")


def show_skew(seconds: float | None) -> str | None:
    """Clock skew for people: sub-second as milliseconds, larger as hours/minutes/seconds."""
    if seconds is None:
        return None
    sign = "+" if seconds >= 0 else "−"
    size = abs(seconds)
    if size < 1:
        return f"{sign}{size * 1000:.0f} ms"
    minutes, secs = divmod(round(size), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{n} {unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")) if n]
    return sign + " ".join(parts[:2])
