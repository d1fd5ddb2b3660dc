"""``leakscope analyze``: capture files in, findings out (tables, JSON, JSON lines, hash lines, the store)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from passive.analysis.domains import IpNetwork
from passive.analysis.parallel import PARALLEL_MIN_BYTES
from passive.analysis.pipeline import AnalysisOptions, Results, analyze_captures
from passive.capture.bpf import check_user_filter
from passive.capture.paths import expand_inputs
from passive.capture.stop import StopFlag
from passive.cli.common import (
    all_outputs_option,
    domains,
    emit_all,
    emit_records,
    format_option,
    ignore_checksums_option,
    local_domain_option,
    output_option,
    reassembly_option,
    refuse_overwriting,
    show_secrets_option,
    trusted_net_option,
    verbose_option,
    write_text,
)
from passive.cli.errors import EXIT_INPUT
from passive.cli.gate import apply_gate, build_gate, gate_options, gate_status
from passive.cli.inputs import note_skipped
from passive.cli.interrupt import Interruption, interruptible
from passive.cli.progress import RunProgress
from passive.core.collector import fewer_collections, leave_to_exit
from passive.core.errors import InputError
from passive.core.text import printable
from passive.results.baseline import Gate
from passive.results.records import event_record, finding_record, summary_record
from passive.results.redaction import Redactor

if TYPE_CHECKING:
    from passive.results.store import CaptureDigest

DEFAULTS = AnalysisOptions()
# Where ``-`` is read from: the standard input as a file the capture readers stream (never seek in).
STDIN = "/dev/stdin"


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
@ignore_checksums_option
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
    ignore_checksums: bool,
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
    captures, skipped = _captures(captures)
    _check_usage(captures, ports_only, all_ports, scheduler, bpf, (output, hashes_file, output_all, db), suppress_path)
    options = AnalysisOptions(
        all_ports=not ports_only, bpf=bpf, local_domains=domains(local_domains), trusted_networks=trusted_networks,
        keep_events=keep_events, reassembly_policy=reassembly_policy, check_checksums=not ignore_checksums,
        jobs=jobs, join=join, scheduler=scheduler,
    )  # fmt: skip
    gate = build_gate(baseline_path, suppress_path)
    plan = _store_plan(db, captures) if db else {}
    with interruptible() as run, RunProgress(captures, run.stop) as progress, fewer_collections():
        results = _analyze(captures, options, stop=run.stop, keep=run.results, progress=progress)
        leave_to_exit(results)  # kept from the collector while records are made (20-capture archive: ~0.05 CPU s)
        if not results.analyzed:
            raise SystemExit(EXIT_INPUT)
        with progress.phase("rendering"):
            records, summary = _records(results, show_secrets, gate, skipped)
            _write_hashes(hashes_file, results)
            sessions = _sessions(results, show_secrets, keep_events)
            _emit(output_format, output, output_all, records, summary, sessions, show_secrets, verbose, progress)
            leave_to_exit(results, records, sessions)  # the outputs are written: the run stays until the process ends
        if db:
            _save_to_store(db, plan, captures, results, options, run, progress)
        status = EXIT_INPUT if results.failed else gate_status(gate, records, fail_on)
        if status is not None:
            raise SystemExit(status)


def _write_hashes(hashes_file: str | None, results: Results) -> None:
    if hashes_file:
        write_text(hashes_file, "".join(line + "\n" for line in results.stats.hashes))


def _records(
    results: Results, show_secrets: bool, gate: Gate, skipped: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The finding records, masked, and the summary, with the gate's marks."""
    redactor = Redactor(show_secrets, secrets=results.stats.secrets)
    findings = list(results.findings)
    records = [finding_record(f, redactor=redactor) for f in findings]
    summary = summary_record(results.counts(), findings)
    if skipped:
        summary["inputs_skipped"] = skipped
    apply_gate(gate, records, summary)
    return records, summary


def _sessions(results: Results, show_secrets: bool, keep_events: bool) -> list[dict[str, Any]] | None:
    if not keep_events:
        return None
    redactor = Redactor(show_secrets, secrets=results.stats.secrets)
    return [_session(s, redactor) for s in results.analysis.sessions]


def _emit(
    output_format: str,
    output: str | None,
    output_all: str | None,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    sessions: list[dict[str, Any]] | None,
    show_secrets: bool,
    verbose: bool,
    progress: RunProgress,
) -> None:
    """The records in the chosen format (and, with -oA, in every format, written first: the progress display
    stays up until the output for standard output is ready)."""
    if output_all:
        emit_all(output_all, records, summary, redact=not show_secrets, verbose=verbose)
    emit_records(
        output_format, output, records, summary, sessions=sessions, verbose=verbose,
        before_output=progress.pause_for_stdout,
    )  # fmt: skip


def _all_outputs(basename: str | None) -> list[tuple[str, str | None]]:
    """The files ``-oA BASENAME`` writes (:func:`~passive.cli.common.emit_all`)."""
    return [("-oA", f"{basename}.{suffix}") for suffix in ("txt", "jsonl", "html")] if basename else []


def _check_usage(
    captures: tuple[str, ...],
    ports_only: bool,
    all_ports: bool,
    scheduler: str | None,
    bpf: str | None,
    outputs: tuple[str | None, str | None, str | None, str | None],
    suppress_path: str | None,
) -> None:
    """Contradictions, clashes and a BPF expression libpcap refuses, before anything is read: ``outputs`` are -o,
    --hashes, -oA and --db."""
    if ports_only and all_ports:
        raise click.UsageError("--ports-only and --all-ports contradict each other")
    if scheduler and STDIN in captures:
        raise click.UsageError("--scheduler: the cluster's workers open the captures by name, not standard input")
    output, hashes_file, output_all, db = outputs
    refuse_overwriting(
        [("-o", output), ("--hashes", hashes_file), *_all_outputs(output_all), ("--db", db)],
        [*(("the capture", path) for path in captures if path != STDIN), ("the suppressions file", suppress_path)],
    )
    check_user_filter(bpf)


