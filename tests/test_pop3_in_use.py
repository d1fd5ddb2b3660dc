"""POP3 ``-ERR [IN-USE]`` (RFC 2449 section 8.1.2): "the authentication was successful, but the user's maildrop is
currently in use". Servers send it once the credentials were found right: Dovecot's pop3 process, which runs only
after its login process accepted them ("-ERR [IN-USE] Mailbox is locked by another POP3 session."), Cyrus popd after
the password check ("-ERR [IN-USE] Unable to lock maildrop"). The password's outcome is success, however the line
spaces its code: one blank after -ERR, two (which servers vary on), a tab or none, in any case; in an AUTH exchange
as after PASS."""

from __future__ import annotations

import pytest

from dissectors import events as ev
from dissectors import refusals, sasl
from dissectors.pop3 import Pop3Session
from tests.test_mail_dissectors import feed, kinds
from tests.test_pipelined_auth_attempts import b64
from tests.test_verdict_dialogues import credentials, findings

C, S = ev.Side.CLIENT, ev.Side.SERVER
IN_USE = [
    "-ERR [IN-USE] Mailbox is locked by another POP3 session.",
    "-ERR  [IN-USE] Mailbox is locked by another POP3 session.",
    "-ERR\t[IN-USE] Unable to lock maildrop",
    "-ERR[IN-USE] Unable to lock maildrop",
    "-ERR   [in-use] locked",
]
# Other codes read the same with one blank or two: SYS judged nothing, AUTH and none judged the password wrong.
SPACED = [
    ("-ERR [SYS/TEMP] Temporary authentication failure.", None),
    ("-ERR  [SYS/TEMP] Temporary authentication failure.", None),
    ("-ERR [AUTH] Authentication failed.", "failure"),
    ("-ERR  [AUTH] Authentication failed.", "failure"),
    ("-ERR  Authentication failed.", "failure"),
    ("-ERR  [IN-USEFUL] not the code", "failure"),
]


def outcomes(verdict: str) -> list[list[str | None]]:
    """The password's outcomes after PASS, then after AUTH PLAIN, each answered with ``verdict``."""
    user_pass = f"S: +OK ready\nC: USER alice\nS: +OK\nC: PASS right\nS: {verdict}\nC: QUIT"
    auth = f"S: +OK ready\nC: AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'right')}\nS: {verdict}\nC: QUIT"
    scripts = (user_pass, auth)
    return [[a["outcome"] for r in credentials(findings(script, 110)) for a in r["attempts"]] for script in scripts]


@pytest.mark.parametrize("verdict", IN_USE)
def test_in_use_says_the_password_was_right_after_pass_and_after_auth(verdict: str) -> None:
    assert outcomes(verdict) == [["success"], ["success"]]


@pytest.mark.parametrize(("verdict", "outcome"), SPACED)
def test_the_blanks_before_a_code_change_no_verdict(verdict: str, outcome: str | None) -> None:
    assert outcomes(verdict) == [[outcome], [outcome]]


@pytest.mark.parametrize("verdict", IN_USE)
def test_the_classifier_and_the_dissector_read_in_use_alike(verdict: str) -> None:
    """The SASL classifier's SUCCESS and the dissector's AuthResult after PASS: both say the password was right."""
    assert sasl.classify_server_line(sasl.Protocol.POP3, verdict).kind is sasl.ReplyKind.SUCCESS
    script = [(S, b"+OK ready\r\n"), (C, b"USER alice\r\n"), (S, b"+OK\r\n"), (C, b"PASS right\r\n")]
    events = feed(Pop3Session(), [*script, (S, verdict.encode() + b"\r\n")])
    assert [(r.success, r.judged) for r in kinds(events, ev.AuthResult)] == [(True, True)]


def test_a_hostile_in_use_line_costs_a_bounded_read() -> None:
    """A megabyte of blanks before the code: read within MAX_CODE_TEXT, so it is no IN-USE (nor any code)."""
    assert not refusals.pop3_in_use(" " * 1_000_000 + "[IN-USE]")
    assert refusals.pop3_in_use("  [IN-USE]")


@pytest.mark.parametrize(
    "verdict",
    [
        "-ERR [IN-USE",  # never closed
        "-ERR [IN-USE Mailbox is locked",
        "-ERR [ IN-USE] Mailbox is locked",  # a blank inside the brackets
        "-ERR [IN-USE ] Mailbox is locked",
        "-ERR [IN-USE /TEMP] Mailbox is locked",
    ],
)
def test_a_code_not_written_as_rfc_2449_writes_them_is_no_in_use(verdict: str) -> None:
    """RFC 2449 section 8: "[" levels of printable characters split by "/" "]", no blank anywhere inside. A line
    that only looks like IN-USE says nothing of the password: it stays a refusal, not a right password."""
    assert not refusals.pop3_in_use(verdict.removeprefix("-ERR"))
    assert outcomes(verdict) == [["failure"], ["failure"]]


def test_an_in_use_code_with_a_further_level_is_still_in_use() -> None:
    assert refusals.pop3_in_use(" [IN-USE/LOCKED] Mailbox is locked")
