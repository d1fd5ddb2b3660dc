"""Segments with a wrong checksum (passive.capture.checksums): a receiver drops them unread, so a sender can plant a
decoy with one (an insertion) where a passive analyzer that reads every segment sees a foreign RCPT the server
never read, or a RST that ended nothing. Refused where the capture shows right checksums in that direction; read
where it shows none (a capture on a host whose network card fills them in), and where a segment is larger than one
on the wire (a host's merge of received segments). Both scanners mark the same segments.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Ether
from scapy.packet import Raw
from scapy.utils import rdpcap

from passive.capture import linklayer, scanread
from passive.capture.checksums import INFO_CSUM_BAD, INFO_CSUM_LEFT, INFO_CSUM_VALID
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_relay_transactions import CLIENT, SERVER, analyze, relays, run_cli, transaction, turns

BITS = INFO_CSUM_VALID | INFO_CSUM_BAD | INFO_CSUM_LEFT
REAL = b"RCPT TO:<a@contoso.com>\r\n"  # a mailbox at the server's own domain: no relaying
DECOY = b"RCPT TO:<v@outside.tst>\r\n"  # what a sender shows a monitor with a wrong checksum


def _pseudo(packet: Ether, with_length: bool) -> int:
    """The pseudo-header sum a sending host's stack writes for its network card to finish (offload)."""
    ip = packet[IP] if IP in packet else packet[IPv6]
    family = 4 if IP in packet else 6
    import socket

    af = socket.AF_INET if family == 4 else socket.AF_INET6
    src, dst = socket.inet_pton(af, ip.src), socket.inet_pton(af, ip.dst)
    length = len(bytes(packet[TCP])) if with_length else 0
    total = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + 6 + length
    return total % 0xFFFF


def _frame(payload: bytes = b"EHLO x\r\n", v6: bool = False, **tcp: int) -> Ether:
    ip = IPv6(src="2001:db8::1", dst="2001:db8::2") if v6 else IP(src="192.0.2.1", dst="192.0.2.2")
    return Ether() / ip / TCP(sport=40000, dport=25, flags="PA", seq=7, **tcp) / Raw(payload)


def _both(frame: bytes) -> tuple[int, int]:
    python = linklayer.decode_tcp(1, frame)
    assert isinstance(python, tuple)
    if scanread._cscan is None:
        return python[9] & BITS, python[9] & BITS
    compiled = scanread._cscan.decode(1, frame)
    return python[9] & BITS, compiled[9] & BITS


def _with_tcp_checksum(packet: Ether, value: int) -> bytes:
    raw = bytearray(bytes(packet))
    at = len(raw) - len(bytes(packet[TCP])) + 16
    raw[at : at + 2] = struct.pack("!H", value)
    return bytes(raw)


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("payload", [b"EHLO x\r\n", b"odd", b""])
def test_right_wrong_and_offloaded_checksums_are_told_apart_alike_by_both_scanners(v6: bool, payload: bytes) -> None:
    packet = _frame(payload, v6)
    assert _both(bytes(packet)) == (INFO_CSUM_VALID, INFO_CSUM_VALID)
    assert _both(_with_tcp_checksum(packet, 0xBEEF)) == (INFO_CSUM_BAD, INFO_CSUM_BAD)
    for left_to_the_card in (0, _pseudo(packet, True), _pseudo(packet, False)):
        assert _both(_with_tcp_checksum(packet, left_to_the_card)) == (INFO_CSUM_LEFT, INFO_CSUM_LEFT)


def test_an_ipv4_header_checksum_wrong_is_a_wrong_segment_and_zero_is_left_to_the_card() -> None:
    packet = Ether() / IP(src="192.0.2.1", dst="192.0.2.2", chksum=0x4444) / TCP(dport=25) / Raw(b"x")
    assert _both(bytes(packet)) == (INFO_CSUM_BAD, INFO_CSUM_BAD)
    packet = Ether() / IP(src="192.0.2.1", dst="192.0.2.2", chksum=0) / TCP(dport=25) / Raw(b"x")
    assert _both(bytes(packet)) == (INFO_CSUM_LEFT, INFO_CSUM_LEFT)  # not right: a receiver drops it off the wire


