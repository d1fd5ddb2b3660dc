"""Evidence quoting lines of a multi-line answer names the frames that carried those lines.

An EHLO reply's AUTH line, or a CAPA list's SASL and USER lines, are quoted as the auth-methods evidence. Before,
the evidence was placed at the answer's last line (``250 8BITMIME``, the ``.`` of the list): when the answer took
several packets, the named frames did not hold the quoted line. Each case is read through the CLI from a capture
whose answers are cut into three-byte segments; the expected frames are those the quoted line's bytes were sent in.
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
    (True, b"220 mx.example.org ESMTP\r\n"),
    (False, b"EHLO me\r\n"),
    (True, b"250-mx.example.org\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"),
    (False, b"QUIT\r\n"),
]
POP3 = [
    (True, b"+OK POP3 ready\r\n"),
    (False, b"CAPA\r\n"),
    (True, b"+OK\r\nTOP\r\nUSER\r\nSASL PLAIN LOGIN\r\nUIDL\r\n.\r\n"),
    (False, b"QUIT\r\n"),
]


def frames_of(segments: list, server_port: int, first: bytes, last: bytes) -> tuple[int, int]:
    """The frames (1-based) carrying the first byte of ``first`` and the line end after ``last`` in the server's
    bytes."""
    stream, owner = b"", []
    for number, (src, _dst, _seq, _ack, _flags, payload) in enumerate(segments, 1):
        if src[1] == server_port:
            stream += payload
            owner += [number] * len(payload)
    start = stream.index(first)
    end = stream.index(b"\n", stream.index(last, start))
    return owner[start], owner[end]


@pytest.mark.parametrize(
    ("turns", "port", "first", "last", "quoted"),
    [(SMTP, 25, b"250-AUTH", b"250-AUTH", "250-AUTH PLAIN LOGIN"),
     (POP3, 110, b"USER", b"SASL", "USER\nSASL PLAIN LOGIN")],
    ids=["smtp-ehlo", "pop3-capa"],
)  # fmt: skip
def test_auth_methods_evidence_names_the_frames_of_the_quoted_lines(
    tmp_path: Path, turns: list, port: int, first: bytes, last: bytes, quoted: str
) -> None:
    segments = conversation_segments(turns, ("10.6.0.1", 40000), ("10.6.0.2", port), piece=3)
    capture = write(tmp_path / "answer.pcap", pcap_bytes(ethernet_frames(segments)))
    done = subprocess.run([*LEAKSCOPE, "analyze", "--format", "jsonl", str(capture)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    [evidence] = next(r for r in records if r["type"] == "auth-methods")["evidence"]
    began, ended = frames_of(segments, port, first, last)
    assert evidence["line"] == quoted
    assert (evidence["first_frame"], evidence["frame"]) == (began, ended)
