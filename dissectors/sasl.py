"""SASL exchanges as they appear on the mail wire, sans-I/O.

Covers the carriers of RFC 4954 (SMTP ``AUTH``, ``334`` continuations), RFC 5034 (POP3 ``AUTH``, ``+`` continuations)
and RFC 3501/4959 (IMAP ``AUTHENTICATE`` with SASL-IR), plus Microsoft's variants ([MS-SMTPNTLM] ``334 NTLM
supported``, [MS-POP3] ``+OK`` before the first blob). An :class:`AuthTracker` is fed the lines of one session, each
with its direction, and returns typed events: the exchange start, every blob (NTLMSSP decoded), clear-text credentials
(PLAIN, LOGIN, and what CRAM-MD5, XOAUTH2 and OAUTHBEARER reveal), cancellation and the server's verdict.

The client's steps follow the server: a client line is a SASL response only when it answers a server prompt
(``334`` for SMTP, ``+`` for POP3 and IMAP) not yet answered. Only while the server has said nothing since the
exchange began (a capture of the client's side only, asymmetric routing, a slow server) is a line taken without a
prompt, and then only a base64 line that is no command of the protocol, up to the responses the mechanism has (one
for PLAIN, two for LOGIN). Any other line is the client's next command (:meth:`AuthTracker.claims` says which): it
ends an exchange whose prompts and replies the capture showed (the verdict was lost), unless the server answers in
order (SMTP, POP3; IMAP names the exchange in its verdict's tag), and leaves one the server never spoke in waiting for
a verdict that may still come.

An SMTP or POP3 server answers AUTH commands pipelined in one group (a password guesser, a client retrying) in turn
(RFC 2920, RFC 2449 section 6.6), an IMAP server with the tag of each: each exchange the client ended by sending
another AUTH awaits its verdict, first in, first out, and every event names its exchange (``attempt``), so that each
verdict reaches the credentials it judges.
A prompt for a response the client did not send before moving on is answered by the line it pipelined next, as the
server reads it (:meth:`AuthTracker.pipelined_response`).
"""

from __future__ import annotations

import enum
import re
import sys
from collections import deque
from typing import NamedTuple

from dissectors.refusals import MAX_MECHANISM_NAME, imap_judged, pop3_in_use, pop3_judged, smtp_judged

# The events and the base64 decoder are used as this module's by the sessions: SaslBlob, SaslCancelled,
# SaslCredentials, decode_base64, MAX_BLOB_TEXT are named again here for them.
from dissectors.sasl_events import Direction as Direction
from dissectors.sasl_events import OfExchange, SaslAbandoned, SaslAnomaly, SaslEvent, SaslOutcome, SaslStarted
from dissectors.sasl_events import SaslBlob as SaslBlob
from dissectors.sasl_events import SaslCancelled as SaslCancelled
from dissectors.sasl_events import SaslCredentials as SaslCredentials
from dissectors.sasl_exchange import MAX_BLOB_TEXT as MAX_BLOB_TEXT
from dissectors.sasl_exchange import Exchange
from dissectors.sasl_exchange import decode_base64 as decode_base64
from dissectors.sasl_steps import AUTH_VERBS, looks_like_response

# An exchange that goes on for more steps than any real mechanism needs is abandoned.
MAX_STEPS = 32


class Protocol(enum.StrEnum):
    SMTP = "smtp"
    POP3 = "pop3"
    IMAP = "imap"
    # HTTP carries NTLM, Negotiate and Basic in headers (RFC 4559, RFC 7617), not in SASL lines: its session drives
    # the exchanges itself and never feeds the tracker.
    HTTP = "http"
    SOCKS = "socks"  # a SOCKS handshake (dissectors.socks): its username/password is read, nothing of SASL


class AuthCommand(NamedTuple):
    """A client's request to start SASL: ``AUTH <mech> [ir]`` or ``<tag> AUTHENTICATE <mech> [ir]``."""

    mechanism: str
    initial_response: str | None = None
    tag: str | None = None


