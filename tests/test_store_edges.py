"""The store under hostile conditions: many writers at once, a damaged file, file names that are not UTF-8,
hostile text, and who may read it."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import passive.results.store.store as store_module
from passive.cli.main import main
from passive.findings.model import EvidenceRecord, Finding, FindingType, Severity
from passive.results.store import FindingStore, StoreError, save_run

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
ENVIRONMENT = {**os.environ, "PYTHONPATH": str(ROOT)}
T0 = 1_800_000_000.0


def _finding(server: str = "10.0.0.1:25", computer: str = "EXCH19", times: int = 1) -> Finding:
    finding = Finding(FindingType.NTLM_INFO, "smtp", server, Severity.LOW)
    finding.fields.update(netbios_computer=computer, users=["CONTOSO\\alice"], workstations=["WS1"])
    for index in range(times):
        finding.seen(T0 + index, f"10.0.0.9:{4000 + index}")
        finding.add_evidence(EvidenceRecord("x.pcap", index + 1, T0 + index, "server", f"334 challenge {index}"))
    return finding


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- many writers ----------------------------------------------------------------------------------------------


def test_store_opens_while_another_process_is_creating_it(tmp_path: Path) -> None:
    """Switching a new store to WAL while another connection holds its write lock fails at once in SQLite (no busy
    wait: it would deadlock); opening is retried until the other writer is done."""
    path = tmp_path / "f.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # what a concurrent leakscope holds while it creates the store
    release = threading.Timer(1.0, lambda: holder.execute("ROLLBACK"))
    release.start()
    started = time.monotonic()
    try:
        with FindingStore(path) as opened:
            assert opened.integrity_check() == "ok"
    finally:
        release.join()
        holder.close()
    assert time.monotonic() - started >= 0.9  # it waited for the holder instead of failing


def test_a_store_kept_locked_ends_in_one_line_naming_it_and_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import passive.results.store.locking as store_locking  # here: the module is new with the waiting it tests

    monkeypatch.setattr(store_module, "BUSY_TIMEOUT", 0.2)
    monkeypatch.setattr(store_locking, "LOCK_WAIT_LIMIT", 1.0)
    path = tmp_path / "f.db"
    FindingStore(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = CliRunner().invoke(main, ["analyze", str(PCAPS / "smtp-ntlm-success-curl.pcap"), "--db", str(path)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.startswith("leakscope: error:")]
    assert str(path) in line and "locked by another process" in line
    assert re.search(r"gave up merging this run's findings after waiting \d+ s$", line)
    with FindingStore(path, create=False) as reopened:
        assert reopened.runs() == [] and reopened.query() == []


def test_sixteen_concurrent_analyze_runs_all_merge(tmp_path: Path) -> None:
    captures = sorted(PCAPS.glob("*.pcap"))[:16]
    assert len({path.read_bytes() for path in captures}) == 16
    db = tmp_path / "same.db"
    processes = []
    for index, capture in enumerate(captures):
        copy = tmp_path / f"capture-{index}.pcap"
        shutil.copyfile(capture, copy)
        argv = [*LEAKSCOPE, "analyze", "--db", str(db), "--format", "jsonl", str(copy)]
        processes.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENVIRONMENT))
    results = [(process.wait(timeout=600), process.stderr.read().decode()) for process in processes]
    for process in processes:
        process.stdout.close()
        process.stderr.close()
    assert [status for status, _errors in results] == [0] * 16, results
    assert not any("locked" in errors for _status, errors in results)
    with FindingStore(db, create=False) as merged:
        assert len(merged.runs()) == 16
        assert len(merged._db.execute("SELECT sha256 FROM captures").fetchall()) == 16


# -- a damaged file ------------------------------------------------------------------------------------------------


def _real_store(path: Path) -> None:
    names = ("imap-ntlm-success-curl", "pop3-auth-plain-curl", "smtp-hostile-names-ntlm-curl", "smtp-auth-plain-swaks")
    argv = ["analyze", "--db", str(path), "-o", os.devnull, *(str(PCAPS / f"{name}.pcap") for name in names)]
    assert CliRunner().invoke(main, argv).exit_code == 0


def _record_spans(path: Path) -> list[tuple[int, int]]:
    """Where each stored record's text lies in the file (records that fit in one page)."""
    data = path.read_bytes()
    with sqlite3.connect(path) as connection:
        texts = [row[0] for row in connection.execute("SELECT CAST(record AS BLOB) FROM findings")]
    spans = [(data.find(text), data.find(text) + len(text)) for text in texts]
    return [(start, end) for start, end in spans if start >= 0]


