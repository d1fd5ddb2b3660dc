"""Mail carried through a proxy: after an accepted HTTP CONNECT or a SOCKS 4, 4a or 5 handshake the rest of the
connection is read as the client's session with the server it asked for; findings name that server and the proxy."""

from __future__ import annotations

import base64
import ipaddress
import struct
from pathlib import Path
from typing import Any

import pytest

from dissectors import events as ev
from dissectors.http import HttpSession
from dissectors.identify import identify
from dissectors.linebuffer import MAX_HELD
from dissectors.socks import MAX_HANDSHAKE_BYTES, SocksSession, recognise
from passive.analysis import parallel
from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from passive.results.records import finding_record
from passive.results.redaction import Redactor
from tests.corpus import require_corpus
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_jobs import assert_same, outcome
from tests.test_relay_transactions import run_cli

CLIENT = ("10.1.0.9", 40001)
SOCKS_PROXY = ("10.1.0.1", 1080)
HTTP_PROXY = ("10.1.0.1", 3128)
PLAIN = base64.b64encode(b"\0bob\0hunter2").decode()

Turns = list[tuple[bool, bytes]]


def socks5(request: bytes, auth: bytes = b"", reply: int = 0) -> Turns:
    method = b"\x02" if auth else b"\x00"
    turns = [(False, b"\x05\x01" + method), (True, b"\x05" + method)]
    if auth:
        turns += [(False, auth), (True, b"\x01\x00")]
    return [*turns, (False, b"\x05\x01\x00" + request), (True, bytes([5, reply, 0, 1, 192, 0, 2, 1, 0x9C, 0x40]))]


def domain(name: bytes, port: int) -> bytes:
    return b"\x03" + bytes([len(name)]) + name + struct.pack(">H", port)


def socks4(port: int, address: str, rest: bytes = b"", granted: bool = True) -> Turns:
    request = b"\x04\x01" + struct.pack(">H", port) + ipaddress.IPv4Address(address).packed + b"ident\x00" + rest
    return [(False, request), (True, b"\x00" + (b"\x5a" if granted else b"\x5b") + bytes(6))]


SMTP = [
    (True, b"220 mail.example.net ESMTP ready\r\n"),
    (False, b"EHLO client\r\n"),
    (True, b"250-mail.example.net\r\n250 AUTH PLAIN LOGIN\r\n"),
    (False, f"AUTH PLAIN {PLAIN}\r\n".encode()),
    (True, b"235 ok\r\n"),
    (False, b"QUIT\r\n"),
    (True, b"221 bye\r\n"),
]
RELAY = [
    (True, b"220 mail.example.net ESMTP ready\r\n"),
    (False, b"EHLO client\r\n"),
    (True, b"250 mail.example.net\r\n"),
    (False, b"MAIL FROM:<a@example.org>\r\n"),
    (True, b"250 ok\r\n"),
    (False, b"RCPT TO:<b@foreign.example>\r\n"),
    (True, b"250 ok\r\n"),
    (False, b"QUIT\r\n"),
    (True, b"221 bye\r\n"),
]
POP3 = [(True, b"+OK POP3 ready\r\n"), (False, b"USER bob\r\n"), (True, b"+OK\r\n"), (False, b"PASS hunter2\r\n"),
        (True, b"+OK logged in\r\n"), (False, b"QUIT\r\n"), (True, b"+OK bye\r\n")]  # fmt: skip
IMAP = [(True, b"* OK IMAP4rev1 ready\r\n"), (False, b"a1 LOGIN bob hunter2\r\n"), (True, b"a1 OK done\r\n"),
        (False, b"a2 LOGOUT\r\n"), (True, b"* BYE\r\na2 OK bye\r\n")]  # fmt: skip


def capture(tmp_path: Path, turns: Turns, proxy: tuple[str, int] = SOCKS_PROXY, name: str = "c.pcap") -> Path:
    path = tmp_path / name
    path.write_bytes(pcap_bytes(ethernet_frames(conversation_segments(turns, CLIENT, proxy))))
    return path


