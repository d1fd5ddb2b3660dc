"""SASL steps bound to the server's prompts, each attempt with its own secret and verdict, and SMTP replies given only
to the commands they can answer (issue 14, items 2 and 4). Real-software captures of the same cases are in
tests/test_verdicts_lab.py."""

from __future__ import annotations

import base64
import io

import pytest
from rich.console import Console

from dissectors import events as ev
from dissectors.imap import ImapSession
from dissectors.pop3 import Pop3Session
from dissectors.session import MailSession
from dissectors.smtp import SmtpSession
from passive.analysis.pipeline import Analysis
from passive.cli.tables import render_tables
from passive.results.records import MASK, finding_record, summary_record

C, S = ev.Side.CLIENT, ev.Side.SERVER


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def feed(session: MailSession, script: list[tuple[ev.Side, str]]) -> list[ev.Event]:
    out: list[ev.Event] = []
    for frame, (side, text) in enumerate(script, start=1):
        out.extend(session.receive(side, text.encode() + b"\r\n", frame, 1000.0 + frame))
    out.extend(session.close(len(script) + 1, 2000.0))
    return out


def kinds(events: list[ev.Event], kind: type) -> list:
    return [event for event in events if isinstance(event, kind)]


def credentials(events: list[ev.Event]) -> list[tuple[str, str | None, str | None]]:
    return [(c.mechanism, c.user, c.password) for c in kinds(events, ev.Credentials)]


# ---- one side of the conversation only: nothing after the mechanism's responses is a response ------------------

SMTP_CLIENT_TAIL = ["MAIL FROM:<alice@corp.example>", "RCPT TO:<bob@corp.example>", "DATA", "Subject: x", "", "body",
                    ".", "RSET", "NOOP", "QUIT"]  # fmt: skip


@pytest.mark.parametrize(
    "opening",
    [
        ["AUTH LOGIN", b64("alice"), b64("Secret-1")],
        ["AUTH LOGIN " + b64("alice"), b64("Secret-1")],
    ],
    ids=["prompted", "initial-response"],
)
def test_smtp_login_without_the_server_side_keeps_the_password(opening: list[str]) -> None:
    script = [(C, "EHLO ws1.corp.example"), *((C, line) for line in opening), *((C, t) for t in SMTP_CLIENT_TAIL)]
    events = feed(SmtpSession(), script)
    assert credentials(events) == [("LOGIN", "alice", "Secret-1")]
    assert not kinds(events, ev.AuthResult)  # no verdict was seen, none is made up


def test_smtp_plain_without_the_server_side_takes_one_response() -> None:
    script = [(C, "EHLO ws1"), (C, "AUTH PLAIN"), (C, b64("\0alice\0Secret-1")), (C, "DATA"), (C, "QUIT")]
    assert credentials(feed(SmtpSession(), script)) == [("PLAIN", "alice", "Secret-1")]


def test_pop3_login_without_the_server_side() -> None:
    script = [(C, "CAPA"), (C, "AUTH LOGIN"), (C, b64("alice")), (C, b64("Secret-1")), (C, "STAT"), (C, "QUIT")]
    assert credentials(feed(Pop3Session(), script)) == [("LOGIN", "alice", "Secret-1")]


@pytest.mark.parametrize(
    ("opening", "expected"),
    [
        (["a1 AUTHENTICATE PLAIN", b64("\0alice\0Secret-1")], [("PLAIN", "alice", "Secret-1")]),
        (["a1 AUTHENTICATE LOGIN", b64("alice"), b64("Secret-1")], [("LOGIN", "alice", "Secret-1")]),
        (["a1 LOGIN alice Secret-1"], [("IMAP-LOGIN", "alice", "Secret-1")]),
    ],
    ids=["plain", "login-mechanism", "login-command"],
)
def test_imap_without_the_server_side(opening: list[str], expected: list[tuple[str, str, str]]) -> None:
    tail = ["a2 SELECT INBOX", "a3 UID FETCH 1:* (FLAGS)", "DONE", "a4 LOGOUT"]
    events = feed(ImapSession(), [(C, "a0 CAPABILITY"), *((C, line) for line in [*opening, *tail])])
    assert credentials(events) == expected


