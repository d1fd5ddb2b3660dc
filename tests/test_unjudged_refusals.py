"""Refusals that never checked the credentials: an AUTH out of sequence (SMTP 503), a mechanism refused (504, 534),
encryption required (538, IMAP NO [PRIVACYREQUIRED]), a response that could not be read (501, IMAP BAD), a server
unable to check now (454, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]). They end the exchange and leave the session
unauthenticated, but say nothing of the password: its outcome is unknown (null), not "failure", which would tell an
analyst that a leaked password is wrong. A refusal that checked it (535, NO [AUTHENTICATIONFAILED], -ERR [AUTH]) still
fails it. Crafted dialogues read from captures built packet by packet (tests/test_verdict_dialogues.py), then the
session's events and the classifier alone."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from dissectors import events as ev
from dissectors import refusals, sasl
from dissectors.imap import ImapSession
from dissectors.pop3 import Pop3Session
from dissectors.session import MailSession
from dissectors.smtp import SmtpSession
from tests.test_pipelined_auth_attempts import (
    ACCEPTED,
    END,
    GRANTED,
    OUTSIDE,
    REFUSED,
    TRANSACTION,
    attempts,
    b64,
    plain,
    two_plain,
)
from tests.test_verdict_dialogues import EHLO, credentials, findings, relays

C, S = ev.Side.CLIENT, ev.Side.SERVER
UNJUDGED_SMTP = [
    "503 5.5.1 Error: MAIL transaction in progress",
    "504 5.5.4 Unrecognized authentication type",
    "534 5.7.9 Authentication mechanism is too weak",
    "538 5.7.11 Encryption required for requested authentication mechanism",
    "454 4.7.0 Temporary authentication failure: connection refused",
    "501 5.5.2 Cannot decode response",
    "530 5.7.0 Must issue a STARTTLS command first",
]
JUDGED_SMTP = [REFUSED, "535 5.7.3 Authentication unsuccessful", "454 4.7.8 Error: authentication failed"]


def one_auth(verdict: str) -> str:
    """One AUTH PLAIN, its verdict, then a transaction to a foreign domain the server accepts."""
    return EHLO + f"C: {plain('secret')}\nS: {verdict}\nC: {TRANSACTION}\nS: {ACCEPTED}\n{END}"


@pytest.mark.parametrize("verdict", UNJUDGED_SMTP, ids=lambda v: v[:3])
def test_an_smtp_refusal_that_checked_nothing_leaves_the_password_unjudged(verdict: str) -> None:
    """The password's outcome is null; the session did not authenticate, so the relay verdict stays what a refusal
    gives: the client relayed without logging in, both replies seen (high)."""
    records = findings(one_auth(verdict))
    assert attempts(records) == [("secret", None)]
    assert relays(records) == OUTSIDE


@pytest.mark.parametrize("verdict", JUDGED_SMTP, ids=["535", "535-exchange", "x.7.8"])
def test_an_smtp_refusal_of_the_credentials_still_fails_them(verdict: str) -> None:
    records = findings(one_auth(verdict))
    assert attempts(records) == [("secret", "failure")]
    assert relays(records) == OUTSIDE


def test_an_auth_after_a_granted_one_is_refused_unjudged_in_turn() -> None:
    """Not pipelined: the 235 grants the first password, the 503 to the second AUTH judges nothing of the second."""
    script = (
        EHLO
        + f"""C: {plain("right")}
