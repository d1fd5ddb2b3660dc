"""leakscope probe against servers on loopback that lie, stall or are no mail servers at all: what the probe says
of them must be true, and every step must end within the service timeout."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import socket
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dissectors import ntlmssp
from passive.cli.main import main
from passive.probe.options import ServiceReport
from passive.probe.prober import ProbeOptions, probe_services
from passive.probe.targets import Service, parse_target
from passive.probe.tls import certificate_facts
from passive.results.nessus import NessusItem
from passive.results.nessus_verify import verify
from passive.results.records import finding_record

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
QUICK = ProbeOptions(connect_timeout=2, read_timeout=2, service_timeout=5, concurrency=4)


async def _serve(
    handlers: dict[str, Handler], services: Callable[[dict[str, int]], list[Service]], options: ProbeOptions
) -> tuple[dict[str, ServiceReport], list[dict[str, Any]], float]:
    """Starts each handler on a port of its own, probes the services made from those ports; the reports by server,
    the finding records and the run's wall time."""
    servers = {name: await asyncio.start_server(handler, "127.0.0.1", 0) for name, handler in handlers.items()}
    ports = {name: server.sockets[0].getsockname()[1] for name, server in servers.items()}
    started = time.monotonic()
    try:
        run = await probe_services(services(ports), options)
    finally:
        for server in servers.values():
            server.close()
    elapsed = time.monotonic() - started
    return {r.server: r for r in run.reports}, [finding_record(f) for f in run.findings], elapsed


