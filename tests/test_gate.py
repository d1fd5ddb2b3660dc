"""Fingerprints, baselines, suppressions and ECS documents: what CI gates and SIEMs build on."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from passive.analysis.pipeline import analyze_captures
from passive.core.errors import InputError
from passive.findings.schema import rank
from passive.results.baseline import Gate, read_baseline, read_suppressions
from passive.results.ecs import ecs_record
from passive.results.records import finding_record
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes

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
    gate = Gate(baseline={r["id"]: rank(r["severity"]) for r in before} | {"ls-0000000000000000": 0})
    gate.mark(now)
    assert {r["baseline"] for r in now if r["server"].endswith(":25")} == {"unchanged"}
    assert {r["baseline"] for r in now if r["server"].endswith(":110")} == {"new"}
    assert gate.resolved == ["ls-0000000000000000"]
    failing = gate.failing(now, "high")
    assert failing and all(r["baseline"] == "new" and r["severity"] == "high" for r in failing)
    assert gate.summary()["baseline_new"] == sum(r["baseline"] == "new" for r in now)


def _server(path: Path, offered: bytes) -> Path:
    """One SMTP server's EHLO reply: ``offered`` before STARTTLS."""
    turns = [(True, b"220 mx.contoso.com ESMTP\r\n"), (False, b"EHLO c\r\n"),
             (True, b"250-mx.contoso.com\r\n" + offered + b"250 STARTTLS\r\n"), (False, b"QUIT\r\n"),
             (True, b"221 bye\r\n")]  # fmt: skip
    path.write_bytes(pcap_bytes(ethernet_frames(conversation_segments(turns))))
    return path


def test_a_finding_more_severe_than_in_the_baseline_fails_the_gate(tmp_path: Path) -> None:
    """A server that offered logins only after STARTTLS (auth-methods, info) and now offers PLAIN before it (medium)
    keeps its fingerprint: marked unchanged, it passed --fail-on medium --baseline."""
    before = tmp_path / "before.jsonl"
    before.write_text("".join(json.dumps(r) + "\n" for r in records(_server(tmp_path / "a.pcap", b""))))
    now = records(_server(tmp_path / "b.pcap", b"250-AUTH PLAIN LOGIN\r\n"))
    gate = Gate(baseline=read_baseline(str(before)))
    gate.mark(now)
    [methods] = [r for r in now if r["type"] == "auth-methods"]
    assert methods["severity"] == "medium" and methods["baseline"] == "worse"
    assert {r["baseline"] for r in now if r is not methods} == {"unchanged"}
    assert gate.failing(now, "medium") == [methods]
    assert gate.summary()["baseline_worse"] == 1 and gate.summary()["baseline_new"] == 0


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
