"""IMAP session dissector (RFC 3501/9051: tags, literals, CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE with SASL-IR;
RFC 8437 UNAUTHENTICATE, after which a login is a first one again).

A client's synchronising literal ``{n}`` is read as n bytes only once the server has sent its ``+`` continuation
(RFC 9051 section 7.5): a tagged NO or BAD instead (``NO [TOOBIG]``) ends the command, and what the client sends
next is read as commands, as the server reads it. Until the server has said, the client's bytes are held unread.
A non-synchronising literal ``{n+}`` (RFC 7888) is read at once when it is within what LITERAL- allows (4096
bytes), or what a server that announced LITERAL+ takes; a larger one waits for the server's verdict too.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import partial

from dissectors import events as ev
from dissectors import sasl
from dissectors.held import HeldParts, sizes_of
from dissectors.imap_syntax import capability_code, id_parameters, literal_at_end, tokens, without_capability_codes
from dissectors.linebuffer import MAX_HELD, MAX_LINE, Line, Raw
from dissectors.mechanisms import mechanism_names
from dissectors.refusals import imap_judged
from dissectors.session import CLIENT, COMMAND_OVERHEAD, MAX_VERB, SERVER, MailSession

__all__ = ["ImapSession", "capability_code", "literal_at_end", "tokens", "without_capability_codes"]

# A command or response assembled from lines and literals is not grown past this many parts.
MAX_PARTS = 64
# Nor past this many bytes (64 parts of 64 KiB held 4 MiB per side): a LOGIN or AUTHENTICATE with literals is a few
# hundred bytes, an APPEND keeps 8 KiB of its message; four full-length lines fit.
MAX_COMMAND_BYTES = 256 * 1024
# Commands remembered by tag while their tagged answer is awaited.
MAX_TAGS = 128
# And the bytes of their tags (128 tags of 64 KiB held 8 MiB): real tags are a few characters.
MAX_TAG_BYTES = 256 * 1024
# RFC 7888: LITERAL- allows non-synchronising literals of at most 4096 bytes.
MAX_LITERAL_MINUS = 4096
# A non-synchronising literal to a LITERAL+ server is read at once up to this size (larger than the messages mail
# services accept); a larger one waits for the server's verdict like a synchronising one.
MAX_LITERAL_PLUS = 64 * 1024 * 1024


@dataclass
class _Pending:
    """A line being assembled across literals: text parts and literal values in order."""

    parts: HeldParts = field(default_factory=partial(HeldParts, MAX_PARTS, MAX_COMMAND_BYTES))
    frame: int | None = None
    timestamp: float | None = None


@dataclass
class _Command:
    """A tagged command waiting for its tagged reply."""

    tag: str
    name: str
    line: str  # the command's first line, kept up to what evidence holds
    frame: int | None
    timestamp: float | None
    held: int = 0
    attempt: int | None = None  # a LOGIN's number among the session's logins (AuthTracker.next_attempt)

    def __post_init__(self) -> None:
        self.name, self.line = self.name[:MAX_VERB], self.line[: ev.MAX_EVIDENCE_TEXT]
        self.held = COMMAND_OVERHEAD + sizes_of(self.tag, self.name, self.line)


@dataclass
class _Awaited:
    """A client literal waiting for the server's verdict: the command's tag, the literal's size."""

    tag: str
    size: int
    synchronising: bool


