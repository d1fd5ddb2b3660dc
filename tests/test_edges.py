"""Edges of the command line: captures from pipes and FIFOs, a probe of port 0, and findings files of any shape
through ``report`` and ``compare``."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
import threading
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from passive.capture.pcapfile import PacketReader
from passive.cli.compare import render_comparison
from passive.findings.kinds import KINDS
from passive.probe.targets import TargetError, parse_target
from passive.results.compare import compare, from_records
from passive.results.jsonio import dumps_indented
from passive.results.report import build_report, render_html, render_markdown
from tests.helpers_capture import pcapng_bytes_tsresol

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
CAPTURE = PCAPS / "imap-ntlm-success-curl.pcap"
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
ENVIRONMENT = {**os.environ, "PYTHONPATH": str(ROOT)}


def leakscope(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LEAKSCOPE, *argv], capture_output=True, text=True, env=ENVIRONMENT, timeout=timeout)


def in_bash(script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``script`` run by bash, where ``leakscope`` is this copy (process substitution needs bash)."""
    command = f"leakscope() {{ {shlex.join(LEAKSCOPE)} \"$@\"; }}; {script}"
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=ENVIRONMENT, timeout=timeout)


def _facts(jsonl: str) -> list[tuple[Any, ...]]:
    """What the findings say, without where they came from (the file name differs)."""
    records = [json.loads(line) for line in jsonl.splitlines()]
    return sorted((r["type"], r.get("server"), r.get("count"), r.get("severity")) for r in records[:-1])


@pytest.fixture(scope="module")
def from_file() -> list[tuple[Any, ...]]:
    result = leakscope("analyze", "--format", "jsonl", str(CAPTURE))
    assert result.returncode == 0, result.stderr
    return _facts(result.stdout)


# -- captures from pipes and FIFOs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("feed", ["cat", "gzip -c"], ids=["plain", "gzip"])
def test_process_substitution_is_read_as_a_stream(feed: str, from_file: list[tuple[Any, ...]]) -> None:
    result = in_bash(f"leakscope analyze --format jsonl <({feed} {shlex.quote(str(CAPTURE))})")
    assert result.returncode == 0, result.stderr
    assert _facts(result.stdout) == from_file


def test_pcapng_from_a_pipe_with_a_filter(tmp_path: Path, from_file: list[tuple[Any, ...]]) -> None:
    packets = list(PacketReader(CAPTURE))
    pcapng = tmp_path / "capture.pcapng"
    pcapng.write_bytes(pcapng_bytes_tsresol([packets[0].linktype], [(0, p.ts, p.data) for p in packets]))
    result = in_bash(f"cat {shlex.quote(str(pcapng))} | leakscope analyze --format jsonl --filter 'tcp' /dev/stdin")
    assert result.returncode == 0, result.stderr
    assert _facts(result.stdout) == from_file


def test_fifo_is_read_as_a_stream(tmp_path: Path, from_file: list[tuple[Any, ...]]) -> None:
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    data = CAPTURE.read_bytes()

    def writer() -> None:
        with open(fifo, "wb") as stream:  # blocks until leakscope opens the FIFO, as tcpdump -w does
            stream.write(data)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    result = leakscope("analyze", "--format", "jsonl", str(fifo), timeout=60)
    thread.join(10)
    assert result.returncode == 0, result.stderr
    assert _facts(result.stdout) == from_file


