"""The findings cap cannot be flooded away from credentials and NTLM: inventory findings make room for them, and
each valuable kind has a reserved share no flood of another kind can take (passive/findings/model.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from dissectors import events as ev
from fuzz import floods
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.pipeline import Analysis, AnalysisOptions
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


def test_an_open_relay_finding_making_room_is_counted_in_the_summary() -> None:
    """An open-relay verdict takes the place of the oldest inventory finding when the set is full: the run's summary
    counts that eviction (``findings_evicted``, and in ``findings_dropped``) as it counts those of other kinds."""
    analysis = Analysis(AnalysisOptions())
    analysis.findings = FindingSet(max_findings=3)
    server, client = ev.Side.SERVER, ev.Side.CLIENT
    for number in range(4):
        context = SessionContext("smtp", f"198.51.100.{number}:25", "203.0.113.9:40000")
        session = SessionAnalyzer(context, analysis.findings, analysis.stats, analysis.relays)
        session.feed([ev.Greeting(server, ev.Evidence.of("220 mx.example.com ESMTP", 1, 1.0), "mx.example.com ESMTP")])
        if number == 3:  # a client outside the private ranges has mail for a foreign domain accepted
            session.feed(
                [
                    ev.MailFrom(client, ev.Evidence.of("MAIL FROM:<a@b.example>", 2, 2.0), "a@b.example", 250, True),
                    ev.RcptTo(client, ev.Evidence.of("RCPT TO:<x@c.example>", 3, 3.0), "x@c.example", 250, "ok", True),
                ]
            )
        session.close()
    kinds = [finding.type for finding in analysis.findings]
    assert kinds == [INVENTORY, INVENTORY, FindingType.OPEN_RELAY]  # the first server's inventory made room
    assert analysis.findings.evicted == 1
    summary = analysis.stats.to_dict()
    assert summary["findings_evicted"] == 1
    assert summary["findings_dropped"] == analysis.findings.dropped == 2  # the fourth server's inventory, the evicted
