"""``leakscope analyze``: capture files in, findings out (tables, JSON, JSON lines, hash lines, the store)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console

from passive.analysis.domains import IpNetwork
from passive.analysis.parallel import PARALLEL_MIN_BYTES
from passive.analysis.pipeline import AnalysisOptions, Results, analyze_captures
from passive.capture.bpf import check_user_filter
from passive.capture.paths import expand_inputs
from passive.cli.common import (
    all_outputs_option,
    domains,
    emit_all,
    emit_records,
    format_option,
    local_domain_option,
    output_option,
    reassembly_option,
    show_secrets_option,
    trusted_net_option,
    verbose_option,
    write_text,
)
from passive.cli.errors import EXIT_INPUT
from passive.cli.gate import apply_gate, build_gate, gate_options, gate_status
from passive.cli.progress import packet_progress
from passive.core.errors import InputError
from passive.core.text import printable
from passive.results.records import event_record, finding_record, summary_record
from passive.results.redaction import Redactor
from passive.results.store import CaptureDigest, FindingStore, StoreError, capture_digest, save_run

DEFAULTS = AnalysisOptions()
# Where ``-`` is read from: the standard input as a file the capture readers stream (never seek in).
STDIN = "/dev/stdin"
# Skipped files named one by one on stderr; past this, a count (the summary has the total as inputs_skipped).
MAX_SKIPPED_NAMED = 10


@click.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path(allow_dash=True, path_type=str))
@format_option()
@output_option
@all_outputs_option
@verbose_option
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
@click.option(
    "--join/--no-join",
    default=DEFAULTS.join,
    show_default=True,
    help="Read consecutive files of one capture (a ring buffer: same directory, interface and link type, each "
    "starting where the one before ended) as one stream, so that sessions cut between files are whole "
    "(docs/scaling.md).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Run the analysis on this Dask scheduler's cluster (tcp://host:8786); its workers must see the captures "
    "under the same names. Needs the distributed package.",
)
@click.option("--filter", "bpf", metavar="BPF", help="A BPF expression ANDed with the mail filter.")
@reassembly_option(DEFAULTS.reassembly_policy)
@show_secrets_option
@local_domain_option
@trusted_net_option
@click.option(
    "--hashes",
    "hashes_file",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="Write NetNTLMv1/v2 responses as hashcat lines (modes 5500, 5600) to FILE (- for standard output).",
)
@click.option("--events", "keep_events", is_flag=True, help="Include per-session events (json format).")
@click.option("--db", metavar="PATH", help="Also merge the findings into this SQLite store (see leakscope findings).")
@gate_options
def analyze(
    captures: tuple[str, ...],
    output_format: str,
    output: str | None,
    ports_only: bool,
    output_all: str | None,
    verbose: bool,
    all_ports: bool,
    jobs: int | None,
    join: bool,
    scheduler: str | None,
    bpf: str | None,
    reassembly_policy: str,
    show_secrets: bool,
    local_domains: tuple[str, ...],
    trusted_networks: tuple[IpNetwork, ...],
    hashes_file: str | None,
    keep_events: bool,
    db: str | None,
    fail_on: str | None,
    baseline_path: str | None,
    suppress_path: str | None,
) -> None:
    """Analyze captures for what their mail traffic leaks.

    CAPTURES are pcap or pcapng files, plain or gzip, xz, bz2, zstd compressed; directories (walked: files that
    are not captures are skipped and counted); quoted glob patterns ('ring-*.pcap', 'archive/**/*.pcapng.gz');
    - for standard input (tcpdump -w - | leakscope analyze -). Files are read in natural name order.
    """
    if ports_only and all_ports:
        raise click.UsageError("--ports-only and --all-ports contradict each other")
    expanded = expand_inputs(captures)
    for skipped in expanded.skipped[:MAX_SKIPPED_NAMED]:
        click.echo(f"leakscope: note: {printable(skipped)} is not a capture; skipped", err=True)
    if len(expanded.skipped) > MAX_SKIPPED_NAMED:
        click.echo(f"leakscope: note: {len(expanded.skipped) - MAX_SKIPPED_NAMED} more files skipped", err=True)
    if not expanded.paths:
        raise InputError("no capture among the files given")
    captures = tuple(STDIN if path == "-" else path for path in expanded.paths)
    if scheduler and STDIN in captures:
        raise click.UsageError("--scheduler: the cluster's workers open the captures by name, not standard input")
    options = AnalysisOptions(
        all_ports=not ports_only,
        bpf=bpf,
        local_domains=domains(local_domains),
        trusted_networks=trusted_networks,
        keep_events=keep_events,
        reassembly_policy=reassembly_policy,
        jobs=jobs,
        join=join,
        scheduler=scheduler,
    )
    check_user_filter(bpf)
    gate = build_gate(baseline_path, suppress_path)
    err = Console(stderr=True, highlight=False)
    plan = _store_plan(db, captures) if db else {}
    results = _analyze(captures, options, err)
    if not results.analyzed:
        raise SystemExit(EXIT_INPUT)
    redactor = Redactor(show_secrets, secrets=results.stats.secrets)
    findings = list(results.findings)
    records = [finding_record(f, redactor=redactor) for f in findings]
    summary = summary_record(results.counts(), findings)
    if expanded.skipped:
        summary["inputs_skipped"] = len(expanded.skipped)
    apply_gate(gate, records, summary)
    if hashes_file:
        write_text(hashes_file, "".join(line + "\n" for line in results.stats.hashes))
    sessions = [_session(s, redactor) for s in results.analysis.sessions] if keep_events else None
    emit_records(output_format, output, records, summary, sessions=sessions, verbose=verbose)
    if output_all:
        emit_all(output_all, records, summary, redact=not show_secrets, verbose=verbose)
    if db:
        _save_to_store(db, plan, captures, results, options, err)
    if results.failed:
        raise SystemExit(EXIT_INPUT)
    status = gate_status(gate, records, fail_on)
    if status is not None:
        raise SystemExit(status)


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
    if results.retried:
        click.echo(f"leakscope: note: {results.retried} of {results.tasks} cluster task(s) ran again", err=True)
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