def test_random_corruptions_of_stored_records_never_raise(tmp_path: Path) -> None:
    base = tmp_path / "base.db"
    _real_store(base)
    spans = _record_spans(base)
    total = len(spans)
    assert total >= 8
    rng = random.Random("leakscope-store-corruption")
    damaged = tmp_path / "damaged.db"
    skipped_somewhere = 0
    for attempt in range(40):
        data = bytearray(base.read_bytes())
        start, end = rng.choice(spans)
        for _ in range(5):
            data[rng.randrange(start, end)] = rng.randrange(256)
        damaged.write_bytes(data)
        with FindingStore(damaged, create=False) as opened:
            records = opened.query()
            opened.runs()
            assert len(records) + opened.skipped == total, attempt
            skipped_somewhere += opened.skipped
        if attempt < 3:  # the commands, as a user runs them: one warning line, never a traceback
            for argv in (["findings", "--db", str(damaged)], ["report", "--db", str(damaged), "-o", os.devnull]):
                result = subprocess.run([*LEAKSCOPE, *argv], capture_output=True, text=True, env=ENVIRONMENT)
                assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
                assert result.stderr.count("leakscope: warning:") <= 1
    assert skipped_somewhere >= 20  # most corruptions break the UTF-8 or the JSON of a record


def test_a_merge_replaces_a_record_that_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    save_run(path, [_finding(times=2)], "analyze", None)
    data = bytearray(path.read_bytes())
    at = data.find(b'"netbios_computer": "EXCH19"')
    data[at + 1] = 0xFF  # not UTF-8 any more
    path.write_bytes(data)
    with FindingStore(path, create=False) as opened:
        assert opened.query() == [] and opened.skipped == 1
    assert save_run(path, [_finding(times=3)], "analyze", None) == 1
    with FindingStore(path, create=False) as opened:
        [record] = opened.query()
        assert record["count"] == 3 and opened.skipped == 0  # the damaged row is gone, not added to
    listed = CliRunner().invoke(main, ["findings", "--db", str(path), "--format", "jsonl"])
    assert listed.exit_code == 0 and "warning" not in listed.output


def test_findings_command_warns_once_about_unreadable_records(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    save_run(path, [_finding(), _finding("10.0.0.2:25")], "analyze", None)
    data = bytearray(path.read_bytes())
    at = data.find(b'"server": "10.0.0.2:25"')
    data[at] = 0xC0
    path.write_bytes(data)
    argv = [*LEAKSCOPE, "findings", "--db", str(path), "--format", "jsonl"]
    result = subprocess.run(argv, capture_output=True, text=True, env=ENVIRONMENT)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"leakscope: warning: {path}: 1 stored record(s) could not be read (not UTF-8 or not JSON: the file is "
        "damaged) and were left out"
    ]
    assert [json.loads(line)["server"] for line in result.stdout.splitlines()[:-1]] == ["10.0.0.1:25"]


# -- names and text ------------------------------------------------------------------------------------------------


def test_capture_name_that_is_not_utf8_is_merged(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/capture-\xff\xfe.pcap"
    shutil.copyfile(PCAPS / "smtp-ntlm-success-curl.pcap", name)
    db = tmp_path / "f.db"
    result = subprocess.run(
        [*LEAKSCOPE, "analyze", "--db", str(db), "-o", os.devnull, name], capture_output=True, env=ENVIRONMENT
    )
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    with FindingStore(db, create=False) as merged:
        [(stored,)] = merged._db.execute("SELECT path FROM captures").fetchall()
    assert stored.endswith("capture-\\udcff\\udcfe.pcap")


def test_stored_text_holds_no_raw_control_bidi_or_invisible_character(tmp_path: Path) -> None:
    hostile = "EXCH\x9b31m\u202e19\u200b\U000e0041"
    path = tmp_path / "f.db"
    save_run(path, [_finding(computer=hostile)], "analyze", {"note": "\x9b\u2066"})
    with sqlite3.connect(path) as connection:
        stored = [text for row in connection.execute("SELECT record, key FROM findings") for text in row]
        stored += [row[0] for row in connection.execute("SELECT summary FROM runs")]
    for text in stored:
        assert not re.search("[\x00-\x1f\x7f-\x9f\u200b\u202e\u2066\U000e0041]", text), text
    with FindingStore(path, create=False) as opened:
        assert opened.query()[0]["netbios_computer"] == hostile  # the value read back is exact
        assert opened.runs()[0]["summary"] == {"note": "\x9b\u2066"}


# -- who may read it -----------------------------------------------------------------------------------------------


def test_store_and_its_journal_files_are_readable_by_their_owner_alone(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    previous = os.umask(0o022)
    try:
        with FindingStore(path) as opened:
            writer = opened.writer("analyze")
            writer.write(_finding())
            opened.commit()
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            assert all(p.exists() for p in files)
            assert [_mode(p) for p in files] == [0o600] * 3
    finally:
        os.umask(previous)


def test_store_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        FindingStore(tmp_path)
