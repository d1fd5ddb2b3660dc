"""``ntlm-info``: what a server's NTLM CHALLENGE tells anyone who asks, and what clients' NEGOTIATE and
AUTHENTICATE tell of them; and the NetNTLM responses as hashcat lines for ``--hashes``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from dissectors import events as ev
from dissectors import ntlmssp
from passive.analysis.detectors.base import Detector, Handlers, Session, Shared, seen
from passive.core.text import printable
from passive.findings.model import MAX_FIELD_TEXT, Finding, FindingType, Severity

# Decoding anomalies of a CHALLENGE kept in the finding; the decoder bounds how many one message can have.
MAX_ANOMALIES = 20
# HTTP endpoints (Host and path) that answered with a CHALLENGE, kept per finding.
MAX_HTTP_ENDPOINTS = 50
# Steps of one exchange remembered (their evidence and frames): NTLM takes three. An exchange that never ends (NTLM
# blobs in AUTH PLAIN restarts, which no verdict closes) counts the rest as ``too_many_ntlm_steps``.
MAX_EXCHANGE_STEPS = 16


@dataclass
class _Exchange:
    """The NTLMSSP messages of one exchange seen so far, and their evidence."""

    negotiate: ntlmssp.NegotiateMessage | None = None
    challenge: ntlmssp.ChallengeMessage | None = None
    authenticate: ntlmssp.AuthenticateMessage | None = None
    evidence: list[ev.Evidence] = field(default_factory=list)
    named: ev.SaslStep | None = None  # the client's last step that names it: cited when no CHALLENGE was seen
    # HTTP: the request (or its response) its latest step came in. The detector's own moves on with the next request,
    # which may close this exchange (a NEGOTIATE before any answer came: the answers were lost, or not captured).
    http: ev.HttpExchange | None = None


class NtlmDetector(Detector):
    KIND = FindingType.NTLM_INFO
    HANDLERS: ClassVar[Handlers] = {
        ev.AuthStart: "start",
        ev.SaslStep: "step",
        ev.AuthResult: "result",
        ev.AuthCancelled: "cancelled",
        ev.AuthAbandoned: "cancelled",
        ev.HttpExchange: "http_exchange",
    }

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.exchange: _Exchange | None = None
        self.http: ev.HttpExchange | None = None  # the HTTP request or response the next step belongs to

    def http_exchange(self, event: ev.HttpExchange) -> None:
        self.http = event

    def _info(self) -> Finding:
        return self.finding(FindingType.NTLM_INFO, Severity.LOW)

    def start(self, event: ev.AuthStart) -> None:
        if event.mechanism == "NTLM":
            self._close(None)
            self.exchange = _Exchange()

    def step(self, event: ev.SaslStep) -> None:
        message = event.ntlm
        if message is None:
            return
        self.count("ntlm_messages", message.type_name)
        if self.exchange is None:
            self.exchange = _Exchange()  # picked up mid-exchange, or NTLM inside another mechanism name
        exchange = self.exchange
        exchange.http = self.http
        if len(exchange.evidence) < MAX_EXCHANGE_STEPS:
            exchange.evidence.append(event.evidence)
        else:
            self.count("anomalies", "too_many_ntlm_steps")
        if isinstance(message, ntlmssp.NegotiateMessage):
            exchange.negotiate = message
            exchange.named = event if _names_itself(message) else exchange.named
        elif isinstance(message, ntlmssp.ChallengeMessage):
            exchange.challenge = message
            finding = self._info()
            self.touch(finding, event)
            self.session.apply(_challenged, finding, *self._server_fields(message, event.evidence.timestamp))
        elif isinstance(message, ntlmssp.AuthenticateMessage):
            exchange.authenticate = message
            exchange.named = event

    def result(self, event: ev.AuthResult) -> None:
        if self.exchange is not None and (event.mechanism == "NTLM" or self.exchange.challenge is not None):
            self._close(event.outcome, event)

    def cancelled(self, event: ev.AuthCancelled | ev.AuthAbandoned) -> None:
        self._close(None)

    def close(self) -> None:
        self._close(None)

    # -- facts only a probe knows -------------------------------------------------------------------------------

    def probe_facts(self, advertised: bool | None, over_tls: bool) -> None:
        self.session.apply(_probed, None, self.context.server, advertised, over_tls)

    # -- helpers ------------------------------------------------------------------------------------------------

    def _server_fields(
        self, challenge: ntlmssp.ChallengeMessage, seen_at: float | None
    ) -> tuple[dict[str, Any], float | None, list[dict[str, Any]], tuple[str | None, str | None] | None]:
        """What a CHALLENGE tells of its server, for :func:`_challenged`: the decoded server fields, the clock skew
        (None when unknown), the decoding anomalies, and the web endpoint (host, path) that answered (None
        outside HTTP)."""
        values = challenge.server_fields()
        stamp = challenge.server_time.as_datetime if challenge.server_time else None
        skew = round(stamp.timestamp() - seen_at, 3) + 0.0 if stamp is not None and seen_at is not None else None
        anomalies = [a.to_dict() for a in challenge.anomalies][:MAX_ANOMALIES]
        http = self.http
        endpoint = (http.host, http.path) if self.context.protocol == "http" and http is not None else None
        return values, skew, anomalies, endpoint

    def _close(self, outcome: str | None, result: ev.AuthResult | None = None) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is None or not (exchange.challenge or exchange.authenticate or _names_itself(exchange.negotiate)):
            return
        finding = self._info()
        if exchange.challenge is None:  # the client's side alone: its step that named it is the evidence
            self.session.apply(seen, finding, exchange.evidence[-1].timestamp if exchange.evidence else None,
                               self.context.client)  # fmt: skip
            if exchange.named is not None:
                self.record(finding, exchange.named)
        client = self._client_detail(exchange, outcome)
        if result is not None:
            self.record(finding, result)
            client["outcome_line"] = result.evidence.line
        whole = exchange.authenticate is not None
        self.session.apply(_closed, finding, client, outcome, _severity(exchange.authenticate), whole)
        line = hashcat_line(exchange.challenge, exchange.authenticate)
        if line == UNWRITABLE:
            self.count("hashes_skipped")
        elif line:
            self.session.apply(_hash, None, line)

    def _client_detail(self, exchange: _Exchange, outcome: str | None) -> dict[str, Any]:
        """What the client's NEGOTIATE and AUTHENTICATE said (the later wins), for the finding's details."""
        client: dict[str, Any] = {"client": self.context.client, "outcome": outcome, "file": self.context.file}
        for message in (exchange.negotiate, exchange.authenticate):
            if message is None:
                continue
            client.update({name: value for name, value in message.client_fields().items() if value is not None})
        for name in ntlmssp.CLIENT_FIELDS:
            client.setdefault(name, None)
        http = exchange.http or self.http
        if self.context.protocol == "http" and http is not None:
            client["http_path"] = http.path or None
        if exchange.evidence:
            client["time"] = exchange.evidence[0].timestamp
            located = [self.locate(e.frame) for e in exchange.evidence]
            client["file"] = located[0][0]
            # Distinct (one frame may carry two steps), in the file of the first: a ring's file switch between the
            # steps of one exchange leaves the later ones to the finding's evidence.
            client["frames"] = list(dict.fromkeys(frame for file, frame in located if file == located[0][0]))
        return client


# -- effects (passive.analysis.detectors.base) ------------------------------------------------------------------


def _challenged(
    finding: Finding,
    shared: Shared,
    values: dict[str, Any],
    skew: float | None,
    anomalies: list[dict[str, Any]],
    endpoint: tuple[str | None, str | None] | None,
) -> None:
    """A CHALLENGE's server fields (a value the message lacks does not erase one an earlier message gave)."""
    fields = finding.fields
    finding.set_fields(**{name: value for name, value in values.items() if value is not None or name not in fields})
    if skew is not None:
        fields["clock_skew_seconds"] = skew
    else:
        fields.setdefault("clock_skew_seconds", None)
    if anomalies:
        finding.set_fields(anomalies=anomalies)
    if endpoint is not None:  # which web endpoint answered: the request the CHALLENGE's response belongs to
        host, path = endpoint
        finding.set_fields(http_path=path or None, http_host=host)
        endpoints = fields.setdefault("http_endpoints", [])
        url = f"{host or ''}{path}"[:MAX_FIELD_TEXT]
        if url not in endpoints and len(endpoints) < MAX_HTTP_ENDPOINTS:
            endpoints.append(url)


