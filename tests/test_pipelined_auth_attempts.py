"""Several AUTH commands pipelined in one group (a password guesser, a client retrying): an SMTP server answers each in
turn (RFC 2920), so the first verdict is the first AUTH's, the second the second's, and the replies to the MAIL and
RCPT sent after them come last. Each attempt's credentials get their own verdict, and the transaction is an
authenticated user's only when one of those verdicts granted it. Crafted dialogues, read from a capture built packet
by packet (tests/test_verdict_dialogues.py); the tracker alone, and under a flood, below."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from dissectors import events as ev
from dissectors import sasl
from dissectors.session import MAX_SESSION_BYTES
from dissectors.smtp import SmtpSession
from fuzz.amplify import deep_size
from tests.test_verdict_dialogues import EHLO, credentials, findings, relays

GRANTED, REFUSED = "235 2.7.0 Authentication successful", "535 5.7.8 Error: authentication failed"
ALREADY = "503 5.5.1 Error: already authenticated"  # RFC 4954 section 4: any AUTH after a successful one
TRANSACTION = "MAIL FROM:<a@contoso.com><CRLF>RCPT TO:<v@outside.test>"
ACCEPTED = "250 2.1.0 Ok<CRLF>250 2.1.5 Ok"
END = "C: QUIT\nS: 221 2.0.0 Bye"
OUTSIDE = [("open-relay", "high", "v@outside.test")]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def plain(password: str) -> str:
    return f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + password)}"


def two_plain(first: str, second: str, passwords: tuple[str, str] = ("wrong", "right")) -> str:
    """Two AUTH PLAIN (``passwords``), MAIL and RCPT in one group; the server's four replies (``first``, ``second``
    and the 250s) in one."""
    client = f"{plain(passwords[0])}<CRLF>{plain(passwords[1])}<CRLF>{TRANSACTION}"
    return EHLO + f"C: {client}\nS: {first}<CRLF>{second}<CRLF>{ACCEPTED}\n{END}"


def attempts(records: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """Each (password, outcome) of the session's credentials, in the order first sent."""
    return [(a["password"], a["outcome"]) for record in credentials(records) for a in record["attempts"]]


def test_a_refused_then_a_granted_auth_each_get_their_own_verdict() -> None:
    """The 535 is the first AUTH's, the 235 the second's; the 235 came before the replies to MAIL and RCPT: the
    transaction is an authenticated user's, no relay."""
    records = findings(two_plain(REFUSED, GRANTED))
    assert attempts(records) == [("wrong", "failure"), ("right", "success")]
    assert relays(records) == []


def test_two_refused_auths_leave_an_unauthenticated_transaction_judged_on_its_replies() -> None:
    """Both verdicts seen, both refusals: relaying by a client that did not authenticate, high (not possible-relay,
    as when a verdict is missing)."""
    records = findings(two_plain(REFUSED, REFUSED))
    assert attempts(records) == [("wrong", "failure"), ("right", "failure")]
    assert relays(records) == OUTSIDE


def test_an_auth_after_a_granted_one_gets_the_503_not_the_235() -> None:
    """The first AUTH is granted; the server refuses any AUTH after that with 503 (RFC 4954 section 4): the 503 is the
    second's, the 235 the first's, and the transaction is authenticated. The 503 never checked the second password:
    its outcome is unknown, not a failure."""
    records = findings(two_plain(GRANTED, ALREADY, ("right", "other")))
    assert attempts(records) == [("right", "success"), ("other", None)]
    assert relays(records) == []
    [record] = credentials(records)
    assert record["password"] == "right" and record["outcome"] == "success"


@pytest.mark.parametrize(
    ("verdicts", "expected", "relay"),
    [
        ((REFUSED, GRANTED), [("wrong", "failure"), ("right", "success")], []),
        ((REFUSED, REFUSED), [("wrong", "failure"), ("right", "failure")], OUTSIDE),
    ],
    ids=["refused-granted", "refused-refused"],
)
def test_auth_plain_pipelined_behind_a_login_password(
    verdicts: tuple[str, str], expected: list[tuple[str, str]], relay: list[tuple[str, str, str]]
) -> None:
    """LOGIN's password (answering the server's prompt), then AUTH PLAIN and the transaction in the same group."""
    script = (
        EHLO
        + f"""C: AUTH LOGIN
S: 334 VXNlcm5hbWU6
C: {b64("alice")}
S: 334 UGFzc3dvcmQ6
C: {b64("wrong")}<CRLF>{plain("right")}<CRLF>{TRANSACTION}
S: {verdicts[0]}<CRLF>{verdicts[1]}<CRLF>{ACCEPTED}
{END}"""
    )
    records = findings(script)
    assert sorted(attempts(records)) == sorted(expected)  # a finding per mechanism: LOGIN's, PLAIN's
    assert {r["mechanism"] for r in credentials(records)} == {"LOGIN", "PLAIN"}
    assert relays(records) == relay


def test_a_capture_of_the_client_side_alone_keeps_every_pipelined_password() -> None:
    """No server bytes: each AUTH's credentials are read when sent and reported without a verdict."""
    script = f"C: EHLO client.example\nC: {plain('wrong')}<CRLF>{plain('right')}<CRLF>{TRANSACTION}\nC: QUIT"
    records = findings(script)
    assert attempts(records) == [("wrong", None), ("right", None)]
    assert relays(records) == []


