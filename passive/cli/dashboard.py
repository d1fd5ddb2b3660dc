"""The live dashboard of ``leakscope watch``: counters, servers seen, findings as they appear."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from passive.cli.tables import SEVERITY_STYLE
from passive.core.text import printable
from passive.findings.model import FindingType
from passive.live.monitor import FeedEntry, Monitor

# Rows shown in each dashboard panel; the store has every one.
SERVER_ROWS = 10
FINDING_ROWS = 15


def run_with_dashboard(monitor: Monitor, capture: Any, console: Console) -> None:
    with Live(dashboard(monitor), console=console, auto_refresh=False, transient=False) as live:

        def refresh(current: Monitor) -> None:
            live.update(dashboard(current), refresh=True)

        monitor.on_tick = refresh
        monitor.run(capture)
        live.update(dashboard(monitor), refresh=True)


def log_appearances(console: Console) -> Any:
    """Without a terminal: one line per finding as it appears."""

    def show(monitor: Monitor) -> None:
        for entry in monitor.appeared:
            click.echo(entry_line(entry))
        if monitor.appeared:
            sys.stdout.flush()

    return show


def entry_line(entry: FeedEntry) -> str:
    return printable(
        f"{clock(entry.changed_at)} {'NEW ' if entry.new else ''}{entry.severity} {entry.type} "
        f"{entry.server} {entry.protocol}: {entry.summary} (seen {entry.count}x)"
    )


def clock(timestamp: float | None) -> str:
    if timestamp is None:
        return "--:--:--"
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S")
    except (ValueError, OverflowError, OSError):  # a capture clock outside years 1-9999
        return "--:--:--"


def dashboard(monitor: Monitor) -> Group:
    options = monitor.options
    elapsed = int(monitor.elapsed)
    header = Text.assemble(
        ("leakscope watch ", "bold"),
        (printable(options.interface), "bold cyan"),
        f"  running {elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}",
        f"  store {printable(monitor.store.path)} ({monitor.commits} commits)",
        "  Ctrl-C stops",
    )
    return Group(header, _counters(monitor), _servers(monitor), _findings(monitor))


def _counters(monitor: Monitor) -> Panel:
    c = monitor.counters
    stats, drops = monitor.pcap_stats, monitor.drops
    kernel = (
        f"received {stats.received:,}  dropped {stats.dropped:,}  by interface {stats.if_dropped:,}"
        f"  ({drops.rate:,.0f}/s now, peak {drops.peak_rate:,.0f}/s)"
        if stats
        else "not yet read"
    )
    table = Table.grid(padding=(0, 2))
    table.add_column(style="cyan", no_wrap=True)
    table.add_column()
    table.add_column(style="cyan", no_wrap=True)
    table.add_column()
    table.add_row("packets", f"{c.packets_read:,}", "kernel", kernel)
    table.add_row(
        "flows",
        f"{c.flows:,} (closed {c.flows_closed:,}, not mail {c.flows_not_mail + monitor.analysis.flows_ignored:,})",
        "expired / evicted",
        f"{c.flows_expired:,} / {c.flows_evicted:,}",
    )
    table.add_row(
        "gaps",
        f"{c.gaps:,} ({c.gap_bytes:,} bytes) in {c.flows_with_gaps:,} flows",
        "decode errors",
        f"{c.decode_errors:,}",
    )
    if len(drops.processes) > 1:
        per_process = "  ".join(f"{p.dropped:,}/{p.received:,}" for p in drops.processes)
        table.add_row("processes", str(len(drops.processes)), "dropped / received", per_process)
    table.add_row(
        "findings",
        f"{monitor.findings_new:,} new, {monitor.findings_changed:,} writes",
        "in memory / forgotten",
        f"{len(monitor.analysis.findings):,} / {monitor.findings_forgotten:,}",
    )
    return Panel(table, title="counters", title_align="left")


def _servers(monitor: Monitor, limit: int = SERVER_ROWS) -> Panel:
    table = Table(expand=True, box=None, header_style="bold")
    table.add_column("server", no_wrap=True, min_width=21)
    table.add_column("proto", no_wrap=True, min_width=5)
    table.add_column("software / banner", overflow="ellipsis", no_wrap=True, ratio=2)
    table.add_column("sessions", justify="right", no_wrap=True)
    table.add_column("findings", overflow="ellipsis", no_wrap=True, ratio=3)
    table.add_column("last seen", no_wrap=True, min_width=9)
    servers = list(reversed(monitor.servers.values()))
    for server in servers[:limit]:
        kinds = sorted(k for k in server.kinds if k != FindingType.MAIL_SERVICE)
        table.add_row(
            Text(printable(server.server)),
            Text(printable(server.protocol)),
            Text(printable(server.software or server.banner or "")),
            Text(f"{server.sessions:,}" if server.sessions else ""),
            Text(printable(", ".join(kinds))),
            Text(clock(server.last_seen)),
        )
    more = f" (showing {limit} most recent)" if len(servers) > limit else ""
    return Panel(table, title=f"servers seen: {len(servers)}{more}", title_align="left")


def _findings(monitor: Monitor, limit: int = FINDING_ROWS) -> Panel:
    table = Table(expand=True, box=None, header_style="bold")
    table.add_column("last seen", no_wrap=True, min_width=9)
    table.add_column("severity", no_wrap=True, min_width=8)
    table.add_column("finding", no_wrap=True, min_width=21)
    table.add_column("server", no_wrap=True, min_width=21)
    table.add_column("what", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("count", justify="right", no_wrap=True)
    entries = list(reversed(monitor.feed.values()))
    for entry in entries[:limit]:
        table.add_row(
            Text(clock(entry.changed_at)),
            Text(entry.severity.upper(), style=SEVERITY_STYLE.get(entry.severity, "")),
            Text(entry.type + (" (new)" if entry.new else ""), style="bold" if entry.new else ""),
            Text(printable(entry.server)),
            Text(printable(entry.summary)),
            Text(f"{entry.count:,}"),
        )
    return Panel(table, title="findings, latest first", title_align="left")
