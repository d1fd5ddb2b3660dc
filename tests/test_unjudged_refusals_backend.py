"""Refusals of an AUTH whose SASL back-end never judged the credentials, relayed by Postfix in words under the code of
a wrong password. Postfix 2.3 to 3.0 answered every refusal of its back-end with ``535 5.7.8 Error: authentication
failed: <reason>`` (5.7.0 before 2.5), a back-end it could not reach included: its Dovecot client's "Connection lost
to authentication server" and "Can't connect to authentication server" (xsasl_dovecot_server.c), its Cyrus client's
"generic failure", "remote authentication server unavailable" and the other texts of Cyrus SASL's
``sasl_errstring`` that say nothing was checked. Postfix 3.1 and later give the temporary ones ``454 4.7.0 Temporary
authentication failure: <reason>``. Postfix 3.10 and later name the mechanism they do not offer ("Invalid
authentication mechanism: 'XOAUTH2'"). The secret those exchanges carried was never tried: its outcome is null, not
"failure". Wrong passwords keep theirs."""

from __future__ import annotations

import pytest

from dissectors import refusals, sasl
from tests.test_pipelined_auth_attempts import ACCEPTED, END, OUTSIDE, TRANSACTION, attempts, plain
from tests.test_unjudged_refusals_reasons import TOKEN, XOAUTH2
from tests.test_verdict_dialogues import EHLO, findings, relays

FAILED = "535 5.7.8 Error: authentication failed: "
TEMPORARY = "454 4.7.0 Temporary authentication failure: "
# Postfix 2.5 to 3.0 (535) and 3.1 and later (454) with Dovecot behind it, the Dovecot auth server stopped or gone.
BACKEND_GONE = [
    f"{FAILED}Connection lost to authentication server",
    f"{FAILED}Can't connect to authentication server",
    f"{TEMPORARY}Connection lost to authentication server",
    f"{TEMPORARY}Can't connect to authentication server",
    "535 5.7.0 Error: authentication failed: Connection lost to authentication server",  # Postfix 2.3, 2.4
    f"{FAILED}Authentication backend error",  # Dovecot's answer lacked a field Postfix needs
]
# Postfix 2.3 to 3.0 with Cyrus SASL behind it: the texts sasl_errstring gives the codes Postfix 3.1 and later call
# temporary (SASL_FAIL, SASL_NOMEM, SASL_TRYAGAIN, SASL_UNAVAIL: saslauthd unreachable, for one), and those that
# refuse the exchange itself: no such mechanism, a response that is no base64 or a cancel, TLS or a stronger
# mechanism wanted, no verifier for this mechanism (RFC 4954's 432: a password transition is needed), and an expired
# passphrase or an authorization identity refused (RFC 5530's EXPIRED and AUTHORIZATIONFAILED).
CYRUS_UNCHECKED = [
    "generic failure",
    "no memory available",
    "transient failure (e.g., weak key)",
    "remote authentication server unavailable",
    "no mechanism available",
    "bad protocol / cancel",
    "encryption needed to use mechanism",
    "mechanism too weak for this user",
    "One time use of a plaintext password will enable requested mechanism for user",
    "user exists, but no verifier for user",
    "passphrase expired, has to be reset",
    "authorization failure",
]
STILL_JUDGED = [
    f"{FAILED}authentication failure",  # Cyrus SASL_BADAUTH (and SASL_NOUSER, which Postfix words so): wrong
    f"{FAILED}account disabled",
    f"{FAILED}(reason unavailable)",  # Postfix 3.7 and Dovecot, a wrong password
    f"{FAILED}Connection lost to authentication server, and a wrong password",
    "535 5.7.8 generic failure",  # not relayed by Postfix: the server's own words, which say nothing more
    "535 5.7.3 Authentication unsuccessful",  # Exchange, wrong credentials
]


