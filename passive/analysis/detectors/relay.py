"""``open-relay``: unauthenticated SMTP transactions whose RCPT to a foreign domain the server accepted (or refused)."""

from __future__ import annotations

import re
from typing import ClassVar

from dissectors import events as ev
from passive.analysis.detectors.base import Detector, Handlers, Session
from passive.findings.model import FindingType, Severity

# Local domains listed in a relay finding (the check itself uses all of them).
MAX_LOCAL_DOMAINS_SHOWN = 20

_DOMAIN = re.compile(r"@\[?([A-Za-z0-9.\-:]+)\]?$")


def recipient_domain(address: str) -> str | None:
    match = _DOMAIN.search(address.strip())
    return match.group(1) if match else None


class RelayDetector(Detector):
    KIND = FindingType.OPEN_RELAY
    HANDLERS: ClassVar[Handlers] = {ev.MailFrom: "mail_from", ev.RcptTo: "rcpt_to", ev.Reset: "reset"}

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.sender: ev.MailFrom | None = None

    def mail_from(self, event: ev.MailFrom) -> None:
        self.sender = event

    def reset(self, event: ev.Reset) -> None:
        self.sender = None

    def rcpt_to(self, event: ev.RcptTo) -> None:
        sender = self.sender
        if sender is None or self.session.authenticated or self.context.protocol != "smtp":
            return
        domain = recipient_domain(event.address)
        if domain is None or self._is_local(domain):
            return
        if event.accepted:
            finding = self.finding(FindingType.OPEN_RELAY, Severity.HIGH, ("accepted",))
        elif event.reply_code is not None and 500 <= event.reply_code < 600:
            finding = self.finding(FindingType.OPEN_RELAY, Severity.INFO, ("denied",))
        else:
            return
        self.touch(finding, sender)
        self.record(finding, event)
        attempt = {
            "mail_from": sender.address,
            "rcpt_to": event.address,
            "accepted": bool(event.accepted),
            "reply": event.reply_text,
        }
        finding.set_fields(**attempt, local_domains=sorted(self._local_domains())[:MAX_LOCAL_DOMAINS_SHOWN])
        finding.add_detail({"client": self.context.client, **attempt, "time": event.evidence.timestamp})

    def _local_domains(self) -> set[str]:
        names = set(self.context.local_domains)
        for name in self.session.server_names:
            names.add(name)
            parts = name.split(".")
            if len(parts) > 2:
                names.add(".".join(parts[1:]))
        return names

    def _is_local(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return any(domain == local or domain.endswith("." + local) for local in self._local_domains())
