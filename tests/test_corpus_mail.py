"""The public captures in ../shared/corpus: everything analyzes, and what is in them agrees with tshark's and
pyspnego's decoding recorded in corpus/truth."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from passive.analysis.classify import mail_capture_options
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.capture import CaptureError, analyze_file
from passive.results.records import finding_record
from tests.corpus import CORPUS, require_corpus

CAPTURES = sorted(p for p in (CORPUS / "pcaps").glob("*/*") if p.is_file()) if (CORPUS / "pcaps").is_dir() else []
# Microsoft Network Monitor files ("GMBU"): not a format leakscope reads, refused with a clear message.
NETMON_MAGIC = b"GMBU"


def analyze(path: Path) -> tuple[list[dict[str, Any]], Analysis]:
    analysis = Analysis()
    analysis.file = str(path)
    analyze_file(path, analysis.handler_factory, mail_capture_options())
    return [finding_record(f, show_secrets=True) for f in analysis.findings], analysis


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.fixture(autouse=True)
def _corpus_present() -> None:
    require_corpus("pcaps")


def test_corpus_has_captures() -> None:
    assert len(CAPTURES) >= 70


def _tshark_mail_protocols() -> dict[str, set[str]]:
    summary = CORPUS / "truth" / "_summary.jsonl"
    if not summary.exists():
        return {}
    names = {"smtp": "smtp", "pop": "pop3", "imap": "imap"}
    result = {}
    for line in summary.read_text().splitlines():
        record = json.loads(line)
        result[record["file"]] = {names[p] for p in record.get("protocols", []) if p in names}
        if record.get("http_auth_packets"):  # HTTP makes findings only where it carries authentication
            result[record["file"]].add("http")
    return result


TSHARK_MAIL = _tshark_mail_protocols()
# Captures whose mail tshark finds inside a proxy's tunnel (an HTTP CONNECT, SOCKS5): read through it here too.
TUNNELLED = {
    "zeek/connect-with-smtp.pcap": "SMTP inside an HTTP CONNECT tunnel",
    "arkime/socks5-smtp-503.pcap": "SMTP inside a SOCKS5 tunnel",
}


@pytest.mark.parametrize("path", CAPTURES, ids=[_id(p) for p in CAPTURES])
def test_every_capture_analyzes(path: Path) -> None:
    """Every capture runs; in port-independent mode the mail protocols found are the ones tshark finds."""
    if path.read_bytes()[:4] == NETMON_MAGIC:
        with pytest.raises(CaptureError, match="not a pcap or pcapng file"):
            analyze(path)
        return
    findings, _ = analyze(path)
    for record in findings:
        json.dumps(record)
    analysis = Analysis(AnalysisOptions(all_ports=True))
    analyze_file(path, analysis.handler_factory, mail_capture_options(all_ports=True))
    found = {f.protocol for f in analysis.findings}
    # A SOCKS5 proxy's own username and password (protocol "socks"): no mail protocol tshark's summary lists.
    found.discard("socks")
    expected = TSHARK_MAIL.get(_id(path), set())
    assert found == expected
    if _id(path) in TUNNELLED:
        assert {f.server for f in analysis.findings} == {server for server, _proxy in _through(path)}


def _through(path: Path) -> set[tuple[str, str]]:
    """The servers of a tunnelled capture as the client asked the proxy for them, and the proxy."""
    name = _id(path)
    if name == "zeek/connect-with-smtp.pcap":
        return {("mailin03.sul.t-online.de:25", "http-connect 254.228.86.79:8240")}
    return {("010.000.00.003:25", "socks5 10.0.0.1:1080")}


# ---- clear-text credentials against tshark's credentials tap ----------------------------------------------------


def _tshark_credentials() -> list[tuple[Path, int, str, str]]:
    """(capture, frame, protocol, user) rows of `tshark -z credentials` for SMTP, POP3 and IMAP."""
    rows = []
    for truth in sorted((CORPUS / "truth").glob("*/*.txt")) if (CORPUS / "truth").is_dir() else []:
        text = truth.read_text(errors="replace")
        section = text.split("## tshark -z credentials", 1)
        if len(section) < 2:
            continue
        for line in section[1].splitlines():
            match = re.match(r"^(\d+)\s+(SMTP|POP3|IMAP)\s+(\S+)", line)
            if match:
                capture = CORPUS / "pcaps" / truth.parent.name / truth.name.removesuffix(".txt")
                rows.append((capture, int(match.group(1)), match.group(2), match.group(3)))
    return rows


TSHARK_CREDENTIALS = _tshark_credentials()


@pytest.mark.parametrize(
    ("capture", "frame", "protocol", "user"),
    TSHARK_CREDENTIALS,
    ids=[f"{_id(r[0])}#{r[1]}" for r in TSHARK_CREDENTIALS],
)
def test_credentials_agree_with_tshark(capture: Path, frame: int, protocol: str, user: str) -> None:
    if protocol == "SMTP":
        user = base64.b64decode(user).decode()  # tshark shows the AUTH LOGIN user as sent, in base64
    user = user.strip('"')
    findings, _ = analyze(capture)
    credentials = [f for f in findings if f["type"] == "cleartext-credentials" and f["user"] == user]
    assert credentials, f"no credentials for {user!r}"
    assert credentials[0]["protocol"] == protocol.lower()
    assert credentials[0]["password"]
    assert frame in {e["frame"] for c in credentials for e in c["evidence"]}


def test_tshark_credentials_were_found() -> None:
    assert len(TSHARK_CREDENTIALS) >= 8


def test_pop3_auth_plain_and_user_pass() -> None:
    findings, _ = analyze(require_corpus("pcaps", "ndpi", "pop3.pcap"))
    mechanisms = {(f["mechanism"], f["user"]) for f in findings if f["type"] == "cleartext-credentials"}
    assert ("USER-PASS", "cicciopernacchio@mail.com") in mechanisms
    assert ("PLAIN", "digitalinvestigator@networksims.com") in mechanisms


def test_xoauth2_over_pop3() -> None:
    findings, _ = analyze(require_corpus("pcaps", "suricata-verify", "pop3-auth-01__input.pcap"))
    [credentials] = [f for f in findings if f["type"] == "cleartext-credentials"]
    assert (credentials["mechanism"], credentials["user"], credentials["secret_kind"]) == (
        "XOAUTH2",
        "joe.speedboat",
        "oauth-bearer-token",
    )
    # The server never greets: its first line answers the client's CAPA, whose list offers PLAIN in the clear.
    [methods] = [f for f in findings if f["type"] == "auth-methods"]
    assert methods["mechanisms"] == ["PLAIN", "XOAUTH2", "OAUTHBEARER", "USER"] and methods["cleartext_login"]
    [service] = [f for f in findings if f["type"] == "mail-service"]
    assert service["banner"] is None


# ---- STARTTLS: recorded, and nothing read after it ----------------------------------------------------------------

STARTTLS = [p for p in CAPTURES if re.search(r"starttls|stls|startssl", p.name)]


@pytest.mark.parametrize("path", STARTTLS, ids=[_id(p) for p in STARTTLS])
def test_starttls_is_recorded_and_nothing_after_it_is_read(path: Path) -> None:
    findings, analysis = analyze(path)
    services = [f for f in findings if f["type"] == "mail-service"]
    assert services and all(f["tls"] for f in services)
    assert analysis.stats.tls_sessions == len(services)
    assert not [f for f in findings if f["type"] in ("cleartext-credentials", "ntlm-info")]


# ---- NTLM over SMTP, IMAP and POP3 (Arkime's synthetic capture) ------------------------------------------------


def test_ntlm_synthetic_matches_pyspnego_truth() -> None:
    truth = json.loads(require_corpus("truth", "arkime", "ntlm_synthetic.pcap.mail-ntlm.json").read_text())
    findings, analysis = analyze(require_corpus("pcaps", "arkime", "ntlm_synthetic.pcap"))
    by_protocol = {f["protocol"]: f for f in findings if f["type"] == "ntlm-info" and f["protocol"] != "http"}
    checked = 0
    for message in truth["messages"]:
        protocol = {"SMTP": "smtp", "IMAP": "imap", "POP": "pop3", "POP3": "pop3"}[message["proto"]]
        finding = by_protocol[protocol]
        decoded = message["pyspnego_decode"]
        payload = decoded["Data"]["Payload"]
        if decoded["MessageType"].startswith("CHALLENGE"):
            assert finding["target_name"] == payload["TargetName"]
            version = decoded["Data"]["Version"]
            assert finding["os_version"] == f"{version['Major']}.{version['Minor']}.{version['Build']}"
            checked += 1
        elif decoded["MessageType"].startswith("AUTHENTICATE"):
            assert (finding["user"], finding["domain"], finding["workstation"]) == (
                payload["UserName"],
                payload["DomainName"],
                payload["Workstation"],
            )
            assert any(e["frame"] == message["frame"] for e in finding["evidence"]) or finding["details"]
            checked += 1
    assert checked == 6
    assert sorted(f["user"] for f in by_protocol.values()) == ["jack", "kate", "liam"]
    # Three mail exchanges and two HTTP ones (tests/test_http.py checks those against tshark).
    assert analysis.stats.ntlm_messages == {"negotiate": 5, "challenge": 5, "authenticate": 5}


def test_a_network_monitor_capture_is_named_with_how_to_convert_it() -> None:
    """The corpus's PktMon and Network Monitor captures (ETW network events, which editcap cannot rewrite): a one-line
    error that says what they are and where a pcapng of them comes from."""
    for name in ("PktMon.cap", "capture.cap"):
        with pytest.raises(CaptureError, match="not a pcap or pcapng file") as raised:
            analyze(require_corpus("pcaps", "ntlmrawunhide", name))
        assert "Microsoft Network Monitor capture" in str(raised.value) and "pktmon etl2pcap" in str(raised.value)