S: {GRANTED}
C: {plain("other")}
S: 503 5.5.1 Error: already authenticated
C: {TRANSACTION}
S: {ACCEPTED}
{END}"""
    )
    records = findings(script)
    assert attempts(records) == [("right", "success"), ("other", None)]
    assert relays(records) == []


def test_pipelined_verdicts_keep_their_turn_when_one_judged_nothing() -> None:
    """535 for the first AUTH, 454 for the second: each its own; neither authenticated the transaction."""
    records = findings(two_plain(REFUSED, "454 4.7.0 Temporary authentication failure"))
    assert attempts(records) == [("wrong", "failure"), ("right", None)]
    assert relays(records) == OUTSIDE


IMAP_GREETING = "S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\n"


@pytest.mark.parametrize(
    ("verdict", "outcome"),
    [
        ("a1 BAD Invalid base64 data in continued response", None),
        ("a1 NO [UNAVAILABLE] Temporary authentication failure.", None),
        ("a1 NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.", None),
        ("a1 no [cannot] not now", None),
        ("a1 NO [AUTHENTICATIONFAILED] Authentication failed.", "failure"),
        ("a1 NO Authentication failed", "failure"),
        ("a1 OK Logged in", "success"),
    ],
    ids=["bad", "unavailable", "privacyrequired", "cannot", "authenticationfailed", "plain-no", "ok"],
)
@pytest.mark.parametrize("command", ["AUTHENTICATE", "LOGIN"])
def test_imap_bad_and_no_with_a_code_that_checked_nothing_leave_the_password_unjudged(
    command: str, verdict: str, outcome: str | None
) -> None:
    login = f"a1 AUTHENTICATE PLAIN {b64(chr(0) + 'alice' + chr(0) + 'secret')}"
    login = login if command == "AUTHENTICATE" else "a1 LOGIN alice secret"
    script = IMAP_GREETING + f"C: {login}\nS: {verdict}\nC: a2 LOGOUT\nS: * BYE\nS: a2 OK Logout completed."
    [record] = credentials(findings(script, 143))
    assert [(a["password"], a["outcome"]) for a in record["attempts"]] == [("secret", outcome)]


@pytest.mark.parametrize(
    ("verdict", "outcome"),
    [
        ("-ERR [SYS/TEMP] Temporary authentication failure", None),
        ("-ERR [SYS/PERM] Mailbox storage unavailable", None),
        ("-ERR [AUTH] Authentication failed.", "failure"),
        ("-ERR Authentication failed.", "failure"),
    ],
    ids=["sys-temp", "sys-perm", "auth", "plain-err"],
)
@pytest.mark.parametrize("command", ["AUTH", "PASS"])
def test_pop3_sys_refusals_leave_the_password_unjudged(command: str, verdict: str, outcome: str | None) -> None:
    login = f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'secret')}"
    login = login if command == "AUTH" else "USER alice\nS: +OK\nC: PASS secret"
    script = f"S: +OK POP3 ready\nC: {login}\nS: {verdict}\nC: QUIT\nS: +OK Bye"
    [record] = credentials(findings(script, 110))
    assert [(a["password"], a["outcome"]) for a in record["attempts"]] == [("secret", outcome)]


@pytest.mark.parametrize(
    ("port", "script"),
    [
        (
            110,
            "S: +OK ready\nC: USER alice\nS: +OK\nC: PASS right\nS: +OK Logged in.\nC: USER alice\n"
            "S: -ERR Unknown command: USER\nC: PASS other\nS: -ERR Unknown command: PASS\nC: QUIT\nS: +OK Bye",
        ),
        (
            110,
            f"S: +OK ready\nC: USER alice\nS: +OK\nC: PASS right\nS: +OK Logged in.\n"
            f"C: AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'other')}\nS: -ERR Unknown command: AUTH\nC: QUIT",
        ),
        (
            143,
            f"{IMAP_GREETING}C: a1 LOGIN alice right\nS: a1 OK Logged in\n"
            f"C: a2 AUTHENTICATE PLAIN {b64(chr(0) + 'alice' + chr(0) + 'other')}\nS: a2 NO Already logged in\n"
            "C: a3 LOGIN alice other\nS: a3 NO Already logged in\nC: a4 LOGOUT\nS: a4 OK bye",
        ),
    ],
    ids=["pop3-pass", "pop3-auth", "imap"],
)
def test_a_pop3_or_imap_login_refused_once_logged_in_was_never_checked(port: int, script: str) -> None:
    """RFC 1939 and RFC 9051 take a login only before one succeeded: the plain -ERR or NO a later one draws (Dovecot:
    "-ERR Unknown command: PASS") read no password."""
    outcomes = {a["password"]: a["outcome"] for r in credentials(findings(script, port)) for a in r["attempts"]}
    assert outcomes == {"right": "success", "other": None}


def test_pop3_in_use_after_pass_still_says_the_password_was_right() -> None:
    script = "S: +OK POP3 ready\nC: USER alice\nS: +OK\nC: PASS secret\nS: -ERR [IN-USE] Mailbox locked\nC: QUIT"
    [record] = credentials(findings(script, 110))
    assert [(a["password"], a["outcome"]) for a in record["attempts"]] == [("secret", "success")]


def test_an_ntlm_exchange_the_server_could_not_check_has_no_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ntlm-info's outcome: the 454 after the AUTHENTICATE judged nothing; a 535 did."""
    spnego = pytest.importorskip("spnego")
    accounts = tmp_path / "ntlm-users"  # pyspnego's acceptor wants one to exist, though it checks no response here
    accounts.write_text("CONTOSO:alice:Secr3t\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(accounts))
    client = spnego.client("CONTOSO\\alice", "Secr3t", hostname="mx", service="smtp", protocol="ntlm")
    server = spnego.server(protocol="ntlm")
    negotiate = client.step()
    challenge = server.step(negotiate)
    authenticate = client.step(challenge)
    outcomes = []
    for verdict in ("454 4.7.0 Temporary authentication failure", REFUSED):
        script = (
            EHLO.replace("AUTH PLAIN LOGIN", "AUTH NTLM")
            + f"""C: AUTH NTLM {b64_bytes(negotiate)}
S: 334 {b64_bytes(challenge)}
C: {b64_bytes(authenticate)}
S: {verdict}
{END}"""
        )
        [info] = [r for r in findings(script) if r["type"] == "ntlm-info"]
        outcomes.append((info["user"], info["outcome"]))
    assert outcomes == [("alice", None), ("alice", "failure")]


def b64_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- the session's events -------------------------------------------------------------------------------------------


def results(session: MailSession, script: list[tuple[ev.Side, str]]) -> list[tuple[bool, bool, str | None]]:
    events: list[ev.Event] = []
    for frame, (side, text) in enumerate(script, start=1):
        events += session.receive(side, text.encode() + b"\r\n", frame, 1000.0 + frame)
    return [(r.success, r.judged, r.outcome) for r in events if isinstance(r, ev.AuthResult)]


def test_the_verdict_event_says_whether_it_judged_the_credentials() -> None:
    """``AuthResult.judged`` (in ``--events``) beside ``success``; the session is not authenticated by a refusal."""
    smtp = SmtpSession()
    script = [(S, "220 mx ESMTP"), (C, plain("a")), (S, "538 5.7.11 Encryption required"), (C, plain("b"))]
    assert results(smtp, [*script, (S, REFUSED), (C, plain("c")), (S, GRANTED)]) == [
        (False, False, None),
        (False, True, "failure"),
        (True, True, "success"),
    ]
    imap, pop3 = ImapSession(), Pop3Session()
    assert results(imap, [(S, "* OK ready"), (C, "a1 LOGIN alice pw"), (S, "a1 NO [UNAVAILABLE] later")]) == [
        (False, False, None)
    ]
    assert not imap.authenticated
    pop = [(S, "+OK ready"), (C, "USER alice"), (S, "+OK"), (C, "PASS pw"), (S, "-ERR [SYS/TEMP] later")]
    assert results(pop3, pop) == [(False, False, None)]
    assert not pop3.authenticated


def test_a_flood_of_pipelined_auths_refused_unjudged_keeps_the_verdicts_in_turn() -> None:
    """Past MAX_AWAITING the oldest exchange is only counted: its 503 is told with attempt 0, and every later one
    reaches its own exchange, unjudged."""
    tracker = sasl.AuthTracker("smtp", in_order=True)
    count = sasl.MAX_AWAITING + 2
    for n in range(count):
        tracker.client_line(plain(f"guess{n}"))
    outcomes = [o for _ in range(count) for o in tracker.server_line("503 5.5.1 Error: already authenticated")]
    assert [(o.attempt, o.success, o.judged) for o in outcomes if isinstance(o, sasl.SaslOutcome)] == [
        (0, False, False),
        *[(n, False, False) for n in range(2, count + 1)],
    ]
    assert not tracker.active


# -- the classifier -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "line", "kind"),
    [
        ("smtp", "421 4.7.0 mx closing connection", sasl.ReplyKind.REFUSED),
        ("smtp", "432 4.7.12 A password transition is needed", sasl.ReplyKind.REFUSED),
        ("smtp", "535 5.7.8 Authentication credentials invalid", sasl.ReplyKind.FAILURE),
        ("smtp", "550 5.7.1 Access denied", sasl.ReplyKind.FAILURE),
        ("smtp", "503 5.7.8 odd, but the enhanced code says the credentials were wrong", sasl.ReplyKind.FAILURE),
        ("smtp", "503", sasl.ReplyKind.REFUSED),
        ("imap", "a1 BAD", sasl.ReplyKind.REFUSED),
        ("imap", "a1 NO [EXPIRED] change your password", sasl.ReplyKind.REFUSED),
        ("imap", "a1 NO [ALERT] wrong password", sasl.ReplyKind.FAILURE),
        ("imap", "a1 NO [UNAVAILABLE", sasl.ReplyKind.REFUSED),
        ("pop3", "-ERR [SYS/TEMP]", sasl.ReplyKind.REFUSED),
        ("pop3", "-ERR [LOGIN-DELAY] try later", sasl.ReplyKind.REFUSED),
        ("pop3", "-ERR [IN-USE] locked", sasl.ReplyKind.SUCCESS),  # RFC 2449 8.1.2: right, the maildrop locked
        ("pop3", "-ERR[AUTH]", sasl.ReplyKind.FAILURE),
    ],
)
def test_refusals_are_told_apart_by_their_codes(protocol: str, line: str, kind: sasl.ReplyKind) -> None:
    assert sasl.classify_server_line(sasl.Protocol(protocol), line, "a1").kind is kind


