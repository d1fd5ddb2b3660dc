"""STARTTLS is believed when the client's next bytes are TLS. A client that has the server's ``220`` to STARTTLS (or
``+OK`` to STLS, ``OK`` to IMAP STARTTLS) and carries on in clear text sends its AUTH and password in the clear:
they are read and reported, with a ``starttls_not_used`` anomaly, and the service does not read as TLS. Before, every
byte after the acceptance was taken for TLS: the password went unreported and the session read ``tls: true``.
Sessions that do start TLS read as before, and the capture still drops their ciphertext unread."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from dissectors import events as ev
from dissectors.registry import SESSION_TYPES
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_relay_transactions import run_cli

CLIENT = ("203.0.113.9", 40000)
CLIENT_SIDE, SERVER = ev.Side.CLIENT, ev.Side.SERVER
PLAIN = base64.b64encode(b"\0alice\0Summer2024!").decode()
CLIENT_HELLO = b"\x16\x03\x01\x00\x40" + bytes(range(64))
SERVER_HELLO = b"\x16\x03\x03\x00\x30" + bytes(48)
SESSIONS: dict[str, tuple[int, list[tuple[bool, bytes]], list[tuple[bool, bytes]]]] = {
    # protocol: (port, up to the acceptance, what follows in clear text)
    "smtp": (
        25,
        [(True, b"220 mx.example.com ESMTP\r\n"), (False, b"EHLO c.example\r\n"),
         (True, b"250-mx.example.com\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"), (False, b"STARTTLS\r\n"),
         (True, b"220 2.0.0 Ready to start TLS\r\n")],
        [(False, b"AUTH PLAIN " + PLAIN.encode() + b"\r\n"), (True, b"235 2.7.0 Authentication successful\r\n"),
         (False, b"QUIT\r\n"), (True, b"221 2.0.0 Bye\r\n")],
    ),
    "pop3": (
        110,
        [(True, b"+OK POP3 ready\r\n"), (False, b"CAPA\r\n"), (True, b"+OK\r\nSTLS\r\nUSER\r\n.\r\n"),
         (False, b"STLS\r\n"), (True, b"+OK Begin TLS negotiation\r\n")],
        [(False, b"USER alice\r\n"), (True, b"+OK\r\n"), (False, b"PASS Summer2024!\r\n"), (True, b"+OK Logged in\r\n"),
         (False, b"QUIT\r\n"), (True, b"+OK Bye\r\n")],
    ),
    "imap": (
        143,
        [(True, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"), (False, b"a1 STARTTLS\r\n"),
         (True, b"a1 OK Begin TLS negotiation now\r\n")],
        [(False, b"a2 LOGIN alice Summer2024!\r\n"), (True, b"a2 OK Logged in\r\n"), (False, b"a3 LOGOUT\r\n"),
         (True, b"* BYE\r\na3 OK\r\n")],
    ),
}  # fmt: skip


def _analyze(tmp_path: Path, name: str, port: int, turns: list[tuple[bool, bytes]], *options: str) -> dict[str, Any]:
    segments = conversation_segments(turns, CLIENT, ("192.0.2.25", port))
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(pcap_bytes(ethernet_frames(segments)))
    document: dict[str, Any] = json.loads(
        run_cli("analyze", "--format", "json", "--events", *options, str(path)).stdout
    )
    return document


@pytest.mark.parametrize("protocol", sorted(SESSIONS))
def test_a_client_that_carries_on_in_clear_text_after_starttls_is_read(tmp_path: Path, protocol: str) -> None:
    port, opening, clear = SESSIONS[protocol]
    document = _analyze(tmp_path, f"clear-{protocol}", port, opening + clear)
    findings = document["findings"]
    [credentials] = [f for f in findings if f["type"] == "cleartext-credentials"]
    assert credentials["user"] == "alice" and credentials["tls"] is False
    assert "Summer2024!" not in json.dumps(document)  # masked by default
    [service] = [f for f in findings if f["type"] == "mail-service"]
    assert service["tls"] is not True and service["starttls_offered"] is True
    anomalies = [e for s in document["sessions"] for e in s["events"] if e["event"] == "Anomaly"]
    assert [a["code"] for a in anomalies] == ["starttls_not_used"], anomalies
    assert anomalies[0]["line"] == opening[-1][1].decode().strip()  # the acceptance, cited


@pytest.mark.parametrize("protocol", sorted(SESSIONS))
def test_a_client_that_starts_tls_is_tls_and_its_bytes_are_not_read(tmp_path: Path, protocol: str) -> None:
    port, opening, clear = SESSIONS[protocol]
    # The TLS handshake, then the same commands as TLS application data would carry them (never read).
    tls = [(False, CLIENT_HELLO), (True, SERVER_HELLO), *((side, b"\x17\x03\x03" + data) for side, data in clear)]
    document = _analyze(tmp_path, f"tls-{protocol}", port, opening + tls)
    findings = document["findings"]
    assert [f for f in findings if f["type"] == "cleartext-credentials"] == []
    [service] = [f for f in findings if f["type"] == "mail-service"]
    assert service["tls"] is True
    events = [e for s in document["sessions"] for e in s["events"]]
    assert [e["event"] for e in events if e["event"] in ("Anomaly", "StartTls")] == ["StartTls"], events


def test_a_session_that_ends_right_after_the_acceptance_reads_as_tls(tmp_path: Path) -> None:
    """Nothing followed the server's 220: its acceptance is all the capture says, as before."""
    port, opening, _clear = SESSIONS["smtp"]
    [service] = [f for f in _analyze(tmp_path, "ended", port, opening)["findings"] if f["type"] == "mail-service"]
    assert service["tls"] is True


