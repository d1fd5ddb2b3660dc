"""POP3 logins pipelined in one write (RFC 2449 section 6.6): the server answers the commands in turn, AUTH included,
so the first verdict is the first login's, whichever command (AUTH with an initial response, RFC 5034; PASS; APOP)
carried it. A continuation (``+``) is the AUTH's own, and the server reads the client's next line as its response,
even when that line was a command pipelined after the AUTH. Crafted dialogues, read from a capture built packet by
packet (tests/test_verdict_dialogues.py) or fed to the session; Dovecot's in tests/test_pipelined_auth_lab.py."""

from __future__ import annotations

import base64

import pytest

from dissectors import events as ev
from dissectors import ntlmssp, sasl
from dissectors.pop3 import Pop3Session
from dissectors.session import MAX_PENDING, MAX_SESSION_BYTES
from fuzz.amplify import deep_size
from tests.test_pipelined_auth_attempts import b64, plain
from tests.test_verdict_dialogues import credentials, findings, turns

C, S = ev.Side.CLIENT, ev.Side.SERVER
GREETING = "S: +OK Dovecot ready."
FAILED = "-ERR [AUTH] Authentication failed."
GRANTED = "+OK Logged in."


def outcomes(script: str) -> list[tuple[str, str, str | None]]:
    """Each (mechanism, password, outcome) of the session's credentials, by mechanism, in the order first sent."""
    found = credentials(findings(script, 110))
    return [(r["mechanism"], a["password"], a["outcome"]) for r in found for a in r["attempts"]]


def feed(session: Pop3Session, script: list[tuple[ev.Side, str]]) -> list[ev.Event]:
    events: list[ev.Event] = []
    for frame, (side, text) in enumerate(script, start=1):
        events += session.receive(side, text.encode() + b"\r\n", frame, 1000.0 + frame)
    return events


def verdicts(events: list[ev.Event]) -> list[tuple[str, int | None, str | None]]:
    return [(r.mechanism, r.attempt, r.outcome) for r in events if isinstance(r, ev.AuthResult)]


def test_two_auth_plain_each_get_their_own_verdict() -> None:
    """The wrong password first, the right one second, in one write: the -ERR is the first's, the +OK the second's."""
    script = f"{GREETING}\nC: {plain('wrong')}<CRLF>{plain('right')}\nS: {FAILED}<CRLF>{GRANTED}\nC: QUIT\nS: +OK Bye"
    assert outcomes(script) == [("PLAIN", "wrong", "failure"), ("PLAIN", "right", "success")]


def test_an_auth_after_a_granted_one_is_refused_without_judging_its_password() -> None:
    """The first AUTH logged in; the server refuses the second in the transaction state (RFC 1939: no login there):
    the -ERR never checked its password."""
    script = f"{GREETING}\nC: {plain('right')}<CRLF>{plain('other')}\nS: {GRANTED}<CRLF>-ERR Unknown command: AUTH"
    assert outcomes(script) == [("PLAIN", "right", "success"), ("PLAIN", "other", None)]


def test_pass_then_auth_in_one_write() -> None:
    """USER answered, then PASS (wrong) and AUTH PLAIN (right) in one write: the -ERR is PASS's, the +OK the AUTH's."""
    script = f"""{GREETING}
C: USER alice
S: +OK
C: PASS wrong<CRLF>{plain("right")}
S: {FAILED}<CRLF>{GRANTED}"""
    assert outcomes(script) == [("USER-PASS", "wrong", "failure"), ("PLAIN", "right", "success")]


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        ((FAILED, "+OK", GRANTED), [("PLAIN", "wrong", "failure"), ("USER-PASS", "right", "success")]),
        ((GRANTED, "-ERR Unknown command: USER", "-ERR Unknown command: PASS"),
         [("PLAIN", "right", "success"), ("USER-PASS", "other", None)]),
    ],
    ids=["auth-refused", "auth-granted"],
)  # fmt: skip
def test_auth_then_user_and_pass_in_one_write(replies: tuple[str, ...], expected: list[tuple[str, str, str]]) -> None:
    """AUTH PLAIN, USER and PASS in one write: the first reply is the AUTH's, the last PASS's."""
    passwords = [password for _, password, _ in expected]
    client = f"{plain(passwords[0])}<CRLF>USER alice<CRLF>PASS {passwords[1]}"
    script = f"{GREETING}\nC: {client}\nS: {'<CRLF>'.join(replies)}"
    assert outcomes(script) == expected