def test_a_hostile_response_code_costs_a_bounded_read() -> None:
    """A reply of a megabyte of brackets or spaces is read for its code within MAX_CODE_TEXT characters."""
    for text in ("[" * 1_000_000, " " * 1_000_000 + "[UNAVAILABLE]", "[" + "A" * 1_000_000 + "]"):
        assert len(refusals.response_code(text)) < refusals.MAX_CODE_TEXT
        assert refusals.imap_judged("NO", text) and refusals.pop3_judged(text)
    assert not refusals.smtp_judged(503, "5." * 1_000_000)


@pytest.mark.parametrize(
    ("port", "script"),
    [
        (
            143,
            f"{IMAP_GREETING}C: a1 LOGIN alice wrong<CRLF>a2 LOGIN alice right\n"
            "S: a1 NO [AUTHENTICATIONFAILED] Authentication failed.<CRLF>a2 OK Logged in\nC: a3 LOGOUT",
        ),
        (
            110,
            "S: +OK ready\nC: USER alice<CRLF>PASS wrong<CRLF>USER alice<CRLF>PASS right\n"
            "S: +OK<CRLF>-ERR [AUTH] Authentication failed.<CRLF>+OK<CRLF>+OK Logged in.\nC: QUIT",
        ),
    ],
    ids=["imap-login", "pop3-pass"],
)
def test_logins_sent_before_the_first_is_answered_each_get_their_own_verdict(port: int, script: str) -> None:
    """A client (a password guesser) that pipelines its logins (IMAP tags; POP3 PIPELINING, RFC 2449): the verdicts
    come in turn and each is its own login's; the password that worked is not reported as failed."""
    outcomes = {a["password"]: a["outcome"] for r in credentials(findings(script, port)) for a in r["attempts"]}
    assert outcomes == {"wrong": "failure", "right": "success"}


