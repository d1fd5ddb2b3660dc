"""SMTP session dissector (RFC 5321, ESMTP extensions, RFC 2920 pipelining, RFC 3030 BDAT, RFC 4954 AUTH)."""

from __future__ import annotations

from dissectors import events as ev
from dissectors import sasl, session, smtp_end
from dissectors.linebuffer import MAX_HELD, MAX_LINE, LaxEnd, Line, Raw
from dissectors.mechanisms import mechanism_names
from dissectors.prompted import read_as_response
from dissectors.session import MailSession
from dissectors.smtp_parts import BDAT_LINE, MAX_REPLY_BYTES, MAX_REPLY_LINES, REPLY_LINE, Command, Reply, is_last
from dissectors.smtp_syntax import (
    AUTH_KEYWORDS,
    address,
    advertised,
    is_auth,
    may_answer_auth,
    reply_fits,
    xclient_attributes,
)

_LAX_LINE = 'a "." line after a bare LF or CR (or ended by one, or with extra CRs) in a message'
# Commands after whose 220 the stream is TLS: RFC 3207 STARTTLS, and X-ANONYMOUSTLS, with which Exchange servers
# start TLS between themselves (listed in their EHLO replies to anyone).
TLS_COMMANDS = frozenset({"STARTTLS", "X-ANONYMOUSTLS"})