class ImapSession(MailSession):
    protocol = sasl.Protocol.IMAP
    # An exchange's verdict is the tagged completion naming it (RFC 9051 section 2.2.2), whatever the client sent after
    # the exchange's last response: an AUTHENTICATE pipelined after another leaves that one awaiting its verdict, and
    # so does any command (sasl.AuthTracker.unclaimed); replies with other tags are the other commands'.
    verdicts_in_order = True

    def __init__(self, partial: bool = False, max_line: int = MAX_LINE) -> None:
        super().__init__(partial, max_line)
        self._assembling: dict[ev.Side, _Pending | None] = {CLIENT: None, SERVER: None}
        self._tags: dict[str, _Command] = {}
        self._again: deque[_Command] = deque()  # commands reusing a tag still awaiting its answer (_remember)
        self._tag_bytes = 0
        self._awaited: _Awaited | None = None
        self._literal_plus = False  # the server announced LITERAL+
        # The latest capability listing named LOGINDISABLED: the server refuses LOGIN unread (RFC 9051 6.2.3).
        self._login_disabled = False

    # -- assembling lines across literals -----------------------------------------------------------------------

    def _client_line(self, text: str) -> None:
        self._assemble(CLIENT, text)

    def _server_line(self, text: str) -> None:
        verdict = self._verdict(text) if self._awaited is not None and self._assembling[SERVER] is None else None
        self._assemble(SERVER, text)
        if verdict is not None:
            self._resolve(verdict)

    def _assemble(self, side: ev.Side, text: str) -> None:
        if (
            side is CLIENT
            and self.auth.exchange is not None
            and self._assembling[side] is None
            and self._sasl_client(text)
        ):
            return
        pending = self._assembling[side]
        if pending is None:
            first_frame = self._line.first_frame if self._line.first_frame is not None else self._line.frame
            pending = _Pending(frame=first_frame, timestamp=self._line.timestamp)
        self._keep(side, pending, text)
        literal = literal_at_end(text)
        if literal and not (side is SERVER and text.startswith("+")):
            self._assembling[side] = pending
            self._literal(side, pending, *literal)
            return
        self._assembling[side] = None
        parts = pending.parts.items
        first = parts[0] if parts and isinstance(parts[0], str) else ""
        # Evidence: the frame that completed the command, and the one where it began.
        self._line = Line(first, self._line.frame, self._line.timestamp, pending.frame)
        if side is CLIENT:
            self._command(parts)
        else:
            self._response(parts)

    def _keep(self, side: ev.Side, pending: _Pending, part: str | bytes) -> None:
        if not pending.parts.add(part) and pending.parts.refused == 1:
            limit = f"{MAX_PARTS} parts or {MAX_COMMAND_BYTES} bytes"
            self._anomaly(side, "command_too_long", f"a command or response of more than {limit}: the rest not kept")

    def _raw(self, side: ev.Side, item: Raw) -> None:
        pending = self._assembling[side]
        if pending is not None:
            self._keep(side, pending, item.data)

    # -- client literals and the server's verdict ---------------------------------------------------------------

    def _literal(self, side: ev.Side, pending: _Pending, size: int, non_synchronising: bool) -> None:
        """Read the literal now (the server's own, or a non-synchronising one within bounds), or hold the client's
        bytes until the server says whether it takes it."""
        allowed = MAX_LITERAL_PLUS if self._literal_plus else MAX_LITERAL_MINUS
        if side is SERVER:
            self.buffers[side].expect_raw(size, keep=False)  # a message the server sends: counted off, not read
            return
        if non_synchronising and size <= allowed:
            self.buffers[side].expect_raw(size)
            return
        if non_synchronising:
            detail = f"non-synchronising literal of {size} bytes (at most {allowed} without waiting)"
            self._anomaly(CLIENT, "literal_too_big", detail + ": read once the server accepts it")
        first = pending.parts.items[0] if pending.parts.items else ""
        tag = first.split(None, 1)[0] if isinstance(first, str) and first.split() else ""
        self._awaited = _Awaited(tag, size, not non_synchronising)
        self.buffers[CLIENT].hold()

    def _verdict(self, text: str) -> bool | None:
        """What a server line says of the awaited literal: taken (``+``), refused (the command's tagged answer,
        or BYE), or nothing yet (None)."""
        awaited = self._awaited
        assert awaited is not None
        if text.startswith("+"):  # a continuation request (RFC 9051 7.5; "+" then text, its space or not)
            return True
        first = text.split(None, 2)
        if first and first[0] == awaited.tag and awaited.tag != "*":
            return False
        return False if len(first) > 1 and first[0] == "*" and first[1].upper() == "BYE" else None

    def _resolve(self, taken: bool, why: str | None = None) -> None:
        """Read the held client bytes: the literal first when the server took it, else as commands."""
        awaited = self._awaited
        assert awaited is not None
        self._awaited = None
        if why is not None:
            self._anomaly(CLIENT, "literal_unanswered", f"literal of {awaited.size} bytes: {why}")
        held, frame, timestamp = self.buffers[CLIENT].release()
        if taken:
            self.buffers[CLIENT].expect_raw(awaited.size)
        else:
            self._assembling[CLIENT] = None  # the command ended with the server's refusal
        self._consume(CLIENT, held, frame, timestamp)

    def _after_receive(self, side: ev.Side) -> None:
        super()._after_receive(side)
        while self._awaited is not None and self.buffers[CLIENT].held > MAX_HELD:  # each pass reads on
            self._unanswered(f"more than {MAX_HELD} bytes from the client and no verdict from the server")

    def _unanswered(self, why: str) -> None:
        """No verdict will come in time: without a byte from the server (a capture of one side) the client is all
        there is to go by; otherwise a literal the server did not take is not believed."""
        assert self._awaited is not None
        one_sided = not self._server_spoke
        self._resolve(one_sided, None if one_sided else why + "; read as commands")

    def _close(self, frame: int | None, timestamp: float | None) -> None:
        super()._close(frame, timestamp)
        while self._awaited is not None:  # each pass reads on: the held bytes may announce another literal
            self._unanswered("the connection ended before the server's verdict")

    # -- client -------------------------------------------------------------------------------------------------

    def _command(self, parts: list[str | bytes]) -> None:
        words = tokens(parts)
        if len(words) < 2:
            if words:
                self._anomaly(CLIENT, "bad_command", "command without a tag or name")
            return
        tag, name = words[0], words[1].upper()
        first_line = parts[0] if isinstance(parts[0], str) else ""
        evidence = self._evidence(first_line)
        if name == "UID" and len(words) > 2:
            name = f"UID {words[2].upper()}"
        if name == "AUTHENTICATE":
            self._sasl(CLIENT, self.auth.client_line(first_line))
            return  # the tracker follows it to the tagged verdict
        attempt = None
        if name == "LOGIN":
            user = words[2] if len(words) > 2 else None
            password = words[3] if len(words) > 3 else None
            attempt = self.auth.next_attempt()
            self._emit(ev.Credentials(CLIENT, evidence, "IMAP-LOGIN", user, password, attempt=attempt))
        elif name == "LOGOUT":
            self._emit(ev.Quit(CLIENT, evidence))
        elif name == "ID":
            self._identity(CLIENT, evidence, first_line, parts)
        self._remember(_Command(tag, name, first_line, self._line.frame, self._line.timestamp, attempt=attempt))

    def _remember(self, command: _Command) -> None:
        """Remember a command by tag until its tagged answer; the oldest go past MAX_TAGS or MAX_TAG_BYTES. A tag
        reused before its answer (RFC 9051 forbids it; a server answers such commands in turn, each under that tag)
        waits behind the first (:meth:`_answered`)."""
        self._tag_bytes += command.held
        if command.tag in self._tags:
            self._again.append(command)
        else:
            self._tags[command.tag] = command
        dropped = 0
        while (held := len(self._tags) + len(self._again)) > MAX_TAGS or (self._tag_bytes > MAX_TAG_BYTES and held > 1):
            if self._again:
                self._tag_bytes -= self._again.popleft().held
            else:
                self._answered(next(iter(self._tags)))
            dropped += 1
        if dropped:
            limit = f"{MAX_TAGS} unanswered commands or {MAX_TAG_BYTES} bytes of tags"
            self._anomaly(CLIENT, "too_many_pending_commands", f"more than {limit}; {dropped} forgotten")

    def _answered(self, tag: str) -> _Command | None:
        """The command a tagged answer answers, let go: the first waiting under ``tag``, whose place a later command
        reusing the tag then takes."""
        command = self._tags.pop(tag, None)
        if command is None:
            return None
        self._tag_bytes -= command.held
        for index, later in enumerate(self._again):
            if later.tag == tag:
                del self._again[index]
                self._tags[tag] = later
                break
        return command

    # -- server -------------------------------------------------------------------------------------------------

    def _response(self, parts: list[str | bytes]) -> None:
        line = parts[0] if parts and isinstance(parts[0], str) else ""
        # A completion with the tag of a command remembered (a LOGIN, a SELECT) is that command's, never a verdict on
        # an exchange, not even on one no longer told apart (sasl.MAX_AWAITING: its tag was let go).
        tag = line.split(None, 1)[:1]
        in_exchange = self.auth.active and not (tag and tag[0] in self._tags)
        if in_exchange:
            unanswered = self.auth.unanswered()
            self._sasl(SERVER, self.auth.server_line(line))
            if self.auth.unanswered() < unanswered:
                return  # the exchange's verdict (or its end past MAX_STEPS)
        words = line.split(None, 2)
        if not words:
            return
        if words[0] == "*":
            self._untagged(words, line, parts)
            return
        if line.startswith("+"):
            if not in_exchange:  # a continuation for a literal, or a CHALLENGE whose AUTHENTICATE was not captured
                self._stray_challenge(line)
            return
        command = self._answered(words[0])
        self.greeted = True
        status = words[1].upper() if command is not None and len(words) > 1 else ""
        if command is not None and command.name == "UNAUTHENTICATE" and status == "OK":
            # RFC 8437: the session is back where it was before its login (what the OK lists is that state's).
            self.authenticated = False
            self._emit(ev.Unauthenticated(SERVER, self._evidence()))
        if command is None or not status or command.name != "LOGIN":
            self._capability_code(line)  # sent before what the reply does (a STARTTLS's OK: before TLS)
        if command is None or not status:
            return
        if command.name == "STARTTLS":
            self._start_tls("STARTTLS", status == "OK")
        elif command.name == "LOGIN":
            success = status == "OK"
            # Not a BAD, a NO [UNAVAILABLE], nor a refusal once logged in (RFC 9051 6.2: LOGIN comes before one) or
            # after LOGINDISABLED was listed.
            checked = not self.authenticated and not self._login_disabled
            judged = success or (imap_judged(status, words[2] if len(words) > 2 else "") and checked)
            self.authenticated = self.authenticated or success
            text, attempt = line.strip(), command.attempt
            self._emit(ev.AuthResult(SERVER, self._evidence(), "IMAP-LOGIN", success, text, attempt, judged))
            self._capability_code(line)  # after the verdict: what a server lists once logged in is post-login

    def _identity(self, side: ev.Side, evidence: ev.Evidence, line: str, parts: list[str | bytes]) -> None:
        """ID (RFC 2971): the parameter list after the tag (or "*") and the word ID, literals included."""
        words = line.split(None, 2)
        fields = id_parameters([words[2] if len(words) > 2 else "", *parts[1:]])
        if fields:
            self._emit(ev.Identity(side, evidence, fields))

    def _untagged(self, words: list[str], line: str, parts: list[str | bytes]) -> None:
        kind = words[1].upper() if len(words) > 1 else ""
        if not self.greeted and not self.partial and kind in ("OK", "PREAUTH", "BYE"):
            self.greeted = True
            if kind == "PREAUTH":
                self.authenticated = True
            banner = without_capability_codes(words[2] if len(words) > 2 else "").strip()
            self._emit(ev.Greeting(SERVER, self._evidence(), banner, kind != "BYE"))
            self._capability_code(line)
            return
        self.greeted = True
        if kind == "CAPABILITY":
            self._capabilities(words[2] if len(words) > 2 else "")
        elif kind == "ID":
            self._identity(SERVER, self._evidence(), line, parts)
        elif kind == "OK":
            self._capability_code(line)

    def _capability_code(self, line: str) -> None:
        listed = capability_code(line)
        if listed is not None:
            self._capabilities(listed)

    def _capabilities(self, text: str) -> None:
        items = text.split()
        upper = [item.upper() for item in items]
        mechanisms = [item[5:] for item in items if item.upper().startswith("AUTH=")]
        self._literal_plus = self._literal_plus or "LITERAL+" in upper
        self._login_disabled = "LOGINDISABLED" in upper
        self._emit(
            ev.Capabilities(
                SERVER,
                self._evidence(),
                "capability",
                items,
                mechanism_names(mechanisms),
                "STARTTLS" in upper,
                cleartext_login="LOGINDISABLED" not in upper,
            )
        )

    # -- bounded state ------------------------------------------------------------------------------------------

    def _after_gap(self, side: ev.Side) -> None:
        self._assembling[side] = None
        if side is CLIENT:
            self._awaited = None  # the held bytes went with the gap

    def _state_bytes(self) -> int:
        held = self._tag_bytes
        for pending in (self._assembling[CLIENT], self._assembling[SERVER]):
            if pending is not None:
                held += pending.parts.bytes
        return held

    def _shed_state(self) -> None:
        self._assembling = {CLIENT: None, SERVER: None}
        self._tags.clear()
        self._again.clear()
        self._tag_bytes = 0
        self._awaited = None