# A SASL mechanism name (RFC 4422 section 3.1: up to 20 characters; some servers list longer private names), up to
# the limit the refusals that name it are read with.
_MECHANISM = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_MECHANISM_NAME}}}")


def parse_auth_command(protocol: Protocol, line: str) -> AuthCommand | None:
    """Recognise the command that starts a SASL exchange; None for any other line.

    ``AUTH <mech> [initial response]`` (SMTP, POP3; SMTP's X-EXPS alike) or ``<tag> AUTHENTICATE <mech> [initial
    response]`` (IMAP), split with string methods: one pass over the line whatever it holds (a regular expression
    with a lazy group before trailing blanks backtracked quadratically on a line of spaces).
    """
    imap = protocol is Protocol.IMAP
    words = line.strip().split(None, 3 if imap else 2)
    tag = words.pop(0) if imap and words else None
    if len(words) < 2 or words[0].upper() not in AUTH_VERBS.get(protocol, ()):
        return None
    if tag is not None and ("+" in tag or "*" in tag):
        return None  # not a tag (RFC 9051: none holds "+" or "*"): no server answers it as one
    if not _MECHANISM.fullmatch(words[1]):
        return None
    return AuthCommand(words[1].upper(), words[2] if len(words) > 2 else None, tag)


class ReplyKind(enum.Enum):
    CONTINUE = "continue"
    SUCCESS = "success"
    FAILURE = "failure"  # the server checked the credentials and refused them
    REFUSED = "refused"  # the server refused the exchange without checking them (dissectors.refusals)
    OTHER = "other"


# The replies that end an exchange with a verdict.
VERDICTS = frozenset({ReplyKind.SUCCESS, ReplyKind.FAILURE, ReplyKind.REFUSED})


class ServerReply(NamedTuple):
    kind: ReplyKind
    text: str  # the continuation payload, or the whole status line


_SMTP_REPLY = re.compile(r"^\s*(\d{3})(?:[ -](.*))?$")


def classify_server_line(protocol: Protocol, line: str, tag: str | None = None) -> ServerReply:
    """What a server line means inside an exchange: a continuation (with its payload), success, failure, or a
    refusal that never judged the credentials (:mod:`dissectors.refusals`)."""
    stripped = line.strip()
    if protocol is Protocol.SMTP:
        match = _SMTP_REPLY.match(stripped)
        if not match:
            return ServerReply(ReplyKind.OTHER, stripped)
        code, rest = match.group(1), (match.group(2) or "").strip()
        if code == "334":
            return ServerReply(ReplyKind.CONTINUE, rest)
        if code.startswith("2"):
            return ServerReply(ReplyKind.SUCCESS, stripped)
        if code[0] in "45":
            return ServerReply(_refusal(smtp_judged(int(code), rest)), stripped)
        return ServerReply(ReplyKind.OTHER, stripped)
    if protocol is Protocol.POP3:  # a "+" line but +OK continues, its space after "+" (RFC 5034) or not ("+TlRM")
        upper = stripped.upper()
        if upper.startswith("+OK"):
            return ServerReply(ReplyKind.SUCCESS, stripped)
        if upper.startswith("-ERR"):  # [IN-USE], RFC 2449 8.1.2: right credentials, the maildrop locked elsewhere
            in_use = pop3_in_use(stripped[4:])
            return ServerReply(ReplyKind.SUCCESS if in_use else _refusal(pop3_judged(stripped[4:])), stripped)
        if stripped.startswith("+"):
            return ServerReply(ReplyKind.CONTINUE, stripped[1:].strip())
        return ServerReply(ReplyKind.OTHER, stripped)
    # IMAP: continuation "+ ...", tagged completion, untagged data in between.
    if stripped.startswith("+"):
        return ServerReply(ReplyKind.CONTINUE, stripped[1:].strip())
    parts = stripped.split(None, 2)
    if len(parts) >= 2 and parts[0] != "*" and (tag is None or parts[0] == tag):
        status = parts[1].upper()
        if status == "OK":
            return ServerReply(ReplyKind.SUCCESS, stripped)
        if status in ("NO", "BAD"):
            return ServerReply(_refusal(imap_judged(status, parts[2] if len(parts) > 2 else "")), stripped)
    return ServerReply(ReplyKind.OTHER, stripped)