class SmtpSession(MailSession):
    protocol = sasl.Protocol.SMTP
    verdicts_in_order = True

    def __init__(self, partial: bool = False, max_line: int = MAX_LINE) -> None:
        super().__init__(partial, max_line)
        self._reply: Reply | None = None
        self._in_data = False  # inside a message: its client buffer skips it to the "." line (expect_dot_body)
        # DATA was sent and its reply is not in yet: the client's next bytes wait, unread, for it (a message only
        # follows a 354, RFC 5321 section 4.1.1.4; after a refusal the same bytes are commands to the server).
        self._data_awaited = False
        self._lax: smtp_end.PendingEnd | None = None  # a lax end line waiting for the server to say what it was
        self._reading_on = False  # reading bytes held past MAX_HELD with no reply: no new wait (_after_receive)
        # Client bytes were lost inside the message being read: its text goes on after them, up to its end line, or
        # up to the server's next reply, which shows the end line was among the lost bytes.
        self._message_after_gap = False
        self._owed = 0  # replies still to come to commands forgotten past MAX_PENDING (_push_pending)
        self._chunking = False  # a BDAT of the message answered (till RSET or its end): later ones are no DATA stage

    # -- client -------------------------------------------------------------------------------------------------

    def _client_line(self, text: str) -> None:
        if self._in_data:
            if text == ".":
                self._in_data = self._message_after_gap = False
                self._push_pending(self._command("END-OF-DATA", text))
            return
        if self.auth.exchange is not None and self._sasl_client(text):
            return
        verb, _, argument = text.strip().partition(" ")
        verb, argument = verb.upper(), argument.strip()
        if verb in AUTH_KEYWORDS:
            verb = "AUTH"  # X-EXPS runs AUTH's exchange, answered by the same replies
        command = self._command(verb, text, argument)
        if verb in ("EHLO", "HELO", "LHLO"):
            self._emit(ev.Hello(ev.Side.CLIENT, self._evidence(), verb, argument))
        elif verb == "AUTH":
            self._sasl(ev.Side.CLIENT, self.auth.client_line(text))
        elif verb == "DATA":
            self._data_awaited = True
            self._wait()
        elif verb == "BDAT":
            match = BDAT_LINE.match(text)
            if match:
                self.buffers[ev.Side.CLIENT].expect_raw(int(match.group(1)), keep=False)
            else:
                self._anomaly(ev.Side.CLIENT, "bad_bdat", "BDAT without a valid chunk size")
        elif verb == "QUIT":
            self._emit(ev.Quit(ev.Side.CLIENT, self._evidence()))
        self._push_pending(command)

    def _raw(self, side: ev.Side, item: Raw) -> None:
        pass  # a BDAT chunk: message content, not read

    def _auth_abandoned(self) -> None:
        self._forget_last("AUTH")  # its verdict was lost: no later reply answers it

    def _push_pending(self, item: Command) -> None:
        """Past the caps the oldest commands are forgotten, but the server still answers them first, in turn: their
        replies are owed, and answer no command kept (after 129 NOOPs, a NOOP's 250 was read as the RCPT's). With no
        AUTH kept to place the exchanges after them, their verdicts' places are unknown: each ends without one."""
        full = len(self.pending) >= session.MAX_PENDING or self._pending_bytes + item.held > session.MAX_PENDING_BYTES
        kept, before = len(self.pending), list(self.pending) if full and self.auth.active else []
        super()._push_pending(item)
        forgotten = kept + 1 - len(self.pending)
        self._owed += forgotten
        if forgotten and self.auth.active and not any(command.verb == "AUTH" for command in self.pending):
            self._owed += max(0, self.auth.unanswered() - sum(command.verb == "AUTH" for command in before[:forgotten]))
            why = "commands pipelined past those kept: which reply is its verdict is unknown"
            self._sasl(ev.Side.SERVER, self.auth.give_up(why, every=True))

    def _clear_pending(self) -> None:
        super()._clear_pending()
        self._owed = 0

    def _anomaly(self, side: ev.Side, code: str, detail: str) -> None:
        super()._anomaly(side, code, detail)
        if code == "line_too_long" and side is ev.Side.CLIENT and not self._in_data and self.auth.exchange is None:
            # A command line too long to read is still one the server answers (Postfix reads its start), in turn.
            self._push_pending(self._command("", ""))

    def _command(self, verb: str, line: str, argument: str = "") -> Command:
        return Command(verb, line, self._line.frame, self._line.timestamp, argument)

    # -- server -------------------------------------------------------------------------------------------------

    def _server_line(self, text: str) -> None:
        if self._in_data and self._message_after_gap:
            self._message_lost_end()
        if self._in_data and self._lax is None:  # the server speaks while the client's "." line waits after CRs
            cut = self.buffers[ev.Side.CLIENT].cut_at_cr()
            if cut is not None:
                line, self._line = self._line, Line(".", cut.frame, cut.timestamp, cut.first_frame)
                self._lax_end(cut)
                self._line = line
        if self._lax is not None and self._held_reply(text):
            return
        match = REPLY_LINE.match(text)
        if not match:
            self._anomaly(ev.Side.SERVER, "bad_reply_line", "server line is not an SMTP reply")
            return
        digits, separator, rest = match.groups()
        code = int(digits)
        reply = self._reply
        if reply is not None and reply.code != code:
            detail = f"a {reply.code} reply never ended before a {code} reply; not taken as an answer"
            self._anomaly(ev.Side.SERVER, "reply_unterminated", detail)
            reply = None
        if reply is None:
            reply = self._reply = Reply(code)
        if not reply.lines.add(rest):
            if reply.lines.refused == 1:
                limit = f"{MAX_REPLY_LINES} lines or {MAX_REPLY_BYTES} bytes"
                self._anomaly(ev.Side.SERVER, "reply_too_long", f"a reply of more than {limit}: the rest not kept")
        elif len(reply.lines.items) > 1 and is_auth(rest):
            reply.cited = self._cite(reply.cited)
        if separator == "-":
            return
        reply.last = rest
        self._reply = None
        self._handle_reply(reply, text)

    def _handle_reply(self, reply: Reply, final_line: str) -> None:
        if not self.greeted and not self.partial and self._is_greeting(reply):
            self.greeted = True
            first = reply.texts()[0] if reply.lines else reply.last
            self._emit(ev.Greeting(ev.Side.SERVER, self._evidence(), first.strip(), reply.code == 220))
            return
        self.greeted = True  # the server's first reply was not a greeting: none comes later
        if self._owed and reply.code != 334:  # a forgotten command's (_push_pending); a prompt is no command's reply
            self._owed -= 1
            return
        if self.auth.active and not self._answers_before_auth() and not self._verdict_lost(reply.code):
            unanswered = self.auth.unanswered()
            self._sasl(ev.Side.SERVER, self.auth.server_line(final_line))
            self._pop_auth(unanswered - self.auth.unanswered())  # the AUTH a verdict answered
            self._prompt_answered()
            return
        if not self.pending:
            if reply.code != 421 and not self._stray_challenge(final_line):  # 421 may come unasked at shutdown
                self._anomaly(ev.Side.SERVER, "unsolicited_reply", f"reply {reply.code} to no command")
            return
        if not reply_fits(self.pending[0].verb, reply.code):  # the oldest command's reply is missing, or none fits
            if not any(reply_fits(command.verb, reply.code) for command in self.pending):
                if not self._stray_challenge(final_line):
                    detail = f"reply {reply.code} answers no waiting command"
                    self._anomaly(ev.Side.SERVER, "unsolicited_reply", detail)
                return
            while not reply_fits(self.pending[0].verb, reply.code):
                self._unanswered_command(self._pop_pending(), reply.code)
        self._answer(self._pop_pending(), reply)

    def _prompt_answered(self) -> None:
        """The server prompted (334) the open exchange for a response the client had not sent before it pipelined a
        command after the AUTH: the server reads that command as the response (RFC 4954 section 4), so it is one, and
        awaits no reply of its own (a DATA or BDAT, whose bytes were dealt with as such, is left as it is)."""
        pending = self.pending
        if self.auth.awaiting or self.auth.owes_response() is None or len(pending) < 2 or pending[0].verb != "AUTH":
            return
        if pending[1].verb in ("AUTH", "DATA", "BDAT"):
            return
        read_as_response(self, False)

    def _answers_before_auth(self) -> bool:
        """A command sent before AUTH still awaits its reply (pipelined): the reply is that command's."""
        return bool(self.pending) and self.pending[0].verb != "AUTH" and any(c.verb == "AUTH" for c in self.pending)

    def _verdict_lost(self, code: int) -> bool:
        """The client sent commands after its last response (pipelined), or another AUTH: the server's next reply is
        the verdict, in turn, unless no AUTH gets that reply (the 250 to a MAIL): then the verdicts due were lost
        (True), their exchanges end without one and the reply answers the commands."""
        if not self.auth.verdict_due() or may_answer_auth(code):
            return False
        unanswered = self.auth.unanswered()
        self._sasl(ev.Side.SERVER, self.auth.give_up(f"a {code} reply, which answers no AUTH, came in its place"))
        self._pop_auth(unanswered - self.auth.unanswered())
        return True

    def _pop_auth(self, count: int) -> None:
        """Forget the first ``count`` commands awaiting replies if AUTH: their exchanges ended."""
        for _ in range(count):
            if self.pending and self.pending[0].verb == "AUTH":
                self._pop_pending()

    def _bdat_answered(self, command: Command, code: int, text: str) -> None:
        """A BDAT chunk's reply. A transaction's first chunk is its DATA stage (RFC 3030; Postfix's DATA restrictions
        apply there): its 2xx is DATA's 354. A refused chunk, or the LAST one, ends the message with its verdict."""
        evidence, taken, first = self._command_evidence(command), 200 <= code < 300, not self._chunking
        self._chunking = code < 400 and not is_last(command.argument)  # later chunks of the message: no DATA stage
        if first:
            self._emit(ev.DataStart(ev.Side.CLIENT, evidence, taken, code, text))
        if not self._chunking:
            self._emit(ev.MessageEnd(ev.Side.CLIENT, evidence, taken, code, text))

    def _unanswered_command(self, command: Command, code: int) -> None:
        """A command whose reply never came, passed over for a later one: its transaction facts without a verdict."""
        evidence = self._command_evidence(command)
        if command.verb == "MAIL":
            self._emit(ev.MailFrom(ev.Side.CLIENT, evidence, address(command.argument)))
        elif command.verb == "RCPT":
            self._emit(ev.RcptTo(ev.Side.CLIENT, evidence, address(command.argument)))
        detail = f"no reply to {command.verb}: the {code} reply that came answers a later command"
        self._emit(ev.Anomaly(ev.Side.SERVER, self._evidence(), "reply_missing", detail))

    def _is_greeting(self, reply: Reply) -> bool:
        """The first 220/554/421 is the greeting, even when an early-talking client already sent a command
        (spam bots do, and a client that sends STARTTLS before the greeting must not have it read as the answer).
        Only when the server's first bytes were lost (a gap) may it answer a pending STARTTLS instead."""
        if reply.code not in (220, 421, 554):
            return False
        return not (self._greeting_lost and self.pending and self.pending[0].verb in TLS_COMMANDS)

    def _answer(self, command: Command, reply: Reply) -> None:
        code = reply.code
        positive = 200 <= code < 400
        verb, said = command.verb, f"{code} {reply.last.strip()}".strip()
        if verb in ("EHLO", "LHLO") and code == 250:
            lines = reply.texts()
            keywords = [line.strip() for line in lines[1:] if line.strip()]
            mechanisms: list[str] = []
            for keyword in keywords:
                if is_auth(keyword):  # "AUTH PLAIN LOGIN", "AUTH=LOGIN": the words after the keyword's name
                    name, _, value = keyword.replace("=", " ", 1).partition(" ")
                    mechanisms.extend(value.split())
            starttls = any(k.upper() == "STARTTLS" for k in keywords)
            name = lines[0].split()[0] if lines and lines[0].split() else None
            self._emit(
                ev.Capabilities(
                    ev.Side.SERVER,
                    self._span_evidence(advertised(code, lines) or self._line.text, reply.cited),
                    "ehlo",
                    keywords,
                    mechanism_names(mechanisms),
                    starttls,
                    server_name=name,
                )
            )
        elif verb in TLS_COMMANDS:
            self._start_tls(verb, code == 220)
        elif verb == "MAIL":
            self._emit(
                ev.MailFrom(ev.Side.CLIENT, self._command_evidence(command), address(command.argument), code, positive)
            )
        elif verb == "RCPT":
            self._emit(
                ev.RcptTo(
                    ev.Side.CLIENT,
                    self._command_evidence(command),
                    address(command.argument),
                    code,
                    said,
                    positive,
                )
            )
        elif verb == "DATA":
            self._emit(ev.DataStart(ev.Side.CLIENT, self._command_evidence(command), code == 354, code, said))
            self._data_verdict(code == 354)
        elif verb == "BDAT":
            self._bdat_answered(command, code, said)
        elif verb == "END-OF-DATA":
            self._emit(ev.MessageEnd(ev.Side.CLIENT, self._command_evidence(command), 200 <= code < 300, code, said))
        elif verb in ("RSET", "HELO") and 200 <= code < 300:
            # Told in turn (RFC 2920): a RSET pipelined after a message's end (RFC 2920 3.1) comes before the verdict
            # on that message, still of the transaction. A HELO taken clears it too (RFC 5321 4.1.4; EHLO: Capabilities)
            self._chunking = False
            self._emit(ev.Reset(ev.Side.CLIENT, self._command_evidence(command)))
        elif verb == "XCLIENT":
            attributes = xclient_attributes(command.argument)
            self._emit(ev.ClientOverride(ev.Side.CLIENT, self._command_evidence(command), attributes, code == 220))
        elif verb == "AUTH":
            # The server refused AUTH outright (e.g. 503, 504) without the tracker seeing it as one of its replies.
            self._sasl(ev.Side.SERVER, self.auth.server_line(f"{code} {reply.last}"))

    def _data_verdict(self, message: bool, why: str | None = None) -> None:
        """Read what the client sent after DATA: the message after a 354, commands after anything else."""
        if not self._data_awaited:
            return
        self._data_awaited = self._message_after_gap = False
        self._in_data = message
        if why is not None:
            self._anomaly(ev.Side.CLIENT, "data_unanswered", why)
        buffer = self.buffers[ev.Side.CLIENT]
        held, frame, timestamp = buffer.release()
        if message:
            buffer.expect_dot_body(exact_end=True)
        self._consume(ev.Side.CLIENT, held, frame, timestamp)

    def _after_receive(self, side: ev.Side) -> None:
        super()._after_receive(side)
        if self.buffers[ev.Side.CLIENT].held > MAX_HELD and (self._data_awaited or self._lax is not None):
            self._reading_on = True
            try:
                self._wait()
            finally:
                self._reading_on = False

    def _wait(self) -> None:
        """Hold the client's next bytes for the server's reply (to DATA, or to a lax end line). Past MAX_HELD held
        with no reply (_after_receive) the wait is given up, and so is every one the bytes then read would start:
        all were sent before any reply. (Each held the rest again: DATA lines or messages ending at lax end lines,
        unanswered, were held whole, each chunk copying them all once more.)"""
        if not self._reading_on:
            self.buffers[ev.Side.CLIENT].hold()
        elif self._data_awaited:
            self._unanswered(f"more than {MAX_HELD} bytes after DATA and no reply to it")
        else:
            self._settle(self._undecided(overflow=True))

    # -- a lax end line (dissectors.smtp_end) ---------------------------------------------------------------------

    def _lax_end(self, item: LaxEnd) -> None:
        """A message's end line other than CR LF "." CR LF: what the client sends next waits, unread, for the server
        to say whether it ended the message."""
        if not self._in_data:
            return
        self._lax = smtp_end.PendingEnd(self._command("END-OF-DATA", "."), self._line, item)
        self._wait()

    def _held_reply(self, text: str) -> bool:
        """A reply line while a lax end waits: held back until the replies decide, then read with those before it."""
        pending = self._lax
        assert pending is not None
        pending.replies.append(self._line)
        pending.bytes += len(text)
        match = REPLY_LINE.match(text)
        if match and match.group(2) != "-":
            pending.codes.append(int(match.group(1)))
            held = self.buffers[ev.Side.CLIENT].held_data
            decision = smtp_end.decide(held, pending.end, pending.codes, reply_fits)
            if decision is not None:
                self._settle(decision)
                return True
        if len(pending.replies) > smtp_end.MAX_REPLY_LINES_HELD or pending.bytes > MAX_HELD:
            self._settle(self._undecided())
        return True

    def _undecided(self, overflow: bool = False) -> tuple[bool, str]:
        assert self._lax is not None
        held = self.buffers[ev.Side.CLIENT].held_data
        return smtp_end.undecided(held, self._lax.end, self._server_spoke, overflow)

    def _settle(self, decision: tuple[bool, str]) -> None:
        """Read on as the server did: after the lax end, commands (it was the end) or the rest of the message (in
        which, after a lax end with a bare CR, an end line with bare LFs is decided in turn)."""
        pending, self._lax = self._lax, None
        assert pending is not None
        lax, why = decision
        buffer = self.buffers[ev.Side.CLIENT]
        held, frame, timestamp = buffer.release()
        self._line = pending.line
        if lax:
            self._in_data = False
            if pending.end.certain and pending.codes:  # said when a reply came after it (not when none came at all)
                detail = "the server took it for the end of the message, as servers open to SMTP smuggling do"
                self._anomaly(ev.Side.CLIENT, "lax_end_taken", f"{_LAX_LINE}: {detail} ({why})")
            self._push_pending(pending.command)
        else:
            if pending.end.certain:
                detail = "read as part of the message, as the server read it (SMTP smuggling tried?)"
                self._anomaly(ev.Side.CLIENT, "lax_end_in_message", f"{_LAX_LINE}: {detail} ({why})")
            buffer.expect_dot_body(exact_end=True, lax_is_body=not pending.end.bare_cr, bare_cr_is_body=True)
        self._consume(ev.Side.CLIENT, held, frame, timestamp)
        for line in pending.replies:
            self._line = line
            self._server_line(line.text)

    def _close(self, frame: int | None, timestamp: float | None) -> None:
        while self._lax is not None:  # reading on may come to another lax end line (later in the message, or after)
            self._settle(self._undecided())
        super()._close(frame, timestamp)
        while self._data_awaited or self._lax is not None:  # each read on may come to another DATA or lax end
            if self._lax is not None:
                self._settle(self._undecided())
            else:
                self._unanswered("the connection ended before the reply to DATA")

    def _unanswered(self, why: str) -> None:
        """No reply to DATA in time: without a byte from the server (a capture of one side) the client is all there
        is to go by (a message); otherwise what the server did not accept as a message is read as commands."""
        if self._server_spoke:
            self._data_verdict(False, why + "; read as commands")
        else:
            self._data_verdict(True)

    def _command_evidence(self, command: Command) -> ev.Evidence:
        return ev.Evidence.of(command.line, command.frame, command.timestamp)

    def _after_gap(self, side: ev.Side) -> None:
        self._reply = None
        lax = self._lax is not None
        if lax:
            if side is ev.Side.CLIENT:
                self._lax = None  # the bytes held after it went with the gap, and the commands it answered
            else:
                self._settle(self._undecided())
        if side is ev.Side.CLIENT and self._in_data and not lax and not self._data_awaited:
            # Lost inside the message: what follows is still its text (read as commands, a quoted AUTH line or RCPT
            # in it would count as the client's), up to its end line or the server's next reply.
            self.buffers[ev.Side.CLIENT].resume_body()
            self._message_after_gap = True
        elif side is ev.Side.CLIENT:
            self._in_data = self._data_awaited = self._message_after_gap = False  # the held bytes went with the gap
        elif self._data_awaited:
            self._data_verdict(True)  # the reply to DATA may be among the lost bytes: as before, a message

    def _message_lost_end(self) -> None:
        """The server replied while the message after a gap was still being read: it had seen the message's end
        line, which was among the lost client bytes. What the client sends next is commands again."""
        self._in_data = self._message_after_gap = False
        self.buffers[ev.Side.CLIENT].end_body()
        self._anomaly(ev.Side.CLIENT, "message_end_lost", "the end of the message was among the lost bytes")

    def _state_bytes(self) -> int:
        held = self._lax.bytes if self._lax is not None else 0
        return held + (self._reply.lines.bytes if self._reply is not None else 0)

    def _shed_state(self) -> None:
        self._reply = None  # its final line still comes, and is read as a reply of its own
        self._data_awaited = False  # the held bytes were dropped
        if self._lax is not None:  # the message ended at it or soon after: what follows is commands
            self._lax = None
            self._in_data = False