def test_a_segment_not_captured_whole_is_not_judged_and_one_sent_by_segmentation_offload_is_left() -> None:
    packet = _frame(b"A" * 100)
    assert _both(bytes(packet)[:-10]) == (0, 0)  # a snapshot length cut it
    raw = bytearray(_with_tcp_checksum(packet, 0xBEEF))
    raw[16:18] = b"\x00\x00"  # IPv4 total length 0: written so on a host with segmentation offload
    assert _both(bytes(raw)) == (INFO_CSUM_LEFT, INFO_CSUM_LEFT)


def _wrong(planted: Ether) -> bytes:
    return _with_tcp_checksum(planted, 0xBEEF)


def _insertion(
    path: Path,
    decoy: bytes,
    real: bytes,
    script: str,
    spoil: Callable[[Ether], bytes] = _wrong,
    at: str = "RCPT",
    lost: str | None = None,
) -> Path:
    """A capture of ``script`` where, right before the client's segment starting ``at``, a segment with the same
    sequence number carries ``decoy``, its checksums made wrong by ``spoil``; the real segment carries ``real``. The
    segment starting ``lost``, if any, is not in the capture."""
    segments = conversation_segments(turns(script), CLIENT, SERVER)
    frames = ethernet_frames(segments)
    out: list[tuple[float, bytes]] = []
    for (ts, frame), segment in zip(frames, segments, strict=True):
        if lost is not None and segment[5].startswith(lost.encode()):
            continue
        if segment[5].startswith(at.encode()):
            planted = frame.copy()
            planted[Raw].load = decoy
            out.append((ts - 0.0005, spoil(planted)))
            frame[Raw].load = real
            del frame[IP].len, frame[IP].chksum, frame[TCP].chksum
        out.append((ts, bytes(frame)))
    path.write_bytes(pcap_bytes(out))
    return path


def _summary(pcap: Path, *options: str) -> dict:
    import json

    for line in run_cli("analyze", "--format", "jsonl", *options, str(pcap)).stdout.splitlines():
        record = json.loads(line)
        if record.get("type") == "summary":
            return record
    raise AssertionError("no summary")


def test_a_foreign_rcpt_planted_with_a_wrong_checksum_is_no_open_relay(tmp_path: Path) -> None:
    """The server read the local RCPT and accepted it; the decoy with a wrong checksum it never read."""
    pcap = _insertion(tmp_path / "planted.pcap", DECOY, REAL, transaction(rcpts=("a@contoso.com",)))
    assert relays(analyze(pcap)) == []
    assert _summary(pcap)["checksum_drops"] == 1
    # Read as every segment came ("first seen wins", no receiver followed), the decoy makes a false HIGH.
    assert relays(analyze(pcap, "--reassembly", "first")) == [("open-relay", "high", True)]


def _cut(pcap: Path, payload: bytes, reverse: bool = False, spoil_piece: int | None = None) -> None:
    """The segment carrying ``payload`` in ``pcap`` cut into IPv4 fragments of 8 bytes, as a router on the way cuts
    it, in order or not; piece ``spoil_piece`` with a wrong IPv4 header checksum."""
    out: list[tuple[float, bytes]] = []
    for packet in rdpcap(str(pcap)):
        ts, frame = float(packet.time), bytes(packet)
        if packet.haslayer(Raw) and packet[Raw].load == payload:
            packet[IP].flags = 0  # no DF
            pieces = [bytearray(bytes(Ether(src=packet.src, dst=packet.dst) / p)) for p in fragment(packet[IP], 8)]
            assert len(pieces) == 6  # 20 bytes of TCP header and 25 of RCPT, 8 a piece
            if spoil_piece is not None:
                pieces[spoil_piece][24:26] = b"\xbe\xef"
            out += [(ts, bytes(piece)) for piece in (pieces[::-1] if reverse else pieces)]
        else:
            out.append((ts, frame))
    pcap.write_bytes(pcap_bytes(out))


@pytest.mark.parametrize("reverse", [False, True])
def test_a_foreign_rcpt_planted_beside_real_bytes_sent_in_fragments_is_no_open_relay(
    tmp_path: Path, reverse: bool
) -> None:
    """The real RCPT sent in IPv4 fragments, which the receiver joins and reads; the decoy sent whole with a wrong
    checksum. Left unjoined, the real bytes were a hole the receiver's acknowledgement showed filled, and the held
    decoy was read there."""
    pcap = _insertion(tmp_path / "planted.pcap", DECOY, REAL, transaction(rcpts=("a@contoso.com",)))
    _cut(pcap, REAL, reverse)
    assert relays(analyze(pcap)) == []
    summary = _summary(pcap)
    assert summary["checksum_drops"] == 1 and summary["ip_fragments"] == 0


