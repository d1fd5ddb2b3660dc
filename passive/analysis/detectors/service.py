"""``mail-service``: every server seen, its banner and software, whether it offers and uses TLS."""

from __future__ import annotations

from typing import Any, ClassVar

from dissectors import events as ev
from passive.analysis.detectors.base import Detector, Handlers, Session, Shared, seen
from passive.analysis.domains import server_name
from passive.analysis.software import banner_host, guess_software
from passive.findings.model import EvidenceRecord, Finding, FindingType, Severity

# Characters of a greeting kept as the finding's banner (and searched for the software): real banners are under 200;
# 20 000 servers greeting with 60 KB each held 3.5 GiB in findings and their output, and took 8 minutes to match.
MAX_BANNER = 512


class ServiceDetector(Detector):
    KIND = FindingType.MAIL_SERVICE
    HANDLERS: ClassVar[Handlers] = {
        ev.Greeting: "greeting",
        ev.Capabilities: "capabilities",
        ev.StartTls: "start_tls",
        ev.Identity: "identity",
        ev.Anomaly: "anomaly",
    }

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.service = self.finding(FindingType.MAIL_SERVICE, Severity.INFO, held=True)
        session.apply(_defaults, self.service)
        self._counted = False

    def occurrence(self, event: ev.Event) -> None:
        """Every event: the session's first counts it once (and is cited), later ones move last_seen."""
        if not self._counted:
            self._counted = True
            self.touch(self.service, event)
        else:
            self.session.seen_later(self.service, event.evidence.timestamp)

    def quiet_session(self, first: float | None, last: float | None) -> None:
        """The session ended without an event (picked up mid-stream, with only commands the inventory does not read:
        POP3 RETR and LIST, say): it saw the server all the same, from its first bytes to its last, and counts once
        (with no line to cite)."""
        if not self._counted:
            self._counted = True
            self.session.apply(seen, self.service, first, self.context.client)
            self.session.seen_later(self.service, last)

    def greeting(self, event: ev.Greeting) -> None:
        banner = event.banner[:MAX_BANNER]
        self.session.apply(_greeting, self.service, banner, banner_host(banner), self.evidence(event))
        if (name := server_name(banner.split(" ", 1)[0])) is not None:
            self.session.server_names.add(name)

    def capabilities(self, event: ev.Capabilities) -> None:
        if event.server_name and (name := server_name(event.server_name)) is not None:
            self.session.server_names.add(name)
        if event.starttls:
            self.session.apply(_fields, self.service, {"starttls_offered": True})
        elif not self.session.authenticated:  # once logged in a server lists no STARTTLS/STLS (RFC 9051, RFC 2595)
            self.session.apply(_listed_without_starttls, self.service)

    def identity(self, event: ev.Identity) -> None:
        """IMAP ID: a client's names the software it runs; a server's names its own when the banner did not."""
        software = described_software(event.fields)
        if software is None:
            return
        effect = _client_software if event.side is ev.Side.CLIENT else _server_software
        self.session.apply(effect, self.service, software, self.evidence(event))

    def anomaly(self, event: ev.Anomaly) -> None:
        """How the server took a message's lax end line (``dissectors.smtp_end``); its acceptance of a STARTTLS the
        client then did not use (``starttls_not_used``: it offers STARTTLS all the same)."""
        reading = _MESSAGE_END.get(event.code)
        if reading is not None:
            self.session.apply(_message_end, self.service, reading, self.evidence(event))
        elif event.code == "starttls_not_used":
            self.session.apply(_fields, self.service, {"starttls_offered": True})

    def start_tls(self, event: ev.StartTls) -> None:
        """TLS began. A server that accepted STARTTLS (STLS) offers it, whether or not a listing was seen: a capture
        begun after the EHLO, a client that asked for no listing."""
        if event.accepted:
            offered = {"starttls_offered": True} if event.command in ev.STARTTLS_COMMANDS else {}
            self.session.apply(_fields, self.service, {"tls": True, **offered})
            self.record(self.service, event)

    # -- facts only a probe knows -------------------------------------------------------------------------------

    def probe_facts(self, tls_facts: dict[str, Any], starttls_result: str) -> None:
        self.session.apply(_fields, self.service, {**tls_facts, "starttls_result": starttls_result})

    def relay_test(self, result: dict[str, Any]) -> None:
        self.session.apply(_fields, self.service, {"relay_test": result})

    @property
    def banner(self) -> str | None:
        """The server's banner (a probe's session, whose effects are applied at once)."""
        return self.service.fields.get("banner")


