"""End lines with a bare CR (``\\r.\\r``: SMTP smuggling into Cisco Secure Email) are read as the server read them.

SEC Consult's SMTP smuggling research (December 2023) found Cisco Secure Email (AsyncOS) ending a message at
``<CR>.<CR>``: its default "CR and LF handling" cleans every bare CR and LF into CR LF, so a "." line between any
two line ends, bare CRs included, ends the message. Servers that read lines to their LF (Postfix before 3.9,
Sendmail before 8.18, Exim before 4.97.1) read on past it, to an end line with bare LFs or to the exact end;
Postfix 3.9 and the like to the exact end only. Before, a bare CR was message text to leakscope whatever the
server did: the relay a Cisco-like server made through commands smuggled after ``\\r.\\r`` was invisible (its
replies went unsolicited). Now such a line is a candidate end decided by the server's replies, as the bare-LF ones
are (``tests/test_smtp_lax_end.py``), among three readings: the end here, a later end line with bare LFs, the
exact end. The packet scanner never drops a body segment holding such a line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dissectors import events as ev
from dissectors.linebuffer import LaxEnd, Line, LineBuffer
from dissectors.smtp import SmtpSession
from tests.test_smtp_lax_end import (
    NOOPS,
    OPENING,
    PADDING,
    SMUGGLED,
    TOOK_LAX_REPLIES,
    analyzed,
    anomalies,
    recipients,
    session_events,
)

C, S = ev.Side.CLIENT, ev.Side.SERVER
# The end lines with a bare CR SEC Consult's and Hanno Böck's smuggling scanners send (smtp_smuggling_scanner.py,
# smtpsmug): a bare CR before the dot, after it, or both.
CR_FORMS = [b"\r.\r", b"\r\n.\r", b"\r.\r\n", b"\r.\n", b"\n.\r"]
HERE = b"hello\n.\n"  # where SMUGGLED's end line is


def items_of(data: bytes, bytewise: bool, **body: bool) -> list[Any]:
    buffer = LineBuffer()
    buffer.expect_dot_body(exact_end=True, **body)
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    return [item for chunk in chunks for item in buffer.feed(chunk)]


# Each with how the dot's own line ended.
ENDINGS = [(b"\r.\r", b"\r"), (b"\r\n.\r", b"\r"), (b"\r.\r\n", b"\r\n"), (b"\r.\n", b"\n"), (b"\n.\r", b"\r")]
ENDINGS += [(b"x\r.\r\r", b"\r"), (b"\r\r.\r", b"\r")]


@pytest.mark.parametrize(("ending", "after"), ENDINGS)
@pytest.mark.parametrize("bytewise", [False, True])
def test_an_end_line_with_a_bare_cr_is_handed_out_as_such(ending: bytes, after: bytes, bytewise: bool) -> None:
    items = items_of(b"Subject: x\r\n\r\nbody" + ending + b"QUIT\r\n", bytewise)
    assert [type(item) for item in items] == [LaxEnd, Line], items
    assert (items[0].certain, items[0].after, items[0].bare_cr) == (True, after, True)
    assert items[1].text == "QUIT"
    [lf] = items_of(b"body\n.\r\n", bytewise)  # bare LFs only: as before
    assert isinstance(lf, LaxEnd) and (lf.after, lf.bare_cr) == (b"\r\n", False)


def test_lines_starting_with_a_dot_after_a_bare_cr_that_end_nothing() -> None:
    data = b"a\r.x\r..\r\nb\r\r\n.\r\n"  # a dot-stuffed line and a text line after bare CRs; CRs before CR LF
    for bytewise in (False, True):
        assert [(type(i), getattr(i, "text", None)) for i in items_of(data, bytewise)] == [(Line, ".")]
    pop3 = LineBuffer()  # POP3 reads lines to their LF, as ever: no end at a bare CR
    pop3.expect_dot_body()
    assert [i.text for i in pop3.feed(b"a\r.\rb\r.\r\nc\r\n.\r\nnext\r\n")] == [".", "next"]


def test_told_to_pass_over_end_lines_with_a_bare_cr_the_buffer_still_hands_out_those_with_bare_lfs() -> None:
    """After a server read on past ``\\r.\\r`` (it reads lines to their LF), an end line with bare LFs may still end
    the message to it: only that one is handed out."""
    data = b"a\r.\rMAIL FROM:<a@b>\r\nb\r\n.\r\rc\r\n.\nQUIT\r\n"
    for bytewise in (False, True):
        items = items_of(data, bytewise, bare_cr_is_body=True)
        assert [type(item) for item in items] == [LaxEnd, Line], items
        assert (items[0].after, items[0].bare_cr, items[1].text) == (b"\n", False, "QUIT")


def test_a_dot_line_waiting_after_its_cr_is_cut_there_when_the_server_speaks() -> None:
    """The client sent ``\\r.\\r`` and waits for the answer: the byte after the CR (a LF would make it CR LF) never
    comes. Only a server's reply tells; the session then asks the buffer to end the line at its CR."""
    buffer = LineBuffer()
    buffer.expect_dot_body(exact_end=True)
    assert list(buffer.feed(b"Subject: x\r\n\r\nhello\r\n\r.\r", 3, 1.0)) == []
    assert buffer.skippable() is None  # what follows the CR decides: not to be dropped unread
    end = buffer.cut_at_cr()
    assert isinstance(end, LaxEnd) and (end.after, end.bare_cr, end.first_frame, end.frame) == (b"\r", True, 3, 3)
    assert [item.text for item in buffer.feed(b"QUIT\r\n")] == ["QUIT"]
    assert buffer.cut_at_cr() is None  # not in a body any more
    buffer.expect_dot_body(exact_end=True)
    assert list(buffer.feed(b"hello\r\n.")) == [] and buffer.cut_at_cr() is None  # no CR after the dot yet


