"""Whatever a client sends first, once the server has refused it, a login that follows is seen.

The property the evasions of the second campaign broke: an ``APPEND {4294967295}`` the server refused swallowed the
next LOGIN, a ``\\x16\\x03\\x01`` before the greeting made the session "implicit TLS", lines after a refused DATA
were message text. The ``canary`` harness (:mod:`fuzz.harnesses`) builds a session from its input: the client's
fuzzed bytes (before or after the greeting), a refusal from the server for each of their lines, then a login with
the user name ``canary`` and the server accepting it; the dissector must report the canary's credentials.

Only what the server reads without a say is taken out of the client's bytes, since there the server swallows the
login too: a non-synchronising IMAP literal becomes a synchronising one, a BDAT chunk a NOOP.
"""

from __future__ import annotations

import base64

from dissectors import events as ev
from dissectors.registry import SESSION_TYPES

C, S = ev.Side.CLIENT, ev.Side.SERVER
PROTOCOLS = ("smtp", "pop3", "imap")
MAX_PREFIX = 2048
GREETINGS = {"smtp": b"220 mx.example.com ESMTP\r\n", "pop3": b"+OK ready\r\n", "imap": b"* OK ready\r\n"}
CANARY = {
    "smtp": [(C, b"AUTH PLAIN " + base64.b64encode(b"\0canary\0s3cret") + b"\r\n"), (S, b"235 2.7.0 ok\r\n")],
    "pop3": [(C, b"USER canary\r\n"), (S, b"+OK\r\n"), (C, b"PASS s3cret\r\n"), (S, b"+OK logged in\r\n")],
    "imap": [(C, b"zz9 LOGIN canary s3cret\r\n"), (S, b"zz9 OK logged in\r\n")],
}


def _sanitised(protocol: str, prefix: bytes) -> bytes:
    """The client's bytes without what the server reads whatever it answers (a refusal cannot give them back)."""
    if protocol == "imap":
        return prefix.replace(b"+}", b"}")
    if protocol == "smtp":
        return prefix.replace(b"BDAT", b"NOOP").replace(b"bdat", b"noop")
    return prefix


def _refusals(protocol: str, prefix: bytes) -> bytes:
    """One refusal per client line, in order (IMAP: tagged with the line's first word)."""
    out = []
    for raw in prefix.split(b"\n")[:-1]:
        if protocol == "smtp":
            out.append(b"500 5.5.2 refused\r\n")
        elif protocol == "pop3":
            out.append(b"-ERR refused\r\n")
        else:
            words = raw.rstrip(b"\r").decode("utf-8", "replace").split()
            tag = words[0] if words and not set(words[0]) & {"*", "+"} else "*"  # a tag holds neither (RFC 9051)
            out.append(tag.encode("utf-8") + b" NO refused\r\n")
    return b"".join(out)


def conversation(data: bytes) -> tuple[str, list[tuple[ev.Side, bytes]]]:
    """The protocol and the two sides' chunks an input stands for."""
    protocol = PROTOCOLS[data[0] % 3] if data else "smtp"
    client_first = len(data) > 1 and bool(data[1] & 1)
    prefix = _sanitised(protocol, data[2 : 2 + MAX_PREFIX]) + b"\r\n"
    greeting = [(S, GREETINGS[protocol])]
    script = [(C, prefix), *greeting] if client_first else [*greeting, (C, prefix)]
    return protocol, [*script, (S, _refusals(protocol, prefix)), *CANARY[protocol]]


def canary_seen(data: bytes) -> bool:
    protocol, script = conversation(data)
    session = SESSION_TYPES[protocol]()
    events: list[ev.Event] = []
    for frame, (side, chunk) in enumerate(script, start=1):
        events += session.receive(side, chunk, frame, float(frame))
    events += session.close()
    return any(isinstance(e, ev.Credentials) and e.user == "canary" for e in events)


# The red team's inputs and the DATA case, as seeds: protocol byte, order byte, the client's bytes.
SEEDS = [
    b"\x02\x00a1 APPEND INBOX {4294967295}\r\n",
    b"\x02\x00a1 APPEND INBOX {4294967295}\r\na2 NOOP",
    b"\x02\x01\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03",
    b"\x00\x01\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03\r\nEHLO c",
    b"\x01\x01\x16\x03\x01\x00\x05",
    b"\x00\x00DATA\r\nsome text\r\n",
    b"\x02\x00a1 LOGIN {5}\r\nalice {6}\r\nsecret",
    b"\x00\x00AUTH LOGIN\r\nYWxpY2U=",
    b"\x01\x00AUTH NTLM\r\nCAPA",
]
