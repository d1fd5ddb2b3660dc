"""Mail dialects as real servers and clients speak them, read end to end by the CLI.

Each test writes a capture of one dialogue (the NTLM messages made by pyspnego's real initiator and acceptor), runs
``python -m passive analyze`` on it in a subprocess and checks the findings against what pyspnego's own parser reads
in the same messages.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes, write

spnego = pytest.importorskip("spnego")
from spnego._ntlm_raw.messages import AvId, Challenge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
USER, DOMAIN, PASSWORD = "alice", "CONTOSO", "Secr3t-dialect"
PORTS = {"smtp": 25, "pop3": 110, "imap": 143}
Turns = list[tuple[bool, bytes]]


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


@pytest.fixture
def accounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyspnego's acceptor checks the client's response against this credential file."""
    path = tmp_path / "ntlm-users"
    path.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(path))


def exchange(protocol: str = "ntlm") -> list[bytes]:
    """The tokens of one real authentication, client's first: NEGOTIATE, CHALLENGE, AUTHENTICATE (and, for
    ``negotiate``, SPNEGO's final server token)."""
    client = spnego.client(f"{DOMAIN}\\{USER}", PASSWORD, hostname="mx", service="smtp", protocol=protocol)
    server = spnego.server(protocol=protocol)
    tokens = [client.step()]
    tokens.append(server.step(tokens[0]))
    tokens.append(client.step(tokens[1]))
    final = server.step(tokens[2])
    assert server.complete
    return [token for token in (*tokens, final) if token]


def challenge_of(token: bytes) -> Challenge:
    """The oracle: pyspnego's reading of the CHALLENGE inside a token (raw, or wrapped in SPNEGO)."""
    return Challenge.unpack(token[token.index(b"NTLMSSP\0") :])


