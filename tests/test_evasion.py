"""A client cannot hide what it sends from the dissectors: a literal the server refused does not swallow the next
command, and a TLS record the server never answered with TLS does not turn a plain session into "implicit TLS".

Each attack runs as byte streams through the dissectors, and as a crafted capture through ``leakscope analyze``.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from dissectors import events as ev
from dissectors.imap import ImapSession
from dissectors.pop3 import Pop3Session
from dissectors.session import MailSession
from dissectors.smtp import SmtpSession
from fuzz import floods

C, S = ev.Side.CLIENT, ev.Side.SERVER
GREETING = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"
CLIENT_HELLO = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03"


def feed(session: MailSession, script: list[tuple[ev.Side, bytes]], close: bool = False) -> list[ev.Event]:
    out: list[ev.Event] = []
    for frame, (side, data) in enumerate(script, start=1):
        out += session.receive(side, data, frame, float(frame))
    if close:
        out += session.close()
    return out


def logins(events: list[ev.Event]) -> list[tuple[str | None, str | None]]:
    return [(e.user, e.password) for e in events if isinstance(e, ev.Credentials)]


def codes(events: list[ev.Event]) -> list[str]:
    return [e.code for e in events if isinstance(e, ev.Anomaly)]


# ---- IMAP literals follow the server's verdict ----------------------------------------------------------------------


def test_refused_literal_does_not_swallow_the_next_login() -> None:
    events = feed(
        ImapSession(),
        [
            (S, GREETING),
            (C, b"a1 APPEND INBOX {4294967295}\r\n"),
            (S, b"a1 NO [TOOBIG] Message too large\r\n"),
            (C, b"a2 LOGIN alice secret\r\n"),
            (S, b"a2 OK logged in\r\n"),
        ],
    )
    assert logins(events) == [("alice", "secret")]
    assert [r.success for r in events if isinstance(r, ev.AuthResult)] == [True]


def test_bytes_sent_before_the_verdict_follow_it() -> None:
    """A client that does not wait: its bytes are held until the server says what they are."""
    refused = feed(
        ImapSession(),
        [(S, GREETING), (C, b"a1 APPEND INBOX {4294967295}\r\na2 LOGIN alice secret\r\n"), (S, b"a1 BAD no\r\n")],
    )
    assert logins(refused) == [("alice", "secret")]
    taken = feed(
        ImapSession(),
        [(S, GREETING), (C, b"a1 LOGIN {5}\r\nalice {6}\r\n"), (S, b"+ go\r\n"), (S, b"+ go\r\n"), (C, b"secret\r\n")],
    )
    assert logins(taken) == [("alice", "secret")]
    bye = feed(ImapSession(), [(S, GREETING), (C, b"a1 APPEND X {99}\r\na2 LOGIN bob pw\r\n"), (S, b"* BYE off\r\n")])
    assert logins(bye) == [("bob", "pw")]


MESSAGE = (b"a2 LOGIN not a command\r\n" * 500)[:10_000]


def test_non_synchronising_literals_are_read_at_once_within_bounds() -> None:
    small = feed(ImapSession(), [(S, GREETING), (C, b"a1 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")])
    assert logins(small) == [("alice", "secret")]
    big = feed(
        ImapSession(),
        [(S, GREETING), (C, b"a1 APPEND INBOX {100000+}\r\na2 LOGIN bob pw\r\n"), (S, b"a1 BAD [TOOBIG] no\r\n")],
    )
    assert logins(big) == [("bob", "pw")] and "literal_too_big" in codes(big)
    announced = feed(
        ImapSession(),
        [
            (S, b"* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n"),
            (C, b"a1 APPEND INBOX {10000+}\r\n" + MESSAGE + b"\r\na3 LOGIN carol pw\r\n"),
        ],
    )
    assert logins(announced) == [("carol", "pw")]  # 10 000 bytes of message taken as such by a LITERAL+ server


def test_literal_never_answered_is_read_as_commands() -> None:
    talkative = b"a1 APPEND X {999999}\r\n" + b"x" * 70_000 + b"\r\na2 LOGIN u p\r\n"
    flood = feed(ImapSession(), [(S, GREETING), (C, talkative)])
    assert "literal_unanswered" in codes(flood) and logins(flood) == [("u", "p")]
    ended = feed(ImapSession(), [(S, GREETING), (C, b"a1 APPEND X {12}\r\na2 LOGIN u p\r\n")], close=True)
    assert "literal_unanswered" in codes(ended) and logins(ended) == [("u", "p")]
    one_sided = feed(ImapSession(), [(C, b"a1 LOGIN {5}\r\nalice {6}\r\nsecret\r\n")], close=True)
    assert logins(one_sided) == [("alice", "secret")]  # no server bytes at all: the client is all there is


def test_what_follows_a_refused_data_is_read_as_commands() -> None:
    """Found while building the canary harness: lines sent right after DATA were message text even when the server
    refused DATA (and so read them as commands)."""
    plain = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n"
    refused = feed(
        SmtpSession(),
        [(S, b"220 mx ESMTP\r\n"), (C, b"DATA\r\n" + plain), (S, b"503 5.5.1 need RCPT\r\n235 2.7.0 ok\r\n")],
    )
    assert logins(refused) == [("alice", "secret")]
    assert [r.success for r in refused if isinstance(r, ev.AuthResult)] == [True]
    envelope = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
    for early in (True, False):  # the message sent with DATA (pipelined early), or after the 354 as it should be
        script = [(S, b"220 mx ESMTP\r\n"), (C, envelope + (plain + b".\r\n" if early else b""))]
        script += [(S, b"250 ok\r\n250 ok\r\n354 go on\r\n")]
        script += [] if early else [(C, plain + b".\r\n")]
        message = feed(SmtpSession(), [*script, (S, b"250 queued\r\n")])
        assert not logins(message)  # message text, as the server read it
    unanswered = feed(SmtpSession(), [(S, b"220 mx ESMTP\r\n"), (C, b"DATA\r\n" + plain)], close=True)
    assert "data_unanswered" in codes(unanswered) and logins(unanswered) == [("alice", "secret")]


def test_commands_sent_before_the_greeting_are_not_answered_by_it() -> None:
    """Found by the canary harness: a STARTTLS/STLS sent before the greeting took the greeting as its acceptance (the
    session went blind), an AUTH took it as its success, and an IMAP line tagged "+" started an exchange no server
    answers."""
    plain = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n"
    smtp = feed(SmtpSession(), [(C, b"STARTTLS\r\n"), (S, b"220 mx ESMTP\r\n500 no\r\n"), (C, plain)])
    pop3_login = b"USER alice\r\nPASS secret\r\n"
    pop3 = feed(Pop3Session(), [(C, b"STLS\r\n"), (S, b"+OK ready\r\n-ERR no\r\n"), (C, pop3_login)])
    imap_login = b"a2 LOGIN alice secret\r\n"
    imap = feed(ImapSession(), [(S, GREETING), (C, b"+ AUTHENTICATE PLAIN\r\n"), (S, b"* BAD\r\n"), (C, imap_login)])
    for events in (smtp, pop3, imap):
        assert not [e for e in events if isinstance(e, ev.StartTls) and e.accepted]
        assert logins(events) == [("alice", "secret")]
    early_auth = feed(SmtpSession(), [(C, plain), (S, b"220 mx ESMTP\r\n535 5.7.8 failed\r\n")])
    assert [r.success for r in early_auth if isinstance(r, ev.AuthResult)] == [False]
    assert [g.banner for g in early_auth if isinstance(g, ev.Greeting)] == ["mx ESMTP"]


# ---- TLS is believed when the server answers it --------------------------------------------------------------------


def test_client_tls_record_not_answered_by_the_server_is_read_as_plain_text() -> None:
    events = feed(
        ImapSession(),
        [(C, CLIENT_HELLO + b"\r\n"), (S, GREETING), (C, b"a1 LOGIN alice secret\r\n"), (S, b"a1 OK\r\n")],
    )
    assert not [e for e in events if isinstance(e, ev.StartTls)]
    assert "tls_not_answered" in codes(events)
    assert [e.banner for e in events if isinstance(e, ev.Greeting)] == ["ready"]
    assert logins(events) == [("alice", "secret")]
    smtp = feed(SmtpSession(), [(C, CLIENT_HELLO), (C, b"x" * 70_000 + b"\r\nQUIT\r\n")])
    assert "tls_not_answered" in codes(smtp) and [e for e in smtp if isinstance(e, ev.Quit)]


def test_client_tls_answered_with_tls_is_implicit_tls() -> None:
    for answer in (b"\x16\x03\x03\x00\x7a\x02\x00", b"\x15\x03\x03\x00\x02\x02\x28"):  # ServerHello, or an alert
        events = feed(Pop3Session(), [(C, CLIENT_HELLO), (S, answer), (C, b"USER alice\r\nPASS secret\r\n")])
        [start] = [e for e in events if isinstance(e, ev.StartTls)]
        assert (start.command, start.accepted, start.side) == ("implicit", True, C)
        assert start.evidence.frame == 1 and not logins(events)


def test_starttls_counts_only_once_the_server_accepts_it() -> None:
    """A refused STARTTLS/STLS leaves the session in plain text; an answer to another tag is not the verdict."""
    smtp = feed(
        SmtpSession(),
        [
            (S, b"220 mx ESMTP\r\n"),
            (C, b"STARTTLS\r\n"),
            (S, b"454 4.7.0 TLS not available\r\n"),
            (C, b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n"),
            (S, b"235 ok\r\n"),
        ],
    )
    pop3 = feed(
        Pop3Session(),
        [(S, b"+OK ready\r\n"), (C, b"STLS\r\n"), (S, b"-ERR no\r\n"), (C, b"USER alice\r\nPASS secret\r\n")],
    )
    imap = feed(
        ImapSession(),
        [
            (S, GREETING),
            (C, b"a1 STARTTLS\r\n"),
            (S, b"a0 OK other\r\na1 BAD no\r\n"),
            (C, b"a2 LOGIN alice secret\r\n"),
        ],
    )
    for events in (smtp, pop3, imap):
        assert [e.accepted for e in events if isinstance(e, ev.StartTls)] == [False]
        assert logins(events) == [("alice", "secret")]


# ---- the same through leakscope analyze -----------------------------------------------------------------------------


def _analyze(tmp_path: Path, port: int, turns: list[tuple[bool, bytes]]) -> list[dict]:
    path = tmp_path / f"crafted-{port}.pcap"
    with path.open("wb") as stream:
        floods.write_conversation(floods.PcapWriter(stream), 1, iter(turns), port=port)
    command = ["leakscope", "analyze", "--format", "jsonl", "--show-secrets", str(path)]
    done = subprocess.run(command, capture_output=True)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_analyze_sees_the_login_after_a_refused_huge_literal(tmp_path: Path) -> None:
    records = _analyze(
        tmp_path,
        143,
        [
            (True, GREETING),
            (False, b"a1 APPEND INBOX {4294967295}\r\n"),
            (True, b"a1 NO [TOOBIG] Message too large\r\n"),
            (False, b"a2 LOGIN alice secret\r\n"),
            (True, b"a2 OK logged in\r\n"),
            (False, b"a3 LOGOUT\r\n"),
            (True, b"* BYE\r\na3 OK\r\n"),
        ],
    )
    [credentials] = [r for r in records if r["type"] == "cleartext-credentials"]
    assert (credentials["user"], credentials["password"], credentials["outcome"]) == ("alice", "secret", "success")


def test_analyze_sees_a_plain_session_behind_a_fake_client_hello(tmp_path: Path) -> None:
    records = _analyze(
        tmp_path,
        25,
        [
            (False, CLIENT_HELLO + b"\r\n"),
            (True, b"220 mx.example.com ESMTP\r\n"),
            (False, b"EHLO c\r\n"),
            (True, b"250-mx.example.com\r\n250 AUTH PLAIN\r\n"),
            (False, b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n"),
            (True, b"235 2.7.0 ok\r\n"),
        ],
    )
    [credentials] = [r for r in records if r["type"] == "cleartext-credentials"]
    assert (credentials["user"], credentials["tls"]) == ("alice", False)
    [service] = [r for r in records if r["type"] == "mail-service"]
    assert service["tls"] is False and service["banner"] == "mx.example.com ESMTP"
    assert records[-1]["dissector_anomalies"]["tls_not_answered"] == 1