def _refusal(judged: bool) -> ReplyKind:
    """A refusal's kind: FAILURE when it judged the credentials, REFUSED when it did not."""
    return ReplyKind.FAILURE if judged else ReplyKind.REFUSED


def _outcome(mechanism: str, reply: ServerReply, attempt: int = 0) -> SaslOutcome:
    """The verdict ``reply`` gives an exchange: success, or a refusal that judged the credentials or did not."""
    success, judged = reply.kind is ReplyKind.SUCCESS, reply.kind is not ReplyKind.REFUSED
    return SaslOutcome(mechanism, success, reply.text, attempt=attempt, judged=judged)


def _too_many_steps(exchange: Exchange) -> SaslAnomaly:
    return SaslAnomaly("sasl_too_many_steps", f"{exchange.mechanism} exchange abandoned after {MAX_STEPS} steps")


def _stamped(exchange: Exchange, events: list[SaslEvent]) -> list[SaslEvent]:
    """``events`` marked as ``exchange``'s (their ``attempt``)."""
    for event in events:
        if isinstance(event, OfExchange):
            event.attempt = exchange.number
    return events


# Exchanges the client ended by starting another before the server's verdict (AUTH commands pipelined, RFC 2920),
# kept to be given their verdicts in turn where the server answers in order (SMTP, POP3, IMAP). A client retrying, or
# guessing passwords, pipelines a few; past this many the oldest is no longer kept, only counted, so that the verdict
# the server still sends for it goes to no later exchange (it is told with ``attempt`` 0).
MAX_AWAITING = 16
# What an exchange kept awaiting its verdict costs (held_bytes): the object, its attributes and its slot, its
# mechanism's name (up to 40 characters): 340 bytes at most, measured (tracemalloc); it keeps no text of the
# client's (its LOGIN user name is let go).
EXCHANGE_OVERHEAD = 384


