"""IMAP UNAUTHENTICATE (RFC 8437): once the server answers it OK the session is back in the not authenticated state,
as before its login. A LOGIN or AUTHENTICATE after it is a first login again, and a refusal of it judged the password
(before, every refusal after the session's first login was read as one of a login sent once logged in: unjudged), and
what the server lists from then on says what it offers before a login. An UNAUTHENTICATE the server refused changes
nothing."""

from __future__ import annotations

import pytest

from dissectors import events as ev
from dissectors.imap import ImapSession
from tests.test_pipelined_auth_attempts import attempts, b64
from tests.test_verdict_dialogues import findings

GREETING = "S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN UNAUTHENTICATE] ready\n"
LOGGED_IN = GREETING + "C: a1 LOGIN alice right\nS: a1 OK Logged in\nC: a2 UNAUTHENTICATE\n"
AGAIN = {
    "LOGIN": "a3 LOGIN alice other",
    "AUTHENTICATE": f"a3 AUTHENTICATE PLAIN {b64(chr(0) + 'alice' + chr(0) + 'other')}",
}
FAILED = "a3 NO [AUTHENTICATIONFAILED] Authentication failed."
END = "C: a4 LOGOUT\nS: * BYE\nS: a4 OK Logout completed."


@pytest.mark.parametrize("command", sorted(AGAIN))
def test_a_login_refused_after_unauthenticate_failed_its_password(command: str) -> None:
    script = LOGGED_IN + f"S: a2 OK Unauthenticated\nC: {AGAIN[command]}\nS: {FAILED}\n{END}"
    assert attempts(findings(script, 143)) == [("right", "success"), ("other", "failure")]


@pytest.mark.parametrize("answer", ["a2 BAD Error in IMAP command UNAUTHENTICATE: Unknown command.", "a2 NO not now"])
@pytest.mark.parametrize("command", sorted(AGAIN))
def test_an_unauthenticate_the_server_refused_leaves_the_session_logged_in(command: str, answer: str) -> None:
    """Dovecot knows no UNAUTHENTICATE (BAD): the LOGIN after it comes once logged in, and its refusal read nothing."""
    script = LOGGED_IN + f"S: {answer}\nC: {AGAIN[command]}\nS: {FAILED}\n{END}"
    assert attempts(findings(script, 143)) == [("right", "success"), ("other", None)]


def test_a_listing_after_unauthenticate_says_what_the_server_offers_before_a_login() -> None:
    """The listing in the OK to UNAUTHENTICATE (or after it) is the not authenticated state's: without STARTTLS, the
    server does not offer it. One in the OK to LOGIN says nothing of it (tests/test_unjudged_refusals.py)."""
    logged_in = LOGGED_IN.replace(GREETING, "S: * OK ready\n")  # no listing before the login
    script = logged_in + f"S: a2 OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] Unauthenticated\n{END}"
    [service] = [r for r in findings(script, 143) if r["type"] == "mail-service"]
    assert service["starttls_offered"] is False


def test_the_session_says_it_is_no_longer_authenticated() -> None:
    session = ImapSession()
    events: list[ev.Event] = []
    for line in (LOGGED_IN + "S: a2 OK Unauthenticated").splitlines():
        who, _, text = line.partition(": ")
        side = ev.Side.SERVER if who == "S" else ev.Side.CLIENT
        events += session.receive(side, text.encode() + b"\r\n")
    assert not session.authenticated
    assert [type(e).__name__ for e in events if isinstance(e, (ev.AuthResult, ev.Unauthenticated))] == [
        "AuthResult",
        "Unauthenticated",
    ]
    [done] = [e for e in events if isinstance(e, ev.Unauthenticated)]
    assert done.side is ev.Side.SERVER and done.evidence.line == "a2 OK Unauthenticated"
