"""A message's end line other than CR LF "." CR LF (SMTP smuggling, CVE-2023-51764) is read as the server read it.

Servers differ: Postfix 3.7 (Debian 12, ``smtpd_forbid_bare_newline = no``) ends a message at ``\\n.\\n``, Postfix
3.9 and aiosmtpd 1.4.5 read on to the exact end. Before, every ``\\n.`` CR* ``\\n`` ended the message, so a client
could hide a ``MAIL``/``RCPT`` to a foreign domain in a message to a server that reads on, answer the server's
replies with ``NOOP``s, and have the capture read as a HIGH open relay that relayed nothing. Now the client's bytes
after such a line wait for the server's replies (``dissectors/smtp_end.py``):

- the line buffer hands a lax end line out as ``LaxEnd`` (certain or not: the line ending before the dot may have
  been dropped below Python), across chunk boundaries as in one chunk, and passes over it once told to;
- sessions: a server that reads on (its second reply answers the client's command after the exact end), a server
  that took the lax end (it answered before the exact end came, or its replies answer the smuggled commands), a
  capture of the client's side, a client that sends on with no answer;
- the CLI on captures built packet by packet, message bodies cut into segments (so the packet scanner drops
  bodies below Python): no open relay from smuggled commands a server read as its message; the relay a server that
  took the lax end made, with its anomaly; an end line after a one-byte segment, which the scanner now reads (an
  end line is then never uncertain).

End lines with a bare CR: ``tests/test_smtp_cr_end.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dissectors import events as ev
from dissectors.linebuffer import SKIP_DOT, LaxEnd, Line, LineBuffer
from dissectors.smtp import SmtpSession
from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_relay_transactions import CLIENT, SERVER, analyze

C, S = ev.Side.CLIENT, ev.Side.SERVER


def body_items(chunks: list[bytes], exact_end: bool = True, lax_is_body: bool = False) -> list[Any]:
    buffer = LineBuffer()
    buffer.expect_dot_body(exact_end=exact_end, lax_is_body=lax_is_body)
    items = []
    for chunk in chunks:
        items.extend(buffer.feed(chunk))
    return items


@pytest.mark.parametrize(
    ("ending", "crlf_after"),
    [(b"\n.\n", False), (b"\n.\r\n", True), (b"\r\n.\n", False), (b"\r\n.\r\r\n", True), (b"x\n.\n", False)],
)
def test_a_lax_end_line_is_handed_out_as_such_whole_or_byte_by_byte(ending: bytes, crlf_after: bool) -> None:
    data = b"Subject: x\r\n\r\nbody" + ending + b"QUIT\r\n"
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        items = body_items(chunks)
        assert [type(item) for item in items] == [LaxEnd, Line], items
        assert (items[0].certain, items[0].crlf_after) == (True, crlf_after)
        assert items[1].text == "QUIT"


def test_the_exact_end_line_and_a_body_without_exact_end() -> None:
    data = b"Subject: x\r\n\r\nbody\r\n..stuffed\r\n.\r\nQUIT\r\n"
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        assert [(type(i), getattr(i, "text", None)) for i in body_items(chunks)] == [(Line, "."), (Line, "QUIT")]
    assert [type(i) for i in body_items([b"a\n.\nb\r\n"], exact_end=False)] == [Line, Line]  # POP3: as before


def test_after_bytes_dropped_below_python_the_end_line_is_not_certain() -> None:
    buffer = LineBuffer()
    buffer.expect_dot_body(exact_end=True)
    assert buffer.skippable() == (SKIP_DOT, 0, True)
    buffer.skip(1400, True, 7, 1.0)  # the scanner dropped a segment ending in a newline: CR LF or LF, unseen
    [end] = list(buffer.feed(b".\r\n", 8, 2.0))
    assert isinstance(end, LaxEnd) and not end.certain


@pytest.mark.parametrize(("tail", "exact"), [(b"\r\n", True), (b"a\n", False)])
def test_the_last_bytes_dropped_say_how_the_line_before_the_dot_ended(tail: bytes, exact: bool) -> None:
    """The scanner's notice carries the end of the bytes it dropped: CR LF there makes ".\r\n" the exact end, a
    bare LF a lax one for sure."""
    buffer = LineBuffer()
    buffer.expect_dot_body(exact_end=True)
    buffer.skip(1400, True, 7, 1.0, tail)
    [end] = list(buffer.feed(b".\r\n", 8, 2.0))
    assert isinstance(end, Line) if exact else (isinstance(end, LaxEnd) and end.certain)


def test_told_to_read_on_the_buffer_passes_over_lax_end_lines() -> None:
    data = b"smuggled\n.\nMAIL FROM:<a@b>\r\nmore\r\n.\r\nQUIT\r\n"
    assert [i.text for i in body_items([data], lax_is_body=True)] == [".", "QUIT"]


OPENING = [
    (S, b"220 mx.contoso.com ESMTP\r\n"),
    (C, b"EHLO client.example\r\n"),
    (S, b"250-mx.contoso.com\r\n250 PIPELINING\r\n"),
    (C, b"MAIL FROM:<a@client.example>\r\n"),
    (S, b"250 2.1.0 Ok\r\n"),
    (C, b"RCPT TO:<b@contoso.com>\r\n"),
    (S, b"250 2.1.5 Ok\r\n"),
    (C, b"DATA\r\n"),
    (S, b"354 End data with <CR><LF>.<CR><LF>\r\n"),
]
SMUGGLED = (
    b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<s@sender.example>\r\nRCPT TO:<victim@outside.test>\r\nDATA\r\n"
    b"Subject: y\r\n\r\nsmuggled\r\n.\r\n"
)
TOOK_LAX_REPLIES = b"250 2.0.0 Ok: queued as A\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n250 2.0.0 queued as B\r\n"


def session_events(steps: list[tuple[ev.Side, bytes]]) -> list[ev.Event]:
    session = SmtpSession()
    events = [e for side, data in steps for e in session.receive(side, data)]
    return events + session.close()


def recipients(events: list[ev.Event]) -> list[tuple[str, bool | None]]:
    return [(e.address, e.accepted) for e in events if isinstance(e, ev.RcptTo)]


def anomalies(events: list[ev.Event]) -> list[str]:
    return [e.code for e in events if isinstance(e, ev.Anomaly)]


def test_a_server_that_reads_on_gives_no_reply_to_the_smuggled_commands() -> None:
    noops = [(C, b"NOOP\r\n"), (S, b"250 2.0.0 Ok\r\n"), (C, b"NOOP\r\n"), (S, b"250 2.0.0 Ok\r\n")]
    for after in (noops, [(C, b"QUIT\r\n"), (S, b"221 2.0.0 Bye\r\n")]):
        events = session_events([*OPENING, (C, SMUGGLED), (S, b"250 2.0.0 Ok: queued as A\r\n"), *after])
        assert recipients(events) == [("b@contoso.com", True)]
        assert anomalies(events) == ["lax_end_in_message"]
        assert [e.accepted for e in events if isinstance(e, ev.MessageEnd)] == [True]
    pipelined = session_events([*OPENING, (C, SMUGGLED + b"QUIT\r\n"), (S, b"250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n")])
    assert recipients(pipelined) == [("b@contoso.com", True)] and anomalies(pipelined) == ["lax_end_in_message"]


@pytest.mark.parametrize("quit_pipelined", [False, True])
def test_a_server_that_took_the_lax_end_answers_the_smuggled_commands(quit_pipelined: bool) -> None:
    quit_ = [(C, b"QUIT\r\n"), (S, b"221 2.0.0 Bye\r\n")]
    steps = (
        [(C, SMUGGLED + b"QUIT\r\n"), (S, TOOK_LAX_REPLIES + b"221 2.0.0 Bye\r\n")]
        if quit_pipelined
        else [(C, SMUGGLED), (S, TOOK_LAX_REPLIES), *quit_]
    )
    events = session_events([*OPENING, *steps])
    assert recipients(events) == [("b@contoso.com", True), ("victim@outside.test", True)]
    assert anomalies(events) == ["lax_end_taken"]
    assert len([e for e in events if isinstance(e, ev.MessageEnd) and e.accepted]) == 2


def test_an_answer_before_the_exact_end_was_sent_ends_the_message_there() -> None:
    events = session_events(
        [*OPENING, (C, b"Subject: x\n\nhi\n.\n"), (S, b"250 2.0.0 Ok\r\n"), (C, b"QUIT\n"), (S, b"221 Bye\r\n")]
    )
    assert anomalies(events) == ["lax_end_taken"]
    assert [e.reply_code for e in events if isinstance(e, ev.MessageEnd)] == [250]
    assert any(isinstance(e, ev.Quit) for e in events)


def test_the_exact_end_changes_nothing() -> None:
    events = session_events([*OPENING, (C, b"Subject: x\r\n\r\nhi\r\n.\r\n"), (S, b"250 Ok\r\n")])
    assert anomalies(events) == [] and [e.reply_code for e in events if isinstance(e, ev.MessageEnd)] == [250]


def test_with_the_client_side_only_the_lax_end_ends_the_message() -> None:
    """Nothing from the server to go by: as before, the lax end ends the message, and what follows is read."""
    auth = b"Subject: x\r\n\r\nhi\n.\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"  # \0bob\0secret
    events = session_events([(side, data) for side, data in OPENING if side is C] + [(C, auth)])
    assert [(e.user, e.password) for e in events if isinstance(e, ev.Credentials)] == [("bob", "secret")]


def test_a_client_that_sends_on_with_no_answer_is_still_in_its_message() -> None:
    body = b"Subject: x\r\n\r\nhi\n.\n" + b"line of the message that goes on\r\n" * 3000
    events = session_events([*OPENING, (C, body), (C, b"RCPT TO:<c@outside.test>\r\n.\r\n"), (S, b"250 Ok\r\n")])
    assert anomalies(events) == ["lax_end_in_message"]
    assert recipients(events) == [("b@contoso.com", True)]
    assert [e.reply_code for e in events if isinstance(e, ev.MessageEnd)] == [250]


def smtp_capture(path: Path, steps: list[tuple[ev.Side, bytes]]) -> Path:
    turns = [(side is S, data) for side, data in steps] + [(False, b"QUIT\r\n"), (True, b"221 2.0.0 Bye\r\n")]
    segments = conversation_segments(turns, CLIENT, SERVER, piece=1400, acks=True)
    path.write_bytes(pcap_bytes(ethernet_frames(segments)))
    return path


def relays(findings: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((f["verdict"], f["severity"]) for f in findings if f["type"] == "open-relay")


def test_cli_no_open_relay_from_commands_the_server_read_as_its_message(tmp_path: Path) -> None:
    padding = b"Subject: x\r\n\r\n" + b"a line of the message to cut into segments\r\n" * 400
    smuggled = SMUGGLED.replace(b"Subject: x\r\n\r\n", padding)
    noops = [(C, b"NOOP\r\n"), (S, b"250 2.0.0 Ok\r\n"), (C, b"NOOP\r\n"), (S, b"250 2.0.0 Ok\r\n")]
    read_on = smtp_capture(tmp_path / "read-on.pcap", [*OPENING, (C, smuggled), (S, b"250 2.0.0 Ok\r\n"), *noops])
    findings = analyze(read_on, "--local-domain", "contoso.com")
    assert relays(findings) == []
    assert services(findings) == [("exact", "info")]
    took = smtp_capture(tmp_path / "took.pcap", [*OPENING, (C, smuggled), (S, TOOK_LAX_REPLIES)])
    findings = analyze(took, "--local-domain", "contoso.com")
    assert relays(findings) == [("open-relay", "high")]
    assert services(findings) == [("lax", "low")]  # the server ends messages where smuggling puts an end
    exact = smtp_capture(tmp_path / "exact.pcap", [*OPENING, (C, b"Subject: x\r\n\r\nhi\r\n.\r\n"), (S, b"250 Ok\r\n")])
    assert services(analyze(exact)) == [(None, "info")]


def services(findings: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(f["message_end"], f["severity"]) for f in findings if f["type"] == "mail-service"]


def test_state_dropped_to_keep_within_the_budget_reads_commands_after() -> None:
    session = SmtpSession()
    for side, data in [*OPENING, (C, b"Subject: x\r\n\r\nhi\n.\nRSET\r\n")]:
        session.receive(side, data)
    assert session.buffered_bytes() > 0
    session.shed()  # the held bytes are dropped, and reading resumes after the next newline
    events = session.receive(C, b"partial\r\nQUIT\r\n") + session.receive(S, b"221 Bye\r\n")
    assert any(isinstance(e, ev.Quit) for e in events)


NOOPS = [(C, b"NOOP\r\n"), (S, b"250 2.0.0 Ok\r\n")] * 3


def test_a_dot_line_right_after_the_lax_end_line_is_no_exact_end() -> None:
    """``\\n.\\n.\\r\\n``: the second "." line follows a bare LF, so a server that reads on reads on past it too."""
    smuggled = SMUGGLED.replace(b"hello\n.\n", b"hello\n.\n.\r\n")
    events = session_events([*OPENING, (C, smuggled), (S, b"250 2.0.0 Ok: queued as A\r\n"), *NOOPS])
    assert recipients(events) == [("b@contoso.com", True)]
    assert anomalies(events) == ["lax_end_in_message"]


def test_a_message_starting_with_a_bare_lf_dot_line_after_a_message_cut_after_a_cr() -> None:
    """The first message's last chunk ends in a CR, its end line comes in the next; the second message's first
    bytes are ``\\n.\\r\\n``: the line before that dot is an empty line ended by a bare LF, whatever came before."""
    second = [(C, b"MAIL FROM:<a@client.example>\r\n"), (S, b"250 2.1.0 Ok\r\n"), (C, b"RCPT TO:<c@contoso.com>\r\n")]
    second += [(S, b"250 2.1.5 Ok\r\n"), (C, b"DATA\r\n"), (S, b"354 go\r\n")]
    first = [(C, b"Subject: x\r\n\r\nhello\r"), (C, b"\n.\r\n"), (S, b"250 2.0.0 Ok: queued as A\r\n")]
    smuggled = b"\n.\r\n" + SMUGGLED.split(b"\n.\n", 1)[1]
    events = session_events([*OPENING, *first, *second, (C, smuggled), (S, b"250 2.0.0 Ok: queued as B\r\n"), *NOOPS])
    assert recipients(events) == [("b@contoso.com", True), ("c@contoso.com", True)]
    assert anomalies(events) == ["lax_end_in_message"]


def test_cli_the_exact_end_after_a_lax_end_read_on_ends_the_message_however_segments_are_dropped(
    tmp_path: Path,
) -> None:
    """A message that goes on past its lax end line (more than is held with no answer: the server read on) for a
    megabyte, its exact end's "." in a segment of its own after a segment ending in CR LF: the relay the client
    then makes is read. Past a lax end line only CR LF "." CR LF ends the message, and the capture must not drop
    the bytes that say whether a dot line is one."""
    line = b"a line of the message that goes on and on, for long\r\n"
    body = b"Subject: x\r\n\r\nhello\n.\n" + line * 20000
    body += b"x" * ((-len(body) - 2) % 1400) + b"\r\n"  # the last segment before the "." line ends in CR LF
    relay = [(C, b"MAIL FROM:<s@sender.example>\r\n"), (S, b"250 2.1.0 Ok\r\n")]
    relay += [(C, b"RCPT TO:<victim@outside.test>\r\n"), (S, b"250 2.1.5 Ok\r\n")]
    steps = [*OPENING, (C, body + b".\r\n"), (S, b"250 2.0.0 Ok: queued as A\r\n"), *relay]
    findings = analyze(smtp_capture(tmp_path / "long.pcap", steps), "--local-domain", "contoso.com")
    assert relays(findings) == [("open-relay", "high")]
    assert services(findings) == [("exact", "info")]


def test_a_server_that_times_out_waiting_for_the_exact_end_did_not_take_the_lax_end() -> None:
    """A client ending its lines with bare LFs waits for the answer to ``\\n.\\n``; Postfix with
    ``smtpd_forbid_bare_newline = normalize`` waits for CR LF "." CR LF until its timeout: its 421 is no sign that
    it ended the message at the lax end line."""
    timeout = b"421 4.4.2 mx.contoso.com Error: timeout exceeded\r\n"
    events = session_events([*OPENING, (C, b"Subject: x\n\nhi\n.\n"), (S, timeout)])
    assert anomalies(events) == ["lax_end_in_message"]
    assert [e for e in events if isinstance(e, ev.MessageEnd)] == []


def test_no_answer_to_the_lax_end_line_says_nothing_of_how_the_server_took_it() -> None:
    """The client gives up waiting for the answer to ``\\n.\\n`` and closes (before a server that reads on times
    out), or the capture holds the client's side only: what the client sent next is read as commands, as before,
    but nothing says the server ended the message there."""
    gave_up = session_events([*OPENING, (C, b"Subject: x\n\nhi\n.\n")])
    assert anomalies(gave_up) == [] and [e for e in gave_up if isinstance(e, ev.MessageEnd)] == []
    auth = b"Subject: x\r\n\r\nhi\n.\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"  # \0bob\0secret
    one_side = session_events([(side, data) for side, data in OPENING if side is C] + [(C, auth)])
    assert [(e.user, e.password) for e in one_side if isinstance(e, ev.Credentials)] == [("bob", "secret")]
    assert anomalies(one_side) == []


def test_a_timeout_after_the_answer_to_the_exact_end_is_no_answer_to_a_smuggled_command() -> None:
    """A server that reads on answers the exact end, then, the client sending nothing more, times out: its 421 came
    before any command after the exact end, yet it answers none of the smuggled ones."""
    timeout = b"421 4.4.2 mx.contoso.com Error: timeout exceeded\r\n"
    events = session_events([*OPENING, (C, SMUGGLED), (S, b"250 2.0.0 Ok: queued as A\r\n"), (S, timeout)])
    assert anomalies(events) == ["lax_end_in_message"]
    assert recipients(events) == [("b@contoso.com", True)]
    assert [e.reply_code for e in events if isinstance(e, ev.MessageEnd)] == [250]


def test_replies_that_fit_both_readings_wait_for_one_that_does_not() -> None:
    """A server that took the lax end answers the smuggled RSET with the 250 a server that read on would give the
    NOOP the client sent after the exact end; its next replies (to the smuggled MAIL, RCPT and DATA) fit no command
    after the exact end: the relay it made is read. A server that read on answers only the NOOP: no relay."""
    smuggled = SMUGGLED.replace(b"hello\n.\n", b"hello\n.\nRSET\r\n") + b"NOOP\r\n"
    rset = b"250 2.0.0 Ok: queued as A\r\n250 2.0.0 Ok\r\n"
    took = session_events([*OPENING, (C, smuggled), (S, rset + TOOK_LAX_REPLIES.split(b"\r\n", 1)[1] + b"250 Ok\r\n")])
    assert recipients(took) == [("b@contoso.com", True), ("victim@outside.test", True)]
    assert anomalies(took) == ["lax_end_taken"]
    read_on = session_events([*OPENING, (C, smuggled), (S, rset), (C, b"QUIT\r\n"), (S, b"221 2.0.0 Bye\r\n")])
    assert recipients(read_on) == [("b@contoso.com", True)] and anomalies(read_on) == ["lax_end_in_message"]


def test_an_x_exps_exchange_after_the_exact_end_is_answered_as_auth() -> None:
    """Exchange answers X-EXPS (its AUTH) with 334, as the AUTH smuggled after the lax end would be: a server that
    read on, answering the client's X-EXPS after the exact end, has not thereby taken the lax end."""
    smuggled = SMUGGLED.replace(b"hello\n.\n", b"hello\n.\nAUTH LOGIN\r\n") + b"X-EXPS GSSAPI\r\n"
    steps = [*OPENING, (C, smuggled), (S, b"250 2.0.0 Ok: queued as A\r\n334 GSSAPI supported\r\n")]
    events = session_events([*steps, (C, b"*\r\n"), (S, b"501 5.7.0 cancelled\r\n"), *NOOPS])
    assert recipients(events) == [("b@contoso.com", True)]
    assert anomalies(events) == ["lax_end_in_message"]


