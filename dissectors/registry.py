"""The one protocol registry: each mail protocol's session dissector, its well-known ports, and how to tell which
protocol a flow speaks from its first lines."""

from __future__ import annotations

from dissectors.imap import ImapSession
from dissectors.pop3 import Pop3Session
from dissectors.session import MailSession
from dissectors.smtp import SmtpSession

SESSION_TYPES: dict[str, type[MailSession]] = {"smtp": SmtpSession, "pop3": Pop3Session, "imap": ImapSession}
PROTOCOLS: tuple[str, ...] = tuple(SESSION_TYPES)

PORT_PROTOCOLS: dict[int, str] = {
    25: "smtp",
    465: "smtp",
    587: "smtp",
    2525: "smtp",
    110: "pop3",
    995: "pop3",
    143: "imap",
    993: "imap",
}
MAIL_PORTS: frozenset[int] = frozenset(PORT_PROTOCOLS)
"""SMTP 25/465/587/2525, POP3 110/995, IMAP 143/993."""
# Well-known ports where TLS starts with the first byte (RFC 8314): SMTPS/submissions, POP3S, IMAPS.
IMPLICIT_TLS_PORTS: frozenset[int] = frozenset({465, 995, 993})

NOT_MAIL = ""
# How much of a first line is looked at before deciding without its end.
MAX_FIRST_LINE = 512

_SMTP_GREETING_WORDS = (b"SMTP", b"ESMTP", b"Postfix", b"Sendmail", b"Exim", b"mail", b"Mail", b"MAIL")
_CLIENT_COMMANDS = {
    b"EHLO": "smtp",
    b"HELO": "smtp",
    b"LHLO": "smtp",
    b"CAPA": "pop3",
    b"USER": "pop3",
    b"STLS": "pop3",
}


def identify(server: bytes, client: bytes) -> str | None:
    """The protocol the first bytes of each side show: ``"smtp"``, ``"pop3"``, ``"imap"``; :data:`NOT_MAIL` when
    they show something else; None while undecided.

    The server's greeting decides: SMTP ``220`` with an SMTP-ish word (FTP greets with 220 too) or answered by a
    client EHLO/HELO, POP3 ``+OK``, IMAP ``* OK`` / ``* PREAUTH`` / ``* BYE``. With no server bytes yet (greeting lost
    or not captured), a client EHLO/HELO/LHLO or CAPA/USER/STLS line confirms mail; nothing else denies it.
    """
    if server:
        end = server.find(b"\n")
        if end < 0 and len(server) < MAX_FIRST_LINE:
            return None
        line = server[: end if end >= 0 else MAX_FIRST_LINE]
        if line.startswith(b"+OK"):
            return "pop3"
        if line.startswith((b"* OK", b"* PREAUTH", b"* BYE")):
            return "imap"
        if line.startswith((b"220 ", b"220-")) and (
            any(word in line for word in _SMTP_GREETING_WORDS) or client.upper().startswith((b"EHLO", b"HELO"))
        ):
            return "smtp"
        return NOT_MAIL
    command = client[:6].upper().split(b" ", 1)[0].rstrip(b"\r\n")
    if command in _CLIENT_COMMANDS and len(client) > len(command):
        return _CLIENT_COMMANDS[command]
    return None
