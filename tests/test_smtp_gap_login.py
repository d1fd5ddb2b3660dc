"""A login after bytes of the server's were lost (a gap) is still read, and no verdict is given that may be wrong.

Before, every exchange open at a server-side gap was abandoned: a LOGIN password the client sent after the lost
bytes (PcapPlusPlus's ``Smtp.pcap``: the EHLO reply lost, then AUTH LOGIN, the user name and the password) was not
reported, a clear-text credential on the wire read as nothing leaked. The client's lines are all there after a
server-side gap: the open exchange goes on, its responses read as when the server's prompts are not in the capture.
What the server sends after the gap may still answer a command sent before it (the last line of a multi-line reply
whose start was lost, a verdict not yet sent): until a prompt (334) shows the server is in the exchange, no reply is
taken for its verdict. Bytes lost from the client still end every exchange without a verdict.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from dissectors import events as ev
from dissectors.smtp import SmtpSession
from tests.corpus import public_capture
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_relay_transactions import CLIENT, SERVER, run_cli, turns

C, S = ev.Side.CLIENT, ev.Side.SERVER
USER, PASSWORD = base64.b64encode(b"alice").decode(), base64.b64encode(b"s3cret!").decode()
PLAIN = base64.b64encode(b"\0alice\0s3cret!").decode()
OTHER = base64.b64encode(b"\0alice\0other").decode()


def play(script: list[tuple[ev.Side | None, bytes]]) -> list[ev.Event]:
    """Feed a dialogue to an SMTP session; a ``None`` side is a gap of the server's bytes, then the session ends."""
    session, events = SmtpSession(), []
    for frame, (side, data) in enumerate(script, 1):
        if side is None:
            events += session.gap(S, int(data), frame, float(frame))
        else:
            events += session.receive(side, data, frame, float(frame))
    return events + session.close(len(script) + 1, float(len(script) + 1))


def of(events: list[ev.Event], kind: type) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


OPENING: list[tuple[ev.Side | None, bytes]] = [(S, b"220 mx.example.com ESMTP\r\n"), (C, b"EHLO client\r\n")]


def test_a_password_sent_after_the_server_bytes_were_lost_is_reported() -> None:
    """Smtp.pcap's order: the gap is known only once the server's next bytes come, after the user name."""
    lines = [(C, b"AUTH LOGIN\r\n"), (C, f"{USER}\r\n".encode()), (None, b"137"), (C, f"{PASSWORD}\r\n".encode())]
    events = play([*OPENING, *lines])
    [credentials] = of(events, ev.Credentials)
    assert (credentials.mechanism, credentials.user, credentials.password) == ("LOGIN", "alice", "s3cret!")
    assert not of(events, ev.AuthResult)  # no verdict was in the capture
    assert "gap" in [anomaly.code for anomaly in of(events, ev.Anomaly)]  # the run still says bytes were lost


LOGIN_TAIL = [
    (C, f"{USER}\r\n".encode()),
    (S, b"334 UGFzc3dvcmQ6\r\n"),
    (C, f"{PASSWORD}\r\n".encode()),
    (S, b"235 2.7.0 Authentication successful\r\n"),
]
"""The user name after the first prompt, the password prompt, the password and the server's success."""


def test_a_prompt_after_the_gap_shows_the_verdict_that_follows_is_the_logins() -> None:
    script = [
        *OPENING,
        (C, b"AUTH LOGIN\r\n"),
        (None, b"42"),  # the EHLO reply lost; what comes next begins inside a line
        (S, b"0 AUTH LOGIN PLAIN\r\n334 VXNlcm5hbWU6\r\n"),
        *LOGIN_TAIL,
    ]
    events = play(script)
    [credentials] = of(events, ev.Credentials)
    assert (credentials.user, credentials.password) == ("alice", "s3cret!")
    assert [(result.success, result.attempt) for result in of(events, ev.AuthResult)] == [(True, 1)]


def test_the_last_line_of_a_reply_cut_by_the_gap_is_no_verdict() -> None:
    """The EHLO reply's start lost: its last line (a 250) comes after the gap, before the refusal of the login."""
    script = [
        *OPENING,
        (None, b"30"),
        (C, f"AUTH PLAIN {PLAIN}\r\n".encode()),
        (S, b"ING\r\n250 AUTH PLAIN LOGIN\r\n"),
        (S, b"535 5.7.8 Authentication credentials invalid\r\n"),
    ]
    events = play(script)
    assert [c.password for c in of(events, ev.Credentials)] == ["s3cret!"]
    assert not of(events, ev.AuthResult)


