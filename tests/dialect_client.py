"""Mail clients as real software speaks, for the lab's servers: run in the client namespace as
``python3 tests/dialect_client.py DIALOGUE SERVER USER PASSWORD DOMAIN``.

Each dialogue is one real connection whose NTLM messages pyspnego computes from the server's real CHALLENGE:

- ``imap-id-sasl-ir``: ID as Thunderbird sends it, then ``AUTHENTICATE NTLM`` with its NEGOTIATE as the initial
  response (RFC 4959 SASL-IR), then LOGOUT;
- ``pop3-auth-list-ntlm``: ``AUTH`` without an argument (the mechanism list), ``CAPA``, ``AUTH NTLM`` answered with
  ``+`` prompts (RFC 5034), then QUIT;
- ``smtp-pipelined-ntlm``: EHLO and ``AUTH NTLM`` with its initial response in one segment (RFC 2920), then QUIT.

Every line read is printed (``S: ...``), so a failing test shows the dialogue.
"""

from __future__ import annotations

import base64
import socket
import sys
from typing import Any

import spnego

# Seconds a line may take to come.
TIMEOUT = 15
# The ID Thunderbird 115 sends (RFC 2971).
THUNDERBIRD_ID = b'("name" "Thunderbird" "version" "115.3.1" "os" "Windows")'


class Connection:
    def __init__(self, server: str, port: int) -> None:
        self.socket = socket.create_connection((server, port), timeout=TIMEOUT)
        self.buffer = b""

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            data = self.socket.recv(65536)
            if not data:
                raise EOFError(f"connection closed; unread: {self.buffer!r}")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        print("S:", line.rstrip(b"\r").decode("latin-1"), flush=True)
        return line.rstrip(b"\r")

    def until(self, prefix: bytes) -> bytes:
        while not (line := self.line()).startswith(prefix):
            pass
        return line

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def close(self) -> None:
        self.socket.close()


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _answer(conn: Connection, ntlm: Any, challenge: bytes, prefix: bytes) -> None:
    """The AUTHENTICATE message answering the server's CHALLENGE line (``prefix`` then base64)."""
    conn.send(_b64(ntlm.step(base64.b64decode(challenge.removeprefix(prefix).strip())) or b"") + b"\r\n")


def _verdict_then_quit(conn: Connection) -> None:
    """The server's one-line verdict on the exchange, then QUIT and its answer."""
    conn.line()
    conn.send(b"QUIT\r\n")
    conn.line()
    conn.close()


def imap_id_sasl_ir(server: str, user: str, password: str, domain: str) -> None:
    ntlm = spnego.client(f"{domain}\\{user}", password, protocol="ntlm")
    imap = Connection(server, 143)
    imap.line()
    imap.send(b"a0 ID " + THUNDERBIRD_ID + b"\r\n")
    imap.until(b"a0 ")
    imap.send(b"a1 AUTHENTICATE NTLM " + _b64(ntlm.step() or b"") + b"\r\n")
    challenge = imap.until(b"+")
    _answer(imap, ntlm, challenge, b"+")
    imap.until(b"a1 ")
    imap.send(b"a2 LOGOUT\r\n")
    imap.until(b"a2 ")
    imap.close()


def pop3_auth_list_ntlm(server: str, user: str, password: str, domain: str) -> None:
    ntlm = spnego.client(f"{domain}\\{user}", password, protocol="ntlm")
    pop3 = Connection(server, 110)
    pop3.line()
    for command in (b"AUTH\r\n", b"CAPA\r\n"):
        pop3.send(command)
        pop3.until(b".")
    pop3.send(b"AUTH NTLM\r\n")
    pop3.until(b"+")
    pop3.send(_b64(ntlm.step() or b"") + b"\r\n")
    challenge = pop3.until(b"+")
    _answer(pop3, ntlm, challenge, b"+")
    _verdict_then_quit(pop3)


def smtp_pipelined_ntlm(server: str, user: str, password: str, domain: str) -> None:
    ntlm = spnego.client(f"{domain}\\{user}", password, protocol="ntlm")
    smtp = Connection(server, 25)
    smtp.line()
    smtp.send(b"EHLO ws.leakscope.test\r\nAUTH NTLM " + _b64(ntlm.step() or b"") + b"\r\n")
    challenge = smtp.until(b"334 ")
    _answer(smtp, ntlm, challenge, b"334 ")
    _verdict_then_quit(smtp)


DIALOGUES = {
    "imap-id-sasl-ir": imap_id_sasl_ir,
    "pop3-auth-list-ntlm": pop3_auth_list_ntlm,
    "smtp-pipelined-ntlm": smtp_pipelined_ntlm,
}

if __name__ == "__main__":
    name, *arguments = sys.argv[1:]
    DIALOGUES[name](*arguments)
