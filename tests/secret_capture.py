"""A capture that puts one known secret in every place a secret can appear on the wire, for tests that scan every
default output for it.

Sessions (each its own TCP connection, crafted with scapy):

- SMTP: a client that sends ``AUTH PLAIN`` before the greeting (the session's first event), a pipelined AUTH
  PLAIN, AUTH LOGIN (password as its own base64 line), an AUTH sent again mid-exchange, a malformed base64 PLAIN
  message, 130 pipelined commands with the secret among them, an NTLM AUTHENTICATE whose NT response is the secret;
- POP3: USER/PASS picked up mid-session (no SYN, no greeting: ``PASS`` is the first line), APOP;
- IMAP: ``a1 LOGIN bob <secret>`` picked up mid-session, LOGIN with a quoted secret, AUTHENTICATE PLAIN with the
  initial response, an XOAUTH2 bearer token;
- HTTP: an NTLM exchange on port 80 (the secret in the request's query, the AUTHENTICATE whose NT response is the
  secret), Basic and Proxy-Authorization Basic on 8080 with keep-alive, and a session picked up mid-request whose
  first line is the ``Authorization: Basic`` header.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterable
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from dissectors import ntlmssp

SECRET = "Gr33n-Fl4mingo&Secret"
USER = "bob"
NT_RESPONSE = bytes.fromhex("5ec7e7c0ffee0ddba11ca7f00d5eedbeef0123456789abcd")  # 24 bytes: NTLMv1


def forms() -> dict[str, str]:
    """Every way the secret may be written in an output: as sent, base64 of each SASL message, hex."""
    plain = f"\0{USER}\0{SECRET}".encode()
    authenticate = _authenticate()
    return {
        "secret": SECRET,
        "base64": base64.b64encode(SECRET.encode()).decode(),
        "plain message": base64.b64encode(plain).decode(),
        "plain authzid": base64.b64encode(f"{USER}\0{USER}\0{SECRET}".encode()).decode(),
        "hex": SECRET.encode().hex(),
        "nt response": NT_RESPONSE.hex(),
        "nt response base64": base64.b64encode(NT_RESPONSE).decode(),
        "authenticate": base64.b64encode(authenticate).decode(),
        "xoauth2": base64.b64encode(f"user={USER}\x01auth=Bearer {SECRET}\x01\x01".encode()).decode(),
        "basic": base64.b64encode(f"{USER}:{SECRET}".encode()).decode(),
    }


def _authenticate() -> bytes:
    return ntlmssp.build_authenticate(USER, "CORP", "WS1", lm_response=bytes(24), nt_response=NT_RESPONSE)


def _challenge() -> bytes:
    return ntlmssp.build_challenge(b"\x01\x02\x03\x04\x05\x06\x07\x08", "CORP", {"netbios_domain": "CORP"})


Exchange = list[tuple[str, bytes]]  # ("c" | "s", bytes)


def _b64(data: bytes | str) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


def _sessions() -> list[tuple[int, bool, Exchange]]:
    """(server port, starts with a SYN, exchange)."""
    plain = _b64(f"\0{USER}\0{SECRET}")
    smtp_greeting = ("s", b"220 mx.example.test ESMTP\r\n")
    ehlo = [("c", b"EHLO c\r\n"), ("s", b"250-mx.example.test\r\n250 AUTH PLAIN LOGIN NTLM\r\n")]
    flood = b"".join(b"NOOP\r\n" for _ in range(130)) + b"AUTH PLAIN " + plain + b"\r\n"
    return [
        (25, True, [("c", b"AUTH PLAIN " + plain + b"\r\n"), smtp_greeting, ("s", b"235 ok\r\n")]),
        (25, True, [smtp_greeting, ("c", b"EHLO c\r\nAUTH PLAIN " + plain + b"\r\nMAIL FROM:<a@b>\r\n"),
                    ("s", b"250 mx\r\n235 ok\r\n250 ok\r\n")]),
        (25, True, [smtp_greeting, *ehlo, ("c", b"AUTH LOGIN\r\n"), ("s", b"334 VXNlcm5hbWU6\r\n"),
                    ("c", _b64(USER) + b"\r\n"), ("s", b"334 UGFzc3dvcmQ6\r\n"), ("c", _b64(SECRET) + b"\r\n"),
                    ("s", b"535 no\r\n")]),
        (25, True, [smtp_greeting, ("c", b"AUTH PLAIN\r\n"), ("s", b"334 \r\n"),
                    ("c", b"AUTH PLAIN " + plain + b"\r\n"), ("s", b"235 ok\r\n")]),
        (25, True, [smtp_greeting, ("c", b"AUTH PLAIN " + plain[:-2] + b" =" + plain[-2:] + b"=\r\n"),
                    ("s", b"501 bad\r\n"), ("c", b"AUTH PLAIN " + _b64(f"{USER}\0{SECRET}") + b"\r\n"),
                    ("s", b"535 no\r\n")]),
        (25, True, [smtp_greeting, ("c", flood), ("s", b"250 ok\r\n" * 131)]),
        (25, True, [smtp_greeting, *ehlo, ("c", b"AUTH NTLM\r\n"), ("s", b"334 \r\n"),
                    ("c", _b64(ntlmssp.build_negotiate()) + b"\r\n"), ("s", b"334 " + _b64(_challenge()) + b"\r\n"),
                    ("c", _b64(_authenticate()) + b"\r\n"), ("s", b"235 ok\r\n")]),
        (110, False, [("c", b"PASS " + SECRET.encode() + b"\r\n"), ("s", b"+OK logged in\r\n")]),
        (110, True, [("s", b"+OK POP3 ready <1.2@pop>\r\n"), ("c", b"USER bob\r\n"), ("s", b"+OK\r\n"),
                     ("c", b"PASS " + SECRET.encode() + b"\r\n"), ("s", b"+OK\r\n"),
                     ("c", b"APOP bob " + SECRET.encode() + b"\r\n"), ("s", b"-ERR\r\n")]),
        (143, False, [("c", f"a1 LOGIN {USER} {SECRET}\r\n".encode()), ("s", b"a1 OK done\r\n")]),
        (143, True, [("s", b"* OK IMAP ready\r\n"), ("c", f'a1 LOGIN "{USER}" "{SECRET}"\r\n'.encode()),
                     ("s", b"a1 NO bad\r\n"), ("c", b"a2 AUTHENTICATE PLAIN " + plain + b"\r\n"),
                     ("s", b"a2 OK done\r\n"),
                     ("c", b"a3 AUTHENTICATE XOAUTH2 " + _b64(f"user={USER}\x01auth=Bearer {SECRET}\x01\x01")
                      + b"\r\n"), ("s", b"a3 OK done\r\n")]),
        *_http_sessions(),
    ]


def _http_sessions() -> list[tuple[int, bool, Exchange]]:
    basic = b"Authorization: Basic " + _b64(f"{USER}:{SECRET}") + b"\r\n"
    unauthorized = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n"
    return [
        (80, True, [("c", b"GET /EWS/Exchange.asmx?token=" + SECRET.encode() + b" HTTP/1.1\r\nHost: mail\r\n"
                          b"Authorization: NTLM " + _b64(ntlmssp.build_negotiate()) + b"\r\n\r\n"),
                    ("s", b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM " + _b64(_challenge())
                          + b"\r\nContent-Length: 0\r\n\r\n"),
                    ("c", b"GET /EWS/Exchange.asmx HTTP/1.1\r\nHost: mail\r\nAuthorization: NTLM "
                          + _b64(_authenticate()) + b"\r\n\r\n"),
                    ("s", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")]),
        (8080, True, [("c", b"GET /owa/ HTTP/1.1\r\nHost: mail\r\n" + basic + b"\r\n"), ("s", unauthorized),
                      ("c", b"GET /owa/ HTTP/1.1\r\nHost: mail\r\nProxy-" + basic + b"\r\n"),
                      ("s", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]),
        (80, False, [("c", basic + b"\r\n"), ("s", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]),
    ]


def _packets(number: int, port: int, syn: bool, exchange: Exchange, clock: Iterable[float]) -> list:
    client, server, cport = "192.0.2.10", f"198.51.100.{number}", 40000 + number
    seq = {"c": 1000, "s": 5000}
    stamps = iter(clock)
    out = []

    def segment(side: str, flags: str, payload: bytes = b"") -> None:
        src, dst, sport, dport = (client, server, cport, port) if side == "c" else (server, client, port, cport)
        other = "s" if side == "c" else "c"
        ether = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        header = TCP(sport=sport, dport=dport, flags=flags, seq=seq[side], ack=seq[other])
        packet = ether / IP(src=src, dst=dst) / header
        if payload:
            packet = packet / Raw(payload)
        packet.time = next(stamps)
        out.append(packet)
        seq[side] += len(payload) + (1 if "S" in flags or "F" in flags else 0)

    if syn:
        segment("c", "S")
        segment("s", "SA")
        segment("c", "A")
    for side, data in exchange:
        segment(side, "PA", data)
    segment("c", "FA")
    segment("s", "FA")
    segment("c", "A")
    return out


def write_capture(path: Path) -> Path:
    clock = itertools.count(1_800_000_000.0, 0.01)
    packets = []
    for number, (port, syn, exchange) in enumerate(_sessions(), start=1):
        packets += _packets(number, port, syn, exchange, clock)
    wrpcap(str(path), packets)
    return path
