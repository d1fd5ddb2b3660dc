"""Clear-text credential severities as kinds.py declares them, read by the CLI (a real subprocess) from built
captures: a password or token sent is high; a CRAM-MD5 or APOP digest (the password never crossed, the digest is
crackable offline, as a NetNTLMv2 response rated medium) is medium; PLAIN's authorization identity and LOGIN's
initial response are read, each attempt with the server's verdict."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_relay_transactions import analyze

CLIENT = ("203.0.113.9", 40000)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def credentials(tmp_path: Path, name: str, port: int, lines: list[str]) -> list[dict[str, Any]]:
    turns = [(line.startswith("S: "), line[3:].encode() + b"\r\n") for line in lines]
    pcap = tmp_path / f"{name}.pcap"
    pcap.write_bytes(pcap_bytes(ethernet_frames(conversation_segments(turns, CLIENT, ("192.0.2.25", port)))))
    return [f for f in analyze(pcap, "--show-secrets") if f["type"] == "cleartext-credentials"]


def test_digests_are_medium_and_passwords_high(tmp_path: Path) -> None:
    smtp = [
        "S: 220 mx.contoso.com ESMTP",
        "C: EHLO client.example",
        "S: 250-mx.contoso.com",
        "S: 250 AUTH PLAIN LOGIN CRAM-MD5",
        "C: AUTH CRAM-MD5",
        "S: 334 " + b64("<1896.697170952@postoffice.example.net>"),
        "C: " + b64("tim b913a602c7eda7a495b4e6e7334d3890"),
        "S: 235 2.7.0 Authentication successful",
        "C: AUTH PLAIN " + b64("admin\0alice\0secret1"),
        "S: 535 5.7.8 Authentication failed",
        "C: AUTH LOGIN " + b64("bob"),
        "S: 334 UGFzc3dvcmQ6",
        "C: " + b64("hunter2"),
        "S: 235 2.7.0 Authentication successful",
        "C: QUIT",
        "S: 221 2.0.0 Bye",
    ]
    found = {f["mechanism"]: f for f in credentials(tmp_path, "smtp", 25, smtp)}
    seen = {m: (f["severity"], f["user"], f["password"], f["outcome"], f["secret_kind"]) for m, f in found.items()}
    assert seen == {
        "CRAM-MD5": ("medium", "tim", "b913a602c7eda7a495b4e6e7334d3890", "success", "cram-md5-digest"),
        "PLAIN": ("high", "alice", "secret1", "failure", "password"),
        "LOGIN": ("high", "bob", "hunter2", "success", "password"),
    }
    assert found["PLAIN"]["authzid"] == "admin"

    pop3 = [
        "S: +OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>",
        "C: APOP mrose c4c9334bac560ecc979e58001b3e22fb",
        "S: +OK maildrop has 1 message (369 octets)",
        "C: USER carol",
        "S: +OK",
        "C: PASS letmein",
        "S: -ERR [AUTH] invalid",
        "C: QUIT",
        "S: +OK bye",
    ]
    found = {f["mechanism"]: f for f in credentials(tmp_path, "pop3", 110, pop3)}
    assert (found["APOP"]["severity"], found["APOP"]["outcome"]) == ("medium", "success")
    assert (found["USER-PASS"]["severity"], found["USER-PASS"]["password"]) == ("high", "letmein")