def test_each_attempt_without_the_server_side_keeps_its_password() -> None:
    script = [(C, "EHLO ws1"), (C, "AUTH LOGIN"), (C, b64("alice")), (C, b64("Wrong-1")), (C, "AUTH LOGIN"),
              (C, b64("alice")), (C, b64("Right-2")), (C, "MAIL FROM:<alice@corp.example>"), (C, "QUIT")]  # fmt: skip
    events = feed(SmtpSession(), script)
    assert credentials(events) == [("LOGIN", "alice", "Wrong-1"), ("LOGIN", "alice", "Right-2")]
    # The first awaits its verdict, which an SMTP server sends before the second's: each keeps its own exchange.
    assert [c.attempt for c in kinds(events, ev.Credentials)] == [1, 2]
    assert not kinds(events, ev.AuthAbandoned)


def test_lost_verdict_ends_the_exchange_and_the_next_reply_answers_the_next_command() -> None:
    script = [(S, "220 mx.corp.example ESMTP"), (C, "EHLO ws1"), (S, "250 mx.corp.example"), (C, "AUTH LOGIN"),
              (S, "334 VXNlcm5hbWU6"), (C, b64("alice")), (S, "334 UGFzc3dvcmQ6"), (C, b64("Secret-1")),
              (C, "MAIL FROM:<alice@corp.example>"), (S, "250 2.1.0 Ok")]  # fmt: skip
    events = feed(SmtpSession(), script)
    assert credentials(events) == [("LOGIN", "alice", "Secret-1")]
    assert kinds(events, ev.AuthAbandoned) and not kinds(events, ev.AuthResult)
    assert [(m.address, m.accepted) for m in kinds(events, ev.MailFrom)] == [("alice@corp.example", True)]


def test_with_the_server_a_line_without_a_prompt_is_a_command() -> None:
    """The server spoke in the exchange (it refused the first step): a later DATA is no LOGIN answer."""
    script = [(S, "220 mx ESMTP"), (C, "AUTH LOGIN"), (S, "334 VXNlcm5hbWU6"), (C, b64("alice")),
              (S, "535 5.7.8 Error"), (C, "DATA"), (S, "503 5.5.1 Error: need RCPT command")]  # fmt: skip
    events = feed(SmtpSession(), script)
    assert credentials(events) == []
    assert [r.success for r in kinds(events, ev.AuthResult)] == [False]
    assert [d.accepted for d in kinds(events, ev.DataStart)] == [False]


def test_two_sided_login_still_follows_the_prompts() -> None:
    script = [(S, "220 mx ESMTP"), (C, "AUTH LOGIN"), (S, "334 VXNlcm5hbWU6"), (C, b64("alice")),
              (S, "334 UGFzc3dvcmQ6"), (C, b64("Secret-1")), (S, "235 2.7.0 Authentication successful")]  # fmt: skip
    events = feed(SmtpSession(), script)
    assert credentials(events) == [("LOGIN", "alice", "Secret-1")]
    assert [r.success for r in kinds(events, ev.AuthResult)] == [True]


# ---- each attempt keeps its own secret and verdict in the finding ---------------------------------------------


def _smtp_attempt(password: str, verdict: str) -> list[tuple[ev.Side, bytes]]:
    lines = [(S, "220 mx.corp.example ESMTP"), (C, "EHLO ws1"), (S, "250 mx.corp.example"), (C, "AUTH LOGIN"),
             (S, "334 VXNlcm5hbWU6"), (C, b64("alice")), (S, "334 UGFzc3dvcmQ6"), (C, b64(password)), (S, verdict),
             (C, "QUIT"), (S, "221 Bye")]  # fmt: skip
    return [(side, text.encode() + b"\r\n") for side, text in lines]


