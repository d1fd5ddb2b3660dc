"""Refusals whose code says the credentials were checked, but whose words say nothing was: Postfix answers every
refusal of its SASL back-end with ``535 5.7.8 Error: authentication failed: <reason>``, an AUTH with a mechanism it
does not offer ("Invalid authentication mechanism") and a response that is no base64 ("Invalid base64 data in
continued response") included; Dovecot's IMAP and POP3 refuse a mechanism they do not offer with ``NO [ALERT]`` and
``-ERR [AUTH]`` "Unsupported authentication mechanism.", and its POP3 a password before TLS, where it wants TLS first,
with ``-ERR [AUTH]`` too. The secret those exchanges carried was never tried: its outcome is null, not "failure".
Postfix's refusal of a wrong password keeps its verdict. The same dialogues with the real servers are in
tests/test_unjudged_refusals_lab.py."""

from __future__ import annotations

import time

import pytest

from dissectors import refusals, sasl
from tests.test_pipelined_auth_attempts import ACCEPTED, END, OUTSIDE, TRANSACTION, attempts, b64, plain
from tests.test_verdict_dialogues import EHLO, findings, relays

TOKEN = "ya29.Never-Checked"
XOAUTH2 = b64(f"user=alice\x01auth=Bearer {TOKEN}\x01\x01")
UNCHECKED_SMTP = [
    "535 5.7.8 Error: authentication failed: Invalid authentication mechanism",
    "535 5.7.8 Error: authentication failed: Invalid base64 data in initial response",
    "535 5.7.8 Error: authentication failed: Invalid base64 data in continued response",
    "535 5.7.0 Error: authentication failed: Invalid authentication mechanism",  # older Postfix: 5.7.0
]
CHECKED_SMTP = [
    "535 5.7.8 Error: authentication failed: (reason unavailable)",  # Postfix 3.7 and Dovecot, a wrong password
    "535 5.7.8 Error: authentication failed: authentication failure",  # older Postfix, a wrong password
    "535 5.7.8 Error: authentication failed: UGFzc3dvcmQ6",  # Postfix, a LOGIN whose password line was empty
    "535 5.7.8 Error: authentication failed: Invalid authentication mechanism, or a wrong password",
]


def one_auth(auth: str, verdict: str) -> str:
    """One AUTH, its verdict, then a transaction to a foreign domain the server accepts."""
    return EHLO + f"C: {auth}\nS: {verdict}\nC: {TRANSACTION}\nS: {ACCEPTED}\n{END}"


@pytest.mark.parametrize("verdict", UNCHECKED_SMTP, ids=["mechanism", "initial", "continued", "5.7.0"])
def test_a_postfix_refusal_that_names_an_unchecked_reason_leaves_the_secret_unjudged(verdict: str) -> None:
    """An XOAUTH2 token sent to a Postfix that offers no XOAUTH2: null, and the session did not authenticate."""
    records = findings(one_auth(f"AUTH XOAUTH2 {XOAUTH2}", verdict))
    assert attempts(records) == [(TOKEN, None)]
    assert relays(records) == OUTSIDE


@pytest.mark.parametrize("verdict", CHECKED_SMTP, ids=["unavailable", "failure", "login-prompt", "more-words"])
def test_a_postfix_refusal_of_a_wrong_password_still_fails_it(verdict: str) -> None:
    records = findings(one_auth(plain("wrong"), verdict))
    assert attempts(records) == [("wrong", "failure")]
    assert relays(records) == OUTSIDE


def test_a_login_password_postfix_found_no_base64_is_unjudged() -> None:
    """A password line with a blank inside: read (blanks dropped, as lenient decoders do), but Postfix refuses it
    before asking Dovecot (its base64 check takes no blank)."""
    login = f"C: AUTH LOGIN\nS: 334 VXNlcm5hbWU6\nC: {b64('alice')}\nS: 334 UGFzc3dvcmQ6\nC: c2Vj cmV0"
    verdict = "535 5.7.8 Error: authentication failed: Invalid base64 data in continued response"
    records = findings(EHLO + f"{login}\nS: {verdict}\n{END}")
    assert attempts(records) == [("secret", None)]


IMAP_GREETING = "S: * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] Dovecot ready.\n"


