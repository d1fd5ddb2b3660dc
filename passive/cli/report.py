"""``leakscope report``: findings (JSON lines, a JSON document, captures analyzed on the spot, or a store) as a
stakeholder report in HTML or Markdown."""

from __future__ import annotations

import click

from passive.analysis.pipeline import analyze_captures
from passive.cli.common import write_text
from passive.cli.errors import EXIT_INPUT
from passive.cli.findings import warn_skipped
from passive.cli.inputs import capture_records, sniff_input
from passive.core.text import printable
from passive.results.findings_file import FindingsInput, read_findings
from passive.results.records import summary_record
from passive.results.report import build_report, render_html, render_markdown
from passive.results.store import FindingStore


def _add_captures(paths: list[str], inputs: FindingsInput, show_secrets: bool) -> int:
    """Run the passive analysis over captures, as ``leakscope analyze`` does, and add its records; returns how
    many captures could not be read."""
    if not paths:
        return 0
    results = analyze_captures(paths)
    for _path, reason in results.failed:
        click.echo(f"leakscope: error: {printable(reason)}", err=True)
    for warning in results.counters.warnings:
        click.echo(f"leakscope: warning: {printable(warning)}", err=True)
    inputs.records.extend(capture_records(results, show_secrets))
    inputs.summaries.append(summary_record(results.counts(), list(results.findings)))
    return len(results.failed)


def read_store(path: str, inputs: FindingsInput) -> None:
    """Every finding of a findings store, merged across the runs that wrote it."""
    with FindingStore(path, create=False) as store:
        for index, record in enumerate(store.query()):
            inputs.add(record, f"{path} finding {index + 1}")
        for run in store.runs():
            if isinstance(run.get("summary"), dict):
                inputs.add({**run["summary"], "type": "summary"}, f"{path} run {run.get('id')}")
        warn_skipped(store)


def _format_for(output: str | None, chosen: str | None) -> str:
    if chosen:
        return chosen
    return "md" if output and output.lower().endswith((".md", ".markdown")) else "html"


@click.command()
@click.argument("sources", nargs=-1, type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=str),
    help="Also report every finding of this findings store (written by --db of analyze or watch).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write the report to FILE.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["html", "md"]),
    help="HTML page or Markdown (default: from the output file name, else html).",
)
@click.option("--title", default="Mail traffic exposure report", show_default=True, help="The report's title.")
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
    redact: bool,
) -> None:
    """Write a stakeholder report from findings (JSON lines or JSON from 'leakscope analyze'), captures (analyzed
    here) or a findings store (--db).

    The HTML report is one self-contained page (no script, no external request) that prints well.
    """
    if not sources and not db_path:
        raise click.UsageError("give findings files, captures, or --db PATH")
    inputs = FindingsInput()
    if db_path:
        read_store(db_path, inputs)
    given = [sniff_input(path) for path in sources]
    captures = [source.path for source in given if not source.findings]
    for source in given:
        if source.findings:
            read_findings(source.path, inputs, data=source.data)
    failed = _add_captures(captures, inputs, show_secrets=not redact)
    if failed and failed == len(sources) and not db_path:
        raise SystemExit(EXIT_INPUT)
    model = build_report(inputs.records, inputs.summaries, title=title, redact=redact)
    chosen = _format_for(output, output_format)
    text = render_html(model) if chosen == "html" else render_markdown(model)
    write_text(output, text)
    if failed:
        raise SystemExit(EXIT_INPUT)
