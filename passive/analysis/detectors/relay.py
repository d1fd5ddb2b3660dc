"""``open-relay``: every unauthenticated SMTP transaction whose ``RCPT TO`` is not plainly the server's own goes to
the run's :class:`~passive.analysis.relays.RelayLedger`, which decides the verdicts.

A session picked up mid-stream (a ring buffer's piece read apart, a capture begun during the session) may have
authenticated before the capture saw it: its transactions are not judged."""

from __future__ import annotations

from typing import ClassVar

from dissectors import events as ev
from passive.analysis.detectors.base import Detector, Handlers, Session, Shared
from passive.analysis.domains import destination_domain
from passive.analysis.relays import Attempt, ServerRelays
from passive.findings.model import FindingType


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
        context = self.context
        if sender is None or self.session.authenticated or context.partial or context.protocol != "smtp":
            return
        domain = destination_domain(event.address)
        refused = event.reply_code is not None and 500 <= event.reply_code < 600
        if domain is None or not (event.accepted or refused):
            return
        attempt = Attempt(
            client=context.client,
            mail_from=sender.address,
            rcpt_to=event.address,
            domain=domain,
            accepted=bool(event.accepted),
            reply=event.reply_text,
            time=event.evidence.timestamp,
            evidence=(self.evidence(sender), evidence := self.evidence(event)),
            file=evidence.file,  # the file holding the RCPT (a ring's piece)
        )
        names = frozenset(self.session.server_names)
        server = (context.server, context.protocol, context.source, context.network)
        self.session.apply(_attempted, None, server, names, attempt)


# -- effects (passive.analysis.detectors.base) ------------------------------------------------------------------


def _attempted(
    _finding: None,
    shared: Shared,
    server: tuple[str, str, str, tuple[str, int] | tuple[()]],
    names: frozenset[str],
    attempt: Attempt,
) -> None:
    """An attempt to the run's relay ledger, with the names the server gave itself so far in the session; ``server``
    is its endpoint, protocol, source and overlay network (:class:`~passive.analysis.relays.ServerRelays`). The ledger
    rebuilds the server's findings: those it evicted to make room are counted in the run's statistics as
    :func:`~passive.analysis.detectors.session.find` counts them, and the attempt counts once among the occurrences
    past the cap if a verdict it rebuilt found no room (a rebuild goes through all of the server's attempts). An
    attempt the ledger has no room to keep (:data:`~passive.analysis.relays.MAX_RELAY_SERVERS`) is counted."""
    ledger, findings, stats = shared.relays, shared.findings, shared.stats
    dropped, evicted = findings.dropped, findings.evicted
    relays = ledger.server(*server)
    if relays is None:
        stats.anomalies["relay_servers_untracked"] += 1
        untracked = ServerRelays(*server)
        untracked.learn_names(names)
        ledger.judge(findings, untracked, attempt)
    else:
        relays.learn_names(names)
        if not ledger.record(findings, relays, attempt):
            stats.anomalies["relay_attempts_judged_alone"] += 1
    evicted = findings.evicted - evicted
    refused = findings.dropped - dropped - evicted
    stats.findings_evicted += evicted
    stats.findings_dropped += evicted + (refused > 0)
