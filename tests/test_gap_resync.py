"""What follows lost bytes (a gap) is skipped to the first line end once, and a line whole after the gap is read.

Before, the capture layer skipped to the first newline after a gap and the session's line reading skipped again up
to the next one: two lines lost where the gap cut one (the EHLO reply lost, then ``334 VXNlcm5hbWU6`` and
``334 UGFzc3dvcmQ6``: both skipped, and the ``235`` that followed could not be the login's verdict). And bytes right
after a gap were always skipped to their first newline, even when the gap ended where a line began. Now the session
skips once, and a first line that looks like one of a carried protocol is read whole; being maybe a cut line's tail,
a prompt in it does not end the doubt the gap left (dissectors.linebuffer.LineBuffer.resync).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from dissectors import events as ev
from dissectors.smtp import SmtpSession
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.capture import analyze_file
from passive.results.records import finding_record
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_relay_transactions import CLIENT, SERVER, turns
from tests.test_smtp_gap_login import SCRIPT

IMAP_SERVER = (SERVER[0], 143)
PLAIN = base64.b64encode(b"\0alice\0s3cret!").decode()


def findings(path: Path, kind: str) -> list[dict[str, Any]]:
    analysis = Analysis(AnalysisOptions())
    analyze_file(path, analysis.handler_factory, analysis.options.capture_options())
    return [record for record in map(finding_record, analysis.findings) if record["type"] == kind]


def capture(tmp_path: Path, steps: list[tuple[bool, bytes]], lost: bytes, server: tuple[str, int]) -> Path:
    """One connection's capture, the segment carrying ``lost`` left out (a gap)."""
    segments = conversation_segments(steps, CLIENT, server, acks=True)
    kept = [segment for segment in segments if lost not in segment[5]]
    assert len(kept) == len(segments) - 1
    path = tmp_path / "gap.pcap"
    path.write_bytes(pcap_bytes(ethernet_frames(kept)))
    return path


def test_the_verdict_after_two_prompts_that_followed_the_gap_is_read(tmp_path: Path) -> None:
    """The EHLO reply lost: the first 334 after it is read whole (or skipped), the second shows where the server is,
    and the 235 is the login's verdict."""
    [found] = findings(capture(tmp_path, turns(SCRIPT), b"250-mx", SERVER), "cleartext-credentials")
    assert (found["user"], found["outcome"]) == ("alice", "success")


def test_a_gap_inside_a_client_line_loses_that_line_only(tmp_path: Path) -> None:
    """The client's bytes lost inside a line: its tail is skipped, the LOGIN on the next line is read."""
    steps = [
        (True, b"* OK IMAP4rev1 ready\r\n"),
        (False, b"A0 CAPABILITY\r\nA1 NOOP and some"),
        (False, b" more words\r\nA2 LOGIN alice s3cret!\r\n"),
        (True, b"A2 OK LOGIN completed\r\n"),
    ]
    [found] = findings(capture(tmp_path, steps, b"A0 CAPABILITY", IMAP_SERVER), "cleartext-credentials")
    assert found["user"] == "alice"


def test_a_command_right_after_the_gap_is_read(tmp_path: Path) -> None:
    """The gap ends where a line begins: the LOGIN is the first line after it, and is read."""
    steps = [
        (True, b"* OK IMAP4rev1 ready\r\n"),
        (False, b"A1 CAPABILITY\r\n"),
        (False, b"A2 LOGIN alice s3cret!\r\n"),
        (True, b"* CAPABILITY IMAP4rev1\r\nA1 OK done\r\nA2 OK LOGIN completed\r\n"),
    ]
    [found] = findings(capture(tmp_path, steps, b"A1 CAPABILITY", IMAP_SERVER), "cleartext-credentials")
    assert found["user"] == "alice"


def test_a_prompt_that_may_be_a_cut_lines_tail_does_not_end_the_doubt() -> None:
    """``...limit of 10334 bytes`` cut before ``334``: read whole, it looks like a prompt; it shows nothing, and
    the 235 after it may answer a command sent before the gap: no verdict."""
    session = SmtpSession()
    events = session.receive(ev.Side.SERVER, b"220 mx ESMTP\r\n", 1) + session.receive(ev.Side.CLIENT, b"EHLO c\r\n", 2)
    events += session.receive(ev.Side.CLIENT, b"AUTH PLAIN\r\n", 3) + session.gap(ev.Side.SERVER, 40, 4)
    events += session.receive(ev.Side.SERVER, b"334 bytes\r\n", 4)
    events += session.receive(ev.Side.CLIENT, f"{PLAIN}\r\n".encode(), 5)
    events += session.receive(ev.Side.SERVER, b"235 2.7.0 Authentication successful\r\n", 6)
    assert [event.password for event in events if isinstance(event, ev.Credentials)] == ["s3cret!"]
    assert not [event for event in events if isinstance(event, ev.AuthResult)]


def test_only_the_first_chunk_after_resync_may_be_taken_whole() -> None:
    from dissectors.linebuffer import LineBuffer, Resumed

    buffer = LineBuffer()
    buffer.resync()
    assert [type(item).__name__ for item in buffer.feed(b"334 VXNlcm5hbWU6\r\n334 x\r\n")] == ["Resumed", "Line"]
    buffer.resync()
    assert [item.text for item in buffer.feed(b"VXNlcm5hbWU6\r\n334 x\r\n")] == ["334 x"]  # no line start: skipped
    buffer.resync()
    assert list(buffer.feed(b"334 no line end yet")) == []
    assert [item.text for item in buffer.feed(b"\r\n334 x\r\n")] == ["334 x"]  # the cut line skipped, once
    assert not any(isinstance(item, Resumed) for item in buffer.feed(b"334 y\r\n"))
