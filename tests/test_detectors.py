"""Detectors over dissected sessions: the five findings, deduplication, masking, hashcat lines, inert output."""

from __future__ import annotations

import base64
import io
import json

import pytest
from rich.console import Console

from dissectors import events as ev
from dissectors import ntlmssp
from dissectors.registry import NOT_MAIL, identify
from passive.analysis.detectors import hashcat_line
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.analysis.software import guess_software
from passive.cli.tables import render_tables
from passive.results.jsonio import write_jsonl
from passive.results.records import MASK, finding_record, summary_record

C, S = ev.Side.CLIENT, ev.Side.SERVER


def run(
    dialogues: list[tuple[tuple[str, int, str, int], list[tuple[ev.Side, bytes]]]],
    options: AnalysisOptions | None = None,
) -> Analysis:
    analysis = Analysis(options)
    analysis.file = "test.pcap"
    frame = 0
    for endpoints, script in dialogues:
        flow = analysis.flow(*endpoints, partial=False)
        for side, data in script:
            frame += 1
            flow.data(side, data, frame, 1_700_000_000.0 + frame)
        flow.close()
    return analysis


def records(analysis: Analysis, show_secrets: bool = False) -> list[dict]:
    return [finding_record(f, show_secrets) for f in analysis.findings]


def of(analysis: Analysis, kind: str, show_secrets: bool = False) -> list[dict]:
    return [r for r in records(analysis, show_secrets) if r["type"] == kind]


SERVER_2019 = ntlmssp.Version(10, 0, 17763)


def _challenge(names: dict[int, str], version: ntlmssp.Version = SERVER_2019) -> bytes:
    return ntlmssp.build_challenge(
        (0x0123456789ABCDEF).to_bytes(8, "little"),
        names.get(ntlmssp.AvId.MsvAvNbDomainName, ""),
        [*names.items(), (ntlmssp.AvId.MsvAvTimestamp, 133_400_000_000_000_000)],
        version=version,
    )


def _authenticate_v1(user: str, domain: str, workstation: str) -> bytes:
    return ntlmssp.build_authenticate(
        user,
        domain,
        workstation,
        lm_response=b"\x11" * 24,
        nt_response=b"\x22" * 24,
        version=ntlmssp.Version(10, 0, 19045),
        flags=0x02008205,
    )


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


SERVER = ("10.0.0.25", 25, "10.0.0.9", 50000)
NAMES = {1: "EXCH01", 2: "CORP", 3: "exch01.corp.example", 4: "corp.example", 5: "example"}


def smtp_ntlm(outcome: bytes) -> list[tuple[ev.Side, bytes]]:
    return [
        (S, b"220 exch01.corp.example Microsoft ESMTP MAIL Service ready\r\n"),
        (C, b"EHLO ws\r\n"),
        (S, b"250-exch01.corp.example Hello\r\n250-AUTH NTLM LOGIN\r\n250 STARTTLS\r\n"),
        (C, b"AUTH NTLM " + b64(ntlmssp.build_negotiate()) + b"\r\n"),
        (S, b"334 " + b64(_challenge(NAMES)) + b"\r\n"),
        (C, b64(_authenticate_v1("jdoe", "CORP", "WS-042")) + b"\r\n"),
        (S, outcome),
    ]


