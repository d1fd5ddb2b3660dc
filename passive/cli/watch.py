"""``leakscope watch``: live monitoring of a span port, findings kept in a SQLite store."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from passive.analysis.domains import IpNetwork
from passive.capture.bpf import check_user_filter
from passive.capture.live import MAX_BUFFER_MIB, SNAPLEN
from passive.cli.common import (
    ByteSize,
    domains,
    ignore_checksums_option,
    local_domain_option,
    reassembly_option,
    refuse_overwriting,
    trusted_net_option,
)
from passive.cli.dashboard import log_appearances, run_with_dashboard
from passive.cli.errors import EXIT_INPUT
from passive.core.rotation import DEFAULT_KEEP, RotatingAppender
from passive.core.text import printable
from passive.live.fanout import MAX_JOBS
from passive.live.interface import open_capture
from passive.live.monitor import Monitor
from passive.live.options import WatchOptions
from passive.results.store import FindingStore

DEFAULTS = WatchOptions(interface="")


@click.command("watch")
@click.option("-i", "--interface", required=True, metavar="IFACE", help="Interface to capture on (a span port).")
@click.option("--db", metavar="PATH", help="SQLite findings store (created if missing; kept across runs).")
@click.option("--jsonl", "jsonl_path", metavar="FILE", help="Append each finding to FILE when it appears or changes.")
@click.option(
    "--jsonl-rotate",
    "jsonl_rotate",
    type=ByteSize(),
    metavar="SIZE",
    help="Start a new --jsonl file when it reaches SIZE (500k, 100M, 2G); the full one becomes FILE.1, as logrotate.",
)
@click.option(
    "--jsonl-keep",
    type=click.IntRange(1, 1000),
    default=DEFAULT_KEEP,
    show_default=True,
    help="Rotated --jsonl files kept (FILE.1 the newest); older ones are deleted.",
)
@click.option("--filter", "bpf", metavar="BPF", help="A BPF expression ANDed with the mail filter.")
@click.option(
    "--ports-only",
    is_flag=True,
    help="Capture only the mail and HTTP ports (a kernel filter), not every TCP flow.",
)
@click.option(
    "--all-ports",
    is_flag=True,
    help="Every TCP flow, mail recognised by what it says, on any port: the default (kept for older scripts).",
)
@reassembly_option(DEFAULTS.reassembly_policy)
@ignore_checksums_option
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help="Stop after this.")
@click.option(
    "--snaplen",
    type=click.IntRange(64, SNAPLEN),
    default=DEFAULTS.snaplen,
    show_default=True,
    help="Bytes kept per packet.",
)
@click.option("--no-promisc", is_flag=True, help="Do not put the interface in promiscuous mode.")
@click.option(
    "--buffer-size",
    type=click.IntRange(1, MAX_BUFFER_MIB),
    default=DEFAULTS.buffer_size,
    show_default=True,
    metavar="MIB",
    help="Kernel ring buffer of each capture process, in MiB: what arrives while it is busy waits there.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, MAX_JOBS),
    default=DEFAULTS.jobs,
    show_default=True,
    help="Capture processes sharing the interface (a PACKET_FANOUT group whose program keeps each flow, tunnelled or "
    "not, on one); one writer.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=1),
    default=DEFAULTS.idle_timeout,
    show_default=True,
    metavar="SECONDS",
    help="Expire flows idle this long.",
)
@local_domain_option
@trusted_net_option
@click.option("--quiet", is_flag=True, help="No dashboard: only errors and a one-line summary at the end.")
def watch_command(
    interface: str,
    db: str | None,
    jsonl_path: str | None,
    jsonl_rotate: int | None,
    jsonl_keep: int,
    bpf: str | None,
    ports_only: bool,
    all_ports: bool,
    reassembly_policy: str,
    ignore_checksums: bool,
    duration: float | None,
    snaplen: int,
    no_promisc: bool,
    buffer_size: int,
    jobs: int,
    idle_timeout: float,
    local_domains: tuple[str, ...],
    trusted_networks: tuple[IpNetwork, ...],
    quiet: bool,
) -> None:
    """Watch an interface live: findings as they appear, kept in a SQLite store.

    Needs root or the CAP_NET_RAW capability. SIGINT (Ctrl-C) or SIGTERM stop it with a summary.
    """
    if ports_only and all_ports:
        raise click.UsageError("--ports-only and --all-ports contradict each other")
    refuse_overwriting([("--db", db), ("--jsonl", jsonl_path)], [])  # JSON lines appended to the store break it
    options = WatchOptions(
        interface=interface, bpf=bpf, all_ports=not ports_only, duration=duration, snaplen=snaplen,
        promisc=not no_promisc, db=db, jsonl=jsonl_path, local_domains=domains(local_domains),
        trusted_networks=trusted_networks, idle_timeout=idle_timeout, reassembly_policy=reassembly_policy,
        check_checksums=not ignore_checksums, buffer_size=buffer_size, jobs=jobs,
    )  # fmt: skip
    console = Console(highlight=False)
    check_user_filter(bpf)
    capture = open_capture(options)  # first: a wrong interface or missing privilege leaves no file behind
    jsonl_file = _open_jsonl(jsonl_path, jsonl_rotate, jsonl_keep)
    with contextlib.closing(capture), _open_store(db) as store, jsonl_file as jsonl:
        monitor = Monitor(options, store, jsonl=jsonl)
        with _stop_on_signals(monitor):
            if quiet:
                monitor.run(capture)
            elif console.is_terminal:
                run_with_dashboard(monitor, capture, console)
            else:
                click.echo(f"leakscope: watching {interface}; store {store.path}", err=True)
                monitor.on_tick = log_appearances(console)
                monitor.run(capture)
    _report(monitor, console, quiet)


def _report(monitor: Monitor, console: Console, quiet: bool) -> None:
    """The summary (a line, or a panel) and the warnings; exit status 1 when the capture failed."""
    summary = monitor.summary()
    for warning in summary["warnings"]:
        click.echo(f"leakscope: warning: {printable(warning)}", err=True)
    if quiet:
        click.echo(_summary_line(summary))
    else:
        console.print(_summary_panel(summary))
    if monitor.stopped_by == "capture error":
        raise SystemExit(EXIT_INPUT)


@contextlib.contextmanager
def _open_store(path: str | None) -> Iterator[FindingStore]:
    store = FindingStore(path if path else ":memory:")
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def _open_jsonl(path: str | None, max_bytes: int | None, keep: int) -> Iterator[RotatingAppender | None]:
    if not path:
        yield None
        return
    stream = RotatingAppender(path, max_bytes, keep)  # created 0600: the records name users and hosts
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
    "jobs",
    "kernel_received",
    "kernel_dropped",
    "interface_dropped",
    "dropped_percent",
    "drops_per_second_peak",
    "flows",
    "flows_expired",
    "flows_evicted",
    "gaps",
    "flows_with_gaps",
    "flows_one_sided",
    "flows_midstream",
    "findings_new",
    "findings_written",
    "findings_forgotten",
    "servers",
    "store",
)


def _summary_line(summary: dict[str, Any]) -> str:
    return printable("leakscope watch: " + " ".join(f"{key}={summary.get(key)}" for key in _SUMMARY_KEYS))