def test_imap_authorization_failed_is_no_failed_password_and_pop3_in_use_a_right_one() -> None:
    """RFC 5530: NO [AUTHORIZATIONFAILED] took the credentials and refused the identity asked for; RFC 2449: -ERR
    [IN-USE] to AUTH, as to PASS, says the credentials were right and the maildrop is locked."""
    login = f"a1 AUTHENTICATE PLAIN {b64('bob' + chr(0) + 'alice' + chr(0) + 'right')}"
    script = IMAP_GREETING + f"C: {login}\nS: a1 NO [AUTHORIZATIONFAILED] not bob\nC: a2 LOGOUT"
    [record] = credentials(findings(script, 143))
    assert [(a["password"], a["outcome"]) for a in record["attempts"]] == [("right", None)]
    pop3 = f"S: +OK ready\nC: AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'right')}\nS: -ERR [IN-USE] locked\nC: QUIT"
    [record] = credentials(findings(pop3, 110))
    assert [(a["password"], a["outcome"]) for a in record["attempts"]] == [("right", "success")]


def test_a_listing_once_logged_in_says_nothing_of_starttls() -> None:
    """Dovecot answers LOGIN with OK [CAPABILITY ...], and a POP3 client may send CAPA once logged in: what a server
    lists then never holds STARTTLS/STLS (RFC 9051, RFC 2595), so it says nothing of what it offers before."""
    imap = "S: * OK Dovecot ready.\nC: a1 LOGIN alice right\nS: a1 OK [CAPABILITY IMAP4rev1 SASL-IR] Logged in\n"
    pop3 = "S: +OK ready\nC: USER alice\nS: +OK\nC: PASS right\nS: +OK Logged in.\nC: CAPA\nS: +OK<CRLF>UIDL<CRLF>.\n"
    for script, port in ((imap + "C: a2 LOGOUT", 143), (pop3 + "C: QUIT", 110)):
        [service] = [r for r in findings(script, port) if r["type"] == "mail-service"]
        assert service["starttls_offered"] is None, port


def test_a_listing_in_the_reply_to_starttls_was_sent_before_tls() -> None:
    """The OK that accepts STARTTLS may carry a listing: it crossed in clear, before TLS began, unlike the one in
    the OK that accepts a LOGIN, which describes the session once logged in."""
    script = "S: * OK ready\nC: a1 STARTTLS\nS: a1 OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Begin TLS now"
    [methods] = [r for r in findings(script, 143) if r["type"] == "auth-methods"]
    assert methods["tls"] is False and "PLAIN" in methods["cleartext_exposed"]