def one_auth(auth: str, verdict: str) -> str:
    """One AUTH, its verdict, then a transaction to a foreign domain the server accepts."""
    return EHLO + f"C: {auth}\nS: {verdict}\nC: {TRANSACTION}\nS: {ACCEPTED}\n{END}"


@pytest.mark.parametrize("verdict", BACKEND_GONE + [FAILED + text for text in CYRUS_UNCHECKED])
def test_a_refusal_by_a_backend_that_checked_nothing_leaves_the_password_unjudged(verdict: str) -> None:
    """Null, and the session did not authenticate: relaying by a client that did not log in (high)."""
    records = findings(one_auth(plain("secret"), verdict))
    assert attempts(records) == [("secret", None)]
    assert relays(records) == OUTSIDE


@pytest.mark.parametrize("verdict", STILL_JUDGED)
def test_a_refusal_of_a_wrong_password_relayed_by_postfix_still_fails_it(verdict: str) -> None:
    records = findings(one_auth(plain("wrong"), verdict))
    assert attempts(records) == [("wrong", "failure")]


@pytest.mark.parametrize(
    "name", ["XOAUTH2", "xoauth2", "X-PRIVATE-MECHANISM-OF-THIRTY", "X" * refusals.MAX_MECHANISM_NAME]
)
def test_a_mechanism_postfix_names_as_not_offered_leaves_the_token_unjudged(name: str) -> None:
    """Postfix 3.10 and later quote the mechanism the client asked for, in the client's case: any name an AUTH is
    read with, longer than RFC 4422's 20 characters too."""
    records = findings(one_auth(f"AUTH XOAUTH2 {XOAUTH2}", f"{FAILED}Invalid authentication mechanism: '{name}'"))
    assert attempts(records) == [(TOKEN, None)]


def test_the_names_an_auth_is_read_with_are_those_a_refusal_may_quote() -> None:
    """One limit: an AUTH naming a mechanism of MAX_MECHANISM_NAME characters is read, and Postfix's refusal that
    quotes it back leaves the exchange unjudged; a longer name is neither."""
    longest, longer = "X" * refusals.MAX_MECHANISM_NAME, "X" * (refusals.MAX_MECHANISM_NAME + 1)
    assert sasl.parse_auth_command(sasl.Protocol.SMTP, f"AUTH {longest}") is not None
    assert sasl.parse_auth_command(sasl.Protocol.SMTP, f"AUTH {longer}") is None
    named = f"Invalid authentication mechanism: '{longest}'"
    assert refusals.unchecked_reason(f"5.7.8 Error: authentication failed: {named}")


@pytest.mark.parametrize(
    "text",
    [
        "Invalid authentication mechanism: ''",
        "Invalid authentication mechanism: 'XOAUTH2",
        "Invalid authentication mechanism: 'X OAUTH2'",
        f"Invalid authentication mechanism: '{'X' * (refusals.MAX_MECHANISM_NAME + 1)}'",
    ],
)
def test_a_mechanism_name_no_client_could_have_sent_keeps_the_refusal_judged(text: str) -> None:
    """An empty name, an unclosed quote, a blank inside, a name longer than RFC 4422 allows: not Postfix's words."""
    assert sasl.classify_server_line(sasl.Protocol.SMTP, FAILED + text).kind is sasl.ReplyKind.FAILURE


def test_the_longest_backend_reason_fits_the_bound() -> None:
    """Cyrus SASL's SASL_TRANS text after Postfix's words is the longest reply text that holds a reason."""
    longest = f"5.7.8 Error: authentication failed: {max(CYRUS_UNCHECKED, key=len)}"
    named = f"5.7.8 Error: authentication failed: Invalid authentication mechanism: '{'X' * 20}'"
    assert len(named) < len(longest) <= refusals.MAX_REASON_TEXT
    assert refusals.unchecked_reason(longest) and refusals.unchecked_reason(named)
    assert not refusals.unchecked_reason(longest + " " * refusals.MAX_REASON_TEXT)
