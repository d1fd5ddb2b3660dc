"""Where an SMTP message ended when its end line was not exactly CR LF "." CR LF: decided by the server's replies.

RFC 5321 (section 4.1.1.4) ends the data with CR LF "." CR LF. Servers differ on the other spellings. A bare LF
before or after the dot (``\\n.\\n``, ``\\n.\\r\\n``, ``\\r\\n.\\n``): Postfix before 3.9 with its default
``smtpd_forbid_bare_newline = no``, Sendmail before 8.18 and Exim before 4.97.1 end the message there (CVE-2023-51764,
-51765, -51766); Postfix 3.9 (``normalize``) and aiosmtpd 1.4.5 read on to the exact end. A bare CR (``\\r.\\r``,
``\\r\\n.\\r``, ``\\r.\\r\\n``): Cisco Secure Email (AsyncOS), which by default cleans every bare CR and LF into
CR LF, ends the message there; servers that read lines to their LF read on, to the exact end or to an end line
with bare LFs. What a client sends between the two is then, to one server, part of the message and, to the
other, commands: SMTP smuggling, and a way to make a passive reader see an accepted foreign recipient that no
server accepted, or miss one that a server did. The server alone knows; its replies say it: each of them answers,
in turn (RFC 2920), the lax end and the lines after it, or a later end (the exact end; after a bare CR, an end
line with bare LFs too) and the commands after that; one reading it cannot be is ruled out:

* a reply before a later end was sent answers the lax end (:data:`LAX`), unless a 421, which a server that reads
  on sends when it gives up waiting for the exact end (:data:`EXACT`);
* a reply that comes when, read one way, the client had sent nothing more to answer (a server that read on to a
  later end answering again before a command after it), or that does not fit what it would answer (a 250 to QUIT,
  a 221 to MAIL, a 354 to anything but DATA), rules that reading out;
* while the replies fit both, the decision waits for the next; when none comes (the connection ends, bytes are
  lost, a 421, too much is held), the RFC's reading (a later end, when one was sent) stands.

After a lax end with a bare CR ruled out, the message is read on with only end lines with bare LFs as candidates
(decided in turn: a server reading lines to their LF may end there), and after one with bare LFs only, with none.

The client's bytes after the lax end wait, unread, until then (at most :data:`~dissectors.linebuffer.MAX_HELD`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dissectors.linebuffer import LaxEnd

EXACT_END = b"\r\n.\r\n"
# Where a server ends a message: only at CR LF "." CR LF; at a "." line between LFs, CRs before each LF ignored (a
# server reading lines to their LF); at a "." line between any line ends, a bare CR too (Cisco's cleaning).
_EXACT = re.compile(re.escape(EXACT_END))
_LF_LAX = re.compile(rb"\n\.\r*\n")
_ANY_LAX = re.compile(rb"[\r\n]\.(?:\r*\n|\r+(?!\n))")
_BDAT = re.compile(rb"^\s*BDAT\s+(\d{1,12})", re.IGNORECASE)
LAX, EXACT = True, False
MAX_REPLY_LINES_HELD = 64
"""Reply lines kept while the decision waits for a reply that fits one reading only; past them, the decision is made
on what has come."""


@dataclass
class PendingEnd:
    """A lax end line read in a message, waiting for the server's replies to say whether it ended it."""

    command: Any  # the END-OF-DATA command it is, if it was the end
    line: Any  # the Line cited for it
    end: LaxEnd  # as the line buffer read it: certain or not, how it ended, with a bare CR or not
    replies: list[Any] = field(default_factory=list)  # reply lines held back (Line items)
    codes: list[int] = field(default_factory=list)  # the codes of the complete replies among them
    bytes: int = 0  # their text


def later_ends(held: bytes, end: LaxEnd) -> list[tuple[int, re.Pattern[bytes]]]:
    """Where the client's bytes after the lax end go on after the end a server that did not take it may have taken
    (the lax end line's own line end counts as the first of the next), with how that server ends later messages:
    the exact end line; after a lax end line with a bare CR, also the first end line with bare LFs (a server
    reading lines to their LF). Those sent so far."""
    ends = []
    for pattern in (_LF_LAX, _EXACT) if end.bare_cr else (_EXACT,):
        found = pattern.search(end.after + held)
        if found is not None:
            ends.append((found.end() - len(end.after), pattern))
    return ends