def analyze(tmp_path: Path, protocol: str, turns: Turns, *options: str) -> list[dict]:
    segments = conversation_segments(turns, server=("10.0.0.2", PORTS[protocol]))
    capture = write(tmp_path / f"{protocol}.pcap", pcap_bytes(ethernet_frames(segments)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "passive", "analyze", "--format", "jsonl", *options, str(capture)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def ntlm_info(records: list[dict]) -> dict:
    found = [record for record in records if record["type"] == "ntlm-info"]
    assert len(found) == 1, [record["type"] for record in records]
    return found[0]


def assert_server_told(info: dict, challenge: Challenge) -> None:
    assert info["target_name"] == challenge.target_name
    assert info["netbios_computer"] == challenge.target_info[AvId.nb_computer_name]
    assert info["netbios_domain"] == challenge.target_info[AvId.nb_domain_name]
    assert info["dns_computer"] == challenge.target_info[AvId.dns_computer_name]


# -- NTLM inside GSS-API mechanisms ---------------------------------------------------------------------------------


def _gss_dialogue(protocol: str, mechanism: str, tokens: list[bytes]) -> Turns:
    first, second, third, *final = tokens
    if protocol == "smtp":
        turns: Turns = [(True, b"220 mx.contoso.com Microsoft ESMTP MAIL Service ready\r\n"), (False, b"EHLO ws\r\n")]
        turns += [(True, b"250-mx.contoso.com Hello\r\n250-AUTH GSSAPI GSS-SPNEGO NTLM\r\n250 OK\r\n")]
        turns += [(False, b"AUTH " + mechanism.encode() + b"\r\n"), (True, b"334 \r\n"), (False, b64(first) + b"\r\n")]
        turns += [(True, b"334 " + b64(second) + b"\r\n"), (False, b64(third) + b"\r\n")]
        turns += [(True, b"334 " + b64(final[0]) + b"\r\n"), (False, b"\r\n")] if final else []
        return [*turns, (True, b"235 2.7.0 Authentication successful\r\n")]
    if protocol == "imap":  # SASL-IR (RFC 4959)
        turns = [(True, b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=GSS-SPNEGO] ready\r\n")]
        turns += [(False, b"a1 AUTHENTICATE " + mechanism.encode() + b" " + b64(first) + b"\r\n")]
        turns += [(True, b"+ " + b64(second) + b"\r\n"), (False, b64(third) + b"\r\n")]
        turns += [(True, b"+ " + b64(final[0]) + b"\r\n"), (False, b"\r\n")] if final else []
        return [*turns, (True, b"a1 OK AUTHENTICATE completed\r\n")]
    turns = [(True, b"+OK POP3 ready\r\n"), (False, b"AUTH " + mechanism.encode() + b"\r\n"), (True, b"+ \r\n")]
    turns += [(False, b64(first) + b"\r\n"), (True, b"+ " + b64(second) + b"\r\n"), (False, b64(third) + b"\r\n")]
    turns += [(True, b"+ " + b64(final[0]) + b"\r\n"), (False, b"\r\n")] if final else []
    return [*turns, (True, b"+OK logged in\r\n")]


GSS_CASES = [("smtp", "GSSAPI"), ("imap", "GSS-SPNEGO"), ("pop3", "GSS-SPNEGO")]


@pytest.mark.parametrize(("protocol", "mechanism"), GSS_CASES)
def test_ntlm_wrapped_in_spnego_under_a_gss_mechanism_is_read(
    tmp_path: Path, accounts: None, protocol: str, mechanism: str
) -> None:
    """Exchange's and Windows' SASL GSSAPI is Negotiate: without Kerberos, SPNEGO tokens carry NTLMSSP. The server's
    CHALLENGE leaks the same names as under AUTH NTLM, and the client's AUTHENTICATE gives a crackable hash."""
    tokens = exchange("negotiate")
    assert tokens[0][:1] == b"\x60" and tokens[1][:1] == b"\xa1"  # SPNEGO, not raw NTLMSSP
    hashes = tmp_path / "hashes.txt"
    info = ntlm_info(analyze(tmp_path, protocol, _gss_dialogue(protocol, mechanism, tokens), "--hashes", str(hashes)))
    assert_server_told(info, challenge_of(tokens[1]))
    assert (info["user"], info["domain"], info["ntlm_version"], info["outcome"]) == (USER, DOMAIN, "NTLMv2", "success")
    assert info["evidence"][0]["line"].startswith(("334 oY", "+ oY"))  # the SPNEGO-wrapped CHALLENGE
    assert hashes.read_text().startswith(f"{USER}::{DOMAIN}:")


# -- a capture of the server's side only ----------------------------------------------------------------------------


def _server_side(protocol: str, challenge: bytes) -> Turns:
    if protocol == "smtp":
        lines = [b"220 mx ESMTP\r\n", b"250-mx\r\n250 AUTH NTLM\r\n", b"334 " + b64(challenge) + b"\r\n", b"235 ok\r\n"]
    elif protocol == "pop3":
        lines = [b"+OK POP3 ready\r\n", b"+OK\r\n", b"+ " + b64(challenge) + b"\r\n", b"+OK done\r\n"]
    else:
        lines = [b"* OK IMAP4rev1 ready\r\n", b"+ \r\n", b"+ " + b64(challenge) + b"\r\n", b"a1 OK done\r\n"]
    return [(True, line) for line in lines]


@pytest.mark.parametrize("protocol", sorted(PORTS))
def test_a_challenge_whose_auth_command_was_not_captured_is_still_read(
    tmp_path: Path, accounts: None, protocol: str
) -> None:
    """Asymmetric routing shows a span port one direction only: the server's CHALLENGE, though no AUTH command is
    in the capture, says what it always says, pointing at its own frame."""
    challenge = exchange()[1]
    info = ntlm_info(analyze(tmp_path, protocol, _server_side(protocol, challenge)))
    assert_server_told(info, challenge_of(challenge))
    assert info["user"] is None and info["outcome"] is None
    assert [e["frame"] for e in info["evidence"]] == [6]  # handshake 1-3, then the server's three lines 4, 5, 6


def test_a_literal_continuation_is_no_challenge(tmp_path: Path) -> None:
    """A server's "+ Ready for literal" outside any exchange is only a continuation: no NTLM finding."""
    turns: Turns = [(True, b"* OK IMAP4rev1 ready\r\n"), (False, b"a1 LOGIN {5}\r\n"), (True, b"+ Ready\r\n")]
    turns += [(False, b"alice pw\r\n"), (True, b"a1 OK logged in\r\n")]
    records = analyze(tmp_path, "imap", turns)
    assert "ntlm-info" not in [record["type"] for record in records]
    assert [r["user"] for r in records if r["type"] == "cleartext-credentials"] == ["alice"]


# -- continuations without their space ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_a_continuation_without_its_space_still_carries_the_challenge(
    tmp_path: Path, accounts: None, protocol: str
) -> None:
    """RFC 5034 and RFC 9051 put a space after "+"; "+TlRM..." is still the server's next step, and the client's
    AUTHENTICATE after it is its answer, not a command."""
    negotiate, challenge, authenticate = exchange()
    if protocol == "pop3":
        turns: Turns = [(True, b"+OK POP3 ready\r\n"), (False, b"AUTH NTLM\r\n"), (True, b"+\r\n")]
        verdict = b"-ERR [AUTH] failed\r\n"
    else:
        turns = [(True, b"* OK IMAP4rev1 ready\r\n"), (False, b"a1 AUTHENTICATE NTLM\r\n"), (True, b"+\r\n")]
        verdict = b"a1 NO AUTHENTICATE failed\r\n"
    turns += [(False, b64(negotiate) + b"\r\n"), (True, b"+" + b64(challenge) + b"\r\n")]
    turns += [(False, b64(authenticate) + b"\r\n"), (True, verdict)]
    info = ntlm_info(analyze(tmp_path, protocol, turns))
    assert_server_told(info, challenge_of(challenge))
    assert (info["user"], info["outcome"]) == (USER, "failure")


# -- Exchange's X-EXPS ----------------------------------------------------------------------------------------------


def test_exchange_x_exps_lists_mechanisms_and_runs_an_ntlm_exchange(tmp_path: Path, accounts: None) -> None:
    """Exchange servers list "X-EXPS GSSAPI NTLM" (and, in 2003, "X-EXPS=LOGIN"): the NTLM they answer anyone with
    over it is on offer as with AUTH, and an "X-EXPS NTLM" exchange leaks the same names."""
    negotiate, challenge, authenticate = exchange()
    ehlo = b"250-ex01.contoso.com Hello [10.0.0.1]\r\n250-SIZE 37748736\r\n250-PIPELINING\r\n250-X-ANONYMOUSTLS\r\n"
    ehlo += b"250-X-EXPS GSSAPI NTLM\r\n250-X-EXPS=LOGIN\r\n250-8BITMIME\r\n250 XRDST\r\n"
    turns: Turns = [(True, b"220 ex01.contoso.com Microsoft ESMTP MAIL Service ready\r\n"), (False, b"EHLO ws\r\n")]
    turns += [
        (True, ehlo),
        (False, b"X-EXPS NTLM " + b64(negotiate) + b"\r\n"),
        (True, b"334 " + b64(challenge) + b"\r\n"),
    ]
    turns += [(False, b64(authenticate) + b"\r\n"), (True, b"235 2.7.0 Authentication successful\r\n")]
    records = analyze(tmp_path, "smtp", turns)
    offered = next(record for record in records if record["type"] == "auth-methods")
    assert offered["mechanisms"] == ["GSSAPI", "NTLM", "LOGIN"] and "NTLM" in offered["cleartext_exposed"]
    assert offered["evidence"][0]["line"] == "250-X-EXPS GSSAPI NTLM\n250-X-EXPS=LOGIN"
    info = ntlm_info(records)
    assert_server_told(info, challenge_of(challenge))
    assert (info["user"], info["outcome"]) == (USER, "success")


# -- IMAP ID (RFC 2971) ---------------------------------------------------------------------------------------------


def test_imap_id_names_the_client_software_and_the_server_software_the_banner_hides(tmp_path: Path) -> None:
    """Thunderbird, Apple Mail and Outlook send ID before logging in; Dovecot answers with its name. The client
    software is an inventory fact of the service (escaped, as any name from the network), literals and NIL values
    included, and the server's ID names its software when a custom banner does not."""
    turns: Turns = [(True, b"* OK [CAPABILITY IMAP4rev1 ID LITERAL+ AUTH=PLAIN] mail ready.\r\n")]
    turns += [(False, b'a0 ID ("name" "Thunderbird" "version" "115.3.1" "os" "Windows" "os-version" "10.0")\r\n')]
    turns += [(True, b'* ID ("name" "Dovecot" "version" NIL)\r\na0 OK ID completed.\r\n')]
    turns += [(False, b'a1 ID ("name" {11+}\r\nMail\xe2\x80\x8bApp\x07 "vendor" "Apple")\r\n'), (True, b"a1 OK ok\r\n")]
    turns += [(False, b'a2 ID ("vendor" "Microsoft" "bad-pair")\r\n'), (True, b"a2 OK ok\r\n")]
    turns += [(False, b"a3 ID NIL\r\n"), (True, b"* ID NIL\r\na3 OK ok\r\n")]
    turns += [(False, b"a4 LOGOUT\r\n"), (True, b"* BYE bye\r\na4 OK bye\r\n")]
    records = analyze(tmp_path, "imap", turns)
    service = next(record for record in records if record["type"] == "mail-service")
    assert service["software"] == "Dovecot" and service["banner"] == "mail ready."
    assert service["client_software"] == ["Thunderbird 115.3.1 (Windows 10.0)", "Mail\u200bApp\x07", "Microsoft"]
    cited = [(e["frame"], e["line"]) for e in service["evidence"]]
    assert cited[1:] == [
        (5, 'a0 ID ("name" "Thunderbird" "version" "115.3.1" "os" "Windows" "os-version" "10.0")'),
        (6, '* ID ("name" "Dovecot" "version" NIL)'),
        (7, 'a1 ID ("name" {11+}'),
        (9, 'a2 ID ("vendor" "Microsoft" "bad-pair")'),
    ]
    table = subprocess.run(
        [sys.executable, "-m", "passive", "analyze", str(tmp_path / "imap.pcap")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=120,
    )
    assert table.returncode == 0, table.stderr
    assert "Thunderbird 115.3.1 (Windows 10.0)" in table.stdout
    assert "Mail\\u200bApp\\x07" in table.stdout and "\u200b" not in table.stdout  # shown inert


# -- Exchange's greeting --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "greeting"),
    [
        ("imap", b"* OK The Microsoft Exchange IMAP4 service is ready. [%s]\r\n"),
        ("pop3", b"+OK The Microsoft Exchange POP3 service is ready. [%s]\r\n"),
    ],
)
def test_the_host_name_exchange_hides_in_its_greeting_is_a_leak(tmp_path: Path, protocol: str, greeting: bytes) -> None:
    """Exchange 2013 and later end IMAP and POP3 greetings with their own name in base64 of UTF-16LE: an internal
    name given to anyone who connects, which "no leak found" must not hide."""
    host = "EXCH01.corp.contoso.local"
    quit_ = (b"a1 LOGOUT\r\n", b"* BYE\r\na1 OK\r\n") if protocol == "imap" else (b"QUIT\r\n", b"+OK\r\n")
    turns: Turns = [(True, greeting % b64(host.encode("utf-16-le"))), (False, quit_[0]), (True, quit_[1])]
    service = next(record for record in analyze(tmp_path, protocol, turns) if record["type"] == "mail-service")
    assert (service["banner_host"], service["software"], service["severity"]) == (host, "Microsoft Exchange", "low")
    assert [e["frame"] for e in service["evidence"]] == [4]
    plain: Turns = [(True, greeting.replace(b" [%s]", b"")), (False, quit_[0]), (True, quit_[1])]
    service = next(record for record in analyze(tmp_path, protocol, plain) if record["type"] == "mail-service")
    assert (service["banner_host"], service["severity"]) == (None, "info")


def test_only_a_host_name_is_taken_from_the_brackets() -> None:
    """The brackets of other greetings (odd lengths, text that is no host name, controls) give nothing."""
    from passive.analysis.software import banner_host

    def bracketed(text: str) -> str:
        return f"The Microsoft Exchange IMAP4 service is ready. [{base64.b64encode(text.encode('utf-16-le')).decode()}]"

    assert banner_host(bracketed("MN2PR01CA0007")) == "MN2PR01CA0007"
    assert banner_host(bracketed("host\x1b[2Jname")) is None
    assert banner_host(bracketed("two words")) is None
    assert banner_host("Dovecot ready. [abcd]") is None  # three bytes: no UTF-16
    assert banner_host("ready [ZwBQZQATIOy==]") is None  # as a mangled copy of a banner shows it
    assert banner_host("[" + "A" * 100_000 + "]") is None


def test_exchange_x_anonymoustls_starts_tls_like_starttls(tmp_path: Path) -> None:
    """Exchange servers start TLS between themselves with X-ANONYMOUSTLS: after its 220 the stream is TLS, so
    nothing in the ciphertext is read as commands or replies (here TLS records that happen to hold an AUTH PLAIN
    line and a 235), and the session is counted as TLS."""
    client_hello = b"\x16\x03\x01\x00\x40\x01\x00\x00\x3c\x03\x03" + bytes(32) + b"\r\nAUTH PLAIN AGFsaWNlAHB3\r\n"
    server_hello = b"\x16\x03\x03\x00\x40\x02\x00\x00\x3c\x03\x03" + bytes(32) + b"\r\n235 2.7.0 ok\r\n"
    ehlo = b"250-ex01.contoso.com Hello [10.0.0.1]\r\n250-STARTTLS\r\n250-X-ANONYMOUSTLS\r\n250 XRDST\r\n"
    turns: Turns = [(True, b"220 ex01.contoso.com Microsoft ESMTP MAIL Service ready\r\n"), (False, b"EHLO ex02\r\n")]
    turns += [(True, ehlo), (False, b"X-ANONYMOUSTLS\r\n"), (True, b"220 2.0.0 SMTP server ready\r\n")]
    turns += [(False, client_hello), (True, server_hello)]
    records = analyze(tmp_path, "smtp", turns)
    assert "cleartext-credentials" not in [record["type"] for record in records]
    service = next(record for record in records if record["type"] == "mail-service")
    assert service["tls"] is True and [e["frame"] for e in service["evidence"]] == [4, 8]
    assert records[-1]["tls_sessions"] == 1 and not records[-1]["dissector_anomalies"]


# -- the lab's real servers -----------------------------------------------------------------------------------------


def test_real_dovecot_and_postfix_dialogues(mail_lab: Any, tmp_path: Path) -> None:
    """Dovecot and Postfix (NTLM answered by Samba) as Thunderbird-like clients speak to them: IMAP ID then
    AUTHENTICATE NTLM with SASL-IR, POP3's bare AUTH list then AUTH NTLM with "+" prompts, SMTP's EHLO and AUTH
    NTLM pipelined in one segment. Each gives the DC's names and the user, at the CHALLENGE's own frame; the IMAP
    client's software is listed, and Dovecot's ID names the software its custom banner hides."""
    from tests import lab as L

    pcap = tmp_path / "dialects.pcap"
    with mail_lab.recording(pcap, "tcp"):
        for dialogue in ("imap-id-sasl-ir", "pop3-auth-list-ntlm", "smtp-pipelined-ntlm"):
            argv = [sys.executable, str(ROOT / "tests" / "dialect_client.py"), dialogue, L.SRV_IP]
            done = mail_lab.client([*argv, L.USER, L.PASSWORD, L.AD_DOMAIN])
            assert done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "passive", "analyze", "--format", "jsonl", str(pcap)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    by_protocol = {record["protocol"]: record for record in records if record["type"] == "ntlm-info"}
    assert sorted(by_protocol) == ["imap", "pop3", "smtp"]
    for info in by_protocol.values():
        assert (info["netbios_computer"], info["netbios_domain"], info["dns_domain"]) == (
            L.DC_NAME,
            L.AD_DOMAIN,
            L.DNS_DOMAIN,
        )
        assert (info["user"], info["outcome"]) == (L.USER, "success")
        assert info["evidence"][0]["line"].startswith(("+ TlRMTVNTUAAC", "334 TlRMTVNTUAAC"))
    services = {record["protocol"]: record for record in records if record["type"] == "mail-service"}
    assert services["imap"]["banner"] == L.DOVECOT_GREETING and services["imap"]["software"] == "Dovecot"
    assert services["imap"]["client_software"] == ["Thunderbird 115.3.1 (Windows)"]
    offered = {record["protocol"]: record for record in records if record["type"] == "auth-methods"}
    assert "NTLM" in offered["pop3"]["mechanisms"] and "NTLM" in offered["smtp"]["mechanisms"]


# -- what the client's side alone says ------------------------------------------------------------------------------


def test_the_clients_side_alone_cites_the_step_that_named_the_client(tmp_path: Path, accounts: None) -> None:
    """A capture of the client's side only (asymmetric routing): the AUTHENTICATE names user, domain and
    workstation, and the finding cites its frame (it cited nothing before)."""
    negotiate, _challenge, authenticate = exchange()
    turns: Turns = [(False, b"EHLO ws\r\n"), (False, b"AUTH NTLM " + b64(negotiate) + b"\r\n")]
    turns += [(False, b64(authenticate) + b"\r\n"), (False, b"QUIT\r\n")]
    info = ntlm_info(analyze(tmp_path, "smtp", turns))
    assert (info["user"], info["domain"], info["outcome"]) == (USER, DOMAIN, None)
    assert [(e["frame"], e["side"], e["line"]) for e in info["evidence"]] == [(6, "client", "********")]


def test_a_negotiate_naming_the_client_is_reported_when_no_challenge_answers_it(tmp_path: Path) -> None:
    """Some clients put their domain and workstation in the NEGOTIATE (OEM strings); a server that refuses NTLM
    then sends no CHALLENGE, yet the names crossed in clear."""
    from dissectors.ntlmssp.build import build_negotiate

    negotiate = build_negotiate(domain="CORP", workstation="LAPTOP-42")
    turns: Turns = [(True, b"220 mx ESMTP\r\n"), (False, b"EHLO ws\r\n"), (True, b"250-mx\r\n250 AUTH NTLM\r\n")]
    turns += [(False, b"AUTH NTLM " + b64(negotiate) + b"\r\n"), (True, b"504 5.7.4 Unrecognized authentication\r\n")]
    info = ntlm_info(analyze(tmp_path, "smtp", turns))
    assert (info["domain"], info["workstation"], info["user"], info["outcome"]) == (
        "CORP",
        "LAPTOP-42",
        None,
        None,  # the 504 refused the mechanism: it judged no credentials
    )
    assert (info.get("netbios_computer"), info["severity"]) == (None, "low")
    assert [e["frame"] for e in info["evidence"]] == [7, 8]
    plain = build_negotiate()  # what nmap's ntlm-info scripts send: no names, no finding when refused
    turns[3] = (False, b"AUTH NTLM " + b64(plain) + b"\r\n")
    assert "ntlm-info" not in [record["type"] for record in analyze(tmp_path, "smtp", turns)]


def test_the_report_says_the_exchange_greeting_leaks_its_host(tmp_path: Path) -> None:
    """The HTML report's server card names the host the greeting encodes as what leaks, not "Nothing leaks"."""
    host = "EXCH01.corp.contoso.local"
    greeting = b"* OK The Microsoft Exchange IMAP4 service is ready. [" + b64(host.encode("utf-16-le")) + b"]\r\n"
    analyze(tmp_path, "imap", [(True, greeting), (False, b"a1 LOGOUT\r\n"), (True, b"* BYE\r\na1 OK\r\n")])
    base = tmp_path / "run"
    argv = [sys.executable, "-m", "passive", "analyze", "-oA", str(base), str(tmp_path / "imap.pcap")]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    page = base.with_suffix(".html").read_text()
    assert f"Leaks: its internal host name ({host}) in its greeting." in page and "Nothing leaks." not in page
    assert f'encodes the host <span class="traffic">{host}</span>' in page