async def _ftp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An FTP server: greets with 220 as SMTP does, and refuses every SMTP command."""
    writer.write(b"220 ProFTPD 1.3.5 Server (Debian) [::ffff:127.0.0.1]\r\n")
    while line := await reader.readline():
        if line.upper().startswith(b"QUIT"):
            writer.write(b"221 Goodbye.\r\n")
            break
        writer.write(b"500 " + line.split()[0] + b" not understood\r\n")
        await writer.drain()
    writer.close()


async def _terse_smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An SMTP server whose greeting names no mail software (a bare host name): its EHLO answer shows it is SMTP."""
    writer.write(b"220 mx01\r\n")
    while line := await reader.readline():
        verb = line.strip().upper()
        if verb.startswith(b"EHLO"):
            writer.write(b"250-mx01\r\n250 AUTH PLAIN LOGIN\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        else:
            writer.write(b"502 5.5.2 not implemented\r\n")
        await writer.drain()
    writer.close()


def test_a_220_greeting_on_an_unknown_port_is_smtp_only_once_ehlo_is_answered() -> None:
    """A bare host probed on other ports (``-p 21,2526``) meets FTP's 220 greeting too: EHLO and HELO refused, it
    is reported as a failed probe of an unknown protocol, and no mail-service or other finding names it SMTP. A
    terse SMTP greeting that EHLO then confirms still is one."""

    def services(ports: dict[str, int]) -> list[Service]:
        return parse_target("127.0.0.1", (ports["ftp"], ports["smtp"]))

    reports, findings, _ = asyncio.run(_serve({"ftp": _ftp, "smtp": _terse_smtp}, services, QUICK))
    assert len(reports) == 2
    ftp = next(r for r in reports.values() if "ProFTPD" in (r.banner or ""))
    smtp = next(r for r in reports.values() if r is not ftp)
    assert ftp.status == "error" and ftp.protocol is None
    assert "not confirmed" in (ftp.error or "")
    assert [f for f in findings if f["server"] == ftp.server] == []
    assert smtp.status == "ok" and smtp.protocol == "smtp"
    kinds = {f["type"] for f in findings if f["server"] == smtp.server}
    assert kinds == {"mail-service", "auth-methods"}


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Slowloris: a greeting byte every 0.3 s, each well within the read timeout, the line never done in time."""
    try:
        for byte in b"220 slow.example ESMTP " + b"." * 100:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.3)
    except ConnectionError:
        pass


def test_a_trickling_server_is_cut_off_at_the_service_timeout_and_told_so() -> None:
    """Every byte came within the read timeout: what ended the probe is the service timeout, and the reason says so
    (not "no answer within 0.2 s", which the server never did)."""
    options = ProbeOptions(connect_timeout=1, read_timeout=1, service_timeout=2)

    def services(ports: dict[str, int]) -> list[Service]:
        return [Service("slow", "127.0.0.1", ports["slow"], "smtp", False, named=True)]

    reports, _, elapsed = asyncio.run(_serve({"slow": _trickle}, services, options))
    (report,) = reports.values()
    assert report.stage == "greeting"
    assert report.error == "the service did not finish within the service timeout"
    assert elapsed < options.service_timeout + 1


async def _slow_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request after 0.6 s (within the read timeout) with a 401 offering NTLM but no challenge."""
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(0.6)
    writer.write(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


def test_http_paths_share_the_service_timeout() -> None:
    """Ten paths, each on a connection of its own, each answered in time: together they take 6 s, and the service
    timeout (2 s) bounds them all, not each connection (the deadline is the service's, not renewed per path). What
    the paths asked before it showed is kept in the probe status."""
    options = ProbeOptions(connect_timeout=1, read_timeout=1, service_timeout=2)

    def services(ports: dict[str, int]) -> list[Service]:
        return parse_target(f"http://127.0.0.1:{ports['web']}/")

    reports, _, elapsed = asyncio.run(_serve({"web": _slow_http}, services, options))
    (report,) = reports.values()
    assert report.error == "the service did not finish within the service timeout"
    assert report.elapsed_seconds < options.service_timeout + 0.5 and elapsed < options.service_timeout + 1
    asked = report.endpoints
    assert 1 <= len(asked) < 10 and all(e["offered"] == ["NTLM"] and not e["challenge"] for e in asked)
    assert report.ntlm_advertised is True and report.ntlm == "no-challenge"


async def _mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts the connection and never says a word (a SYN proxy, a tarpit, a web server on port 25)."""
    await reader.read()


def test_a_server_that_never_spoke_is_no_mail_service() -> None:
    """A capture of a connection the server never answered makes no finding; nor does the probe's: a mail-service
    finding without a line of the server's would let ``compare --nessus`` confirm Nessus' SMTP check ("the service
    answered") where the probe could not talk to it."""

    def services(ports: dict[str, int]) -> list[Service]:
        return [Service("mute", "127.0.0.1", ports["mute"], "smtp", False, named=True)]

    reports, findings, _ = asyncio.run(_serve({"mute": _mute}, services, QUICK))
    (report,) = reports.values()
    assert report.stage == "greeting" and "no answer" in (report.error or "")
    assert findings == []
    host, port = report.server.rsplit(":", 1)
    item = NessusItem(host, host, int(port), "smtp", 34861, "SMTP Server Connection Check", "mail-service", "smtp", "")
    [record] = verify([item], findings, [report.to_dict()])["records"]
    assert record["verdict"] == "refuted"


def _challenge_once() -> Handler:
    """A web server whose first request draws an NTLM CHALLENGE and whose later ones get no answer at all."""
    asked: list[bytes] = []
    challenge = base64.b64encode(ntlmssp.build_challenge(bytes(8), "WEB", [("netbios_computer", "WEB01")]))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.readuntil(b"\r\n\r\n"))
        if len(asked) > 1:
            await reader.read()
            return
        writer.write(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM " + challenge + b"\r\nContent-Length: 0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    return handle


def test_a_web_server_silent_after_its_challenge_keeps_what_it_leaked() -> None:
    """HTTP asks each path on a connection of its own: the last one's silence takes nothing from the first's
    CHALLENGE."""

    def services(ports: dict[str, int]) -> list[Service]:
        return parse_target(f"http://127.0.0.1:{ports['web']}/")

    reports, findings, _ = asyncio.run(_serve({"web": _challenge_once()}, services, QUICK))
    (report,) = reports.values()
    assert report.status == "error" and report.ntlm == "challenge"
    [ntlm] = [f for f in findings if f["type"] == "ntlm-info"]
    assert ntlm["netbios_computer"] == "WEB01"


def _odd_certificate() -> bytes:
    """A self-signed certificate with a 100-character common name (X.520 allows 64) and serial number -1 (RFC 5280
    wants it positive): OpenSSL serves it, and the parser warns about both as it reads them."""
    key = ec.generate_private_key(ec.SECP256R1())
    with warnings.catch_warnings():  # the builder warns about the long name too
        warnings.simplefilter("ignore")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x" * 100, _validate=False)])
    moment = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    builder = x509.CertificateBuilder(name, name, key.public_key(), 0x7F, moment, moment + datetime.timedelta(3650))
    der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    assert der.count(b"\x02\x01\x7f") == 1  # the serial number's INTEGER
    return der.replace(b"\x02\x01\x7f", b"\x02\x01\xff")


def test_a_certificate_the_parser_warns_about_is_read_without_a_warning() -> None:
    """The parser's warnings about a server's certificate went to the probe's standard error, and where warnings
    are errors (python -W error) the first such certificate ended the whole run with a traceback."""
    der = _odd_certificate()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        facts = certificate_facts(der)
    assert facts["tls_cert_subject"] == "CN=" + "x" * 100 and facts["tls_cert_self_issued"] is True
    assert facts["tls_cert_sha256"] == hashlib.sha256(der).hexdigest()


def _refused_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--ehlo", "x.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA"),
        ("--ehlo", "bad name"),
        ("--ehlo", "[not-an-address]"),
        ("--ehlo", "caf\udcc3"),  # a non-UTF-8 argument, as Python decodes it
        ("--relay-to", "example.net>\r\nDATA"),
        ("--relay-from", "a b.example"),
    ],
)
def test_names_the_probe_writes_into_its_commands_are_checked(option: str, value: str) -> None:
    """EHLO's name and the relay test's domains go into the commands as they are: a line break there would send
    commands of the user's making (DATA and a message, which the probe promises never to send), a name Python cannot
    encode ended the run with a traceback. Each is a usage error before anything is sent."""
    result = CliRunner().invoke(main, ["probe", option, value, "--relay-test", f"smtp://127.0.0.1:{_refused_port()}"])
    assert result.exit_code == 2, result.output
    assert ("Invalid value" in result.output and result.exception is None) or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--ehlo", "mx-1.example"),
        ("--ehlo", "[192.0.2.1]"),
        ("--ehlo", "[IPv6:2001:db8::1]"),
        ("--relay-to", "Bücher.de"),
    ],
)
def test_good_names_are_taken(option: str, value: str) -> None:
    """Domain names (internationalized ones too) and RFC 5321 address literals."""
    result = CliRunner().invoke(main, ["probe", option, value, f"smtp://127.0.0.1:{_refused_port()}"])
    assert result.exit_code == 1, result.output  # the port is closed: probed, not refused as usage