@pytest.mark.parametrize(("before_dot", "expected"), [(b"\r\n", {}), (b"\n", {"lax_end_taken": 1})])
def test_an_end_line_after_dropped_segments_is_told_by_their_last_bytes(
    tmp_path: Path, before_dot: bytes, expected: dict[str, int]
) -> None:
    """A message of a megabyte (the packet scanner drops its segments below Python) whose end line comes in a
    segment of its own: the end of the dropped bytes says whether the line before the dot ended in CR LF, so an
    exact end is read at once and a bare-LF one is known for one (before, both were "uncertain": no anomaly, no
    ``message_end``)."""
    body = b"Subject: x\r\n\r\n" + b"a line of a long message, dropped unread\r\n" * 25_000 + b"last line" + before_dot
    steps = [*OPENING, (C, body), (C, b".\r\n"), (S, b"250 2.0.0 Ok: queued\r\n")]
    results = analyze_captures([str(smtp_capture(tmp_path / "long.pcap", steps))], AnalysisOptions())
    assert results.counters.segments_skipped > 500
    assert dict(results.stats.anomalies) == expected
    [service] = [f for f in results.findings if f.type.value == "mail-service"]
    assert service.fields["message_end"] == ("lax" if expected else None)


PADDING = b"a line of a long message, dropped below Python unread\r\n"