def test_apop_then_auth_in_one_write() -> None:
    """The greeting gives APOP's timestamp (without one the server has nothing to check a digest against)."""
    greeting = f"{GREETING} <1896.697170952@mail.example>"
    script = f"{greeting}\nC: APOP alice {'0' * 32}<CRLF>{plain('right')}\nS: -ERR [AUTH] bad digest<CRLF>{GRANTED}"
    assert outcomes(script) == [("APOP", "0" * 32, "failure"), ("PLAIN", "right", "success")]


def test_the_acceptance_of_stls_is_no_verdict_on_an_auth_pipelined_behind_it() -> None:
    """STLS and AUTH PLAIN in one write (RFC 2595 section 4: the server reads nothing after STLS before TLS): the +OK
    is STLS's, TLS begins, and the password crossed in clear with no verdict."""
    hello, answer = b"\x16\x03\x01\x00\x05hello", b"\x16\x03\x03\x00\x05world"
    script = [(True, b"+OK Dovecot ready.\r\n"), (False, f"STLS\r\n{plain('secret')}\r\n".encode()),
              (True, b"+OK Begin TLS negotiation now.\r\n"), (False, hello), (True, answer)]  # fmt: skip
    [found] = credentials(findings(script, 110))
    assert (found["password"], found["outcome"], found["tls"]) == ("secret", None, False)


def test_a_command_pipelined_behind_a_prompted_auth_is_read_as_its_response() -> None:
    """AUTH PLAIN without an initial response and USER in one write: the server prompts ("+ ") and reads USER as the
    response (invalid base64: -ERR). USER awaits no reply of its own: the +OK to the next USER, then PASS's, are
    theirs, and the password that worked is told so."""
    script = f"""{GREETING}
C: AUTH PLAIN<CRLF>USER alice
S: + <CRLF>-ERR [AUTH] Invalid base64 data in continued response
C: USER alice
S: +OK
C: PASS right
S: {GRANTED}"""
    assert outcomes(script) == [("USER-PASS", "right", "success")]
    events = feed(Pop3Session(), [(S if server else C, data.decode()[:-2]) for server, data in turns(script)])
    assert [a.code for a in events if isinstance(a, ev.Anomaly)] == ["command_read_as_response"]
    # The refusal says the response was no base64: nothing was checked (dissectors.refusals).
    assert verdicts(events) == [("PLAIN", 1, None), ("USER-PASS", 2, "success")]


def test_an_auth_pipelined_behind_a_prompted_auth_never_began_for_the_server() -> None:
    """AUTH PLAIN without an initial response, then AUTH PLAIN with one, in one write: the server reads the second
    AUTH line as the first's response and refuses it; the second exchange's password was never checked."""
    session = Pop3Session()
    script = [(S, "+OK ready"), (C, f"AUTH PLAIN\r\n{plain('secret')}"), (S, "+ \r\n-ERR [AUTH] Invalid base64 data"),
              (C, "STAT"), (S, "-ERR not logged in")]  # fmt: skip
    events = feed(session, script)
    assert [(c.password, c.attempt) for c in events if isinstance(c, ev.Credentials)] == [("secret", 2)]
    assert verdicts(events) == [("PLAIN", 1, "failure")]
    assert [(a.attempt, a.mechanism) for a in events if isinstance(a, ev.AuthAbandoned)] == [(2, "PLAIN")]
    assert not session.auth.active and not session.pending  # the STAT's -ERR was STAT's


def test_a_response_sent_ahead_of_the_prompt_answers_it() -> None:
    """AUTH PLAIN, its response and STAT in one write: the prompt that follows is answered by the response already
    sent, and STAT is still a command, answered after the verdict."""
    response = b64("\0alice\0pw")
    script = [(S, "+OK ready"), (C, f"AUTH PLAIN\r\n{response}\r\nSTAT"), (S, f"+ \r\n{GRANTED}\r\n+OK 0 0")]
    session = Pop3Session()
    events = feed(session, script)
    assert verdicts(events) == [("PLAIN", 1, "success")]
    assert not [a for a in events if isinstance(a, ev.Anomaly)] and not session.pending


def test_the_tracker_keeps_a_pop3_exchange_awaiting_its_verdict_at_the_next_auth() -> None:
    """A POP3 server answers the AUTH commands in turn: the first awaits its verdict, as SMTP's do."""
    tracker = sasl.AuthTracker("pop3", in_order=True)
    events = tracker.client_line(plain("a")) + tracker.client_line(plain("b"))
    assert [type(e).__name__ for e in events if not isinstance(e, (sasl.SaslBlob, sasl.SaslCredentials))] == [
        "SaslStarted", "SaslStarted"
    ]  # fmt: skip
    assert tracker.unanswered() == 2
    assert [(o.attempt, o.success) for o in tracker.server_line(FAILED) + tracker.server_line(GRANTED)] == [
        (1, False),
        (2, True),
    ]


