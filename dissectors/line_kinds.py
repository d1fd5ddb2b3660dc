"""What the lines of the carried protocols look like, from their first bytes: a reply, a status line, a command.

Shared by the recognition of a flow's protocol (:mod:`dissectors.identify`) and by the line reading that decides
where a line begins after bytes were lost (:meth:`dissectors.linebuffer.LineBuffer.resync`): the first segment of a
flow picked up mid-stream, or the first bytes after a gap, may begin inside a line; when their first line is one of
these, the sender's write began it.
"""

from __future__ import annotations

import re

MAX_FIRST_LINE = 512
"""How much of a first line is looked at before deciding without its end: the longest command or reply line worth
recognising (RFC 5321 command lines are at most 512 bytes)."""

SMTP_REPLY = re.compile(rb"^[2-5]\d\d(?:[ -]|$)")
IMAP_TAGGED = re.compile(rb"^[A-Za-z0-9.]{1,32} (?:OK|NO|BAD)\b", re.IGNORECASE)
HTTP_REQUEST = re.compile(rb"^(?:[A-Z][A-Z0-9_-]{0,31} \S+|CONNECT \S+ \S+) HTTP/1\.[01]$")
HTTP_STATUS = re.compile(rb"^HTTP/1\.[01] \d{3}(?:\s|$)")
_IMAP_TAG = re.compile(rb"[A-Za-z0-9.]{1,32}")

# Commands a mail protocol shares with others (FTP and Redis have AUTH; everyone has QUIT): they neither confirm
# nor refute a greeting; the client's next line does.
SHARED_COMMANDS = frozenset({b"AUTH", b"QUIT", b"NOOP", b"HELP", b"STARTTLS"})
# Client commands that only one mail protocol has (a mid-stream client, or the answer to a greeting).
SMTP_COMMANDS = frozenset({b"EHLO", b"HELO", b"LHLO", b"MAIL", b"RCPT", b"DATA", b"BDAT", b"RSET", b"VRFY", b"EXPN"})
POP3_COMMANDS = frozenset({b"CAPA", b"STLS", b"APOP", b"UIDL", b"STAT", b"RETR", b"DELE", b"TOP", b"PASS", b"USER"})
IMAP_COMMANDS = frozenset(
    {b"CAPABILITY", b"LOGIN", b"AUTHENTICATE", b"STARTTLS", b"SELECT", b"EXAMINE", b"FETCH", b"UID", b"ID",
     b"NOOP", b"LOGOUT", b"LIST", b"LSUB", b"STATUS", b"APPEND", b"IDLE", b"NAMESPACE", b"ENABLE"}
)  # fmt: skip


def command_verb(line: bytes) -> bytes:
    """A command line's first word, upper-cased (up to a colon: ``MAIL FROM:<...>``'s ``MAIL``)."""
    return line.split(b" ", 1)[0].split(b":", 1)[0].upper()


def client_protocol(line: bytes) -> str | None:
    """The protocol a client's command line belongs to, when only one mail protocol has that command."""
    verb = command_verb(line)
    if verb in SMTP_COMMANDS:
        return "smtp"
    if verb in POP3_COMMANDS:
        return "pop3"
    words = line.split(b" ", 2)
    if len(words) >= 2 and _IMAP_TAG.fullmatch(words[0]) and words[1].upper() in IMAP_COMMANDS:
        return "imap"
    return None


def line_start(line: bytes) -> bool:
    """Does this whole line begin a line of a carried protocol: a reply or status line, an untagged or tagged IMAP
    response, a mail command, an HTTP request or status line? (The first segment of a flow picked up mid-stream may
    begin inside a line; when its first line is one of these, it began a line.)"""
    line = line[:MAX_FIRST_LINE].rstrip(b"\r")
    if SMTP_REPLY.match(line) or IMAP_TAGGED.match(line) or HTTP_REQUEST.match(line) or HTTP_STATUS.match(line):
        return True
    if line.startswith((b"+OK", b"-ERR", b"* ", b"+ ")) or line == b"+":
        return True
    return client_protocol(line) is not None or command_verb(line) in SHARED_COMMANDS