class AuthTracker:
    """Follows SASL exchanges in one session's lines, in the order they were seen.

    Feed every client line with :meth:`client_line` and every server line with :meth:`server_line`; lines outside an
    exchange are ignored except the AUTH command that starts one. The client's lines go to the open exchange, the
    latest started. Where the server answers in order (``in_order``: SMTP, POP3; IMAP, whose verdicts name their
    exchange by tag), an AUTH sent before the open exchange's verdict leaves that exchange awaiting it, first in, first
    out: each reply of the server goes to the oldest exchange awaiting one, then to the open exchange. Without
    ``in_order`` the new AUTH ends the open exchange without a verdict.
    """

    def __init__(self, protocol: Protocol | str, in_order: bool = False) -> None:
        self.protocol = protocol if isinstance(protocol, Protocol) else Protocol(protocol)
        self.in_order = in_order
        self.exchange: Exchange | None = None  # the open exchange: the client's lines are its steps
        self.awaiting: deque[Exchange] = deque()  # exchanges the client ended with another AUTH, oldest first
        self.uncounted = 0  # exchanges older than those, no longer kept, whose verdicts are still to come
        self.started = 0  # exchanges started in the session (the latest one's number)
        # After the server's bytes were lost (gap), its next replies may still answer what was sent before:
        # a verdict then is nobody's for sure (``doubt``), until a prompt shows the server is in the open exchange;
        # not even then when another exchange it may still be in ended without its verdict (``doubt_lasting``).
        self.doubt = False
        self.doubt_lasting = False

    @property
    def active(self) -> bool:
        """Does an exchange take the server's next reply (the open one, or one awaiting its verdict)?"""
        return self.exchange is not None or bool(self.awaiting) or self.uncounted > 0

    def unanswered(self) -> int:
        """Exchanges still awaiting the server's verdict, the open one included."""
        return self.uncounted + len(self.awaiting) + (self.exchange is not None)

    def next_attempt(self) -> int:
        """The number of the session's next login, an exchange's or a password command's (IMAP LOGIN, POP3 PASS and
        APOP): each verdict goes to its own, when several are sent before the first is answered."""
        self.started += 1
        return self.started

    def held_bytes(self) -> int:
        """Bytes kept between lines: the user name a LOGIN exchange waits to pair with its password, and the
        exchanges awaiting their verdicts."""
        exchange = self.exchange
        held = len(self.awaiting) * EXCHANGE_OVERHEAD
        return held if exchange is None or exchange.login_user is None else held + sys.getsizeof(exchange.login_user)

    def claims(self, line: str) -> bool:
        """Is this client line part of the open exchange (a response, a cancellation, or a new AUTH that ends it)?
        A line not claimed is the client's next command: pass it to :meth:`unclaimed`, then read it as one."""
        exchange = self.exchange
        if exchange is None:
            return False
        if parse_auth_command(self.protocol, line) is not None or exchange.owed > 0:
            return True
        if exchange.server_heard and not exchange.prompts_lost:
            return False  # every prompt the server sent is answered: this is no response
        return exchange.wants_response() and looks_like_response(str(self.protocol), line)

    def unclaimed(self, in_order: bool = False) -> list[SaslEvent]:
        """The client sent a command while the exchange is open. If the server never spoke in it, or answers in order
        (``in_order``: an SMTP or POP3 verdict comes before the reply to a command pipelined after it; IMAP's names its
        exchange), the verdict may still come: the exchange waits, taking no more lines. Otherwise it was lost: the
        exchange ends without one."""
        exchange = self.exchange
        if exchange is None:
            return []
        if self.doubt:  # its verdict may have been among the lost bytes: the next reply may be the command's
            return self._doubted(exchange, "the client sent a command after bytes of the server's were lost")
        if in_order or self.in_order or not exchange.server_heard:
            exchange.client_moved_on = True
            return []
        self.exchange = None
        why = "the client sent a command before the server's verdict was seen"
        return [SaslAbandoned(exchange.mechanism, why, attempt=exchange.number)]

    def client_line(self, line: str) -> list[SaslEvent]:
        exchange = self.exchange
        command = parse_auth_command(self.protocol, line)
        if exchange is None:
            return [] if command is None else self._start(command)
        if command is not None:
            if self.doubt:  # which of the two a verdict is for is unknown
                ended = self._doubted(exchange, "the client started another exchange after bytes were lost")
                return [*ended, *self._start(command)]
            if self.in_order:  # the server answers it after its verdict on the open exchange, which awaits that
                return [*self._await(exchange), *self._start(command)]
            # A new AUTH while one is open: the server's verdict on the old one was never seen.
            restarted = SaslAnomaly("sasl_restarted", "AUTH sent again before the previous exchange ended")
            abandoned = SaslAbandoned(
                exchange.mechanism, "the client started another exchange", attempt=exchange.number
            )
            return [restarted, abandoned, *self._start(command)]
        if exchange.client_steps >= MAX_STEPS:
            self.exchange = None
            return [_too_many_steps(exchange)]
        if exchange.owed == 0:  # sent ahead of the prompt it answers (pipelined, or the server not captured)
            exchange.unprompted += 1
        return _stamped(exchange, exchange.client_text(line))

    def _start(self, command: AuthCommand) -> list[SaslEvent]:
        exchange = Exchange(command.mechanism, command.tag, self.next_attempt())
        self.exchange = exchange
        events: list[SaslEvent] = [SaslStarted(command.mechanism, command.tag, command.initial_response is not None)]
        if command.initial_response is not None:
            initial = command.initial_response.strip()
            if initial == "=":  # RFC 4954: an empty initial response
                exchange.client_steps += 1
            else:
                events.extend(exchange.client_text(initial))
        return _stamped(exchange, events)

    def _await(self, exchange: Exchange) -> list[SaslEvent]:
        """The client ended ``exchange`` by starting another before its verdict: it awaits that verdict, which comes
        before the new exchange's, and takes no more client lines (its LOGIN user name is let go)."""
        exchange.login_user = exchange.last_prompt = None
        exchange.client_moved_on = True
        self.awaiting.append(exchange)
        if len(self.awaiting) <= MAX_AWAITING:
            return []
        oldest = self.awaiting.popleft()
        self.uncounted += 1
        detail = f"more than {MAX_AWAITING} exchanges awaited their verdicts: {oldest.mechanism}'s is told without it"
        return [SaslAnomaly("sasl_too_many_awaiting", detail)]

    def server_line(self, line: str) -> list[SaslEvent]:
        """A server line, for the exchange it answers: the oldest awaiting its verdict, else the open one."""
        if self.uncounted:
            return self._uncounted_reply(line)
        exchange = self.awaiting[0] if self.awaiting else self.exchange
        if exchange is None:
            return []
        reply = classify_server_line(self.protocol, line, exchange.tag)
        exchange.server_heard = True
        if reply.kind is ReplyKind.CONTINUE:
            self.doubt = self.doubt and self.doubt_lasting  # only the open exchange is prompted: the server is in it
            if exchange.server_steps >= MAX_STEPS:
                self._end(exchange)
                return [_too_many_steps(exchange)]
            return _stamped(exchange, exchange.server_continuation(reply.text))
        if reply.kind is ReplyKind.SUCCESS and self._ntlm_supported(exchange):
            exchange.prompted()  # [MS-POP3] 2.2.1.2: "+OK" means NTLM is supported, the blobs follow
            return []
        if reply.kind in VERDICTS and self.doubt:
            if exchange is self.exchange and exchange.tag is None and exchange.wants_response():
                return []  # perhaps a reply to a command sent before: the responses the client still sends are read
            return self._doubted(exchange, "a reply that may answer a command sent before the server's lost bytes")
        if reply.kind in VERDICTS:
            self._end(exchange)
            return [_outcome(exchange.mechanism, reply, exchange.number)]
        return []

    def gap(self, server: bool, size: int, outstanding: bool) -> list[SaslEvent]:
        """``size`` bytes were lost (a gap). The client's: a response, or the AUTH of the exchange the server answers
        next, may be among them, and every exchange ends without a verdict. The server's (``server``): the verdicts
        awaited, and the open exchange's once the client moved on from it, may be among them: those exchanges end
        without one. The open exchange the client is still in goes on: its prompts may be among the lost bytes, so
        the client's lines are its responses as when the server is not heard (up to the mechanism's count), and a
        credential sent after the gap is read. What the server sends next may still answer what was sent before
        (``outstanding``: commands awaiting replies; the open exchange): until a prompt shows the server is in the
        open exchange, no reply is a verdict (:attr:`doubt`), and one that may be ends the open exchange only once the
        client has sent all of its responses (the last line of a reply cut by the gap leaves the login read)."""
        reason = f"{size} bytes lost in the exchange (a gap)"
        if not server:
            return self.give_up(reason, every=True)
        exchange = self.exchange
        lasting = bool(self.awaiting or self.uncounted) or (exchange is not None and exchange.client_moved_on)
        ended = self.give_up(reason)
        if self.exchange is not None:
            self.exchange.prompts_lost = True
        if lasting or outstanding or self.exchange is not None:
            self.doubt, self.doubt_lasting = True, self.doubt_lasting or lasting
        return ended

    def _doubted(self, exchange: Exchange, reason: str) -> list[SaslEvent]:
        """Under :attr:`doubt`, the open exchange ends without a verdict; its verdict may still come (or one of its
        prompts, were the client's next line read as its response), so no later prompt ends the doubt."""
        self._end(exchange)
        self.doubt_lasting = True
        return [SaslAbandoned(exchange.mechanism, reason, attempt=exchange.number)]

    def owes_response(self) -> int | None:
        """The number of the exchange the server's replies are for, when the server prompted it for a response the
        client had not sent before it moved on (to a command, or another AUTH, pipelined after it); None otherwise.
        The server reads the line the client sent next as that response (:meth:`pipelined_response`)."""
        exchange = self.awaiting[0] if self.awaiting else self.exchange
        if self.uncounted or exchange is None or exchange.owed == 0 or not exchange.client_moved_on:
            return None
        return exchange.number

    def pipelined_response(self, line: str, began: bool) -> list[SaslEvent]:
        """The line the client pipelined after the AUTH of the exchange :meth:`owes_response` names: the server reads
        it as the response it prompted for. When that line began an exchange of its own (``began``: another AUTH),
        that exchange never began for the server, and ends without a verdict."""
        if self.owes_response() is None:
            return []
        exchange = self.awaiting[0] if self.awaiting else self.exchange
        assert exchange is not None
        events: list[SaslEvent] = []
        later = self.awaiting[1] if len(self.awaiting) > 1 else self.exchange
        if began and later is not None and later is not exchange:
            if len(self.awaiting) > 1:
                del self.awaiting[1]
            else:
                self.exchange = None
            why = f"the server read its AUTH as the response to exchange {exchange.number}'s prompt"
            events.append(SaslAbandoned(later.mechanism, why, attempt=later.number))
        if exchange.client_steps >= MAX_STEPS:
            self._end(exchange)
            return [*events, _too_many_steps(exchange)]
        return [*events, *_stamped(exchange, exchange.client_text(line))]

    def _ntlm_supported(self, exchange: Exchange) -> bool:
        """A POP3 NTLM exchange's first "+OK", before the server's CHALLENGE: no verdict (none comes before the
        client's AUTHENTICATE answers a CHALLENGE), whether or not a NEGOTIATE was pipelined behind the AUTH."""
        return (
            self.protocol is Protocol.POP3
            and exchange.mechanism == "NTLM"
            and not exchange.saw_authenticate
            and exchange.server_steps == 0
        )

    def _uncounted_reply(self, line: str) -> list[SaslEvent]:
        """A reply for an exchange no longer kept: its verdict, told (``attempt`` 0) without its mechanism."""
        reply = classify_server_line(self.protocol, line)
        if reply.kind not in VERDICTS:
            return []
        self.uncounted -= 1
        return [_outcome("", reply)]

    def _end(self, exchange: Exchange) -> None:
        if self.awaiting and self.awaiting[0] is exchange:
            self.awaiting.popleft()
        else:
            self.exchange = None

    def verdict_due(self) -> bool:
        """Has the client sent all of the exchange the server's next reply is for (its verdict is what comes)?"""
        exchange = self.exchange
        return bool(self.uncounted or self.awaiting) or (exchange is not None and exchange.client_moved_on)

    def forget(self) -> None:
        """Drop every exchange, untold (the session shed its partial state, and says so)."""
        self.exchange, self.uncounted = None, 0
        self.awaiting.clear()

    def give_up(self, reason: str, every: bool = False) -> list[SaslEvent]:
        """The verdicts due were lost: each exchange the client ended, or moved on from (``every``: each exchange),
        ends without one."""
        ended = [*self.awaiting]
        self.awaiting.clear()
        self.uncounted = 0
        exchange = self.exchange
        if exchange is not None and (every or exchange.client_moved_on):
            self.exchange = None
            ended.append(exchange)
        return [SaslAbandoned(old.mechanism, reason, attempt=old.number) for old in ended]