@pytest.mark.parametrize(
    ("verdict", "outcome"),
    [
        ("a1 NO [ALERT] Unsupported authentication mechanism.", None),
        ("a1 NO Unsupported authentication mechanism", None),
        ("a1 NO [ALERT] Account is disabled.", "failure"),
        ("a1 NO [AUTHENTICATIONFAILED] Authentication failed.", "failure"),
    ],
    ids=["alert-unsupported", "plain-unsupported", "alert-other", "authenticationfailed"],
)
def test_an_imap_mechanism_refused_as_unsupported_leaves_the_secret_unjudged(verdict: str, outcome: str | None) -> None:
    script = IMAP_GREETING + f"C: a1 AUTHENTICATE XOAUTH2 {XOAUTH2}\nS: {verdict}\nC: a2 LOGOUT\nS: a2 OK bye"
    assert attempts(findings(script, 143)) == [(TOKEN, outcome)]


@pytest.mark.parametrize(
    ("verdict", "outcome"),
    [
        ("-ERR [AUTH] Unsupported authentication mechanism.", None),
        ("-ERR Unsupported authentication mechanism.", None),
        ("-ERR [AUTH] Invalid base64 data in continued response", None),
        ("-ERR [AUTH] Authentication failed.", "failure"),
        ("-ERR Authentication failed.", "failure"),
    ],
    ids=["auth-unsupported", "unsupported", "base64", "auth", "plain-err"],
)
def test_a_pop3_mechanism_refused_as_unsupported_leaves_the_secret_unjudged(verdict: str, outcome: str | None) -> None:
    script = f"S: +OK Dovecot ready.\nC: AUTH XOAUTH2 {XOAUTH2}\nS: {verdict}\nC: QUIT\nS: +OK Logging out."
    assert attempts(findings(script, 110)) == [(TOKEN, outcome)]


def test_a_pop3_password_refused_until_tls_is_unjudged() -> None:
    """Dovecot that wants TLS first refuses USER, then PASS, with -ERR [AUTH]: the password was never tried."""
    refusal = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
    script = f"S: +OK Dovecot ready.\nC: USER alice\nS: {refusal}\nC: PASS secret\nS: {refusal}\nC: QUIT"
    assert attempts(findings(script, 110)) == [("secret", None)]


# -- the classifier -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "line", "kind"),
    [
        ("smtp", "535 5.7.8 Error: authentication failed: invalid AUTHENTICATION mechanism", sasl.ReplyKind.REFUSED),
        ("smtp", "535 Invalid authentication mechanism", sasl.ReplyKind.REFUSED),
        ("smtp", "535 5.7.8 Error: authentication failed: Invalid authentication", sasl.ReplyKind.FAILURE),
        ("smtp", "535 5.7.8 Error: authentication failed:", sasl.ReplyKind.FAILURE),
        ("imap", "a1 NO [ALERT]Unsupported authentication mechanism.", sasl.ReplyKind.REFUSED),
        ("imap", "a1 NO [AUTHENTICATIONFAILED] Unsupported authentication mechanism.", sasl.ReplyKind.FAILURE),
        ("pop3", "-ERR [AUTH] Unsupported authentication mechanism.", sasl.ReplyKind.REFUSED),
        ("pop3", "-ERR [AUTH] [ALERT] Unsupported authentication mechanism.", sasl.ReplyKind.FAILURE),
        ("pop3", "-ERR Unsupported authentication mechanism..", sasl.ReplyKind.FAILURE),
    ],
)
def test_only_the_whole_reason_says_nothing_was_checked(protocol: str, line: str, kind: sasl.ReplyKind) -> None:
    """Any other words, or a code that says the credentials failed before the reason, keep the refusal judged."""
    assert sasl.classify_server_line(sasl.Protocol(protocol), line, "a1").kind is kind


def test_the_longest_reason_fits_the_bound_and_a_hostile_text_costs_a_bounded_read() -> None:
    """The longest text of these servers' own reasons (Dovecot's, 79 characters) is within MAX_REASON_TEXT; a text
    longer than it holds no reason (a megabyte of blanks before or after one included), and reading it costs no more
    than the bound. The longest one Postfix relays from its back-end: tests/test_unjudged_refusals_backend.py."""
    longest = "[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
    assert len(longest) == 79 <= refusals.MAX_REASON_TEXT and refusals.unchecked_reason(longest)
    reason = "Invalid authentication mechanism"
    hostile = [" " * 1_000_000 + reason, reason + " " * 1_000_000, "[ALERT]" * 200_000, "5." * 1_000_000]
    started = time.perf_counter()
    for text in hostile * 1000:
        assert not refusals.unchecked_reason(text)
    assert time.perf_counter() - started < 1.0  # 4 000 texts of a megabyte: whole, each would take a millisecond
