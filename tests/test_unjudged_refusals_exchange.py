"""Exchange Online's refusals of SMTP AUTH for a policy of the organisation's, under the code of a wrong password:
``535 5.7.139 Authentication unsuccessful, <reason>.``, then another sentence or none and a bracketed tail that
names the front-end server and the time. SMTP AUTH turned off for the tenant or the mailbox, basic authentication
turned off, Entra ID's security defaults or a Conditional Access policy, a federation server that could not be
reached: the password those exchanges carried is said neither right nor wrong, so its outcome is null, not
"failure". Exchange Online's wrong password ("the user credentials were incorrect"), on-premises Exchange's ``535
5.7.3 Authentication unsuccessful``, and Exchange Online's IMAP and POP3 refusals keep their verdict."""

from __future__ import annotations

import time

import pytest

from dissectors import refusals, sasl
from tests.test_pipelined_auth_attempts import ACCEPTED, END, OUTSIDE, TRANSACTION, attempts, plain
from tests.test_verdict_dialogues import EHLO, findings, relays

UNSUCCESSFUL = "535 5.7.139 Authentication unsuccessful, "
# The tail Exchange Online ends its replies with: the front-end server, the time, an identifier of the request.
TAIL = " [BN0PR04CA0011.namprd04.prod.outlook.com 2024-01-01T00:00:00.000Z 08DC0000000000]"
VISIT = " Visit https://aka.ms/smtp_auth_disabled for more information."
POLICY = [
    f"SmtpClientAuthentication is disabled for the Tenant.{VISIT}",
    f"SmtpClientAuthentication is disabled for the Mailbox.{VISIT}",
    "user is locked by your organization's security defaults policy. Contact your administrator.",
    "basic authentication is disabled.",
    "the request did not meet the criteria to be authenticated successfully. Contact your administrator.",
    "federated STS service was unreachable.",
    "the federated STS URL does not support HTTPS.",
]
POLICY_IDS = ["tenant", "mailbox", "security-defaults", "basic-auth", "conditional-access", "sts", "sts-https"]
WRONG_PASSWORD = [
    f"{UNSUCCESSFUL}the user credentials were incorrect.{TAIL}",  # Exchange Online
    "535 5.7.3 Authentication unsuccessful",  # on-premises Exchange ([MS-SMTPNTLM] 2.2.1.4)
    f"535 5.7.3 Authentication unsuccessful{TAIL}",  # Exchange Online, as it answered before 5.7.139
]


def one_auth(auth: str, verdict: str) -> str:
    """One AUTH, its verdict, then a transaction to a foreign domain the server accepts."""
    return EHLO + f"C: {auth}\nS: {verdict}\nC: {TRANSACTION}\nS: {ACCEPTED}\n{END}"


@pytest.mark.parametrize("tail", [TAIL, ""], ids=["tail", "no-tail"])
@pytest.mark.parametrize("reason", POLICY, ids=POLICY_IDS)
def test_a_policy_refusal_of_exchange_online_leaves_the_password_unjudged(reason: str, tail: str) -> None:
    """Null, and the session did not authenticate: relaying by a client that did not log in (high)."""
    records = findings(one_auth(plain("secret"), UNSUCCESSFUL + reason + tail), 587)
    assert attempts(records) == [("secret", None)]
    assert relays(records) == OUTSIDE


@pytest.mark.parametrize("verdict", WRONG_PASSWORD, ids=["online", "on-premises", "online-5.7.3"])
def test_a_wrong_password_refused_by_exchange_still_fails_it(verdict: str) -> None:
    records = findings(one_auth(plain("wrong"), verdict), 587)
    assert attempts(records) == [("wrong", "failure")]
    assert relays(records) == OUTSIDE


@pytest.mark.parametrize(
    "line",
    [
        f"{UNSUCCESSFUL}basic authentication is disabled, or the user credentials were incorrect.{TAIL}",
        f"{UNSUCCESSFUL}basic authentication is disabledness.{TAIL}",
        f"{UNSUCCESSFUL}account is disabled.{TAIL}",  # no reason Exchange Online gives for a policy
        "535 5.7.8 Authentication unsuccessful, basic authentication is disabled.",  # x.7.8: credentials invalid
        "535 5.7.3 Authentication unsuccessful, basic authentication is disabled.",
        "535 5.7.8 5.7.139 Authentication unsuccessful, basic authentication is disabled.",
        "535 Authentication unsuccessful, basic authentication is disabled.",  # no enhanced code
        "535 5.7.139 basic authentication is disabled.",  # not after Exchange's words
        "535 5.7.139 Authentication unsuccessful basic authentication is disabled.",
        "535 5.7.139 Authentication failed, basic authentication is disabled.",
    ],
)
def test_only_exchange_onlines_whole_reason_under_its_code_leaves_a_refusal_unjudged(line: str) -> None:
    """Any other words, a reason with more after it in its sentence, or another code: the refusal stays judged."""
    assert sasl.classify_server_line(sasl.Protocol.SMTP, line).kind is sasl.ReplyKind.FAILURE


