"""What every protocol's conversation shares: the probe's state, STARTTLS, the NTLM step's outcome."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from typing import Any

from dissectors import ntlmssp
from passive.analysis.detectors import SessionAnalyzer
from passive.core.errors import ProbeError
from passive.findings.kinds import FindingType
from passive.probe.options import ProbeOptions, ProbeRun, ServiceReport
from passive.probe.targets import Service
from passive.probe.tls import client_context, session_facts
from passive.probe.wire import Connection, Wire


class Conversation:
    """The state of the conversation with one service, and the steps every protocol takes."""

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
        # Whether the server is known to speak ``protocol``: its port or URL says so, or its greeting names it, or
        # it answered the first command as only that protocol would (a 250 to EHLO or HELO; a POP3 reply to CAPA).
        # A greeting alone proposes a protocol but does not make one: FTP greets with 220 as SMTP does.
        self.confirmed = service.protocol is not None
        # When the service's time is up (time.monotonic()): set at the first connection, kept by later ones (HTTP
        # asks each path on a connection of its own), so --service-timeout bounds the service, not each connection.
        self.deadline: float | None = None
        # The server this conversation is counted as talking to (ProbeRun.talking), from its first connection.
        self.talking_to: str | None = None

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
        await conn.discard_pending()
        try:
            await asyncio.wait_for(
                conn.writer.start_tls(client_context(), server_hostname=sni(self.service.host)),
                conn.time_left(self.options.connect_timeout),
            )
        except TimeoutError:
            self.report.starttls = "failed"
            raise ProbeError("TLS handshake after STARTTLS did not finish in time", "starttls") from None
        except (OSError, ConnectionError) as error:
            self.report.starttls = "failed"
            raise ProbeError(f"TLS handshake after STARTTLS failed: {error_text(error)}", "starttls") from None
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
        """Record whether the NEGOTIATE drew a CHALLENGE (the dissector already decoded it into ntlm-info). An
        answer that carries one the dissector did not read (a server that announced a literal it never sent took
        the dissector's framing) is no refusal: "no-challenge" would refute what the server leaked."""
        assert self.wire is not None
        if self.wire.challenge_seen:
            self.report.ntlm = "challenge"
        elif carries_challenge(reply):
            raise ProbeError("the answer carries an NTLM CHALLENGE the session's reading lost track of", "ntlm")
        else:
            self.report.ntlm = "no-challenge"
            self.report.ntlm_reply = reply[:200]

    def _record_probe_facts(self) -> None:
        """Facts only a probe knows, told to the detectors that own them."""
        analyzer, report = self.analyzer, self.report
        assert analyzer is not None
        if analyzer.service is not None:  # a mail service (HTTP servers make no inventory entry)
            analyzer.service.probe_facts(self.tls_facts, report.starttls)
            if report.banner is None:
                report.banner = analyzer.service.banner
        ntlm = analyzer.detectors[FindingType.NTLM_INFO]
        ntlm.probe_facts(report.ntlm_advertised, report.starttls in ("accepted", "implicit"))  # type: ignore[attr-defined]

    def _heard(self) -> bool:
        """Whether a mail server sent anything: a byte in clear text, or a TLS handshake from the first byte. A
        capture of a connection the server never answered holds no session, and no finding. (HTTP makes no
        inventory entry, only findings of what a response carried, on any of its connections.)"""
        if self.analyzer is None or self.analyzer.service is None:
            return True
        return self.service.implicit_tls or (self.conn is not None and self.conn.received > 0)

    def _withdraw_findings(self) -> None:
        """Forget this server's findings (the detectors make the inventory entry as the session opens), unless
        another conversation with the same server (another target naming it) is still open or heard and confirmed
        it: they are its findings too (ProbeRun.talking)."""
        server = self.report.server
        if self.run.talking.get(server, 0) > 1 or server in self.run.vouched:
            return
        for finding in [f for f in self.run.findings if f.server == server]:
            self.run.findings.discard(finding)

    def _withdraw_unconfirmed(self) -> None:
        """The greeting proposed a protocol the conversation never confirmed: what the detectors made of it is no
        statement about a mail server, so this server's findings are withdrawn and its protocol left unknown."""
        report = self.report
        self._withdraw_findings()
        reason = f"{report.stage}: {report.error}" if report.error else "no answer"
        report.status, report.stage = "error", "greeting"
        report.error = f"the greeting looked like {report.protocol}, but that was not confirmed ({reason})"
        report.protocol = None

    def _note_tls(self) -> None:
        assert self.conn is not None
        self.tls_facts = session_facts(self.conn.extra("ssl_object"))
        self.report.tls_version = self.tls_facts["tls_version"]


# The start of a CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2): signature and MessageType 2.
_CHALLENGE_START = ntlmssp.SIGNATURE + ntlmssp.MessageType.CHALLENGE.to_bytes(4, "little")


def carries_challenge(reply: str) -> bool:
    """Whether a continuation (``334 ``, ``+ ``) carries a base64 CHALLENGE_MESSAGE."""
    _, _, data = reply.partition(" ")
    try:
        return base64.b64decode(data.strip(), validate=True).startswith(_CHALLENGE_START)
    except ValueError:  # binascii.Error: not base64
        return False


def sni(host: str) -> str:
    """The server name to send in TLS: a host name, never an address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return ""


def error_text(error: BaseException) -> str:
    text = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text)