async def _imap_with_endless_literal(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An IMAP server that announces a 4 GiB literal in an untagged response and then goes on in lines: a reader
    that follows literals (the session dissector, as an IMAP client) takes everything after it for the literal's
    bytes, the CHALLENGE too; the probe reads lines, and gets the CHALLENGE."""
    challenge = base64.b64encode(ntlmssp.build_challenge(bytes(8), "CORP", [("netbios_computer", "MX01")]))
    writer.write(b"* OK IMAP ready\r\n")
    while line := await reader.readline():
        words = line.split()
        if words and words[0].startswith(b"TlRM"):
            writer.write(b"+ " + challenge + b"\r\n")
        elif words == [b"*"]:
            writer.write(b"ls2 NO cancelled\r\n")
        elif len(words) > 1 and words[1].upper() == b"CAPABILITY":
            writer.write(b'* ID ("name" {4294967295}\r\n* CAPABILITY IMAP4rev1 AUTH=NTLM\r\n' + words[0] + b" OK\r\n")
        elif len(words) > 1 and words[1].upper() == b"AUTHENTICATE":
            writer.write(b"+ \r\n")
        else:
            writer.write(words[0] + b" OK bye\r\n" if words else b"")
        await writer.drain()
    writer.close()


def test_a_challenge_the_dissector_could_not_read_is_no_refusal() -> None:
    """The probe had the CHALLENGE in hand: it must not report that NTLM drew none ("no-challenge", which refutes
    Nessus' NTLM plugin) because the session's reading lost the framing; it reports that it could not tell."""

    def services(ports: dict[str, int]) -> list[Service]:
        return [Service("imap", "127.0.0.1", ports["imap"], "imap", False, named=True)]

    reports, _, _ = asyncio.run(_serve({"imap": _imap_with_endless_literal}, services, QUICK))
    (report,) = reports.values()
    assert report.ntlm != "no-challenge"
    assert report.status == "error" and report.stage == "ntlm" and "CHALLENGE" in (report.error or "")


async def _relay_that_drops_at_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Takes every sender and recipient, then drops the connection at DATA: whether it would take the message (354)
    or refuse it for relaying (a 5xx at DATA, as servers that check relaying there do) is never seen."""
    writer.write(b"220 mx.relay.example ESMTP\r\n")
    while line := await reader.readline():
        verb = line.strip().upper()
        if verb == b"DATA":
            writer.transport.abort()
            return
        writer.write(b"250-mx.relay.example\r\n250 PIPELINING\r\n" if verb.startswith(b"EHLO") else b"250 2.0.0 ok\r\n")
        await writer.drain()


def test_a_relay_variant_whose_data_went_unanswered_is_not_judged() -> None:
    """The relay test counts a variant accepted once DATA is taken (354): one whose DATA drew no answer is no open
    relay (high), which compare --nessus would take to confirm Nessus' open-relay plugin; it is left unjudged, as a
    4xx to the message leaves a recipient, and the probe status says the test did not finish."""
    options = ProbeOptions(connect_timeout=2, read_timeout=2, service_timeout=5, relay_test=True, ntlm=False)

    def services(ports: dict[str, int]) -> list[Service]:
        return [Service("relay", "127.0.0.1", ports["relay"], "smtp", False, named=True)]

    reports, findings, _ = asyncio.run(_serve({"relay": _relay_that_drops_at_data}, services, options))
    (report,) = reports.values()
    assert report.status == "error" and report.stage == "relay"
    assert [f for f in findings if f["type"] == "open-relay" and f["accepted"]] == []


def _server_tls(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example")])
    moment = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    builder = x509.CertificateBuilder(name, name, key.public_key(), 1, moment, moment + datetime.timedelta(3650))
    cert, pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    no_password = serialization.NoEncryption()
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, no_password))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, pem)
    return context


