"""IMAP session dissector (RFC 3501/9051: tags, literals, CAPABILITY, STARTTLS, LOGIN, AUTHENTICATE with SASL-IR)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dissectors import events as ev
from dissectors import sasl
from dissectors.linebuffer import MAX_LINE, Line, Raw
from dissectors.session import MailSession, unique_upper

# Where a [CAPABILITY ...] response code opens; its end is the next "]", found with str.find (a regular expression
# scanning for the "]" from every opening tried before was quadratic on a line of openings).
_CAPABILITY_OPEN = re.compile(r"\[CAPABILITY ", re.IGNORECASE)
# Octet counts of a literal: RFC 9051 allows 63 bits; twelve digits (a terabyte) already exceed any real message.
MAX_LITERAL_DIGITS = 12
# A command or response assembled from lines and literals is not grown past this many parts.
MAX_PARTS = 64
# Commands remembered by tag while their tagged answer is awaited.
MAX_TAGS = 128


@dataclass
class _Pending:
    """A line being assembled across literals: text parts and literal values in order."""

    parts: list[str | bytes] = field(default_factory=list)
    frame: int | None = None
    timestamp: float | None = None


@dataclass
class _Command:
    tag: str
    name: str
    line: str
    frame: int | None
    timestamp: float | None


def literal_at_end(text: str) -> tuple[int, bool] | None:
    """The literal a line announces at its end, ``{n}`` or ``{n+}``: (n, non-synchronising); None without one."""
    if not text.endswith("}"):
        return None
    start = text.rfind("{")
    inner = text[start + 1 : -1]
    plus = inner.endswith("+")
    digits = inner[:-1] if plus else inner
    if start < 0 or not 0 < len(digits) <= MAX_LITERAL_DIGITS or not digits.isdecimal():
        return None
    return int(digits), plus


def _is_literal_marker(atom: str) -> bool:
    return atom.rfind("{") == 0 and literal_at_end(atom) is not None


def capability_code(line: str) -> str | None:
    """The list inside the first complete ``[CAPABILITY ...]`` response code of a line; None without one."""
    opening = _CAPABILITY_OPEN.search(line)
    if opening is None:
        return None
    end = line.find("]", opening.end())
    return None if end < 0 else line[opening.end() : end]


def without_capability_codes(text: str) -> str:
    """The text with every complete ``[CAPABILITY ...]`` response code taken out (for a greeting's banner)."""
    kept: list[str] = []
    position = 0
    while (opening := _CAPABILITY_OPEN.search(text, position)) is not None:
        end = text.find("]", opening.end())
        if end < 0:
            break
        kept.append(text[position : opening.start()])
        position = end + 1
    kept.append(text[position:])
    return "".join(kept)


def tokens(parts: list[str | bytes]) -> list[str]:
    """Split an assembled line into atoms, quoted strings (unescaped) and literals (decoded)."""
    result: list[str] = []
    for part in parts:
        if isinstance(part, bytes):
            result.append(part.decode("utf-8", errors="replace"))
            continue
        position = 0
        text = part
        while position < len(text):
            char = text[position]
            if char.isspace():
                position += 1
            elif char == '"':
                value, position = _quoted(text, position + 1)
                result.append(value)
            else:
                end = position
                while end < len(text) and not text[end].isspace():
                    end += 1
                atom = text[position:end]
                if not _is_literal_marker(atom):  # the {n} marker itself is not a value
                    result.append(atom)
                position = end
    return result


def _quoted(text: str, position: int) -> tuple[str, int]:
    value: list[str] = []
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text):
            value.append(text[position + 1])
            position += 2
        elif char == '"':
            return "".join(value), position + 1
        else:
            value.append(char)
            position += 1
    return "".join(value), position


