"""Client bytes lost inside an SMTP message leave the rest of the message a message.

Before, a gap in the client's bytes after the 354 ended the message: every line after it was read as a command, so
a message quoting an SMTP dialogue (an ``AUTH PLAIN`` line, a ``RCPT TO`` to a foreign domain) made clear-text
credentials nobody sent and an accepted recipient nobody asked for (the server's 250 for the message answered it),
and a large attachment made thousands of ``too_many_pending_commands`` anomalies (a real capture of an Exchange
server, 4,258 of them). Now the text after the gap is skipped as the message's, up to its end line; when the end
line itself was lost, the server's next reply shows it (a server answers nothing inside a message), and what the
client sends after that reply is commands again.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from dissectors import events as ev
from dissectors.smtp import SmtpSession
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_relay_transactions import CLIENT, SERVER, analyze, relays, turns

C, S = ev.Side.CLIENT, ev.Side.SERVER
QUOTED_AUTH = b"AUTH PLAIN " + base64.b64encode(b"\0mallory\0hunter2")


def opened_message() -> tuple[SmtpSession, list[ev.Event]]:
    """A session inside a message to a local recipient: the 354 was read, a first line of the message too."""
    session = SmtpSession()
    events: list[ev.Event] = []
    turns = [
        (S, b"220 mx.example.com ESMTP\r\n"),
        (C, b"EHLO client.example\r\n"),
        (S, b"250-mx.example.com\r\n250 AUTH PLAIN\r\n"),
        (C, b"MAIL FROM:<a@example.com>\r\n"),
        (S, b"250 ok\r\n"),
        (C, b"RCPT TO:<b@example.com>\r\n"),
        (S, b"250 ok\r\n"),
        (C, b"DATA\r\n"),
        (S, b"354 go ahead\r\n"),
        (C, b"Subject: a transcript\r\n\r\nfirst line\r\n"),
    ]
    for frame, (side, data) in enumerate(turns, 1):
        events += session.receive(side, data, frame, float(frame))
    return session, events


def kinds(events: list[ev.Event]) -> list[str]:
    return [type(event).__name__ for event in events]


def test_text_after_a_gap_inside_a_message_is_not_read_as_commands() -> None:
    session, events = opened_message()
    events += session.gap(C, 1460, 11, 11.0)
    text = b"the tail of a line\r\n" + QUOTED_AUTH + b"\r\nRCPT TO:<victim@elsewhere.net>\r\n.\r\n"
    events += session.receive(C, text, 12, 12.0)
    events += session.receive(S, b"250 2.0.0 queued\r\n", 13, 13.0)
    events += session.receive(C, b"QUIT\r\n", 14, 14.0)
    events += session.receive(S, b"221 bye\r\n", 15, 15.0)
    events += session.close(16, 16.0)
    after_gap = kinds(events[kinds(events).index("Anomaly") :])
    assert "Credentials" not in after_gap and "AuthStart" not in after_gap
    assert [e.address for e in events if isinstance(e, ev.RcptTo)] == ["b@example.com"]
    [end] = [e for e in events if isinstance(e, ev.MessageEnd)]
    assert end.accepted and end.evidence.frame == 12  # the 250 answered the message's end line
    assert "Quit" in after_gap
    assert [e.code for e in events if isinstance(e, ev.Anomaly)] == ["gap"]


def test_a_dot_right_after_the_gap_is_inside_a_line_and_ends_nothing() -> None:
    session, events = opened_message()
    events += session.gap(C, 700, 11, 11.0)
    events += session.receive(C, b".\r\nRCPT TO:<victim@elsewhere.net>\r\n.\r\n", 12, 12.0)
    events += session.receive(S, b"250 queued\r\n", 13, 13.0)
    assert [e.address for e in events if isinstance(e, ev.RcptTo)] == ["b@example.com"]
    assert [e.accepted for e in events if isinstance(e, ev.MessageEnd)] == [True]


def test_an_end_line_lost_with_the_gap_is_shown_by_the_servers_reply() -> None:
    session, events = opened_message()
    events += session.gap(C, 1460, 11, 11.0)  # the message's last segment, its end line with it
    events += session.receive(S, b"250 2.0.0 queued\r\n", 12, 12.0)
    events += session.receive(C, b"MAIL FROM:<a@example.com>\r\n", 13, 13.0)
    events += session.receive(S, b"250 ok\r\n", 14, 14.0)
    events += session.receive(C, b"QUIT\r\n", 15, 15.0)
    events += session.receive(S, b"221 bye\r\n", 16, 16.0)
    events += session.close(17, 17.0)
    codes = [e.code for e in events if isinstance(e, ev.Anomaly)]
    assert codes[:2] == ["gap", "message_end_lost"]
    assert [e.address for e in events if isinstance(e, ev.MailFrom)] == ["a@example.com", "a@example.com"]
    assert "Quit" in kinds(events)


QUOTING = """
S: 220 mx.contoso.com ESMTP Postfix
C: EHLO client.example
S: 250-mx.contoso.com
S: 250 AUTH PLAIN
C: MAIL FROM:<someone@sender.example>
S: 250 2.1.0 Ok
C: RCPT TO:<postmaster@contoso.com>
S: 250 2.1.5 Ok
C: DATA
S: 354 End data with <CR><LF>.<CR><LF>
C: Subject: what the relay test said
C: lost line
C: the next line<CRLF>{auth}<CRLF>RCPT TO:<victim@outside.test>
C: .
S: 250 2.0.0 Ok: queued
C: QUIT
S: 221 2.0.0 Bye
""".replace("{auth}", QUOTED_AUTH.decode())


def quoting_capture(path: Path, lose: bytes = b"") -> Path:
    """The session, the server acknowledging what it received (so a hole is known for lost as soon as it is
    acknowledged beyond, before the server's reply, as in real captures); the segment holding ``lose`` left out."""
    segments = conversation_segments(turns(QUOTING), CLIENT, SERVER, acks=True)
    kept = [segment for segment in segments if not (lose and lose in segment[5])]
    assert len(kept) == len(segments) - (1 if lose else 0)
    path.write_bytes(pcap_bytes(ethernet_frames(kept)))
    return path


def test_a_capture_that_lost_part_of_a_message_quoting_smtp_shows_no_login_and_no_relay(tmp_path: Path) -> None:
    whole: list[dict[str, Any]] = analyze(quoting_capture(tmp_path / "whole.pcap"))
    assert {f["type"] for f in whole} == {"mail-service", "auth-methods"}
    findings = analyze(quoting_capture(tmp_path / "lost.pcap", b"lost line"))
    assert {f["type"] for f in findings} == {"mail-service", "auth-methods"}
    assert relays(findings) == []