@pytest.mark.parametrize("form", CR_FORMS)
def test_a_server_that_took_the_bare_cr_end_answers_the_smuggled_commands(form: bytes) -> None:
    """Cisco-like: the message ends at the bare CR; its replies answer the smuggled MAIL, RCPT and DATA, and the
    relay it made is read (before, these replies answered nothing and the relay was invisible)."""
    events = session_events([*OPENING, (C, SMUGGLED.replace(HERE, b"hello" + form)), (S, TOOK_LAX_REPLIES)])
    assert recipients(events) == [("b@contoso.com", True), ("victim@outside.test", True)]
    assert anomalies(events) == ["lax_end_taken"]
    assert [e.reply_code for e in events if isinstance(e, ev.MessageEnd)] == [250, 250]


@pytest.mark.parametrize("form", CR_FORMS)
def test_a_server_that_reads_on_to_the_exact_end_gives_no_reply_to_the_smuggled_commands(form: bytes) -> None:
    """Its one reply answers the exact end; the client then closes, or sends NOOPs (whose 250s no smuggled DATA
    takes): the lines after the bare CR are message text, no relay."""
    closed = session_events([*OPENING, (C, SMUGGLED.replace(HERE, b"hello" + form)), (S, b"250 Ok: queued\r\n")])
    read_on = session_events([*OPENING, (C, SMUGGLED.replace(HERE, b"hello" + form)), (S, b"250 Ok\r\n"), *NOOPS])
    for each in (closed, read_on):
        assert recipients(each) == [("b@contoso.com", True)]
        assert anomalies(each) == ["lax_end_in_message"]
        assert [e.reply_code for e in each if isinstance(e, ev.MessageEnd)] == [250]


@pytest.mark.parametrize("quit_", [False, True])
def test_a_server_reading_lines_to_their_lf_ends_the_message_at_a_later_end_line_with_bare_lfs(quit_: bool) -> None:
    """Postfix 3.7 (``smtpd_forbid_bare_newline = no``) reads ``hello\\r.`` as one line, and ends the message at the
    ``\\n.\\n`` after the lines that look like commands: its 250 answers that end, its next ones the client's NOOPs.
    Those replies fit the lines after ``\\r.\\r`` too (250 to MAIL, to RCPT) until the QUIT's 221, or to the close:
    the end line with bare LFs was sent, so the message went on past the bare CR (else a HIGH open relay to
    victim@outside.test that nobody made), and ended at the bare LFs, as the server's replies then show."""
    body = b"Subject: x\r\n\r\nhello\r.\rMAIL FROM:<s@sender.example>\r\nRCPT TO:<victim@outside.test>\r\n\n.\n"
    after = [(C, b"NOOP\r\nNOOP\r\n" + (b"QUIT\r\n" if quit_ else b""))]
    replies = b"250 2.0.0 Ok: queued as A\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n" + (
        b"221 2.0.0 Bye\r\n" if quit_ else b""
    )
    events = session_events([*OPENING, (C, body), *after, (S, replies)])
    assert recipients(events) == [("b@contoso.com", True)]
    assert anomalies(events) == ["lax_end_in_message", "lax_end_taken"]
    assert [e.reply_code for e in events if isinstance(e, ev.MessageEnd)] == [250]


