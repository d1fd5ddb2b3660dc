"""SMTP, POP3 and IMAP session dissectors fed bytes per side, as the passive pipeline and the probe feed them."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dissectors import events as ev
from dissectors import ntlmssp
from dissectors.imap import ImapSession
from dissectors.linebuffer import MAX_LINE
from dissectors.pop3 import Pop3Session
from dissectors.session import MailSession
from dissectors.smtp import SmtpSession
from tests.corpus import require_corpus

C, S = ev.Side.CLIENT, ev.Side.SERVER


def feed(session: MailSession, script: list[tuple[ev.Side, bytes]], split: int | None = None) -> list[ev.Event]:
    """Feed a dialogue; with ``split``, every chunk is cut into pieces of that many bytes (segment boundaries)."""
    out: list[ev.Event] = []
    for frame, (side, data) in enumerate(script, start=1):
        pieces = [data] if not split else [data[i : i + split] for i in range(0, len(data), split)]
        for piece in pieces:
            out.extend(session.receive(side, piece, frame, 1000.0 + frame))
    return out


def kinds(events: list[ev.Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


SMTP_DIALOGUE = [
    (S, b"220-mx.corp.example ESMTP Postfix (Debian/GNU)\r\n220 second line\r\n"),
    (C, b"EHLO ws01.corp.example\r\n"),
    (
        S,
        b"250-mx.corp.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN NTLM\r\n"
        b"250-AUTH=PLAIN LOGIN\r\n250-STARTTLS\r\n250 CHUNKING\r\n",
    ),
    (C, b"AUTH LOGIN\r\n"),
    (S, b"334 VXNlcm5hbWU6\r\n"),
    (C, base64.b64encode(b"bob") + b"\r\n"),
    (S, b"334 UGFzc3dvcmQ6\r\n"),
    (C, base64.b64encode(b"wrong") + b"\r\n"),
    (S, b"535 5.7.8 Error: authentication failed\r\n"),
    (C, b"MAIL FROM:<> SIZE=100\r\nRCPT TO:<a@corp.example>\r\nRCPT TO:<victim@elsewhere.test>\r\nDATA\r\n"),
    (S, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n554 5.7.1 <victim@elsewhere.test>: Relay access denied\r\n354 End data\r\n"),
    (C, b"Subject: hi\r\n\r\nRCPT TO:<not@a.command>\r\n..dot\r\n.\r\n"),
    (S, b"250 2.0.0 Ok: queued\r\n"),
    (C, b"BDAT 21 LAST\r\nMAIL FROM:<x@y.z>\r\n\r\nQUIT\r\n"),
    (S, b"250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"),
]


def test_smtp_dialogue() -> None:
    events = feed(SmtpSession(), SMTP_DIALOGUE)
    greeting = kinds(events, ev.Greeting)[0]
    assert greeting.banner == "mx.corp.example ESMTP Postfix (Debian/GNU)"
    assert greeting.evidence.frame == 1
    capabilities = kinds(events, ev.Capabilities)[0]
    assert capabilities.mechanisms == ["PLAIN", "LOGIN", "NTLM"] and capabilities.starttls
    credentials = kinds(events, ev.Credentials)[0]
    assert (credentials.mechanism, credentials.user, credentials.password) == ("LOGIN", "bob", "wrong")
    assert [r.success for r in kinds(events, ev.AuthResult)] == [False]
    assert kinds(events, ev.MailFrom)[0].address == "<>"
    rcpts = kinds(events, ev.RcptTo)
    assert [(r.address, r.accepted, r.reply_code) for r in rcpts] == [
        ("a@corp.example", True, 250),
        ("victim@elsewhere.test", False, 554),
    ]
    assert rcpts[1].evidence.line == "RCPT TO:<victim@elsewhere.test>" and rcpts[1].evidence.frame == 10
    assert kinds(events, ev.DataStart)[0].accepted
    assert len(kinds(events, ev.MailFrom)) == 1  # neither message content nor the BDAT chunk were read as commands
    assert kinds(events, ev.Quit)
    assert not kinds(events, ev.Anomaly)


def test_smtp_same_events_whatever_the_segmentation() -> None:
    whole = feed(SmtpSession(), SMTP_DIALOGUE)
    for split in (1, 3, 7):
        pieces = feed(SmtpSession(), SMTP_DIALOGUE, split)
        assert [type(e).__name__ for e in pieces] == [type(e).__name__ for e in whole]
        assert [getattr(e, "address", None) for e in pieces] == [getattr(e, "address", None) for e in whole]


def test_smtp_starttls_stops_reading() -> None:
    events = feed(
        SmtpSession(),
        [
            (S, b"220 mx ESMTP\r\n"),
            (C, b"EHLO c\r\n"),
            (S, b"250-mx\r\n250 STARTTLS\r\n"),
            (C, b"STARTTLS\r\n"),
            (S, b"220 2.0.0 Ready to start TLS\r\n"),
            (C, b"\x16\x03\x01\x02\x00AUTH PLAIN AGEAYg==\r\n"),
            (S, b"\x16\x03\x03235 ok\r\n"),
        ],
    )
    assert [e.accepted for e in kinds(events, ev.StartTls)] == [True]
    assert not kinds(events, ev.Credentials) and not kinds(events, ev.AuthStart)


def test_smtp_ntlm_exchange_as_stream() -> None:
    """[MS-SMTPNTLM] 4.1 replayed as byte streams through the dissector."""
    document = json.loads(require_corpus("vectors", "ms-smtpntlm_4.json").read_text())
    t1, t2, t3 = (m["base64"].encode() for m in document["messages"][:3])
    events = feed(
        SmtpSession(),
        [
            (S, b"220 exch-cli-66 Microsoft ESMTP MAIL Service\r\n"),
            (C, b"EHLO test.com\r\n"),
            (S, b"250-exch-cli-66 Hello [127.0.0.1]\r\n250-AUTH GSSAPI NTLM\r\n250 OK\r\n"),
            (C, b"AUTH NTLM\r\n"),
            (S, b"334 ntlm supported\r\n"),
            (C, t1 + b"\r\n"),
            (S, b"334 " + t2 + b"\r\n"),
            (C, t3 + b"\r\n"),
            (S, b"235 2.7.0 Authentication successful\r\n"),
        ],
        split=5,
    )
    steps = [e.ntlm for e in kinds(events, ev.SaslStep)]
    assert [m.type_name for m in steps] == ["negotiate", "challenge", "authenticate"]
    assert steps[1].netbios_computer == "EXCH-CLI-66"
    assert steps[2].user == "test"
    assert [r.success for r in kinds(events, ev.AuthResult)] == [True]


def test_pop3_dialogue_and_ms_pop3_transcript() -> None:
    document = json.loads(require_corpus("vectors", "ms-pop3_4.json").read_text())
    t1, t2, t3 = (m["base64"].encode() for m in document["messages"][:3])
    events = feed(
        Pop3Session(),
        [
            (S, b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n"),
            (C, b"CAPA\r\n"),
            (S, b"+OK Capability list follows\r\nTOP\r\nUSER\r\nSASL PLAIN NTLM\r\nSTLS\r\n.\r\n"),
            (C, b"USER alice\r\n"),
            (S, b"+OK\r\n"),
            (C, b"PASS pw\r\n"),
            (S, b"-ERR [AUTH] Authentication failed.\r\n"),
            (C, b"LIST\r\n"),
            (S, b"+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n"),
            (C, b"AUTH NTLM\r\n"),
            (S, b"+OK\r\n"),
            (C, t1 + b"\r\n"),
            (S, b"+ " + t2 + b"\r\n"),
            (C, t3 + b"\r\n"),
            (S, b"+OK User successfully logged on\r\n"),
            (C, b"RETR 1\r\n"),
            (S, b"+OK\r\n-ERR not a status\r\n..\r\n.\r\n"),
            (C, b"QUIT\r\n"),
            (S, b"+OK bye\r\n"),
        ],
        split=4,
    )
    assert kinds(events, ev.Greeting)[0].banner.startswith("POP3 server ready")
    capabilities = kinds(events, ev.Capabilities)[0]
    assert capabilities.mechanisms == ["PLAIN", "NTLM"] and capabilities.starttls and capabilities.cleartext_login
    credentials = kinds(events, ev.Credentials)[0]
    assert (credentials.mechanism, credentials.user, credentials.password) == ("USER-PASS", "alice", "pw")
    assert [(r.mechanism, r.success) for r in kinds(events, ev.AuthResult)] == [("USER-PASS", False), ("NTLM", True)]
    assert kinds(events, ev.SaslStep)[1].ntlm.netbios_computer == "TESTSERVER"
    assert not kinds(events, ev.Anomaly)


def test_imap_dialogue_with_literals() -> None:
    events = feed(
        ImapSession(),
        [
            (S, b"* OK [CAPABILITY IMAP4rev1 SASL-IR STARTTLS AUTH=PLAIN AUTH=NTLM] Dovecot (Debian) ready.\r\n"),
            (C, b"a1 LOGIN {5}\r\n"),
            (S, b"+ OK\r\n"),
            (C, b"alice {4}\r\n"),
            (S, b"+ OK\r\n"),
            (C, b'p w"\r\n'),
            (S, b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
            (C, b'a2 LOGIN "bob" "se\\"cret"\r\n'),
            (S, b"a2 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"),
            (C, b"a3 FETCH 1 (BODY[])\r\n"),
            (S, b"* 1 FETCH (BODY[] {24}\r\na9 OK fake\r\n* BYE fake\r\n)\r\na3 OK done\r\n"),
            (C, b"a4 LOGOUT\r\n"),
            (S, b"* BYE\r\na4 OK\r\n"),
        ],
        split=3,
    )
    assert kinds(events, ev.Greeting)[0].banner == "Dovecot (Debian) ready."
    assert kinds(events, ev.Capabilities)[0].mechanisms == ["PLAIN", "NTLM"]
    credentials = kinds(events, ev.Credentials)
    assert [(c.user, c.password) for c in credentials] == [("alice", 'p w"'), ("bob", 'se"cret')]
    assert [r.success for r in kinds(events, ev.AuthResult)] == [False, True]
    assert kinds(events, ev.Quit)


def test_imap_authenticate_ntlm_with_sasl_ir() -> None:
    negotiate = base64.b64encode(ntlmssp.build_negotiate())
    events = feed(
        ImapSession(),
        [
            (S, b"* OK ready\r\n"),
            (C, b"A001 AUTHENTICATE NTLM " + negotiate + b"\r\n"),
            (S, b"+ TlRMTVNTUAACAAAAAAAAADAAAAAFgoGiESIzRFVmd4gAAAAAAAAAAAAAAAAwAAAAAAAAAA==\r\n"),
            (C, b"*\r\n"),
            (S, b"A001 BAD cancelled\r\n"),
            (C, b"A002 NOOP\r\n"),
            (S, b"A002 OK\r\n"),
        ],
    )
    assert [type(e.ntlm).__name__ for e in kinds(events, ev.SaslStep)] == ["NegotiateMessage", "ChallengeMessage"]
    assert kinds(events, ev.AuthCancelled)
    assert [r.success for r in kinds(events, ev.AuthResult)] == [False]


def test_overlong_line_is_bounded_and_reported() -> None:
    session = SmtpSession()
    events = session.receive(S, b"220 ok\r\n")
    for _ in range(40):
        events += session.receive(C, b"A" * 100_000)
    events += session.receive(C, b"\r\nQUIT\r\n")
    assert [a.code for a in kinds(events, ev.Anomaly)] == ["line_too_long"]
    assert session.buffers[C].buffered <= MAX_LINE
    assert kinds(events, ev.Quit)


def test_gap_resynchronises_at_next_line() -> None:
    session = SmtpSession()
    events = feed(session, [(S, b"220 ok\r\n"), (C, b"MAIL FROM:<a@b.c>\r\nRCPT TO:<x@y")])
    events += session.gap(C, 100)
    events += feed(session, [(C, b"ignored tail\r\nQUIT\r\n")])
    assert "gap" in [a.code for a in kinds(events, ev.Anomaly)]
    assert kinds(events, ev.Quit) and not kinds(events, ev.RcptTo)


def test_mid_stream_pickup_has_no_greeting() -> None:
    events = feed(SmtpSession(partial=True), [(C, b"RCPT TO:<x@y.z>\r\n"), (S, b"250 ok\r\n")])
    assert not kinds(events, ev.Greeting)


@settings(max_examples=400, deadline=None)
@given(
    protocol=st.sampled_from([SmtpSession, Pop3Session, ImapSession]),
    chunks=st.lists(st.tuples(st.sampled_from([C, S]), st.binary(max_size=200)), max_size=20),
)
def test_random_bytes_never_raise(protocol: type[MailSession], chunks: list[tuple[ev.Side, bytes]]) -> None:
    session = protocol()
    for side, data in chunks:
        session.receive(side, data)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_mutated_dialogues_never_raise(data: st.DataObject) -> None:
    script = [(side, bytearray(chunk)) for side, chunk in SMTP_DIALOGUE]
    for _ in range(data.draw(st.integers(1, 10))):
        index = data.draw(st.integers(0, len(script) - 1))
        chunk = script[index][1]
        if chunk:
            chunk[data.draw(st.integers(0, len(chunk) - 1))] = data.draw(st.integers(0, 255))
    for cls in (SmtpSession, Pop3Session, ImapSession):
        feed(cls(), [(side, bytes(chunk)) for side, chunk in script])


def test_implicit_tls_is_recorded_and_not_read() -> None:
    events = feed(ImapSession(), [(C, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"), (S, b"\x16\x03\x03* OK\r\n")])
    assert [(e.command, e.accepted) for e in kinds(events, ev.StartTls)] == [("implicit", True)]
    [start] = kinds(events, ev.StartTls)
    assert start.side is C and start.evidence.line == "[TLS ClientHello from the first byte: implicit TLS]"
    assert not kinds(events, ev.Greeting)
    # A server that speaks first (nothing from the client yet) and a record cut after its header.
    [start] = kinds(feed(SmtpSession(), [(S, b"\x16\x03\x03\x00\x7a\x02\x00")]), ev.StartTls)
    assert start.side is S and start.evidence.line == "[TLS ServerHello from the first byte: implicit TLS]"
    # (The client's record counts once the server answers it in TLS: a session the server never answered with TLS
    # is plain text, see test_client_tls_record_not_answered_by_the_server_is_read_as_plain_text.)
    [start] = kinds(feed(Pop3Session(), [(C, b"\x16\x03\x01"), (S, b"\x16\x03\x03")]), ev.StartTls)
    assert start.evidence.line == "[TLS handshake record from the first byte: implicit TLS]"


# Keyword lines around "AUTH": its cases, what may follow it, whitespace of every kind, and letters whose case
# mapping changes their length (ß, ﬀ) or that combine with the one before.
_AUTH_LINES = st.text(alphabet=st.sampled_from(list("AUTHauth= \t\u00a0\u2003\u0301ßﬀıxX1-EPSepsſ")), max_size=12)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_AUTH_LINES, st.text(max_size=12)))
@example(" auth=LOGIN PLAIN")
@example("AUTH\u00a0NTLM")
@example("AUTHß")
@example("AUTH\u0301 NTLM")
@example("AUTHENTICATE")
@example("X-EXPS GSSAPI NTLM")
@example("x-exps=LOGIN")
@example("X-EXPſ NTLM")
@example("X-EXPSS")
def test_ehlo_auth_lines_are_recognised_as_by_splitting_the_line(keyword: str) -> None:
    """An EHLO line lists mechanisms when its first word, with one '=' read as a space and in upper case, is AUTH
    (or Exchange's X-EXPS): the recogniser that looks at its first characters says the same of any text."""
    from dissectors.smtp_syntax import is_auth

    by_splitting = keyword.strip().upper().replace("=", " ", 1).split()[:1] in (["AUTH"], ["X-EXPS"])
    assert is_auth(keyword) == by_splitting


def _tokens_char_by_char(parts: list[str | bytes]) -> list[str]:
    """IMAP tokens read one character at a time (how they were read before the splitter searched for word ends)."""
    from dissectors.imap_syntax import _is_literal_marker
    from dissectors.linebuffer import wire_text

    result: list[str] = []
    for part in parts:
        if isinstance(part, bytes):
            result.append(wire_text(part))
            continue
        position = 0
        while position < len(part):
            if part[position].isspace():
                position += 1
            elif part[position] == '"':
                value: list[str] = []
                position += 1
                while position < len(part):
                    if part[position] == "\\" and position + 1 < len(part):
                        value.append(part[position + 1])
                        position += 2
                    elif part[position] == '"':
                        position += 1
                        break
                    else:
                        value.append(part[position])
                        position += 1
                result.append("".join(value))
            else:
                end = position
                while end < len(part) and not part[end].isspace():
                    end += 1
                if not _is_literal_marker(part[position:end]):
                    result.append(part[position:end])
                position = end
    return result


_IMAP_TEXT = st.text(alphabet=st.sampled_from(list('ab "\\{}+1\t\u00a0\u2028\u3000\x1c\x85é')), max_size=40)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.one_of(_IMAP_TEXT, st.binary(max_size=8), st.text(max_size=20)), max_size=4))
@example(['a1 LOGIN "us\\"er" "pa\\\\ss"'])
@example(['a1 LOGIN "unterminated\\'])
@example(["a1 APPEND INBOX {5}", b"hello", ""])
def test_imap_tokens_are_those_of_a_character_by_character_reading(parts: list[str | bytes]) -> None:
    from dissectors.imap_syntax import tokens

    assert tokens(parts) == _tokens_char_by_char(parts)


