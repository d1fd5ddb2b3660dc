"""Fuzz harnesses for what leakscope reads back: findings files (through ``report`` and ``compare``) and records
in the store (through its reader and a merge). Each takes one input (bytes) and raises only when leakscope
misbehaves; the only exception swallowed is the one-line :class:`~passive.core.errors.InputError` of the findings
reader."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

from rich.console import Console

from passive.cli.compare import render_comparison
from passive.core.errors import InputError
from passive.core.text import UNSAFE_BEYOND_C0
from passive.findings.model import EvidenceRecord, Finding, FindingType, Severity
from passive.results.compare import compare, from_records
from passive.results.findings_file import read_findings
from passive.results.jsonio import dumps_indented
from passive.results.report import build_report, render_html, render_markdown
from passive.results.store import FindingStore, identity_of

_SCRATCH = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
# What must never reach a report raw: every character printable() escapes, but the line breaks and tabs of the
# documents' own layout.
_UNSAFE_IN_REPORT = re.compile(f"[\x00-\x08\x0b-\x1f{UNSAFE_BEYOND_C0}]")


def findings_file(data: bytes) -> None:
    """The bytes as a findings file, through the one reader, the report (HTML and Markdown) and the comparison."""
    with tempfile.NamedTemporaryFile(dir=_SCRATCH, suffix=".jsonl") as handle:
        handle.write(data)
        handle.flush()
        try:
            found = read_findings(handle.name)
        except InputError as error:
            assert "\n" not in str(error), "InputError message spans several lines"
            return
    records = found.records
    model = build_report(records, found.summaries, redact=len(data) % 2 == 0)
    for text in (render_html(model), render_markdown(model)):
        bad = _UNSAFE_IN_REPORT.search(text)
        assert bad is None, f"unescaped {bad.group()!r} in a report"
        text.encode("utf-8")
    active = [{**record, "source": "active"} for record in records[len(records) // 2 :]]
    document = compare([from_records("passive", records), from_records("active", active)])
    json.loads(dumps_indented(document))
    render_comparison(Console(file=io.StringIO(), width=100), document)


def _finding() -> Finding:
    finding = Finding(FindingType.NTLM_INFO, "smtp", "192.0.2.1:25", Severity.LOW)
    finding.fields.update(netbios_computer="EXCH01", users=["CORP\\jdoe"])
    finding.seen(1_700_000_000.0, "198.51.100.2:40000")
    finding.add_evidence(EvidenceRecord("fuzz", 1, 1_700_000_000.0, "server", "334 TlRMTVNTUAACAAAA"))
    return finding


def store_record(data: bytes) -> None:
    """The bytes as the record column of a stored finding: reading skips and counts it, a merge replaces it."""
    finding = _finding()
    with FindingStore(":memory:") as store:
        store._execute(
            "INSERT INTO findings (type, server, key, source, protocol, severity, count, first_seen, last_seen, "
            "record, updated_at) VALUES (?, ?, ?, ?, 'smtp', 'low', 1, 0, 0, CAST(? AS TEXT), 0)",
            (*identity_of(finding), data),
        )
        store.commit()
        records = store.query()
        assert len(records) + store.skipped == 1, "a stored record neither read nor counted"
        for record in records:
            assert isinstance(record.get("type"), str) and isinstance(record.get("server"), str)
        writer = store.writer("fuzz")
        merged, _new = writer.write(finding)
        writer.finish()
        assert merged["netbios_computer"] == "EXCH01"
        [after] = store.query()
        assert after["count"] == merged["count"]
