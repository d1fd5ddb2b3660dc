"""An output that names a file the run reads, or another output, is a usage error before anything is read or
written: ``analyze day.pcap -o day.pcap`` replaced the capture with its findings, ``--hashes`` the capture or the
table, ``-o store.db --db store.db`` and ``report --db store.db -o store.db`` the store. Real command lines."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "pcaps" / "smtp-auth-plain-swaks.pcap"
USAGE = 2


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "passive", *map(str, args)], capture_output=True, text=True, timeout=120, env=environment
    )


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "day.pcap"
    shutil.copyfile(CAPTURE, path)
    return path


@pytest.mark.parametrize(
    ("option", "named"),
    [("-o", "day.pcap"), ("--hashes", "day.pcap"), ("-o", "link.pcap"), ("--db", "day.pcap")],
    ids=["-o", "--hashes", "-o hard link", "--db"],
)
@pytest.mark.parametrize("given", ["file", "directory"])
def test_an_output_never_replaces_the_capture_it_reads(
    capture: Path, tmp_path: Path, option: str, named: str, given: str
) -> None:
    os.link(capture, tmp_path / "link.pcap")
    before = capture.read_bytes()
    result = run("analyze", tmp_path if given == "directory" else capture, option, tmp_path / named)
    assert result.returncode == USAGE, result.stderr
    assert f"{option} {tmp_path / named} is the capture" in result.stderr
    assert "would replace what it reads" in result.stderr
    assert capture.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day.pcap", "link.pcap"]  # nothing written, no temporary


def test_two_outputs_on_one_file_are_refused(capture: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = run("analyze", capture, "--format", "jsonl", "-o", out, "--hashes", out)
    assert result.returncode == USAGE and "-o and --hashes write the same file" in result.stderr
    result = run("analyze", capture, "-oA", tmp_path / "all", "-o", tmp_path / "all.jsonl")
    assert result.returncode == USAGE and "-o and -oA write the same file" in result.stderr
    assert not out.exists() and not (tmp_path / "all.jsonl").exists()


def test_the_store_is_never_replaced_by_an_output(capture: Path, tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    assert run("analyze", capture, "--db", store).returncode == 0
    result = run("analyze", capture, "--format", "jsonl", "-o", store, "--db", store)
    assert result.returncode == USAGE and "-o and --db write the same file" in result.stderr
    result = run("report", "--db", store, "-o", store)
    assert result.returncode == USAGE and f"-o {store} is the store {store}" in result.stderr
    with sqlite3.connect(store) as connection:  # still the store, its findings there
        assert connection.execute("select count(*) from findings").fetchone()[0] == 3
    assert "Clear-text credentials" in run("findings", "--db", store).stdout


def test_report_and_compare_never_replace_their_inputs(capture: Path, tmp_path: Path) -> None:
    findings = tmp_path / "findings.jsonl"
    assert run("analyze", capture, "--format", "jsonl", "-o", findings).returncode == 0
    kept = findings.read_bytes()
    result = run("report", findings, "-o", findings)
    assert result.returncode == USAGE and "is an input" in result.stderr
    result = run("compare", "--passive", capture, "--active", findings, "-o", findings)
    assert result.returncode == USAGE and "is an input" in result.stderr
    assert findings.read_bytes() == kept


def test_what_was_allowed_still_is(capture: Path, tmp_path: Path) -> None:
    """An earlier run's findings updated in place as the baseline of the next; two outputs to /dev/null; -oA
    beside a capture of the same stem; an output where a link to the capture stood (the link is replaced)."""
    baseline = tmp_path / "baseline.jsonl"
    assert run("analyze", capture, "--format", "jsonl", "-o", baseline).returncode == 0
    result = run("analyze", capture, "--format", "jsonl", "--baseline", baseline, "-o", baseline)
    assert result.returncode == 0, result.stderr
    assert '"baseline": "unchanged"' in baseline.read_text()
    assert run("analyze", capture, "-o", os.devnull, "--hashes", os.devnull).returncode == 0
    assert run("analyze", capture, "-oA", tmp_path / "day").returncode == 0
    (tmp_path / "latest.pcap").symlink_to(capture)
    assert run("analyze", capture, "-o", tmp_path / "latest.pcap").returncode == 0
    assert capture.read_bytes() == CAPTURE.read_bytes()
    assert not (tmp_path / "latest.pcap").is_symlink()


def test_watch_never_appends_its_json_lines_to_its_store(tmp_path: Path) -> None:
    store = tmp_path / "watch.db"
    assert run("analyze", CAPTURE, "--db", store).returncode == 0
    result = run("watch", "-i", "lo", "--db", store, "--jsonl", store, "--duration", "1", "--quiet")
    assert result.returncode == USAGE and f"--db and --jsonl write the same file, {store}" in result.stderr
    with sqlite3.connect(store) as connection:
        assert connection.execute("select count(*) from findings").fetchone()[0] == 3