def test_the_reason_is_compared_in_lower_case_and_with_blanks_around_it_dropped() -> None:
    line = "535 5.7.139   authentication UNSUCCESSFUL,   Basic Authentication Is Disabled  .  [X]"
    assert sasl.classify_server_line(sasl.Protocol.SMTP, line).kind is sasl.ReplyKind.REFUSED


def test_the_first_full_stop_or_the_bracketed_tail_ends_the_reason() -> None:
    """What follows the reason's sentence is not read: the bracketed tail varies with the server and the time."""
    without_stop = f"{UNSUCCESSFUL}basic authentication is disabled{TAIL}"
    assert sasl.classify_server_line(sasl.Protocol.SMTP, without_stop).kind is sasl.ReplyKind.REFUSED
    wrong = f"{UNSUCCESSFUL}the user credentials were incorrect. basic authentication is disabled.{TAIL}"
    assert sasl.classify_server_line(sasl.Protocol.SMTP, wrong).kind is sasl.ReplyKind.FAILURE


def test_a_reason_cut_by_the_bound_is_no_reason() -> None:
    """A text longer than the bound whose reason has not ended within it: the bound must not cut a longer reason
    ("... disabled, but the user credentials were incorrect") down to a policy's."""
    reason = "basic authentication is disabled"
    pad = refusals.MAX_REASON_TEXT - len(f"5.7.139 Authentication unsuccessful, {reason}")
    text = f"5.7.139 Authentication unsuccessful,{' ' * (pad + 1)}{reason}, but the user credentials were incorrect."
    assert text.index(reason) + len(reason) == refusals.MAX_REASON_TEXT
    assert refusals.smtp_judged(535, text)
    assert not refusals.smtp_judged(535, text[: refusals.MAX_REASON_TEXT])  # the same words, whole: a policy's


def test_the_longest_reason_fits_the_bound_and_a_hostile_text_costs_a_bounded_read() -> None:
    """The longest of Exchange Online's sentences is within MAX_REASON_TEXT, however long what follows it; a text
    whose sentence has not ended within the bound holds no reason, and reading it costs no more than the bound."""
    longest = f"5.7.139 Authentication unsuccessful, {max((text.split('.')[0] for text in POLICY), key=len)}."
    assert len(longest) <= refusals.MAX_REASON_TEXT and not refusals.smtp_judged(535, longest + TAIL * 1000)
    reason = "5.7.139 Authentication unsuccessful, basic authentication is disabled."
    hostile = [" " * 1_000_000 + reason, "5.7.139 Authentication unsuccessful," + " " * 1_000_000 + reason[36:]]
    started = time.perf_counter()
    for text in hostile * 1000:
        assert refusals.smtp_judged(535, text)
    assert time.perf_counter() - started < 1.0  # 2 000 texts of a megabyte: whole, each would take a millisecond


def test_a_multiline_reply_is_judged_on_its_final_line() -> None:
    """A policy's words on a line before the final one do not make a wrong password's refusal unjudged."""
    verdict = f"535-5.7.139 Authentication unsuccessful, basic authentication is disabled.<CRLF>{WRONG_PASSWORD[0]}"
    assert attempts(findings(one_auth(plain("wrong"), verdict), 587)) == [("wrong", "failure")]


RETIRED = "550 5.7.30 Basic authentication is not supported for Client Submission."


@pytest.mark.parametrize(
    "verdict", [RETIRED, RETIRED + TAIL, RETIRED[:-1], RETIRED.upper()], ids=["stop", "tail", "no-stop", "upper"]
)
def test_basic_authentication_no_longer_taken_for_client_submission_leaves_the_password_unjudged(verdict: str) -> None:
    """Exchange Online once it takes no basic authentication for SMTP AUTH: the password was never tried."""
    records = findings(one_auth(plain("secret"), verdict), 587)
    assert attempts(records) == [("secret", None)]
    assert relays(records) == OUTSIDE


@pytest.mark.parametrize(
    "line",
    [
        "550 5.7.1 Basic authentication is not supported for Client Submission.",
        "550 5.7.30 Basic authentication is not supported for Client Submission, and the password was wrong.",
        "550 5.7.30 Basic authentication is not supported.",
        f"550 5.7.30 Basic authentication is not supported for Client Submission{' ' * refusals.MAX_REASON_TEXT}x",
    ],
    ids=["other-code", "more-words", "fewer-words", "cut-by-the-bound"],
)
def test_only_the_whole_sentence_under_5_7_30_says_basic_authentication_is_retired(line: str) -> None:
    assert sasl.classify_server_line(sasl.Protocol.SMTP, line).kind is sasl.ReplyKind.FAILURE


# -- Exchange Online's IMAP and POP3: their refusals say nothing of a policy, and stay judged ------------------------


@pytest.mark.parametrize(
    ("protocol", "line"),
    [
        ("imap", "a1 NO AUTHENTICATE failed."),
        ("imap", "a1 NO LOGIN failed."),
        ("pop3", "-ERR Logon failure: unknown user name or bad password."),
        ("pop3", "-ERR Authentication failure: unknown user name or bad password."),
    ],
)
def test_exchange_onlines_imap_and_pop3_refusals_stay_judged(protocol: str, line: str) -> None:
    assert sasl.classify_server_line(sasl.Protocol(protocol), line, "a1").kind is sasl.ReplyKind.FAILURE
