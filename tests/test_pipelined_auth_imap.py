"""IMAP logins pipelined in one write: LOGIN and AUTHENTICATE with an initial response (SASL-IR, RFC 4959) each get
the tagged completion that names them (RFC 9051 section 2.2.2), whichever came first; a command pipelined after an
exchange's last response leaves that exchange awaiting its verdict. Crafted dialogues, read from a capture built
packet by packet (tests/test_verdict_dialogues.py)."""

from __future__ import annotations

import pytest

from dissectors import events as ev
from dissectors import sasl
from dissectors.imap import ImapSession
from tests.test_pipelined_auth_attempts import b64
from tests.test_verdict_dialogues import credentials, findings

GREETING = "S: * OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS AUTH=PLAIN] Dovecot ready."
FAILED, GRANTED = "NO [AUTHENTICATIONFAILED] Authentication failed.", "OK Logged in"


def authenticate(tag: str, password: str) -> str:
    return f"{tag} AUTHENTICATE PLAIN {b64(chr(0) + 'alice' + chr(0) + password)}"


def outcomes(script: str) -> list[tuple[str, str, str | None]]:
    """Each (mechanism, password, outcome) of the session's credentials, sorted."""
    found = credentials(findings(script, 143))
    return sorted((r["mechanism"], a["password"], a["outcome"]) for r in found for a in r["attempts"])


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        (f"a1 LOGIN alice wrong<CRLF>{authenticate('a2', 'right')}",
         [("IMAP-LOGIN", "wrong", "failure"), ("PLAIN", "right", "success")]),
        (f"{authenticate('a1', 'wrong')}<CRLF>a2 LOGIN alice right",
         [("IMAP-LOGIN", "right", "success"), ("PLAIN", "wrong", "failure")]),
        (f"{authenticate('a1', 'wrong')}<CRLF>{authenticate('a2', 'right')}",
         [("PLAIN", "right", "success"), ("PLAIN", "wrong", "failure")]),
    ],
    ids=["login-then-sasl-ir", "sasl-ir-then-login", "two-sasl-ir"],
)  # fmt: skip
def test_pipelined_logins_each_get_their_tagged_verdict(client: str, expected: list[tuple[str, str, str]]) -> None:
    script = f"{GREETING}\nC: {client}\nS: a1 {FAILED}<CRLF>a2 {GRANTED}"
    assert outcomes(script) == expected


def test_a_command_pipelined_after_the_last_response_leaves_the_verdict_to_come() -> None:
    """AUTHENTICATE PLAIN prompted, its response and SELECT in one write: the tagged OK that follows is the
    exchange's verdict, not lost because a command went by before it."""
    script = f"""{GREETING}
C: a1 AUTHENTICATE PLAIN
S: +
C: {b64(chr(0) + "alice" + chr(0) + "right")}<CRLF>a2 SELECT INBOX
S: a1 {GRANTED}<CRLF>* 0 EXISTS<CRLF>a2 OK [READ-WRITE] Select completed."""
    assert outcomes(script) == [("PLAIN", "right", "success")]


def test_a_login_answered_by_bye_has_no_verdict() -> None:
    """The server closed the connection (untagged BYE) instead of answering LOGIN: the password was not judged."""
    script = f"{GREETING}\nC: a1 LOGIN alice secret\nS: * BYE Disconnected for inactivity."
    assert outcomes(script) == [("IMAP-LOGIN", "secret", None)]


def test_past_the_exchanges_kept_a_login_still_gets_its_own_verdict() -> None:
    """More AUTHENTICATE commands pipelined than the tracker keeps (sasl.MAX_AWAITING), then a LOGIN: the tagged OK
    naming the LOGIN is the LOGIN's, not a verdict on an exchange no longer told apart."""
    session = ImapSession()
    group = [authenticate(f"a{n}", f"guess{n}") for n in range(sasl.MAX_AWAITING + 4)] + ["b1 LOGIN bob right"]
    events = session.receive(ev.Side.SERVER, b"* OK ready\r\n", 1)
    events += session.receive(ev.Side.CLIENT, "".join(line + "\r\n" for line in group).encode(), 2)
    events += session.receive(ev.Side.SERVER, b"b1 OK LOGIN completed\r\n", 3)
    assert [(r.mechanism, r.attempt, r.success) for r in events if isinstance(r, ev.AuthResult)] == [
        ("IMAP-LOGIN", sasl.MAX_AWAITING + 5, True)
    ]


@pytest.mark.parametrize(
    ("client", "answers", "expected"),
    [
        ("a LOGIN alice right<CRLF>a LOGIN alice wrong", ("a OK Logged in", "a BAD Error in IMAP command LOGIN"),
         [("IMAP-LOGIN", "right", "success"), ("IMAP-LOGIN", "wrong", None)]),
        ("a LOGIN alice wrong<CRLF>a LOGIN alice right", (f"a {FAILED}", f"a {GRANTED}"),
         [("IMAP-LOGIN", "right", "success"), ("IMAP-LOGIN", "wrong", "failure")]),
    ],
    ids=["right-then-unread", "wrong-then-right"],
)  # fmt: skip
def test_a_tag_reused_before_its_answer_is_answered_in_turn(
    client: str, answers: tuple[str, str], expected: list[tuple[str, str, str | None]]
) -> None:
    """Two LOGINs under one tag in one write (RFC 9051 forbids it; a server answers each in turn, under that tag):
    the first answer is the first LOGIN's, not the second's."""
    script = f"""{GREETING}
C: {client}
S: {answers[0]}
S: {answers[1]}
C: b LOGOUT
S: * BYE Logging out<CRLF>b OK Logout completed."""
    assert outcomes(script) == sorted(expected)