class ImapSession(MailSession):
    protocol = sasl.Protocol.IMAP

    def __init__(self, partial: bool = False, max_line: int = MAX_LINE) -> None:
        super().__init__(partial, max_line)
        self._assembling: dict[ev.Side, _Pending | None] = {ev.Side.CLIENT: None, ev.Side.SERVER: None}
        self._tags: dict[str, _Command] = {}

    # -- assembling lines across literals -----------------------------------------------------------------------

    def _client_line(self, text: str) -> None:
        self._assemble(ev.Side.CLIENT, text)

    def _server_line(self, text: str) -> None:
        self._assemble(ev.Side.SERVER, text)

    def _assemble(self, side: ev.Side, text: str) -> None:
        if side is ev.Side.CLIENT and self.auth.active and self._assembling[side] is None:
            self._sasl(side, self.auth.client_line(text))
            return
        pending = self._assembling[side]
        if pending is None:
            first_frame = self._line.first_frame if self._line.first_frame is not None else self._line.frame
            pending = _Pending(frame=first_frame, timestamp=self._line.timestamp)
        if len(pending.parts) < MAX_PARTS:
            pending.parts.append(text)
        literal = literal_at_end(text)
        if literal and not (side is ev.Side.SERVER and text.startswith("+")):
            self._assembling[side] = pending
            self.buffers[side].expect_raw(literal[0])
            return
        self._assembling[side] = None
        first = pending.parts[0] if isinstance(pending.parts[0], str) else ""
        # Evidence: the frame that completed the command, and the one where it began.
        self._line = Line(first, self._line.frame, self._line.timestamp, pending.frame)
        if side is ev.Side.CLIENT:
            self._command(pending.parts)
        else:
            self._response(pending.parts)

    def _raw(self, side: ev.Side, item: Raw) -> None:
        pending = self._assembling[side]
        if pending is not None and len(pending.parts) < MAX_PARTS:
            pending.parts.append(item.data)

    # -- client -------------------------------------------------------------------------------------------------

    def _command(self, parts: list[str | bytes]) -> None:
        words = tokens(parts)
        if len(words) < 2:
            if words:
                self._anomaly(ev.Side.CLIENT, "bad_command", "command without a tag or name")
            return
        tag, name = words[0], words[1].upper()
        first_line = parts[0] if isinstance(parts[0], str) else ""
        evidence = self._evidence(first_line)
        if name == "UID" and len(words) > 2:
            name = f"UID {words[2].upper()}"
        if name == "AUTHENTICATE":
            self._sasl(ev.Side.CLIENT, self.auth.client_line(first_line))
            return  # the tracker follows it to the tagged verdict
        if name == "LOGIN":
            user = words[2] if len(words) > 2 else None
            password = words[3] if len(words) > 3 else None
            self._emit(ev.Credentials(ev.Side.CLIENT, evidence, "IMAP-LOGIN", user, password))
        elif name == "LOGOUT":
            self._emit(ev.Quit(ev.Side.CLIENT, evidence))
        if len(self._tags) >= MAX_TAGS:
            self._tags.pop(next(iter(self._tags)))
            self._anomaly(ev.Side.CLIENT, "too_many_pending_commands", f"more than {MAX_TAGS} unanswered commands")
        self._tags[tag] = _Command(tag, name, first_line, self._line.frame, self._line.timestamp)

    # -- server -------------------------------------------------------------------------------------------------

    def _response(self, parts: list[str | bytes]) -> None:
        line = parts[0] if isinstance(parts[0], str) else ""
        if self.auth.active:
            self._sasl(ev.Side.SERVER, self.auth.server_line(line))
            if not self.auth.active:
                return
        words = line.split(None, 2)
        if not words:
            return
        if words[0] == "*":
            self._untagged(words, line)
            return
        if words[0] == "+":
            return  # a continuation for a literal
        command = self._tags.pop(words[0], None)
        self.greeted = True
        self._capability_code(line)
        if command is None or len(words) < 2:
            return
        status = words[1].upper()
        if command.name == "STARTTLS":
            self._start_tls("STARTTLS", status == "OK")
        elif command.name == "LOGIN":
            self.authenticated = self.authenticated or status == "OK"
            self._emit(ev.AuthResult(ev.Side.SERVER, self._evidence(), "IMAP-LOGIN", status == "OK", line.strip()))

    def _untagged(self, words: list[str], line: str) -> None:
        kind = words[1].upper() if len(words) > 1 else ""
        if not self.greeted and not self.partial and kind in ("OK", "PREAUTH", "BYE"):
            self.greeted = True
            if kind == "PREAUTH":
                self.authenticated = True
            banner = without_capability_codes(words[2] if len(words) > 2 else "").strip()
            self._emit(ev.Greeting(ev.Side.SERVER, self._evidence(), banner, kind != "BYE"))
            self._capability_code(line)
            return
        self.greeted = True
        if kind == "CAPABILITY":
            self._capabilities(words[2] if len(words) > 2 else "")
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
        self._emit(
            ev.Capabilities(
                ev.Side.SERVER,
                self._evidence(),
                "capability",
                items,
                unique_upper(mechanisms),
                "STARTTLS" in upper,
                cleartext_login="LOGINDISABLED" not in upper,
            )
        )

    def _after_gap(self, side: ev.Side) -> None:
        self._assembling[side] = None
