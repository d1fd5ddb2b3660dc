"""Relay verdicts on a client that pipelines commands after its last SASL response (RFC 2920 wants AUTH to end a
group; real clients and attack tools do not always wait): the server answers in order, so its verdict on the AUTH
comes before its reply to the MAIL FROM sent after it, and that verdict, not the order the client sent its commands
in, says whether the transaction was an authenticated user's. Crafted dialogues, read from a capture built packet by
packet; what a real Postfix does with the same bytes is in tests/test_verdicts_lab.py."""

from __future__ import annotations

import base64

import pytest

from dissectors import events as ev
from dissectors.smtp import SmtpSession
from tests.test_verdict_dialogues import EHLO, findings, relays

GRANTED, REFUSED = "235 2.7.0 Authentication successful", "535 5.7.8 Error: authentication failed: bad password"
TRANSACTION = "MAIL FROM:<alice@contoso.com><CRLF>RCPT TO:<v@outside.test>"
ACCEPTED = "250 2.1.0 Ok<CRLF>250 2.1.5 Ok"
END = """C: QUIT
S: 221 2.0.0 Bye"""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLAIN_RESPONSE = b64("\0alice\0secret")
CRLF = "\r\n"


# The exchanges whose last response the client may send with the transaction behind it: the server has spoken in
# each (a 334 prompt) before that response.
PROMPTED = {
    "login": f"""C: AUTH LOGIN
S: 334 VXNlcm5hbWU6
C: {b64("alice")}
S: 334 UGFzc3dvcmQ6
C: {b64("secret")}""",
    "plain-without-initial-response": f"""C: AUTH PLAIN
S: 334
C: {PLAIN_RESPONSE}""",
}


def pipelined(opening: str, verdict: str, tail: str = TRANSACTION, replies: str = ACCEPTED) -> str:
    """The client's last response, then ``tail`` in the same segment; the server's verdict, then ``replies``."""
    return EHLO + f"{opening}<CRLF>{tail}\nS: {verdict}<CRLF>{replies}\n{END}"


def one_by_one(opening: str, verdict: str) -> str:
    """The same exchange and transaction, each command sent after the reply to the one before."""
    return (
        EHLO
        + f"""{opening}
S: {verdict}
C: MAIL FROM:<alice@contoso.com>
S: 250 2.1.0 Ok
C: RCPT TO:<v@outside.test>
S: 250 2.1.5 Ok
{END}"""
    )


@pytest.mark.parametrize("opening", PROMPTED.values(), ids=PROMPTED.keys())
def test_a_transaction_pipelined_after_the_last_response_is_authenticated_by_the_235_before_it(opening: str) -> None:
    assert relays(findings(one_by_one(opening, GRANTED))) == []  # as before
    assert relays(findings(pipelined(opening, GRANTED))) == []


@pytest.mark.parametrize("opening", PROMPTED.values(), ids=PROMPTED.keys())
def test_a_transaction_pipelined_after_a_refused_auth_is_judged_as_one_sent_after_the_535(opening: str) -> None:
    """The server refused the AUTH before it took the MAIL and RCPT: an unauthenticated client's relaying, high,
    as when the client waited for the 535 (not possible-relay: the verdict was seen)."""
    expected = [("open-relay", "high", "v@outside.test")]
    assert relays(findings(one_by_one(opening, REFUSED))) == expected  # as before
    records = findings(pipelined(opening, REFUSED))
    assert relays(records) == expected
    [credential] = [r for r in records if r["type"] == "cleartext-credentials"]
    assert [a["outcome"] for a in credential["attempts"]] == ["failure"]


@pytest.mark.parametrize(
    ("verdict", "expected"), [(GRANTED, []), (REFUSED, [("open-relay", "high", "v@outside.test")])]
)
def test_a_message_pipelined_after_the_last_response_follows_the_verdict(
    verdict: str, expected: list[tuple[str, str, str]]
) -> None:
    """DATA (whose reply the message waits for) and BDAT (the message in the same group) behind the response."""
    opening = PROMPTED["login"]
    data = pipelined(opening, verdict, f"{TRANSACTION}<CRLF>DATA", f"{ACCEPTED}<CRLF>354 go ahead")
    data = data.replace("C: QUIT", "C: Subject: hi<CRLF><CRLF>hi<CRLF>.<CRLF>QUIT")
    data = data.replace("S: 221", "S: 250 2.0.0 Ok: queued as 1A2<CRLF>221")
    assert relays(findings(data)) == expected
    bdat = pipelined(opening, verdict, f"{TRANSACTION}<CRLF>BDAT 4 LAST<CRLF>hi", f"{ACCEPTED}<CRLF>250 2.0.0 Ok")
    assert relays(findings(bdat.replace("<CRLF>hi\n", "<CRLF>hi<CRLF>\n"))) == expected