def _closed(
    finding: Finding, shared: Shared, client: dict[str, Any], outcome: str | None, severity: Severity, whole: bool
) -> None:
    """An exchange ended: what the client said of itself, its outcome, and the severity its response earns.
    ``whole``: it held an AUTHENTICATE, whose fields are the latest client's as one (an anonymous one after a
    user's has no user, version or SPN: none is kept from the earlier); a NEGOTIATE alone erases nothing."""
    fields = finding.fields
    told = {
        name: client[name] for name in ntlmssp.CLIENT_FIELDS if whole or client[name] is not None or name not in fields
    }
    finding.set_fields(**told)
    fields["outcome"] = outcome
    fields.setdefault("users", [])
    fields.setdefault("workstations", [])
    if client["user"] is not None:
        finding.add_name("users", f"{client['domain']}\\{client['user']}" if client["domain"] else client["user"])
    if client["workstation"]:
        finding.add_name("workstations", client["workstation"])
    finding.raise_severity(severity)
    finding.add_detail(client)


def _hash(_finding: None, shared: Shared, line: str) -> None:
    shared.stats.add_hash(line)


def _probed(_finding: None, shared: Shared, server: str, advertised: bool | None, over_tls: bool) -> None:
    finding = shared.findings.find(FindingType.NTLM_INFO, server)
    if finding is not None:
        finding.fields["ntlm_advertised"] = advertised
        finding.fields["ntlm_over_tls"] = over_tls


