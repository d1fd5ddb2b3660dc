"""Which mail protocol a flow speaks, from the first line each side sent.

A greeting is a candidate, confirmed or refuted by what follows, not decided at the end of its line:

* ``* OK`` / ``* PREAUTH`` / ``* BYE``: IMAP (no other line protocol greets with an untagged response).
* ``+OK``: POP3 when the greeting says so (``POP3``, ``ready``, an APOP timestamp ``<...@...>``) or the client answers
  with a POP3 command; anything else a client says refutes it (Redis answers ``+OK`` too, after the client's RESP
  command).
* ``220``: SMTP when the greeting names SMTP or a mail server, or the client answers EHLO/HELO/LHLO; a client that
  answers with FTP's USER/AUTH TLS/FEAT/SYST (or anything else) refutes it. Real greetings carry typos, bare host
  names and free text, so a plain ``220 mail01`` waits for the client.

HTTP, the carrier of NTLM on Exchange's web endpoints, is recognised by an HTTP/1.x request line from the client
(``GET /owa/ HTTP/1.1``) or a status line from the server (``HTTP/1.1 401 Unauthorized``), whatever it carries: which
requests carry NTLM is only known later, and the HTTP dissector reads every request cheaply (bodies are skipped, not
read). HTTP sessions make findings only when they leak something. A ``CONNECT`` line may carry a stray word before
its version (``CONNECT host:25 / HTTP/1.0``, as spam tools send it to open proxies).

A SOCKS 4, 4a or 5 handshake (:func:`dissectors.socks.recognise`: the client's request or greeting, and the proxy's
first answer) is ``"socks"``: what the proxy lets through is read as a session of its own, identified by these same
rules from its first lines.

A flow picked up mid-stream shows no greeting: a client command line that only mail protocols have (EHLO, MAIL
FROM, RCPT TO, CAPA, STLS, ``tag LOGIN``...) decides, and server lines that are replies of that protocol agree.
"""

from __future__ import annotations

import re

from dissectors.line_kinds import (
    HTTP_REQUEST,
    HTTP_STATUS,
    IMAP_TAGGED,
    MAX_FIRST_LINE,
    SHARED_COMMANDS,
    SMTP_REPLY,
    client_protocol,
    command_verb,
)
from dissectors.socks import recognise as socks_handshake

NOT_MAIL = ""

_SMTP_WORDS = re.compile(rb"E?SMTP|Postfix|Sendmail|Exim|Exchange|qmail|Haraka|\bmail|\bMail|\bMAIL|\bMX\b|\bmx")
_POP3_WORDS = re.compile(rb"POP3?\b|\bready\b|<[^<>@\s]{1,200}@[^<>\s]{1,200}>|Dovecot|Courier|Qpopper", re.IGNORECASE)

# Client lines looked at to confirm a greeting.
MAX_CONFIRMING_LINES = 8


def first_line(data: bytes) -> bytes | None:
    """The first line (without CR LF), or None while it is incomplete and shorter than :data:`MAX_FIRST_LINE`."""
    end = data.find(b"\n")
    if end < 0:
        return data[:MAX_FIRST_LINE] if len(data) >= MAX_FIRST_LINE else None
    return data[:end].rstrip(b"\r")


def greeting_candidate(line: bytes) -> str | None:
    """The protocol a server's first line proposes (the active probe, which then talks to confirm it)."""
    if line.startswith((b"* OK", b"* PREAUTH", b"* BYE")):
        return "imap"
    if line.startswith(b"+OK"):
        return "pop3"
    if line.startswith((b"220 ", b"220-")) or line == b"220":
        return "smtp"
    return None


def identify(server: bytes, client: bytes) -> str | None:
    """``"smtp"``, ``"pop3"``, ``"imap"``, ``"http"``, ``"socks"``; :data:`NOT_MAIL` when the first lines show
    something else; None while undecided (the module docstring gives the rules)."""
    if client[:1] in (b"\x04", b"\x05"):  # no line protocol's first byte: a SOCKS handshake, or nothing read
        socks = socks_handshake(server, client)
        if socks is not False:
            return None if socks is None else "socks"
    server_line = first_line(server) if server else None
    client_line = first_line(client) if client else None
    if http_lines(server_line, client_line):
        return "http"
    if server and server_line is None:
        return None  # the server's first line is still incomplete
    if server_line is None:
        return _from_client(client_line)
    candidate = greeting_candidate(server_line)
    if candidate == "imap":
        return "imap"
    if candidate == "pop3":
        return _confirm(candidate, bool(_POP3_WORDS.search(server_line)), client)
    if candidate == "smtp":
        return _confirm(candidate, bool(_SMTP_WORDS.search(server_line)), client)
    return _mid_stream(server_line, client_line)


def http_lines(server_line: bytes | None, client_line: bytes | None) -> bool:
    """Are these first lines (:func:`first_line`, None while incomplete) HTTP's: an HTTP/1.x request line from the
    client, or a status line from the server? No mail protocol's first line is either."""
    return (client_line is not None and bool(HTTP_REQUEST.match(client_line))) or (
        server_line is not None and bool(HTTP_STATUS.match(server_line))
    )