def _findings_and_events(document: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return document["findings"], [e for s in document["sessions"] for e in s["events"]]


@pytest.mark.parametrize("protocol", sorted(SESSIONS))
def test_a_tls_record_header_cut_after_its_first_byte_still_starts_tls(tmp_path: Path, protocol: str) -> None:
    """A client stack (or a hostile client) that sends its hello's first byte alone: no clear text begins with a
    record type, so TLS began; its ciphertext is not read as commands."""
    port, opening, clear = SESSIONS[protocol]
    ciphertext = [(side, b"\x17\x03\x03" + data) for side, data in clear]
    tls = [(False, CLIENT_HELLO[:1]), (False, CLIENT_HELLO[1:]), (True, SERVER_HELLO), *ciphertext]
    findings, events = _findings_and_events(_analyze(tmp_path, f"split-{protocol}", port, opening + tls))
    [service] = [f for f in findings if f["type"] == "mail-service"]
    assert service["tls"] is True
    assert [f for f in findings if f["type"] == "cleartext-credentials"] == []
    assert [e["event"] for e in events if e["event"] in ("Anomaly", "StartTls")] == ["StartTls"], events


@pytest.mark.parametrize("protocol", sorted(SESSIONS))
def test_a_gap_in_the_client_hello_after_starttls_leaves_the_session_tls(tmp_path: Path, protocol: str) -> None:
    """The segment carrying the start of the client's hello is lost: its next bytes are the record's middle, which is
    TLS, not commands (before, they were read as clear text: starttls_not_used, the service not TLS, garbage)."""
    port, opening, clear = SESSIONS[protocol]
    hello = b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 2
    ciphertext = [(side, b"\x17\x03\x03" + data) for side, data in clear]
    turns = [*opening, (False, hello[:100]), (False, hello[100:] + b"\r\nAUTH PLAIN\r\n"), (True, SERVER_HELLO)]
    segments = conversation_segments(turns + ciphertext, CLIENT, ("192.0.2.25", port))
    lost = next(n for n, segment in enumerate(segments) if segment[5] == hello[:100])
    path = tmp_path / f"gap-{protocol}.pcap"
    path.write_bytes(pcap_bytes(ethernet_frames(segments[:lost] + segments[lost + 1 :])))
    done = run_cli("analyze", "--format", "json", "--events", str(path))
    findings, events = _findings_and_events(json.loads(done.stdout))
    [service] = [f for f in findings if f["type"] == "mail-service"]
    assert service["tls"] is True
    # The capture hands over the server's handshake before the client's bytes past the hole: TLS begins there.
    assert [e.get("code") for e in events if e["event"] == "Anomaly"] in ([], ["gap"])
    assert not [e for e in events if e["event"].startswith("Auth")], events
    # The client's bytes first (fed directly): the middle of its record after the gap is TLS too.
    _port, opening, _clear = SESSIONS[protocol]
    session = SESSION_TYPES[protocol]()
    fed = [e for from_server, data in opening for e in session.receive(SERVER if from_server else CLIENT_SIDE, data)]
    fed += session.gap(CLIENT_SIDE, 200)
    fed += session.receive(CLIENT_SIDE, hello[200:] + b"\r\nAUTH PLAIN\r\n")  # from byte 195 on: not printable
    assert session.tls
    assert [type(e).__name__ for e in fed if isinstance(e, (ev.Anomaly, ev.StartTls))] == ["Anomaly", "StartTls"]


@pytest.mark.parametrize("protocol", ["pop3", "smtp"])  # IMAP reads no LOGIN after a client gap (literals)
def test_clear_text_after_a_gap_that_followed_starttls_is_still_read(protocol: str) -> None:
    """Bytes lost after the acceptance, then clear-text lines: the client carried on without TLS, and is read (the
    session fed directly: the capture holds a client's bytes after a hole until the connection ends, past the
    server's replies)."""
    _port, opening, clear = SESSIONS[protocol]
    session = SESSION_TYPES[protocol]()
    events = [e for from_server, data in opening for e in session.receive(SERVER if from_server else CLIENT_SIDE, data)]
    events += session.gap(CLIENT_SIDE, 2)
    events += session.receive(CLIENT_SIDE, b"OP\r\n")  # the rest of a NOOP whose first bytes were lost: skipped
    events += [e for from_server, data in clear for e in session.receive(SERVER if from_server else CLIENT_SIDE, data)]
    events += session.close()
    assert not session.tls
    assert [e.code for e in events if isinstance(e, ev.Anomaly)] == ["gap", "starttls_not_used"]
    [credentials] = [e for e in events if isinstance(e, ev.Credentials)]
    assert credentials.user == "alice"


def test_exchange_x_anonymoustls_begins_tls(tmp_path: Path) -> None:
    """Exchange servers upgrade each other with X-ANONYMOUSTLS, answered 220 as STARTTLS is: its TLS is TLS, not SMTP
    lines (before, the 220 answered no command and every record was read as a reply or a command)."""
    opening = [
        (True, b"220 exch.example.com Microsoft ESMTP MAIL Service ready\r\n"), (False, b"EHLO edge.example.com\r\n"),
        (True, b"250-exch.example.com\r\n250-STARTTLS\r\n250-X-ANONYMOUSTLS\r\n250 X-EXPS GSSAPI NTLM\r\n"),
        (False, b"X-ANONYMOUSTLS\r\n"), (True, b"220 2.0.0 SMTP server ready\r\n"),
    ]  # fmt: skip
    records = [(False, CLIENT_HELLO), (True, SERVER_HELLO + b"\r\n"), (False, b"\x17\x03\x03\x00\x0cX-EXPS NTLM\r\n")]
    findings, events = _findings_and_events(_analyze(tmp_path, "anonymoustls", 25, opening + records))
    [service] = [f for f in findings if f["type"] == "mail-service"]
    assert service["tls"] is True
    [start] = [e for e in events if e["event"] in ("Anomaly", "StartTls")]
    assert (start["event"], start["command"], start["accepted"]) == ("StartTls", "X-ANONYMOUSTLS", True)
    # Carried on in clear text instead: read, as after STARTTLS (its anomaly named apart: it is no STARTTLS).
    clear = [(False, b"AUTH PLAIN " + PLAIN.encode() + b"\r\n"), (True, b"235 2.7.0 Authentication successful\r\n")]
    findings, events = _findings_and_events(_analyze(tmp_path, "anonymoustls-clear", 25, opening + clear))
    assert [f["user"] for f in findings if f["type"] == "cleartext-credentials"] == ["alice"]
    assert [e["code"] for e in events if e["event"] == "Anomaly"] == ["anonymoustls_not_used"]


@pytest.mark.parametrize("protocol", sorted(SESSIONS))
def test_a_hello_sent_before_the_acceptance_and_the_server_handshake_are_not_read(
    tmp_path: Path, protocol: str
) -> None:
    """A client that sends its hello with STARTTLS, without waiting (or a span port that reordered the two sides):
    the server's first bytes after its acceptance are its handshake, whose certificate holds CR LF bytes. They begin
    TLS; before, they were read as replies (a bad_reply_line per 'line' of the certificate)."""
    port, opening, clear = SESSIONS[protocol]
    command, acceptance = opening[-2], opening[-1]
    certificate = b"\x16\x03\x03\x0b\x00" + (bytes(range(256)) * 11)[:2816]
    hello = b"\x16\x03\x01\x00\x40" + bytes(range(14, 78))  # no line end: read as nothing before the acceptance
    turns = [*opening[:-2], (False, command[1] + hello), acceptance, (True, certificate)]
    turns += [(False, b"\x14\x03\x03\x00\x01\x01"), *((side, b"\x17\x03\x03" + data) for side, data in clear)]
    findings, events = _findings_and_events(_analyze(tmp_path, f"early-{protocol}", port, turns))
    [service] = [f for f in findings if f["type"] == "mail-service"]
    assert service["tls"] is True
    assert [e["event"] for e in events if e["event"] in ("Anomaly", "StartTls")] == ["StartTls"], events
    assert [f for f in findings if f["type"] == "cleartext-credentials"] == []


def test_a_handshake_record_middle_with_printable_runs_is_no_clear_text() -> None:
    """After a gap that followed STARTTLS, the client's next bytes are judged over CLEAR_TEXT_PROBE bytes: a
    ClientHello's middle holds a server name and ALPN ids (printable runs longer than a few bytes) but also lengths and
    cipher suite numbers; command lines, UTF-8 ones too, are text throughout."""
    from dissectors.tls_records import CLEAR_TEXT_PROBE, looks_like_clear_text

    server_name = b"mail.example.com"
    alpn = b"\x00\x10\x00\x0e\x00\x0c\x02h2\x08http/1.1"
    hello_middle = b"xample.com" + alpn + b"\x00\x05\x00\x05\x01\x00\x00\x00\x00" + server_name
    assert not looks_like_clear_text(hello_middle)
    assert not looks_like_clear_text(bytes(range(95, 256)))  # 32 printable bytes, then DEL and bytes that are no UTF-8
    assert looks_like_clear_text(b"EHLO client.example\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert looks_like_clear_text("MAIL FROM:<jürgen@bücher.example>\r\n".encode())
    line = "RCPT TO:<ü@x>\r\n".encode() * 40
    assert looks_like_clear_text(line[: CLEAR_TEXT_PROBE - 1])  # a character cut at the probe's end is still text
