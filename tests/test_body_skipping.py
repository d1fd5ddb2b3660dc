"""Message bodies (SMTP DATA and BDAT, POP3 RETR/TOP/LIST, IMAP literals) are skipped to their end, not read as
lines: nothing inside one is taken for a command or a reply, however it is cut into segments, and the session goes
on right after it."""

from __future__ import annotations

import base64
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors import events as ev
from dissectors.imap import ImapSession
from dissectors.linebuffer import MAX_LINE, Line, LineBuffer, Overflow
from dissectors.pop3 import Pop3Session
from dissectors.session import MailSession
from dissectors.smtp import SmtpSession

C, S = ev.Side.CLIENT, ev.Side.SERVER
PLAIN = b"AUTH PLAIN " + base64.b64encode(b"\x00mallory\x00stolen") + b"\r\n"
# Lines a body may hold that would mean something outside one.
EVIL = (
    PLAIN
    + b"MAIL FROM:<forged@evil.test>\r\nRCPT TO:<x@y.test>\r\nQUIT\r\nUSER eve\r\nPASS hunter2\r\n"
    + b"a1 LOGIN eve hunter2\r\n+OK\r\n-ERR\r\n235 2.7.0 ok\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN]\r\n"
    + b"..\r\n..AUTH PLAIN AGEAYg==\r\n. \r\n.x\r\n.\rAUTH LOGIN\r\n\r\n"
    + b"A" * (3 * MAX_LINE)
    + b"\r\n.."
    + b"B" * (MAX_LINE + 10)
    + b"\r\n"
)


def feed(session: MailSession, script: list[tuple[ev.Side, bytes]], split: int | None = None) -> list[ev.Event]:
    out: list[ev.Event] = []
    for frame, (side, data) in enumerate(script, start=1):
        pieces = [data] if not split else [data[i : i + split] for i in range(0, len(data), split)]
        for piece in pieces:
            out.extend(session.receive(side, piece, frame, 1000.0 + frame))
    return out


