"""The findings store: schema and migrations, merging across runs, queries, the CLI, and surviving SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from passive.cli.main import main
from passive.findings.model import MAX_EVIDENCE, EvidenceRecord, Finding, FindingType, Severity
from passive.results.store import MIGRATIONS, CaptureDigest, FindingStore, StoreError, capture_digest, save_run

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def _ntlm_finding(server: str = "10.0.0.1:25", *, user: str = "alice", times: tuple[float, ...] = (T0,)) -> Finding:
    finding = Finding(FindingType.NTLM_INFO, "smtp", server, Severity.LOW)
    finding.fields.update(netbios_computer="EXCH19", users=[f"CONTOSO\\{user}"], workstations=[f"WS-{user}"])
    for index, stamp in enumerate(times):
        _occurrence(finding, stamp, f"10.0.0.9:{4000 + index}", f"334 challenge {user} {index}")
    return finding


def _occurrence(finding: Finding, stamp: float, client: str, line: str) -> None:
    finding.seen(stamp, client)
    finding.add_evidence(EvidenceRecord("live:eth0", int(stamp) % 100000, stamp, "server", line))
    finding.add_detail({"client": client, "time": stamp})


def _credentials(password: str = "Hunter2") -> Finding:
    finding = Finding(FindingType.CLEARTEXT_CREDENTIALS, "smtp", "10.0.0.1:25", Severity.HIGH, key=("PLAIN", "bob"))
    finding.fields.update(mechanism="PLAIN", user="bob", password=password, outcome="success")
    _occurrence(finding, T0, "10.0.0.9:5000", "AUTH PLAIN AGJvYgBIdW50ZXIy")
    return finding


# -- schema ----------------------------------------------------------------------------------------------------


def test_new_store_uses_wal_and_records_every_migration(tmp_path: Path) -> None:
    with FindingStore(tmp_path / "f.db") as store:
        assert store.schema_version == MIGRATIONS[-1][0]
        assert store.integrity_check() == "ok"
    db = sqlite3.connect(tmp_path / "f.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [version for version, _description, _steps in MIGRATIONS]


@pytest.mark.parametrize("old_version", [1, 2])
def test_store_of_an_older_schema_is_migrated_and_keeps_its_findings(tmp_path: Path, old_version: int) -> None:
    path = tmp_path / "old.db"
    save_run(path, [_ntlm_finding()], "analyze", None)
    # Roll the file back to an older schema, as an older leakscope left it.
    added_by = {2: "runs", 3: "captures"}
    db = sqlite3.connect(path)
    for version, table in added_by.items():
        if version > old_version:
            db.execute(f"DROP TABLE {table}")
    db.execute("DELETE FROM schema_migrations WHERE version > ?", (old_version,))
    db.commit()
    db.close()
    with FindingStore(path) as store:
        assert store.schema_version == MIGRATIONS[-1][0]
        assert [r["netbios_computer"] for r in store.query()] == ["EXCH19"]
        assert len(store.runs()) == (0 if old_version < 2 else 1)
        assert store.known_capture("0" * 64) is None


def test_store_written_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    FindingStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer leakscope"):
        FindingStore(path)


def test_files_that_are_not_stores_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a findings store"):
        FindingStore(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all\n" * 100)
    with pytest.raises(StoreError, match="not a findings store"):
        FindingStore(garbage)
    with pytest.raises(StoreError, match="no such findings store"):
        FindingStore(tmp_path / "missing.db", create=False)


# -- merging ---------------------------------------------------------------------------------------------------


def test_rewriting_a_growing_finding_in_one_run_counts_each_occurrence_once(tmp_path: Path) -> None:
    finding = _ntlm_finding(times=(T0,))
    with FindingStore(tmp_path / "f.db") as store:
        writer = store.writer("watch")
        writer.write(finding)
        writer.write(finding)  # unchanged: nothing more to add
        for index in range(1, 12):
            _occurrence(finding, T0 + index, f"10.0.0.9:{5000 + index}", f"line {index}")
            writer.write(finding)
        writer.finish({"packets": 1})
        [record] = store.query()
    assert record["count"] == finding.count == 12
    assert len(record["evidence"]) == MAX_EVIDENCE and record["evidence_dropped"] == 12 - MAX_EVIDENCE
    assert len(record["details"]) == 12 and record["details_dropped"] == 0
    assert record["first_seen"] == "2027-01-15T08:00:00.000000Z"
    assert record["last_seen"] == "2027-01-15T08:00:11.000000Z"


def test_runs_merge_counts_times_lists_and_severity(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    save_run(path, [_ntlm_finding(user="alice", times=(T0 + 100, T0 + 200))], "analyze", None)
    later = _ntlm_finding(user="bob", times=(T0 + 50, T0 + 300, T0 + 400))
    later.raise_severity(Severity.MEDIUM)
    save_run(path, [later], "watch", None)
    quieter = _ntlm_finding(user="alice", times=(T0 + 500,))  # severity LOW again: stays MEDIUM
    save_run(path, [quieter], "watch", None)
    with FindingStore(path) as store:
        [record] = store.query()
        runs = store.runs()
    assert record["count"] == 6
    assert record["first_seen"] == "2027-01-15T08:00:50.000000Z"
    assert record["last_seen"] == "2027-01-15T08:08:20.000000Z"
    assert record["severity"] == "medium"
    assert record["users"] == ["CONTOSO\\alice", "CONTOSO\\bob"]
    assert record["workstations"] == ["WS-alice", "WS-bob"]
    assert len(record["evidence"]) == 6 and record["evidence_dropped"] == 0
    assert [run["command"] for run in runs] == ["analyze", "watch", "watch"]
    assert all(run["ended_at"] for run in runs)


def test_evidence_beyond_the_bound_is_counted_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    for run in range(3):
        save_run(path, [_ntlm_finding(times=tuple(T0 + run * 10 + i for i in range(5)))], "analyze", None)
    with FindingStore(path) as store:
        [record] = store.query()
    assert record["count"] == 15
    assert len(record["evidence"]) == MAX_EVIDENCE
    assert record["evidence_dropped"] == 15 - MAX_EVIDENCE


def test_a_forgotten_finding_adds_to_its_row_when_it_comes_back(tmp_path: Path) -> None:
    with FindingStore(tmp_path / "f.db") as store:
        writer = store.writer("watch")
        first = _ntlm_finding(times=(T0, T0 + 1))
        writer.write(first)
        writer.forget(first)
        again = _ntlm_finding(times=(T0 + 60,))
        writer.write(again)
        [record] = store.query()
    assert record["count"] == 3
    assert record["last_seen"] == "2027-01-15T08:01:00.000000Z"


def test_findings_are_kept_apart_per_server_type_key_and_source(tmp_path: Path) -> None:
    other_user = _credentials()
    other_user.key = ("PLAIN", "carol")
    active = _ntlm_finding()
    active.source = "active"
    findings = [_ntlm_finding(), _ntlm_finding("10.0.0.2:25"), active, _credentials(), other_user]
    path = tmp_path / "f.db"
    save_run(path, findings, "analyze", None)
    with FindingStore(path) as store:
        assert len(store.query()) == 5
        assert len(store.query(type="ntlm-info")) == 3
        assert len(store.query(server="10.0.0.2:25")) == 1
        assert len(store.query(source="active")) == 1
        assert len(store.query(type="cleartext-credentials", server="10.0.0.1:25")) == 2


def test_since_filters_on_last_seen(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    save_run(path, [_ntlm_finding(times=(T0,)), _ntlm_finding("10.0.0.2:25", times=(T0 + 3600,))], "analyze", None)
    with FindingStore(path) as store:
        assert [r["server"] for r in store.query(since=T0 + 1)] == ["10.0.0.2:25"]
        assert [r["server"] for r in store.query(since="2027-01-15T08:30:00Z")] == ["10.0.0.2:25"]
        assert len(store.query(since="2027-01-15T07:00:00+00:00")) == 2
        with pytest.raises(StoreError, match="ISO 8601"):
            store.query(since="last tuesday")


def test_passwords_never_reach_the_file(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    capture = str(PCAPS / "smtp-auth-plain-swaks.pcap")  # AUTH PLAIN of bob / B0b-Secret!
    result = CliRunner().invoke(main, ["analyze", capture, "--show-secrets", "--format", "jsonl", "--db", str(db)])
    assert result.exit_code == 0 and "B0b-Secret!" in result.output  # asked for on the terminal, not in the store
    with FindingStore(db) as store:
        [credentials] = store.query(type="cleartext-credentials")
        assert credentials["password"] == "********"
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("f.db"))
    assert b"B0b-Secret!" not in on_disk and b"AGJvYgBCMGItU2VjcmV0IQ" not in on_disk


def test_hostile_strings_round_trip_unchanged(tmp_path: Path) -> None:
    hostile = "\x1b[31mred\x1b[0m <script>alert(1)</script> [bold]x[/] \u202e"
    finding = _ntlm_finding()
    finding.fields["netbios_computer"] = hostile
    path = tmp_path / "f.db"
    save_run(path, [finding], "analyze", None)
    with FindingStore(path) as store:
        assert store.query()[0]["netbios_computer"] == hostile


# -- command line ----------------------------------------------------------------------------------------------


def test_analyze_db_and_findings_command_agree_with_analyze_output(tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    captures = [str(PCAPS / "smtp-ntlm-success-curl.pcap"), str(PCAPS / "smtp-auth-plain-swaks.pcap")]
    runner = CliRunner()
    analyzed = runner.invoke(main, ["analyze", *captures, "--format", "jsonl", "--db", db, "--show-secrets"])
    assert analyzed.exit_code == 0, analyzed.output
    reported = [json.loads(line) for line in analyzed.output.splitlines()][:-1]
    listed = runner.invoke(main, ["findings", "--db", db, "--format", "jsonl"])
    assert listed.exit_code == 0, listed.output
    lines = [json.loads(line) for line in listed.output.splitlines()]
    stored, summary = lines[:-1], lines[-1]
    assert summary["type"] == "summary" and summary["runs"] == 1

    def identity(record: dict[str, Any]) -> tuple[Any, ...]:
        return record["type"], record["server"], record.get("mechanism"), record.get("user")

    assert sorted(map(identity, stored)) == sorted(map(identity, reported))
    for record in stored:
        [twin] = [r for r in reported if identity(r) == identity(record)]
        assert record["count"] == twin["count"] and record["first_seen"] == twin["first_seen"]
        assert [e["frame"] for e in record["evidence"]] == [e["frame"] for e in twin["evidence"]]
        if record["type"] == "cleartext-credentials":
            assert twin["password"] != "********" and record["password"] == "********"
    # A second analysis of other captures adds to the same store.
    again = runner.invoke(main, ["analyze", str(PCAPS / "smtp-ntlm-success-swaks.pcap"), "--db", db, "-o", os.devnull])
    assert again.exit_code == 0, again.output
    ntlm = json.loads(runner.invoke(main, ["findings", "--db", db, "--type", "ntlm-info", "--format", "json"]).output)
    [merged] = ntlm["findings"]
    [before] = [r for r in reported if r["type"] == "ntlm-info"]
    assert merged["count"] == before["count"] + 1
    assert ntlm["summary"]["runs"] == 2


def test_analyze_db_merges_each_capture_file_once_whatever_its_name(tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    first, second = PCAPS / "smtp-ntlm-success-curl.pcap", PCAPS / "smtp-ntlm-success-swaks.pcap"
    renamed = tmp_path / "copy-of-first.pcap"
    shutil.copyfile(first, renamed)
    runner = CliRunner()

    def stored_ntlm() -> tuple[int, int]:
        listed = json.loads(runner.invoke(main, ["findings", "--db", db, "--format", "json"]).output)
        [ntlm] = [f for f in listed["findings"] if f["type"] == "ntlm-info"]
        return ntlm["count"], listed["summary"]["runs"]

    assert runner.invoke(main, ["analyze", str(first), "--db", db, "-o", os.devnull]).exit_code == 0
    once = stored_ntlm()
    # The same bytes under another name: shown in full, not merged again, and said so.
    again = runner.invoke(main, ["analyze", str(renamed), "--db", db, "--format", "jsonl"])
    assert again.exit_code == 0, again.output
    assert "is already in" in again.stderr and "run 1" in again.stderr and "not merged again" in again.stderr
    shown = [json.loads(line) for line in again.stdout.splitlines()]
    assert [r["count"] for r in shown if r["type"] == "ntlm-info"] == [once[0]]
    assert stored_ntlm() == once
    # A known file with a new one (and the new one named twice): only the new one's findings are added, once.
    alone = runner.invoke(main, ["analyze", str(second), "--format", "jsonl"])
    [second_ntlm] = [r["count"] for r in map(json.loads, alone.stdout.splitlines()) if r["type"] == "ntlm-info"]
    mixed = runner.invoke(main, ["analyze", str(renamed), str(second), str(second), "--db", db, "-o", os.devnull])
    assert mixed.exit_code == 0, mixed.output
    assert stored_ntlm() == (once[0] + second_ntlm, 2)
    with FindingStore(db, create=False) as store:
        assert store.known_capture(capture_digest(second).sha256)["run"] == 2
        assert store.known_capture("0" * 64) is None


def test_save_run_is_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    capture = CaptureDigest("day1.pcap", "ab" * 32, 100)
    save_run(path, [_ntlm_finding(times=(T0,))], "analyze", None, captures=[capture])

    def interrupted() -> Iterator[Finding]:
        yield _ntlm_finding(times=(T0 + 1,))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_run(path, interrupted(), "analyze", None, captures=[CaptureDigest("day2.pcap", "cd" * 32, 100)])
    # The same file merged by another run meanwhile: this run merges nothing.
    again = CaptureDigest("day1-again.pcap", capture.sha256, capture.size)
    with pytest.raises(StoreError, match=r"day1-again\.pcap: merged into .* by another run meanwhile"):
        save_run(path, [_ntlm_finding(times=(T0 + 2,))], "analyze", None, captures=[again])
    with FindingStore(path, create=False) as store:
        assert [r["count"] for r in store.query()] == [1]
        assert len(store.runs()) == 1
        assert store.known_capture("cd" * 32) is None and store.known_capture("ab" * 32)["path"] == "day1.pcap"


def test_findings_command_filters_and_renders_tables_inertly(tmp_path: Path) -> None:
    db = str(tmp_path / "f.db")
    runner = CliRunner()
    hostile = [str(PCAPS / name) for name in ("smtp-hostile-names-ntlm-curl.pcap", "smtp-open-relay-swaks.pcap")]
    assert runner.invoke(main, ["analyze", *hostile, "--db", db, "-o", os.devnull]).exit_code == 0
    table = runner.invoke(main, ["findings", "--db", db])
    assert table.exit_code == 0
    assert "Open relay" in table.output and "NTLM host information" in table.output
    assert "\x1b" not in table.output and "\\x1b[31mred" in table.output
    relays = runner.invoke(main, ["findings", "--db", db, "--type", "open-relay", "--format", "json"])
    assert {f["type"] for f in json.loads(relays.output)["findings"]} == {"open-relay"}
    future = runner.invoke(main, ["findings", "--db", db, "--since", "2100-01-01T00:00:00Z", "--format", "json"])
    assert json.loads(future.output)["findings"] == []
    everything = json.loads(runner.invoke(main, ["findings", "--db", db, "--format", "json"]).output)["findings"]
    assert len(everything) == 6  # two servers: service and mechanisms each, NTLM, relay
    recent = runner.invoke(main, ["findings", "--db", db, "--since", "36500d", "--format", "json"])
    assert json.loads(recent.output)["findings"] == everything


@pytest.mark.parametrize(
    ("arguments", "message", "status"),
    [
        (["--db", "{tmp}/missing.db"], "no such findings store", 1),
        (["--db", "{tmp}"], "is a directory", 1),
        (["--db", "{tmp}/garbage.db"], "not a findings store", 1),
        (["--db", "{tmp}/ok.db", "--since", "soon"], "give an ISO 8601 time or an age", 2),  # a usage error
    ],
)
def test_findings_command_errors_are_one_line(tmp_path: Path, arguments: list[str], message: str, status: int) -> None:
    (tmp_path / "garbage.db").write_bytes(b"x" * 4096)
    FindingStore(tmp_path / "ok.db").close()
    result = CliRunner().invoke(main, ["findings", *[a.format(tmp=tmp_path) for a in arguments]])
    assert result.exit_code == status
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_analyze_db_error_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["analyze", str(PCAPS / "smtp-banner-only-swaks.pcap"), "-o", os.devnull, "--db", str(tmp_path)]
    )
    assert result.exit_code == 1 and "is a directory" in result.output and "Traceback" not in result.output


# -- SIGKILL -----------------------------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    from passive.findings.model import EvidenceRecord, Finding, FindingType, Severity
    from passive.results.store import FindingStore

    store = FindingStore(sys.argv[1], commit_interval=3600, commit_every=10**9)
    writer = store.writer("load")
    findings = {}
    batch = 0
    while True:
        batch += 1
        for n in range(40):
            server = f"10.1.{n // 250}.{n % 250}:25"
            finding = findings.get(n)
            if finding is None:
                finding = findings[n] = Finding(FindingType.MAIL_SERVICE, "smtp", server, Severity.INFO)
            finding.seen(1.8e9 + batch, f"10.2.0.1:{batch % 60000}")
            finding.add_evidence(EvidenceRecord("load", batch, 1.8e9 + batch, "server", "220 x" * 50))
            finding.fields["banner"] = f"batch {batch}"
            writer.write(finding)
        # A new finding each batch, so the set of rows grows too.
        extra = Finding(FindingType.NTLM_INFO, "smtp", f"10.3.{batch // 250 % 250}.{batch % 250}:{batch}", Severity.LOW)
        extra.seen(1.8e9 + batch, None)
        writer.write(extra)
        store.commit()
        print(batch, flush=True)
    """
)


def test_sigkill_mid_write_loses_nothing_committed_and_leaves_a_sound_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    committed = 0
    try:
        assert process.stdout is not None
        for line in process.stdout:
            committed = int(line)
            if committed >= 30:
                break
        # The writer does not pause between transactions: the kill lands inside one (or between two).
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        reported = process.stdout.read().split()  # batches committed before the kill that we had not read yet
        committed = int(reported[-1]) if reported else committed
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert committed >= 30
    with FindingStore(path) as store:
        assert store.integrity_check() == "ok"
        records = store.query()
        services = [r for r in records if r["type"] == "mail-service"]
        extras = [r for r in records if r["type"] == "ntlm-info"]
    assert len(services) == 40
    # Every batch reported committed is in; a batch cut off by the kill is all or nothing.
    counts = {r["count"] for r in services}
    assert len(counts) == 1 and counts.pop() in (committed, committed + 1)
    assert len(extras) in (committed, committed + 1)
    assert {r["banner"] for r in services} in ({f"batch {committed}"}, {f"batch {committed + 1}"})