def _injecting_smtp(context: ssl.SSLContext) -> Handler:
    """Accepts STARTTLS and sends, in the same write, more clear text than the probe takes in one read (a 4 KiB
    line, then a capability listing): what the probe has not read when it starts TLS must not count as inside it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mx.example ESMTP\r\n")
        while line := await reader.readline():
            verb = line.strip().upper()
            if verb == b"STARTTLS":
                padding = b"250-" + b"P" * 4200 + b"\r\n"
                writer.write(b"220 2.0.0 go ahead\r\n" + padding + b"250-mx.example\r\n250 AUTH INJECTED\r\n")
                await writer.drain()
                await writer.start_tls(context)
            elif verb.startswith(b"EHLO"):
                listing = b"250 AUTH GSSAPI\r\n" if writer.get_extra_info("ssl_object") else b"250 STARTTLS\r\n"
                writer.write(b"250-mx.example\r\n" + listing)
            else:
                writer.write(b"221 bye\r\n" if verb == b"QUIT" else b"504 5.5.4 no\r\n")
            await writer.drain()
        writer.close()

    return handle


def test_clear_text_sent_before_the_tls_handshake_is_not_read_inside_tls(tmp_path: Path) -> None:
    """STARTTLS response injection: bytes the server (or anyone on the path) sent after accepting STARTTLS, and
    which the probe had not read yet, came out of the stream after the handshake as if TLS had carried them: an
    "AUTH INJECTED" listing became a mechanism offered after TLS."""
    options = ProbeOptions(connect_timeout=2, read_timeout=2, service_timeout=5, ntlm=False)

    def services(ports: dict[str, int]) -> list[Service]:
        return [Service("mx", "127.0.0.1", ports["mx"], "smtp", False, named=True)]

    reports, findings, _ = asyncio.run(_serve({"mx": _injecting_smtp(_server_tls(tmp_path))}, services, options))
    (report,) = reports.values()
    [methods] = [f for f in findings if f["type"] == "auth-methods"]
    assert "INJECTED" not in (methods["mechanisms_after_tls"] or [])
    assert report.status == "ok" and report.starttls == "accepted", report.error
    assert methods["mechanisms_after_tls"] == ["GSSAPI"]


def _dropping_at(protocol: str, at: bytes) -> Handler:
    """A server of ``protocol`` that lists NTLM and ends the connection when the client's line starts with ``at``
    (``AUTH``/``a AUTHENTICATE``: the command; ``TlRM``: the NEGOTIATE), after answering the command with a prompt."""
    greeting = {
        "smtp": b"220 mx ESMTP\r\n",
        "pop3": b"+OK ready\r\n",
        "imap": b"* OK [CAPABILITY IMAP4rev1 AUTH=NTLM] ready\r\n",
    }
    listing = {"smtp": b"250-mx\r\n250 AUTH NTLM\r\n", "pop3": b"+OK\r\nSASL NTLM\r\n.\r\n"}
    prompt = {"smtp": b"334 \r\n", "pop3": b"+ \r\n", "imap": b"+ \r\n"}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting[protocol])
        while line := await reader.readline():
            words = line.split()
            if not words:
                continue
            verb = words[1].upper() if protocol == "imap" and len(words) > 1 else words[0].upper()
            if line.startswith(at) or (protocol == "imap" and at == b"AUTH" and verb == b"AUTHENTICATE"):
                break
            if verb in (b"EHLO", b"CAPA"):
                writer.write(listing[protocol])
            elif verb in (b"AUTH", b"AUTHENTICATE"):
                writer.write(prompt[protocol])
            elif protocol == "imap":
                writer.write(b"* CAPABILITY IMAP4rev1 AUTH=NTLM\r\n" + words[0] + b" OK\r\n")
            else:
                writer.write(b"250 ok\r\n" if protocol == "smtp" else b"+OK\r\n")
            await writer.drain()
        writer.close()

    return handler


@pytest.mark.parametrize("at", [b"AUTH", b"TlRM"], ids=["at-auth", "at-negotiate"])
@pytest.mark.parametrize("protocol", ["smtp", "pop3", "imap"])
def test_an_ntlm_exchange_the_server_ended_unanswered_is_no_not_tried(protocol: str, at: bytes) -> None:
    """The probe asked: "not-tried" would say it did not. Nor is it a refusal or "no-challenge", which refute
    Nessus' NTLM plugin: no answer came."""

    def services(ports: dict[str, int]) -> list[Service]:
        return [Service("mx", "127.0.0.1", ports["mx"], protocol, False, named=True)]

    reports, _, _ = asyncio.run(_serve({"mx": _dropping_at(protocol, at)}, services, QUICK))
    (report,) = reports.values()
    assert (report.ntlm, report.status, report.stage) == ("unanswered", "error", "ntlm")


