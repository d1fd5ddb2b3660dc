"""``leakscope report``: findings (JSON lines, a JSON document, or captures analyzed on the spot) as a
stakeholder report in HTML or Markdown."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import click

from passive.analysis.classify import mail_capture_options
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.capture import CaptureCounters, CaptureError, analyze_file
from passive.cli.common import UserError
from passive.core.text import printable
from passive.results.records import finding_record, summary_record
from passive.results.report import build_report, render_html, render_markdown

# Bounds on a findings file: it is input like any other.
MAX_LINE = 16 * 1024 * 1024
MAX_RECORDS = 100_000
MAX_DOCUMENT = 256 * 1024 * 1024


@dataclass
class Inputs:
    records: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    failed: int = 0


def _is_json(path: str) -> bool:
    """Findings files start with '{'; captures start with a binary magic number."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(64)
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    return head.lstrip()[:1] == b"{"


def _add(inputs: Inputs, record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise UserError(f"{where}: not a finding record (a JSON object)")
    if len(inputs.records) + len(inputs.summaries) >= MAX_RECORDS:
        raise UserError(f"{where}: more than {MAX_RECORDS} records")
    (inputs.summaries if record.get("type") == "summary" else inputs.records).append(record)


def read_findings(path: str, inputs: Inputs) -> None:
    """JSON lines as ``leakscope analyze --format jsonl`` writes them, or its ``--format json`` document."""
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            first = stream.readline(MAX_LINE)
            try:
                record = json.loads(first)
            except ValueError:
                record = None
            if record is None:  # an indented JSON document, not one record per line
                if os.path.getsize(path) > MAX_DOCUMENT:
                    raise UserError(f"{path}: JSON document larger than {MAX_DOCUMENT // 2**20} MiB")
                _read_document(path, first + stream.read(), inputs)
                return
            _add(inputs, record, f"{path} line 1")
            for number, line in enumerate(iter(lambda: stream.readline(MAX_LINE), ""), start=2):
                if not line.strip():
                    continue
                if not line.endswith("\n") and len(line) >= MAX_LINE:
                    raise UserError(f"{path} line {number}: longer than {MAX_LINE // 2**20} MiB")
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise UserError(f"{path} line {number}: not JSON ({error.msg})") from None
                _add(inputs, record, f"{path} line {number}")
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    except RecursionError:
        raise UserError(f"{path}: JSON nested too deeply") from None


def _read_document(path: str, text: str, inputs: Inputs) -> None:
    try:
        document = json.loads(text)
    except ValueError as error:
        raise UserError(f"{path}: neither JSON lines nor a JSON document ({error.msg})") from None
    findings = document.get("findings") if isinstance(document, dict) else None
    if not isinstance(findings, list):
        raise UserError(f"{path}: a JSON document without a findings list")
    for index, record in enumerate(findings):
        _add(inputs, record, f"{path} finding {index + 1}")
    if isinstance(document.get("summary"), dict):
        _add(inputs, {**document["summary"], "type": "summary"}, f"{path} summary")


def analyze_captures(paths: list[str], inputs: Inputs, show_secrets: bool) -> None:
    """Run the passive analysis over captures, as ``leakscope analyze`` does, and add its records."""
    if not paths:
        return
    analysis = Analysis(AnalysisOptions())
    counters = CaptureCounters()
    failed = 0
    for path in paths:
        analysis.file = path
        try:
            analyze_file(path, analysis.handler_factory, mail_capture_options(), counters=counters)
        except CaptureError as error:
            failed += 1
            click.echo(f"leakscope: error: {printable(error)}", err=True)
    for warning in counters.warnings:
        click.echo(f"leakscope: warning: {printable(warning)}", err=True)
    findings = list(analysis.findings)
    inputs.records.extend(finding_record(finding, show_secrets) for finding in findings)
    counter_fields = counters.as_dict()
    counter_fields.pop("warnings", None)
    counts = {**counter_fields, **analysis.stats.to_dict(), "captures": len(paths) - failed, "captures_failed": failed}
    inputs.summaries.append(summary_record(counts, findings))
    inputs.failed += failed


def read_store(path: str, inputs: Inputs) -> None:
    """Every finding of a findings store (``passive/store.py``), merged across the runs that wrote it."""
    from passive.results.store import FindingStore, StoreError

    try:
        with FindingStore(path, create=False) as store:
            for index, record in enumerate(store.query()):
                _add(inputs, record, f"{path} finding {index + 1}")
            for run in store.runs():
                if isinstance(run.get("summary"), dict):
                    _add(inputs, {**run["summary"], "type": "summary"}, f"{path} run {run.get('id')}")
    except StoreError as error:
        raise UserError(str(error)) from None


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
    inputs = Inputs()
    if db_path:
        read_store(db_path, inputs)
    captures = [path for path in sources if not _is_json(path)]
    for path in sources:
        if path not in captures:
            read_findings(path, inputs)
    analyze_captures(captures, inputs, show_secrets=not redact)
    if inputs.failed and inputs.failed == len(sources) and not db_path:
        raise SystemExit(1)
    model = build_report(inputs.records, inputs.summaries, title=title, redact=redact)
    chosen = _format_for(output, output_format)
    text = render_html(model) if chosen == "html" else render_markdown(model)
    if output:
        try:
            with open(output, "w", encoding="utf-8", errors="backslashreplace") as stream:
                stream.write(text)
        except OSError as error:
            raise UserError(f"cannot write {output}: {error.strerror or error}") from None
    else:
        click.echo(text, nl=False)
    if inputs.failed:
        raise SystemExit(1)