def test_ntlm_info_from_an_smtp_exchange() -> None:
    analysis = run(
        [
            (SERVER, smtp_ntlm(b"235 2.7.0 Authentication successful\r\n")),
            (("10.0.0.25", 25, "10.0.0.10", 50001), smtp_ntlm(b"535 5.7.3 Authentication unsuccessful\r\n")),
        ]
    )
    [finding] = of(analysis, "ntlm-info")
    assert finding["server"] == "10.0.0.25:25" and finding["protocol"] == "smtp"
    assert (
        finding["netbios_computer"],
        finding["netbios_domain"],
        finding["dns_computer"],
        finding["dns_domain"],
        finding["dns_tree"],
    ) == ("EXCH01", "CORP", "exch01.corp.example", "corp.example", "example")
    assert (finding["os_version"], finding["os_release"]) == ("10.0.17763", "Windows Server 2019 / Windows 10 1809")
    assert finding["server_time"].startswith("2023-")
    assert (finding["user"], finding["domain"], finding["workstation"], finding["ntlm_version"]) == (
        "jdoe",
        "CORP",
        "WS-042",
        "NTLMv1",
    )
    assert finding["count"] == 2 and finding["users"] == ["CORP\\jdoe"]
    assert [d["outcome"] for d in finding["details"]] == ["success", "failure"]
    assert finding["severity"] == "high"  # an NTLMv1 response is as good as the password (hashcat 5500)
    assert {e["frame"] for e in finding["evidence"]} >= {5}
    assert analysis.stats.ntlm_messages == {"negotiate": 2, "challenge": 2, "authenticate": 2}
    assert analysis.stats.hashes[0] == f"jdoe::CORP:{'11' * 24}:{'22' * 24}:efcdab8967452301"


def test_hashcat_lines() -> None:
    challenge = ntlmssp.decode(_challenge(NAMES))
    v1 = ntlmssp.decode(_authenticate_v1("jdoe", "CORP", "WS"))
    assert hashcat_line(challenge, v1) == f"jdoe::CORP:{'11' * 24}:{'22' * 24}:efcdab8967452301"
    assert hashcat_line(challenge, None) is None


def test_auth_methods_and_cleartext_credentials_masked() -> None:
    analysis = run(
        [
            (
                ("10.0.0.5", 110, "10.0.0.9", 40000),
                [
                    (S, b"+OK Dovecot (Debian) ready.\r\n"),
                    (C, b"CAPA\r\n"),
                    (S, b"+OK\r\nUSER\r\nSASL PLAIN\r\nSTLS\r\n.\r\n"),
                    (C, b"USER alice\r\n"),
                    (S, b"+OK\r\n"),
                    (C, b"PASS Winter2026!\r\n"),
                    (S, b"+OK Logged in.\r\n"),
                ],
            )
        ]
    )
    [methods] = of(analysis, "auth-methods")
    assert methods["mechanisms"] == ["PLAIN", "USER"] and methods["severity"] == "medium"
    assert methods["cleartext_exposed"] == ["PLAIN", "USER"] and methods["starttls_offered"]
    [credentials] = of(analysis, "cleartext-credentials")
    assert (credentials["mechanism"], credentials["user"], credentials["password"], credentials["outcome"]) == (
        "USER-PASS",
        "alice",
        MASK,
        "success",
    )
    assert of(analysis, "cleartext-credentials", show_secrets=True)[0]["password"] == "Winter2026!"
    [service] = of(analysis, "mail-service")
    assert (service["banner"], service["software"], service["tls"]) == ("Dovecot (Debian) ready.", "Dovecot", False)


def test_open_relay_accepted_and_denied() -> None:
    relay = [
        (S, b"220 mx.corp.example ESMTP Postfix\r\n"),
        (C, b"HELO probe\r\n"),
        (S, b"250 mx.corp.example\r\n"),
        (C, b"MAIL FROM:<>\r\n"),
        (S, b"250 2.1.0 Ok\r\n"),
        (C, b"RCPT TO:<bob@corp.example>\r\n"),
        (S, b"250 Ok\r\n"),
        (C, b"RCPT TO:<victim@outside.test>\r\n"),
        (S, b"250 2.1.5 Ok\r\n"),
        (C, b"RSET\r\n"),
        (S, b"250 Ok\r\n"),
    ]
    denied = [
        (S, b"220 mail.other.example ESMTP\r\n"),
        (C, b"EHLO x\r\n"),
        (S, b"250 mail.other.example\r\n"),
        (C, b"MAIL FROM:<a@b.test>\r\n"),
        (S, b"250 Ok\r\n"),
        (C, b"RCPT TO:<v@outside.test>\r\n"),
        (S, b"554 5.7.1 <v@outside.test>: Relay access denied\r\n"),
    ]
    # A client outside the private ranges: from inside them, relaying is what a server does for its own network.
    outside = ("10.0.0.25", 25, "203.0.113.9", 50000)
    domains = AnalysisOptions(local_domains=frozenset({"corp.example", "other.example"}))  # the servers' domains
    analysis = run([(outside, relay), (("10.0.0.26", 25, "203.0.113.9", 1), denied)], domains)
    relays = of(analysis, "open-relay")
    assert [(r["server"], r["accepted"], r["mail_from"], r["rcpt_to"], r["severity"]) for r in relays] == [
        ("10.0.0.25:25", True, "<>", "victim@outside.test", "high"),
        ("10.0.0.26:25", False, "a@b.test", "v@outside.test", "info"),
    ]


