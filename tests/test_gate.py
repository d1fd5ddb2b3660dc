"""Fingerprints, baselines, suppressions and ECS documents: what CI gates and SIEMs build on."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from passive.analysis.pipeline import analyze_captures
from passive.core.errors import InputError
from passive.results.baseline import Gate, read_suppressions
from passive.results.ecs import ecs_record
from passive.results.records import finding_record

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"


def records(*paths: Path) -> list[dict]:
    return [finding_record(f) for f in analyze_captures([str(p) for p in paths]).findings]


def test_fingerprints_are_stable_across_runs_and_capture_names(tmp_path: Path) -> None:
    original = PCAPS / "smtp-auth-plain-swaks.pcap"
    renamed = shutil.copy(original, tmp_path / "something else entirely.pcap")
    first, again, other_name = records(original), records(original), records(Path(renamed))
    ids = [r["id"] for r in first]
    assert all(isinstance(i, str) and i.startswith("ls-") and len(i) == 19 for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == [r["id"] for r in again] == [r["id"] for r in other_name]


def test_fingerprints_follow_identity_not_occurrence() -> None:
    base = {"type": "cleartext-credentials", "server": "10.0.0.1:25", "mechanism": "PLAIN", "user": "bob"}
    occurrence = {**base, "count": 7, "source": "active", "first_seen": "2026-01-01T00:00:00Z", "password": "x"}
    assert finding_record_id(base) == finding_record_id(occurrence)
    assert finding_record_id(base) != finding_record_id({**base, "user": "alice"})
    assert finding_record_id(base) != finding_record_id({**base, "server": "10.0.0.1:587"})


def finding_record_id(record: dict) -> str | None:
    from passive.results.fingerprint import fingerprint

    return fingerprint(record)


def test_baseline_marks_new_unchanged_and_resolved() -> None:
    before = records(PCAPS / "smtp-auth-plain-swaks.pcap")
    now = records(PCAPS / "smtp-auth-plain-swaks.pcap", PCAPS / "pop3-user-pass-fetchmail.pcap")
    gate = Gate(baseline={r["id"] for r in before} | {"ls-0000000000000000"})
    gate.mark(now)
    assert {r["baseline"] for r in now if r["server"].endswith(":25")} == {"unchanged"}
    assert {r["baseline"] for r in now if r["server"].endswith(":110")} == {"new"}
    assert gate.resolved == ["ls-0000000000000000"]
    failing = gate.failing(now, "high")
    assert failing and all(r["baseline"] == "new" and r["severity"] == "high" for r in failing)
    assert gate.summary()["baseline_new"] == sum(r["baseline"] == "new" for r in now)


def test_suppressions_are_counted_never_silent_and_expire(tmp_path: Path) -> None:
    now = records(PCAPS / "pop3-user-pass-fetchmail.pcap")
    [credential] = [r for r in now if r["type"] == "cleartext-credentials"]
    path = tmp_path / "suppress.txt"
    path.write_text(
        f"# accepted until the migration\n{credential['id']} 2099-12-31 legacy POP3 box, ticket 42\n"
        + json.dumps({"id": "ls-1111111111111111", "reason": "old", "expires": "2001-01-01"})
        + "\n"
    )
    gate = Gate(suppressions=read_suppressions(str(path)), today=date(2026, 11, 29))
    gate.mark([*now, {"id": "ls-1111111111111111", "severity": "high"}])
    assert credential["suppressed"] == {"reason": "legacy POP3 box, ticket 42", "expires": "2099-12-31"}
    assert gate.summary()["suppressed"] == 1 and gate.summary()["suppressions_expired"] == ["ls-1111111111111111"]
    assert credential not in gate.failing(now, "low")


@pytest.mark.parametrize(
    "line", ["ls-1234 2027-01-01", "nonsense 2027-01-01 reason", "ls-1234 tomorrow reason", '{"id": 3}']
)
def test_bad_suppressions_are_one_line_errors(tmp_path: Path, line: str) -> None:
    path = tmp_path / "s"
    path.write_text(line + "\n")
    with pytest.raises(InputError, match="line 1"):
        read_suppressions(str(path))


def test_ecs_documents_carry_who_what_and_the_original_record() -> None:
    [ntlm] = [r for r in records(PCAPS / "smtp-ntlm-success-swaks.pcap") if r["type"] == "ntlm-info"]
    document = ecs_record(ntlm)
    assert document["event"]["kind"] == "alert" and "authentication" in document["event"]["category"]
    assert document["event"]["id"] == ntlm["id"] and document["@timestamp"] == ntlm["last_seen"]
    assert document["destination"]["ip"] == "10.99.0.1" and document["destination"]["port"] == 25
    assert document["source"]["ip"] == "10.99.0.10" and document["network"]["protocol"] == "smtp"
    assert document["user"]["name"] == "alice" and "dc1.leakscope.test" in document["related"]["hosts"]
    assert document["rule"]["id"] == "ntlm-info" and document["leakscope"] == ntlm
