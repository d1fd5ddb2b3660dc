"""Where an SMTP message ended when its end line was not exactly CR LF "." CR LF: decided by the server's replies.

RFC 5321 (section 4.1.1.4) ends the data with CR LF "." CR LF. Servers differ on the other spellings, a bare LF
before or after the dot (``\\n.\\n``, ``\\n.\\r\\n``, ``\\r\\n.\\n``): Postfix before 3.9 with its default
``smtpd_forbid_bare_newline = no`` ends the message there, Postfix 3.9 (``normalize``) and aiosmtpd 1.4.5 read on
to the exact end. What a client sends between the two is then, to one server, part of the message and, to the
other, commands: SMTP smuggling (CVE-2023-51764), and a way to make a passive reader see an accepted foreign
recipient that no server accepted, or miss one that a server did. The server alone knows; its replies say it:
each of them answers, in turn (RFC 2920), the lax end and the lines after it, or the exact end and the
commands after that; one reading it cannot be is ruled out:

* a reply before the exact end was sent answers the lax end (:data:`LAX`), unless a 421, which a server that reads
  on sends when it gives up waiting for the exact end (:data:`EXACT`);
* a reply that comes when, read one way, the client had sent nothing more to answer (a server that read on to the
  exact end answering again before a command after it), or that does not fit what it would answer (a 250 to QUIT,
  a 221 to MAIL, a 354 to anything but DATA), rules that reading out;
* while the replies fit both, the decision waits for the next; when none comes (the connection ends, bytes are
  lost, a 421, too much is held), the RFC's reading (the exact end) stands.

The client's bytes after the lax end wait, unread, until then (at most :data:`~dissectors.linebuffer.MAX_HELD`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EXACT_END = b"\r\n.\r\n"
_LAX_END = re.compile(rb"\n\.\r*\n")  # an end line to a server that takes lax ones (from a line's LF)
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
    certain: bool  # the end line was lax for sure (else the line ending before the dot went unread)
    crlf_after: bool  # its own line ended with CR LF
    replies: list[Any] = field(default_factory=list)  # reply lines held back (Line items)
    codes: list[int] = field(default_factory=list)  # the codes of the complete replies among them
    bytes: int = 0  # their text


def exact_end_in(held: bytes, crlf_after: bool) -> int | None:
    """Where the client's bytes after the lax end go on after an exact end line (CR LF "." CR LF; the lax end
    line's own CR LF counts as the first CR LF); None when none was sent yet."""
    prefix = b"\r\n" if crlf_after else b"\n"
    found = (prefix + held).find(EXACT_END)
    return None if found < 0 else found - len(prefix) + len(EXACT_END)


# The success codes RFC 5321 (section 4.3.2), RFC 4954 and RFC 3207 give a command, where the general rule of
# dissectors.smtp.reply_fits lets any 2xx answer it: a 250 answers MAIL, never QUIT.
_SUCCESS = {
    "QUIT": (221,), "DATA": (354,), "MAIL": (250,), "RCPT": (250, 251, 252), "NOOP": (250,), "RSET": (250,),
    "HELO": (250,), "EHLO": (250,), "VRFY": (250, 251, 252), "AUTH": (235, 334), "STARTTLS": (220,),
}  # fmt: skip


def _answers(verb: str, code: int, fits: Callable[[str, int], bool]) -> bool:
    return fits(verb, code) and (code >= 400 or code in _SUCCESS.get(verb, (code,)))


def _verb(line: bytes) -> str:
    verb = line.strip().split(b" ", 1)[0].split(b":", 1)[0].decode("latin-1").upper()
    return "AUTH" if verb == "X-EXPS" else verb  # Exchange's AUTH, answered as AUTH is (dissectors.smtp)


def decide(
    held: bytes, crlf_after: bool, codes: list[int], fits: Callable[[str, int], bool]
) -> tuple[bool, str] | None:
    """:data:`LAX` or :data:`EXACT` once the server's replies since the lax end (``codes``, the first answering the
    end of the message) could answer the client's bytes after it (``held``) read one way and not the other; None
    while they could answer both (but after a 421: the server closed, and the RFC's reading stands)."""
    end = exact_end_in(held, crlf_after)
    # Before the exact end is sent, a server that reads on answers nothing, but may time out (421).
    exact = codes == [421] if end is None else _could_answer(held, end, codes[1:], fits, lax=False)
    lax = _could_answer(held, 0, codes[1:], fits, lax=True)
    if lax and not exact:
        return LAX, f"the server's replies ({_listed(codes)}) answer the lines after the lax end, not the exact end"
    if exact and not lax:
        return EXACT, f"the server's replies ({_listed(codes)}) answer the exact end and what followed it"
    if lax and codes[-1] != 421:
        return None
    return EXACT, f"the server's replies ({_listed(codes)}) do not tell the lax end from the exact end"


def _could_answer(held: bytes, position: int, codes: list[int], fits: Callable[[str, int], bool], lax: bool) -> bool:
    """Whether ``codes`` could be a server's replies to the client's commands from ``position`` in ``held``, in turn
    (RFC 2920), the server ending messages at lax end lines (``lax``) or only at CR LF "." CR LF: a 354 to DATA is
    followed by a message (answered at its end), a 334 by a line of the AUTH exchange, a BDAT line by its chunk;
    each answer comes only after what it answers was sent, but for a 421 (the server closing)."""
    previous, verb = 0, ""
    for code in codes:
        if code == 421:
            return True
        if previous == 354 and verb == "DATA":
            verb, after = "END-OF-DATA", _message_end(held, position, lax)
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


def _message_end(held: bytes, position: int, lax: bool) -> int | None:
    """Where the client's bytes go on after the message from ``position`` (just after its DATA line) ends."""
    if lax:
        found = _LAX_END.search(held, position - 1)
        return None if found is None else found.end()
    found = held.find(EXACT_END, position - 2)
    return None if found < 0 else found + len(EXACT_END)


def _listed(codes: list[int]) -> str:
    return " ".join(map(str, codes[:8])) + (" ..." if len(codes) > 8 else "")


def undecided(held: bytes, crlf_after: bool, server_spoke: bool, overflow: bool = False) -> tuple[bool, str]:
    """The decision when no deciding reply will come (the connection ended, bytes were lost, or, ``overflow``, more
    bytes came than are held with no answer): the lax end when the server never spoke (a capture of the client's
    side); the exact reading after an overflow (a server answers the end of a message at once: this one is still
    reading it) or when the exact end was sent; else the lax end."""
    if not server_spoke:
        return LAX, "no byte from the server to go by"
    if overflow:
        return EXACT, "the client sent on and on with no answer from the server: the message went on"
    if exact_end_in(held, crlf_after) is None:
        return LAX, "no exact end of the message was sent"
    return EXACT, "the exact end of the message was sent, and the server's answers do not say otherwise"