def test_authenticated_transactions_and_local_domains_are_not_relays() -> None:
    session = [
        (S, b"220 gw ESMTP\r\n"),
        (C, b"EHLO x\r\n"),
        (S, b"250 gw\r\n"),
        (C, b"AUTH PLAIN " + b64(b"\0u\0p") + b"\r\n"),
        (S, b"235 ok\r\n"),
        (C, b"MAIL FROM:<u@corp.example>\r\n"),
        (S, b"250 ok\r\n"),
        (C, b"RCPT TO:<x@outside.test>\r\n"),
        (S, b"250 ok\r\n"),
    ]
    local = [
        (S, b"220 gw ESMTP\r\n"),
        (C, b"MAIL FROM:<>\r\n"),
        (S, b"250 ok\r\n"),
        (C, b"RCPT TO:<x@corp.example>\r\n"),
        (S, b"250 ok\r\n"),
    ]
    analysis = run([(SERVER, session), (SERVER, local)], AnalysisOptions(local_domains=frozenset({"corp.example"})))
    assert of(analysis, "open-relay") == []


def test_greeting_classifies_non_standard_ports() -> None:
    assert identify(b"220 mx ESMTP Postfix\r\n", b"") == "smtp"
    assert identify(b"220 ftp ready\r\n", b"EHLO x\r\n") == "smtp"
    assert identify(b"220 ProFTPD ready\r\n", b"USER x\r\n") == NOT_MAIL
    assert identify(b"+OK Dovecot ready.\r\n", b"") == "pop3"
    assert identify(b"* OK [CAPABILITY IMAP4rev1] ready\r\n", b"") == "imap"
    assert identify(b"SSH-2.0-OpenSSH_9.2\r\n", b"") == NOT_MAIL
    assert identify(b"", b"EHLO x\r\n") == "smtp" and identify(b"", b"GET / HTTP/1.1") is None
    analysis = run(
        [
            (
                ("10.0.0.1", 2626, "10.0.0.2", 999),
                [(C, b"EHLO early\r\n"), (S, b"220 box ESMTP\r\n"), (S, b"250 box\r\n")],
            ),
            (("10.0.0.1", 22, "10.0.0.2", 998), [(S, b"SSH-2.0-OpenSSH_9.2\r\n")]),
        ]
    )
    assert [r["server"] for r in of(analysis, "mail-service")] == ["10.0.0.1:2626"]
    assert analysis.flows_ignored == 1


HOSTILE = "[bold red]x[/]\x1b[31m<script>alert(1)</script>\x1b]8;;http://x\x07\u202e"