def test_a_verdict_maybe_lost_goes_to_no_later_exchange() -> None:
    """Two logins pipelined around the gap: which of the server's answers is the second's is unknown."""
    script = [
        *OPENING,
        (C, f"AUTH PLAIN {PLAIN}\r\n".encode()),
        (None, b"60"),
        (C, f"AUTH PLAIN {OTHER}\r\n".encode()),
        (S, b"535 5.7.8 Authentication credentials invalid\r\n"),
        (S, b"235 2.7.0 Authentication successful\r\n"),
    ]
    events = play(script)
    assert [c.password for c in of(events, ev.Credentials)] == ["s3cret!", "other"]
    assert not of(events, ev.AuthResult)
    assert len(of(events, ev.AuthAbandoned)) == 2


def test_a_client_gap_still_ends_the_exchange() -> None:
    session = SmtpSession()
    events = session.receive(S, b"220 mx\r\n") + session.receive(C, b"EHLO c\r\nAUTH LOGIN\r\n")
    events += session.receive(S, b"250 ok\r\n334 VXNlcm5hbWU6\r\n")
    events += session.gap(C, 40) + session.receive(C, f"tail\r\n{PASSWORD}\r\n".encode())
    events += session.receive(S, b"235 ok\r\n")
    assert not of(events, ev.Credentials) and not of(events, ev.AuthResult)


SCRIPT = f"""
S: 220 mx.contoso.com ESMTP Postfix
C: EHLO client.example
S: 250-mx.contoso.com<CRLF>250 AUTH PLAIN LOGIN
C: AUTH LOGIN
S: 334 VXNlcm5hbWU6
C: {USER}
S: 334 UGFzc3dvcmQ6
C: {PASSWORD}
S: 235 2.7.0 Authentication successful
C: QUIT
S: 221 2.0.0 Bye
"""


def credentials_found(pcap: Path) -> list[dict[str, Any]]:
    document = run_cli("analyze", "--format", "json", "--show-secrets", str(pcap)).stdout
    return [f for f in json.loads(document)["findings"] if f["type"] == "cleartext-credentials"]


def test_a_capture_that_lost_the_ehlo_reply_reports_the_login(tmp_path: Path) -> None:
    """The server acknowledging what it received, the segment with the EHLO reply left out: the LOGIN after it."""
    segments = conversation_segments(turns(SCRIPT), CLIENT, SERVER, acks=True)
    kept = [segment for segment in segments if b"250-mx" not in segment[5]]
    assert len(kept) == len(segments) - 1
    path = tmp_path / "lost-ehlo-reply.pcap"
    path.write_bytes(pcap_bytes(ethernet_frames(kept)))
    [found] = credentials_found(path)
    assert (found["mechanism"], found["user"], found["password"]) == ("LOGIN", "alice", "s3cret!")
    assert found["outcome"] in ("success", None)  # None: no verdict told


def test_pcapplusplus_smtp_capture_reports_the_login_tshark_shows() -> None:
    """PcapPlusPlus's Tests/Packet++Test/PacketExamples/Smtp.pcap: the EHLO reply not captured, then AUTH LOGIN,
    334, the user name (tshark: ``Username: Z3VycGFydGFwQHBhdHJpb3RzLmlu``) and the password; no verdict."""
    [found] = credentials_found(public_capture("pcaps", "pcapplusplus", "Smtp.pcap"))
    assert (found["mechanism"], found["user"], found["password"]) == ("LOGIN", "gurpartap@patriots.in", "punjab@123")
    assert found["outcome"] is None  # no verdict in the capture


def test_the_last_lines_of_a_reply_cut_by_the_gap_leave_a_login_sent_after_it_read() -> None:
    """The EHLO reply's start lost, its last line comes after the AUTH LOGIN the client sent once it had it: that 250
    may be the EHLO's, so it ends nothing; the prompts that follow show the server is in the exchange, and the user
    name, the password and the verdict are read (the 250 ended the exchange, and the password was not reported)."""
    script = [
        *OPENING,
        (None, b"30"),
        (C, b"AUTH LOGIN\r\n"),
        (S, b"ELINING\r\n250 AUTH LOGIN PLAIN\r\n334 VXNlcm5hbWU6\r\n"),
        *LOGIN_TAIL,
    ]
    events = play(script)
    assert [(c.mechanism, c.user, c.password) for c in of(events, ev.Credentials)] == [("LOGIN", "alice", "s3cret!")]
    assert [(result.success, result.attempt) for result in of(events, ev.AuthResult)] == [(True, 1)]
