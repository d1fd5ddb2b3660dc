"""``leakscope analyze``: capture files in, findings out (tables, JSON, JSON lines, hash lines, the store)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console

from passive.analysis.domains import IpNetwork
from passive.analysis.parallel import PARALLEL_MIN_BYTES
from passive.analysis.pipeline import AnalysisOptions, Results, analyze_captures
from passive.cli.common import (
    domains,
    emit_records,
    format_option,
    local_domain_option,
    output_option,
    reassembly_option,
    show_secrets_option,
    trusted_net_option,
    write_text,
)
from passive.cli.errors import EXIT_INPUT
from passive.cli.progress import packet_progress
from passive.core.text import printable
from passive.results.records import event_record, finding_record, summary_record
from passive.results.redaction import Redactor
from passive.results.store import CaptureDigest, FindingStore, StoreError, capture_digest, save_run

DEFAULTS = AnalysisOptions()
# Where ``-`` is read from: the standard input as a file the capture readers stream (never seek in).
STDIN = "/dev/stdin"


@click.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@format_option()
@output_option
@click.option(
    "--ports-only",
    is_flag=True,
    help="Read only the mail and HTTP ports (25, 465, 587, 2525, 110, 995, 143, 993, 80, 8080), not every port.",
)
@click.option(
    "--all-ports",
    is_flag=True,
    help="Every TCP flow, mail recognised by what it says, on any port: the default (kept for older scripts).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    metavar="N",
    help=f"Worker processes [default: one per core once the captures are {PARALLEL_MIN_BYTES >> 20} MiB or more].",
)
@click.option("--filter", "bpf", metavar="BPF", help="A BPF expression ANDed with the mail filter.")
@reassembly_option(DEFAULTS.reassembly_policy)
@show_secrets_option
@local_domain_option
@trusted_net_option
@click.option(
    "--hashes",
    "hashes_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Write NetNTLMv1/v2 responses as hashcat lines (modes 5500, 5600) to FILE.",
)
@click.option("--events", "keep_events", is_flag=True, help="Include per-session events (json format).")
@click.option("--db", metavar="PATH", help="Also merge the findings into this SQLite store (see leakscope findings).")
def analyze(
    captures: tuple[str, ...],
    output_format: str,
    output: str | None,
    ports_only: bool,
    all_ports: bool,
    jobs: int | None,
    bpf: str | None,
    reassembly_policy: str,
    show_secrets: bool,
    local_domains: tuple[str, ...],
    trusted_networks: tuple[IpNetwork, ...],
    hashes_file: str | None,
    keep_events: bool,
    db: str | None,
) -> None:
    """Analyze capture files (pcap, pcapng; plain or gzip, xz, bz2, zstd compressed; - for standard input, e.g.
    tcpdump -w - | leakscope analyze -) for what their mail traffic leaks."""
    captures = tuple(STDIN if path == "-" else path for path in captures)
    if ports_only and all_ports:
        raise click.UsageError("--ports-only and --all-ports contradict each other")
    options = AnalysisOptions(
        all_ports=not ports_only, bpf=bpf, local_domains=domains(local_domains),
        trusted_networks=trusted_networks, keep_events=keep_events, reassembly_policy=reassembly_policy, jobs=jobs,
    )
    err = Console(stderr=True, highlight=False)
    plan = _store_plan(db, captures) if db else {}
    results = _analyze(captures, options, err)
    if not results.analyzed:
        raise SystemExit(EXIT_INPUT)
    redactor = Redactor(show_secrets, secrets=results.stats.secrets)
    findings = list(results.findings)
    records = [finding_record(f, redactor=redactor) for f in findings]
    summary = summary_record(results.counts(), findings)
    if hashes_file:
        write_text(hashes_file, "".join(line + "\n" for line in results.stats.hashes))
    sessions = [_session(s, redactor) for s in results.analysis.sessions] if keep_events else None
    emit_records(output_format, output, records, summary, sessions=sessions)
    if db:
        _save_to_store(db, plan, captures, results, options, err)
    if results.failed:
        raise SystemExit(EXIT_INPUT)


def _session(session: Any, redactor: Redactor) -> dict[str, Any]:
    return {
        "protocol": session.protocol,
        "server": session.server,
        "client": session.client,
        "file": session.file,
        "events": [event_record(event, redactor) for event in session.events],
        "events_dropped": session.events_dropped,
    }


def _analyze(captures: Sequence[str], options: AnalysisOptions, err: Console, purpose: str = "") -> Results:
    """Run the pipeline with a progress display; each capture that failed gets its one-line error."""
    results = analyze_captures(
        captures, options, around_file=lambda path, counters: packet_progress(err, path + purpose, counters)
    )
    for _path, reason in results.failed:
        click.echo(f"leakscope: error: {printable(reason)}{purpose}", err=True)
    for warning in results.counters.warnings:
        click.echo(f"leakscope: warning: {printable(warning)}", err=True)
    return results


def _store_plan(db: str, captures: Sequence[str]) -> dict[str, CaptureDigest]:
    """Before analysis: the capture files the store does not hold yet, by content digest (first name kept).

    Checked up front so that a bad store fails before a long analysis, and the digest is of the bytes analyzed
    next. A file that cannot be read is left to the analysis to report.
    """
    digests: list[tuple[str, CaptureDigest]] = []
    for path in captures:  # first: a pipe given with --db is refused before the store is created
        try:
            digests.append((path, capture_digest(path)))
        except StoreError:
            continue
    with FindingStore(db) as store:
        plan: dict[str, CaptureDigest] = {}
        for path, digest in digests:
            before = store.known_capture(digest.sha256)
            if before is not None:
                click.echo(
                    f"leakscope: note: {printable(path)} is already in {printable(db)} (run {before['run']}, "
                    f"as {printable(before['path'])}); its findings are not merged again",
                    err=True,
                )
            else:
                plan.setdefault(digest.sha256, digest)
        return plan


def _save_to_store(
    db: str,
    plan: dict[str, CaptureDigest],
    captures: Sequence[str],
    results: Results,
    options: AnalysisOptions,
    err: Console,
) -> None:
    """Merge the run's findings into the store, leaving out capture files (by content) the store already holds."""
    failed = {path for path, _reason in results.failed}
    fresh = [d for d in plan.values() if d.path not in failed]
    if not fresh:
        return
    if len(fresh) < len(captures):
        # Some files were merged before, failed or were named twice: the store gets a run over the new files alone.
        results = _analyze([d.path for d in fresh], options, err, " (store)")
        again = {path for path, _reason in results.failed}
        fresh = [d for d in fresh if d.path not in again]
        if not fresh:
            return
    findings = list(results.findings)
    summary = summary_record(results.counts(), findings)
    redactor = Redactor(show_secrets=False, secrets=results.stats.secrets)
    replaced = save_run(db, findings, "analyze", summary, captures=fresh, redactor=redactor)
    if replaced:
        click.echo(
            f"leakscope: warning: {printable(db)}: {replaced} damaged stored record(s) (not UTF-8 or not JSON) "
            "replaced by this run's findings",
            err=True,
        )
