"""``leakscope watch`` (live monitoring with a dashboard) and ``leakscope findings`` (query the store)."""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from passive.cli.common import UserError, emit_records, format_option
from passive.core.text import printable
from passive.findings.model import SCHEMA_VERSION, FindingType
from passive.live.monitor import FeedEntry, Monitor, WatchError, WatchOptions, open_capture
from passive.results.store import FindingStore, StoreError, parse_time

_SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# -- leakscope watch --------------------------------------------------------------------------------------------


@click.command("watch")
@click.option("-i", "--interface", required=True, metavar="IFACE", help="Interface to capture on (a span port).")
@click.option("--db", metavar="PATH", help="SQLite findings store (created if missing; kept across runs).")
@click.option("--jsonl", "jsonl_path", metavar="FILE", help="Append each finding to FILE when it appears or changes.")
@click.option("--filter", "bpf", metavar="BPF", help="A BPF expression ANDed with the mail filter.")
@click.option("--all-ports", is_flag=True, help="Look at every TCP flow and recognise mail servers by greeting.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help="Stop after this.")
@click.option(
    "--snaplen", type=click.IntRange(64, 262144), default=262144, show_default=True, help="Bytes kept per packet."
)
@click.option("--no-promisc", is_flag=True, help="Do not put the interface in promiscuous mode.")
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Expire flows idle this long.",
)
@click.option(
    "--local-domain",
    "local_domains",
    multiple=True,
    metavar="DOMAIN",
    help="A domain the servers deliver locally (open-relay check); repeatable.",
)
@click.option("--quiet", is_flag=True, help="No dashboard: only errors and a one-line summary at the end.")
def watch_command(
    interface: str,
    db: str | None,
    jsonl_path: str | None,
    bpf: str | None,
    all_ports: bool,
    duration: float | None,
    snaplen: int,
    no_promisc: bool,
    idle_timeout: float,
    local_domains: tuple[str, ...],
    quiet: bool,
) -> None:
    """Watch an interface live: findings as they appear, kept in a SQLite store.

    Needs root or the CAP_NET_RAW capability. SIGINT (Ctrl-C) or SIGTERM stop it with a summary.
    """
    options = WatchOptions(
        interface=interface,
        bpf=bpf,
        all_ports=all_ports,
        duration=duration,
        snaplen=snaplen,
        promisc=not no_promisc,
        db=db,
        jsonl=jsonl_path,
        local_domains=frozenset(d.lower().strip(".") for d in local_domains),
        idle_timeout=idle_timeout,
    )
    console = Console(highlight=False)
    try:
        capture = open_capture(options)  # first: a wrong interface or missing privilege leaves no file behind
        with contextlib.closing(capture), _open_store(db) as store, _open_jsonl(jsonl_path) as jsonl:
            monitor = Monitor(options, store, jsonl=jsonl)
            with _stop_on_signals(monitor):
                if quiet:
                    monitor.run(capture)
                elif console.is_terminal:
                    _run_with_dashboard(monitor, capture, console)
                else:
                    click.echo(f"leakscope: watching {interface}; store {store.path}", err=True)
                    monitor.on_tick = _log_appearances(console)
                    monitor.run(capture)
    except (WatchError, StoreError) as error:
        raise UserError(str(error)) from None
    summary = monitor.summary()
    for warning in summary["warnings"]:
        click.echo(f"leakscope: warning: {printable(warning)}", err=True)
    if quiet:
        click.echo(_summary_line(summary))
    else:
        console.print(_summary_panel(summary))
    if monitor.stopped_by == "capture error":
        raise SystemExit(1)


