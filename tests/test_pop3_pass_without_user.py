"""A POP3 ``PASS`` the server could take only "immediately after a successful USER command" (RFC 1939 section 7):
after a ``USER`` it refused, or with no ``USER`` before it, its ``-ERR`` says the password was never looked at (Cyrus
popd: "-ERR [AUTH] Must give USER command"; Dovecot: "-ERR No username given."), so no failure is claimed; nor
after another ``PASS``: a ``USER`` serves one ``PASS``, and Dovecot 2.3 answers a second one, the right password
included, "-ERR No username given.". A ``PASS`` right after a ``USER`` the server took keeps its verdict, and so
does one whose ``USER`` the capture may not show (a session picked up mid-stream, client bytes lost before it)."""

from __future__ import annotations

import pytest

from dissectors import events as ev
from dissectors.pop3 import Pop3Session
from tests.test_mail_dissectors import feed, kinds
from tests.test_verdict_dialogues import credentials, findings

C, S = ev.Side.CLIENT, ev.Side.SERVER


def outcomes(script: str) -> dict[str | None, str | None]:
    """The outcome of each password sent in a POP3 session."""
    return {a["password"]: a["outcome"] for r in credentials(findings(script, 110)) for a in r["attempts"]}


@pytest.mark.parametrize(
    "script",
    [
        # Cyrus refuses a user it cannot canonify, then any PASS without a USER it took.
        "S: +OK Cyrus POP3 ready\nC: USER alice\nS: -ERR [AUTH] Invalid user\nC: PASS secret1\n"
        "S: -ERR [AUTH] Must give USER command\nC: QUIT\nS: +OK",
        # Dovecot answers a PASS without any USER before it.
        "S: +OK Dovecot ready.\nC: PASS secret1\nS: -ERR No username given.\nC: QUIT\nS: +OK Logging out",
        # Dovecot forgets the user a refused PASS named: a second PASS has none (here the right password).
        "S: +OK Dovecot (Debian) ready.\nC: USER alice\nS: +OK\nC: PASS wrong\nS: -ERR [AUTH] Authentication failed.\n"
        "C: PASS secret1\nS: -ERR No username given.\nC: QUIT\nS: +OK Logging out",
        # A USER pipelined behind an AUTH the server prompted is read as the AUTH's response: no USER for the PASS.
        "S: +OK Dovecot ready.\nC: AUTH PLAIN<CRLF>USER alice<CRLF>PASS secret1\n"
        "S: + <CRLF>-ERR [AUTH] Invalid base64 data in continued response<CRLF>-ERR No username given.\nC: QUIT",
        # Pipelined (RFC 2449 PIPELINING): the USER's refusal comes first, in turn.
        "S: +OK ready\nC: USER alice<CRLF>PASS secret1\nS: -ERR [AUTH] Invalid user<CRLF>-ERR [AUTH] Must give USER "
        "command\nC: QUIT\nS: +OK",
    ],
    ids=["user-refused", "no-user", "pass-again", "user-read-as-response", "pipelined"],
)
def test_a_pass_the_server_could_not_take_is_no_failed_password(script: str) -> None:
    assert outcomes(script).get("secret1", "missing") is None


def test_a_pass_after_a_user_the_server_took_keeps_its_verdict() -> None:
    """A refused USER, then one the server took: the PASS after the second is judged; pipelined USER and PASS pairs
    each follow their own USER."""
    script = (
        "S: +OK ready\nC: USER alice\nS: -ERR [AUTH] Invalid user\nC: USER bob\nS: +OK\nC: PASS secret1\n"
        "S: -ERR [AUTH] Authentication failed.\nC: USER carol<CRLF>PASS secret2<CRLF>USER dave<CRLF>PASS secret3\n"
        "S: -ERR [AUTH] Invalid user<CRLF>-ERR [AUTH] Must give USER command<CRLF>+OK<CRLF>+OK Logged in.\nC: QUIT"
    )
    assert outcomes(script) == {"secret1": "failure", "secret2": None, "secret3": "success"}


def test_a_pass_whose_user_the_capture_may_not_show_keeps_its_verdict() -> None:
    """A session picked up mid-stream: its USER may have come before the capture."""
    session = Pop3Session(partial=True)
    events = feed(session, [(C, b"PASS secret1\r\n"), (S, b"-ERR [AUTH] Authentication failed.\r\n")])
    assert [(r.success, r.judged) for r in kinds(events, ev.AuthResult)] == [(False, True)]


@pytest.mark.parametrize(
    ("greeting", "outcome"),
    [
        ("+OK Dovecot (Debian) ready.", None),  # "-ERR APOP not enabled.": no timestamp, no digest to check
        ("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>", "failure"),
    ],
)
def test_an_apop_digest_is_judged_only_against_a_greeting_timestamp(greeting: str, outcome: str | None) -> None:
    """RFC 1939 section 7: APOP's digest is MD5 of the greeting's timestamp and the secret. A server whose greeting
    gave none cannot check it (Dovecot 2.3 answers "-ERR APOP not enabled."): its -ERR is no failed digest."""
    script = f"S: {greeting}\nC: APOP alice c4c9334bac560ecc979e58001b3e22fb\nS: -ERR APOP not enabled.\nC: QUIT"
    digests = {a["password"]: a["outcome"] for r in credentials(findings(script, 110)) for a in r["attempts"]}
    assert digests == {"c4c9334bac560ecc979e58001b3e22fb": outcome}


def test_a_pass_again_after_a_refused_one_is_judged_unless_the_server_says_it_has_no_user() -> None:
    """hMailServer keeps the user a refused PASS named and checks every PASS after it against that user, each one of
    the connection's logon attempts ("-ERR Invalid user name or password."): one USER and many PASSes is a brute
    force of as many passwords. Dovecot, Cyrus, hMailServer's later releases and XMail say they have no user."""
    hmail = (
        "S: +OK Welcome to hMailServer\nC: USER alice\nS: +OK Send your password\nC: PASS wrong1\n"
        "S: -ERR Invalid user name or password.\nC: PASS wrong2<CRLF>PASS wrong3\nS: -ERR Invalid user name or "
        "password.<CRLF>-ERR Invalid user name or password.\nC: PASS secret1\nS: +OK Mailbox locked and ready\nC: QUIT"
    )
    assert outcomes(hmail) == {"wrong1": "failure", "wrong2": "failure", "wrong3": "failure", "secret1": "success"}
    for refusal in ("-ERR No username given.", "-ERR [AUTH] Must give USER command", "-ERR Send USER first.",
                    "-ERR Command not valid here"):  # fmt: skip
        script = (
            f"S: +OK ready\nC: USER alice\nS: +OK\nC: PASS wrong1\nS: -ERR [AUTH] Authentication failed.\n"
            f"C: PASS secret1\nS: {refusal}\nC: QUIT"
        )
        assert outcomes(script) == {"wrong1": "failure", "secret1": None}, refusal
