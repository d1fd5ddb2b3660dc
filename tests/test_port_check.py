"""Flows on mail ports whose first lines show another protocol (issue 14, item 3), and which first line of a
mid-stream pickup begins a line. Real Redis and vsftpd on mail ports: tests/test_verdicts_lab.py."""

from __future__ import annotations

import pytest

from dissectors.identify import port_refuted
from dissectors.line_kinds import line_start


@pytest.mark.parametrize(
    ("protocol", "server", "client", "client_first", "refuted"),
    [
        ("pop3", b"+PONG\r\n", b"*1\r\n$4\r\nPING\r\n", True, True),  # redis-cli: RESP
        ("pop3", b"+OK\r\n", b"SET user alice\r\n", True, True),  # an inline Redis command, the client first
        ("pop3", b"220 (vsFTPd 3.0.3)\r\n", b"", False, True),  # an FTP greeting on the POP3 port
        ("smtp", b"220 (vsFTPd 3.0.3)\r\n", b"USER anonymous\r\n", False, True),
        ("smtp", b"220 (vsFTPd 3.0.3)\r\n", b"AUTH TLS\r\n", False, True),
        ("smtp", b"220 host01\r\n", b"EHLO ws1\r\n", False, False),  # a bare host name, confirmed by EHLO
        ("smtp", b"220 mx.example.com ESMTP\r\n", b"", False, False),
        ("smtp", b"", b"EHLO ws1\r\n", True, False),  # one-sided: the client's side only
        ("smtp", b"", b"AUTH LOGIN\r\n", True, False),
        ("pop3", b"+OK\r\n", b"AUTH PLAIN\r\n", False, False),
        ("imap", b"* OK ready\r\n", b"a1 LOGIN alice secret\r\n", False, False),
        ("smtp", b"", b"\x16\x03\x01\x02\x00" + b"\x01" * 600, True, False),  # implicit TLS: the session's
        ("http", b"", b"GET /owa/ HTTP/1.1\r\n", True, False),
        ("smtp", b"220 host01\r\n", b"", False, None),  # the client's answer will tell
    ],
)
def test_port_refuted(protocol: str, server: bytes, client: bytes, client_first: bool, refuted: bool | None) -> None:
    assert port_refuted(protocol, server, client, client_first, partial=False) is refuted


def test_mid_stream_first_lines_are_not_refuted_by_the_server_alone() -> None:
    assert port_refuted("pop3", b"220 is a line of a message body\r\n", b"", False, partial=True) is False


@pytest.mark.parametrize(
    ("line", "starts"),
    [
        (b"AUTH LOGIN", True),
        (b"334 VXNlcm5hbWU6", True),
        (b"MAIL FROM:<a@b.example>", True),
        (b"+OK 2 messages", True),
        (b"* CAPABILITY IMAP4rev1", True),
        (b"a12 OK done", True),
        (b"GET /ews/ HTTP/1.1", True),
        (b"lfway through a line", False),
        (b"cmV0IQ==", False),
    ],
)
def test_line_start(line: bytes, starts: bool) -> None:
    assert line_start(line + b"\r") is starts