@contextlib.contextmanager
def _open_store(path: str | None) -> Iterator[FindingStore]:
    store = FindingStore(path if path else ":memory:")
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def _open_jsonl(path: str | None) -> Iterator[IO[str] | None]:
    if not path:
        yield None
        return
    try:
        stream = open(path, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 - closed below
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        yield stream
    finally:
        with contextlib.suppress(OSError):
            stream.close()


@contextlib.contextmanager
def _stop_on_signals(monitor: Monitor) -> Iterator[None]:
    def handler(number: int, _frame: object) -> None:
        monitor.stop(signal.Signals(number).name)

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def _run_with_dashboard(monitor: Monitor, capture: Any, console: Console) -> None:
    with Live(_dashboard(monitor), console=console, auto_refresh=False, transient=False) as live:

        def refresh(current: Monitor) -> None:
            live.update(_dashboard(current), refresh=True)

        monitor.on_tick = refresh
        monitor.run(capture)
        live.update(_dashboard(monitor), refresh=True)


def _log_appearances(console: Console) -> Any:
    """Without a terminal: one line per finding as it appears."""

    def show(monitor: Monitor) -> None:
        for entry in monitor.appeared:
            click.echo(_entry_line(entry))
        if monitor.appeared:
            sys.stdout.flush()

    return show


def _entry_line(entry: FeedEntry) -> str:
    return printable(
        f"{_clock(entry.changed_at)} {'NEW ' if entry.new else ''}{entry.severity} {entry.type} "
        f"{entry.server} {entry.protocol}: {entry.summary} (seen {entry.count}x)"
    )


def _clock(timestamp: float | None) -> str:
    if timestamp is None:
        return "--:--:--"
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S")
    except (ValueError, OverflowError, OSError):  # a capture clock outside years 1-9999
        return "--:--:--"


def _dashboard(monitor: Monitor) -> Group:
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
    stats = monitor.pcap_stats
    kernel = (
        f"received {stats.received:,}  dropped {stats.dropped:,}  by interface {stats.if_dropped:,}"
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
    table.add_row("gaps", f"{c.gaps:,} ({c.gap_bytes:,} bytes)", "decode errors", f"{c.decode_errors:,}")
    table.add_row(
        "findings",
        f"{monitor.findings_new:,} new, {monitor.findings_changed:,} writes",
        "in memory / forgotten",
        f"{len(monitor.analysis.findings):,} / {monitor.findings_forgotten:,}",
    )
    return Panel(table, title="counters", title_align="left")


def _servers(monitor: Monitor, limit: int = 10) -> Panel:
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
            Text(_clock(server.last_seen)),
        )
    more = f" (showing {limit} most recent)" if len(servers) > limit else ""
    return Panel(table, title=f"servers seen: {len(servers)}{more}", title_align="left")


def _findings(monitor: Monitor, limit: int = 15) -> Panel:
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
            Text(_clock(entry.changed_at)),
            Text(entry.severity.upper(), style=_SEVERITY_STYLE.get(entry.severity, "")),
            Text(entry.type + (" (new)" if entry.new else ""), style="bold" if entry.new else ""),
            Text(printable(entry.server)),
            Text(printable(entry.summary)),
            Text(f"{entry.count:,}"),
        )
    return Panel(table, title="findings, latest first", title_align="left")


def _summary_panel(summary: dict[str, Any]) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="cyan", no_wrap=True)
    table.add_column()
    for key in _SUMMARY_KEYS:
        value = summary.get(key)
        table.add_row(key, Text(printable(value if value is not None else "n/a")))
    return Panel(table, title="leakscope watch: stopped", title_align="left")


_SUMMARY_KEYS = (
    "interface",
    "stopped_by",
    "duration_seconds",
    "packets_read",
    "kernel_received",
    "kernel_dropped",
    "interface_dropped",
    "flows",
    "flows_expired",
    "flows_evicted",
    "gaps",
    "findings_new",
    "findings_written",
    "findings_forgotten",
    "servers",
    "store",
)


def _summary_line(summary: dict[str, Any]) -> str:
    return printable("leakscope watch: " + " ".join(f"{key}={summary.get(key)}" for key in _SUMMARY_KEYS))


# -- leakscope findings -----------------------------------------------------------------------------------------


@click.command("findings")
@click.option("--db", required=True, metavar="PATH", help="The findings store written by watch or analyze --db.")
@click.option("--type", "kind", type=click.Choice([str(k) for k in FindingType]), help="Only this kind of finding.")
@click.option("--server", metavar="IP:PORT", help="Only this server (as in the records: ip:port, [v6]:port).")
@click.option("--since", metavar="WHEN", help="Seen at or after WHEN: ISO 8601 time, or an age such as 30m, 12h, 7d.")
@click.option("--source", type=click.Choice(["passive", "active"]), help="Only findings from captures or probes.")
@format_option()
def findings_command(
    db: str, kind: str | None, server: str | None, since: str | None, source: str | None, output_format: str
) -> None:
    """Show the findings kept in a store, merged across runs."""
    try:
        since_time = _since(since) if since else None
        with FindingStore(db, create=False) as store:
            records = store.query(type=kind, server=server, since=since_time, source=source)
            summary = {
                "type": "summary",
                "schema_version": SCHEMA_VERSION,
                "findings": dict(Counter(r["type"] for r in records)),
                "store": store.path,
                "store_schema": store.schema_version,
                "runs": len(store.runs()),
            }
    except StoreError as error:
        raise UserError(str(error)) from None
    emit_records(output_format, None, records, summary)


def _since(text: str) -> float:
    match = _RELATIVE.match(text.strip())
    if match:
        return time.time() - float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    try:
        return parse_time(text)
    except StoreError:
        raise StoreError(f"--since {text!r}: give an ISO 8601 time or an age such as 30m, 12h, 7d") from None