# -- effects (passive.analysis.detectors.base) ------------------------------------------------------------------

_MESSAGE_END = {"lax_end_taken": "lax", "lax_end_in_message": "exact"}


def described_software(fields: dict[str, str]) -> str | None:
    """What an ID parameter list says the software is: ``Thunderbird 115.3.1 (Windows 10)`` from its name (or
    vendor), version, os and os-version; None without a name or vendor."""
    name = fields.get("name") or fields.get("vendor")
    if not name:
        return None
    system = " ".join(value for value in (fields.get("os"), fields.get("os-version")) if value)
    text = " ".join(value for value in (name, fields.get("version")) if value)
    return f"{text} ({system})" if system else text


def _defaults(service: Finding, shared: Shared) -> None:
    fields = service.fields
    # starttls_offered: None until a capability listing, or a STARTTLS the server accepted, was seen (a capture of the
    # client's side, a POP3 client that sends no CAPA, an SMTP client that says HELO): else nothing says what the
    # server offers.
    defaults = (("banner", None), ("banner_host", None), ("software", None), ("starttls_offered", None))
    fields.setdefault("message_end", None)
    for name, default in (*defaults, ("tls", False)):
        fields.setdefault(name, default)
    fields.setdefault("client_software", [])


def _client_software(service: Finding, shared: Shared, software: str, evidence: EvidenceRecord) -> None:
    """Each software a client named is listed once (up to the list's bound), cited where it was first named."""
    listed = service.fields.setdefault("client_software", [])
    before = len(listed)
    service.add_name("client_software", software[:MAX_BANNER])
    if len(listed) > before:
        service.add_evidence(evidence)


def _server_software(service: Finding, shared: Shared, software: str, evidence: EvidenceRecord) -> None:
    """The software a server's ID names is its software when its banner named none."""
    if service.fields.get("software") is None:
        service.fields["software"] = software[:MAX_BANNER]
        service.add_evidence(evidence)


def _greeting(service: Finding, shared: Shared, banner: str, host: str | None, evidence: EvidenceRecord) -> None:
    """The first banner a server is seen with is its banner (and names its software, and the internal host an
    Exchange greeting encodes: a leak, rated low); every greeting is cited."""
    fields = service.fields
    if fields.get("banner") is None:
        fields["banner"] = banner
        fields["software"] = guess_software(banner, host_first=service.protocol == "smtp")
        if host is not None:
            fields["banner_host"] = host
            service.raise_severity(Severity.LOW)
    service.add_evidence(evidence)


def _message_end(service: Finding, shared: Shared, reading: str, evidence: EvidenceRecord) -> None:
    """A server seen ending a message at a lax end line is ``lax`` (rated low) whatever else it did; cited once."""
    fields = service.fields
    if fields.get("message_end") == "lax" or fields.get("message_end") == reading:
        return
    fields["message_end"] = reading
    if reading == "lax":
        service.raise_severity(Severity.LOW)
    service.add_evidence(evidence)


def _fields(service: Finding, shared: Shared, values: dict[str, Any]) -> None:
    service.fields.update(values)


def _listed_without_starttls(service: Finding, shared: Shared) -> None:
    """A capability listing without STARTTLS/STLS: not offered, unless another session saw it offered."""
    if service.fields.get("starttls_offered") is None:
        service.fields["starttls_offered"] = False