# The success codes RFC 5321 (section 4.3.2), RFC 4954 and RFC 3207 give a command, where the general rule of
# dissectors.smtp_syntax.reply_fits lets any 2xx answer it: a 250 answers MAIL, never QUIT.
_SUCCESS = {
    "QUIT": (221,), "DATA": (354,), "MAIL": (250,), "RCPT": (250, 251, 252), "NOOP": (250,), "RSET": (250,),
    "HELO": (250,), "EHLO": (250,), "VRFY": (250, 251, 252), "AUTH": (235, 334), "STARTTLS": (220,),
}  # fmt: skip


def _answers(verb: str, code: int, fits: Callable[[str, int], bool]) -> bool:
    return fits(verb, code) and (code >= 400 or code in _SUCCESS.get(verb, (code,)))


def _verb(line: bytes) -> str:
    verb = line.strip().split(b" ", 1)[0].split(b":", 1)[0].decode("latin-1").upper()
    return "AUTH" if verb == "X-EXPS" else verb  # Exchange's AUTH, answered as AUTH is (dissectors.smtp)


def decide(held: bytes, end: LaxEnd, codes: list[int], fits: Callable[[str, int], bool]) -> tuple[bool, str] | None:
    """:data:`LAX` or :data:`EXACT` (a later end) once the server's replies since the lax end ``end`` (``codes``,
    the first answering the end of the message) could answer the client's bytes after it (``held``) read one way
    and not the other; None while they could answer both (but after a 421: the server closed, and the RFC's reading
    stands). A server that took a bare CR for a line end takes bare LFs too."""
    ends = later_ends(held, end)
    # Before a later end is sent, a server that reads on answers nothing, but may time out (421).
    later = any(_could_answer(held, at, codes[1:], fits, model) for at, model in ends) if ends else codes == [421]
    models = (_ANY_LAX,) if end.bare_cr else (_LF_LAX, _ANY_LAX)
    lax = any(_could_answer(held, 0, codes[1:], fits, model) for model in models)
    which = "a later end" if end.bare_cr else "the exact end"
    if lax and not later:
        return LAX, f"the server's replies ({_listed(codes)}) answer the lines after the lax end, not {which}"
    if later and not lax:
        return EXACT, f"the server's replies ({_listed(codes)}) answer {which} and what followed it"
    if lax and codes[-1] != 421:
        return None
    return EXACT, f"the server's replies ({_listed(codes)}) do not tell the lax end from {which}"


def _could_answer(
    held: bytes, position: int, codes: list[int], fits: Callable[[str, int], bool], ends: re.Pattern[bytes]
) -> bool:
    """Whether ``codes`` could be a server's replies to the client's commands from ``position`` in ``held``, in turn
    (RFC 2920), the server ending messages where ``ends`` finds an end line: a 354 to DATA is followed by a message
    (answered at its end), a 334 by a line of the AUTH exchange, a BDAT line by its chunk; each answer comes only
    after what it answers was sent, but for a 421 (the server closing)."""
    previous, verb = 0, ""
    for code in codes:
        if code == 421:
            return True
        if previous == 354 and verb == "DATA":
            verb, after = "END-OF-DATA", _message_end(held, position, ends)
        else:
            newline = held.find(b"\n", position)
            if newline < 0:
                return False
            line = held[position:newline]
            verb = "AUTH" if previous == 334 else _verb(line)
            chunk = _BDAT.match(line) if verb == "BDAT" else None
            after = newline + 1 + (int(chunk.group(1)) if chunk else 0)
        if after is None or after > len(held) or not _answers(verb, code, fits):
            return False
        position, previous = after, code
    return True


def _message_end(held: bytes, position: int, ends: re.Pattern[bytes]) -> int | None:
    """Where the client's bytes go on after the message from ``position`` (just after its DATA line) ends (the
    DATA line's own line end counts as the first of its end line)."""
    found = ends.search(held, max(0, position - 2))
    return None if found is None else found.end()


def _listed(codes: list[int]) -> str:
    return " ".join(map(str, codes[:8])) + (" ..." if len(codes) > 8 else "")


def undecided(held: bytes, end: LaxEnd, server_spoke: bool, overflow: bool = False) -> tuple[bool, str]:
    """The decision when no deciding reply will come (the connection ended, bytes were lost, or, ``overflow``, more
    bytes came than are held with no answer): the lax end when the server never spoke (a capture of the client's
    side); a later end after an overflow (a server answers the end of a message at once: this one is still reading
    it) or when one was sent (:func:`later_ends`); else the lax end."""
    if not server_spoke:
        return LAX, "no byte from the server to go by"
    if overflow:
        return EXACT, "the client sent on and on with no answer from the server: the message went on"
    which = "later" if end.bare_cr else "exact"
    if not later_ends(held, end):
        return LAX, f"no {which} end of the message was sent"
    return EXACT, f"the {which} end of the message was sent, and the server's answers do not say otherwise"
