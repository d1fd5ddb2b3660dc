"""The findings cap cannot be flooded away from credentials and NTLM: inventory findings make room for them, and
each valuable kind has a reserved share no flood of another kind can take (passive/findings/model.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fuzz import floods
from passive.findings.model import FindingSet, FindingType, Severity

INVENTORY, CREDENTIALS, NTLM = FindingType.MAIL_SERVICE, FindingType.CLEARTEXT_CREDENTIALS, FindingType.NTLM_INFO


def _add(findings: FindingSet, kind: FindingType, count: int, prefix: str) -> None:
    for number in range(count):
        findings.get(kind, "smtp", f"{prefix}{number}:25", Severity.INFO, (f"user{number}",))


def _count(findings: FindingSet, kind: FindingType) -> int:
    return sum(f.type is kind for f in findings)


def test_inventory_makes_room_for_credentials_oldest_first() -> None:
    findings = FindingSet(max_findings=10)
    _add(findings, INVENTORY, 12, "fake")
    assert len(findings) == 10 and findings.dropped == 2
    _add(findings, CREDENTIALS, 3, "real")
    assert _count(findings, CREDENTIALS) == 3 and len(findings) == 10
    assert findings.evicted == 3 and findings.dropped == 5
    assert findings.find(INVENTORY, "fake0:25", ("user0",)) is None
    assert findings.find(INVENTORY, "fake3:25", ("user3",)) is not None
    _add(findings, INVENTORY, 5, "late")  # inventory never pushes anything out
    assert _count(findings, INVENTORY) == 7 and findings.dropped == 10


def test_a_flood_of_one_valuable_kind_leaves_the_others_their_share() -> None:
    findings = FindingSet(max_findings=20)  # credentials and ntlm-info are sure of 5 each
    _add(findings, NTLM, 30, "fake-ntlm")
    assert _count(findings, NTLM) == 20
    _add(findings, CREDENTIALS, 8, "real")
    assert _count(findings, CREDENTIALS) == 5 and _count(findings, NTLM) == 15  # the share, no more
    assert findings.evicted == 5 and findings.dropped == 10 + 5 + 3
    findings.discard(next(iter(findings)))
    _add(findings, NTLM, 1, "again")
    assert len(findings) == 20


def test_real_login_survives_25000_fake_servers(tmp_path: Path) -> None:
    """20 000 one-packet fake servers used to fill the set: the login after them was only a counter."""
    path = tmp_path / "fake-servers.pcap"
    with path.open("wb") as stream:
        made = floods.fake_servers(floods.PcapWriter(stream), 1.0)
    done = subprocess.run(["leakscope", "analyze", "--format", "jsonl", str(path)], capture_output=True)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    [login] = [r for r in records if r["type"] == "cleartext-credentials"]
    assert (login["user"], login["mechanism"], login["outcome"]) == ("alice@corp.example", "PLAIN", "success")
    summary = records[-1]
    assert not floods.FLOODS["fake-servers"].check(summary, made)
    assert summary["findings_evicted"] == 1 and summary["findings"]["mail-service"] == 19_999