def test_a_reply_that_answers_only_a_later_command_is_no_verdict() -> None:
    """The server's verdict missing (it answered MAIL with a 250, which no AUTH gets): the exchange ends without one,
    the 250 answers MAIL, and the transaction may be an authenticated user's: possible-relay."""
    script = pipelined(PROMPTED["login"], "250 2.1.0 Ok", replies="250 2.1.5 Ok")
    [(verdict, severity, _)] = relays(records := findings(script))
    assert (verdict, severity) == ("possible-relay", "medium")
    [relay] = [r for r in records if r["type"] == "open-relay"]
    assert "its AUTH LOGIN was not seen" in relay["rule"]


def test_the_session_events_come_in_the_order_of_the_replies() -> None:
    """What the relay detector reads: the AUTH's verdict before the MAIL's reply, whatever the client's order."""
    session = SmtpSession()
    events: list[ev.Event] = []
    script = [(ev.Side.SERVER, "220 mx ESMTP"), (ev.Side.CLIENT, "AUTH LOGIN"), (ev.Side.SERVER, "334 VXNlcm5hbWU6"),
              (ev.Side.CLIENT, b64("alice")), (ev.Side.SERVER, "334 UGFzc3dvcmQ6"),
              (ev.Side.CLIENT, CRLF.join((b64("secret"), *TRANSACTION.split("<CRLF>")))),
              (ev.Side.SERVER, CRLF.join((GRANTED, *ACCEPTED.split("<CRLF>"))))]  # fmt: skip
    for frame, (side, text) in enumerate(script, start=1):
        events += session.receive(side, text.encode() + b"\r\n", frame, 1000.0 + frame)
    kinds = [type(e).__name__ for e in events if isinstance(e, (ev.AuthResult, ev.MailFrom, ev.RcptTo))]
    assert kinds == ["AuthResult", "MailFrom", "RcptTo"]
    assert not [e for e in events if isinstance(e, (ev.AuthAbandoned, ev.Anomaly))]


# -- an XCLIENT the server took resets the authentication (Postfix: smtpd_sasl_auth_reset unless it names a LOGIN) --


@pytest.mark.parametrize(
    ("before", "xclient", "expected"),
    [
        (
            f"C: AUTH PLAIN {PLAIN_RESPONSE}\nS: {GRANTED}",
            "ADDR=198.51.100.7",
            [("open-relay", "high", "v@outside.test")],
        ),
        (
            "C: XCLIENT LOGIN=alice\nS: 220 mx.contoso.com ESMTP",
            "ADDR=198.51.100.7",
            [("open-relay", "high", "v@outside.test")],
        ),
        (f"C: AUTH PLAIN {PLAIN_RESPONSE}\nS: {GRANTED}", "ADDR=198.51.100.7 LOGIN=bob", []),
        ("C: NOOP\nS: 250 2.0.0 Ok", "ADDR=198.51.100.7 LOGIN=bob", []),
    ],
    ids=["auth-then-addr", "login-then-addr", "auth-then-login", "login"],
)
def test_an_xclient_without_login_ends_the_authentication_before_it(
    before: str, xclient: str, expected: list[tuple[str, str, str]]
) -> None:
    """A proxy's XCLIENT starts the session again as the client it names: without LOGIN, Postfix forgets an AUTH (or
    an earlier XCLIENT's LOGIN) granted before it, and judges the named client's relaying as anyone's."""
    script = (
        EHLO
        + f"""{before}
C: XCLIENT {xclient}
S: 220 mx.contoso.com ESMTP
C: EHLO proxy.example
S: 250 mx.contoso.com
C: MAIL FROM:<alice@contoso.com>
S: 250 2.1.0 Ok
C: RCPT TO:<v@outside.test>
S: 250 2.1.5 Ok
{END}"""
    )
    records = findings(script)
    assert relays(records) == expected
    for relay in (r for r in records if r["type"] == "open-relay"):
        assert [d["client"].rpartition(":")[0] for d in relay["details"]] == ["198.51.100.7"]