def test_a_flood_of_pipelined_auths_stays_bounded_and_keeps_the_verdicts_in_turn() -> None:
    """A guesser pipelining thousands of AUTH commands: the commands and exchanges kept stay within MAX_PENDING and
    MAX_AWAITING, and the server's verdicts, in turn, still reach the exchanges they judge: the last, granted, is the
    last AUTH's; the reply to the STAT sent after them is STAT's."""
    count = 2000
    session = Pop3Session()
    events = feed(session, [(S, "+OK ready")])
    for first in range(0, count, 100):
        events += feed(session, [(C, "\r\n".join(plain(f"guess{n}") for n in range(first, first + 100)))])
        assert len(session.auth.awaiting) <= sasl.MAX_AWAITING and len(session.pending) <= MAX_PENDING
        assert session.buffered_bytes() <= MAX_SESSION_BYTES
    events += feed(session, [(C, "STAT")])
    assert deep_size(session.auth) <= session.auth.held_bytes() + 8 * 1024
    events = feed(session, [(S, "\r\n".join([FAILED] * (count - 1) + [GRANTED, "+OK 0 0"]))])
    results = [e for e in events if isinstance(e, ev.AuthResult)]
    assert len(results) == count and results[-1].success and results[-1].attempt == count
    assert [r.attempt for r in results[-sasl.MAX_AWAITING - 1 :]] == list(range(count - sasl.MAX_AWAITING, count + 1))
    assert not session.auth.active and session.authenticated and not session.pending
    assert not [a for a in events if isinstance(a, ev.Anomaly)]


def test_a_negotiate_pipelined_behind_auth_ntlm_does_not_make_its_go_ahead_a_verdict() -> None:
    """[MS-POP3] 2.2.1.2: "+OK" to AUTH NTLM says NTLM is supported. A client that sends its NEGOTIATE in the same
    write has that "+OK" answered already; it is no success: the exchange goes on to the CHALLENGE and the verdict."""
    negotiate = base64.b64encode(ntlmssp.build_negotiate()).decode()
    challenge = base64.b64encode(ntlmssp.build_challenge()).decode()
    script = [(S, "+OK ready"), (C, f"AUTH NTLM\r\n{negotiate}"), (S, f"+OK\r\n+ {challenge}"), (C, "*"),
              (S, "-ERR [AUTH] Authentication cancelled")]  # fmt: skip
    events = feed(Pop3Session(), script)
    assert [type(e).__name__ for e in events if isinstance(e, ev.SaslStep)] == ["SaslStep", "SaslStep"]
    assert [(r.mechanism, r.success) for r in events if isinstance(r, ev.AuthResult)] == [("NTLM", False)]
    assert not [a for a in events if isinstance(a, ev.Anomaly)]


def test_a_verdict_past_forgotten_commands_is_unknown() -> None:
    """129 pipelined USERs, then USER and PASS: past MAX_PENDING the oldest are forgotten, but the server answers
    them first, in turn: which answer is the PASS's is unknown, and the password is not told right (it was not)."""
    many = "<CRLF>".join(["USER a"] * 129)
    answers = "<CRLF>".join(["+OK"] * 130)
    script = f"""{GREETING}
C: {many}<CRLF>USER admin<CRLF>PASS Guess123
S: {answers}<CRLF>-ERR [AUTH] Authentication failed.
C: QUIT
S: +OK Logging out."""
    assert outcomes(script) == [("USER-PASS", "Guess123", None)]


def test_a_command_line_too_long_to_read_is_answered_in_turn() -> None:
    """A USER line over MAX_LINE, then USER and PASS: the server's -ERR to the long line is its, in turn."""
    client = b"USER " + b"x" * 70_000 + b"\r\nUSER admin\r\nPASS Guess123\r\n"
    steps = [(True, b"+OK Dovecot ready.\r\n")]
    steps += [(False, client[start : start + 1400]) for start in range(0, len(client), 1400)]
    steps += [(True, b"-ERR Line too long\r\n+OK\r\n-ERR [AUTH] Authentication failed.\r\n"), (False, b"QUIT\r\n")]
    found = credentials(findings(steps, 110))
    assert [(a["password"], a["outcome"]) for r in found for a in r["attempts"]] == [("Guess123", "failure")]
