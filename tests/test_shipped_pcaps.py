"""Every capture in pcaps/ analyzes to the findings its expected-facts file (written by the script that made the
capture, from what it configured and sent) says it must."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dissectors.registry import MAIL_PORTS
from passive.analysis.classify import mail_capture_options
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.capture import analyze_file
from passive.results.records import MASK, finding_record

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
EXPECTED = sorted(PCAPS.glob("*.expected.json"))
# Facts files name clear-text login commands by their command; findings by mechanism.
MECHANISM_NAMES = {("pop3", "USER"): {"USER-PASS"}, ("imap", "LOGIN"): {"IMAP-LOGIN", "LOGIN"}}
PSEUDO_MECHANISMS = {"USER", "LOGIN-COMMAND"}


def _analyze(capture: Path, all_ports: bool = False) -> list[dict[str, Any]]:
    analysis = Analysis(AnalysisOptions(all_ports=all_ports))
    analysis.file = capture.name
    counters = analyze_file(capture, analysis.handler_factory, mail_capture_options(all_ports=all_ports))
    assert counters.anomalies == 0 and counters.gaps == 0, counters.warnings
    return [finding_record(finding, show_secrets=True) for finding in analysis.findings]


def _one(findings: list[dict[str, Any]], kind: str, server: str) -> dict[str, Any]:
    matching = [f for f in findings if f["type"] == kind and f["server"] == server]
    assert len(matching) == 1, f"{kind} for {server}: {len(matching)} findings"
    return matching[0]


def _banner_text(banner: str) -> str:
    """The greeting as the mail-service finding states it: no status code, no IMAP response code."""
    text = re.sub(r"^(?:\d{3}[ -]|\+OK\s?|\* (?:OK|PREAUTH|BYE)\s?)", "", banner)
    return re.sub(r"\[CAPABILITY [^\]]*\]\s*", "", text).strip()


def test_captures_are_shipped() -> None:
    assert len(EXPECTED) >= 30
    for facts in EXPECTED:
        assert facts.with_name(facts.name.replace(".expected.json", ".pcap")).exists()


@pytest.mark.parametrize("facts_path", EXPECTED, ids=[p.name.removesuffix(".expected.json") for p in EXPECTED])
def test_capture_reproduces_expected_findings(facts_path: Path) -> None:
    facts = json.loads(facts_path.read_text())
    server, protocol = facts["server"], facts["protocol"]
    # Services on non-standard ports are found by their greeting, which is what --all-ports is for.
    findings = _analyze(PCAPS / facts["capture"], all_ports=int(server.rsplit(":", 1)[1]) not in MAIL_PORTS)
    assert all(f["protocol"] == protocol for f in findings if f["server"] == server)

    service = _one(findings, "mail-service", server)
    assert service["banner"] == _banner_text(facts["banner"])
    assert service["tls"] == facts["tls"]
    assert any(client.startswith(facts["client"] + ":") for client in service["clients"])

    advertised = facts["mechanisms"]["before_tls"] if facts.get("mechanisms_visible", True) else []
    methods = [f for f in findings if f["type"] == "auth-methods" and f["server"] == server]
    seen = [m for m in (methods[0]["mechanisms"] if methods else []) if m not in PSEUDO_MECHANISMS]
    assert sorted(seen) == sorted(advertised or [])

    ntlm = [f for f in findings if f["type"] == "ntlm-info" and f["server"] == server]
    if facts["ntlm_server"] is None:
        assert ntlm == []
    else:
        [info] = ntlm
        expected_server = dict(facts["ntlm_server"])
        assert (info["server_time"] is not None) == expected_server.pop("server_time_present")
        for name, value in expected_server.items():
            assert info[name] == value, name
        for name, value in (facts["ntlm_client"] or {}).items():
            if name != "password":
                assert info[name] == value, name
        assert info["outcome"] == facts["outcome"]

    credentials = [f for f in findings if f["type"] == "cleartext-credentials" and f["server"] == server]
    visible = [c for c in facts["credentials"] if c.get("visible", True)]
    assert len(credentials) == len(visible)
    for expected, found in zip(visible, credentials, strict=True):
        names = MECHANISM_NAMES.get((protocol, expected["mechanism"]), {expected["mechanism"]})
        assert found["mechanism"] in names
        assert (found["user"], found["password"]) == (expected["user"], expected["password"])
        assert found["outcome"] == facts["outcome"]

    relays = [f for f in findings if f["type"] == "open-relay" and f["server"] == server]
    if facts["relay"] is None:
        assert relays == []
    else:
        [relay] = relays
        expected = facts["relay"]
        assert relay["mail_from"] == (expected["mail_from"] or "<>")
        assert (relay["rcpt_to"], relay["accepted"]) == (expected["rcpt_to"], expected["accepted"])

    if facts["tls"]:
        # Nothing from inside TLS: no NTLM, and none of the credentials sent there.
        assert not ntlm
        hidden = {(c["user"], c["password"]) for c in facts.get("hidden_credentials", [])}
        assert hidden and not hidden & {(c["user"], c["password"]) for c in credentials}


def test_passwords_are_masked_by_default() -> None:
    capture = PCAPS / "pop3-user-pass-fetchmail.pcap"
    if not capture.exists():
        pytest.fail("pop3-user-pass-fetchmail.pcap is missing from pcaps/")
    analysis = Analysis()
    analyze_file(capture, analysis.handler_factory, mail_capture_options())
    [credentials] = [finding_record(f) for f in analysis.findings if f.type == "cleartext-credentials"]
    assert credentials["password"] == MASK