def records(*paths: Path, **options: Any) -> list[dict[str, Any]]:
    results = analyze_captures([str(p) for p in paths], AnalysisOptions(**options))
    return [finding_record(f, redactor=Redactor(show_secrets=True)) for f in results.findings]


def one(found: list[dict[str, Any]], kind: str, protocol: str | None = None) -> dict[str, Any]:
    matching = [r for r in found if r["type"] == kind and (protocol is None or r["protocol"] == protocol)]
    assert len(matching) == 1, [(r["type"], r["protocol"], r["server"]) for r in found]
    return matching[0]


CASES = {
    "socks5-domain-smtp": (socks5(domain(b"mail.example.net", 25)) + SMTP, "mail.example.net:25", "socks5", "smtp"),
    "socks5-ipv4-auth-pop3": (
        socks5(b"\x01" + bytes([192, 0, 2, 25]) + struct.pack(">H", 110), auth=b"\x01\x04user\x06secret") + POP3,
        "192.0.2.25:110",
        "socks5",
        "pop3",
    ),
    "socks5-ipv6-imap": (
        socks5(b"\x04" + ipaddress.IPv6Address("2001:db8::25").packed + struct.pack(">H", 143)) + IMAP,
        "[2001:db8::25]:143",
        "socks5",
        "imap",
    ),
    "socks4-smtp": (socks4(25, "192.0.2.25") + SMTP, "192.0.2.25:25", "socks4", "smtp"),
    "socks4a-smtp": (socks4(25, "0.0.0.1", b"mx.example.org\x00") + SMTP, "mx.example.org:25", "socks4a", "smtp"),
}


@pytest.mark.parametrize("backend", ["python", "auto"])
@pytest.mark.parametrize("case", list(CASES))
def test_mail_through_socks_names_the_server_asked_for(tmp_path: Path, case: str, backend: str) -> None:
    turns, server, via, protocol = CASES[case]
    found = records(capture(tmp_path, turns), backend=backend)
    service = one(found, "mail-service")
    assert (service["server"], service["protocol"]) == (server, protocol)
    assert service["proxy"] == [f"{via} 10.1.0.1:1080"]
    assert service["client"] == "10.1.0.9:40001"
    login = one(found, "cleartext-credentials", protocol)
    assert (login["server"], login["user"], login["password"]) == (server, "bob", "hunter2")
    assert login["proxy"] == service["proxy"]


def test_socks5_password_is_a_cleartext_credential(tmp_path: Path) -> None:
    turns, *_ = CASES["socks5-ipv4-auth-pop3"]
    found = one(records(capture(tmp_path, turns)), "cleartext-credentials", "socks")
    assert (found["server"], found["mechanism"], found["user"], found["password"]) == (
        "10.1.0.1:1080",
        "SOCKS5-USERPASS",
        "user",
        "secret",
    )
    assert found["outcome"] == "success" and "proxy" not in found


def test_a_refused_socks_request_reads_nothing_after_it(tmp_path: Path) -> None:
    refused = socks5(domain(b"mail.example.net", 25), reply=2) + SMTP
    assert records(capture(tmp_path, refused)) == []
    assert records(capture(tmp_path, socks4(25, "192.0.2.25", granted=False) + SMTP, name="4.pcap")) == []


def connect(target: bytes, answer: bytes, version: bytes = b"HTTP/1.1") -> Turns:
    return [(False, b"CONNECT " + target + b" " + version + b"\r\nHost: " + target + b"\r\n\r\n"), (True, answer)]


