"""The one protocol registry: each mail protocol's session dissector, its well-known ports, and how to tell which
protocol a flow speaks from its first lines."""

from __future__ import annotations

from dissectors.identify import MAX_FIRST_LINE, NOT_MAIL, identify
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

__all__ = [
    "IMPLICIT_TLS_PORTS",
    "MAIL_PORTS",
    "MAX_FIRST_LINE",
    "NOT_MAIL",
    "PORT_PROTOCOLS",
    "PROTOCOLS",
    "SESSION_TYPES",
    "identify",
]
