"""Where an SMTP message ended when its end line was not exactly CR LF "." CR LF: decided by the server's replies.

RFC 5321 (section 4.1.1.4) ends the data with CR LF "." CR LF. Servers differ on the other spellings, a bare LF
before or after the dot (``\\n.\\n``, ``\\n.\\r\\n``, ``\\r\\n.\\n``): Postfix before 3.9 with its default
``smtpd_forbid_bare_newline = no`` ends the message there, Postfix 3.9 (``normalize``) and aiosmtpd 1.4.5 read on
to the exact end. What a client sends between the two is then, to one server, part of the message and, to the
other, commands: SMTP smuggling (CVE-2023-51764), and a way to make a passive reader see an accepted foreign
recipient that no server accepted, or miss one that a server did. The server alone knows; its replies say it:

* it answered before the exact end was sent: only the lax end can have been answered (:data:`LAX`), unless with a
  421, which a server that reads on sends when it gives up waiting for the exact end (:data:`EXACT`);
* its second reply came before the client sent a command after the exact end: a server that read on to the exact
  end had nothing to answer (:data:`LAX`), but for its 421 when it gave up waiting for one (:data:`EXACT`);
* otherwise the second reply is the answer to the first line after the lax end (the lax end was the end) or to the
  first command after the exact end (it was not): the one it fits, and when it fits both or neither, the RFC's
  reading (the exact end).

The client's bytes after the lax end wait, unread, until then (at most :data:`~dissectors.linebuffer.MAX_HELD`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EXACT_END = b"\r\n.\r\n"
LAX, EXACT = True, False
MAX_REPLY_LINES_HELD = 64
"""Reply lines kept while the decision waits for the server's second reply; a longer first reply decides on what
has come (a server's reply to the end of the data is one line)."""


@dataclass
class PendingEnd:
    """A lax end line read in a message, waiting for the server's replies to say whether it ended it."""

    command: Any  # the END-OF-DATA command it is, if it was the end
    line: Any  # the Line cited for it
    certain: bool  # the end line was lax for sure (else the line ending before the dot went unread)
    crlf_after: bool  # its own line ended with CR LF
    replies: list[Any] = field(default_factory=list)  # reply lines held back (Line items)
    finals: int = 0  # complete replies among them
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
    return line.strip().split(b" ", 1)[0].split(b":", 1)[0].decode("latin-1").upper()


def decide(
    held: bytes, crlf_after: bool, second_code: int | None, fits: Callable[[str, int], bool], first_code: int = 0
) -> tuple[bool, str]:
    """:data:`LAX` or :data:`EXACT` for a lax end answered by the server, with why. ``held`` is what the client sent
    after it; ``second_code`` the code of the server's second reply since (None: none came), ``first_code`` that of
    its first. A 421 (a server that reads on times out waiting for the exact end, or for a command after it)
    answers no line of the client's."""
    end = exact_end_in(held, crlf_after)
    if end is None:
        if first_code == 421:
            return EXACT, "the server closed the connection (421) before the exact end of the message was sent"
        return LAX, "the server answered before the exact end of the message was sent"
    if second_code is None:
        return EXACT, "the exact end of the message came before the server's only answer"
    after = held[end:]
    if b"\n" not in after:
        if second_code == 421:
            return EXACT, "the server closed the connection (421) after its answer to the exact end of the message"
        return LAX, "the server answered again before the client sent a command after the exact end"
    first, next_command = _verb(held.split(b"\n", 1)[0]), _verb(after.split(b"\n", 1)[0])
    if _answers(first, second_code, fits) and not _answers(next_command, second_code, fits):
        return LAX, f"the server's {second_code} answers {first}, sent after the lax end, not {next_command}"
    return EXACT, f"the server's {second_code} does not tell {first} (after the lax end) from {next_command}"


def undecided(held: bytes, crlf_after: bool, server_spoke: bool, overflow: bool = False) -> tuple[bool, str]:
    """The decision when no second reply will come (the connection ended, bytes were lost, or, ``overflow``, more
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