def test_a_client_waiting_after_the_cr_of_its_dot_line_is_answered_by_a_server_that_took_it() -> None:
    """``smtpsmug -c crcr`` sends ``\\r.\\r`` and waits: a Cisco-like server answers it, one that reads on times out."""
    waits = [*OPENING, (C, b"Subject: x\r\n\r\nhello\r\n\r.\r")]
    relay = [(C, b"MAIL FROM:<s@sender.example>\r\n"), (S, b"250 2.1.0 Ok\r\n")]
    relay += [(C, b"RCPT TO:<victim@outside.test>\r\n"), (S, b"250 2.1.5 Ok\r\n")]
    session = SmtpSession()
    took = [e for frame, (side, data) in enumerate(waits, 1) for e in session.receive(side, data, frame, float(frame))]
    took += session.receive(S, b"250 2.0.0 Ok: queued\r\n", 20, 20.0)
    took += [e for side, data in relay for e in session.receive(side, data, 30, 30.0)] + session.close()
    assert recipients(took) == [("b@contoso.com", True), ("victim@outside.test", True)]
    assert anomalies(took) == ["lax_end_taken"]
    [end] = [e for e in took if isinstance(e, ev.MessageEnd)]
    assert (end.reply_code, end.evidence.line, end.evidence.frame) == (250, ".", len(waits))  # the client's dot
    timed_out = session_events([*waits, (S, b"421 4.4.2 mx.contoso.com Error: timeout exceeded\r\n")])
    assert anomalies(timed_out) == ["lax_end_in_message"]
    assert [e for e in timed_out if isinstance(e, ev.MessageEnd)] == []


# -- the CLI's pipeline on captures whose message bodies the packet scanner drops below Python ----------------------


def relays(findings: list[Any]) -> list[tuple[str, str]]:
    return [(f.fields["verdict"], f.severity.value) for f in findings if f.type.value == "open-relay"]


def message_end(findings: list[Any]) -> list[str | None]:
    return [f.fields["message_end"] for f in findings if f.type.value == "mail-service"]


@pytest.mark.parametrize("backend", ["auto", "python"])
@pytest.mark.parametrize("cut_after_cr", [False, True])
def test_cli_a_bare_cr_end_line_in_a_long_message_is_never_dropped_unread(
    tmp_path: Path, cut_after_cr: bool, backend: str
) -> None:
    """A megabyte of message (its segments dropped by the packet scanner), then ``\\r.\\r`` and the smuggled
    commands in a segment without any ``\\n.`` (the smuggled message is long too), or cut between the CR and its
    dot: the scanner reads that segment, and the relay a Cisco-like server made is seen (before: dropped unread,
    no relay); against a server that reads on, no relay."""
    head = b"Subject: x\r\n\r\n" + PADDING * 20_000 + b"hello"
    if cut_after_cr:  # the segment before the dot ends with the bare CR
        head += b"x" * ((-len(head) - 1) % 1400)
    smuggled = SMUGGLED.replace(HERE, b"\r.\r").replace(b"smuggled\r\n", PADDING * 100)
    body = head + smuggled.split(b"\r.\r", 1)[1].join([b"\r.\r", b""])
    took, findings = analyzed(tmp_path / "took.pcap", [*OPENING, (C, body), (S, TOOK_LAX_REPLIES)], backend)
    assert took.counters.segments_skipped > 500
    assert relays(findings) == [("open-relay", "high")]
    assert message_end(findings) == ["lax"]
    assert dict(took.stats.anomalies) == {"lax_end_taken": 1}
    read_on = [*OPENING, (C, body), (S, b"250 2.0.0 Ok: queued as A\r\n"), *NOOPS]
    results, findings = analyzed(tmp_path / "read-on.pcap", read_on, backend)
    assert relays(findings) == [] and message_end(findings) == ["exact"]
    assert dict(results.stats.anomalies) == {"lax_end_in_message": 1}
