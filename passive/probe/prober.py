"""Active probe: what a mail server gives to anyone who connects, in the same findings as the passive analysis.

Per service: banner; EHLO (HELO fallback) / CAPA / CAPABILITY; STARTTLS/STLS when offered (``starttls`` option),
then the capabilities again; ``AUTH NTLM`` with the NEGOTIATE from :func:`dissectors.ntlmssp.build_negotiate` (tried
even when not advertised), the CHALLENGE read by the same dissectors and detectors as a capture's, then cancel
(``*``) and QUIT/LOGOUT. Optionally nmap's relay variants (MAIL FROM / RCPT TO, RSET between, never DATA).

Every byte sent and received goes through the session dissectors and the
:class:`~passive.analysis.detectors.SessionAnalyzer` with ``source="active"`` (see :mod:`passive.probe.wire`); facts
only a probe can know (TLS session and certificate,
whether NTLM was advertised, mechanisms after TLS, the relay variants) are handed to the detectors that own them.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from dissectors import ntlmssp
from dissectors.registry import NOT_MAIL, identify
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.stats import RunStats
from passive.core import endpoints
from passive.findings.model import FindingSet
from passive.probe.targets import Service
from passive.probe.tls import client_context, session_facts
from passive.probe.wire import Connection, ProbeError, Wire

STARTTLS_MODES = ("auto", "always", "never")
# Reply lines read for one reply; a server that never ends a multi-line reply is cut off here.
MAX_REPLY_LINES = 512
RELAY_FROM_LOCAL = "antispam"  # nmap smtp-open-relay's defaults
RELAY_TO_LOCAL = "relaytest"


@dataclass
class ProbeOptions:
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    service_timeout: float = 60.0
    max_line: int = 16 * 1024
    max_bytes: int = 256 * 1024
    concurrency: int = 16
    starttls: str = "auto"
    ntlm: bool = True
    relay_test: bool = False
    relay_from: str = "example.com"
    relay_to: str = "example.net"
    ehlo_name: str = "leakscope.invalid"
    local_domains: frozenset[str] = frozenset()


@dataclass
class ServiceReport:
    """How probing one service went: the per-service status in the summary."""

    target: str
    server: str
    protocol: str | None
    named: bool
    status: str = "ok"  # "ok", "error"
    stage: str | None = None
    error: str | None = None
    banner: str | None = None
    implicit_tls: bool = False
    starttls: str = "not-offered"  # not-offered, not-tried, accepted, refused, failed, implicit
    tls_version: str | None = None
    ntlm_advertised: bool | None = None
    ntlm: str = "not-tried"  # not-tried, challenge, refused, no-challenge
    ntlm_reply: str | None = None
    relay_variants_tried: int = 0
    relay_variants_accepted: int = 0
    elapsed_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class ProbeRun:
    findings: FindingSet = field(default_factory=FindingSet)
    stats: RunStats = field(default_factory=RunStats)
    reports: list[ServiceReport] = field(default_factory=list)

    @property
    def failed_targets(self) -> list[str]:
        """Targets that could not be probed: a named service that failed, or a bare host none of whose ports did."""
        by_target: dict[str, list[ServiceReport]] = {}
        for report in self.reports:
            by_target.setdefault(report.target, []).append(report)
        failed = []
        for target, reports in by_target.items():
            if any(r.named and r.status != "ok" for r in reports) or all(r.status != "ok" for r in reports):
                failed.append(target)
        return failed


def endpoint(address: tuple[Any, ...]) -> str:
    """A socket address (``getpeername``) as the findings write it."""
    return endpoints.endpoint(address[0], address[1])


def relay_variants(from_domain: str, to_domain: str, server_name: str, ip: str) -> list[tuple[str, str]]:
    """nmap smtp-open-relay's 16 MAIL FROM / RCPT TO combinations, the null sender first."""
    sender, rcpt = RELAY_FROM_LOCAL, RELAY_TO_LOCAL
    literal = f"[{ip}]"
    by_ip = f"{sender}@{literal}"
    return [
        ("", f"{rcpt}@{to_domain}"),
        (f"{sender}@{from_domain}", f"{rcpt}@{to_domain}"),
        (f"{sender}@{server_name}", f"{rcpt}@{to_domain}"),
        (by_ip, f"{rcpt}@{to_domain}"),
        (by_ip, f"{rcpt}%{to_domain}@{literal}"),
        (by_ip, f"{rcpt}%{to_domain}@{server_name}"),
        (by_ip, f'"{rcpt}@{to_domain}"'),
        (by_ip, f'"{rcpt}%{to_domain}"'),
        (by_ip, f"{rcpt}@{to_domain}@{literal}"),
        (by_ip, f'"{rcpt}@{to_domain}"@{literal}'),
        (by_ip, f"{rcpt}@{to_domain}@{server_name}"),
        (by_ip, f"@{literal}:{rcpt}@{to_domain}"),
        (by_ip, f"@{server_name}:{rcpt}@{to_domain}"),
        (by_ip, f"{to_domain}!{rcpt}"),
        (by_ip, f"{to_domain}!{rcpt}@{literal}"),
        (by_ip, f"{to_domain}!{rcpt}@{server_name}"),
    ]