def test_a_foreign_rcpt_planted_in_fragments_one_with_a_wrong_header_checksum_is_no_open_relay(tmp_path: Path) -> None:
    """The decoy's segment is right but cut into fragments, one of them with a wrong IPv4 header checksum: the
    receiver drops that piece and never has the decoy whole; nor does leakscope, whatever the options."""
    pcap = _insertion(tmp_path / "planted.pcap", DECOY, REAL, transaction(rcpts=("a@contoso.com",)), _right)
    _cut(pcap, DECOY, spoil_piece=3)
    assert relays(analyze(pcap)) == [] == relays(analyze(pcap, "--ignore-checksums"))
    assert _summary(pcap)["ip_fragments"] == 6


def _pieces(packet: Ether, wrong_header: bool) -> list[bytes]:
    packet = packet.copy()
    packet[IP].flags, packet[IP].id = 0, 77
    pieces = [bytearray(bytes(Ether(src=packet.src, dst=packet.dst) / p)) for p in fragment(packet[IP], 8)]
    for piece in pieces if wrong_header else []:
        piece[24:26] = b"\xbe\xef"
    return [bytes(piece) for piece in pieces]


def test_decoy_pieces_with_wrong_header_checksums_each_before_its_right_twin_are_no_open_relay(tmp_path: Path) -> None:
    """Both segments cut alike under one IP id, each decoy piece (its header checksum wrong, the receiver drops it)
    just before the right piece at the same place: the right pieces make the segment, the wrong ones never stand in
    for them (joined among themselves, they make a segment with a wrong checksum, held and dropped)."""
    pcap = _insertion(tmp_path / "planted.pcap", DECOY, REAL, transaction(rcpts=("a@contoso.com",)), _right)
    frames = [(float(p.time), p) for p in rdpcap(str(pcap))]
    out: list[tuple[float, bytes]] = []
    for (ts, packet), (_, following) in zip(frames, [*frames[1:], (0.0, None)], strict=True):
        if packet.haslayer(Raw) and packet[Raw].load == DECOY:
            assert following is not None and following[Raw].load == REAL
            pairs = zip(_pieces(packet, True), _pieces(following, False), strict=True)
            out += [(ts, piece) for pair in pairs for piece in pair]
        elif not (packet.haslayer(Raw) and packet[Raw].load == REAL):
            out.append((ts, bytes(packet)))
    pcap.write_bytes(pcap_bytes(out))
    assert relays(analyze(pcap)) == []
    summary = _summary(pcap)
    assert summary["ip_fragments"] == 0 and summary["checksum_drops"] == 1


def _right(planted: Ether) -> bytes:
    del planted[IP].len, planted[IP].chksum, planted[TCP].chksum
    return bytes(planted)


def _in_gre(frame: bytes, outer_checksum: int | None = None) -> bytes:
    """``frame``'s IP packet in GRE over IPv4, the outer header's checksum right or ``outer_checksum``."""
    raw = bytearray(bytes(Ether() / IP(src="198.51.100.1", dst="198.51.100.2") / GRE(proto=0x0800) / frame[14:]))
    if outer_checksum is not None:
        raw[24:26] = struct.pack("!H", outer_checksum)
    return bytes(raw)


@pytest.mark.parametrize("inner", ["right", "wrong"])
def test_a_tunnel_header_with_a_wrong_checksum_makes_its_segment_wrong_alike_in_both_scanners(inner: str) -> None:
    """The tunnel's end drops a packet whose outer IPv4 header checksum is wrong: its segment never arrives."""
    packet = bytes(_frame()) if inner == "right" else _with_tcp_checksum(_frame(), 0xBEEF)
    expected = INFO_CSUM_VALID if inner == "right" else INFO_CSUM_BAD
    assert _both(_in_gre(packet)) == (expected, expected)
    assert _both(_in_gre(packet, 0xBEEF)) == (INFO_CSUM_BAD, INFO_CSUM_BAD)
    zero = INFO_CSUM_LEFT if inner == "right" else INFO_CSUM_BAD  # zero, as a card leaves it
    assert _both(_in_gre(packet, 0)) == (zero, zero)