def test_mail_through_an_accepted_connect_after_a_407(tmp_path: Path) -> None:
    basic = base64.b64encode(b"proxyuser:proxypass")
    retry = b"CONNECT mx.example.com:25 HTTP/1.1\r\nProxy-Authorization: Basic " + basic + b"\r\n\r\n"
    turns = [
        *connect(
            b"mx.example.com:25", b"HTTP/1.1 407 Auth\r\nProxy-Authenticate: Basic realm=p\r\nContent-Length: 0\r\n\r\n"
        ),
        (False, retry),
        (True, b"HTTP/1.1 200 Connection established\r\n\r\n" + SMTP[0][1]),  # the greeting in the same segment
        *SMTP[1:],
    ]
    found = records(capture(tmp_path, turns, HTTP_PROXY))
    service = one(found, "mail-service")
    assert (service["server"], service["proxy"]) == ("mx.example.com:25", ["http-connect 10.1.0.1:3128"])
    assert one(found, "cleartext-credentials", "smtp")["server"] == "mx.example.com:25"
    proxy_login = one(found, "cleartext-credentials", "http")
    assert (proxy_login["user"], proxy_login["server"]) == ("proxyuser", "10.1.0.1:3128")


def test_a_refused_connect_stays_http(tmp_path: Path) -> None:
    basic = base64.b64encode(b"webuser:webpass")
    turns = [
        (
            False,
            b"CONNECT mx.example.com:25 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nAuthorization: Basic " + basic + b"\r\n\r\n",
        ),
        (True, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        *SMTP,  # not read: no tunnel was opened
    ]
    found = records(capture(tmp_path, turns, HTTP_PROXY))
    login = one(found, "cleartext-credentials", "http")
    assert (login["user"], login["outcome"]) == ("webuser", "success")
    assert [r for r in found if r["protocol"] == "smtp"] == []


def test_a_connect_line_with_a_stray_word_opens_a_tunnel(tmp_path: Path) -> None:
    turns = connect(b"mx.example.com:25 /", b"HTTP/1.0 200 Connection established\r\n\r\n", b"HTTP/1.0") + SMTP
    service = one(records(capture(tmp_path, turns, ("10.1.0.1", 8240))), "mail-service")
    assert (service["server"], service["proxy"]) == ("mx.example.com:25", ["http-connect 10.1.0.1:8240"])


def test_relaying_through_a_proxy_is_not_judged_by_the_proxy_clients_address(tmp_path: Path) -> None:
    direct = one(records(capture(tmp_path, RELAY, ("192.0.2.25", 25), "d.pcap")), "open-relay")
    assert direct["verdict"] == "relays-for-internal-clients"  # the client 10.1.0.9 is in a private range
    own = frozenset({"example.net"})  # the server's domain, as its user names it: foreign.example is not
    proxied = one(
        records(capture(tmp_path, socks5(domain(b"mail.example.net", 25)) + RELAY), local_domains=own), "open-relay"
    )
    assert (proxied["verdict"], proxied["severity"], proxied["server"]) == (
        "possible-relay",
        "medium",
        "mail.example.net:25",
    )
    assert proxied["proxy"] == ["socks5 10.1.0.1:1080"] and "outgoing address" in proxied["rule"]


def test_socks_decoder_is_bounded_and_stops_on_garbage() -> None:
    session = SocksSession()
    assert session.receive(ev.Side.CLIENT, b"\x05\x01\x00") == []
    session.receive(ev.Side.SERVER, b"\x05\x00")
    events = session.receive(ev.Side.CLIENT, b"\x05\x01\x00\x03\x00\x00\x19")  # an empty domain name
    assert [e.code for e in events if isinstance(e, ev.Anomaly)] == ["not_socks"]
    assert session.tunnel is None and session.may_skip()
    flood = SocksSession()
    flood.receive(ev.Side.CLIENT, b"\x05\x01\x02")
    events = flood.receive(ev.Side.CLIENT, bytes(MAX_HANDSHAKE_BYTES + 1))
    assert [e.code for e in events if isinstance(e, ev.Anomaly)] == ["too_long"] and flood.buffered_bytes() == 0


@pytest.fixture
def split_small_captures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "SHARD_MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "WHOLE_MAX_SHARE", 0)


def test_two_workers_give_what_one_process_gives(tmp_path: Path, split_small_captures: None) -> None:
    paths = [capture(tmp_path, turns, name=f"{name}.pcap") for name, (turns, *_rest) in CASES.items()]
    paths.append(capture(tmp_path, socks5(domain(b"mail.example.net", 25)) + RELAY, name="relay.pcap"))
    assert_same(outcome(paths, 1), outcome(paths, 2))


CORPUS_CASES = {
    ("zeek", "connect-with-smtp.pcap"): ("mailin03.sul.t-online.de:25", "http-connect 254.228.86.79:8240"),
    ("arkime", "socks5-smtp-503.pcap"): ("010.000.00.003:25", "socks5 10.0.0.1:1080"),
}


@pytest.mark.parametrize("backend", ["python", "auto"])
@pytest.mark.parametrize("where", list(CORPUS_CASES), ids="/".join)
def test_corpus_mail_through_proxies(where: tuple[str, str], backend: str) -> None:
    path = require_corpus("pcaps", *where)
    server, proxy = CORPUS_CASES[where]
    found = records(path, backend=backend)
    service = one(found, "mail-service")
    assert (service["protocol"], service["server"], service["proxy"]) == ("smtp", server, [proxy])
    assert service["banner"].startswith(
        ("mailin03.sul.t-online.de T-Online ESMTP", "xxxxxxxx.xxxxxxxxxx.xx ESMTP Exim")
    )
    assert_same(outcome([path], 1), outcome([path], 2))


def test_the_terminal_card_says_through_which_proxy(tmp_path: Path) -> None:
    turns, server, via, _protocol = CASES["socks5-domain-smtp"]
    shown = run_cli("analyze", str(capture(tmp_path, turns)), columns=200).stdout
    assert f"{server} via {via} 10.1.0.1:1080" in shown


TLS_BULK = [
    (False, b"\x16\x03\x01\x00\x20" + bytes(32)),
    (True, b"\x16\x03\x03\x00\x20" + bytes(32)),
    *[(True, b"\x17\x03\x03" + bytes(1400)) for _ in range(2000)],
]


@pytest.mark.parametrize("backend", ["python", "auto"])
@pytest.mark.parametrize(
    ("handshake", "proxy", "all_ports"),
    [
        (socks5(domain(b"www.example.com", 443)), SOCKS_PROXY, True),
        (connect(b"www.example.com:443", b"HTTP/1.1 200 Connection established\r\n\r\n"), ("10.1.0.1", 8080), False),
    ],
    ids=["socks5", "connect-ports-only"],
)
def test_a_tunnel_that_carries_no_mail_is_dropped_below_python(
    tmp_path: Path, handshake: Turns, proxy: tuple[str, int], all_ports: bool, backend: str
) -> None:
    """HTTPS through a proxy, the proxy's most common use: nothing in it is read, so the scanner drops its packets
    as it drops a TLS session's, rather than handing each one to Python to be thrown away."""
    path = capture(tmp_path, handshake + TLS_BULK, proxy)
    results = analyze_captures([str(path)], AnalysisOptions(backend=backend, all_ports=all_ports))
    assert list(results.findings) == []
    assert results.counters.segments_skipped > 1500


@pytest.mark.parametrize(
    ("target", "server"),
    [
        (b"http://mx.example.com:25", "http://mx.example.com:25"),
        (b"mx.example.com:25?", "mx.example.com:25?"),
        (b"<b>mx</b>\x1b]8;;http://evil\x07:25", "<b>mx</b>\\x1b]8;;http://evil\\x07:25"),
    ],
    ids=["absolute-form", "query", "hostile"],
)
def test_a_connect_target_is_named_as_the_client_sent_it(tmp_path: Path, target: bytes, server: str) -> None:
    """A CONNECT's target is an authority, not a path: neither a scheme nor a '?' in it makes it another server."""
    turns = connect(target, b"HTTP/1.1 200 Connection established\r\n\r\n") + SMTP
    service = one(records(capture(tmp_path, turns, HTTP_PROXY)), "mail-service")
    assert (service["server"], service["proxy"]) == (server, ["http-connect 10.1.0.1:3128"])


def dnp3_frame(control: int, sequence: int) -> bytes:
    """A DNP3 link-layer frame (start bytes 05 64, length, control, addresses, CRC) with a small request or answer."""
    body = bytes([0xC0 | sequence, 0xC0 | sequence, 0x01, 0x3C, 0x02, 0x06])
    return b"\x05\x64" + bytes([5 + len(body), control, 1, 0, 3, 0]) + b"\x12\x34" + body + b"\x56\x78"


def test_binary_protocols_starting_with_a_socks_version_byte_are_no_socks(tmp_path: Path) -> None:
    """DNP3 (05 64 ...) and Modbus/TCP at a transaction id 0x05nn open like a SOCKS5 greeting offering many methods;
    but their servers answer before that 'greeting' is whole, or go on past a 'choice', which no SOCKS proxy does:
    such flows are no SOCKS, and are let go. A proxy's handshake, in pieces or pipelined, still is SOCKS."""
    assert recognise(b"\x05\x64\x0b", dnp3_frame(0xC4, 1)) is False
    assert recognise(b"\x05\x10\x00\x00\x00\x05", b"\x05\x10\x00\x00\x00\x06\x01\x03\x00\x00\x00\x0a") is False
    assert recognise(b"\x00\x5a", b"\x04\x01\x00\x19\x01\x02\x03\x04user") is False  # user id unended
    assert recognise(b"\x05\x00", b"\x05\x01") is False  # a proxy never chooses before the methods are in
    turns = [turn for n in range(40) for turn in ((False, dnp3_frame(0xC4, n % 16)), (True, dnp3_frame(0x44, n % 16)))]
    path = capture(tmp_path, turns, ("10.1.0.1", 20000))
    results = analyze_captures([str(path)], AnalysisOptions())
    assert results.counts()["sessions"] == {} and results.counters.flows_not_mail == 1
    greeting, choice = b"\x05\x02\x00\x02", b"\x05\x00"
    assert identify(b"", greeting[:3]) is None and identify(b"", greeting) is None
    assert identify(choice, greeting) == "socks"
    assert identify(choice, greeting + b"\x05\x01\x00\x01") == "socks"  # a request sent before the choice came
    request4 = b"\x04\x01\x00\x19\x00\x00\x00\x01user\x00mx.example\x00"
    assert identify(b"", request4[:-3]) is None and identify(b"\x00\x5a" + bytes(6), request4) == "socks"


def test_bytes_held_for_unanswered_connects_stay_bounded() -> None:
    """A client pipelining CONNECTs to a proxy that never answers: once MAX_HELD of its bytes waited, they are read
    as HTTP, and a CONNECT among them does not hold all that follows it again (memory and time grew with the flow)."""
    session = HttpSession()
    data = b"CONNECT mx.example.com:25 HTTP/1.1\r\n\r\n" * 20000
    most = 0
    for start in range(0, len(data), 1400):
        session.receive(ev.Side.CLIENT, data[start : start + 1400], start, 0.0)
        most = max(most, session.buffers[ev.Side.CLIENT].held)
    assert most <= MAX_HELD + 1400
    answered = session.receive(ev.Side.SERVER, b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n" * 3)
    assert session.tunnel is None and not any(isinstance(e, ev.Anomaly) for e in answered)
    session.receive(ev.Side.CLIENT, b"CONNECT mx.example.com:25 HTTP/1.1\r\n\r\nEHLO x\r\n")
    assert session.buffers[ev.Side.CLIENT].held == len(b"EHLO x\r\n")  # after an answer, a CONNECT waits for its own
