"""POP3 session dissector (RFC 1939, RFC 2449 CAPA and pipelining, RFC 2595 STLS, RFC 5034 AUTH, [MS-POP3])."""

from __future__ import annotations

from dataclasses import dataclass, field

from dissectors import events as ev
from dissectors import sasl
from dissectors.linebuffer import MAX_LINE
from dissectors.session import MailSession, unique_upper

# Commands whose +OK answer is followed by lines up to a lone ".".
_MULTILINE_ALWAYS = {"CAPA", "RETR", "TOP"}
_MULTILINE_WITHOUT_ARGUMENT = {"LIST", "UIDL", "AUTH"}
# Lines of a multi-line answer kept for CAPA and the AUTH mechanism list; bodies (RETR) are skipped, not kept.
MAX_LIST_LINES = 256


@dataclass
class _Command:
    verb: str
    argument: str
    line: str
    frame: int | None
    timestamp: float | None
    lines: list[str] = field(default_factory=list)


class Pop3Session(MailSession):
    protocol = sasl.Protocol.POP3

    def __init__(self, partial: bool = False, max_line: int = MAX_LINE) -> None:
        super().__init__(partial, max_line)
        self._multiline: _Command | None = None
        self._user: str | None = None

    # -- client -------------------------------------------------------------------------------------------------

    def _client_line(self, text: str) -> None:
        if self.auth.active:
            self._sasl(ev.Side.CLIENT, self.auth.client_line(text))
            return
        verb, _, argument = text.strip().partition(" ")
        verb = verb.upper()
        argument = argument.strip()
        command = _Command(verb, argument, text, self._line.frame, self._line.timestamp)
        evidence = self._evidence()
        if verb == "USER":
            self._user = argument
        elif verb == "PASS":
            self._emit(ev.Credentials(ev.Side.CLIENT, evidence, "USER-PASS", self._user, argument))
        elif verb == "APOP":
            user, _, digest = argument.rpartition(" ")
            self._emit(
                ev.Credentials(ev.Side.CLIENT, evidence, "APOP", user or None, digest, secret_kind="apop-digest")
            )
        elif verb == "AUTH" and argument:
            self._sasl(ev.Side.CLIENT, self.auth.client_line(text))
            return  # the tracker follows it to the verdict
        elif verb == "QUIT":
            self._emit(ev.Quit(ev.Side.CLIENT, evidence))
        self._push_pending(command)

    # -- server -------------------------------------------------------------------------------------------------

    def _server_line(self, text: str) -> None:
        if self._multiline is not None:
            self._multiline_line(text)
            return
        if self.auth.active:
            self._sasl(ev.Side.SERVER, self.auth.server_line(text))
            return
        status = text[:4].upper()
        positive = status.startswith("+OK")
        if not positive and not status.startswith("-ERR"):
            self._anomaly(ev.Side.SERVER, "bad_status_line", "server line is neither +OK nor -ERR")
            return
        if not self.greeted and not self.partial and not self.pending:
            # With a command already waiting, the greeting is not in the capture: this answers the command.
            self.greeted = True
            self._emit(ev.Greeting(ev.Side.SERVER, self._evidence(), text[3 if positive else 4 :].strip(), positive))
            return
        self.greeted = True
        if not self.pending:
            self._anomaly(ev.Side.SERVER, "unsolicited_reply", "status line answering no command")
            return
        command = self.pending.popleft()
        self._answer(command, positive, text)

    def _answer(self, command: _Command, positive: bool, text: str) -> None:
        verb = command.verb
        if positive and (verb in _MULTILINE_ALWAYS or (verb in _MULTILINE_WITHOUT_ARGUMENT and not command.argument)):
            self._multiline = command
            return
        if verb == "STLS":
            self._start_tls("STLS", positive)
        elif verb in ("PASS", "APOP"):
            mechanism = "USER-PASS" if verb == "PASS" else "APOP"
            self.authenticated = self.authenticated or positive
            self._emit(ev.AuthResult(ev.Side.SERVER, self._evidence(), mechanism, positive, text.strip()))

    def _multiline_line(self, text: str) -> None:
        command = self._multiline
        assert command is not None
        if text != ".":
            if command.verb in ("CAPA", "AUTH") and len(command.lines) < MAX_LIST_LINES:
                command.lines.append(text[1:] if text.startswith("..") else text)
            return
        self._multiline = None
        evidence = self._evidence("\n".join(command.lines)[:512] or ".")
        if command.verb == "CAPA":
            mechanisms: list[str] = []
            for line in command.lines:
                name, _, value = line.partition(" ")
                if name.upper() == "SASL":
                    mechanisms.extend(value.split())
            items = [line.strip() for line in command.lines if line.strip()]
            self._emit(
                ev.Capabilities(
                    ev.Side.SERVER,
                    evidence,
                    "capa",
                    items,
                    unique_upper(mechanisms),
                    any(item.upper() == "STLS" for item in items),
                    cleartext_login=any(item.upper() == "USER" for item in items),
                )
            )
        elif command.verb == "AUTH":
            mechanisms = [line.split()[0] for line in command.lines if line.split()]
            self._emit(ev.Capabilities(ev.Side.SERVER, evidence, "auth-list", [], unique_upper(mechanisms), False))

    def _after_gap(self, side: ev.Side) -> None:
        self._multiline = None