def _analyse(attempts: list[tuple[str, str]]) -> Analysis:
    analysis = Analysis()
    analysis.file = "attempts.pcap"
    frame = 0
    for port, (password, verdict) in enumerate(attempts, start=40000):
        flow = analysis.flow("192.0.2.25", 25, "10.0.0.9", port, partial=False)
        for side, data in _smtp_attempt(password, verdict):
            frame += 1
            flow.data(side, data, frame, 1_700_000_000.0 + frame)
        flow.close()
    return analysis


def _credential_records(analysis: Analysis, show_secrets: bool = False) -> list[dict]:
    records = [finding_record(f, show_secrets) for f in analysis.findings]
    return [r for r in records if r["type"] == "cleartext-credentials"]


def test_failed_then_successful_attempt_with_another_password_reports_both() -> None:
    analysis = _analyse([("Wrong-1", "535 5.7.8 Error"), ("Right-2", "235 2.7.0 Ok"), ("Right-2", "235 2.7.0 Ok")])
    [shown] = _credential_records(analysis, show_secrets=True)
    assert shown["attempts"] == [
        {"password_no": 1, "password": "Wrong-1", "outcome": "failure", "count": 1},
        {"password_no": 2, "password": "Right-2", "outcome": "success", "count": 2},
    ]
    assert (shown["password"], shown["outcome"], shown["count"]) == ("Right-2", "success", 3)
    assert [(d["password_no"], d["outcome"]) for d in shown["details"]] == [
        (1, "failure"),
        (2, "success"),
        (2, "success"),
    ]
    [masked] = _credential_records(analysis)
    assert masked["password"] == MASK and [a["password"] for a in masked["attempts"]] == [MASK, MASK]
    assert "Wrong-1" not in repr(masked) and "Right-2" not in repr(masked)
    assert [a["outcome"] for a in masked["attempts"]] == ["failure", "success"]


def test_the_table_lists_each_attempt_with_its_verdict_and_no_secret() -> None:
    analysis = _analyse([("Wrong-1", "535 5.7.8 Error"), ("Right-2", "235 2.7.0 Ok")])
    console = Console(file=io.StringIO(), width=80, color_system=None)
    render_tables(console, [finding_record(f) for f in analysis.findings], summary_record({}, analysis.findings))
    out = " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]
    assert f"password_no 1 password {MASK} outcome failure count 1; password_no 2 password {MASK}" in out
    assert "Wrong-1" not in out and "Right-2" not in out


def test_the_fingerprint_is_the_same_fact_whatever_the_attempts() -> None:
    one = _credential_records(_analyse([("Wrong-1", "535 5.7.8 Error")]))[0]
    two = _credential_records(_analyse([("Wrong-1", "535 5.7.8 Error"), ("Right-2", "235 2.7.0 Ok")]))[0]
    assert one["id"] == two["id"] and one["id"].startswith("ls-")


# ---- replies go only to commands they can answer ----------------------------------------------------------------


def _transaction(server_lines: list[str]) -> list[ev.Event]:
    client = (
        "MAIL FROM:<spam@outside.example>\r\nRCPT TO:<a@corp.example>\r\nRCPT TO:<victim@elsewhere.test>\r\nDATA\r\n"
    )
    session = SmtpSession()
    out = session.receive(S, b"220 mx.corp.example ESMTP\r\n", 1, 1.0)
    out += session.receive(C, b"EHLO x\r\n", 2, 2.0) + session.receive(S, b"250 mx.corp.example\r\n", 3, 3.0)
    out += session.receive(C, client.encode(), 4, 4.0)
    out += session.receive(S, "".join(line + "\r\n" for line in server_lines).encode(), 5, 5.0)
    return out


def test_a_354_never_answers_an_rcpt_whose_reply_is_missing() -> None:
    events = _transaction(["250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"])
    rcpts = [(r.address, r.reply_code, r.accepted) for r in kinds(events, ev.RcptTo)]
    assert rcpts == [("a@corp.example", 250, True), ("victim@elsewhere.test", None, None)]
    assert [d.accepted for d in kinds(events, ev.DataStart)] == [True]
    assert "reply_missing" in [a.code for a in kinds(events, ev.Anomaly)]


