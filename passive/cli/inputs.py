"""What a path given to ``report`` or ``compare`` holds: findings (JSON, JSON lines) or a capture, told apart by
its first bytes, and read through the one findings reader or the one pipeline."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

import click

from passive.analysis.pipeline import AnalysisOptions, Results, analyze_captures
from passive.capture.paths import Expanded, expand_inputs, is_capture_file
from passive.cli.interrupt import Interruption
from passive.core.errors import InputError
from passive.core.text import printable
from passive.results.findings_file import MAX_DOCUMENT, FindingsInput, read_findings
from passive.results.records import finding_record
from passive.results.redaction import Redactor

# Bytes looked at to tell a findings file (JSON starts with "{" after optional blanks) from a capture.
SNIFF_BYTES = 64
# Skipped files named one by one on stderr; past this, a count (the summary has the total as inputs_skipped).
MAX_SKIPPED_NAMED = 10


@dataclass(frozen=True)
class Input:
    """One path given to ``report`` or ``compare``, looked at: findings or a capture."""

    path: str
    findings: bool
    data: bytes | None = None  # a findings file read from a pipe or FIFO, whole: it cannot be read a second time


def is_findings_head(head: bytes) -> bool:
    """Whether a file's first bytes are a findings file's: JSON text, an object past optional blanks."""
    return head.lstrip()[:1] == b"{"


def sniff_input(path: str) -> Input:
    """Findings files are JSON text; captures (pcap, pcapng, gzip) start with a binary magic number.

    A regular file is only peeked at. A pipe (``<(leakscope analyze ... --format jsonl)``) or FIFO holding findings
    is read whole here, up to the size a findings document may have; a capture from a pipe is refused: this
    command would have to read it a second time (``leakscope analyze`` reads captures from pipes).
    """
    try:
        with open(path, "rb") as stream:
            regular = stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
            head = stream.read(SNIFF_BYTES)
            findings = is_findings_head(head)
            if regular:
                return Input(path, findings)
            if not findings:
                raise InputError(
                    f"{path}: not findings, and a capture is read from a file only here; analyze it with "
                    "leakscope analyze --format jsonl and give that output instead"
                )
            rest = stream.read(MAX_DOCUMENT + 1 - len(head))
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    if len(head) + len(rest) > MAX_DOCUMENT:
        raise InputError(f"{path}: findings larger than {MAX_DOCUMENT // 2**20} MiB")
    return Input(path, True, head + rest)


def note_skipped(expanded: Expanded, reason: str) -> None:
    """Name on stderr the files a walk or a pattern passed over (``reason``: why, unless it has its own)."""
    for skipped in expanded.skipped[:MAX_SKIPPED_NAMED]:
        why = expanded.reasons.get(skipped, reason)
        click.echo(f"leakscope: note: {printable(skipped)} {printable(why)}; skipped", err=True)
    if len(expanded.skipped) > MAX_SKIPPED_NAMED:
        click.echo(f"leakscope: note: {len(expanded.skipped) - MAX_SKIPPED_NAMED} more files skipped", err=True)


def is_report_input(path: str) -> bool:
    """What a walk or a pattern takes for ``report``: a capture, or a findings file (a regular file whose first
    byte past blanks opens a JSON object); a file that cannot be read is taken, for its reader to report."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # a FIFO or socket in a walked directory would block or fail: never opened
        with open(path, "rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except OSError:
        return True
    return is_findings_head(head) or is_capture_file(path)


def report_sources(arguments: tuple[str, ...]) -> list[str]:
    """The findings files and captures ``report``'s arguments name: files as given, directories walked and patterns
    matched as ``analyze`` walks and matches them (captures and findings files taken, others named and skipped)."""
    expanded = expand_inputs(arguments, accept=is_report_input)
    note_skipped(expanded, "is neither a capture nor findings")
    if not expanded.paths:
        raise InputError("no capture nor findings file among the files given")
    return expanded.paths


def capture_records(results: Results, show_secrets: bool = False) -> list[dict[str, Any]]:
    redactor = Redactor(show_secrets, secrets=results.stats.secrets)
    return [finding_record(finding, redactor=redactor) for finding in results.findings]


def load_input(path: str, options: AnalysisOptions | None = None, run: Interruption | None = None) -> FindingsInput:
    """The records of one input, read once: from a findings file, or made by analyzing a capture (until ``run``'s
    stop is requested, if given)."""
    given = sniff_input(path)
    if given.findings:
        return read_findings(path, data=given.data)
    results = analyze_captures([path], options, stop=run.stop if run is not None else None)
    if run is not None:
        run.results.append(results)
    if results.failed:
        raise InputError(results.failed[0][1])
    return FindingsInput(records=capture_records(results))


def load_records(
    path: str, options: AnalysisOptions | None = None, run: Interruption | None = None
) -> list[dict[str, Any]]:
    """The finding records of one input (its summary records left out)."""
    return load_input(path, options, run).records


def probe_reports(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-service probe reports (``probes`` of the summary ``leakscope probe`` writes) among summaries."""
    return [p for s in summaries if isinstance(s.get("probes"), list) for p in s["probes"] if isinstance(p, dict)]