def test_a_foreign_rcpt_planted_in_a_tunnel_packet_with_a_wrong_header_checksum_is_no_open_relay(
    tmp_path: Path,
) -> None:
    """Every segment in GRE; the decoy's segment right, its tunnel packet's outer IPv4 header not: the tunnel's end
    drops it, and the server reads the real RCPT."""
    pcap = _insertion(tmp_path / "planted.pcap", DECOY, REAL, transaction(rcpts=("a@contoso.com",)), _right)
    frames = [(float(p.time), bytes(p)) for p in rdpcap(str(pcap))]
    pcap.write_bytes(
        pcap_bytes([(ts, _in_gre(f, 0xBEEF if Ether(f).haslayer(Raw) and DECOY in f else None)) for ts, f in frames])
    )
    assert relays(analyze(pcap)) == []
    assert _summary(pcap)["checksum_drops"] == 1
    assert relays(analyze(pcap, "--ignore-checksums")) == [("open-relay", "high", True)]


def _ip_checksum_zero(planted: Ether) -> bytes:
    raw = bytearray(bytes(planted))  # the TCP checksum right, the IPv4 header's 0 (a receiver drops it)
    raw[24:26] = b"\x00\x00"
    return bytes(raw)


def _total_length_zero(planted: Ether) -> bytes:
    raw = bytearray(_wrong(planted))
    raw[16:18] = b"\x00\x00"
    return bytes(raw)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda planted: _with_tcp_checksum(planted, 0),
        lambda planted: _with_tcp_checksum(planted, _pseudo(planted, True)),
        lambda planted: _with_tcp_checksum(planted, _pseudo(planted, False)),
        _ip_checksum_zero,
        _total_length_zero,
    ],
    ids=["tcp-zero", "pseudo-with-length", "pseudo-alone", "ip-zero", "total-length-zero"],
)
def test_a_decoy_whose_checksum_looks_left_to_the_card_is_no_open_relay(
    tmp_path: Path, spoil: Callable[[Ether], bytes]
) -> None:
    """A sender writes the checksum a capturing host's offload leaves as easily as any wrong one, and the server
    drops it as any wrong one: in a direction whose checksums the capture shows right, it is doubted alike."""
    pcap = _insertion(tmp_path / "planted.pcap", DECOY, REAL, transaction(rcpts=("a@contoso.com",)), spoil)
    assert relays(analyze(pcap)) == []
    assert _summary(pcap)["checksum_drops"] == 1


def test_a_wrong_checksum_on_a_host_whose_card_fills_them_in_is_read(tmp_path: Path) -> None:
    """A capture on the sending host: its segments show the checksum its stack left for the card (none right), so
    none is refused; here that host is the client, every segment of whose shows the pseudo-header's sum."""
    script = transaction()
    segments = conversation_segments(turns(script), CLIENT, SERVER)
    out = []
    for (ts, frame), segment in zip(ethernet_frames(segments), segments, strict=True):
        from_client = segment[0] == CLIENT
        out.append((ts, _with_tcp_checksum(frame, _pseudo(frame, True)) if from_client else bytes(frame)))
    pcap = tmp_path / "offload.pcap"
    pcap.write_bytes(pcap_bytes(out))
    assert relays(analyze(pcap)) == [("open-relay", "high", True)]
    assert _summary(pcap)["checksum_drops"] == 0


def _corrupted(path: Path, script: str, at: str) -> Path:
    """A capture of ``script`` whose client segment starting ``at`` has a wrong TCP checksum (and no other copy)."""
    segments = conversation_segments(turns(script), CLIENT, SERVER)
    out = []
    for (ts, frame), segment in zip(ethernet_frames(segments), segments, strict=True):
        wrong = segment[5].startswith(at.encode())
        out.append((ts, _with_tcp_checksum(frame, 0xBEEF) if wrong else bytes(frame)))
    path.write_bytes(pcap_bytes(out))
    return path


