"""Geometry for the report's inline SVG charts: the templates draw what these compute (no script, no fonts)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from passive.results.report.fields import show_time

BAR_WIDTH = 320
BAR_LABEL = 80
BAR_ROW = 26

TIMELINE_WIDTH = 960
TIMELINE_LABEL = 200
TIMELINE_RIGHT = 24
TIMELINE_ROW = 26
TIMELINE_AXIS = 44
TIMELINE_TICKS = 4
# Rows drawn at most; the table next to the chart lists every leak.
TIMELINE_MAX_ROWS = 40
# A dot's radius, and the width within which dots on one row are drawn as one (they would hide each other).
TIMELINE_DOT = 5
TIMELINE_BUCKET = 2 * TIMELINE_DOT
DAY = 86_400
WEEK = 7 * DAY
_SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2, "info": 3}


@dataclass
class Bar:
    label: str
    count: int
    y: int
    width: int


@dataclass
class BarChart:
    width: int
    height: int
    label_width: int
    bars: list[Bar]


@dataclass
class TimelinePoint:
    x: float
    y: int
    severity: str
    title: str
    time: str
    count: int = 1  # leaks this dot stands for
    radius: float = TIMELINE_DOT


@dataclass
class TimelineTick:
    x: float
    label: str


@dataclass
class Timeline:
    width: int
    height: int
    plot_left: int
    plot_right: int
    axis_y: int
    rows: list[tuple[str, int]]  # label, y of the row's centre
    points: list[TimelinePoint]
    ticks: list[TimelineTick]
    rows_dropped: int


def bar_chart(counts: list[tuple[str, int]]) -> BarChart:
    largest = max((count for _, count in counts), default=0) or 1
    bars = [
        Bar(label, count, index * BAR_ROW, round(BAR_WIDTH * count / largest) if count else 0)
        for index, (label, count) in enumerate(counts)
    ]
    return BarChart(BAR_LABEL + BAR_WIDTH + 60, BAR_ROW * len(counts), BAR_LABEL, bars)


def timeline(points: list[tuple[str, datetime, str, str]], order: Callable[[str], Any] = str) -> Timeline | None:
    """One row per server (or group, in ``order``), one dot per time a leak was seen; dots closer than a dot's width
    on a row are drawn as one, larger, that says how many it holds. None when nothing leaked."""
    if not points:
        return None
    servers = sorted({server for server, *_ in points}, key=order)
    shown = servers[:TIMELINE_MAX_ROWS]
    row_of = {server: index for index, server in enumerate(shown)}
    start = min(moment for _, moment, *_ in points)
    end = max(moment for _, moment, *_ in points)
    span = (end - start).total_seconds()
    left, right = TIMELINE_LABEL, TIMELINE_WIDTH - TIMELINE_RIGHT

    def x_of(moment: datetime) -> float:
        if span <= 0:
            return (left + right) / 2
        return round(left + (right - left) * (moment - start).total_seconds() / span, 1)

    buckets: dict[tuple[int, int], list[tuple[datetime, str, str]]] = {}
    for server, moment, severity, title in points:
        if server in row_of:
            bucket = int((x_of(moment) - left) // TIMELINE_BUCKET)
            buckets.setdefault((row_of[server], bucket), []).append((moment, severity, title))
    drawn = [_point(x_of, row, members) for (row, _), members in sorted(buckets.items())]
    axis_y = TIMELINE_ROW * len(shown) + 4
    return Timeline(
        width=TIMELINE_WIDTH,
        height=axis_y + TIMELINE_AXIS,
        plot_left=left,
        plot_right=right,
        axis_y=axis_y,
        rows=[(server, _y_of(index)) for index, server in enumerate(shown)],
        points=drawn,
        ticks=_ticks(start, end, x_of),
        rows_dropped=len(servers) - len(shown),
    )


def _y_of(row: int) -> int:
    return TIMELINE_ROW * row + TIMELINE_ROW // 2


def _point(x_of: Callable[[datetime], float], row: int, members: list[tuple[datetime, str, str]]) -> TimelinePoint:
    moments = sorted(moment for moment, *_ in members)
    severity = min((s for _, s, _ in members), key=_SEVERITY_RANK.get)
    titles = ", ".join(dict.fromkeys(title for *_, title in members))
    centre = x_of(moments[0]) + (x_of(moments[-1]) - x_of(moments[0])) / 2
    if len(members) == 1:
        when = show_time(moments[0], precise=True) or ""
        return TimelinePoint(round(centre, 1), _y_of(row), severity, titles, when)
    when = f"{len(members)} leaks, {show_time(moments[0])} to {show_time(moments[-1])}"
    radius = min(TIMELINE_DOT + 2 * math.log2(len(members)), TIMELINE_ROW / 2 - 1)
    return TimelinePoint(round(centre, 1), _y_of(row), severity, titles, when, len(members), round(radius, 1))


def _ticks(start: datetime, end: datetime, x_of: Callable[[datetime], float]) -> list[TimelineTick]:
    """Ticks that say what the span needs: times of day within a day, dates (and hours up to a week) beyond."""
    span = (end - start).total_seconds()
    if span <= 0:
        return [TimelineTick(x_of(start), start.strftime("%Y-%m-%d %H:%M:%S"))]
    ticks = []
    for step in range(TIMELINE_TICKS + 1):
        moment = start + (end - start) * (step / TIMELINE_TICKS)
        if span <= DAY:
            label = moment.strftime("%Y-%m-%d %H:%M:%S" if step in (0, TIMELINE_TICKS) else "%H:%M:%S")
        elif span <= WEEK:
            label = moment.strftime("%Y-%m-%d %H:%M")
        else:
            label = moment.strftime("%Y-%m-%d")
        ticks.append(TimelineTick(x_of(moment), label))
    return ticks
