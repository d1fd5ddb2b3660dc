"""The one protocol registry: each carrier's session dissector, its well-known ports, whether its servers are mail
servers (an inventory entry for every session), and how to tell which protocol a flow speaks from its first lines.

Adding a carrier is one dissector (a :class:`~dissectors.session.MailSession` subclass) and one :class:`Carrier`
entry here; the capture filter, the port table, classification and the probe's port table read this list.
"""

from __future__ import annotations

from dataclasses import dataclass

from dissectors.http import HttpSession
from dissectors.identify import MAX_FIRST_LINE, NOT_MAIL, identify
from dissectors.imap import ImapSession
from dissectors.pop3 import Pop3Session
from dissectors.session import MailSession
from dissectors.smtp import SmtpSession
from dissectors.socks import SocksSession


@dataclass(frozen=True)
class Carrier:
    """One protocol the analysis reads: its session dissector and its ports."""

    name: str
    session: type[MailSession]
    ports: tuple[int, ...]  # well-known ports, read by default (passive) and recognised by the probe
    implicit_tls_ports: tuple[int, ...] = ()  # of those, the ones where TLS starts with the first byte
    # Every session is an inventory entry (a mail-service finding). False for carriers whose servers are not mail
    # servers (HTTP): their sessions make findings only when they leak something (NTLM, clear-text credentials).
    inventory: bool = True


CARRIERS: tuple[Carrier, ...] = (
    Carrier("smtp", SmtpSession, (25, 465, 587, 2525), (465,)),
    Carrier("pop3", Pop3Session, (110, 995), (995,)),
    Carrier("imap", ImapSession, (143, 993), (993,)),
    # Cleartext HTTP only: 443 is TLS, nothing in it can be read passively (the probe speaks https:// itself).
    Carrier("http", HttpSession, (80, 8080), inventory=False),
)

# Handshakes read only to find what they let through (dissectors.socks): recognised by their first bytes on any port
# (dissectors.identify), never a carrier of findings of their own but for the credentials they send in clear.
TUNNEL_SESSIONS: dict[str, type[MailSession]] = {"socks": SocksSession}

SESSION_TYPES: dict[str, type[MailSession]] = {carrier.name: carrier.session for carrier in CARRIERS}
PROTOCOLS: tuple[str, ...] = tuple(SESSION_TYPES)
SESSION_TYPES.update(TUNNEL_SESSIONS)
MAIL_PROTOCOLS: tuple[str, ...] = tuple(carrier.name for carrier in CARRIERS if carrier.inventory)
"""The protocols whose servers are mail servers (an inventory entry each): SMTP, POP3, IMAP."""
INVENTORY_PROTOCOLS = frozenset(MAIL_PROTOCOLS)

PORT_PROTOCOLS: dict[int, str] = {port: carrier.name for carrier in CARRIERS for port in carrier.ports}
"""Every well-known port of every carrier: SMTP 25/465/587/2525, POP3 110/995, IMAP 143/993, HTTP 80/8080."""
MAIL_PORTS: frozenset[int] = frozenset(port for port, name in PORT_PROTOCOLS.items() if name in INVENTORY_PROTOCOLS)
"""SMTP 25/465/587/2525, POP3 110/995, IMAP 143/993."""
CARRIER_PORTS: frozenset[int] = frozenset(PORT_PROTOCOLS)
"""The ports read by default: the mail ports and HTTP's."""
# Well-known ports where TLS starts with the first byte (RFC 8314): SMTPS/submissions, POP3S, IMAPS.
IMPLICIT_TLS_PORTS: frozenset[int] = frozenset(port for carrier in CARRIERS for port in carrier.implicit_tls_ports)

__all__ = [
    "CARRIERS",
    "CARRIER_PORTS",
    "IMPLICIT_TLS_PORTS",
    "INVENTORY_PROTOCOLS",
    "MAIL_PORTS",
    "MAIL_PROTOCOLS",
    "MAX_FIRST_LINE",
    "NOT_MAIL",
    "PORT_PROTOCOLS",
    "PROTOCOLS",
    "SESSION_TYPES",
    "TUNNEL_SESSIONS",
    "Carrier",
    "identify",
]