def test_a_pipe_with_db_is_refused_before_the_store_is_created(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    result = in_bash(f"leakscope analyze --db {shlex.quote(str(db))} <(cat {shlex.quote(str(CAPTURE))})")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("leakscope: error: /dev/fd/") and "cannot be merged into a store" in line
    assert not db.exists()


def test_findings_from_a_pipe_go_to_report_and_compare(tmp_path: Path) -> None:
    capture = shlex.quote(str(CAPTURE))
    report = tmp_path / "report.md"
    result = in_bash(f"leakscope report <(leakscope analyze --format jsonl {capture}) -o {shlex.quote(str(report))}")
    assert result.returncode == 0, result.stderr
    assert "NTLM" in report.read_text()
    produce = f"<(leakscope analyze --format jsonl {capture})"
    result = in_bash(f"leakscope compare --passive {produce} --active {produce} --format json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"] == {"agree": 12}
    result = in_bash(f"leakscope report <(cat {capture}) -o /dev/null")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "leakscope analyze --format jsonl" in result.stderr


# -- probe port 0 ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["smtp://127.0.0.1:0", "imaps://[::1]:0", "127.0.0.1:0"])
def test_port_zero_is_a_usage_error(target: str) -> None:
    with pytest.raises(TargetError, match="bad port"):
        parse_target(target)
    result = leakscope("probe", target)
    assert result.returncode == 2 and "bad port" in result.stderr and "Traceback" not in result.stderr
    assert parse_target("smtp://127.0.0.1")[0].port == 25


# -- findings files of any shape ----------------------------------------------------------------------------------

FIELDS = sorted(
    {field.name for kind in KINDS.values() for field in kind.fields}
    | {"severity", "source", "protocol", "count", "first_seen", "last_seen", "client", "clients", "users"}
    | {"workstations", "remediation", "verification", "evidence_dropped", "details_dropped", "schema_version"}
)
HOSTILE = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999+00:00",
    "2026-01-01T00:00:00Z",
    "",
    "\u202eexe.txt",
    "con\u200btoso",
    "\x1b]52;c;eA==\x07",
    "NaN",
    "10.0.0.1:25",
    "[::1]:x",
    "x" * 700,
    "high",
    "active",
]
SCALARS = st.one_of(
    st.sampled_from(HOSTILE),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63, 253402300800, -62135596801, 1e308, -1e308]),
    st.floats(),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), inner),
    max_leaves=6,
)
OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
TIMES = st.sampled_from(HOSTILE[:4]) | st.datetimes(timezones=OFFSETS).map(lambda moment: moment.isoformat()) | VALUES
TYPES = st.sampled_from([str(kind) for kind in KINDS] + ["summary"]) | VALUES
SERVERS = st.sampled_from(["10.0.0.1:25", "[2001:db8::1]:143", "host:1"]) | VALUES
RECORDS = st.builds(
    lambda fields, base: {**fields, **base},
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8),
    st.fixed_dictionaries(
        {"type": TYPES, "server": SERVERS},
        optional={
            "first_seen": TIMES,
            "last_seen": TIMES,
            "evidence": st.lists(st.fixed_dictionaries({"time": TIMES}, optional={"line": VALUES}), max_size=3),
            "details": st.lists(st.dictionaries(st.sampled_from(["time", "user", "domain"]), TIMES), max_size=3),
        },
    ),
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.lists(RECORDS, max_size=6), st.lists(RECORDS, max_size=4))
def test_report_and_compare_take_records_of_any_shape(passive: list[dict], active: list[dict]) -> None:
    for record in active:
        record["source"] = "active"
    model = build_report(passive + active, title="t")
    for text in (render_html(model), render_markdown(model)):
        text.encode("utf-8")
    document = compare([from_records("passive", passive), from_records("active", active)])
    dumps_indented(document).encode("utf-8")
    render_comparison(Console(file=io.StringIO(), width=120), document)


def test_crafted_findings_files_never_traceback(tmp_path: Path) -> None:
    good = leakscope("analyze", "--format", "jsonl", str(CAPTURE)).stdout.splitlines()
    first = json.loads(good[0])
    crafted = {
        "far-past.jsonl": [{**first, "first_seen": "0001-01-01T00:00:00+14:00"}],
        "far-future.jsonl": [{**first, "last_seen": "9999-12-31T23:59:59-14:00"}],
        "type-list.jsonl": [{**json.loads(line), "type": [json.loads(line)["type"]]} for line in good],
        "type-object.jsonl": [{**first, "type": {"ntlm-info": 1}}, {**first, "server": ["x"]}],
    }
    for name, records in crafted.items():
        path = tmp_path / name
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
        for argv in (
            ["report", str(path), "-o", str(tmp_path / "r.html")],
            ["report", str(path), "-o", str(tmp_path / "r.md")],
            ["compare", "--passive", str(path), "--active", str(path)],
            ["compare", "--passive", str(path), "--active", str(path), "--format", "json"],
        ):
            result = leakscope(*argv)
            assert result.returncode == 0 and "Traceback" not in result.stderr, (name, argv, result.stderr)