def test_a_multi_line_reply_that_never_ends_answers_nothing() -> None:
    events = _transaction(["250 2.1.0 Ok", "250 2.1.5 Ok", "250-2.1.5 still going", "354 go ahead"])
    rcpts = [(r.address, r.accepted) for r in kinds(events, ev.RcptTo)]
    assert rcpts == [("a@corp.example", True), ("victim@elsewhere.test", None)]
    codes = [a.code for a in kinds(events, ev.Anomaly)]
    assert "reply_unterminated" in codes and "reply_missing" in codes
    assert [d.accepted for d in kinds(events, ev.DataStart)] == [True]


def test_unattributed_acceptance_makes_no_relay_finding() -> None:
    analysis = Analysis()
    analysis.file = "relay.pcap"
    flow = analysis.flow("192.0.2.25", 25, "203.0.113.7", 40000, partial=False)
    script = [(S, b"220 mx.corp.example ESMTP\r\n"), (C, b"EHLO x\r\n"), (S, b"250 mx.corp.example\r\n"),
              (C, b"MAIL FROM:<spam@outside.example>\r\nRCPT TO:<victim@elsewhere.test>\r\nDATA\r\n"),
              (S, b"250 2.1.0 Ok\r\n354 go ahead\r\n"), (C, b"Subject: x\r\n\r\nx\r\n.\r\n"),
              (S, b"250 2.0.0 queued\r\n")]  # fmt: skip
    for frame, (side, data) in enumerate(script, start=1):
        flow.data(side, data, frame, 1_700_000_000.0 + frame)
    flow.close()
    assert [f for f in analysis.findings if str(f.type) == "open-relay"] == []


# ---- auth-methods evidence is the advertising line; banners never hold replacement characters -----------------


def _records(server: tuple[str, int], script: list[tuple[ev.Side, bytes]]) -> dict[str, dict]:
    analysis = Analysis()
    analysis.file = "evidence.pcap"
    flow = analysis.flow(server[0], server[1], "10.0.0.9", 40000, partial=False)
    for frame, (side, data) in enumerate(script, start=1):
        flow.data(side, data, frame, 1_700_000_000.0 + frame)
    flow.close()
    return {r["type"]: r for r in (finding_record(f) for f in analysis.findings)}


@pytest.mark.parametrize(
    ("port", "script", "advertised"),
    [
        (
            25,
            [(S, b"220 mx.corp.example ESMTP\r\n"), (C, b"EHLO ws1\r\n"),
             (S, b"250-mx.corp.example\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=LOGIN\r\n"
                 b"250 CHUNKING\r\n")],
            "250-AUTH PLAIN LOGIN\n250-AUTH=LOGIN",
        ),
        (
            110,
            [(S, b"+OK ready\r\n"), (C, b"CAPA\r\n"), (S, b"+OK\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n")],
            "USER\nSASL PLAIN LOGIN",
        ),
        (
            143,
            [(S, b"* OK ready\r\n"), (C, b"a1 CAPABILITY\r\n"),
             (S, b"* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN\r\na1 OK done\r\n")],
            "* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN",
        ),
    ],
    ids=["smtp", "pop3", "imap"],
)  # fmt: skip
def test_auth_methods_evidence_quotes_the_advertising_line(
    port: int, script: list[tuple[ev.Side, bytes]], advertised: str
) -> None:
    methods = _records(("192.0.2.25", port), script)["auth-methods"]
    assert advertised in [item["line"] for item in methods["evidence"]]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [(b"caf\xe9 ESMTP", "café ESMTP"), ("café ESMTP".encode(), "café ESMTP"), (b"\xff\xfe ESMTP", "ÿþ ESMTP")],
    ids=["latin-1", "utf-8", "not-utf-8"],
)
def test_banners_decode_utf8_else_latin1(raw: bytes, shown: str) -> None:
    script = [(S, b"220 mx.corp.example " + raw + b"\r\n"), (C, b"EHLO ws1\r\n"), (S, b"250 mx.corp.example\r\n")]
    service = _records(("192.0.2.25", 25), script)["mail-service"]
    assert service["banner"] == f"mx.corp.example {shown}"
    assert "\ufffd" not in repr(service)