def test_hostile_names_are_inert_in_tables_and_valid_json() -> None:
    names = {1: HOSTILE, 2: HOSTILE, 3: HOSTILE, 4: "corp.example"}
    script = [
        (S, f"220 {HOSTILE} ESMTP\r\n".encode()),
        (C, b"AUTH NTLM\r\n"),
        (S, b"334 " + b64(_challenge(names)) + b"\r\n"),
        (C, b"*\r\n"),
        (S, b"501 cancelled\r\n"),
    ]
    analysis = run([(SERVER, script)])
    found = records(analysis)
    buffer = io.StringIO()
    write_jsonl(buffer, [*found, summary_record({}, analysis.findings)])
    for line in buffer.getvalue().splitlines():
        decoded = json.loads(line)
        assert "\x1b" not in line and "\x07" not in line
        assert isinstance(decoded, dict)
    assert of(analysis, "ntlm-info")[0]["netbios_computer"] == HOSTILE
    console = Console(file=io.StringIO(), force_terminal=True, width=400, color_system="truecolor")
    render_tables(console, found, summary_record({}, analysis.findings))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b]8" not in out and "\x07" not in out and "\u202e" not in out and "\x1b[31m<" not in out
    assert "[bold red]x[/]" in out and "<script>alert(1)</script>" in out


def test_empty_run_says_what_it_saw_instead_of_nothing_leaked() -> None:
    console = Console(file=io.StringIO(), width=200)
    render_tables(console, [], {"packets_read": 1234, "packets_matched": 0, "flows": 0, "sessions": {}})
    out = " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]
    assert "No mail seen (1,234 packets read; 0 examined; 0 TCP flows reassembled)" in out
    # Every port is read by default: the hint names the option that narrows it, not one that is already on.
    assert "nothing leaked" not in out and "--ports-only" in out and "needs --all-ports" not in out


def test_probe_with_no_answer_says_so() -> None:
    console = Console(file=io.StringIO(), width=200)
    render_tables(console, [], {"services": 2, "services_ok": 0, "services_failed": 2})
    out = " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]
    assert "No service answered: 2 service(s) could not be probed" in out


@pytest.mark.parametrize(
    ("nt_response", "lm_response", "severity"),
    [
        (bytes(24), bytes(24), "high"),  # NTLMv1: DES-based, as good as the password
        (bytes(16) + ntlmssp.ntlmv2_client_blob(0, bytes(8)), bytes(24), "medium"),  # NTLMv2: crackable, slowly
        (b"", bytes(24), "high"),  # LM only
        (b"", b"", "low"),  # anonymous: no credential at all
    ],
)
def test_ntlm_severity_follows_the_response(nt_response: bytes, lm_response: bytes, severity: str) -> None:
    authenticate = ntlmssp.build_authenticate(
        "jdoe", "CORP", "WS-042", lm_response=lm_response, nt_response=nt_response
    )
    exchange = [
        (S, b"220 mx ESMTP\r\n"),
        (C, b"AUTH NTLM\r\n"),
        (S, b"334 \r\n"),
        (C, b64(ntlmssp.build_negotiate()) + b"\r\n"),
        (S, b"334 " + b64(_challenge(NAMES)) + b"\r\n"),
        (C, b64(authenticate) + b"\r\n"),
        (S, b"535 5.7.8 Authentication failed\r\n"),
    ]
    [finding] = of(run([(SERVER, exchange)]), "ntlm-info")
    assert finding["severity"] == severity


def test_evidence_record_made_by_of_is_what_its_init_makes() -> None:
    """EvidenceRecord.of fills the frozen dataclass as pickle does: equal (and hashing equal) to what its __init__
    makes, its fields in their order, and as immutable."""
    import dataclasses

    from passive.findings.model import EvidenceRecord

    for values in (("a.pcap", 4, 1.25, "client", "AUTH NTLM", 3, False), (None, None, None, "server", "", None, True)):
        made = EvidenceRecord.of(*values)
        expected = EvidenceRecord(*values)
        assert made == expected and hash(made) == hash(expected)
        assert list(vars(made).items()) == list(vars(expected).items())
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.line = "changed"  # type: ignore[misc]


def test_courier_pop3s_default_greeting_names_courier_and_an_smtp_one_does_not() -> None:
    """Courier's pop3d greets "+OK Hello there." (nmap-service-probes names it so); after an SMTP greeting's host
    name the same words name nothing."""
    assert guess_software("Hello there.") == "Courier"
    assert guess_software("mx.corp.example Hello there.", host_first=True) is None
    assert guess_software("Hello there. Welcome") is None
