"""What a path given to ``report`` or ``compare`` holds: findings (JSON, JSON lines) or a capture, told apart by
its first bytes, and read through the one findings reader or the one pipeline."""

from __future__ import annotations

from typing import Any

from passive.analysis.pipeline import AnalysisOptions, Results, analyze_captures
from passive.core.errors import InputError
from passive.results.findings_file import read_findings, read_records
from passive.results.records import finding_record
from passive.results.redaction import Redactor

# Bytes looked at to tell a findings file (JSON starts with "{" after optional blanks) from a capture.
SNIFF_BYTES = 64


def is_findings_file(path: str) -> bool:
    """Findings files are JSON text; captures (pcap, pcapng, gzip) start with a binary magic number."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    return head.lstrip()[:1] == b"{"


def capture_records(results: Results, show_secrets: bool = False) -> list[dict[str, Any]]:
    redactor = Redactor(show_secrets, secrets=results.stats.secrets)
    return [finding_record(finding, redactor=redactor) for finding in results.findings]


def load_records(path: str, options: AnalysisOptions | None = None) -> list[dict[str, Any]]:
    """The finding records of one input: read from a findings file, or made by analyzing a capture."""
    if is_findings_file(path):
        return read_records(path)
    results = analyze_captures([path], options)
    if results.failed:
        raise InputError(results.failed[0][1])
    return capture_records(results)


def probe_reports(path: str) -> list[dict[str, Any]]:
    """The per-service probe reports (``probes`` of its summary) of a findings file written by ``leakscope probe``;
    none for a capture or a file without them."""
    if not is_findings_file(path):
        return []
    reports: list[dict[str, Any]] = []
    for summary in read_findings(path).summaries:
        probes = summary.get("probes")
        if isinstance(probes, list):
            reports.extend(p for p in probes if isinstance(p, dict))
    return reports
