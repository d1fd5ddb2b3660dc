"""Active probe: what a mail server gives to anyone who connects, in the same findings as the passive analysis.

HTTP (``http://`` and ``https://`` targets, ports 80, 8080 and 443): Exchange's web endpoints asked for an NTLM
challenge, see :mod:`passive.probe.http`.

Per service: banner; EHLO (HELO fallback) / CAPA / CAPABILITY; STARTTLS/STLS when offered (``starttls`` option),
then the capabilities again; ``AUTH NTLM`` with the NEGOTIATE from :func:`dissectors.ntlmssp.build_negotiate` (tried
even when not advertised), the CHALLENGE read by the same dissectors and detectors as a capture's, then cancel
(``*``) and QUIT/LOGOUT. Optionally nmap's relay variants (MAIL FROM / RCPT TO, DATA after an accepted one, RSET
between; never a message).

Every byte sent and received goes through the session dissectors and the
:class:`~passive.analysis.detectors.SessionAnalyzer` with ``source="active"`` (see :mod:`passive.probe.wire`); facts
only a probe can know (TLS session and certificate,
whether NTLM was advertised, mechanisms after TLS, the relay variants) are handed to the detectors that own them.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from typing import Any

from dissectors.identify import greeting_candidate, identify
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.relays import RelayLedger, RelayPolicy
from passive.core import endpoints
from passive.core.errors import ProbeError
from passive.probe.conversation import error_text, sni
from passive.probe.http import HttpConversation
from passive.probe.imap import ImapConversation
from passive.probe.options import STARTTLS_MODES, ProbeOptions, ProbeRun, ServiceReport
from passive.probe.pop3 import Pop3Conversation
from passive.probe.smtp import SmtpConversation, relay_variants
from passive.probe.targets import Service
from passive.probe.tls import client_context
from passive.probe.wire import SERVICE_TIMEOUT, Connection, Wire

__all__ = [
    "STARTTLS_MODES",
    "ProbeOptions",
    "ProbeRun",
    "ServiceProbe",
    "probe_services",
    "probe_summary",
    "relay_variants",
    "run_probe",
]


def endpoint(address: tuple[Any, ...]) -> str:
    """A socket address (``getpeername``) as the findings write it."""
    return endpoints.endpoint(address[0], address[1])


class ServiceProbe(SmtpConversation, Pop3Conversation, ImapConversation, HttpConversation):
    """The conversation with one service: connect, recognise the protocol, talk, say goodbye."""

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
            self._fail(SERVICE_TIMEOUT, self._stage())
        finally:
            if self.conn is not None:
                await self.conn.close()
            if self.analyzer is not None:
                heard = self._heard()  # before close, which lets go of the detectors
                self._record_probe_facts()
                self.analyzer.close()
                if not heard:
                    self._withdraw_findings()
                elif not self.confirmed:
                    self._withdraw_unconfirmed()
                else:
                    self.run.vouched.add(self.report.server)
            self._stop_talking()
            self.report.elapsed_seconds = round(time.monotonic() - started, 3)
        return self.report

    def _stop_talking(self) -> None:
        """This conversation with its server is over (ProbeRun.talking)."""
        server, self.talking_to = self.talking_to, None
        if server is not None:
            left = self.run.talking[server] - 1
            if left:
                self.run.talking[server] = left
            else:
                del self.run.talking[server]

    def _stage(self) -> str:
        return self.conn.stage if self.conn is not None else "connect"

    def _fail(self, reason: str, stage: str) -> None:
        if self.report.status == "ok":
            self.report.status, self.report.error, self.report.stage = "error", reason, stage or self._stage()

    async def _connect(self) -> None:
        service, options = self.service, self.options
        tls = client_context() if service.implicit_tls else None
        connect_timeout = options.connect_timeout * (2 if tls else 1)
        if self.deadline is not None:  # a later connection of the same service: within the time it has left
            connect_timeout = min(connect_timeout, self.deadline - time.monotonic())
            if connect_timeout <= 0:
                raise ProbeError(SERVICE_TIMEOUT, "connect")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    service.host,
                    service.port,
                    ssl=tls,
                    server_hostname=sni(service.host) if tls else None,
                    ssl_handshake_timeout=options.connect_timeout if tls else None,
                    limit=options.max_line + 2,
                ),
                connect_timeout,
            )
        except TimeoutError:
            self.report.port_state = "filtered"
            raise ProbeError(f"no TCP/TLS answer within {options.connect_timeout:g} s", "connect") from None
        except ConnectionRefusedError:
            self.report.port_state = "closed"
            raise ProbeError("connection refused", "connect") from None
        except socket.gaierror as error:
            self.report.port_state = "error"
            raise ProbeError(f"cannot resolve {service.host}: {error.strerror}", "connect") from None
        except OSError as error:  # ssl.SSLError is one too: the port answered, its TLS did not
            self.report.port_state = "open" if isinstance(error, ssl.SSLError) else "error"
            raise ProbeError(_connect_reason(error, tls is not None), "tls" if tls else "connect") from None
        if self.deadline is None:
            self.deadline = time.monotonic() + options.service_timeout
        self.conn = Connection(
            reader,
            writer,
            read_timeout=options.read_timeout,
            deadline=self.deadline,
            max_line=options.max_line,
            max_bytes=options.max_bytes,
        )
        peer, local = self.conn.extra("peername"), self.conn.extra("sockname")
        if peer:
            self.report.server = endpoint(peer)
            if self.talking_to is None:  # HTTP asks each path on a connection of its own: counted once
                self.talking_to = self.report.server
                self.run.talking[self.talking_to] = self.run.talking.get(self.talking_to, 0) + 1
        self.client = endpoint(local) if local else ""
        if service.implicit_tls:
            self.report.starttls = "implicit"
            self._note_tls()
        if self.protocol is not None:
            self._start_wire(self.protocol)

    def _start_wire(self, protocol: str) -> None:
        assert self.conn is not None
        self.protocol = self.report.protocol = protocol
        context = SessionContext(protocol, self.report.server, self.client, None, source="active")
        self.analyzer = SessionAnalyzer(context, self.run.findings, self.run.stats, self.run.relays)
        self.wire = Wire(protocol, self.analyzer, self.options.max_line)
        if self.service.implicit_tls:
            self.wire.tls_started(implicit=True)
        self.conn.on_receive = self.wire.server
        self.conn.on_send = self.wire.client
        if self.conn.unfed:
            unfed = bytes(self.conn.unfed)
            self.conn.unfed.clear()
            self.conn.feed(unfed)

    async def _converse(self) -> None:
        conn = self.conn
        assert conn is not None
        if self.protocol is None:
            first = await conn.line()
            greeting = (first + "\n").encode("utf-8", "replace")
            # The greeting proposes the protocol; unless it names it (as the passive identification reads it), the
            # server's answer to the first command confirms it (Conversation.confirmed).
            protocol = greeting_candidate(greeting[:-1])
            if protocol is None:
                raise ProbeError("the greeting is not SMTP, POP3 or IMAP; name the protocol with a URL", "greeting")
            assert protocol is not None
            self.confirmed = identify(greeting, b"") == protocol
            conn.buffer[:0] = greeting  # the flows read the greeting themselves
            self._start_wire(protocol)
        flow = {"smtp": self._smtp, "pop3": self._pop3, "imap": self._imap, "http": self._http}[self.protocol or ""]
        await flow()

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


def _connect_reason(error: OSError, tls: bool) -> str:
    if isinstance(error, ssl.SSLError) or (tls and not isinstance(error, ConnectionError) and error.errno is None):
        return f"TLS handshake failed: {error_text(error)}"
    reasons = {
        errno.EHOSTUNREACH: "host unreachable",
        errno.ENETUNREACH: "network unreachable",
        errno.ECONNRESET: "connection reset",
        errno.ETIMEDOUT: "no TCP answer (timed out)",
    }
    return reasons.get(error.errno or 0, f"cannot connect: {error.strerror or error}")


async def probe_services(services: list[Service], options: ProbeOptions) -> ProbeRun:
    """Probes every service, at most ``options.concurrency`` at a time; reports keep the order of ``services``."""
    run = ProbeRun(relays=RelayLedger(RelayPolicy(options.local_domains, options.trusted_networks)))
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
