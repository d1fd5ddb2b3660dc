"""The arguments of SMTP commands the session reads (the path of MAIL FROM and RCPT TO, XCLIENT's attributes), the
EHLO keywords that list SASL mechanisms, and which replies may answer which commands."""

from __future__ import annotations

import re

from dissectors import events as ev
from dissectors.session import MAX_VERB

# A path in brackets, whose quoted local part may hold ">" (RFC 5321 4.1.2 Quoted-string, backslash escapes in it):
# it ends at the first ">" outside quotes (Postfix reads ``<"v>x"@example.net>`` so); a quote never closed leaves it
# at the first ">"; or a bare path (no brackets), up to a blank.
_PATH = re.compile(r'^\s*(?:FROM|TO)\s*:\s*(<(?:"(?:[^"\\]|\\.)*"|[^">])*>|<[^>]*>|[^\s<>]+)(.*)$', re.IGNORECASE)
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")
# EHLO keywords that list SASL mechanisms, and the commands that start an exchange with one (RFC 4954 AUTH; X-EXPS,
# which Exchange servers authenticate each other with and answer anyone with, NTLM included).
AUTH_KEYWORDS = ("AUTH", "X-EXPS")
# Reply codes that answer only these commands (RFC 5321 section 4.3.2, RFC 4954 section 6, RFC 3207 section 4): one
# of them while another command heads the queue means that command's reply never came (a pipelined reply missing,
# a multi-line reply that never ended), so it is not that command's answer.
REPLY_OWNERS = {
    354: frozenset({"DATA"}),
    334: frozenset({"AUTH"}),
    235: frozenset({"AUTH"}),
    534: frozenset({"AUTH"}),
    535: frozenset({"AUTH"}),
    538: frozenset({"AUTH"}),
    251: frozenset({"RCPT", "VRFY", "EXPN"}),
    551: frozenset({"RCPT", "VRFY", "EXPN"}),
    252: frozenset({"VRFY", "EXPN"}),
    221: frozenset({"QUIT"}),
    220: frozenset({"STARTTLS", "X-ANONYMOUSTLS", "XCLIENT"}),  # Postfix answers an XCLIENT it took with a greeting
}
# The replies besides a refusal (4xx, 5xx) that may answer an AUTH or one of its responses (RFC 4954 section 6).
_AUTH_REPLIES = frozenset({235, 334})


def xclient_attributes(argument: str) -> dict[str, str]:
    """``ADDR=192.0.2.7 LOGIN=alice`` as ``{"ADDR": "192.0.2.7", "LOGIN": "alice"}`` (xtext ``+HH`` decoded), the
    first :data:`~dissectors.events.MAX_OVERRIDE_ATTRIBUTES` of them."""
    attributes: dict[str, str] = {}
    for word in argument.split(None, ev.MAX_OVERRIDE_ATTRIBUTES)[: ev.MAX_OVERRIDE_ATTRIBUTES]:
        name, equals, value = word.partition("=")
        if equals and name:
            attributes[name.upper()[:MAX_VERB]] = _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)
    return attributes


def address(argument: str) -> str:
    """The path of ``MAIL FROM:<a>`` or ``RCPT TO:<a>`` without brackets; the null sender stays ``<>``."""
    match = _PATH.match(argument)
    if not match:
        return argument.strip()
    path = match.group(1)
    if path == "<>":
        return "<>"
    return path.strip("<>")


def reply_fits(verb: str, code: int) -> bool:
    """Can ``code`` be the reply to ``verb``? DATA's first reply is never a 2xx (354 or a refusal)."""
    owners = REPLY_OWNERS.get(code)
    if owners is not None:
        return verb in owners
    return not (verb == "DATA" and 200 <= code < 300)


def may_answer_auth(code: int) -> bool:
    """Can ``code`` answer an AUTH or one of its responses: a success (235), a prompt (334), a refusal (4xx, 5xx)?
    A 250 answers other commands only (a MAIL pipelined after the last response)."""
    return code in _AUTH_REPLIES or 400 <= code < 600


def advertised(code: int, lines: list[str]) -> str | None:
    """The reply lines that listed the mechanisms (``250-AUTH PLAIN LOGIN``, ``250-AUTH=LOGIN``) as they were sent;
    None (the final line is cited) when none did."""
    cited = [
        f"{code}{' ' if index == len(lines) - 1 else '-'}{line}"
        for index, line in enumerate(lines)
        if index and is_auth(line)
    ]
    return "\n".join(cited)[: ev.MAX_EVIDENCE_TEXT] if cited else None


def is_auth(keyword: str) -> bool:
    """An EHLO keyword line listing mechanisms: ``AUTH PLAIN LOGIN``, ``AUTH=LOGIN``, Exchange's ``X-EXPS GSSAPI
    NTLM`` and ``X-EXPS=LOGIN`` (the word, in any case, then the end, a space or an equals sign)."""
    word = keyword.strip()
    for name in AUTH_KEYWORDS:
        size = len(name)
        if word[:size].upper() == name and (len(word) == size or word[size] == "=" or word[size].isspace()):
            return True
    return False
