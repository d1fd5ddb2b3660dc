"""``leakscope report``: findings (JSON lines, a JSON document, captures analyzed on the spot, or a store) as a
stakeholder report in HTML or Markdown."""

from __future__ import annotations

import os
import stat

import click

from passive.analysis.pipeline import analyze_captures
from passive.cli.common import refuse_overwriting, write_text
from passive.cli.errors import EXIT_INPUT
from passive.cli.findings import warn_skipped
from passive.cli.inputs import capture_records, report_sources, sniff_input
from passive.cli.interrupt import Interruption, interruptible
from passive.cli.progress import RunProgress
from passive.core.errors import StoreError
from passive.core.text import printable
from passive.results.findings_file import FindingsInput, read_findings
from passive.results.nessus import read_nessus
from passive.results.nessus_verify import verify
from passive.results.records import summary_record
from passive.results.report import build_report, render_html, render_markdown
from passive.results.report.model import InputFile
from passive.results.store import FindingStore, capture_digest


def _add_captures(
    paths: list[str], inputs: FindingsInput, show_secrets: bool, run: Interruption, progress: RunProgress
) -> int:
    """Run the passive analysis over captures, as ``leakscope analyze`` does (until ``run``'s stop is requested),
    and add its records; returns how many captures could not be read."""
    if not paths:
        return 0
    results = analyze_captures(paths, stop=run.stop, around_file=progress.file, watch=progress.watch)
    run.results.append(results)
    progress.pause()  # the lines below go to the terminal the display is on
    for _path, reason in results.failed:
        click.echo(f"leakscope: error: {printable(reason)}", err=True)
    for warning in results.counters.warnings:
        click.echo(f"leakscope: warning: {printable(warning)}", err=True)
    inputs.records.extend(capture_records(results, show_secrets))
    inputs.summaries.append(summary_record(results.counts(), list(results.findings)))
    return len(results.failed)


def read_store(path: str, inputs: FindingsInput) -> list[InputFile]:
    """Every finding of a findings store, merged across the runs that wrote it; returns the capture files the store
    records (by content digest) as the report's inputs."""
    with FindingStore(path, create=False) as store:
        for index, record in enumerate(store.query()):
            inputs.add(record, f"{path} finding {index + 1}")
        for run in store.runs():
            if isinstance(run.get("summary"), dict):
                inputs.add({**run["summary"], "type": "summary"}, f"{path} run {run.get('id')}")
        warn_skipped(store)
        captures = store.captures()
    listed = [InputFile(path, "store", None, None)]
    listed += [InputFile(printable(c["path"]), "capture in the store", c["sha256"], c["size"]) for c in captures]
    return listed


def _input(path: str, kind: str) -> InputFile:
    """An input file and its SHA-256, as the store would record it (none for a file that cannot be read, or for a
    pipe, which was read once already)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return InputFile(printable(path), f"{kind} (a pipe: no digest)", None, None)
        digest = capture_digest(path)
    except (OSError, StoreError):
        return InputFile(printable(path), f"{kind} (unreadable)", None, None)
    return InputFile(printable(path), kind, digest.sha256, digest.size)


def _format_for(output: str | None, chosen: str | None) -> str:
    if chosen:
        return chosen
    return "md" if output and output.lower().endswith((".md", ".markdown")) else "html"


@click.command()
@click.argument("sources", nargs=-1, type=click.Path(path_type=str))
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=str),
    help="Also report every finding of this findings store (written by --db of analyze or watch).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="Write the report to FILE (- for standard output).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["html", "md"]),
    help="HTML page or Markdown (default: from the output file name, else html).",
)
@click.option("--title", default="Mail traffic exposure report", show_default=True, help="The report's title.")
@click.option(
    "--nessus",
    "nessus_inputs",
    multiple=True,
    metavar="FILE",
    help="Nessus v2 export (.nessus): a section verifies each mail- and NTLM-related plugin result against the "
    "findings' packet and probe evidence.",
)
@click.option(
    "--redact/--no-redact",
    default=True,
    show_default=True,
    help="Mask user names partly and never show passwords, hashes or SASL responses.",
)
def report(
    sources: tuple[str, ...],
    db_path: str | None,
    output: str | None,
    output_format: str | None,
    title: str,
    nessus_inputs: tuple[str, ...],
    redact: bool,
) -> None:
    """Write a stakeholder report from findings (JSON lines or JSON from 'leakscope analyze'), captures (analyzed
    here, as 'leakscope analyze' reads them) or a findings store (--db).

    SOURCES are files, directories (walked: captures and findings files are read, other files skipped) and quoted
    glob patterns ('archive/**/*.pcap.gz').

    The HTML report is one self-contained page (no script, no external request) that prints well.
    """
    if not sources and not db_path:
        raise click.UsageError("give findings files, captures, or --db PATH")
    paths = report_sources(sources) if sources else []
    refuse_overwriting(
        [("-o", output)],
        [*(("an input", path) for path in [*paths, *nessus_inputs]), ("the store", db_path)],
    )
    inputs = FindingsInput()
    listed = read_store(db_path, inputs) if db_path else []
    given = [sniff_input(path) for path in paths]
    captures = [source.path for source in given if not source.findings]
    for source in given:
        if source.findings:
            read_findings(source.path, inputs, data=source.data)
    with interruptible() as run, RunProgress(captures, run.stop) as progress:
        failed = _add_captures(captures, inputs, not redact, run, progress)
        if failed and failed == len(paths) and not db_path:
            raise SystemExit(EXIT_INPUT)
        nessus = None
        if nessus_inputs:
            items = [item for path in nessus_inputs for item in read_nessus(path)]
            probes = [p for s in inputs.summaries if isinstance(s.get("probes"), list) for p in s["probes"]]
            nessus = verify(items, inputs.records, [p for p in probes if isinstance(p, dict)])
        with progress.phase("rendering the report"):
            listed += [_input(path, "capture" if path in captures else "findings") for path in paths]
            model = build_report(
                inputs.records, inputs.summaries, title=title, redact=redact, nessus=nessus, inputs=listed
            )
            text = render_html(model) if _format_for(output, output_format) == "html" else render_markdown(model)
        if not output or output == "-":
            progress.pause_for_stdout()
        write_text(output, text)
        if failed:
            raise SystemExit(EXIT_INPUT)
