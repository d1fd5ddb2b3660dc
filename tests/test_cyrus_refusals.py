"""Cyrus IMAP's imapd and pop3d refuse logins they never checked in words of their own, under a plain ``NO`` or
``-ERR [AUTH]`` that otherwise says the credentials were wrong (imap/imapd.c, imap/pop3d.c, Cyrus 2.x to 3.x):

- a clear-text login before TLS where ``allowplaintext`` is off: ``NO Login only available under a layer`` (the
  password is not even read), ``NO Authenticate only available under a layer``, ``-ERR [AUTH] USER command only
  available under a layer``, ``-ERR [AUTH] AUTH command only available under a layer``;
- a SASL exchange its library refused for another reason than the credentials: imapd answers ``NO`` and Cyrus
  SASL's ``sasl_errstring`` (``generic failure``, ``no mechanism available``, ``transient failure (e.g., weak
  key)``...), pop3d ``-ERR [AUTH] authenticating:`` and the same. Those texts are the ones Postfix 2.3 to 3.0 relayed
  after its own words (dissectors.refusals.POSTFIX_BACKEND_REASONS); ``authentication failure`` stays judged.
"""

from __future__ import annotations

import pytest

from tests.test_pipelined_auth_attempts import b64
from tests.test_verdict_dialogues import credentials, findings

IMAP_GREETING = "S: * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] imap.example.org Cyrus IMAP 3.4.3 server ready\n"
POP3_GREETING = "S: +OK pop.example.org Cyrus POP3 3.4.3 server ready <1.2@pop.example.org>\n"
PLAIN = b64(chr(0) + "alice" + chr(0) + "secret")


def outcomes(script: str, port: int) -> list[str | None]:
    return [a["outcome"] for r in credentials(findings(script, port)) for a in r["attempts"]]


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        ("NO Login only available under a layer", None),
        ("NO Login failed: authentication failure", "failure"),
    ],
)
def test_imap_login_refused_before_tls_checked_nothing(reply: str, outcome: str | None) -> None:
    script = IMAP_GREETING + f"C: a1 LOGIN alice secret\nS: a1 {reply}\nC: a2 LOGOUT\nS: a2 OK Completed"
    assert outcomes(script, 143) == [outcome]


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        ("NO Authenticate only available under a layer", None),
        ("NO generic failure", None),
        ("NO transient failure (e.g., weak key)", None),
        ("NO remote authentication server unavailable", None),
        ("NO no mechanism available", None),
        ("NO authentication failure", "failure"),
        ("NO Error authenticating", "failure"),
    ],
)
def test_imap_authenticate_refused_by_cyrus_sasl(reply: str, outcome: str | None) -> None:
    script = IMAP_GREETING + f"C: a1 AUTHENTICATE PLAIN {PLAIN}\nS: a1 {reply}\nC: a2 LOGOUT\nS: a2 OK Completed"
    assert outcomes(script, 143) == [outcome]


@pytest.mark.parametrize(
    ("login", "reply", "outcome"),
    [
        (f"AUTH PLAIN {PLAIN}", "-ERR [AUTH] AUTH command only available under a layer", None),
        (f"AUTH PLAIN {PLAIN}", "-ERR [AUTH] authenticating: generic failure", None),
        (f"AUTH PLAIN {PLAIN}", "-ERR [AUTH] authenticating: remote authentication server unavailable", None),
        (f"AUTH PLAIN {PLAIN}", "-ERR [AUTH] authenticating: authentication failure", "failure"),
        (
            "USER alice\nS: -ERR [AUTH] USER command only available under a layer\nC: PASS secret",
            "-ERR [AUTH] Must give USER command",
            None,
        ),
        ("USER alice\nS: +OK Name is a valid mailbox\nC: PASS secret", "-ERR [AUTH] Invalid login", "failure"),
    ],
)
def test_pop3_logins_refused_by_cyrus(login: str, reply: str, outcome: str | None) -> None:
    script = POP3_GREETING + f"C: {login}\nS: {reply}\nC: QUIT\nS: +OK"
    assert outcomes(script, 110) == [outcome]