_SERVER_NAME = re.compile(r"^\d{3}[ -]([A-Za-z0-9][A-Za-z0-9.-]*)")


class ServiceProbe:
    """The conversation with one service."""

    def __init__(self, service: Service, options: ProbeOptions, run: ProbeRun) -> None:
        self.service = service
        self.options = options
        self.run = run
        self.protocol = service.protocol
        self.report = ServiceReport(service.target, service.address, service.protocol, service.named)
        self.report.implicit_tls = service.implicit_tls
        self.conn: Connection | None = None
        self.wire: Wire | None = None
        self.analyzer: SessionAnalyzer | None = None
        self.client = ""
        self.tag_number = 0
        self.tls_facts: dict[str, Any] = session_facts(None)

    # -- driver ---------------------------------------------------------------------------------------------------

    async def probe(self) -> ServiceReport:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.options.service_timeout + self.options.connect_timeout + 1):
                await self._connect()
                await self._converse()
        except ProbeError as error:
            self._fail(error.reason, error.stage)
        except TimeoutError:
            self._fail("the service did not finish within the service timeout", self._stage())
        finally:
            if self.conn is not None:
                await self.conn.close()
            if self.analyzer is not None:
                self._record_probe_facts()
                self.analyzer.close()
            self.report.elapsed_seconds = round(time.monotonic() - started, 3)
        return self.report

    def _stage(self) -> str:
        return self.conn.stage if self.conn is not None else "connect"

    def _fail(self, reason: str, stage: str) -> None:
        if self.report.status == "ok":
            self.report.status, self.report.error, self.report.stage = "error", reason, stage or self._stage()

    async def _connect(self) -> None:
        service, options = self.service, self.options
        tls = client_context() if service.implicit_tls else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    service.host,
                    service.port,
                    ssl=tls,
                    server_hostname=_sni(service.host) if tls else None,
                    ssl_handshake_timeout=options.connect_timeout if tls else None,
                    limit=options.max_line + 2,
                ),
                options.connect_timeout * (2 if tls else 1),
            )
        except TimeoutError:
            raise ProbeError(f"no TCP/TLS answer within {options.connect_timeout:g} s", "connect") from None
        except ConnectionRefusedError:
            raise ProbeError("connection refused", "connect") from None
        except socket.gaierror as error:
            raise ProbeError(f"cannot resolve {service.host}: {error.strerror}", "connect") from None
        except OSError as error:  # ssl.SSLError is one too
            raise ProbeError(_connect_reason(error, tls is not None), "tls" if tls else "connect") from None
        self.conn = Connection(
            reader,
            writer,
            read_timeout=options.read_timeout,
            deadline=time.monotonic() + options.service_timeout,
            max_line=options.max_line,
            max_bytes=options.max_bytes,
        )
        peer, local = self.conn.extra("peername"), self.conn.extra("sockname")
        if peer:
            self.report.server = endpoint(peer)
        self.client = endpoint(local) if local else ""
        if service.implicit_tls:
            self.report.starttls = "implicit"
            self._note_tls()
        if self.protocol is not None:
            self._start_wire(self.protocol)

    def _start_wire(self, protocol: str) -> None:
        assert self.conn is not None
        self.protocol = self.report.protocol = protocol
        context = SessionContext(
            protocol, self.report.server, self.client, None, source="active", local_domains=self.options.local_domains
        )
        self.analyzer = SessionAnalyzer(context, self.run.findings, self.run.stats)
        self.wire = Wire(protocol, self.analyzer)
        if self.service.implicit_tls:
            self.wire.tls_started(implicit=True)
        self.conn.on_receive = self.wire.server
        self.conn.on_send = self.wire.client
        if self.conn.unfed:
            self.wire.server(bytes(self.conn.unfed))
            self.conn.unfed.clear()

    def _note_tls(self) -> None:
        assert self.conn is not None
        self.tls_facts = session_facts(self.conn.extra("ssl_object"))
        self.report.tls_version = self.tls_facts["tls_version"]

    async def _converse(self) -> None:
        conn = self.conn
        assert conn is not None
        if self.protocol is None:
            first = await conn.line()
            protocol = identify((first + "\n").encode("utf-8", "replace"), b"")
            if protocol in (None, NOT_MAIL):
                raise ProbeError("the greeting is not SMTP, POP3 or IMAP; name the protocol with a URL", "greeting")
            assert protocol is not None
            conn.buffer[:0] = (first + "\n").encode("utf-8", "replace")  # the flows read the greeting themselves
            self._start_wire(protocol)
        flow = {"smtp": self._smtp, "pop3": self._pop3, "imap": self._imap}[self.protocol or ""]
        await flow()

    # -- shared steps -----------------------------------------------------------------------------------------------

    def _want_starttls(self, offered: bool) -> bool:
        if self.service.implicit_tls:
            return False
        mode = self.options.starttls
        if mode == "never" or (mode == "auto" and not offered):
            self.report.starttls = "not-tried" if offered else "not-offered"
            return False
        return True

    async def _upgrade(self) -> None:
        conn, wire = self.conn, self.wire
        assert conn is not None and wire is not None
        conn.stage = "starttls"
        conn.discard_buffered()
        try:
            await asyncio.wait_for(
                conn.writer.start_tls(client_context(), server_hostname=_sni(self.service.host)),
                self.options.connect_timeout,
            )
        except TimeoutError:
            self.report.starttls = "failed"
            raise ProbeError("TLS handshake after STARTTLS did not finish in time", "starttls") from None
        except (OSError, ConnectionError) as error:
            self.report.starttls = "failed"
            raise ProbeError(f"TLS handshake after STARTTLS failed: {_error_text(error)}", "starttls") from None
        self.report.starttls = "accepted"
        self._note_tls()
        wire.tls_started(implicit=False)

    def _mechanisms(self) -> list[str]:
        assert self.wire is not None
        caps = self.wire.capabilities
        return list(caps.mechanisms) if caps else []

    def _negotiate_b64(self) -> str:
        return base64.b64encode(ntlmssp.build_negotiate()).decode("ascii")

    def _ntlm_outcome(self, reply: str) -> None:
        """Record whether the NEGOTIATE drew a CHALLENGE (the dissector already decoded it into ntlm-info)."""
        assert self.wire is not None
        if self.wire.challenge_seen:
            self.report.ntlm = "challenge"
        else:
            self.report.ntlm = "no-challenge"
            self.report.ntlm_reply = reply[:200]

    def _record_probe_facts(self) -> None:
        """Facts only a probe knows, told to the detectors that own them."""
        analyzer, report = self.analyzer, self.report
        assert analyzer is not None
        analyzer.service.probe_facts(self.tls_facts, report.starttls)
        if report.banner is None:
            report.banner = analyzer.service.banner
        analyzer.ntlm.probe_facts(report.ntlm_advertised, report.starttls in ("accepted", "implicit"))

    # -- SMTP -------------------------------------------------------------------------------------------------------

    async def _smtp_reply(self) -> tuple[int, list[str]]:
        conn = self.conn
        assert conn is not None
        lines: list[str] = []
        while True:
            line = await conn.line()
            if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
                raise ProbeError(f"not an SMTP reply: {line[:80]!r}", conn.stage)
            lines.append(line)
            if len(line) == 3 or line[3] == " ":
                return int(line[:3]), lines
            if len(lines) >= MAX_REPLY_LINES:
                raise ProbeError(f"an SMTP reply of more than {MAX_REPLY_LINES} lines", conn.stage)

    async def _smtp_command(self, line: str) -> tuple[int, list[str]]:
        assert self.conn is not None
        await self.conn.send_line(line)
        return await self._smtp_reply()

    async def _smtp_hello(self) -> None:
        assert self.conn is not None
        code, _ = await self._smtp_command(f"EHLO {self.options.ehlo_name}")
        if code != 250:
            code, lines = await self._smtp_command(f"HELO {self.options.ehlo_name}")
            if code != 250:
                raise ProbeError(f"EHLO and HELO refused: {lines[-1][:120]!r}", self.conn.stage)

    async def _smtp(self) -> None:
        conn, wire = self.conn, self.wire
        assert conn is not None and wire is not None
        code, lines = await self._smtp_reply()
        self.report.banner = wire.greeting.banner if wire.greeting else lines[0][4:]
        if code != 220:
            await self._quit("QUIT")
            raise ProbeError(f"the server refuses service: {lines[0][:120]!r}", "greeting")
        conn.stage = "capabilities"
        await self._smtp_hello()
        offered = bool(wire.capabilities and wire.capabilities.starttls)
        if self._want_starttls(offered):
            conn.stage = "starttls"
            code, _ = await self._smtp_command("STARTTLS")
            if code == 220:
                await self._upgrade()
                conn.stage = "capabilities"
                await self._smtp_hello()
            else:
                self.report.starttls = "refused"
        if self.options.ntlm:
            await self._smtp_ntlm()
        if self.options.relay_test:
            await self._relay_test()
        await self._quit("QUIT")

    async def _smtp_ntlm(self) -> None:
        assert self.conn is not None
        self.conn.stage = "ntlm"
        self.report.ntlm_advertised = "NTLM" in self._mechanisms()
        code, lines = await self._smtp_command("AUTH NTLM")
        if code != 334:
            self.report.ntlm, self.report.ntlm_reply = "refused", lines[-1][:200]
            return
        code, lines = await self._smtp_command(self._negotiate_b64())
        if code == 334:
            await self._smtp_command("*")  # cancel: a probe never authenticates
        self._ntlm_outcome(lines[-1])

    async def _relay_test(self) -> None:
        conn, wire = self.conn, self.wire
        assert conn is not None and wire is not None
        conn.stage = "relay"
        banner_name = _SERVER_NAME.match(f"220 {self.report.banner or ''}")
        caps = wire.capabilities
        server_name = (
            banner_name.group(1)
            if banner_name
            else (caps.server_name if caps and caps.server_name else self.report.server.rsplit(":", 1)[0])
        )
        ip = self.report.server.rsplit(":", 1)[0].strip("[]")
        tried: list[dict[str, Any]] = []
        stopped: str | None = None
        for number, (mail_from, rcpt_to) in enumerate(
            relay_variants(self.options.relay_from, self.options.relay_to, server_name, ip), 1
        ):
            code, lines = await self._smtp_command("RSET")
            if code == 530 or code >= 400:
                stopped = lines[-1][:200]
                break
            code, lines = await self._smtp_command(f"MAIL FROM:<{mail_from}>")
            variant: dict[str, Any] = {
                "variant": number,
                "mail_from": mail_from or "<>",
                "rcpt_to": rcpt_to,
                "mail_reply": lines[-1][:200],
                "rcpt_reply": None,
                "accepted": False,
            }
            tried.append(variant)
            if code == 530:
                stopped = lines[-1][:200]
                break
            if 200 <= code < 300:
                code, lines = await self._smtp_command(f"RCPT TO:<{rcpt_to}>")
                variant["rcpt_reply"] = lines[-1][:200]
                variant["accepted"] = 200 <= code < 300
                if code == 530:
                    stopped = lines[-1][:200]
                    break
        await self._smtp_command("RSET")
        accepted = [v for v in tried if v["accepted"]]
        self.report.relay_variants_tried, self.report.relay_variants_accepted = len(tried), len(accepted)
        self.analyzer.service.relay_test(  # type: ignore[union-attr]
            {
                "variants_tried": len(tried),
                "variants_accepted": len(accepted),
                "stopped": stopped,
                "from_domain": self.options.relay_from,
                "to_domain": self.options.relay_to,
                "variants": tried,
            }
        )

    # -- POP3 -------------------------------------------------------------------------------------------------------

    async def _pop3_line(self) -> str:
        assert self.conn is not None
        line = await self.conn.line()
        if not (line.startswith(("+OK", "-ERR", "+ ")) or line == "+"):
            raise ProbeError(f"not a POP3 reply: {line[:80]!r}", self.conn.stage)
        return line

    async def _pop3_list(self) -> None:
        """The lines of a multi-line answer up to the lone dot (the dissector reads them)."""
        assert self.conn is not None
        for _ in range(MAX_REPLY_LINES):
            if await self.conn.line() == ".":
                return
        raise ProbeError(f"a multi-line answer of more than {MAX_REPLY_LINES} lines", self.conn.stage)

    async def _pop3_capabilities(self) -> None:
        assert self.conn is not None
        self.conn.stage = "capabilities"
        await self.conn.send_line("CAPA")
        if (await self._pop3_line()).startswith("+OK"):
            await self._pop3_list()
            return
        await self.conn.send_line("AUTH")  # the mechanism list servers without CAPA may give
        if (await self._pop3_line()).startswith("+OK"):
            await self._pop3_list()

    async def _pop3(self) -> None:
        conn, wire = self.conn, self.wire
        assert conn is not None and wire is not None
        greeting = await self._pop3_line()
        self.report.banner = wire.greeting.banner if wire.greeting else greeting
        if not greeting.startswith("+OK"):
            raise ProbeError(f"the server refuses service: {greeting[:120]!r}", "greeting")
        await self._pop3_capabilities()
        offered = bool(wire.capabilities and wire.capabilities.starttls)
        if self._want_starttls(offered):
            conn.stage = "starttls"
            await conn.send_line("STLS")
            if (await self._pop3_line()).startswith("+OK"):
                await self._upgrade()
                await self._pop3_capabilities()
            else:
                self.report.starttls = "refused"
        if self.options.ntlm:
            await self._pop3_ntlm()
        await self._quit("QUIT")

    async def _pop3_ntlm(self) -> None:
        assert self.conn is not None
        self.conn.stage = "ntlm"
        self.report.ntlm_advertised = "NTLM" in self._mechanisms()
        await self.conn.send_line("AUTH NTLM")
        reply = await self._pop3_line()
        if reply.startswith("-ERR"):
            self.report.ntlm, self.report.ntlm_reply = "refused", reply[:200]
            return
        await self.conn.send_line(self._negotiate_b64())  # after "+ " or [MS-POP3]'s "+OK"
        reply = await self._pop3_line()
        if reply.startswith("+ ") or reply == "+":
            await self.conn.send_line("*")
            await self._pop3_line()
        self._ntlm_outcome(reply)

    # -- IMAP -------------------------------------------------------------------------------------------------------

    def _tag(self) -> str:
        self.tag_number += 1
        return f"ls{self.tag_number}"

    async def _imap_until(self, tag: str, continuation: bool = False) -> str:
        """Lines up to the tagged completion of ``tag`` (or a ``+`` continuation when one is expected)."""
        assert self.conn is not None
        for _ in range(MAX_REPLY_LINES):
            line = await self.conn.line()
            if continuation and (line == "+" or line.startswith("+ ")):
                return line
            if line.startswith(tag + " "):
                return line
            if not line.startswith(("*", "+")):
                raise ProbeError(f"not an IMAP response: {line[:80]!r}", self.conn.stage)
        raise ProbeError(f"more than {MAX_REPLY_LINES} lines without the tagged answer", self.conn.stage)

    async def _imap_command(self, command: str, continuation: bool = False) -> str:
        assert self.conn is not None
        tag = self._tag()
        await self.conn.send_line(f"{tag} {command}")
        return await self._imap_until(tag, continuation)

    @staticmethod
    def _imap_ok(line: str) -> bool:
        parts = line.split(None, 2)
        return len(parts) > 1 and parts[1].upper() == "OK"

    async def _imap(self) -> None:
        conn, wire = self.conn, self.wire
        assert conn is not None and wire is not None
        greeting = await conn.line()
        if not greeting.startswith(("* OK", "* PREAUTH", "* BYE")):
            raise ProbeError(f"not an IMAP greeting: {greeting[:80]!r}", "greeting")
        self.report.banner = wire.greeting.banner if wire.greeting else greeting
        if greeting.startswith("* BYE"):
            raise ProbeError(f"the server refuses service: {greeting[:120]!r}", "greeting")
        conn.stage = "capabilities"
        await self._imap_command("CAPABILITY")
        offered = bool(wire.capabilities and wire.capabilities.starttls)
        if self._want_starttls(offered):
            conn.stage = "starttls"
            if self._imap_ok(await self._imap_command("STARTTLS")):
                await self._upgrade()
                conn.stage = "capabilities"
                await self._imap_command("CAPABILITY")
            else:
                self.report.starttls = "refused"
        if self.options.ntlm:
            await self._imap_ntlm()
        await self._quit("LOGOUT")

    async def _imap_ntlm(self) -> None:
        assert self.conn is not None
        self.conn.stage = "ntlm"
        self.report.ntlm_advertised = "NTLM" in self._mechanisms()
        tag = self._tag()
        await self.conn.send_line(f"{tag} AUTHENTICATE NTLM")
        reply = await self._imap_until(tag, continuation=True)
        if not reply.startswith("+"):
            self.report.ntlm, self.report.ntlm_reply = "refused", reply[:200]
            return
        await self.conn.send_line(self._negotiate_b64())
        reply = await self._imap_until(tag, continuation=True)
        if reply.startswith("+"):
            await self.conn.send_line("*")
            await self._imap_until(tag)
        self._ntlm_outcome(reply)

    # -- end --------------------------------------------------------------------------------------------------------

    async def _quit(self, command: str) -> None:
        """Says goodbye; the answer is read when it comes, but a missing one is no failure."""
        conn = self.conn
        assert conn is not None
        conn.stage = "quit"
        try:
            if self.protocol == "imap":
                await self._imap_command(command)
            else:
                await conn.send_line(command)
                await conn.line()
        except ProbeError:
            pass


