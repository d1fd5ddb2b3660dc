"""Each finding kind is declared once (passive/findings/kinds.py) and every consumer reads that declaration: a kind
or a field that one of them lacks fails here."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from passive.analysis.detectors import detector_classes
from passive.analysis.pipeline import analyze_captures
from passive.cli.dashboard import entry_line
from passive.cli.tables import render_tables
from passive.findings.kinds import COMMON_FIELDS, KINDS
from passive.findings.model import EvidenceRecord, Finding, FindingType, Severity
from passive.live.monitor import finding_summary
from passive.results.compare import COMPARED, compare, from_records
from passive.results.records import finding_record
from passive.results.report import build_report, render_html, render_markdown
from passive.results.store import FindingStore

ROOT = Path(__file__).resolve().parents[1]
PCAPS = sorted((ROOT / "pcaps").glob("*.pcap"))
MARK = "Kx9q"  # a value no kind's fixed text contains, to find each field where it is shown


def _finding(kind: FindingType, source: str = "passive") -> Finding:
    """A finding of ``kind`` with every declared field set to a recognisable value."""
    finding = Finding(kind, "smtp", "192.0.2.1:25", Severity.MEDIUM, source=source)
    for field in KINDS[kind].fields:
        value = f"{MARK}-{field.name}"
        finding.fields[field.name] = [value] if field.many else value
    finding.fields["accepted"] = True  # an open relay that relays (the report words refusals differently)
    finding.seen(1.8e9, "198.51.100.7:40000")
    finding.add_evidence(EvidenceRecord("t.pcap", 4, 1.8e9, "server", f"250 {MARK}-evidence"))
    return finding


def test_every_kind_has_one_detector() -> None:
    assert sorted(cls.KIND for cls in detector_classes()) == sorted(FindingType)


@pytest.mark.parametrize("kind", list(FindingType))
def test_every_kind_is_declared_with_documented_fields(kind: FindingType) -> None:
    declaration = KINDS[kind]
    assert declaration.type is kind and declaration.title and declaration.description
    assert declaration.remediation and declaration.verification and declaration.severity_rules
    names = [f.name for f in declaration.fields]
    assert len(names) == len(set(names)) and all(f.doc for f in declaration.fields)
    assert not set(names) & {f.name for f in COMMON_FIELDS}, "a kind redeclares a common field"


@pytest.mark.parametrize("kind", list(FindingType))
def test_every_consumer_shows_every_kind(kind: FindingType, tmp_path: Path) -> None:
    declaration = KINDS[kind]
    record = finding_record(_finding(kind), show_secrets=True)
    assert record["remediation"] == declaration.remediation and record["reference"] == declaration.reference("smtp")

    stream = io.StringIO()
    render_tables(Console(file=stream, width=200, color_system=None), [record], {})
    table = stream.getvalue()
    assert f"{declaration.title} ({kind})" in table
    for column in declaration.columns:
        shown = "yes" if record[column] is True else f"{MARK}-{column}"  # lists are shown joined
        if column in (f.name for f in declaration.fields):
            assert f" {column} " in table and shown in table, f"table lacks {column}"

    report = build_report([record], redact=False)
    html, markdown = render_html(report), render_markdown(report)
    assert declaration.title_of(record) in html and declaration.title_of(record) in markdown

    summary = finding_summary(record)
    assert MARK in summary and summary == declaration.summary(record)

    if declaration.compared:
        active = finding_record(_finding(kind, "active"), show_secrets=True)
        document = compare([from_records("passive", [record]), from_records("active", [active])])
        compared = {(row["finding"], row["field"]) for server in document["servers"] for row in server["fields"]}
        assert {(str(kind), name) for name in COMPARED[str(kind)]} == compared

    with FindingStore(tmp_path / "s.db") as store:
        writer = store.writer("test")
        writer.write(_finding(kind))
        writer.finish()
        [stored] = store.query()
    assert stored["type"] == kind and all(stored.get(f.name) is not None for f in declaration.fields)


def test_dashboard_line_names_the_kind() -> None:
    from passive.live.monitor import FeedEntry

    for kind in FindingType:
        record = finding_record(_finding(kind))
        entry = FeedEntry(str(kind), record["server"], "smtp", "medium", finding_summary(record), 1, 1.8e9, True)
        assert str(kind) in entry_line(entry)


def test_schema_document_is_written_from_the_declarations() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "passive.findings.schema_doc", "--check", str(ROOT / "docs" / "schema.md")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _declared(kind: str) -> set[str]:
    return {f.name for f in COMMON_FIELDS} | {f.name for f in KINDS[FindingType(kind)].fields}


def test_every_field_the_analysis_writes_is_declared() -> None:
    """Run the analysis over every shipped capture: no record carries a field its kind does not document."""
    results = analyze_captures([str(p) for p in PCAPS])
    seen: dict[str, set[str]] = {}
    for finding in results.findings:
        record: dict[str, Any] = finding_record(finding)
        undeclared = set(record) - _declared(record["type"])
        assert not undeclared, f"{record['type']} writes undeclared fields {sorted(undeclared)}"
        seen.setdefault(record["type"], set()).update(record)
    assert set(seen) == {str(kind) for kind in FindingType}, "the shipped captures show every kind"