def kinds(events: list[ev.Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def smtp_script(body: bytes) -> list[tuple[ev.Side, bytes]]:
    return [
        (S, b"220 mx ESMTP\r\n"),
        (C, b"EHLO c\r\n"),
        (S, b"250-mx\r\n250 AUTH PLAIN\r\n"),
        (C, b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"),
        (S, b"250 ok\r\n250 ok\r\n354 go on\r\n"),
        (C, body + b".\r\n"),
        (S, b"250 queued\r\n"),
        (C, b"MAIL FROM:<next@b.test>\r\n"),
        (S, b"250 ok\r\n"),
        (C, b"BDAT 23 LAST\r\n" + PLAIN[:23]),
        (S, b"250 ok\r\n"),
        (C, PLAIN),
        (S, b"235 2.7.0 ok\r\n"),
        (C, b"QUIT\r\n"),
        (S, b"221 bye\r\n"),
    ]


def check_smtp(events: list[ev.Event], lax_line: bool = False) -> None:
    """Only the envelope outside the message and the AUTH after it: nothing of the message, nothing of the chunk.
    With ``lax_line``, the message holds a "." line ended by a bare CR (an end line to a server that takes bare CRs
    for line ends, dissectors.smtp_end): this server read on past it, and it is told as such."""
    assert [m.address for m in kinds(events, ev.MailFrom)] == ["a@b.test", "next@b.test"]
    assert [r.address for r in kinds(events, ev.RcptTo)] == ["c@d.test"]
    assert [(c.user, c.password) for c in kinds(events, ev.Credentials)] == [("mallory", "stolen")]
    assert [r.success for r in kinds(events, ev.AuthResult)] == [True]
    assert len(kinds(events, ev.Quit)) == 1
    # The 250 after "." answered the message, nothing went unanswered.
    assert [a.code for a in kinds(events, ev.Anomaly)] == (["lax_end_in_message"] if lax_line else [])


def test_smtp_message_with_evil_lines_is_skipped_whatever_the_segmentation() -> None:
    check_smtp(feed(SmtpSession(), smtp_script(EVIL)), lax_line=True)  # its ".\rAUTH LOGIN"
    for split in (1, 2, 3, 5, 1448):
        check_smtp(feed(SmtpSession(), smtp_script(EVIL), split), lax_line=True)


def test_smtp_end_of_data_split_at_every_byte_of_its_terminator() -> None:
    body = b"Subject: x\r\n\r\nline\r\n..\r\n"
    message = body + b".\r\n"
    start = len(body) - 2  # the CR LF before the dot, the dot, its CR LF: cut between each pair
    for cut in range(start, len(message)):
        session = SmtpSession()
        events = feed(session, smtp_script(b"")[:5])
        events += session.receive(C, message[:cut], 50, 50.0)
        events += session.receive(C, message[cut:], 51, 51.0)
        events += feed(session, smtp_script(b"")[6:])
        check_smtp(events)


def test_a_body_of_only_dots_and_carriage_returns() -> None:
    body = b"..\r\n" * 1000 + b".\r" * 1000 + b"\r\n" + b"\r\n" * 100 + b". .\r\n" + b".\r\r\r\rX\r\n"
    for split in (None, 1, 7):
        check_smtp(feed(SmtpSession(), smtp_script(body), split), lax_line=True)  # ".\r." ends a line at its CR


def test_end_line_evidence_frames() -> None:
    """END-OF-DATA cites the frame that completed the "." line and the one where its dot arrived."""
    session = SmtpSession()
    feed(session, smtp_script(b"")[:5])
    session.receive(C, b"text\r\n", 10, 10.0)
    session.receive(C, b".", 11, 11.0)
    session.receive(C, b"\r", 12, 12.0)
    session.receive(C, b"\n", 13, 13.0)
    assert [(c.verb, c.frame) for c in session.pending] == [("END-OF-DATA", 13)]
    assert not session.buffers[C].in_body and session.buffers[C].buffered == 0


def test_message_bytes_are_not_kept() -> None:
    session = SmtpSession()
    feed(session, smtp_script(b"")[:5])
    session.receive(C, b"x" * 100_000 + b"\r\n" + b"y" * 100_000, 10, 10.0)
    assert session.buffers[C].in_body and session.buffered_bytes() < 4096


def pop3_script(body: bytes) -> list[tuple[ev.Side, bytes]]:
    return [
        (S, b"+OK ready\r\n"),
        (C, b"LIST\r\n"),
        (S, b"+OK 2 messages\r\n1 " + body[:50].replace(b"\n", b" ") + b"\r\n2 200\r\n.\r\n"),
        (C, b"RETR 1\r\n"),
        (S, b"+OK message follows\r\n" + body + b".\r\n"),
        (C, b"TOP 1 5\r\n"),
        (S, b"+OK\r\n" + body[: len(body) // 2] + b"\r\n.\r\n"),
        (C, b"USER alice\r\n"),
        (S, b"+OK\r\n"),
        (C, b"PASS pw\r\n"),
        (S, b"+OK logged in\r\n"),
        (C, b"QUIT\r\n"),
        (S, b"+OK bye\r\n"),
    ]


def check_pop3(events: list[ev.Event]) -> None:
    assert [(c.user, c.password) for c in kinds(events, ev.Credentials)] == [("alice", "pw")]
    assert [(r.mechanism, r.success) for r in kinds(events, ev.AuthResult)] == [("USER-PASS", True)]
    assert not kinds(events, ev.Anomaly) and not kinds(events, ev.Capabilities)


def test_pop3_retr_top_and_list_answers_are_skipped() -> None:
    for split in (None, 1, 3, 1448):
        check_pop3(feed(Pop3Session(), pop3_script(EVIL), split))


def imap_script(body: bytes) -> list[tuple[ev.Side, bytes]]:
    return [
        (S, b"* OK ready\r\n"),
        (C, b"a1 FETCH 1 BODY[]\r\n"),
        (S, b"* 1 FETCH (BODY[] {%d}\r\n" % len(body) + body + b")\r\na1 OK FETCH done\r\n"),
        (C, b"a2 LOGIN alice pw\r\n"),
        (S, b"a2 OK LOGIN done\r\n"),
    ]


def test_imap_server_literal_is_counted_off_not_read() -> None:
    for split in (None, 1, 3, 1448):
        session = ImapSession()
        events = feed(session, imap_script(EVIL), split)
        assert [(c.user, c.password) for c in kinds(events, ev.Credentials)] == [("alice", "pw")]
        assert [(r.mechanism, r.success) for r in kinds(events, ev.AuthResult)] == [("IMAP-LOGIN", True)]
        assert not kinds(events, ev.Anomaly) and not kinds(events, ev.Capabilities)
        assert session.buffered_bytes() == 0


def lines_of(buffer: LineBuffer, pieces: list[bytes]) -> list[tuple[str, int | None, int | None]]:
    out = []
    for frame, piece in enumerate(pieces):
        for item in buffer.feed(piece, frame):
            if isinstance(item, Overflow):
                out.append(("<overflow>", None, None))
            elif isinstance(item, Line):
                out.append((item.text, item.frame, item.first_frame))
                if item.text == "BODY":
                    buffer.expect_dot_body()
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b".", b"\r", b"\n", b"x", b"..", b"\r\n", b".\r\n", b"\n." + b"\r" * 5]), max_size=60),
    st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_body_end_is_the_line_splitter_s_first_lone_dot(body: list[bytes], cuts: list[int]) -> None:
    """Skipping a body ends exactly where splitting it into lines would first meet "." (then any CRs, within the
    line limit), wherever the segments are cut; the next line is read as a line."""
    max_line = 6
    data = b"BODY\r\n" + b"".join(body) + b"\n.\r\nNEXT\r\n"
    # What the line splitter makes of the body (lines up to the limit), and where its end line is.
    lines = data[len(b"BODY\r\n") :].split(b"\n")
    end = next(i for i, line in enumerate(lines) if line.rstrip(b"\r") == b"." and len(line) <= max_line)
    after = [line.rstrip(b"\r").decode() if len(line) <= max_line else "<overflow>" for line in lines[end + 1 : -1]]
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    pieces = [data[a:b] for a, b in pairwise(bounds)]
    got = lines_of(LineBuffer(max_line), pieces)
    assert [text for text, _, _ in got] == ["BODY", ".", *after]
    # The "." line cites the segment that completed it and the one holding its dot.
    dot_at = len(b"BODY\r\n") + sum(len(line) + 1 for line in lines[:end])
    piece_of = [i for i, piece in enumerate(pieces) for _ in piece]
    ends_at = dot_at + len(lines[end])  # its LF
    assert got[1][1:] == (piece_of[ends_at], piece_of[dot_at])
