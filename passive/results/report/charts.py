"""Geometry for the report's inline SVG charts: the templates draw what these compute (no script, no fonts)."""

from __future__ import annotations

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
    """One row per server (in ``order``), one dot per time a leak was seen; None when nothing leaked."""
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

    def y_of(row: int) -> int:
        return TIMELINE_ROW * row + TIMELINE_ROW // 2

    drawn = [
        TimelinePoint(x_of(moment), y_of(row_of[server]), severity, title, show_time(moment, precise=True) or "")
        for server, moment, severity, title in points
        if server in row_of
    ]
    ticks = []
    steps = TIMELINE_TICKS if span > 0 else 0
    for step in range(steps + 1):
        moment = start + (end - start) * (step / steps) if steps else start
        label = moment.strftime("%Y-%m-%d %H:%M:%S" if step in (0, steps) else "%H:%M:%S")
        ticks.append(TimelineTick(x_of(moment), label))
    axis_y = TIMELINE_ROW * len(shown) + 4
    return Timeline(
        width=TIMELINE_WIDTH,
        height=axis_y + TIMELINE_AXIS,
        plot_left=left,
        plot_right=right,
        axis_y=axis_y,
        rows=[(server, y_of(index)) for index, server in enumerate(shown)],
        points=drawn,
        ticks=ticks,
        rows_dropped=len(servers) - len(shown),
    )