def _captures(arguments: tuple[str, ...]) -> tuple[tuple[str, ...], int]:
    """The capture files the arguments name, in reading order, and how many files were skipped (named on stderr)."""
    expanded = expand_inputs(arguments)
    note_skipped(expanded, "is not a capture")
    if not expanded.paths:
        raise InputError("no capture among the files given")
    return tuple(STDIN if path == "-" else path for path in expanded.paths), len(expanded.skipped)


def _event(session: Any, event: Any, redactor: Redactor) -> dict[str, Any]:
    """An event of the session, its frame numbered in the file that holds it (named when not the session's)."""
    record = event_record(event, redactor)
    file, record["frame"] = session.locate(record["frame"])
    if file != session.file:
        record["file"] = file
    return record


def _session(session: Any, redactor: Redactor) -> dict[str, Any]:
    return {
        "protocol": session.protocol,
        "server": session.server,
        "client": session.client,
        "file": session.file,
        "events": [_event(session, event, redactor) for event in session.events],
        "events_dropped": session.events_dropped,
    }


def _analyze(
    captures: Sequence[str],
    options: AnalysisOptions,
    purpose: str = "",
    *,
    stop: StopFlag | None = None,
    keep: list[Results] | None = None,
    progress: RunProgress | None = None,
) -> Results:
    """Run the pipeline with a progress display, until ``stop`` is requested; each capture that failed gets its
    one-line error. The results are also appended to ``keep``, if given."""
    results = analyze_captures(
        captures,
        options,
        around_file=progress.file if progress is not None else None,
        stop=stop,
        watch=progress.watch if progress is not None else None,
    )
    if keep is not None:
        keep.append(results)
    if progress is not None:
        progress.pause()  # the lines below go to the terminal the display is on
    for _path, reason in results.failed:
        click.echo(f"leakscope: error: {printable(reason)}{purpose}", err=True)
    for warning in results.counters.warnings:
        click.echo(f"leakscope: warning: {printable(warning)}", err=True)
    if results.retried:
        click.echo(f"leakscope: note: {results.retried} of {results.tasks} cluster task(s) ran again", err=True)
    if results.counters.checksum_drops:  # an edited capture, most often, when no one planted decoys
        click.echo(
            f"leakscope: note: {results.counters.checksum_drops} segment(s) with a wrong checksum dropped, as their "
            "receivers drop them (decoys, or never acknowledged); --ignore-checksums reads every segment",
            err=True,
        )
    if results.counters.ack_drops:  # a capture that lost or reordered segments, most often, or planted decoys
        click.echo(
            f"leakscope: note: {results.counters.ack_drops} segment(s) without the ACK flag, or acknowledging bytes "
            "never sent, dropped, as their receivers discard them (decoys, or never acknowledged); "
            "--reassembly first reads every segment",
            err=True,
        )
    return results


def _store_plan(db: str, captures: Sequence[str]) -> dict[str, CaptureDigest]:
    """Before analysis: the capture files the store does not hold yet, by content digest (first name kept).

    Checked up front so that a bad store fails before a long analysis, and the digest is of the bytes analyzed
    next. A file that cannot be read is left to the analysis to report.
    """
    from passive.results.store import FindingStore, StoreError, capture_digest  # with --db only (SQLite)

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
    run: Interruption,
    progress: RunProgress,
) -> None:
    """Merge the run's findings into the store, leaving out capture files (by content) the store already holds.

    An interrupted run merges what it read, but records as merged only the captures it read to their end."""
    with progress.phase("merging into the store"):
        _merge(db, plan, captures, results, options, run)


def _merge(
    db: str,
    plan: dict[str, CaptureDigest],
    captures: Sequence[str],
    results: Results,
    options: AnalysisOptions,
    run: Interruption,
) -> None:
    failed = {path for path, _reason in results.failed}
    fresh = [d for d in plan.values() if d.path not in failed]
    if not fresh:
        return
    if len(fresh) < len(captures):
        # Some files were merged before, failed or were named twice: the store gets a run over the new files alone.
        results = _analyze([d.path for d in fresh], options, " (store)", stop=run.stop)
        if results.partial:
            click.echo(f"leakscope: note: interrupted: nothing merged into {printable(db)}", err=True)
            return
        again = {path for path, _reason in results.failed}
        fresh = [d for d in fresh if d.path not in again]
        if not fresh:
            return
    cut = set(results.not_read) | ({results.stopped_at["file"]} if results.stopped_at else set())
    for digest in fresh:
        if digest.path in cut:
            click.echo(
                f"leakscope: note: {printable(digest.path)} was not read to its end: what was read is merged into "
                f"{printable(db)}, but the file is not recorded as merged (analyzing it again merges it whole)",
                err=True,
            )
    findings = list(results.findings)
    summary = summary_record(results.counts(), findings)
    redactor = Redactor(show_secrets=False, secrets=results.stats.secrets)
    recorded = [d for d in fresh if d.path not in cut]
    from passive.results.store import save_run  # with --db only (SQLite)

    replaced = save_run(db, findings, "analyze", summary, captures=recorded, redactor=redactor)
    if replaced:
        click.echo(
            f"leakscope: warning: {printable(db)}: {replaced} damaged stored record(s) (not UTF-8 or not JSON) "
            "replaced by this run's findings",
            err=True,
        )
