"""leakscope probe: targets, failure handling on loopback, and real servers in the mail lab (Dovecot, Postfix with
Dovecot SASL, the Windows-like NTLM server), cross-checked with nmap's NSE scripts."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dissectors import ntlmssp
from passive.probe.prober import ProbeOptions, probe_services, relay_variants
from passive.probe.targets import Service, TargetError, parse_ports, parse_target, parse_targets
from passive.results.compare import compare, from_nmap, from_records
from passive.results.nmap_xml import read_nmap_xml
from passive.results.records import finding_record
from tests import lab as L

LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
TSHARK_PAYLOAD = ("-T", "fields", "-e", "tcp.payload")
NTLM_FIELDS = ("target_name", "netbios_computer", "netbios_domain", "dns_computer", "dns_domain", "dns_tree")


# ---- targets ------------------------------------------------------------------------------------------------------


def test_targets_expand_to_services() -> None:
    assert [(s.port, s.protocol, s.implicit_tls) for s in parse_target("mail.example")] == [
        (25, "smtp", False),
        (587, "smtp", False),
        (465, "smtp", True),
        (110, "pop3", False),
        (995, "pop3", True),
        (143, "imap", False),
        (993, "imap", True),
    ]
    (service,) = parse_target("imaps://[2001:db8::1]")
    assert (service.host, service.port, service.protocol, service.implicit_tls) == ("2001:db8::1", 993, "imap", True)
    assert service.address == "[2001:db8::1]:993"
    (service,) = parse_target("submission://10.0.0.1")
    assert (service.port, service.protocol, service.implicit_tls, service.named) == (587, "smtp", False, True)
    (service,) = parse_target("10.0.0.1:2525")
    assert (service.protocol, service.named) == ("smtp", True)
    (service,) = parse_target("10.0.0.1:4000")
    assert service.protocol is None  # decided by the greeting
    assert [s.port for s in parse_target("10.0.0.1", parse_ports("110,1100-1101"))] == [110, 1100, 1101]
    assert len(parse_targets(["10.0.0.1:25", "smtp://10.0.0.1"])) == 1


@pytest.mark.parametrize("bad", ["", "ftp://x", "host:0", "host:99999", "bad host", "smtp://", "[::1]x", "a:b"])
def test_bad_targets_are_rejected(bad: str) -> None:
    with pytest.raises(TargetError):
        parse_target(bad)


def test_relay_variants_are_nmaps_sixteen_null_sender_first() -> None:
    variants = relay_variants("example.com", "example.net", "mx.example.org", "192.0.2.1")
    assert len(variants) == 16
    assert variants[0] == ("", "relaytest@example.net")
    assert variants[-1] == ("antispam@[192.0.2.1]", "example.net!relaytest@mx.example.org")


# ---- failures on loopback -----------------------------------------------------------------------------------------


def _challenge_line() -> bytes:
    acceptor = L.NtlmAcceptor(L.FAKE_PROFILES[L.WIN2022_IP])
    return b"334 " + base64.b64encode(acceptor.challenge(ntlmssp.build_negotiate())) + b"\r\n"


async def _good_smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal SMTP server that does not advertise NTLM but answers it (servers hide it)."""
    writer.write(b"220 loopback.test ESMTP ready\r\n")
    while line := await reader.readline():
        verb = line.strip().upper()
        if verb.startswith(b"EHLO"):
            writer.write(b"250-loopback.test\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n")
        elif verb == b"AUTH NTLM":
            writer.write(b"334 \r\n")
        elif verb.startswith(b"TLRMTVNTUAAB"):
            writer.write(_challenge_line())
        elif verb == b"*":
            writer.write(b"501 5.7.0 cancelled\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        await writer.drain()
    writer.close()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # accepts, never says a word


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x00\xff\x1b[31m garbage \x07\r\nmore\r\n")
    await writer.drain()
    await reader.read()


async def _endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 ")
    try:
        while True:
            writer.write(b"A" * 4096)
            await writer.drain()
    except ConnectionError:
        pass


async def _probe_loopback() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    servers = {}
    for name, handler in (("good", _good_smtp), ("silent", _silent), ("garbage", _garbage), ("endless", _endless)):
        servers[name] = await asyncio.start_server(handler, "127.0.0.1", 0)
    ports = {name: server.sockets[0].getsockname()[1] for name, server in servers.items()}
    closed = await asyncio.start_server(_silent, "127.0.0.1", 0)
    ports["refused"] = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()

    def service(name: str, *, tls: bool = False) -> Service:
        port = ports["garbage" if name == "tls" else name]
        return Service(name, "127.0.0.1", port, "smtp", tls, named=True)

    services = [service(n) for n in ("good", "silent", "garbage", "endless", "refused")] + [service("tls", tls=True)]
    options = ProbeOptions(connect_timeout=2, read_timeout=1, service_timeout=10, max_line=8192, concurrency=3)
    run = await probe_services(services, options)
    for server in servers.values():
        server.close()
    return {r.target: r for r in run.reports}, [finding_record(f) for f in run.findings]


def test_each_failure_is_reported_per_service_and_the_others_complete() -> None:
    reports, findings = asyncio.run(_probe_loopback())
    assert reports["good"].status == "ok"
    assert reports["good"].ntlm == "challenge" and reports["good"].ntlm_advertised is False
    assert (reports["refused"].stage, reports["refused"].error) == ("connect", "connection refused")
    assert reports["silent"].stage == "greeting" and "no answer within" in reports["silent"].error
    assert reports["garbage"].stage == "greeting" and "not an SMTP reply" in reports["garbage"].error
    assert "\x1b" not in reports["garbage"].error and "\\x1b" in reports["garbage"].error  # quoted, never raw
    assert reports["endless"].stage == "greeting" and "longer than 8192 bytes" in reports["endless"].error
    assert reports["tls"].stage == "tls" and reports["tls"].error.startswith("TLS handshake failed")
    ntlm = [f for f in findings if f["type"] == "ntlm-info"]
    assert len(ntlm) == 1 and ntlm[0]["source"] == "active"
    profile = L.FAKE_PROFILES[L.WIN2022_IP]
    assert {k: ntlm[0][k] for k in NTLM_FIELDS} == {k: profile[k] for k in NTLM_FIELDS}
    assert ntlm[0]["os_version"] == "10.0.20348" and ntlm[0]["ntlm_advertised"] is False
    assert ntlm[0]["ntlm_over_tls"] is False
    assert {f["type"] for f in findings} == {"mail-service", "auth-methods", "ntlm-info"}


# A line of unclosed [CAPABILITY openings just under 64 KiB: the regular expression that read response codes scanned
# for the "]" again from every opening (1.6 s of CPU per line on the loop, where no timeout can interrupt it).
PATHOLOGICAL_CAPABILITIES = b"* OK " + b"[CAPABILITY " * 5400 + b"\r\n"


async def _pathological_imap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greets, then answers every command with forty pathological lines before the tagged completion."""
    writer.write(b"* OK loopback IMAP ready\r\n")
    try:
        while line := await reader.readline():
            tag = line.split(b" ", 1)[0]
            for _ in range(40):
                writer.write(PATHOLOGICAL_CAPABILITIES)
                await writer.drain()
            writer.write(b"* BYE\r\n" + tag + b" OK done\r\n" if b"LOGOUT" in line.upper() else tag + b" NO no\r\n")
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def _probe_pathological(services: int, options: ProbeOptions) -> tuple[float, list[Any]]:
    server = await asyncio.start_server(_pathological_imap, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    targets = [Service(f"s{n}", "127.0.0.1", port, "imap", False, named=True) for n in range(services)]
    started = asyncio.get_running_loop().time()
    run = await probe_services(targets, options)
    elapsed = asyncio.get_running_loop().time() - started
    server.close()
    return elapsed, run.reports


def test_probe_deadline_holds_against_pathological_capabilities() -> None:
    """Eight services on one loop, each fed 2.6 MB of lines that once cost the IMAP dissector 1.6 s each: every
    service ends (done or timed out) within its service timeout plus a second, and so does the whole run."""
    options = ProbeOptions(
        connect_timeout=2, read_timeout=2, service_timeout=3, max_line=70_000, max_bytes=64 << 20, concurrency=8
    )
    elapsed, reports = asyncio.run(_probe_pathological(8, options))
    assert len(reports) == 8
    for report in reports:
        assert report.elapsed_seconds < options.service_timeout + 1, (report.status, report.error)
        assert report.status == "ok" or "service timeout" in (report.error or ""), report.error
    assert elapsed < options.service_timeout + options.connect_timeout + 1


# ---- the mail lab -------------------------------------------------------------------------------------------------


def _probe_cli(lab: L.MailLab, *args: str, timeout: float = 120) -> tuple[int, dict[str, Any], str]:
    proc = lab.client([*LEAKSCOPE, "probe", "--format", "json", *args], timeout=timeout)
    return proc.returncode, json.loads(proc.stdout), proc.stderr.decode(errors="replace")


def _by(findings: list[dict[str, Any]], kind: str, server: str) -> dict[str, Any]:
    (match,) = [f for f in findings if f["type"] == kind and f["server"] == server]
    return match


LAB_SERVICES = [
    f"{L.SRV_IP}:25",
    f"submission://{L.SRV_IP}",
    f"{L.SRV_IP}:110",
    f"imap://{L.SRV_IP}:143",
    *(f"{ip}:{port}" for ip in (L.WIN2019_IP, L.WIN2022_IP) for port in (25, 110, 143)),
]


@pytest.fixture(scope="module")
def lab_probe(mail_lab: L.MailLab) -> dict[str, Any]:
    """One probe of every lab service, plus an unreachable host and a refused port in the same run."""
    rc, document, stderr = _probe_cli(
        mail_lab, *LAB_SERVICES, "10.99.0.99:25", f"{L.SRV_IP}:26", "--connect-timeout", "3"
    )
    return {"rc": rc, "document": document, "stderr": stderr}


def test_lab_probe_reports_ntlm_and_mechanisms_as_configured(lab_probe: dict[str, Any]) -> None:
    findings = lab_probe["document"]["findings"]
    assert all(f["source"] == "active" for f in findings)
    for port, proto in ((25, "smtp"), (587, "smtp"), (110, "pop3"), (143, "imap")):
        server = f"{L.SRV_IP}:{port}"
        ntlm = _by(findings, "ntlm-info", server)
        assert ntlm["protocol"] == proto
        assert {k: ntlm[k] for k in NTLM_FIELDS} == {k: L.SAMBA_NTLM_SERVER[k] for k in NTLM_FIELDS}
        assert ntlm["os_version"] == "6.1.0" and ntlm["server_time"] is not None
        assert ntlm["ntlm_advertised"] is True and ntlm["ntlm_over_tls"] is True  # STARTTLS first, as nmap
        methods = _by(findings, "auth-methods", server)
        assert set(methods["mechanisms_after_tls"]) >= set(L.DOVECOT_MECHS)
        service = _by(findings, "mail-service", server)
        assert service["tls_cert_subject"] == f"CN={L.MAIL_HOST}" and service["tls_version"].startswith("TLS")
        assert service["starttls_result"] == "accepted"
    assert _by(findings, "auth-methods", f"{L.SRV_IP}:587")["mechanisms"] == []  # smtpd_tls_auth_only
    assert set(_by(findings, "auth-methods", f"{L.SRV_IP}:25")["mechanisms"]) == set(L.DOVECOT_MECHS)
    for ip in (L.WIN2019_IP, L.WIN2022_IP):
        profile = L.FAKE_PROFILES[ip]
        for port, proto in ((25, "smtp"), (110, "pop3"), (143, "imap")):
            ntlm = _by(findings, "ntlm-info", f"{ip}:{port}")
            assert {k: ntlm[k] for k in NTLM_FIELDS} == {k: profile[k] for k in NTLM_FIELDS}
            assert ntlm["os_version"] == ".".join(map(str, profile["version"]))
            methods = _by(findings, "auth-methods", f"{ip}:{port}")
            assert set(L.FAKE_MECHS[proto]) <= set(methods["mechanisms"])
            assert methods["mechanisms_after_tls"] is None


def test_lab_probe_reports_unreachable_and_refused_and_exits_1(lab_probe: dict[str, Any]) -> None:
    probes = {p["server"]: p for p in lab_probe["document"]["summary"]["probes"]}
    assert probes["10.99.0.99:25"]["status"] == "error" and probes["10.99.0.99:25"]["stage"] == "connect"
    assert probes[f"{L.SRV_IP}:26"]["error"] == "connection refused"
    assert sum(p["status"] == "ok" for p in probes.values()) == len(LAB_SERVICES)
    assert lab_probe["rc"] == 1 and "10.99.0.99:25: could not be probed" in lab_probe["stderr"]


def test_starttls_never_shows_what_a_cleartext_client_leaks(mail_lab: L.MailLab) -> None:
    rc, document, _ = _probe_cli(mail_lab, f"pop3://{L.SRV_IP}", "--starttls", "never")
    assert rc == 0
    findings = document["findings"]
    ntlm = _by(findings, "ntlm-info", f"{L.SRV_IP}:110")
    assert ntlm["ntlm_over_tls"] is False and ntlm["dns_computer"] == L.SAMBA_NTLM_SERVER["dns_computer"]
    methods = _by(findings, "auth-methods", f"{L.SRV_IP}:110")
    assert methods["mechanisms_after_tls"] is None and "PLAIN" in methods["cleartext_exposed"]
    assert document["summary"]["probes"][0]["starttls"] == "not-tried"


def test_hostile_names_stay_inert_in_the_table(mail_lab: L.MailLab) -> None:
    wide = {**os.environ, "COLUMNS": "300"}
    proc = mail_lab.client([*LEAKSCOPE, "probe", f"{L.HOSTILE_IP}:25", f"{L.HOSTILE_IP}:143"], timeout=120, env=wide)
    out = proc.stdout.decode()
    assert proc.returncode == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "<script>alert(1)</script>" in out  # shown as text, not interpreted


@pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed (tests/setup-and-run.sh installs it)")
def test_nmap_nse_scripts_give_the_same_ntlm_fields_and_mechanisms(
    mail_lab: L.MailLab, lab_probe: dict[str, Any], tmp_path: Path
) -> None:
    """nmap's *-ntlm-info scripts upgrade with STARTTLS when offered, and so does the probe (--starttls auto): both
    NTLM exchanges run inside TLS on Dovecot/Postfix, in clear text on the Windows-like server (no STARTTLS)."""
    xml = tmp_path / "nmap.xml"
    tmp_path.chmod(0o755)
    argv = ["nmap", "-n", "-Pn", "-sT", "-p", "25,110,143,587", "--script"]
    argv += ["smtp-ntlm-info,pop3-ntlm-info,imap-ntlm-info,smtp-commands", "-oX", str(xml)]
    proc = mail_lab.client([*argv, L.SRV_IP, L.WIN2019_IP, L.WIN2022_IP], timeout=180)
    assert proc.returncode == 0, proc.stderr
    nmap = read_nmap_xml(xml)
    document = compare([from_records("active", lab_probe["document"]["findings"]), from_nmap(nmap)])
    compared = 0
    for server in document["servers"]:
        for row in server["fields"]:
            both = {"active", "nmap"} <= set(row["values"])
            if both and (row["finding"] == "ntlm-info" or row["field"] == "mechanisms"):
                assert row["status"] == "agree", (server["server"], row)
                compared += 1
    # 10 NTLM services x 7 fields (os_release is leakscope's own) + 4 SMTP mechanism listings (smtp-commands)
    assert compared == 10 * 7 + 4


def _client_payloads(pcap: Path, server_port: int) -> str:
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", f"tcp.dstport == {server_port} && tcp.len > 0", *TSHARK_PAYLOAD],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return b"".join(bytes.fromhex(line.replace(":", "")) for line in out.split()).decode("utf-8", "replace")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_relay_test_reports_accepted_variants_and_never_sends_a_message(mail_lab: L.MailLab, tmp_path: Path) -> None:
    """The open relay takes the first variant's RCPT and its DATA (354): the test stops there and closes the
    connection without the end of the data, so no message (nor QUIT, which would be message text) is sent."""
    pcap = tmp_path / "relay.pcap"
    with mail_lab.recording(pcap, f"tcp and host {L.RELAY_IP}"):
        rc, document, _ = _probe_cli(mail_lab, f"smtp://{L.RELAY_IP}", "--relay-test", "--relay-to", "example.net")
    assert rc == 0
    findings = document["findings"]
    relay = _by(findings, "mail-service", f"{L.RELAY_IP}:25")["relay_test"]
    assert relay["variants_tried"] == 1 and relay["stopped"].startswith("DATA taken for variant 1 (354)")
    [accepted] = [v for v in relay["variants"] if v["accepted"]]
    assert accepted["mail_from"] == "<>" and accepted["rcpt_to"] == "relaytest@example.net"
    assert accepted["data_reply"].startswith("354")
    open_relay = [f for f in findings if f["type"] == "open-relay" and f["accepted"]]
    assert open_relay and open_relay[0]["severity"] == "high" and open_relay[0]["source"] == "active"
    sent = _client_payloads(pcap, 25)
    lines = [line for line in sent.split("\r\n") if line]
    commands = [line.split(" ")[0].split(":")[0].upper() for line in lines]
    assert commands.count("RCPT") == len([v for v in relay["variants"] if v["rcpt_reply"]])
    assert commands[-1] == "DATA" and commands.count("DATA") == 1 and "BDAT" not in commands


IMPLICIT_TLS_PORTS = {465: "smtp", 993: "imap", 995: "pop3"}


def test_implicit_tls_services_are_probed_and_recognised_on_the_wire(mail_lab: L.MailLab, tmp_path: Path) -> None:
    """Postfix on 465 and Dovecot on 993/995 speak TLS from the first byte: the probe works inside it, and a capture
    of real clients shows the services and their TLS, and nothing of what was said inside."""
    tmp_path.chmod(0o755)
    pcap, message = tmp_path / "implicit.pcap", tmp_path / "message.eml"
    message.write_text(f"From: <{L.MAIL_FROM}>\r\nTo: <{L.MAIL_TO}>\r\nSubject: implicit TLS\r\n\r\nHello.\r\n")
    curl = ["curl", "-sS", "-k", "--max-time", "30", "-u", f"{L.USER}:{L.PASSWORD}", "--login-options", "AUTH=PLAIN"]
    with mail_lab.recording(pcap, f"tcp and host {L.SRV_IP}"):
        for argv in (
            [f"smtps://{L.SRV_IP}/{L.EHLO_NAME}", "--mail-from", L.MAIL_FROM, "--mail-rcpt", L.MAIL_TO],
            [f"imaps://{L.SRV_IP}/"],
            [f"pop3s://{L.SRV_IP}/"],
        ):
            upload = ["-T", str(message)] if argv[0].startswith("smtps") else ["-o", "/dev/null"]
            result = mail_lab.client([*curl, *argv, *upload])
            assert result.returncode == 0, result.stderr

    rc, document, stderr = _probe_cli(mail_lab, *(f"{proto}s://{L.SRV_IP}" for proto in ("smtp", "imap", "pop3")))
    assert rc == 0, stderr
    active = document["findings"]
    probes = {p["server"]: p for p in document["summary"]["probes"]}
    for port, proto in IMPLICIT_TLS_PORTS.items():
        server = f"{L.SRV_IP}:{port}"
        assert probes[server]["status"] == "ok" and probes[server]["starttls"] == "implicit"
        service = _by(active, "mail-service", server)
        assert service["protocol"] == proto and service["tls"] is True and service["starttls_result"] == "implicit"
        assert service["tls_cert_subject"] == f"CN={L.MAIL_HOST}" and service["tls_version"].startswith("TLS")
        assert service["banner"]  # read inside TLS
        methods = _by(active, "auth-methods", server)
        assert methods["mechanisms"] == [] and set(methods["mechanisms_after_tls"]) >= set(L.DOVECOT_MECHS)
        ntlm = _by(active, "ntlm-info", server)
        assert {k: ntlm[k] for k in NTLM_FIELDS} == {k: L.SAMBA_NTLM_SERVER[k] for k in NTLM_FIELDS}
        assert ntlm["ntlm_over_tls"] is True
    assert _by(active, "mail-service", f"{L.SRV_IP}:465")["software"].startswith("Postfix")

    analyzed = mail_lab.client([*LEAKSCOPE, "analyze", str(pcap), "--format", "json"], timeout=120)
    assert analyzed.returncode == 0, analyzed.stderr
    passive = json.loads(analyzed.stdout)["findings"]
    # Only the inventory: what was said (the PLAIN password above all) stayed inside TLS.
    assert {(f["type"], f["server"], f["protocol"]) for f in passive} == {
        ("mail-service", f"{L.SRV_IP}:{port}", proto) for port, proto in IMPLICIT_TLS_PORTS.items()
    }
    for service in passive:
        # TLS from the first byte: no listing was seen, so whether STARTTLS is offered there is unknown.
        assert service["tls"] is True and service["banner"] is None and service["starttls_offered"] is None
        [evidence] = service["evidence"]
        assert evidence["side"] == "client" and evidence["frame"] > 0
        assert evidence["line"] == "[TLS ClientHello from the first byte: implicit TLS]"
    assert L.PASSWORD.encode() not in pcap.read_bytes()
