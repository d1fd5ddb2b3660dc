"""Verdicts on captures of real software (issue 14): Postfix, Dovecot, Redis and vsftpd in network namespaces
(tests/verdicts_lab.py), driven by swaks, curl and redis-cli while tcpdump records, then read by the CLI.

- one-sided captures (tcpdump with a filter on the client's address: the server's side is never seen) of SMTP AUTH
  LOGIN and IMAP LOGIN / AUTHENTICATE PLAIN keep each password sent, and nothing else is taken for one;
- a failed attempt with one password then a successful one with another are two attempts of one finding;
- a capture cut after its first packets (mid-stream: no handshake, no greeting) still reads the logins;
- Redis on the POP3 port and vsftpd on the SMTP and POP3 ports are no mail services and leak no credentials;
- Postfix with ``mynetworks`` and ``relay_domains``: relaying for its trusted client, for its relay domain and
  inbound MX delivery are no open relay; a refused relay attempt is only that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import lab as L
from tests import verdicts_lab as V

LEAKSCOPE = [sys.executable, "-m", "passive"]
SMTP_SERVER = f"{L.SRV_IP}:25"
IMAP_SERVER = f"{L.SRV_IP}:143"
# Python's imaplib: the IMAP LOGIN command (curl 7.88 has no way to ask for it when AUTHENTICATE is offered).
IMAPLIB_LOGIN = (
    "import imaplib, sys; m = imaplib.IMAP4(sys.argv[1], timeout=30); m.login(sys.argv[2], sys.argv[3]); "
    "m.select('INBOX'); m.logout()"
)
# The CLI on a capture of a few sessions takes well under this; a hang fails the test.
ANALYZE_TIMEOUT = 120
# The lab's mail domain, as its user would name it: without it no passive verdict says a foreign-looking recipient
# is foreign (passive.analysis.relay_rules, rule 4).
OWN_DOMAIN = ("--local-domain", L.DNS_DOMAIN)


@pytest.fixture(scope="module")
def verdicts_lab() -> Iterator[V.VerdictsLab]:
    if os.geteuid() != 0:
        pytest.skip("the verdicts lab needs root: network namespaces, tcpdump")
    missing = V.missing_tools()
    if missing:
        reason = f"the verdicts lab needs {' '.join(missing)} (tests/setup-and-run.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with V.VerdictsLab() as lab:
        yield lab


def analyzed(pcap: Path, *options: str) -> dict[str, Any]:
    """The JSON document ``leakscope analyze`` writes for ``pcap`` (a real subprocess of the CLI)."""
    out = pcap.with_suffix(f".{abs(hash(options))}.json")
    argv = [*LEAKSCOPE, "analyze", "--format", "json", "-o", str(out), *options, str(pcap)]
    done = subprocess.run(argv, capture_output=True, timeout=ANALYZE_TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr.decode()
    document: dict[str, Any] = json.loads(out.read_text())
    return document


def analyze(pcap: Path, *options: str) -> list[dict[str, Any]]:
    """The findings ``leakscope analyze`` writes for ``pcap``."""
    findings: list[dict[str, Any]] = analyzed(pcap, *options)["findings"]
    return findings


def of(findings: list[dict[str, Any]], kind: str, server: str | None = None) -> list[dict[str, Any]]:
    return [f for f in findings if f["type"] == kind and (server is None or f["server"] == server)]


def swaks(lab: V.VerdictsLab, *arguments: str, source: str = V.TRUSTED_CLIENT) -> subprocess.CompletedProcess[bytes]:
    argv = ["swaks", "--server", L.SRV_IP, "--port", "25", "--local-interface", source, "--ehlo", L.EHLO_NAME,
            "--timeout", str(V.CLIENT_TIMEOUT), *arguments]  # fmt: skip
    return lab.client(argv)


def cut_before(pcap: Path, display_filter: str, out: Path) -> int:
    """Write ``out`` without the packets before the first one ``display_filter`` selects (editcap): a capture
    started mid-stream. Returns how many packets were cut."""
    listed = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", display_filter, "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    first = int(listed.stdout.split()[0])
    subprocess.run(["editcap", str(pcap), str(out), f"1-{first - 1}"], capture_output=True, timeout=60, check=True)
    return first - 1


# ---- SMTP AUTH LOGIN: both sides, one side, mid-stream ---------------------------------------------------------


def _attempts(record: dict[str, Any]) -> list[tuple[int, str, str | None, int]]:
    return [(a["password_no"], a["password"], a["outcome"], a["count"]) for a in record["attempts"]]


def test_smtp_login_attempts_on_both_sides_one_side_and_mid_stream(verdicts_lab: V.VerdictsLab, tmp_path: Path) -> None:
    both, one_sided = tmp_path / "smtp-login.pcap", tmp_path / "smtp-login-client-only.pcap"
    login = ["--auth", "LOGIN", "--auth-user", L.USER, "--from", L.MAIL_FROM, "--to", L.MAIL_TO]
    with (
        verdicts_lab.recording(both, "tcp port 25"),
        verdicts_lab.recording(one_sided, f"tcp port 25 and src host {V.TRUSTED_CLIENT}"),
    ):
        wrong = swaks(verdicts_lab, *login, "--auth-password", L.WRONG_PASSWORD)
        right = swaks(verdicts_lab, *login, "--auth-password", L.PASSWORD)
    assert wrong.returncode != 0 and right.returncode == 0, (wrong.stdout[-800:], right.stdout[-800:])

    [seen] = of(analyze(both, "--show-secrets"), "cleartext-credentials", SMTP_SERVER)
    assert (seen["mechanism"], seen["user"], seen["password"], seen["outcome"]) == (
        "LOGIN",
        L.USER,
        L.PASSWORD,
        "success",
    )
    assert _attempts(seen) == [(1, L.WRONG_PASSWORD, "failure", 1), (2, L.PASSWORD, "success", 1)]
    [masked] = of(analyze(both), "cleartext-credentials", SMTP_SERVER)
    assert masked["id"] == seen["id"] and {a["password"] for a in masked["attempts"]} == {"********"}
    assert L.PASSWORD not in json.dumps(masked) and L.WRONG_PASSWORD not in json.dumps(masked)

    # The server's side never reached the capture: MAIL, RCPT, DATA, the message and QUIT follow each LOGIN, and
    # none of them is taken for a password.
    [client_only] = of(analyze(one_sided, "--show-secrets"), "cleartext-credentials", SMTP_SERVER)
    assert (client_only["mechanism"], client_only["user"], client_only["outcome"]) == ("LOGIN", L.USER, None)
    assert _attempts(client_only) == [(1, L.WRONG_PASSWORD, None, 1), (2, L.PASSWORD, None, 1)]
    assert client_only["id"] == seen["id"]

    # Mid-stream: the capture starts at the first session's AUTH (no handshake, no greeting, no EHLO).
    cut = tmp_path / "smtp-login-mid-stream.pcap"
    assert cut_before(both, 'smtp.req.command == "AUTH"', cut) >= 5
    [mid] = of(analyze(cut, "--show-secrets"), "cleartext-credentials", SMTP_SERVER)
    assert _attempts(mid) == [(1, L.WRONG_PASSWORD, "failure", 1), (2, L.PASSWORD, "success", 1)]


# ---- IMAP LOGIN and AUTHENTICATE PLAIN with the client's side only ---------------------------------------------


def test_imap_logins_with_the_client_side_only(verdicts_lab: V.VerdictsLab, tmp_path: Path) -> None:
    pcap = tmp_path / "imap-client-only.pcap"
    mailbox = f"imap://{L.SRV_IP}/INBOX"
    curl = ["curl", "-sS", "--max-time", str(V.CLIENT_TIMEOUT), mailbox]
    with verdicts_lab.recording(pcap, f"tcp port 143 and src host {V.TRUSTED_CLIENT}"):
        plain = verdicts_lab.client([*curl, "-u", f"{L.USER}:{L.PASSWORD}", "--login-options", "AUTH=PLAIN"])
        command = verdicts_lab.client([sys.executable, "-c", IMAPLIB_LOGIN, L.SRV_IP, L.USER2, L.PASSWORD2])
    assert plain.returncode == 0 and command.returncode == 0, (plain.stderr, command.stderr)

    found = of(analyze(pcap, "--show-secrets"), "cleartext-credentials", IMAP_SERVER)
    shown = sorted((f["mechanism"], f["user"], f["password"], f["outcome"]) for f in found)
    assert shown == [("IMAP-LOGIN", L.USER2, L.PASSWORD2, None), ("PLAIN", L.USER, L.PASSWORD, None)]
    assert [len(f["attempts"]) for f in found] == [1, 1]  # the SELECT, FETCH and LOGOUT that followed are no step


# ---- other protocols on mail ports -----------------------------------------------------------------------------


def test_redis_and_ftp_on_mail_ports_are_not_mail(verdicts_lab: V.VerdictsLab, tmp_path: Path) -> None:
    pcap = tmp_path / "not-mail.pcap"
    redis_host, redis_port = V.REDIS
    redis = ["redis-cli", "-h", redis_host, "-p", str(redis_port)]
    ftp_smtp, ftp_pop3 = (f"ftp://{host}:{port}/" for host, port in (V.FTP_SMTP, V.FTP_POP3))
    curl = ["curl", "-sS", "--max-time", str(V.CLIENT_TIMEOUT)]
    with verdicts_lab.recording(pcap, "tcp port 25 or tcp port 110"):
        answers = [
            verdicts_lab.client([*redis, "PING"]),
            verdicts_lab.client([*redis, "SET", "user", L.USER]),
            verdicts_lab.client([*redis, "AUTH", L.USER, L.PASSWORD]),
            verdicts_lab.client([*curl, ftp_smtp]),
            verdicts_lab.client([*curl, ftp_pop3]),
            verdicts_lab.client([*curl, "-u", f"{L.USER}:{L.PASSWORD}", ftp_pop3]),
            verdicts_lab.client([*curl, "-u", f"{L.USER}:{L.PASSWORD}", ftp_smtp]),
        ]
    outputs = [a.stdout.decode(errors="replace") for a in answers]
    assert outputs[0].strip() == "PONG" and outputs[1].strip() == "OK", outputs
    assert "README" in outputs[3] and "README" in outputs[4], outputs  # anonymous FTP listings on 25 and 110
    assert answers[5].returncode != 0 and answers[6].returncode != 0  # vsftpd refuses the local user

    not_mail = {f"{host}:{port}" for host, port in (V.REDIS, V.FTP_SMTP, V.FTP_POP3)}
    for options in ((), ("--all-ports",)):
        findings = analyze(pcap, "--show-secrets", *options)
        assert [f for f in findings if f["server"] in not_mail] == [], options


# ---- relays through Postfix with mynetworks and relay_domains --------------------------------------------------


def test_postfix_relays_for_its_network_and_domains_and_receives_as_mx(
    verdicts_lab: V.VerdictsLab, tmp_path: Path
) -> None:
    pcap, single = tmp_path / "relays.pcap", tmp_path / "relay-domain.pcap"
    with verdicts_lab.recording(pcap, "tcp port 25"):
        trusted = swaks(verdicts_lab, "--from", L.MAIL_FROM, "--to", V.FOREIGN_RCPT)
        outsider = swaks(verdicts_lab, "--from", "spam@outside.example", "--to", V.FOREIGN_RCPT,
                         source=V.EXTERNAL_CLIENTS[0])  # fmt: skip
        partners = [
            swaks(verdicts_lab, "--from", f"orders@shop{n}.example", "--to", f"sales@{V.RELAY_DOMAIN}", source=ip)
            for n, ip in enumerate(V.EXTERNAL_CLIENTS)
        ]
        inbound = swaks(verdicts_lab, "--from", "news@outside.example", "--to", L.MAIL_TO, source=V.EXTERNAL_CLIENTS[1])
    assert trusted.returncode == 0 and inbound.returncode == 0, (trusted.stdout[-800:], inbound.stdout[-800:])
    assert all(p.returncode == 0 for p in partners), [p.stdout[-400:] for p in partners]
    assert outsider.returncode != 0 and b"Relay access denied" in outsider.stdout

    trusted_net = ("--trusted-net", f"{V.TRUSTED_CLIENT}/32")  # Postfix's own mynetworks
    relays = of(analyze(pcap, *trusted_net), "open-relay", SMTP_SERVER)
    verdicts = sorted((r["verdict"], r["severity"], r["rcpt_to"]) for r in relays)
    assert verdicts == [
        ("refused", "info", V.FOREIGN_RCPT),
        ("relays-for-trusted-network", "info", V.FOREIGN_RCPT),
    ]
    # Without being told the trusted networks: the private-range client is an internal one, never HIGH; the
    # relay domain (taken from three unrelated senders) and the local domain are no relaying at all.
    default = of(analyze(pcap), "open-relay", SMTP_SERVER)
    assert sorted(r["verdict"] for r in default) == ["refused", "relays-for-internal-clients"]
    assert all(r["severity"] != "high" for r in default)

    # One outside sender to the relay domain: told it is the server's (--local-domain), no relay finding.
    with verdicts_lab.recording(single, "tcp port 25"):
        one = swaks(verdicts_lab, "--from", "a@outside.example", "--to", f"ops@{V.RELAY_DOMAIN}",
                    source=V.EXTERNAL_CLIENTS[2])  # fmt: skip
    assert one.returncode == 0, one.stdout[-800:]
    assert of(analyze(single, *trusted_net, "--local-domain", V.RELAY_DOMAIN), "open-relay") == []


# ---- a recipient accepted, the message refused; a proxy's XCLIENT ------------------------------------------------


def test_message_refused_after_the_rcpt_is_no_open_relay(verdicts_lab: V.VerdictsLab, tmp_path: Path) -> None:
    """Postfix services that take every RCPT (a client access map answering OK) and check relaying at DATA or at
    the end of the data refuse the foreign message there: the RCPT's 250 relayed nothing. The same Postfix without
    that check relays (the high verdict the others must not get)."""
    pcap = tmp_path / "late-refusals.pcap"
    ports = (V.DATA_REFUSING_PORT, V.END_REFUSING_PORT, V.RELAYING_PORT)
    outsider = ("--from", "spam@outside.example", "--to", V.FOREIGN_RCPT)
    with verdicts_lab.recording(pcap, "tcp"):
        sent = {
            port: swaks(verdicts_lab, "--port", str(port), *outsider, source=V.EXTERNAL_CLIENTS[0]) for port in ports
        }
    data_refused, end_refused, relayed = (sent[port].stdout.decode().replace("\r", "") for port in ports)
    assert "<** 554 5.7.1" in data_refused and data_refused.index("-> DATA") < data_refused.index("<** 554")
    assert "<** 554 5.7.1" in end_refused and end_refused.index(" -> .\n") < end_refused.index("<** 554")
    assert sent[V.RELAYING_PORT].returncode == 0 and "queued as" in relayed, relayed[-800:]
    for text in (data_refused, end_refused, relayed):
        assert f"RCPT TO:<{V.FOREIGN_RCPT}>\n<-  250 2.1.5" in text

    relays = of(analyze(pcap, "--trusted-net", f"{V.TRUSTED_CLIENT}/32", *OWN_DOMAIN), "open-relay")
    by_port = {int(r["server"].rpartition(":")[2]): r for r in relays}
    assert sorted(by_port) == sorted(ports), relays
    for port, stage in ((V.DATA_REFUSING_PORT, "at DATA: "), (V.END_REFUSING_PORT, "at the end of the data: ")):
        refused = by_port[port]
        assert (refused["verdict"], refused["severity"], refused["accepted"]) == ("refused", "info", False)
        assert refused["reply"].startswith("250 2.1.5")
        assert refused["message_refused"].startswith(stage + "554 5.7.1")
        assert "nothing was relayed" in refused["rule"]
    high = by_port[V.RELAYING_PORT]
    assert (high["verdict"], high["severity"], high["accepted"]) == ("open-relay", "high", True)
    assert "message_refused" not in high


def test_a_rcpt_left_at_a_service_seen_refusing_relaying_later_is_possible_relay(
    verdicts_lab: V.VerdictsLab, tmp_path: Path
) -> None:
    """A relay test that stops at RCPT (swaks --quit-after RCPT) gets the 250 of the services that check relaying at
    DATA or at the end of the data, and of the one that relays. In the same capture the first two refuse another
    message for relaying: their RCPT-only recipients are possible-relay, not high. The relaying service never
    refused later: its RCPT-only recipient stays high."""
    pcap = tmp_path / "rcpt-only.pcap"
    ports = (V.DATA_REFUSING_PORT, V.END_REFUSING_PORT, V.RELAYING_PORT)
    outsider = ("--from", "spam@outside.example", "--to", V.FOREIGN_RCPT)
    with verdicts_lab.recording(pcap, "tcp"):
        for port in ports:
            stopped = swaks(verdicts_lab, "--port", str(port), *outsider, "--quit-after", "RCPT",
                            source=V.EXTERNAL_CLIENTS[0])  # fmt: skip
            assert f"RCPT TO:<{V.FOREIGN_RCPT}>\n<-  250 2.1.5" in stopped.stdout.decode().replace("\r", ""), (
                stopped.stdout[-800:]
            )
        for port in ports[:2]:
            refused = swaks(verdicts_lab, "--port", str(port), *outsider, source=V.EXTERNAL_CLIENTS[1])
            assert "<** 554 5.7.1" in refused.stdout.decode(), refused.stdout[-800:]

    relays = of(analyze(pcap, "--trusted-net", f"{V.TRUSTED_CLIENT}/32", *OWN_DOMAIN), "open-relay")
    verdicts = sorted(
        (int(r["server"].rpartition(":")[2]), d["client"].rpartition(":")[0], r["verdict"])
        for r in relays
        for d in r["details"]
    )
    first, second = V.EXTERNAL_CLIENTS[:2]
    assert verdicts == [
        (V.DATA_REFUSING_PORT, first, "possible-relay"),
        (V.DATA_REFUSING_PORT, second, "refused"),
        (V.END_REFUSING_PORT, first, "possible-relay"),
        (V.END_REFUSING_PORT, second, "refused"),
        (V.RELAYING_PORT, first, "open-relay"),
    ]


# A client that sends a transaction to the recipient its args name (a quoted local part), then RSET and QUIT.
QUOTED_RCPT = (
    V.SCRIPTED_CLIENT
    + r"""
