"""RFC 9051 section 6.2.3 (RFC 3501 too): a server that lists LOGINDISABLED refuses the LOGIN command; its NO to a
LOGIN sent anyway checked no password, whatever its words (Courier, Exchange and Cyrus list it where clear text is
refused before TLS, and answer in words of their own). AUTHENTICATE is not LOGIN: its refusal is still judged."""

from __future__ import annotations

import pytest

from tests.test_pipelined_auth_attempts import b64
from tests.test_verdict_dialogues import credentials, findings

PLAIN = b64(chr(0) + "alice" + chr(0) + "secret")


def outcomes(script: str) -> list[str | None]:
    return [a["outcome"] for r in credentials(findings(script, 143)) for a in r["attempts"]]


@pytest.mark.parametrize(
    ("listing", "outcome"),
    [
        ("S: * OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready", None),
        ("S: * OK ready\nC: a0 CAPABILITY\nS: * CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\nS: a0 OK done", None),
        ("S: * OK [CAPABILITY IMAP4rev1 STARTTLS] ready", "failure"),
        ("S: * OK ready", "failure"),
    ],
    ids=["greeting", "capability", "not-listed", "no-listing"],
)
def test_a_login_refused_by_a_server_that_listed_logindisabled_checked_no_password(
    listing: str, outcome: str | None
) -> None:
    script = f"{listing}\nC: a1 LOGIN alice secret\nS: a1 NO Login failed.\nC: a2 LOGOUT\nS: a2 OK bye"
    assert outcomes(script) == [outcome]


def test_authenticate_is_judged_whatever_logindisabled_says() -> None:
    script = (
        "S: * OK [CAPABILITY IMAP4rev1 LOGINDISABLED AUTH=PLAIN] ready\n"
        f"C: a1 AUTHENTICATE PLAIN {PLAIN}\nS: a1 NO [AUTHENTICATIONFAILED] Authentication failed.\nC: a2 LOGOUT"
    )
    assert outcomes(script) == ["failure"]