# Mail protocols whose server speaks first (a greeting) and whose port the check below may refute.
_SERVER_FIRST = frozenset({"smtp", "pop3", "imap"})
_PRINTABLE = re.compile(rb"[\x20-\x7e\t]*")
# A RESP array or bulk string header (Redis and its kin): no mail client's line looks like it.
_RESP = re.compile(rb"^[*$]\d{1,10}$")
# FTP commands (RFC 959, 2228, 2389, 2428, 3659): a client sending one after a 220 greeting talks to an FTP server.
_FTP_COMMANDS = frozenset(
    {b"USER", b"PASS", b"ACCT", b"SYST", b"FEAT", b"PWD", b"CWD", b"CDUP", b"EPSV", b"PASV", b"PORT", b"EPRT",
     b"TYPE", b"LIST", b"NLST", b"MLSD", b"MLST", b"OPTS", b"SITE", b"STOR", b"SIZE", b"MDTM", b"PBSZ", b"PROT"}
)  # fmt: skip


def port_refuted(protocol: str, server: bytes, client: bytes, client_first: bool, partial: bool) -> bool | None:
    """On a mail protocol's own port the port says the protocol unless the first lines show another one: True (a
    RESP client, a client that talks first with no mail command, an FTP greeting or ``+PONG`` on the POP3 or IMAP
    port, FTP commands answering a 220 that names no mail server), False (nothing says otherwise), None (undecided:
    the lines that would tell are still incomplete). Only signs of another protocol refute: typos, bare host names
    and one-sided or mid-stream captures keep the port's protocol."""
    if protocol not in _SERVER_FIRST:
        return False  # HTTP: the client speaks first, and the HTTP session reads whatever the port carries
    if client[:2] == b"\x16\x03" or server[:2] == b"\x16\x03":
        return False  # a TLS handshake: implicit TLS, the session's to record
    client_line = first_line(client) if client else None
    if client_line is not None and _PRINTABLE.fullmatch(client_line):
        if _RESP.match(client_line):
            return True
        if client_protocol(client_line) == protocol:
            return False
        if client_first and not partial and client_protocol(client_line) is None:
            return command_verb(client_line) not in SHARED_COMMANDS  # mail servers speak first
    server_line = first_line(server) if server else None
    if server_line is None:
        return None if client_line is None else False
    if partial:
        return False  # the first line seen of a server picked up mid-stream may be any line of its protocol
    if protocol in ("pop3", "imap"):
        return bool(SMTP_REPLY.match(server_line)) or (protocol == "pop3" and server_line.startswith(b"+PONG"))
    if protocol != "smtp" or greeting_candidate(server_line) != "smtp" or _SMTP_WORDS.search(server_line):
        return False
    lines = client.split(b"\n")[:-1]  # complete lines only
    for line in lines[:MAX_CONFIRMING_LINES]:
        line = line.rstrip(b"\r")
        if client_protocol(line) == "smtp":
            return False
        if command_verb(line) in _FTP_COMMANDS or line.upper() in (b"AUTH TLS", b"AUTH SSL"):
            return True
        if command_verb(line) not in SHARED_COMMANDS:
            return False
    return None if len(lines) < MAX_CONFIRMING_LINES else False


def _confirm(candidate: str, named: bool, client: bytes) -> str | None:
    """A greeting that names its protocol decides; else the client's first lines confirm or refute it."""
    if named:
        return candidate
    lines = client.split(b"\n")[:-1]  # complete lines only
    for line in lines[:MAX_CONFIRMING_LINES]:
        line = line.rstrip(b"\r")
        said = client_protocol(line)
        if said == candidate:
            return candidate
        if said is not None or command_verb(line) not in SHARED_COMMANDS:
            return NOT_MAIL
    return None if len(lines) < MAX_CONFIRMING_LINES else NOT_MAIL


def _from_client(client_line: bytes | None) -> str | None:
    """No server bytes yet (greeting lost, not captured, or a client that talks first): a command only a mail
    protocol has confirms mail; nothing else denies it. POP3's USER and PASS are FTP's too: the server decides."""
    if client_line is None:
        return None
    said = client_protocol(client_line)
    return None if said == "pop3" and command_verb(client_line) in (b"USER", b"PASS") else said


def _mid_stream(server_line: bytes, client_line: bytes | None) -> str | None:
    """A server line that is no greeting: a reply of the protocol the client's command belongs to, or not mail."""
    said = client_protocol(client_line) if client_line is not None else None
    if said == "smtp" and SMTP_REPLY.match(server_line):
        return "smtp"
    if said == "pop3" and server_line.startswith((b"+OK", b"-ERR", b"+ ")):
        return "pop3"
    if said == "imap" and (server_line.startswith((b"* ", b"+ ")) or IMAP_TAGGED.match(server_line)):
        return "imap"
    if client_line is None and (SMTP_REPLY.match(server_line) or server_line.startswith(b"-ERR")):
        return None  # a mid-stream reply: the client's next command says whose
    return NOT_MAIL