def analyzed(path: Path, turns: list[tuple[ev.Side, bytes]], backend: str = "auto") -> tuple[Any, list[Any]]:
    """The results of the whole pipeline on the turns, cut into 1400-byte segments (``backend``: "auto", the
    compiled packet scanner; "python", its twin in Python)."""
    segments = conversation_segments([(side is S, data) for side, data in turns], CLIENT, SERVER, piece=1400)
    path.write_bytes(pcap_bytes(ethernet_frames(segments)))
    options = AnalysisOptions(local_domains=frozenset({"contoso.com"}), backend=backend)
    results = analyze_captures([str(path)], options)
    return results, results.findings


@pytest.mark.parametrize("backend", ["auto", "python"])
def test_cli_a_one_byte_segment_before_the_end_line_no_longer_makes_it_uncertain(tmp_path: Path, backend: str) -> None:
    """The last segment of a long message before its exact end line is one byte, its CR LF's LF: dropped below
    Python, its notice said only "\\n", and the end line after it was uncertain (decided by the replies, which here
    fit both readings to the close: the BDAT chunk's "." line looked like an exact end to read on to). The next
    transaction, pipelined with BDAT, was read as message text: the relay to both recipients lost. The scanner now
    reads such a segment: the end line is exact."""
    body = b"Subject: x\r\n\r\n" + PADDING * 20_000 + b"last line"
    body += b"x" * ((-len(body) - 1) % 1400) + b"\r\n"  # the turn's last segment: "\n" alone
    chunk = b"Subject: y\r\n\r\nhi\r\n.\r\n" + b"line after a dot line in a chunk\r\n" * 6
    pipelined = b".\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<b1@outside.test>\r\nRCPT TO:<b2@outside.test>\r\n"
    pipelined += b"BDAT %d LAST\r\n" % len(chunk) + chunk
    replies = b"250 2.0.0 Ok: queued as A\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 queued as B\r\n"
    results, findings = analyzed(tmp_path / "bdat.pcap", [*OPENING, (C, body), (C, pipelined), (S, replies)], backend)
    assert results.counters.segments_skipped > 500
    assert dict(results.stats.anomalies) == {}
    [relay] = [f for f in findings if f.type.value == "open-relay"]
    assert relay.fields["verdict"] == "open-relay"
    assert sorted(d["rcpt_to"] for d in relay.details) == ["b1@outside.test", "b2@outside.test"]