def _names_itself(negotiate: ntlmssp.NegotiateMessage | None) -> bool:
    """A NEGOTIATE that supplies the client's domain or workstation: a leak even when no CHALLENGE answers it."""
    return negotiate is not None and bool(negotiate.domain or negotiate.workstation)


# Responses that are as good as a password: DES-based, cracked or looked up in rainbow tables (hashcat 5500).
WEAK_VERSIONS = frozenset({ntlmssp.NtlmVersion.NTLMV1, ntlmssp.NtlmVersion.NTLMV1_ESS})


def _severity(response: ntlmssp.AuthenticateMessage | None) -> Severity:
    """low for the server's names alone; medium once a NetNTLMv2 response crossed the wire (crackable offline,
    slowly); high for NTLMv1 and LM-only responses, which are clear-text credentials in all but name."""
    if response is None or response.ntlm_version == ntlmssp.NtlmVersion.ANONYMOUS:
        return Severity.LOW
    weak = response.ntlm_version in WEAK_VERSIONS or any(a.code == "lm_only_response" for a in response.anomalies)
    return Severity.HIGH if weak else Severity.MEDIUM


# What hashcat_line returns for a response whose user or domain cannot be written as a hashcat line.
UNWRITABLE = ""


def hashcat_line(
    challenge: ntlmssp.ChallengeMessage | None, response: ntlmssp.AuthenticateMessage | None
) -> str | None:
    """NetNTLMv1 (hashcat 5500) or NetNTLMv2 (5600) line for an exchange with both server challenge and response.

    The format has no escaping, and the names come from the wire: a user or domain holding ``:`` (the field
    separator) or any character :func:`printable` escapes (controls such as ESC or CR, which would act on the
    terminal of whoever views the file, bidi and invisible characters) gives :data:`UNWRITABLE` instead of a line;
    the summary counts those in ``hashes_skipped``.
    """
    if challenge is None or response is None or len(challenge.server_challenge) != 8 or not response.user:
        return None
    user, domain = response.user, response.domain or ""
    if ":" in user + domain or printable(user + domain) != user + domain:
        return UNWRITABLE
    server = challenge.server_challenge.hex()
    if response.ntlm_version in (ntlmssp.NtlmVersion.NTLMV1, ntlmssp.NtlmVersion.NTLMV1_ESS):
        return f"{user}::{domain}:{response.lm_response.hex()}:{response.nt_response.hex()}:{server}"
    if response.ntlm_version == ntlmssp.NtlmVersion.NTLMV2 and len(response.nt_response) > 16:
        nt = response.nt_response
        return f"{user}::{domain}:{server}:{nt[:16].hex()}:{nt[16:].hex()}"
    return None
