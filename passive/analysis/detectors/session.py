"""Detectors: turn one session's events into findings. The same code serves captures and the active probe."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dissectors import events as ev
from dissectors import ntlmssp
from passive.analysis.software import guess_software
from passive.findings.model import EvidenceRecord, Finding, FindingSet, FindingType, Severity

CLEARTEXT_MECHANISMS = {"PLAIN", "LOGIN"}


@dataclass
class SessionContext:
    protocol: str  # "smtp" | "pop3" | "imap"
    server: str  # "ip:port"
    client: str  # "ip:port"
    file: str | None = None
    source: str = "passive"
    local_domains: frozenset[str] = frozenset()


@dataclass
class RunStats:
    """Counters the summary line reports, across sessions."""

    sessions: Counter[str] = field(default_factory=Counter)
    ntlm_messages: Counter[str] = field(default_factory=Counter)
    anomalies: Counter[str] = field(default_factory=Counter)
    tls_sessions: int = 0
    hashes: list[str] = field(default_factory=list)
    findings_dropped: int = 0  # occurrences of new findings past FindingSet.MAX_FINDINGS

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": dict(self.sessions),
            "ntlm_messages": {
                kind: self.ntlm_messages.get(kind, 0) for kind in ("negotiate", "challenge", "authenticate")
            }
            | {k: v for k, v in self.ntlm_messages.items() if k not in ("negotiate", "challenge", "authenticate")},
            "tls_sessions": self.tls_sessions,
            "dissector_anomalies": dict(self.anomalies),
            "hashes": len(self.hashes),
            "findings_dropped": self.findings_dropped,
        }


@dataclass
class _NtlmExchange:
    negotiate: ntlmssp.NegotiateMessage | None = None
    challenge: ntlmssp.ChallengeMessage | None = None
    authenticate: ntlmssp.AuthenticateMessage | None = None
    challenge_timestamp: float | None = None
    evidence: list[ev.Evidence] = field(default_factory=list)


class SessionAnalyzer:
    """Feeds one session's events to the detectors; findings go into a shared :class:`FindingSet`."""

    # Hashes kept per run: a hostile capture must not make this list grow without bound.
    MAX_HASHES = 10_000
    # Credentials awaiting the server's verdict, per session; past this they are recorded with no outcome.
    MAX_PENDING_CREDENTIALS = 32

    def __init__(self, context: SessionContext, findings: FindingSet, stats: RunStats) -> None:
        self.context = context
        self.findings = findings
        self.stats = stats
        self.server_names: set[str] = set()
        self.mechanism: str | None = None
        self.tls = False
        self.authenticated = False
        self.ntlm: _NtlmExchange | None = None
        self.credentials: list[ev.Credentials] = []
        self.mail_from: ev.MailFrom | None = None
        stats.sessions[context.protocol] += 1
        self._service = self._finding(FindingType.MAIL_SERVICE, Severity.INFO)
        self._service.fields.setdefault("banner", None)
        self._service.fields.setdefault("software", None)
        self._service.fields.setdefault("starttls_offered", False)
        self._service.fields.setdefault("tls", False)
        self._service_counted = False

    # -- plumbing -----------------------------------------------------------------------------------------------

    def _finding(self, kind: FindingType, severity: Severity, key: tuple[Any, ...] = ()) -> Finding:
        dropped = self.findings.dropped
        finding = self.findings.get(kind, self.context.protocol, self.context.server, severity, key)
        self.stats.findings_dropped += self.findings.dropped - dropped
        finding.source = self.context.source
        return finding

    def _record(self, finding: Finding, event: ev.Event, secret: bool = False) -> None:
        e = event.evidence
        finding.add_evidence(
            EvidenceRecord(self.context.file, e.frame, e.timestamp, str(event.side), e.line, e.first_frame, secret)
        )

    def _touch(self, finding: Finding, event: ev.Event, secret: bool = False) -> None:
        finding.seen(event.evidence.timestamp, self.context.client)
        self._record(finding, event, secret)

    def feed(self, events: list[ev.Event]) -> None:
        for event in events:
            self._dispatch(event)

    # -- events -------------------------------------------------------------------------------------------------

    def _dispatch(self, event: ev.Event) -> None:
        if not self._service_counted:
            self._service_counted = True
            self._touch(self._service, event)
        else:
            self._service.seen(event.evidence.timestamp, None, count=False)
        if isinstance(event, ev.Greeting):
            self._greeting(event)
        elif isinstance(event, ev.Capabilities):
            self._capabilities(event)
        elif isinstance(event, ev.StartTls):
            if event.accepted:
                self.tls = True
                self.stats.tls_sessions += 1
                self._service.fields["tls"] = True
                self._record(self._service, event)
        elif isinstance(event, ev.AuthStart):
            self.mechanism = event.mechanism
            if event.mechanism == "NTLM":
                self._close_ntlm(None)
                self.ntlm = _NtlmExchange()
        elif isinstance(event, ev.SaslStep):
            self._sasl_step(event)
        elif isinstance(event, ev.Credentials):
            if len(self.credentials) >= self.MAX_PENDING_CREDENTIALS:
                # A client that never waits for a verdict: record what is held, without an outcome, to stay bounded.
                self._flush_credentials(None)
            self.credentials.append(event)
        elif isinstance(event, ev.AuthResult):
            self._auth_result(event)
        elif isinstance(event, ev.AuthCancelled):
            self._close_ntlm(None)
            self._flush_credentials(None)
        elif isinstance(event, ev.MailFrom):
            self.mail_from = event
        elif isinstance(event, ev.RcptTo):
            self._rcpt(event)
        elif isinstance(event, ev.Reset):
            self.mail_from = None
        elif isinstance(event, ev.Anomaly):
            self.stats.anomalies[event.code] += 1

    def _greeting(self, event: ev.Greeting) -> None:
        service = self._service
        if service.fields.get("banner") is None:
            service.fields["banner"] = event.banner
            service.fields["software"] = guess_software(event.banner)
        self._record(service, event)
        first = event.banner.split(" ", 1)[0]
        if "." in first:
            self.server_names.add(first.lower().rstrip("."))

    def _capabilities(self, event: ev.Capabilities) -> None:
        if event.server_name and "." in event.server_name:
            self.server_names.add(event.server_name.lower().rstrip("."))
        if event.starttls:
            self._service.fields["starttls_offered"] = True
        methods = self._finding(FindingType.AUTH_METHODS, Severity.INFO)
        self._touch(methods, event)
        fields = methods.fields
        before = fields.setdefault("mechanisms", [])
        for mechanism in event.mechanisms:
            if mechanism not in before:
                before.append(mechanism)
        if event.cleartext_login:
            fields["cleartext_login"] = True
            login = "USER" if self.context.protocol == "pop3" else "LOGIN-COMMAND"
            if login not in before:
                before.append(login)
        fields.setdefault("cleartext_login", bool(event.cleartext_login))
        fields["starttls_offered"] = fields.get("starttls_offered", False) or event.starttls
        fields.setdefault("mechanisms_after_tls", None)  # not visible on the wire once TLS starts
        fields["tls"] = self.tls
        exposed = sorted(m for m in before if m in CLEARTEXT_MECHANISMS | {"USER", "LOGIN-COMMAND", "NTLM"})
        fields["cleartext_exposed"] = exposed
        if any(m in CLEARTEXT_MECHANISMS | {"USER", "LOGIN-COMMAND"} for m in exposed):
            methods.raise_severity(Severity.MEDIUM)
        elif exposed:
            methods.raise_severity(Severity.LOW)

    def _sasl_step(self, event: ev.SaslStep) -> None:
        message = event.ntlm
        if message is None:
            return
        self.stats.ntlm_messages[message.type_name] += 1
        if self.ntlm is None:
            self.ntlm = _NtlmExchange()  # picked up mid-exchange, or NTLM inside another mechanism name
        exchange = self.ntlm
        exchange.evidence.append(event.evidence)
        if isinstance(message, ntlmssp.NegotiateMessage):
            exchange.negotiate = message
        elif isinstance(message, ntlmssp.ChallengeMessage):
            exchange.challenge = message
            exchange.challenge_timestamp = event.evidence.timestamp
            finding = self._finding(FindingType.NTLM_INFO, Severity.LOW)
            self._touch(finding, event)
            self._server_fields(finding, message, event.evidence.timestamp)
        elif isinstance(message, ntlmssp.AuthenticateMessage):
            exchange.authenticate = message

    def _server_fields(self, finding: Finding, challenge: ntlmssp.ChallengeMessage, seen_at: float | None) -> None:
        decoded = challenge.to_dict()
        for name in ntlmssp.SERVER_FIELDS:
            if decoded.get(name) is not None or name not in finding.fields:
                finding.fields[name] = decoded.get(name)
        stamp = challenge.server_time.as_datetime if challenge.server_time else None
        if stamp is not None and seen_at is not None:
            finding.fields["clock_skew_seconds"] = round(stamp.timestamp() - seen_at, 3) + 0.0
        else:
            finding.fields.setdefault("clock_skew_seconds", None)
        if challenge.anomalies:
            finding.fields["anomalies"] = [a.to_dict() for a in challenge.anomalies][:20]

    def _auth_result(self, event: ev.AuthResult) -> None:
        if event.success:
            self.authenticated = True
        outcome = "success" if event.success else "failure"
        if self.ntlm is not None and (event.mechanism == "NTLM" or self.ntlm.challenge is not None):
            self._close_ntlm(outcome, event)
        self._flush_credentials(outcome, event)

    def _close_ntlm(self, outcome: str | None, result: ev.AuthResult | None = None) -> None:
        exchange = self.ntlm
        self.ntlm = None
        if exchange is None or (exchange.challenge is None and exchange.authenticate is None):
            return
        finding = self._finding(FindingType.NTLM_INFO, Severity.LOW)
        if exchange.challenge is None:
            finding.seen(exchange.evidence[-1].timestamp if exchange.evidence else None, self.context.client)
        client: dict[str, Any] = {"client": self.context.client, "outcome": outcome}
        for message in (exchange.negotiate, exchange.authenticate):
            if message is None:
                continue
            decoded = message.to_dict()
            for name in ntlmssp.CLIENT_FIELDS:
                if decoded.get(name) is not None:
                    client[name] = decoded[name]
        for name in ntlmssp.CLIENT_FIELDS:
            client.setdefault(name, None)
        if exchange.evidence:
            client["time"] = exchange.evidence[0].timestamp
            client["frames"] = [e.frame for e in exchange.evidence]
        if result is not None:
            self._record(finding, result)
            client["outcome_line"] = result.evidence.line
        for name in ntlmssp.CLIENT_FIELDS:
            if client[name] is not None or name not in finding.fields:
                finding.fields[name] = client[name]
        finding.fields["outcome"] = outcome
        users = finding.fields.setdefault("users", [])
        if client["user"] is not None:
            qualified = f"{client['domain']}\\{client['user']}" if client["domain"] else client["user"]
            if qualified not in users and len(users) < 50:
                users.append(qualified)
        workstations = finding.fields.setdefault("workstations", [])
        if client["workstation"] and client["workstation"] not in workstations and len(workstations) < 50:
            workstations.append(client["workstation"])
        if exchange.authenticate is not None:
            finding.raise_severity(Severity.MEDIUM)  # a crackable NetNTLM response crossed the wire
        finding.add_detail(client)
        line = hashcat_line(exchange.challenge, exchange.authenticate)
        if line and len(self.stats.hashes) < self.MAX_HASHES:
            self.stats.hashes.append(line)

    def _flush_credentials(self, outcome: str | None, result: ev.AuthResult | None = None) -> None:
        pending, self.credentials = self.credentials, []
        for credentials in pending:
            if credentials.user is None and credentials.password is None:
                continue
            finding = self._finding(
                FindingType.CLEARTEXT_CREDENTIALS, Severity.HIGH, (credentials.mechanism, credentials.user)
            )
            self._touch(finding, credentials, secret=True)  # the line carries the secret, plain or base64
            if result is not None:
                self._record(finding, result)
            finding.fields.update(
                mechanism=credentials.mechanism,
                user=credentials.user,
                password=credentials.password,
                authzid=credentials.authzid,
                secret_kind=credentials.secret_kind,
                outcome=outcome,
                tls=self.tls,
            )
            finding.add_detail(
                {"client": self.context.client, "outcome": outcome, "time": credentials.evidence.timestamp}
            )

    def _rcpt(self, event: ev.RcptTo) -> None:
        if self.mail_from is None or self.authenticated or self.context.protocol != "smtp":
            return
        domain = _domain(event.address)
        if domain is None or self._is_local(domain):
            return
        if event.accepted:
            finding = self._finding(FindingType.OPEN_RELAY, Severity.HIGH, ("accepted",))
        elif event.reply_code is not None and 500 <= event.reply_code < 600:
            finding = self._finding(FindingType.OPEN_RELAY, Severity.INFO, ("denied",))
        else:
            return
        self._touch(finding, self.mail_from)
        self._record(finding, event)
        finding.fields.update(
            mail_from=self.mail_from.address,
            rcpt_to=event.address,
            accepted=bool(event.accepted),
            reply=event.reply_text,
            local_domains=sorted(self._local_domains())[:20],
        )
        finding.add_detail(
            {
                "client": self.context.client,
                "mail_from": self.mail_from.address,
                "rcpt_to": event.address,
                "accepted": bool(event.accepted),
                "reply": event.reply_text,
                "time": event.evidence.timestamp,
            }
        )

    def _local_domains(self) -> set[str]:
        names = set(self.context.local_domains)
        for name in self.server_names:
            names.add(name)
            parts = name.split(".")
            if len(parts) > 2:
                names.add(".".join(parts[1:]))
        return names

    def _is_local(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return any(domain == local or domain.endswith("." + local) for local in self._local_domains())

    def close(self) -> None:
        """The session ended: whatever was still open is recorded without an outcome."""
        self._close_ntlm(None)
        self._flush_credentials(None)


_DOMAIN = re.compile(r"@\[?([A-Za-z0-9.\-:]+)\]?$")


def _domain(address: str) -> str | None:
    match = _DOMAIN.search(address.strip())
    return match.group(1) if match else None


def hashcat_line(
    challenge: ntlmssp.ChallengeMessage | None, response: ntlmssp.AuthenticateMessage | None
) -> str | None:
    """NetNTLMv1 (hashcat 5500) or NetNTLMv2 (5600) line for an exchange with both server challenge and response."""
    if challenge is None or response is None or len(challenge.server_challenge) != 8 or not response.user:
        return None
    user, domain = response.user, response.domain or ""
    if ":" in user or ":" in domain or "\n" in user + domain:
        return None  # the format has no escaping
    server = challenge.server_challenge.hex()
    if response.ntlm_version in (ntlmssp.NtlmVersion.NTLMV1, ntlmssp.NtlmVersion.NTLMV1_ESS):
        return f"{user}::{domain}:{response.lm_response.hex()}:{response.nt_response.hex()}:{server}"
    if response.ntlm_version == ntlmssp.NtlmVersion.NTLMV2 and len(response.nt_response) > 16:
        nt = response.nt_response
        return f"{user}::{domain}:{server}:{nt[:16].hex()}:{nt[16:].hex()}"
    return None