wait_for(b"220 ")
s.sendall(b"EHLO quoted.example\r\n"); wait_for(b"250 ")
s.sendall(b"MAIL FROM:<a@outside.example>\r\n"); wait_for(b"250 2.1.0")
s.sendall(b"RCPT TO:<%s>\r\n" % args[0].encode()); wait_for(b"2.1.5")
s.sendall(b"RSET\r\n"); wait_for(b"2.0.0")
s.sendall(b"QUIT\r\n"); wait_for(b"221 ")
sys.stdout.write(got.decode("latin-1"))
"""
)


def test_quoted_local_parts_are_read_as_postfix_reads_them(verdicts_lab: V.VerdictsLab, tmp_path: Path) -> None:
    """Postfix takes ``"bob@<its domain>"`` (a quoted string alone, routed as its content) from anyone: its own
    domain, no relaying; the relaying service takes ``"v>x"@example.net``, a path whose quoted local part holds a
    ">": relaying to example.net, high."""
    pcap = tmp_path / "quoted.pcap"
    sent = []
    with verdicts_lab.recording(pcap, "tcp"):
        for port, rcpt in ((25, f'"{L.USER2}@{V.LOCAL_DOMAIN}"'), (V.RELAYING_PORT, '"v>x"@example.net')):
            argv = [sys.executable, "-c", QUOTED_RCPT, L.SRV_IP, str(port), V.EXTERNAL_CLIENTS[0], rcpt]
            done = verdicts_lab.client(argv)
            assert done.returncode == 0, done.stderr.decode(errors="replace")
            sent.append(done.stdout.decode())
    assert all("250 2.1.5 Ok" in said for said in sent), sent

    relays = of(analyze(pcap, "--trusted-net", f"{V.TRUSTED_CLIENT}/32", *OWN_DOMAIN), "open-relay")
    assert [(r["server"], r["verdict"], r["rcpt_to"]) for r in relays] == [
        (f"{L.SRV_IP}:{V.RELAYING_PORT}", "open-relay", '"v>x"@example.net')
    ]


def test_xclient_login_is_authentication_and_addr_the_client(verdicts_lab: V.VerdictsLab, tmp_path: Path) -> None:
    """A proxy (the trusted client, Postfix's smtpd_authorized_xclient_hosts) hands the session to Postfix with
    XCLIENT: with LOGIN the client counts as authenticated and Postfix relays for it, which is no open relay; with
    ADDR alone Postfix judges that address, refuses the foreign recipient, and so does the verdict, naming it."""
    pcap = tmp_path / "xclient.pcap"
    proxied = ("--from", L.MAIL_FROM, "--to", V.FOREIGN_RCPT, "--xclient-addr", V.EXTERNAL_CLIENTS[1])
    with verdicts_lab.recording(pcap, "tcp port 25"):
        login = swaks(verdicts_lab, *proxied, "--xclient-login", L.USER2)
        addr = swaks(verdicts_lab, *proxied)
    assert login.returncode == 0 and b"queued as" in login.stdout, login.stdout[-800:]
    assert b"XCLIENT ADDR=" in addr.stdout and b"Relay access denied" in addr.stdout, addr.stdout[-800:]

    findings = analyze(pcap, "--trusted-net", f"{V.TRUSTED_CLIENT}/32")
    [refused] = of(findings, "open-relay", SMTP_SERVER)
    assert (refused["verdict"], refused["accepted"]) == ("refused", False)
    assert [d["client"].rpartition(":")[0] for d in refused["details"]] == [V.EXTERNAL_CLIENTS[1]]
    # The sessions' replies stay with their commands: the EHLO after XCLIENT is answered by its own 250.
    [service] = of(findings, "mail-service", SMTP_SERVER)
    assert service["banner"].startswith(L.MAIL_HOST)


def test_probe_relay_test_follows_an_accepted_rcpt_with_data(verdicts_lab: V.VerdictsLab, tmp_path: Path) -> None:
    """``probe --relay-test`` against the service that checks relaying at DATA: every RCPT is accepted, every DATA
    refused, so no variant is accepted and there is no open relay; against the one that relays, the first DATA is
    taken (354) and the test stops there, high, with no message sent."""
    relay_test = ["--relay-test", "--relay-to", "example.net"]  # a probe's vantage point is not assumed trusted
    documents = {}
    for port in (V.DATA_REFUSING_PORT, V.RELAYING_PORT):
        argv = [*LEAKSCOPE, "probe", "--format", "json", *relay_test, f"smtp://{L.SRV_IP}:{port}"]
        done = verdicts_lab.client(argv)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        documents[port] = json.loads(done.stdout)["findings"]

    checked = documents[V.DATA_REFUSING_PORT]
    [service] = of(checked, "mail-service")
    variants = service["relay_test"]["variants"]
    taken = [v for v in variants if v["rcpt_reply"] and v["rcpt_reply"].startswith("250")]
    assert taken and all(v["data_reply"].startswith("554 5.7.1") and not v["accepted"] for v in taken)
    assert service["relay_test"]["variants_accepted"] == 0
    assert all(f["severity"] != "high" for f in of(checked, "open-relay"))
    assert {f["verdict"] for f in of(checked, "open-relay")} == {"refused"}

    [service] = of(documents[V.RELAYING_PORT], "mail-service")
    assert service["relay_test"]["stopped"].startswith("DATA taken for variant 1 (354)")
    assert [f["severity"] for f in of(documents[V.RELAYING_PORT], "open-relay")] == ["high"]


# ---- a message's end line with a bare LF (SMTP smuggling) ---------------------------------------------------------

# What both smugglers do first: connect from ``source``, greet, and open a message to a local recipient.
SMUGGLER_OPENING = (
    V.SCRIPTED_CLIENT
    + r"""
local_rcpt, foreign_rcpt = args[:2]
wait_for(b"220 ")
s.sendall(b"EHLO smuggler.example\r\n"); wait_for(b"250 ")
s.sendall(b"MAIL FROM:<a@outside.example>\r\nRCPT TO:<%s>\r\nDATA\r\n" % local_rcpt.encode()); wait_for(b"354 ")
"""
)
# A client that sends a message whose first end line is "\n.\n", then, in the same write, a second transaction to a
# foreign recipient ending with the exact "\r\n.\r\n" (the smuggling of CVE-2023-51764), and prints what it got.
SMUGGLER = (
    SMUGGLER_OPENING
    + r"""
s.sendall(b"Subject: first\r\n\r\nhello\n.\nMAIL FROM:<b@outside.example>\r\nRCPT TO:<%s>\r\nDATA\r\n"
          b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n" % foreign_rcpt.encode())
wait_for(b"queued as", 10); time.sleep(1.0)
try:
    s.sendall(b"QUIT\r\n"); wait_for(b"221 ", 5)
except OSError:
    pass
sys.stdout.write(got.decode("latin-1"))
"""
)


def test_bare_lf_end_line_read_as_postfix_read_it(verdicts_lab: V.VerdictsLab, tmp_path: Path) -> None:
    """Postfix 3.7 with ``smtpd_forbid_bare_newline = no`` (Debian 12's default) ends the message at ``\\n.\\n`` and
    runs the smuggled transaction: its foreign recipient is accepted and relayed, and the capture says so, with the
    ``lax_end_taken`` anomaly. The same service with ``smtpd_forbid_bare_newline = yes`` reads on to the exact end:
    one message, the smuggled lines in it, and no relay read from them (``lax_end_in_message``)."""
    pcap = tmp_path / "smuggling.pcap"
    ports = (V.RELAYING_PORT, V.EXACT_END_PORT)
    with verdicts_lab.recording(pcap, "tcp"):
        smuggler = [sys.executable, "-c", SMUGGLER, L.SRV_IP]
        addresses = [V.EXTERNAL_CLIENTS[0], L.MAIL_TO, V.FOREIGN_RCPT]
        got = {port: verdicts_lab.client([*smuggler, str(port), *addresses]) for port in ports}
    took = got[V.RELAYING_PORT].stdout.decode().replace("\r", "")
    assert took.count("queued as") == 2 and "250 2.1.5" in took and "354 " in took, took
    read_on = got[V.EXACT_END_PORT].stdout.decode().replace("\r", "")
    assert read_on.count("queued as") == 1 and read_on.count("250 2.1.5") == 1 and "221 " in read_on, read_on

    document = analyzed(pcap, "--trusted-net", f"{V.TRUSTED_CLIENT}/32", *OWN_DOMAIN)
    relays = {int(r["server"].rpartition(":")[2]): r for r in of(document["findings"], "open-relay")}
    assert list(relays) == [V.RELAYING_PORT], relays
    high = relays[V.RELAYING_PORT]
    assert (high["verdict"], high["severity"], high["rcpt_to"]) == ("open-relay", "high", V.FOREIGN_RCPT)
    services = {int(f["server"].rpartition(":")[2]): f for f in of(document["findings"], "mail-service")}
    assert (services[V.RELAYING_PORT]["message_end"], services[V.RELAYING_PORT]["severity"]) == ("lax", "low")
    assert (services[V.EXACT_END_PORT]["message_end"], services[V.EXACT_END_PORT]["severity"]) == ("exact", "info")
    anomalies = document["summary"]["dissector_anomalies"]
    assert (anomalies.get("lax_end_taken"), anomalies.get("lax_end_in_message")) == (1, 1), anomalies


# The same smuggling with a bare CR ("\r.\r", Cisco Secure Email's end line): the smuggled lines end at the exact end,
# or ("bare-lf") at "\n.\n"; then two NOOPs and QUIT once the message is answered.
SMUGGLER_CR = (
    SMUGGLER_OPENING
    + r"""
ending = sys.argv[6]
smuggled = b"Subject: first\r\n\r\nhello\r.\rMAIL FROM:<b@outside.example>\r\nRCPT TO:<%s>\r\n" % foreign_rcpt.encode()
if ending == "exact":
    s.sendall(smuggled + b"DATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
else:
    s.sendall(smuggled + b"\n.\n")
wait_for(b"queued as", 10); time.sleep(1.0)
s.sendall(b"NOOP\r\nNOOP\r\nQUIT\r\n"); wait_for(b"221 ", 5)
sys.stdout.write(got.decode("latin-1"))
"""
)


def test_bare_cr_end_line_read_as_postfix_read_it(verdicts_lab: V.VerdictsLab, tmp_path: Path) -> None:
    """Postfix 3.7 reads lines to their LF, whatever ``smtpd_forbid_bare_newline`` says: ``hello\\r.\\r`` is message
    text to it (a server that cleans bare CRs into CR LF, as Cisco Secure Email does by default, would end the
    message there). The smuggled foreign recipient after it is never accepted, and no relay is read from it
    (``lax_end_in_message``, ``message_end`` ``exact``). When the smuggled lines end at ``\\n.\\n``, the service that
    takes bare LFs ends the message there: no relay either, and that end line is told as taken (``message_end``
    ``lax``)."""
    pcap = tmp_path / "smuggling-cr.pcap"
    runs = ((V.RELAYING_PORT, "exact"), (V.EXACT_END_PORT, "exact"), (V.RELAYING_PORT, "bare-lf"))
    with verdicts_lab.recording(pcap, "tcp"):
        smuggler = [sys.executable, "-c", SMUGGLER_CR, L.SRV_IP]
        addresses = [V.EXTERNAL_CLIENTS[0], L.MAIL_TO, V.FOREIGN_RCPT]
        got = [verdicts_lab.client([*smuggler, str(port), *addresses, ending]).stdout.decode() for port, ending in runs]
    for text in got:  # one message each, its smuggled RCPT never answered as a command
        text = text.replace("\r", "")
        assert text.count("queued as") == 1 and text.count("250 2.1.5") == 1 and "221 " in text, text

    document = analyzed(pcap, "--trusted-net", f"{V.TRUSTED_CLIENT}/32")
    assert of(document["findings"], "open-relay") == []
    services = {int(f["server"].rpartition(":")[2]): f for f in of(document["findings"], "mail-service")}
    assert (services[V.RELAYING_PORT]["message_end"], services[V.RELAYING_PORT]["severity"]) == ("lax", "low")
    assert (services[V.EXACT_END_PORT]["message_end"], services[V.EXACT_END_PORT]["severity"]) == ("exact", "info")
    anomalies = document["summary"]["dissector_anomalies"]
    assert (anomalies.get("lax_end_taken"), anomalies.get("lax_end_in_message")) == (1, 3), anomalies
