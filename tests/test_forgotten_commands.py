"""Commands pipelined past what an SMTP or HTTP session keeps (``MAX_PENDING``), or too long to read: the oldest are
forgotten, or the line skipped, but the server still answers each, in turn. Those replies answer no command kept, so
that each kept command gets its own: a client that pipelined NOOPs before its transaction must not have a NOOP's 250
taken for its RCPT's."""

from __future__ import annotations

import base64

from dissectors.linebuffer import MAX_LINE
from dissectors.session import MAX_PENDING
from tests.test_verdict_dialogues import EHLO, credentials, findings, relays, turns

NOOPS = MAX_PENDING + 1


def _pipelined(first: str, replies: str, rcpt_reply: str) -> str:
    """``first`` (commands sent before them), NOOPS NOOPs, then MAIL and RCPT, all in one group; the server answers
    ``replies`` to ``first``, 250 to each NOOP and the MAIL, ``rcpt_reply`` to the RCPT."""
    noops = "<CRLF>".join(["NOOP"] * NOOPS)
    answers = "<CRLF>".join([*([replies] if replies else []), *["250 2.0.0 Ok"] * NOOPS, "250 2.1.0 Ok", rcpt_reply])
    group = "<CRLF>".join([*([first] if first else []), noops, "MAIL FROM:<a@spam.test>", "RCPT TO:<v@outside.test>"])
    return EHLO + f"C: {group}\nS: {answers}\nC: QUIT\nS: 221 2.0.0 Bye"


def test_a_refused_recipient_after_more_commands_than_are_kept_is_refused() -> None:
    script = _pipelined("", "", "554 5.7.1 <v@outside.test>: Relay access denied")
    assert relays(findings(script)) == [("refused", "info", "v@outside.test")]


def test_an_accepted_recipient_after_more_commands_than_are_kept_is_judged_on_its_own_reply() -> None:
    assert relays(findings(_pipelined("", "", "250 2.1.5 Ok"))) == [("open-relay", "high", "v@outside.test")]


def test_an_auth_forgotten_with_the_commands_leaves_its_verdict_unknown_and_the_replies_in_turn() -> None:
    """The AUTH that began the exchange was forgotten: which reply is its verdict is no longer known, and no other
    reply goes to a later command."""
    plain = "AUTH PLAIN " + base64.b64encode(b"\0alice\0secret").decode()
    records = findings(_pipelined(plain, "535 5.7.8 Error: authentication failed", "554 5.7.1 Relay access denied"))
    assert relays(records) == [("refused", "info", "v@outside.test")]
    [credential] = credentials(records)
    assert [attempt["outcome"] for attempt in credential["attempts"]] == [None]


def test_a_basic_login_after_more_requests_than_are_kept_gets_its_own_response() -> None:
    """HTTP answers pipelined requests in turn too: the responses to the requests forgotten are owed, and the 401 to
    the Basic login is its own, not a 200 to an earlier request."""
    request = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
    login = b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic " + base64.b64encode(b"admin:Guess123") + b"\r\n\r\n"
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    refused = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=x\r\nContent-Length: 0\r\n\r\n"
    [credential] = credentials(findings([(False, request * NOOPS + login), (True, ok * NOOPS + refused)], port=80))
    assert [(attempt["password"], attempt["outcome"]) for attempt in credential["attempts"]] == [
        ("Guess123", "failure")
    ]


def test_a_command_line_too_long_to_read_is_answered_in_turn() -> None:
    """A line past MAX_LINE is not read, but the server answers it (Postfix reads its start): that reply is its own,
    not the next command's, and the RCPT gets the 554 refusing it."""
    client = b"NOOP " + b"x" * (MAX_LINE + 4096) + b"\r\nMAIL FROM:<a@spam.test>\r\nRCPT TO:<v@outside.test>\r\n"
    replies = b"500 5.5.2 Error: line too long\r\n250 2.1.0 Ok\r\n554 5.7.1 <v@outside.test>: Relay access denied\r\n"
    steps = [
        *turns(EHLO.strip()),
        *[(False, client[start : start + 1400]) for start in range(0, len(client), 1400)],
        (True, replies),
        *turns("C: QUIT\nS: 221 2.0.0 Bye"),
    ]
    assert relays(findings(steps)) == [("refused", "info", "v@outside.test")]


def test_a_request_line_too_long_to_read_is_answered_in_turn() -> None:
    """The 414 answers the request whose line was too long to read; the Basic login gets the 401 refusing it."""
    login = b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic " + base64.b64encode(b"admin:Guess123") + b"\r\n\r\n"
    client = b"GET /" + b"x" * (MAX_LINE + 4096) + b" HTTP/1.1\r\nHost: h\r\n\r\n" + login
    responses = (
        b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\n\r\n"
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=x\r\nContent-Length: 0\r\n\r\n"
    )
    steps = [*[(False, client[start : start + 1400]) for start in range(0, len(client), 1400)], (True, responses)]
    [credential] = credentials(findings(steps, port=80))
    assert [(attempt["password"], attempt["outcome"]) for attempt in credential["attempts"]] == [
        ("Guess123", "failure")
    ]
