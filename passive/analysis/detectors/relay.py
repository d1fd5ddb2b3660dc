"""``open-relay``: every unauthenticated SMTP transaction whose ``RCPT TO`` is not plainly the server's own goes to
the run's :class:`~passive.analysis.relays.RelayLedger`, which decides the verdicts.

A session picked up mid-stream (a ring buffer's piece read apart, a capture begun during the session) may have
authenticated before the capture saw it: its transactions are not judged. One that lost the client's bytes before
a transaction (a gap, or partial state dropped for the run's dissector budget), or whose AUTH got no verdict the
capture showed, may have authenticated too: its attempts say
so, and the ledger makes them at most ``possible-relay``.

An accepted recipient waits for the end of its transaction: a server that refuses the message (at ``DATA``, or at
the end of the data) relayed nothing. When its refusal names relaying or the recipients where its text begins
(Postfix's "Relay access denied", "Recipient address rejected", "no valid recipients"; not words of the sender's a
filter quotes back) the attempt is a refusal; a refusal for another reason
(a content filter's) says nothing of a message it would not refuse, and the attempt is at most ``possible-relay``.
A transaction that ends otherwise (RSET, a new MAIL, QUIT, the connection's end, a temporary 4xx refusal of the
message) leaves the recipient's reply as the verdict's ground, except that a 4xx to the message leaves it unjudged,
as a 4xx to the RCPT does. Each attempt says how far its transaction went (``Attempt.reached``: DATA taken, the
message's verdict seen), so that a server seen refusing at a later stage has it judged as no last word there.

A proxy's ``XCLIENT`` (Postfix) that the server took makes its ``LOGIN`` the session's authentication (not judged)
and its ``ADDR`` the client that is judged; one without ``LOGIN`` ends the authentication before it (an AUTH's, an
earlier ``LOGIN``'s), as Postfix resets its SASL state then. LMTP (``LHLO``, RFC 2033) delivers to the server's own
mailboxes, whatever their domains: its transactions are not judged, once the server answered the ``LHLO`` (a refused
one leaves the session SMTP: a client cannot hide relaying behind an ``LHLO`` an SMTP server refused)."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import ClassVar

from dissectors import events as ev
from passive.analysis.detectors.base import Detector, Handlers, Session, Shared
from passive.analysis.domains import route
from passive.analysis.relay_rules import Stage
from passive.analysis.relays import Attempt, ServerRelays, cut
from passive.core.endpoints import endpoint
from passive.findings.model import FindingType

# Accepted recipients of one transaction held until its end, and their text (addresses, reply, cited lines); past
# either the oldest is judged at once on its RCPT reply alone, as every one was before transactions were followed.
# A real transaction holds a few (a mailing list's, dozens); a session may be one of 10,000 flows: 32 short ones
# held 44 KB, 16 KiB of long ones 18 to 50 KB (measured: the held list's objects), 640 MB at most in all, as the
# credentials detector's pending bound allows.
MAX_HELD_RECIPIENTS = 32
MAX_HELD_CHARACTERS = 16 * 1024
# A refusal of the message that is about relaying or the recipients, not the message's content: a refusal's words
# (Postfix, Sendmail, Exim, Exchange, qmail), not the words alone, which a content filter's reply may hold anywhere
# (an attachment's name in Amavis's "BANNED: relay.exe", the "relay" an RBL listed). They must begin the reply's
# text (_OWN_WORDS_START): a filter that quotes what the sender wrote (Amavis names the banned attachment, "BANNED:
# ... N=Relay access denied.exe") gives the sender any words after its own.
_ABOUT_RECIPIENTS = re.compile(
    r"relay(?:ing)?\s+(?:access\s+)?(?:denied|not\s+(?:permitted|allowed|authori[sz]ed)|prohibited|refused|forbidden)"
    r"|(?:unable|not\s+(?:allowed|permitted|authori[sz]ed)|cannot|can't|do\s+not|don't|will\s+not|won't)\s+(?:to\s+)?relay"
    r"|\bno\s+relaying|\bno\s+valid\s+recipients|allowed\s+rcpthosts"
    r"|recipients?\s+(?:address\s+)?(?:rejected|refused|denied|unknown|not\s+(?:found|allowed|permitted))",
    re.IGNORECASE,
)
# What may come before a server's own words in its refusal of a message: the reply code, an enhanced status code,
# the address it refused (Postfix "<v@example.net>: ", Sendmail "<v@example.net>... "; a quoted local part, which
# may hold ">" and blanks, is passed over whole, as smtp_syntax reads a path), Exchange's "SMTP;", Postfix's
# "Error:" ("554 5.5.1 Error: no valid recipients").
_OWN_WORDS_START = re.compile(
    r'\s*(?:\d{3}[ -]?)?\s*(?:[245]\.\d{1,3}\.\d{1,3}\s+)?(?:<(?:"(?:[^"\\]|\\.)*"|[^">])*>(?::|\.\.\.)\s*)?'
    r"(?:SMTP;\s*)?(?:Error:\s*)?",
    re.IGNORECASE,
)
# XCLIENT values that give no login or address (Postfix's placeholders).
_UNKNOWN_VALUES = frozenset({"[UNAVAILABLE]", "[TEMPUNAVAIL]", ""})


class RelayDetector(Detector):
    KIND = FindingType.OPEN_RELAY
    HANDLERS: ClassVar[Handlers] = {
        ev.MailFrom: "mail_from",
        ev.RcptTo: "rcpt_to",
        ev.Reset: "reset",
        ev.DataStart: "data",
        ev.MessageEnd: "message_end",
        ev.Anomaly: "anomaly",
        ev.AuthAbandoned: "auth_abandoned",
        ev.ClientOverride: "client_override",
        ev.AuthResult: "auth_result",
        ev.Hello: "hello",
        ev.Capabilities: "capabilities",
    }

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.sender: ev.MailFrom | None = None
        self.held: list[Attempt] = []  # accepted recipients of the transaction, waiting for its end
        self.held_characters = 0
        self.unsure = ""  # why the session may have authenticated unseen
        # The server granted an AUTH, or took an XCLIENT naming a login, and took no XCLIENT without one since.
        self.authenticated = False
        self.vouched_client: str | None = None  # the client an XCLIENT the server took named (ip:port)
        self.vouched_by = ""  # the proxy that sent that XCLIENT
        self.lmtp = False  # the server took the client's LHLO: final delivery to mailboxes (RFC 2033), never a relay
        self.lhlo = False  # the client's latest greeting was LHLO, not answered yet
        # A MAIL refused (not 503) with no transaction open, and the RCPTs the server took after it: judged only if
        # the server takes a message after all (a lax server relays what it said it would not), else never.
        self.refused_sender: ev.MailFrom | None = None
        self.unopened: list[Attempt] = []

    def hello(self, event: ev.Hello) -> None:
        self.lhlo = event.command == "LHLO"
        if not self.lhlo:
            self.lmtp = False

    def capabilities(self, event: ev.Capabilities) -> None:
        """The server's 250 to the EHLO or LHLO before it, told in turn with the other replies: it clears the
        transaction as RSET does (RFC 5321 4.1.4, RFC 2033), so the recipients taken before it are judged on their
        RCPT replies, and what follows belongs to no transaction until a MAIL is taken."""
        if event.source == "ehlo":
            self._no_transaction()
            self.lmtp, self.lhlo = self.lhlo, False

    def mail_from(self, event: ev.MailFrom) -> None:
        """A MAIL the server refused opens no transaction (RFC 5321 3.3): the RCPTs after it, answered 503 "need MAIL"
        or, by a lax server, 250, say nothing of relaying until a MAIL is taken. A 503 refuses a MAIL inside an open
        transaction ("sender already given", "nested MAIL command"), which goes on: its RCPTs are judged as before.
        One whose reply was not seen (lost, cut) may have been taken."""
        if event.accepted is False:
            if event.reply_code != 503:
                self._no_transaction(refused=event)
            return
        self._no_transaction()
        self.sender = event

    def reset(self, event: ev.Reset) -> None:
        self._no_transaction()

    def _no_transaction(self, refused: ev.MailFrom | None = None) -> None:
        """The transaction ends (RSET, EHLO, a new MAIL): its recipients are judged on what they reached; those taken
        with no transaction open are not."""
        self._flush()
        self.sender, self.refused_sender, self.unopened = None, refused, []

    def anomaly(self, event: ev.Anomaly) -> None:
        # The client's commands alone authenticate (AUTH, XCLIENT, STARTTLS for a certificate): a gap in what the
        # server sent hides none of them. The run's dissector budget dropping the session's partial state skips the
        # client's line in progress (an AUTH, say) and forgets an exchange awaiting its verdict.
        if self.unsure or event.side is not ev.Side.CLIENT:
            return
        if event.code == "gap":
            self.unsure = "the client's bytes were lost before the transaction (a gap): an AUTH may be among them"
        elif event.code == "dissector_budget":
            self.unsure = "the session's partial state was dropped (the run's dissector budget): an AUTH may be in it"

    def auth_abandoned(self, event: ev.AuthAbandoned) -> None:
        if not self.unsure:
            self.unsure = f"the verdict on its AUTH {event.mechanism} was not seen ({event.reason})"

    def auth_result(self, event: ev.AuthResult) -> None:
        self.authenticated = self.authenticated or event.success

    def client_override(self, event: ev.ClientOverride) -> None:
        if not event.accepted:
            return
        attributes = event.attributes
        # Postfix starts the session again: a LOGIN authenticates it, none resets what was (an AUTH a gap may have
        # hidden included).
        self.authenticated = attributes.get("LOGIN", "") not in _UNKNOWN_VALUES
        self.unsure = ""
        address = attributes.get("ADDR", "")
        if address not in _UNKNOWN_VALUES:
            try:
                ip = ipaddress.ip_address(address[5:] if address[:5].upper() == "IPV6:" else address)  # any case
            except ValueError:
                self.unsure = self.unsure or "a proxy's XCLIENT named a client whose address is unreadable"
                return
            port = attributes.get("PORT", "")
            self.vouched_client = endpoint(str(ip), port if port.isdigit() else 0)
            self.vouched_by = self.context.client

    def rcpt_to(self, event: ev.RcptTo) -> None:
        sender = self.sender or self.refused_sender
        context = self.context
        if sender is None or self.authenticated or context.partial or self.lmtp:
            return
        if context.protocol != "smtp":
            return
        domain, outer = route(event.address)
        refused = event.reply_code is not None and 500 <= event.reply_code < 600
        if domain is None or not (event.accepted or refused):
            return
        attempt = cut(
            Attempt(
                client=self.vouched_client or context.client,
                mail_from=sender.address,
                rcpt_to=event.address,
                domain=domain,
                accepted=bool(event.accepted),
                reply=event.reply_text,
                time=event.evidence.timestamp,
                evidence=(self.evidence(sender), evidence := self.evidence(event)),
                file=evidence.file,  # the file holding the RCPT (a ring's piece)
                unsure=self.unsure,
                via=self.vouched_by if self.vouched_client else "",
                outer=outer or "",
                proxy=context.proxy,
            )
        )
        if self.sender is None:  # taken after a refused MAIL: a relay only if a message is taken after all
            size = _characters(attempt) + sum(map(_characters, self.unopened))  # held as a transaction's are
            if attempt.accepted and size <= MAX_HELD_CHARACTERS:
                self.unopened = [*self.unopened[1 - MAX_HELD_RECIPIENTS :], attempt]
            return
        if not attempt.accepted:
            self._attempt(attempt)
            return
        size = _characters(attempt)
        while self.held and (
            len(self.held) >= MAX_HELD_RECIPIENTS or self.held_characters + size > MAX_HELD_CHARACTERS
        ):
            oldest = self.held.pop(0)
            self.held_characters -= _characters(oldest)
            self._attempt(oldest)
        self.held.append(attempt)
        self.held_characters += size

    def data(self, event: ev.DataStart) -> None:
        if event.accepted:  # the server's checks at DATA were passed
            self.held = [dataclasses.replace(attempt, reached=Stage.DATA) for attempt in self.held]
        elif event.accepted is False and event.reply_code is not None:
            self._ended(event)

    def message_end(self, event: ev.MessageEnd) -> None:
        self._ended(event)

    def close(self) -> None:
        self._flush()

    def unanswered(self) -> None:
        """A probe's relay test ended before the server answered its DATA (the connection dropped, the time ran
        out): the test counts a recipient relayed only once DATA is taken, so, as after a 4xx to the message, the
        transaction's accepted recipients are left unjudged."""
        self.held.clear()
        self.held_characters = 0

    def _ended(self, event: ev.DataStart | ev.MessageEnd) -> None:
        """The server's verdict on the transaction's message: a 2xx confirms the held recipients, a 5xx refuses
        them all, a 4xx leaves them unjudged."""
        code = event.reply_code or 0
        unopened, self.unopened = self.unopened, []
        if 200 <= code < 300 and isinstance(event, ev.MessageEnd):
            held, self.held, self.held_characters = [*self.held, *unopened], [], 0
            for attempt in held:  # the message taken: the server's last word on them
                self._attempt(dataclasses.replace(attempt, reached=Stage.MESSAGE))
        elif 400 <= code < 500:
            self.held.clear()
            self.held_characters = 0
        elif 500 <= code < 600:
            at_data = isinstance(event, ev.DataStart)
            reached = Stage.DATA if at_data else Stage.MESSAGE
            refusal = f"at {'DATA' if at_data else 'the end of the data'}: {event.reply_text}"
            cited = self.evidence(event)
            held, self.held, self.held_characters = self.held, [], 0
            accepted = not _about_recipients(event.reply_text or "")  # refused for its content: unsure
            for attempt in held:
                evidence = (*attempt.evidence, cited)
                refused = dataclasses.replace(attempt, accepted=accepted, refused_later=refusal, reached=reached)
                self._attempt(dataclasses.replace(refused, evidence=evidence))
        self._flush()
        self.sender = None if isinstance(event, ev.MessageEnd) else self.sender

    def _flush(self) -> None:
        held, self.held, self.held_characters = self.held, [], 0
        for attempt in held:
            self._attempt(attempt)

    def _attempt(self, attempt: Attempt) -> None:
        context = self.context
        names = frozenset(self.session.server_names)
        server = (context.server, context.protocol, context.source, context.network)
        self.session.apply(_attempted, None, server, names, attempt)


def _characters(attempt: Attempt) -> int:
    """The text an attempt holds: its addresses, reply and cited lines."""
    texts = (attempt.mail_from, attempt.rcpt_to, attempt.reply, attempt.domain, attempt.unsure, attempt.outer)
    return sum(map(len, texts)) + sum(len(evidence.line or "") for evidence in attempt.evidence)


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


def _about_recipients(reply: str) -> bool:
    """Whether a refusal of the message (``reply``: its code and text) is about relaying or the recipients, in the
    server's own words: :data:`_ABOUT_RECIPIENTS` where the text begins (:data:`_OWN_WORDS_START`)."""
    start = _OWN_WORDS_START.match(reply)
    return _ABOUT_RECIPIENTS.match(reply, start.end() if start else 0) is not None
