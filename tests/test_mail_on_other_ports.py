"""A carrier's port speaking another carried protocol: what the first lines say is read, as on any other port.

Before, the port check could only name HTTP: SMTP on the IMAP port was refused (an SMTP reply refutes IMAP) and
dropped, IMAP or POP3 on port 25 was read as SMTP (its credentials lost), and on HTTP's ports (80, 8080) a mail
server's session went to the HTTP dissector, which found nothing in it. Greetings cut into one-byte segments decide
as whole ones; FTP and Redis on mail ports stay no mail, HTTP on port 25 stays HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes, write

ROOT = Path(__file__).resolve().parents[1]
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]

SMTP = [
    (True, b"220 mx.example.org ESMTP Postfix\r\n"),
    (False, b"EHLO me\r\n"),
    (True, b"250-mx.example.org\r\n250 AUTH PLAIN\r\n"),
    (False, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
    (True, b"235 ok\r\n"),
]
POP3 = [
    (True, b"+OK POP3 ready\r\n"),
    (False, b"USER alice\r\n"),
    (True, b"+OK\r\n"),
    (False, b"PASS s3cret\r\n"),
    (True, b"+OK logged in\r\n"),
]
IMAP = [
    (True, b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"),
    (False, b"a1 LOGIN alice s3cret\r\n"),
    (True, b"a1 OK done\r\n"),
]
FTP = [
    (True, b"220 (vsFTPd 3.0.3)\r\n"),
    (False, b"USER bob\r\n"),
    (True, b"331 Please specify the password.\r\n"),
    (False, b"PASS hunter2\r\n"),
    (True, b"230 Login successful.\r\n"),
]
HTTP_BASIC = [
    (False, b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Ym9iOmh1bnRlcjI=\r\n\r\n"),
    (True, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
]


def findings(tmp_path: Path, turns: list[tuple[bool, bytes]], port: int, piece: int | None, *args: str) -> set:
    segments = conversation_segments(turns, ("10.5.0.1", 40000), ("10.5.0.2", port), piece=piece)
    capture = write(tmp_path / f"flow-{port}.pcap", pcap_bytes(ethernet_frames(segments)))
    done = subprocess.run([*LEAKSCOPE, "analyze", "--format", "jsonl", *args, str(capture)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    return {(r["type"], r["protocol"], r["server"]) for r in records if r["type"] != "summary"}


@pytest.mark.parametrize("piece", [None, 1], ids=["whole", "one-byte-segments"])
@pytest.mark.parametrize("mode", [[], ["--ports-only"]], ids=["every-port", "ports-only"])
@pytest.mark.parametrize(
    ("turns", "protocol", "port"),
    [(SMTP, "smtp", 143), (SMTP, "smtp", 110), (IMAP, "imap", 25), (POP3, "pop3", 25), (SMTP, "smtp", 80),
     (SMTP, "smtp", 8080), (POP3, "pop3", 80), (IMAP, "imap", 8080)],
    ids=["smtp-143", "smtp-110", "imap-25", "pop3-25", "smtp-80", "smtp-8080", "pop3-80", "imap-8080"],
)  # fmt: skip
def test_mail_on_another_carriers_port_is_read_as_what_it_says(
    tmp_path: Path, turns: list[tuple[bool, bytes]], protocol: str, port: int, piece: int | None, mode: list[str]
) -> None:
    found = findings(tmp_path, turns, port, piece, *mode)
    server = f"10.5.0.2:{port}"
    assert ("mail-service", protocol, server) in found
    assert ("cleartext-credentials", protocol, server) in found
    assert {p for _kind, p, _server in found} == {protocol}


@pytest.mark.parametrize("piece", [None, 1], ids=["whole", "one-byte-segments"])
def test_other_protocols_on_mail_ports_stay_what_they_are(tmp_path: Path, piece: int | None) -> None:
    assert findings(tmp_path, FTP, 25, piece) == set()
    assert findings(tmp_path, HTTP_BASIC, 25, piece) == {("cleartext-credentials", "http", "10.5.0.2:25")}
    assert findings(tmp_path, HTTP_BASIC, 8080, piece) == {("cleartext-credentials", "http", "10.5.0.2:8080")}