def _talks_once(pause: float) -> Handler:
    """An SMTP server that offers AUTH PLAIN before TLS on its first connection, waiting ``pause`` seconds before
    each reply after the greeting, and says nothing on any later one (a tarpit for a second connection)."""
    connections = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        if len(connections) > 1:
            await reader.read()
            return
        writer.write(b"220 mx01 ESMTP\r\n")
        while line := await reader.readline():
            await asyncio.sleep(pause)
            verb = line.strip().upper()
            if verb.startswith(b"EHLO"):
                writer.write(b"250-mx01\r\n250 AUTH PLAIN LOGIN\r\n")
            else:
                writer.write(b"221 bye\r\n" if verb == b"QUIT" else b"502 5.5.2 no\r\n")
            await writer.drain()
        writer.close()

    return handle


@pytest.mark.parametrize("pause", [0.0, 1.2], ids=["answered-first", "silent-first"])
def test_a_server_named_twice_keeps_what_one_conversation_heard(pause: float) -> None:
    """Two targets may name one server (a host name and its address, a range holding it). One conversation that
    heard nothing withdrew the server's findings, those the other conversation heard too, whichever ended first."""

    def services(ports: dict[str, int]) -> list[Service]:
        port = ports["mx"]
        return [Service(name, "127.0.0.1", port, "smtp", False, named=True) for name in ("mx.example", "127.0.0.1")]

    async def run() -> tuple[list[ServiceReport], list[dict[str, Any]]]:
        server = await asyncio.start_server(_talks_once(pause), "127.0.0.1", 0)
        try:
            done = await probe_services(services({"mx": server.sockets[0].getsockname()[1]}), QUICK)
        finally:
            server.close()
        return done.reports, [finding_record(f) for f in done.findings]

    reports, findings = asyncio.run(run())
    assert sorted(r.status for r in reports) == ["error", "ok"]
    kinds = {f["type"] for f in findings}
    assert {"mail-service", "auth-methods"} <= kinds