def test_a_larger_segment_than_one_on_the_wire_with_a_wrong_checksum_is_read(tmp_path: Path) -> None:
    """A host that merged received segments (GRO, LRO) shows one packet with the first one's checksum: refusing it
    would lose what the receiver did read."""
    script = transaction("C: DATA", "S: 354 go ahead", "C: " + "x" * 2000, "C: .", "S: 250 2.0.0 Ok: queued")
    summary = _summary(_corrupted(tmp_path / "merged.pcap", script, "x" * 10))
    assert (summary["checksum_drops"], summary["gaps"]) == (0, 0)


def test_the_only_copy_of_bytes_the_receiver_acknowledged_is_read_whatever_its_checksum(tmp_path: Path) -> None:
    """A capture edited without fixing checksums: the receiver got those bytes (in their first form) and said so.
    The RCPT so edited is read, and it is the relay the server's 250 says it is."""
    pcap = _corrupted(tmp_path / "edited.pcap", transaction(), "RCPT")
    assert relays(analyze(pcap)) == [("open-relay", "high", True)]
    summary = _summary(pcap)
    assert (summary["checksum_drops"], summary["gaps"]) == (0, 0)


def test_a_segment_with_a_wrong_checksum_never_acknowledged_is_dropped(tmp_path: Path) -> None:
    """The last RCPT, planted with a wrong checksum, is never acknowledged (the server read nothing there, and the
    capture ends): it is not read, and the summary counts it."""
    script = transaction().replace("C: QUIT\nS: 221 2.0.0 Bye", "C: RCPT TO:<second@outside.test>")
    segments = conversation_segments(turns(script), CLIENT, SERVER)
    frames = ethernet_frames(segments)
    last = max(n for n, segment in enumerate(segments) if segment[5].startswith(b"RCPT"))
    out = [
        (ts, _with_tcp_checksum(frame, 0xBEEF) if n == last else bytes(frame)) for n, (ts, frame) in enumerate(frames)
    ]
    out = [item for n, item in enumerate(out) if n <= last]  # nothing after it: no acknowledgement
    pcap = tmp_path / "unacknowledged.pcap"
    pcap.write_bytes(pcap_bytes(out))
    findings = analyze(pcap, "--show-secrets")
    assert not any("second@outside.test" in str(f) for f in findings)
    assert _summary(pcap)["checksum_drops"] == 1


def test_a_rst_with_a_wrong_checksum_ends_nothing(tmp_path: Path) -> None:
    """A RST the receiver dropped for its checksum: the RCPT after it was read, and it is the relay it is."""
    script = transaction()
    segments = conversation_segments(turns(script), CLIENT, SERVER)
    frames = ethernet_frames(segments)
    out: list[tuple[float, bytes]] = []
    for (ts, frame), segment in zip(frames, segments, strict=True):
        if segment[5].startswith(b"RCPT"):
            reset = Ether() / IP(src=CLIENT[0], dst=SERVER[0]) / TCP(
                sport=CLIENT[1], dport=SERVER[1], seq=segment[2], ack=segment[3], flags="RA"
            )  # fmt: skip
            out.append((ts - 0.0005, _with_tcp_checksum(reset, 0xBEEF)))
        out.append((ts, bytes(frame)))
    pcap = tmp_path / "rst.pcap"
    pcap.write_bytes(pcap_bytes(out))
    assert relays(analyze(pcap)) == [("open-relay", "high", True)]
    assert relays(analyze(pcap, "--reassembly", "first")) == []  # the RST read, the flow ends before the RCPT


def test_a_segment_its_tunnel_packet_cuts_short_is_not_judged_by_either_scanner() -> None:
    """The outer IPv4 header of a GRE packet ends before the inner segment does (the rest is the frame's trailer,
    no part of the packet): the compiled scanner summed the bytes past it and found the checksum right."""
    from scapy.layers.l2 import GRE

    inner = Ether() / IP(src="10.9.0.25", dst="10.9.0.10") / TCP(sport=25, dport=40000, flags="PA") / Raw(b"220 x\r\n")
    packet = Ether() / IP(src="192.0.2.1", dst="192.0.2.2") / GRE(proto=0x6558) / inner
    raw = bytearray(bytes(packet))
    raw[16:18] = struct.pack("!H", len(raw) - 14 - 4)  # the outer packet ends 4 bytes before the inner one
    assert _both(bytes(raw)) == (0, 0)
