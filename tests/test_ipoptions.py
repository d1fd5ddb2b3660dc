"""IP options and IPv6 extension headers a receiver refuses (passive.capture.ipoptions): a segment in such a packet
is no bytes the server read, so a decoy planted in one makes no finding; the options and headers a receiver takes
change nothing. Both scanners judge alike, and pieces behind the headers a receiver takes are joined.
tests/test_receiver.py shows a Linux receiver taking and dropping them."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from passive.capture import ipoptions
from passive.capture.defrag import Defragmenter
from passive.capture.linklayer import LINKTYPE_ETHERNET, MALFORMED, decode_tcp
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_checksums import DECOY, REAL, _insertion
from tests.test_relay_transactions import CLIENT, SERVER, analyze, relays, transaction, turns
from tests.test_scanner import assert_same, run

SERVER_ADDRESS = bytes([192, 0, 2, 25])

REFUSED_V4 = {
    "loose source route": bytes([131, 7, 4]) + SERVER_ADDRESS,
    "strict source route": bytes([137, 7, 4]) + SERVER_ADDRESS,
    "loose source route used up": bytes([131, 7, 8]) + SERVER_ADDRESS,
    "record route pointer under 4": bytes([7, 7, 3, 0, 0, 0, 0]),
    "record route without room for an address": bytes([7, 6, 4, 0, 0, 0]),
    "two record routes": bytes([7, 3, 4, 7, 3, 4]),
    "timestamp pointer under 5": bytes([68, 8, 4, 0, 0, 0, 0, 0]),
    "timestamp without room for an address and time": bytes([68, 8, 5, 1, 0, 0, 0, 0]),
    "timestamp full with its overflow at 15": bytes([68, 8, 9, 0xF0, 0, 0, 0, 0]),
    "router alert of 2 bytes": bytes([148, 2]),
    "CIPSO label": bytes([134, 10, 0, 0, 0, 1, 1, 4, 0, 0]),
    "length byte 0": bytes([0x9E, 0]),
    "length byte 1": bytes([0x9E, 1]),
    "length past the header": bytes([0x9E, 40]),
    "a lone type byte at the header's end": bytes([1, 1, 1, 0x9E]),
}
TAKEN_V4 = {
    "no operation padding": bytes([1, 1, 1, 1]),
    "end of list, then anything": bytes([0, 0x9E, 0, 7]),
    "record route": bytes([7, 7, 4, 0, 0, 0, 0]),
    "record route full": bytes([7, 7, 8, 0, 0, 0, 0]),
    "router alert": bytes([148, 4, 0, 0]),
    "timestamp": bytes([68, 8, 5, 0, 0, 0, 0, 0]),
    "timestamp full, its overflow counted": bytes([68, 8, 9, 0x10, 0, 0, 0, 0]),
    "unknown option": bytes([0x9E, 4, 0, 0]),
    "security": bytes([130, 11]) + bytes(9),
}

NEXT = 0xFF  # stands for the next header byte, filled in by _with_headers


def _options(*options: bytes) -> bytes:
    """A Hop-by-Hop or Destination Options header (without its next header byte's value) holding ``options``,
    padded with PadN to a multiple of 8."""
    body = b"".join(options)
    room = (-(len(body) + 2)) % 8
    body += b"" if room == 0 else b"\x00" if room == 1 else bytes([1, room - 2]) + bytes(room - 2)
    return bytes([NEXT, (len(body) + 2) // 8 - 1]) + body


def _routing(kind: int, left: int) -> bytes:
    return bytes([NEXT, 2, kind, left, 0, 0, 0, 0]) + bytes(16)


SKIP = bytes([0x1E, 0])  # an unknown option its type says to skip
REFUSED_V6 = {
    "destination option of action 01 (drop)": [(60, _options(bytes([0x5E, 2, 0, 0])))],
    "destination option of action 10 (drop, ICMP)": [(60, _options(bytes([0x9E, 2, 0, 0])))],
    "destination option of action 11 (drop, ICMP)": [(60, _options(bytes([0xDE, 2, 0, 0])))],
    "PadN whose padding is not zero": [(60, bytes([NEXT, 0, 1, 4, 0, 0, 0, 1]))],
    "padding of 8 bytes": [(60, bytes([NEXT, 1, 1, 12]) + bytes(12))],
    "nine options": [(60, _options(*[SKIP] * 9))],
    "an option past its header's end": [(60, bytes([NEXT, 0, 0x1E, 10, 0, 0, 0, 0]))],
    "hop-by-hop after destination options": [(60, _options()), (0, _options())],
    "hop-by-hop jumbo payload": [(0, _options(bytes([0xC2, 4, 0, 1, 0, 0])))],
    "hop-by-hop router alert of 4 bytes": [(0, _options(bytes([5, 4, 0, 0, 0, 0])))],
    "routing type 0 with a segment left": [(43, _routing(0, 1))],
    "routing type 4 (segment routing)": [(43, _routing(4, 0))],
    "routing type 2 (mobile IPv6)": [(43, _routing(2, 0))],
    "an experimental header (253)": [(253, bytes([NEXT, 0]) + bytes(6))],
}
TAKEN_V6 = {
    "destination options of padding": [(60, _options())],
    "destination option to skip": [(60, _options(bytes([0x1E, 2, 0, 0])))],
    "eight options": [(60, _options(*[SKIP] * 8))],
    "two destination options headers": [(60, _options(SKIP)), (60, _options())],
    "hop-by-hop router alert": [(0, _options(bytes([5, 2, 0, 0])))],
    "routing type 0 with no segment left": [(43, _routing(0, 0))],
    "hop-by-hop, destination options, routing": [(0, _options()), (60, _options(SKIP)), (43, _routing(0, 0))],
}


def _with_options(frame: bytes, options: bytes) -> bytes:
    """An Ethernet/IPv4 ``frame`` with ``options`` (padded with End of Option List) in its IP header."""
    options += bytes(-len(options) % 4)
    header = bytearray(frame[14:34] + options)
    header[0] = 0x40 | len(header) // 4
    header[2:4] = struct.pack("!H", len(header) + len(frame) - 34)
    header[10:12] = b"\x00\x00"
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    header[10:12] = struct.pack("!H", ~total & 0xFFFF)
    return frame[:14] + bytes(header) + frame[34:]


def _with_headers(frame: bytes, headers: list[tuple[int, bytes]]) -> bytes:
    """An Ethernet/IPv6 ``frame`` with extension ``headers`` ((kind, bytes) in order) before its upper layer."""
    kinds = [kind for kind, _ in headers] + [frame[20]]
    chain = b"".join(bytes([kinds[i + 1]]) + body[1:] for i, (_, body) in enumerate(headers))
    ip = bytearray(frame[14:54])
    ip[6] = kinds[0]
    ip[4:6] = struct.pack("!H", len(frame) - 54 + len(chain))
    return frame[:14] + bytes(ip) + chain + frame[54:]


def _segment6(payload: bytes = b"MAIL FROM:<a@b.example>\r\n") -> bytes:
    packet = (
        Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb")
        / IPv6(src="2001:db8::9", dst="2001:db8::25")
        / TCP(sport=40000, dport=25, flags="PA")
    )
    return bytes(packet / Raw(payload))


def _segment4() -> bytes:
    packet = (
        Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb")
        / IP(src="203.0.113.9", dst="192.0.2.25")
        / TCP(sport=40000, dport=25, flags="PA")
    )
    return bytes(packet / Raw(b"MAIL FROM:<a@b.example>\r\n"))


def _v4(options: bytes) -> bytes:
    return _with_options(_segment4(), options)


def _v6(headers: list[tuple[int, bytes]]) -> bytes:
    return _with_headers(_segment6(), headers)


@pytest.mark.parametrize("name", list(REFUSED_V4))
def test_an_ipv4_packet_whose_options_a_receiver_refuses_is_dropped(name: str) -> None:
    assert decode_tcp(LINKTYPE_ETHERNET, _v4(REFUSED_V4[name])) == MALFORMED


@pytest.mark.parametrize("name", list(TAKEN_V4))
def test_an_ipv4_packet_whose_options_a_receiver_takes_is_read(name: str) -> None:
    segment = decode_tcp(LINKTYPE_ETHERNET, _v4(TAKEN_V4[name]))
    assert isinstance(segment, tuple) and segment[7] == b"MAIL FROM:<a@b.example>\r\n"
    assert segment[9] & 0x1C00 == 1 << 10  # its TCP checksum still right: the options moved nothing


@pytest.mark.parametrize("name", list(REFUSED_V6))
def test_an_ipv6_packet_whose_extension_headers_a_receiver_refuses_is_dropped(name: str) -> None:
    assert decode_tcp(LINKTYPE_ETHERNET, _v6(REFUSED_V6[name])) == MALFORMED


@pytest.mark.parametrize("name", list(TAKEN_V6))
def test_an_ipv6_packet_whose_extension_headers_a_receiver_takes_is_read(name: str) -> None:
    segment = decode_tcp(LINKTYPE_ETHERNET, _v6(TAKEN_V6[name]))
    assert isinstance(segment, tuple) and segment[7] == b"MAIL FROM:<a@b.example>\r\n"
    assert segment[9] & 0x1C00 == 1 << 10


def test_the_bounds_are_linux_defaults() -> None:
    assert ipoptions.MAX_TLV_OPTIONS == 8  # net.ipv6.max_dst_opts_number, max_hbh_opts_number
    assert ipoptions.MAX_PADDING == 7  # ip6_parse_tlv


def _pieces6(
    headers: list[tuple[int, bytes]], payload: bytes, after: list[tuple[int, bytes]] | None = None
) -> list[bytes]:
    """The IPv6 segment carrying ``payload`` cut into pieces, each with ``headers`` before its Fragment header and
    the first with ``after`` (extension headers in the fragmentable part) and the whole TCP header."""
    whole = _segment6(payload)
    kinds = [kind for kind, _ in after or []] + [6]
    fragmentable = b"".join(bytes([kinds[i + 1]]) + body[1:] for i, (_, body) in enumerate(after or [])) + whole[54:]
    size = -(-(len(fragmentable) - len(whole) + 54 + 20) // 8) * 8  # the first piece: through the TCP header
    ip = bytearray(whole[14:54])
    ip[6] = 44
    pieces = []
    for offset in range(0, len(fragmentable), size):
        fragment = bytes([kinds[0], 0]) + struct.pack("!HI", offset | (offset + size < len(fragmentable)), 77)
        pieces.append(_with_headers(whole[:14] + bytes(ip) + fragment + fragmentable[offset : offset + size], headers))
    return pieces


@pytest.mark.parametrize(
    ("headers", "after", "joined"),
    [([], [], True), ([(60, _options(SKIP))], [], True), ([(0, _options()), (60, _options())], [], True),
     ([(60, _options())] * 9, [], True), ([], [(60, _options(SKIP))], True), ([], [(43, _routing(0, 0))], True),
     ([(60, _options(bytes([0x9E, 2, 0, 0])))], [], False), ([(60, _options()), (0, _options())], [], False),
     ([], [(60, _options(bytes([0x9E, 2, 0, 0])))], False)],
    ids=["fragment header first", "after destination options", "after hop-by-hop and destination options",
         "after nine destination options", "before destination options", "before a routing header",
         "after a destination option a receiver refuses", "after hop-by-hop out of place",
         "before a destination option a receiver refuses"],
)  # fmt: skip
def test_ipv6_pieces_behind_headers_a_receiver_takes_are_joined(headers: list, after: list, joined: bool) -> None:
    """Headers before the Fragment header are judged on each piece; those after it, on the joined packet."""
    payload = b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n"
    defrag = Defragmenter()
    results = [defrag.add(LINKTYPE_ETHERNET, piece, 1.0) for piece in _pieces6(headers, payload, after)]
    assert all(result is None for result in results[:-1])
    segment = decode_tcp(LINKTYPE_ETHERNET, results[-1]) if results[-1] is not None else MALFORMED
    if not joined:
        assert segment == MALFORMED
        return
    assert isinstance(segment, tuple) and segment[7] == payload
    assert segment[9] & 0x1C00 == 1 << 10  # the joined segment's checksum is right: its headers are whole


def _all_cases(path: Path) -> Path:
    frames = [_v4(options) for options in [*REFUSED_V4.values(), *TAKEN_V4.values()]]
    frames += [_v6(headers) for headers in [*REFUSED_V6.values(), *TAKEN_V6.values()]]
    frames += _pieces6([(60, _options(SKIP))], b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n")
    frames += _pieces6([], b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n", [(60, _options(SKIP))])
    frames.append(_v6([(60, _options())] * 70))  # more headers than any bound but the packet's
    path.write_bytes(pcap_bytes([(1000 + i * 0.001, frame) for i, frame in enumerate(frames)]))
    return path


@pytest.mark.parametrize("every_port", [True, False], ids=["every-port", "ports-only"])
def test_both_scanners_refuse_and_join_alike(every_port: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _all_cases(tmp_path / "options.pcap")
    compiled = run(path, "auto", monkeypatch, all_ports=every_port)
    python = run(path, "python", monkeypatch, all_ports=every_port)
    assert_same(compiled, python)
    assert compiled["counts"]["decode_errors"] == len(REFUSED_V4) + len(REFUSED_V6)
    assert compiled["counts"]["segments"] == len(TAKEN_V4) + len(TAKEN_V6) + 3


def _lsrr(planted: Ether) -> bytes:
    return _with_options(_fresh(planted), REFUSED_V4["loose source route"])


def _nop(planted: Ether) -> bytes:
    return _with_options(_fresh(planted), TAKEN_V4["no operation padding"])


def _fresh(planted: Ether) -> bytes:
    del planted[IP].len, planted[IP].chksum, planted[TCP].chksum
    return bytes(planted)


def test_a_foreign_rcpt_in_a_packet_the_receiver_refuses_is_no_open_relay(tmp_path: Path) -> None:
    """The decoy's checksums are right; its source route makes the server's IP layer drop it."""
    pcap = _insertion(tmp_path / "planted.pcap", DECOY, REAL, transaction(rcpts=("a@contoso.com",)), _lsrr)
    assert relays(analyze(pcap)) == []
    assert relays(analyze(pcap, "--reassembly", "first")) == []  # no policy reads what never reached TCP


def test_a_foreign_rcpt_in_a_packet_the_receiver_takes_is_an_open_relay(tmp_path: Path) -> None:
    """Options a receiver takes change nothing: the server read the decoy, and the real segment is a copy."""
    pcap = _insertion(tmp_path / "taken.pcap", DECOY, REAL, transaction(rcpts=("a@contoso.com",)), _nop)
    assert relays(analyze(pcap)) == [("open-relay", "high", True)]


def _ipv6_insertion(path: Path, headers: list[tuple[int, bytes]]) -> Path:
    """The transaction over IPv6 with the decoy RCPT, in a packet with ``headers``, right before the real one."""
    segments = conversation_segments(turns(transaction(rcpts=("a@contoso.com",))), CLIENT, SERVER)
    out: list[tuple[float, bytes]] = []
    for (ts, frame), segment in zip(ethernet_frames(segments), segments, strict=True):
        addresses = ("2001:db8::9", "2001:db8::25") if frame[IP].src == CLIENT[0] else ("2001:db8::25", "2001:db8::9")
        tcp = frame[TCP].copy()
        del tcp.chksum
        six = Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb") / IPv6(src=addresses[0], dst=addresses[1]) / tcp
        if segment[5].startswith(b"RCPT"):
            decoy = six.copy()
            decoy[Raw].load = DECOY
            del decoy[TCP].chksum
            out.append((ts - 0.0005, _with_headers(bytes(decoy), headers)))
            six[Raw].load = REAL
        out.append((ts, bytes(six)))
    path.write_bytes(pcap_bytes(out))
    return path


def test_a_foreign_rcpt_behind_a_destination_option_the_receiver_refuses_is_no_open_relay(tmp_path: Path) -> None:
    refused = _ipv6_insertion(tmp_path / "refused.pcap", REFUSED_V6["destination option of action 10 (drop, ICMP)"])
    assert relays(analyze(refused)) == []
    taken = _ipv6_insertion(tmp_path / "taken.pcap", TAKEN_V6["destination option to skip"])
    assert relays(analyze(taken)) == [("open-relay", "high", True)]