def test_a_reply_that_answers_no_auth_ends_every_exchange_awaiting_a_verdict() -> None:
    """The 250 to MAIL where two verdicts were due: both were lost, the replies answer MAIL and RCPT, and the
    transaction may be an authenticated user's (possible-relay)."""
    script = EHLO + f"C: {plain('wrong')}<CRLF>{plain('right')}<CRLF>{TRANSACTION}\nS: {ACCEPTED}\n{END}"
    records = findings(script)
    assert attempts(records) == [("wrong", None), ("right", None)]
    assert [(verdict, severity) for verdict, severity, _ in relays(records)] == [("possible-relay", "medium")]


def test_a_command_pipelined_behind_a_prompted_auth_is_its_response_not_a_transaction() -> None:
    """AUTH PLAIN without an initial response, MAIL and RCPT in one group: the server prompts (334) and reads MAIL as
    the response (Postfix: 535, invalid base64); the 503 is RCPT's, the 250 the next MAIL's. No recipient was
    accepted: no relay (the 250 once went to the RCPT, an open relay)."""
    invalid = "535 5.7.8 Error: authentication failed: Invalid base64 data in continued response"
    script = (
        EHLO
        + f"""C: AUTH PLAIN<CRLF>{TRANSACTION}
S: 334 <CRLF>{invalid}<CRLF>503 5.5.1 Error: need MAIL command
C: MAIL FROM:<a@contoso.com>
S: 250 2.1.0 Ok
{END}"""
    )
    assert relays(findings(script)) == []


# -- the tracker and the session's events ---------------------------------------------------------------------------


def feed(session: SmtpSession, script: list[tuple[ev.Side, str]]) -> list[ev.Event]:
    events: list[ev.Event] = []
    for frame, (side, text) in enumerate(script, start=1):
        events += session.receive(side, text.encode() + b"\r\n", frame, 1000.0 + frame)
    return events


def test_each_verdict_names_the_exchange_it_judges() -> None:
    C, S = ev.Side.CLIENT, ev.Side.SERVER
    group = "\r\n".join([plain("a"), plain("b"), plain("c"), "MAIL FROM:<a@contoso.com>"])
    events = feed(
        SmtpSession(), [(S, "220 mx ESMTP"), (C, group), (S, "\r\n".join([REFUSED, REFUSED, GRANTED, "250 Ok"]))]
    )
    assert [(c.password, c.attempt) for c in events if isinstance(c, ev.Credentials)] == [("a", 1), ("b", 2), ("c", 3)]
    assert [(r.attempt, r.success) for r in events if isinstance(r, ev.AuthResult)] == [
        (1, False),
        (2, False),
        (3, True),
    ]
    assert [m.accepted for m in events if isinstance(m, ev.MailFrom)] == [True]
    assert not [e for e in events if isinstance(e, (ev.AuthAbandoned, ev.Anomaly))]


def test_a_tracker_not_told_of_answers_in_turn_ends_an_exchange_at_the_next_auth() -> None:
    """Without ``in_order`` a new AUTH ends the open exchange, its verdict never seen. The POP3 and IMAP sessions,
    whose servers answer in turn, keep it awaiting (tests/test_pipelined_auth_pop3.py, test_pipelined_auth_imap.py)."""
    tracker = sasl.AuthTracker("pop3")
    events = tracker.client_line(plain("a")) + tracker.client_line(plain("b"))
    assert [type(e).__name__ for e in events if not isinstance(e, (sasl.SaslBlob, sasl.SaslCredentials))] == [
        "SaslStarted", "SaslAnomaly", "SaslAbandoned", "SaslStarted"
    ]  # fmt: skip


def test_a_flood_of_pipelined_auths_stays_bounded_and_keeps_the_verdicts_in_turn() -> None:
    """A guesser pipelining thousands of AUTH commands: the exchanges kept awaiting verdicts stay within MAX_AWAITING
    (counted in buffered_bytes), the older ones only counted, so that the server's verdicts, in turn, still reach
    the exchanges they judge: the last of them, granted, is the last AUTH's."""
    C, S = ev.Side.CLIENT, ev.Side.SERVER
    count = 2000
    session = SmtpSession()
    events = feed(session, [(S, "220 mx ESMTP")])
    for first in range(0, count, 100):
        events += feed(session, [(C, "\r\n".join(plain(f"guess{n}") for n in range(first, first + 100)))])
        assert len(session.auth.awaiting) <= sasl.MAX_AWAITING
        assert session.buffered_bytes() <= MAX_SESSION_BYTES
    assert deep_size(session.auth) <= session.auth.held_bytes() + 8 * 1024
    anomalies = [e.code for e in events if isinstance(e, ev.Anomaly)]
    assert anomalies == ["sasl_too_many_awaiting"] * (count - 1 - sasl.MAX_AWAITING)
    verdicts = [REFUSED] * (count - 1) + [GRANTED]
    events = feed(session, [(S, "\r\n".join(verdicts))])
    results = [e for e in events if isinstance(e, ev.AuthResult)]
    assert len(results) == count and results[-1].success and results[-1].attempt == count
    assert [r.attempt for r in results[-sasl.MAX_AWAITING - 1 :]] == list(range(count - sasl.MAX_AWAITING, count + 1))
    assert not session.auth.active and session.authenticated
