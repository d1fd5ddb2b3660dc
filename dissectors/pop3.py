"""POP3 session dissector (RFC 1939, RFC 2449 CAPA and pipelining, RFC 2595 STLS, RFC 5034 AUTH, [MS-POP3])."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial

from dissectors import events as ev
from dissectors import sasl
from dissectors.held import HeldParts, size_of, sizes_of
from dissectors.linebuffer import MAX_LINE
from dissectors.mechanisms import mechanism_names
from dissectors.prompted import read_as_response
from dissectors.refusals import pop3_in_use, pop3_judged, pop3_no_user
from dissectors.session import COMMAND_OVERHEAD, MAX_VERB, MailSession, Span

# Commands whose +OK answer is followed by lines up to a lone ".".
_MULTILINE_ALWAYS = {"CAPA", "RETR", "TOP"}
_MULTILINE_WITHOUT_ARGUMENT = {"LIST", "UIDL", "AUTH"}
# The multi-line answers whose lines are read; the others (RETR, TOP, LIST, UIDL) are skipped to their end.
_LISTS_READ = {"CAPA", "AUTH"}
# The timestamp of a greeting that offers APOP (RFC 1939 section 7: a msg-id, "<1896.697170952@dbc.mtview.ca.us>"):
# without one the server has nothing to check an APOP digest against.
_TIMESTAMP = re.compile(r"<[^<>\s]*@[^<>\s]*>")
# Lines of a multi-line answer kept for CAPA and the AUTH mechanism list; bodies (RETR) are skipped, not kept.
MAX_LIST_LINES = 256
# Nor more bytes than this (256 lines of 64 KiB held 16 MiB): a real CAPA list is under 1 KiB; two full-length
# lines fit.
MAX_LIST_BYTES = 128 * 1024


@dataclass
class _UserReply:
    """The server's answer to a USER: whether it took it (None until seen, or when whether a USER came is unknown).
    A PASS is read only "immediately after a successful USER command" (RFC 1939 section 7): after one refused, or
    with none, its -ERR checked no password (Cyrus: "-ERR [AUTH] Must give USER command")."""

    accepted: bool | None = None


@dataclass
class _Command:
    """A command waiting for its reply, with the lines of a multi-line answer."""

    verb: str
    argument: str  # only whether there is one matters once the command is sent
    line: str
    frame: int | None
    timestamp: float | None
    lines: HeldParts = field(default_factory=partial(HeldParts, MAX_LIST_LINES, MAX_LIST_BYTES))
    held: int = 0
    # Where the answer's lines were: all of them, and those offering a way to log in (SASL, USER) (its evidence).
    listed: Span | None = None
    offered: Span | None = None
    # A PASS's or APOP's number among the session's logins (AuthTracker.next_attempt); an AUTH's, the exchange it began.
    attempt: int | None = None
    # A USER's answer, which the PASS after it shares (None for a PASS no USER came before in all the session).
    user: _UserReply | None = None
    # A PASS with no USER of its own after another PASS: the USER that PASS had. Dovecot and Cyrus forget it once a
    # PASS was refused, but hMailServer keeps it and checks this PASS too; only the refusal's words tell which.
    spent: _UserReply | None = None

    def __post_init__(self) -> None:
        self.verb, self.argument = self.verb[:MAX_VERB], self.argument[: ev.MAX_EVIDENCE_TEXT]
        self.line = self.line[: ev.MAX_EVIDENCE_TEXT]
        self.held = COMMAND_OVERHEAD + sizes_of(self.verb, self.argument, self.line)


class Pop3Session(MailSession):
    protocol = sasl.Protocol.POP3
    # RFC 2449 section 6.6: the server answers the commands of a pipelined group in turn, AUTH too. A verdict is the
    # AUTH's when that AUTH is the oldest command still awaiting its reply (_exchange_answered).
    verdicts_in_order = True

    def __init__(self, partial: bool = False, max_line: int = MAX_LINE) -> None:
        super().__init__(partial, max_line)
        self._multiline: _Command | None = None
        self._user: str | None = None
        # The answer to the latest USER no PASS followed yet; unknown from the start of a session picked up
        # mid-stream (its USER may have come before the capture), None while there is no such USER.
        self._user_reply: _UserReply | None = _UserReply() if partial else None
        # The USER the latest PASS had (Command.spent), while no other came after it.
        self._spent: _UserReply | None = None
        # Whether the greeting gave an APOP timestamp; None while no greeting was seen (or it proved no greeting).
        self._timestamp: bool | None = None
        # The server's first line, sent after a command whose answer has lines of its own: a greeting (the server's
        # next line is a status line) or, from a server that did not greet, that command's answer (it is not).
        self._first_line: ev.Greeting | None = None
        # Commands were forgotten past MAX_PENDING (or a line too long to read was sent) while others await their
        # replies: which reply is a login's verdict is unknown until none awaits one (_push_pending).
        self._out_of_turn = False

    # -- client -------------------------------------------------------------------------------------------------

    def _client_line(self, text: str) -> None:
        auth = self.auth
        before, started = auth.unanswered(), auth.started
        if auth.exchange is not None and self._sasl_client(text):
            self._exchanges_followed(text, before, started, False)
            return
        verb, _, argument = text.strip().partition(" ")
        verb = verb.upper()
        argument = argument.strip()
        command = _Command(verb, argument, text, self._line.frame, self._line.timestamp)
        if verb == "USER":
            self._user = argument
            self._user_reply = command.user = _UserReply()
        elif verb == "PASS":
            # RFC 1939: PASS only "immediately after a successful USER command": a USER serves one PASS (Dovecot and
            # Cyrus forget the user a refused PASS named: "-ERR No username given." to the next PASS alone), unless
            # the server keeps it (hMailServer), as only its refusal's words tell (_after_user).
            command.user, self._user_reply = self._user_reply, None
            command.spent = self._spent if command.user is None else None
            self._spent = command.user or command.spent
            command.attempt = attempt = self.auth.next_attempt()
            user = self._user
            self._emit(ev.Credentials(ev.Side.CLIENT, self._evidence(), "USER-PASS", user, argument, attempt=attempt))
        elif verb == "APOP":
            user, _, digest = argument.rpartition(" ")
            command.attempt = self.auth.next_attempt()
            self._emit(
                ev.Credentials(
                    ev.Side.CLIENT, self._evidence(), "APOP", user or None, digest, secret_kind="apop-digest",
                    attempt=command.attempt,
                )
            )  # fmt: skip
        elif verb == "AUTH" and argument:
            if auth.exchange is None:  # else the tracker did not take it (no mechanism's name): no exchange begins
                self._sasl(ev.Side.CLIENT, auth.client_line(text))
            self._exchanges_followed(text, before, started, True)
            return  # the tracker follows it to the verdict
        elif verb == "QUIT":
            self._emit(ev.Quit(ev.Side.CLIENT, self._evidence()))
        self._push_pending(command)

    def _exchanges_followed(self, text: str, before: int, started: int, command: bool) -> None:
        """Keep the commands awaiting replies in step with the exchanges after a client line the tracker read (one
        that ``before`` exchanges awaited replies, ``started`` begun): an AUTH (``command``, or a line that began an
        exchange) awaits its reply in turn with the other commands; an exchange the line ended (too many steps)
        awaits none."""
        auth = self.auth
        began = auth.started > started
        if began or command:
            argument = text.strip().partition(" ")[2].strip()
            attempt = auth.started if began else None
            line = self._line
            self._push_pending(_Command("AUTH", argument, text, line.frame, line.timestamp, attempt=attempt))
        elif auth.unanswered() < before:
            for index in range(len(self.pending) - 1, -1, -1):  # the open exchange's AUTH: the latest
                if _begins_exchange(self.pending[index]):
                    self._pending_bytes -= self.pending[index].held
                    del self.pending[index]
                    return

    def _push_pending(self, item: _Command) -> None:
        """Past the caps the oldest commands are forgotten, but the server still answers them first, in turn, and
        a forgotten command's answer may have lines: the logins awaiting their verdicts then get none (after 129
        pipelined USERs, a PASS refused was taken for one that worked)."""
        kept = len(self.pending)
        super()._push_pending(item)
        self._out_of_turn |= len(self.pending) <= kept

    def _anomaly(self, side: ev.Side, code: str, detail: str) -> None:
        super()._anomaly(side, code, detail)
        if code == "line_too_long" and side is ev.Side.CLIENT and self.auth.exchange is None:
            # A command line too long to read is still one the server answers (-ERR), in turn.
            self._push_pending(_Command("", "", "", self._line.frame, self._line.timestamp))

    def _clear_pending(self) -> None:
        super()._clear_pending()
        self._out_of_turn = False

    # -- server -------------------------------------------------------------------------------------------------

    def _server_line(self, text: str) -> None:
        if self._multiline is not None:
            self._multiline_line(text)
            return
        if self._exchange_answered(text):
            return
        status = text[:4].upper()
        positive = status.startswith("+OK")
        if self._first_line is not None and self._first_line_answered(positive or status.startswith("-ERR"), text):
            return
        if not positive and not status.startswith("-ERR"):
            if not self._stray_challenge(text):
                self._anomaly(ev.Side.SERVER, "bad_status_line", "server line is neither +OK nor -ERR")
            return
        if not self.greeted and not self.partial and not (self.pending and self._greeting_lost):
            # The server's first line is its greeting, even when the client talked first (a STLS sent before the
            # greeting is not answered by it); only when bytes were lost before it may this answer a command.
            self.greeted = True
            greeting = ev.Greeting(ev.Side.SERVER, self._evidence(), text[3 if positive else 4 :].strip(), positive)
            self._timestamp = _TIMESTAMP.search(text) is not None
            if positive and self.pending and _has_lines(self.pending[0]):
                self._first_line = greeting  # which it is, the next line says
            else:
                self._emit(greeting)
            return
        self.greeted = True
        if not self.pending:
            self._anomaly(ev.Side.SERVER, "unsolicited_reply", "status line answering no command")
            return
        command = self._pop_pending()
        self._answer(command, positive, text)
        self._out_of_turn = self._out_of_turn and bool(self.pending)

    def _exchange_answered(self, text: str) -> bool:
        """Give the server's line to a SASL exchange if it is for one (True). The server answers in turn: it is when
        the oldest command awaiting its reply is an AUTH that began an exchange, or when none of those awaiting is
        (the exchange's AUTH, older than them all, was forgotten past MAX_PENDING); not before the greeting."""
        auth, pending = self.auth, self.pending
        if not auth.active or not (self.greeted or self.partial or self._greeting_lost):
            return False
        if pending and not _begins_exchange(pending[0]) and any(map(_begins_exchange, pending)):
            return False  # a command sent before the AUTH: this is its reply
        unanswered = auth.unanswered()
        self._sasl(ev.Side.SERVER, auth.server_line(text))
        for _ in range(unanswered - auth.unanswered()):  # a verdict: the AUTH it answers awaits no more
            if pending and _begins_exchange(pending[0]):
                self._pop_pending()
        self._prompt_answered()
        return True

    def _prompt_answered(self) -> None:
        """The server prompted an exchange for a response the client had not sent before it pipelined another
        command after the AUTH (RFC 5034 section 4: the client's next line answers a continuation): the server reads
        that command as the response, so it is one, with an anomaly, and awaits no reply of its own."""
        number, pending = self.auth.owes_response(), self.pending
        if number is None or len(pending) < 2 or not _begins_exchange(pending[0]) or pending[0].attempt != number:
            return
        read = pending[1]
        read_as_response(self, _begins_exchange(read))
        if read.verb == "USER" and read.user is not None:
            read.user.accepted = False  # the server took no USER: a PASS after it has none

    def _first_line_answered(self, status: bool, text: str) -> bool:
        """The line after a first line held (``_first_line``): a status line makes that one the greeting; another
        line (a capability, a listing's line, its lone ".") shows it was the answer of the command sent before it,
        from a server that did not greet, and is the answer's first line (True: it is read)."""
        first, self._first_line = self._first_line, None
        assert first is not None
        if status or not self.pending:
            self._emit(first)
            return False
        command = self._pop_pending()
        self._timestamp = None  # no greeting: whether APOP has a timestamp is unknown
        self._anomaly(ev.Side.SERVER, "no_greeting", f"the server's first line answered {command.verb}: no greeting")
        self._answer(command, True, first.evidence.line)
        self._multiline_line(text)
        return True

    def _answer(self, command: _Command, positive: bool, text: str) -> None:
        verb = command.verb
        if positive and _has_lines(command):
            self._multiline = command
            if verb not in _LISTS_READ:
                self.buffers[ev.Side.SERVER].expect_dot_body()  # a message or a listing: skipped to its "."
            return
        if verb == "STLS":
            self._start_tls("STLS", positive)
        elif verb == "USER" and command.user is not None:
            command.user.accepted = positive
        elif verb in ("PASS", "APOP"):
            mechanism = "USER-PASS" if verb == "PASS" else "APOP"
            # RFC 2449 8.1.2: -ERR [IN-USE] says the password was right and the maildrop is locked by another session.
            valid = positive or pop3_in_use(text[4:])
            # -ERR [SYS/TEMP]: the server could not check the password; once logged in it reads none (RFC 1939: PASS
            # and APOP come before a login), nor a PASS without a USER it took (_UserReply), nor an APOP without a
            # greeting's timestamp (Dovecot: "-ERR APOP not enabled."). Out of turn, whose answer this is is unknown.
            checked = self._timestamp is not False if verb == "APOP" else _after_user(command, text[4:])
            judged = (valid or (pop3_judged(text[4:]) and not self.authenticated and checked)) and not self._out_of_turn
            valid = valid and not self._out_of_turn
            self.authenticated = self.authenticated or positive
            self._emit(ev.AuthResult(ev.Side.SERVER, self._evidence(), mechanism, valid, text.strip(), command.attempt,
                                     judged))  # fmt: skip

    def _multiline_line(self, text: str) -> None:
        command = self._multiline
        assert command is not None
        if text != ".":
            kept = command.verb not in _LISTS_READ or command.lines.add(text[1:] if text[:2] == ".." else text)
            if kept and command.verb in _LISTS_READ:
                command.listed = self._cite(command.listed)
                if _offers(text):
                    command.offered = self._cite(command.offered)
            if not kept and command.lines.refused == 1:
                limit = f"{MAX_LIST_LINES} lines or {MAX_LIST_BYTES} bytes"
                self._anomaly(ev.Side.SERVER, "list_too_long", f"a {command.verb} list of more than {limit}")
            return
        self._multiline = None
        lines = command.lines.texts()
        # The lines that offered a way to log in (SASL mechanisms, USER) when there are any, else the whole list.
        offered = [line for line in lines if _offers(line)]
        cited, span = (offered, command.offered) if command.verb == "CAPA" and offered else (lines, command.listed)
        text = "\n".join(line[: ev.MAX_EVIDENCE_TEXT] for line in cited)[:512]
        evidence = self._span_evidence(text, span) if text else self._evidence(".")
        if command.verb == "CAPA":
            mechanisms: list[str] = []
            for line in lines:
                name, _, value = line.partition(" ")
                if name.upper() == "SASL":
                    mechanisms.extend(value.split())
            items = [line.strip() for line in lines if line.strip()]
            self._emit(
                ev.Capabilities(
                    ev.Side.SERVER,
                    evidence,
                    "capa",
                    items,
                    mechanism_names(mechanisms),
                    any(item.upper() == "STLS" for item in items),
                    cleartext_login=any(item.upper() == "USER" for item in items),
                )
            )
        elif command.verb == "AUTH":
            mechanisms = [line.split()[0] for line in lines if line.split()]
            self._emit(ev.Capabilities(ev.Side.SERVER, evidence, "auth-list", [], mechanism_names(mechanisms), False))

    def _after_gap(self, side: ev.Side) -> None:
        self._multiline = None
        if side is ev.Side.CLIENT:  # a USER may be among the bytes lost
            self._user_reply = _UserReply()
        self._greeting_stands()

    def _close(self, frame: int | None, timestamp: float | None) -> None:
        self._greeting_stands()
        super()._close(frame, timestamp)

    def _greeting_stands(self) -> None:
        """A first line held is the greeting when nothing shows otherwise (a gap, the end, state given up)."""
        first, self._first_line = self._first_line, None
        if first is not None:
            self._emit(first)

    def _state_bytes(self) -> int:
        listed = self._multiline.lines.bytes if self._multiline is not None else 0
        first = self._first_line.banner if self._first_line is not None else None
        return listed + size_of(self._user) + size_of(first)

    def _shed_state(self) -> None:
        self._greeting_stands()
        if self._multiline is not None:  # still inside the answer (its "." ends it), without the lines kept so far
            self._multiline.lines = HeldParts(MAX_LIST_LINES, MAX_LIST_BYTES)
        self._user = None
        self._user_reply = _UserReply()  # the client's line in progress, skipped, may be a USER


def _after_user(command: _Command, refusal: str) -> bool:
    """Whether a PASS came right after a USER the server took, or one the capture may not show (_UserReply); or
    after another PASS that had such a USER, and the server's -ERR (``refusal``) does not say it has no user."""
    if command.user is not None:
        return command.user.accepted is not False
    return command.spent is not None and command.spent.accepted is not False and not pop3_no_user(refusal)


def _begins_exchange(command: _Command) -> bool:
    """Whether the command is an AUTH that began a SASL exchange (its reply is the tracker's to read)."""
    return command.verb == "AUTH" and command.attempt is not None


def _has_lines(command: _Command) -> bool:
    """Whether the command's positive answer goes on with lines up to a lone "."."""
    return command.verb in _MULTILINE_ALWAYS or (command.verb in _MULTILINE_WITHOUT_ARGUMENT and not command.argument)


def _offers(line: str) -> bool:
    """A CAPA line offering a way to log in: ``SASL PLAIN LOGIN``, ``USER``."""
    return bool(line.split()[:1]) and line.split()[0].upper() in ("SASL", "USER")