@pytest.mark.parametrize(
    ("line", "frame", "timestamp", "first_frame"),
    [("220 mx ESMTP", 3, 1.5, None), ("x" * 600, 7, None, 5), ("", None, None, None), ("a\x00b", 9, 2.0, 9)],
)
def test_evidence_made_by_of_is_what_its_init_makes(
    line: str, frame: int | None, timestamp: float | None, first_frame: int | None
) -> None:
    """Evidence.of fills the frozen dataclass as pickle does: equal (and hashing equal) to what its __init__ makes,
    its fields in their order (the worker pipe packs them so), and as immutable."""
    import dataclasses

    made = ev.Evidence.of(line, frame, timestamp, first_frame)
    expected = ev.Evidence(
        frame, timestamp, line[: ev.MAX_EVIDENCE_TEXT], first_frame if first_frame != frame else None
    )
    assert made == expected and hash(made) == hash(expected)
    assert list(vars(made).items()) == list(vars(expected).items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.line = "changed"  # type: ignore[misc]


POP3_UNGREETED = [
    (C, b"CAPA\r\n"),
    (S, b"+OK Capability list follows\r\nUSER\r\nSASL PLAIN\r\n.\r\n"),
    (C, b"LIST\r\n"),
    (S, b"+OK 1 messages\r\n1 120\r\n.\r\n"),
    (C, b"QUIT\r\n"),
    (S, b"+OK bye\r\n"),
]


@pytest.mark.parametrize("split", [None, 1, 5])
def test_pop3_server_that_does_not_greet_answers_the_first_command(split: int | None) -> None:
    """A server's first line sent after a command whose answer has lines is its greeting only if a status line
    follows: here a capability follows, so it was CAPA's answer (a server or a crafted trace that skips the greeting)
    and the list is read."""
    events = feed(Pop3Session(), POP3_UNGREETED, split=split)
    assert not kinds(events, ev.Greeting)
    [capabilities] = kinds(events, ev.Capabilities)
    assert capabilities.mechanisms == ["PLAIN"] and capabilities.cleartext_login
    assert [a.code for a in kinds(events, ev.Anomaly)] == ["no_greeting"]


@pytest.mark.parametrize("split", [None, 3])
def test_pop3_greeting_after_an_eager_command_is_still_the_greeting(split: int | None) -> None:
    """A client that sends CAPA before the greeting: the server's first line is its greeting, CAPA is answered
    after it, and the events come in the order the server sent them."""
    script = [
        (C, b"CAPA\r\n"),
        (S, b"+OK POP3 ready\r\n"),
        (S, b"+OK Capability list follows\r\nSASL NTLM\r\n.\r\n"),
        (C, b"QUIT\r\n"),
        (S, b"+OK bye\r\n"),
    ]
    events = feed(Pop3Session(), script, split=split)
    assert [type(e) for e in events if isinstance(e, (ev.Greeting, ev.Capabilities))] == [ev.Greeting, ev.Capabilities]
    assert kinds(events, ev.Greeting)[0].banner == "POP3 ready"
    assert kinds(events, ev.Capabilities)[0].mechanisms == ["NTLM"]
    assert not kinds(events, ev.Anomaly)


@pytest.mark.parametrize("after", ["close", "gap"])
def test_pop3_first_line_held_for_its_next_line_is_the_greeting_when_none_comes(after: str) -> None:
    session = Pop3Session()
    events = feed(session, [(C, b"CAPA\r\n"), (S, b"+OK ready\r\n")])
    assert not kinds(events, ev.Greeting)  # held: the next line says what it was
    assert session.buffered_bytes() >= len("ready")
    events += session.close(9, 1009.0) if after == "close" else session.gap(S, 10, 9, 1009.0)
    assert [g.banner for g in kinds(events, ev.Greeting)] == ["ready"]


def test_pop3_in_use_answer_to_pass_says_the_password_was_right() -> None:
    """RFC 2449 8.1.2: ``-ERR [IN-USE]`` after PASS means authentication succeeded but the maildrop is locked."""
    script = [
        (S, b"+OK ready\r\n"),
        (C, b"USER alice\r\n"),
        (S, b"+OK\r\n"),
        (C, b"PASS right\r\n"),
        (S, b"-ERR [IN-USE] Mailbox is locked by another session\r\n"),
        (C, b"USER alice\r\n"),
        (S, b"+OK\r\n"),
        (C, b"PASS wrong\r\n"),
        (S, b"-ERR [AUTH] Authentication failed.\r\n"),
    ]
    events = feed(Pop3Session(), script)
    assert [r.success for r in kinds(events, ev.AuthResult)] == [True, False]


def test_smtp_client_side_alone_is_read_past_every_unanswered_data() -> None:
    """A capture of the client's side alone: each DATA's reply never comes, so what follows each is read when the
    connection ends, the second message and the AUTH after it too."""
    token = base64.b64encode(b"\x00carol\x00Secret-9")
    script = [
        (C, b"EHLO ws\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nfirst\r\n.\r\n"),
        (C, b"MAIL FROM:<a@b.example>\r\nRCPT TO:<e@f.example>\r\nDATA\r\nsecond\r\n.\r\n"),
        (C, b"RSET\r\nAUTH PLAIN " + token + b"\r\nQUIT\r\n"),
    ]
    session = SmtpSession()
    events = feed(session, script) + session.close(9, 1009.0)
    assert [c.password for c in kinds(events, ev.Credentials)] == ["Secret-9"]
    assert session.buffers[C].held == 0


@pytest.mark.parametrize(
    ("session", "script"),
    [
        (SmtpSession, [(S, b"220 mx ESMTP\r\n"), (C, b"EHLO ws\r\n"),
                       (S, b"250-mx\r\n250-AUTH PLAIN =cmd|' /C calc'!A0 \x9b31M login\r\n"
                           b"250 AUTH=PLAIN XOAUTH2\r\n")]),
        (Pop3Session, [(S, b"+OK ready\r\n"), (C, b"CAPA\r\n"),
                       (S, b"+OK\r\nSASL PLAIN =cmd|' /C calc'!A0 \x9b31M login XOAUTH2\r\n.\r\n")]),
        (Pop3Session, [(S, b"+OK ready\r\n"), (C, b"AUTH\r\n"),
                       (S, b"+OK\r\nPLAIN\r\n=cmd|'\r\n/C\r\ncalc'!A0\r\n\x9b31M\r\nlogin\r\nXOAUTH2\r\n.\r\n")]),
        (ImapSession, [(S, b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH==cmd|' AUTH=/C AUTH=calc'!A0 AUTH=\x9b31M "
                           b"AUTH=login AUTH=XOAUTH2] ready\r\n")]),
    ],
    ids=["smtp-ehlo", "pop3-capa", "pop3-auth-list", "imap-capability"],
)  # fmt: skip
def test_listed_words_that_are_no_mechanism_names_are_not_mechanisms(
    session: type[MailSession], script: list[tuple[ev.Side, bytes]]
) -> None:
    """A server's listing names mechanisms as a client's AUTH names them (RFC 4422 3.1): spreadsheet formulas,
    paths or control characters in it are no mechanism anyone can use, and are not reported as offered."""
    [capabilities] = kinds(feed(session(), script), ev.Capabilities)
    assert capabilities.mechanisms == ["PLAIN", "LOGIN", "XOAUTH2"]