def _sni(host: str) -> str:
    """The server name to send in TLS: a host name, never an address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return ""


def _error_text(error: BaseException) -> str:
    text = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text)


def _connect_reason(error: OSError, tls: bool) -> str:
    import ssl

    if isinstance(error, ssl.SSLError) or (tls and not isinstance(error, ConnectionError) and error.errno is None):
        return f"TLS handshake failed: {_error_text(error)}"
    reasons = {
        errno.EHOSTUNREACH: "host unreachable",
        errno.ENETUNREACH: "network unreachable",
        errno.ECONNRESET: "connection reset",
        errno.ETIMEDOUT: "no TCP answer (timed out)",
    }
    return reasons.get(error.errno or 0, f"cannot connect: {error.strerror or error}")


async def probe_services(services: list[Service], options: ProbeOptions) -> ProbeRun:
    """Probes every service, at most ``options.concurrency`` at a time; reports keep the order of ``services``."""
    run = ProbeRun()
    limit = asyncio.Semaphore(max(1, options.concurrency))

    async def one(service: Service) -> ServiceReport:
        async with limit:
            return await ServiceProbe(service, options, run).probe()

    run.reports = list(await asyncio.gather(*(one(service) for service in services)))
    return run


def run_probe(services: list[Service], options: ProbeOptions) -> ProbeRun:
    return asyncio.run(probe_services(services, options))


def probe_summary(run: ProbeRun) -> dict[str, Any]:
    """Counters for the summary line, with one status record per service."""
    reports = run.reports
    return {
        "targets": len({r.target for r in reports}),
        "services": len(reports),
        "services_ok": sum(r.status == "ok" for r in reports),
        "services_failed": sum(r.status != "ok" for r in reports),
        **run.stats.to_dict(),
        "probes": [r.to_dict() for r in reports],
    }
