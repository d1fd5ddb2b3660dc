"""Tunnel packets fragmented outside, joined again (passive/capture/defrag.py and its twin in _scan.c): the bounds
hold, and the compiled scanner and the Python one join the same pieces into the same packets, whatever order,
repetition, overlap, damage or delay the pieces come with, in every-port and port mode, in whole batches and in
batches of one packet (a joined packet whose admission waits for a verdict)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import GRE, Ether
from scapy.packet import Packet, Raw

import passive.capture.scanner as scanning
from passive.capture import defrag, linklayer, pcapfile, scanread, tunnels
from passive.capture.defrag import FRAGMENT_TIMEOUT, MAX_DATAGRAMS, MAX_PIECES, Defragmenter
from passive.capture.libpcap import libpcap_available
from passive.capture.linklayer import decode_tcp
from tests.helpers_capture import pcap_bytes, write
from tests.test_scanner import assert_same, run
from tests.test_tunnel_edges import _session

MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
OUTER4 = {"src": "192.0.2.1", "dst": "192.0.2.2"}
OUTER6 = {"src": "2001:db8::1", "dst": "2001:db8::2"}


def _pieces4(packet: Packet, ident: int, size: int) -> list[bytes]:
    """``packet`` in GRE over IPv4, cut into pieces of ``size`` bytes (a multiple of 8), as frames."""
    outer = IP(**OUTER4, id=ident, proto=47) / GRE(proto=0x0800) / packet
    payload = bytes(outer[GRE])
    frames = []
    for start in range(0, len(payload), size):
        more = start + size < len(payload)
        piece = IP(**OUTER4, id=ident, proto=47, flags="MF" if more else 0, frag=start // 8)
        frames.append(bytes(Ether(**MAC) / piece / Raw(payload[start : start + size])))
    return frames


def _pieces6(packet: Packet, ident: int, size: int) -> list[bytes]:
    payload = bytes(GRE(proto=0x0800) / packet)
    frames = []
    for start in range(0, len(payload), size):
        more = start + size < len(payload)
        header = IPv6ExtHdrFragment(nh=47, id=ident, offset=start // 8, m=int(more))
        frames.append(bytes(Ether(**MAC) / IPv6(**OUTER6) / header / Raw(payload[start : start + size])))
    return frames


def test_bounds_of_the_defragmenter() -> None:
    packet = _session(4)[11][1]  # the client's NTLM NEGOTIATE
    whole = Defragmenter()
    pieces = _pieces4(packet, 1, 64)
    joined = [whole.add(1, p, 0.0) for p in pieces]
    assert all(j is None for j in joined[:-1]) and joined[-1] is not None
    segment = decode_tcp(1, joined[-1])
    assert isinstance(segment, tuple) and segment[7] == bytes(packet[TCP].payload)
    assert whole.add(1, pieces[-1], 0.0) is None  # its datagram is done: a lone last piece completes nothing
    late = Defragmenter()
    late.add(1, pieces[0], 0.0)
    assert all(late.add(1, p, FRAGMENT_TIMEOUT + 1.0) is None for p in pieces[1:])  # the first piece expired
    crowded = Defragmenter()
    for ident in range(MAX_DATAGRAMS + 1):  # one more datagram than held: the oldest (ident 0) is dropped
        crowded.add(1, _pieces4(packet, ident, 64)[0], 0.0)
    assert [crowded.add(1, p, 0.0) for p in _pieces4(packet, 1, 64)[1:]][-1] is not None
    assert [crowded.add(1, p, 0.0) for p in _pieces4(packet, 0, 64)[1:]][-1] is None
    big = IP(src="10.99.0.10", dst="10.99.0.1") / TCP(sport=41000, dport=25, flags="PA") / Raw(b"x" * 1000)
    many = _pieces4(big, 3, 8)
    assert len(many) > MAX_PIECES
    chopped = Defragmenter()
    assert all(chopped.add(1, p, 0.0) is None for p in many)
    assert Defragmenter().add(1, _pieces4(big, 4, 8)[0][:-4], 0.0) is None  # not the last, not a multiple of 8


def _scenario(rng: random.Random, packets: list[Packet]) -> list[tuple[float, bytes]]:
    """The packets, each whole or cut into pieces, the pieces shuffled, repeated, shifted over each other, cut short,
    lost, delayed past the timeout, their ids reused; some pieces of other datagrams in between."""
    frames: list[tuple[float, bytes]] = []
    clock = 1_800_000_000.0
    for number, packet in enumerate(packets):
        clock += rng.choice([0.001, 0.01, 0.5, FRAGMENT_TIMEOUT + 1]) if rng.random() < 0.1 else 0.001
        if rng.random() < 0.2:
            frames.append((clock, bytes(Ether(**MAC) / IP(**OUTER4) / GRE(proto=0x0800) / packet)))
            continue
        ident = rng.choice([number, number % 3])  # ids reused now and then
        cut = _pieces4 if rng.random() < 0.6 else _pieces6
        pieces = cut(packet, ident, rng.choice([8, 16, 48, 96, 200]))
        trick = rng.random()
        if trick < 0.15:
            rng.shuffle(pieces)
        elif trick < 0.25:
            pieces.insert(rng.randrange(len(pieces)), rng.choice(pieces))
        elif trick < 0.35 and len(pieces) > 1:
            del pieces[rng.randrange(len(pieces))]
        elif trick < 0.45:
            index = rng.randrange(len(pieces))
            piece = bytearray(pieces[index])
            piece[rng.randrange(14, len(piece))] = rng.randrange(256)  # a header or payload byte changed
            pieces[index] = bytes(piece)
        elif trick < 0.5:
            index = rng.randrange(len(pieces))
            pieces[index] = pieces[index][: rng.randrange(14, len(pieces[index]) + 1)]
        for piece in pieces:
            clock += 0.0001
            frames.append((clock, piece))
    return frames


def _write(path: Path, frames: list[tuple[float, bytes]]) -> Path:
    return write(path, pcap_bytes([(ts, Ether(frame)) for ts, frame in frames]))


@pytest.mark.skipif(not scanread.native_available(), reason="the compiled scanner is not built")
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("every_port", [True, False], ids=["every-port", "ports-only"])
def test_both_scanners_join_the_same_pieces(
    seed: int, every_port: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    session = [packet for _ts, packet in _session(4)]
    moved = [packet.copy() for packet in session]  # the same session on a port only its head tells
    for packet in moved:
        tcp = packet[TCP]
        tcp.sport, tcp.dport = (2626 if tcp.sport == 25 else tcp.sport), (2626 if tcp.dport == 25 else tcp.dport)
        del tcp.chksum
    path = _write(tmp_path / f"pieces-{seed}.pcap", _scenario(rng, session + moved))
    compiled = run(path, "auto", monkeypatch, all_ports=every_port)
    python = run(path, "python", monkeypatch, all_ports=every_port)
    assert_same(compiled, python)
    assert compiled["counts"]["segments"] > 0
    whole = run(path, "auto", monkeypatch, all_ports=every_port, skip_unread=False)
    monkeypatch.setattr(scanning, "BATCH_PACKETS", 1)
    for backend in ("auto", "python"):
        small = run(path, backend, monkeypatch, all_ports=every_port, skip_unread=False)
        assert small["items"] == whole["items"]
        assert small["findings"] == whole["findings"]


@pytest.mark.skipif(not scanread.native_available(), reason="the compiled scanner is not built")
def test_the_compiled_limits_of_joining_and_peeling_are_the_twins() -> None:
    """_scan.c writes each limit of the decoder and the defragmenter again: the values it was built with are the
    Python ones (a limit changed on one side alone would make the scanners admit different packets)."""
    compiled = scanread._cscan
    twins = {
        "MAX_DATAGRAMS": MAX_DATAGRAMS,
        "MAX_PIECES": MAX_PIECES,
        "FRAGMENT_TIMEOUT": FRAGMENT_TIMEOUT,
        "FRAGMENT_TIMEOUT_V6": defrag.FRAGMENT_TIMEOUT_V6,
        "MAX_DATAGRAM": defrag.MAX_DATAGRAM,
        "MAX_LINK_HEADER": defrag._MAX_LINK_HEADER,
        "MAX_DEPTH": tunnels.MAX_DEPTH,
        "MAX_LABELS": tunnels.MAX_LABELS,
        "MAX_VLAN_TAGS": linklayer.MAX_VLAN_TAGS,
        "MAX_SCAN_FLOWS": scanning.MAX_SCAN_FLOWS,
        "MAX_SERVERS": scanning.MAX_SERVERS,
        "MAX_RECORD": pcapfile.MAX_RECORD,
    }
    for name, value in twins.items():
        assert getattr(compiled, name) == value, name


@pytest.mark.parametrize("backend", ["auto", "python", "libpcap"])
def test_a_mirror_that_hands_every_piece_over_twice_leaves_no_fragment_unread(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SPAN of both directions copies every frame: each piece of a fragmented tunnel packet comes twice, the last
    one after its datagram was joined. The copies are no fragments left unread (no "not everything was read"),
    and the session reads as the capture without copies does; a piece with other bytes under a joined datagram's
    id is a new datagram, not a copy."""
    if backend == "libpcap" and not libpcap_available():
        pytest.skip("needs libpcap")
    frames, twice = [], []
    clock = 1_800_000_000.0
    for number, (_ts, packet) in enumerate(_session(4)):
        clock += 0.001
        for piece in _pieces4(packet, number, 96):
            frames.append((clock, piece))
            twice += [(clock, piece), (clock + 0.0001, piece)]
    once = run(_write(tmp_path / "once.pcap", frames), backend, monkeypatch)
    doubled = run(_write(tmp_path / "twice.pcap", twice), backend, monkeypatch)
    assert once["counts"]["ip_fragments"] == 0 and doubled["counts"]["ip_fragments"] == 0
    assert _facts(doubled["findings"]) == _facts(once["findings"]) and once["findings"]  # frames are numbered apart
    reuse = Defragmenter()
    pieces = _pieces4(_session(4)[11][1], 7, 64)
    assert [reuse.add(1, p, 0.0) for p in pieces][-1] is not None
    assert reuse.add(1, pieces[0], 0.0) is None and reuse.copy  # a copy of a joined piece
    other = bytearray(pieces[0])
    other[-1] ^= 0xFF  # the id reused by another packet: begun anew, not a copy
    assert reuse.add(1, bytes(other), 0.0) is None and not reuse.copy


def _facts(findings: list[dict]) -> list[dict]:
    """Findings without what depends on frame numbers and times."""
    moving = {"evidence", "details", "first_seen", "last_seen", "id", "attempts"}
    return [{k: v for k, v in f.items() if k not in moving} for f in findings]


def _right(packet: Packet) -> Packet:
    """``packet`` with its checksums computed (the shipped session's were left to the card)."""
    packet = packet.copy()
    if packet.version == 4:
        del packet.chksum
    del packet[TCP].chksum
    return packet


def _cut_plain(packet: Packet, ident: int, size: int, header: str) -> list[bytes]:
    """``packet`` (IPv4 or IPv6 with TCP inside) cut on its way into pieces of ``size`` bytes, as frames; the IPv4
    pieces' header checksums ``right``, ``zero`` or ``wrong``."""
    if packet.version == 6:
        whole = Ether(**MAC) / IPv6(src=packet.src, dst=packet.dst) / IPv6ExtHdrFragment(id=ident) / packet[TCP]
        # fragment6's size counts the headers: pieces of 24 bytes at least, the first holding the TCP header whole
        return [bytes(piece) for piece in fragment6(whole, max(size, 24) + 64)]
    packet = packet.copy()
    packet.id, packet.flags = ident, 0
    frames = [bytearray(bytes(Ether(**MAC) / piece)) for piece in fragment(packet, size)]
    for frame in frames if header != "right" else []:
        frame[24:26] = b"\x00\x00" if header == "zero" else b"\xbe\xef"
    return [bytes(frame) for frame in frames]


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("backend", ["auto", "python", "libpcap"])
def test_a_session_whose_every_segment_was_cut_on_its_way_reads_as_the_session_whole(
    version: int, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every segment of a session in pieces, some in reverse order, a data segment's IPv4 pieces with header
    checksums zero (a sending host's card fills them in) or wrong (a capture edited without fixing them) now and
    then: the pieces are joined (in every reader, both scanners alike), and their segments' checksums judged as a
    whole segment's: one whose pieces' header checksums were wrong or zero is the only copy of its bytes, held until
    acknowledged and read."""
    if backend == "libpcap" and not libpcap_available():
        pytest.skip("needs libpcap")
    session = [(ts, packet.__class__(bytes(_right(packet)))) for ts, packet in _session(version)]
    whole = _write(tmp_path / "whole.pcap", [(ts, bytes(Ether(**MAC) / packet)) for ts, packet in session])
    frames = []
    for number, (ts, packet) in enumerate(session):
        data = len(packet[TCP].payload) > 0  # a bare ACK, a SYN or FIN with a wrong checksum is dropped at once
        pieces = _cut_plain(packet, number, 16, ("right", "zero", "wrong")[number % 3] if data else "right")
        frames += [(ts, piece) for piece in (pieces[::-1] if number % 2 else pieces)]
    assert len(frames) > 3 * len(session)
    cut = _write(tmp_path / "cut.pcap", frames)
    expected = run(whole, backend, monkeypatch)
    got = run(cut, backend, monkeypatch)
    assert got["counts"]["ip_fragments"] == 0 and got["counts"]["segments"] == expected["counts"]["segments"]
    assert _facts(got["findings"]) == _facts(expected["findings"]) and expected["findings"]
    if backend == "auto":
        assert_same(got, run(cut, "python", monkeypatch))
    assert got["counts"]["checksum_drops"] == 0  # held and read: nothing else brought those bytes


def _raw4(packet: Packet, pieces: list[tuple[int, int, bool]], ident: int = 9) -> list[bytes]:
    """Frames of ``packet``'s IP payload cut as ``pieces`` says: (start, end, more follow) in bytes, any size."""
    payload = bytes(packet[IP].payload)
    frames = []
    for start, end, more in pieces:
        piece = IP(src=packet[IP].src, dst=packet[IP].dst, id=ident, proto=6, flags="MF" if more else 0)
        piece.frag = start // 8
        frames.append(bytes(Ether(**MAC) / piece / Raw(payload[start:end])))
    return frames


def _joined(frames: list[bytes], times: list[float] | None = None) -> bytes | None:
    joiner = Defragmenter()
    last = None
    for index, frame in enumerate(frames):
        last = joiner.add(1, frame, times[index] if times else 0.0) or last
    return last


LINUX_RULES = {
    # A piece not the last and not a multiple of 8 long is cut to one; the next piece brings the rest.
    "odd piece cut": ([(0, 20, True), (16, 48, True), (48, 64, False)], True),
    # A piece within one held piece, or within a run of adjacent ones, is a duplicate: ignored.
    "inside one piece": ([(0, 16, True), (0, 8, True), (16, 64, False)], True),
    "inside a run": ([(0, 16, True), (16, 32, True), (8, 24, True), (32, 64, False)], True),
    # Across two runs, or past the end of everything held while starting inside it: an overlap, the datagram goes.
    "across runs": ([(0, 16, True), (32, 48, True), (8, 40, True), (16, 32, True), (48, 64, False)], False),
    "past the tail": ([(0, 16, True), (8, 24, True), (16, 64, False)], False),
    # An empty piece ends its datagram.
    "empty piece": ([(0, 16, True), (16, 16, True), (16, 64, False)], False),
}


@pytest.mark.parametrize("case", list(LINUX_RULES))
def test_pieces_are_taken_as_linux_takes_them(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux 5.1 and later (``ip_frag_queue``, ``inet_frag_queue_insert``): what a receiver joins is joined, what it
    drops is dropped; both scanners alike."""
    cuts, joins = LINUX_RULES[case]
    packet = _right(
        IP(src="10.99.0.10", dst="10.99.0.1") / TCP(sport=41000, dport=25, flags="PA", seq=1) / Raw(b"x" * 44)
    )
    assert len(packet[IP].payload) == 64
    frames = _raw4(packet, cuts)
    joined = _joined(frames)
    assert (joined is not None) == joins
    if joined is not None:
        assert Ether(joined)[IP].payload.load == packet[Raw].load
    if scanread.native_available():
        path = _write(tmp_path / "rules.pcap", [(1_800_000_000.0 + i, frame) for i, frame in enumerate(frames)])
        assert_same(run(path, "auto", monkeypatch), run(path, "python", monkeypatch))


def test_ipv6_takes_longer_and_an_atomic_fragment_is_a_whole_packet() -> None:
    packet = IPv6(src="2001:db8::10", dst="2001:db8::1") / TCP(sport=41000, dport=25, flags="PA") / Raw(b"y" * 200)
    pieces = _cut_plain(packet, 5, 64, "right")
    assert len(pieces) > 2
    late = FRAGMENT_TIMEOUT + 15.0  # past IPv4's 30 s, within IPv6's 60 s (Linux's ip6frag_time)
    assert _joined(pieces, [0.0] * (len(pieces) - 1) + [late]) is not None
    assert _joined(pieces, [0.0] * (len(pieces) - 1) + [defrag.FRAGMENT_TIMEOUT_V6 + 1.0]) is None
    atomic = bytes(Ether(**MAC) / IPv6(src=packet.src, dst=packet.dst) / IPv6ExtHdrFragment(id=5) / packet[TCP])
    assert not defrag.is_piece(1, atomic)  # RFC 6946: read as a packet, and the datagram being joined is left alone
    assert _joined([*pieces[:-1], atomic, pieces[-1]]) is not None


def _piece4(packet: Packet, offset: int, data: bytes, more: bool, ident: int = 9) -> bytes:
    piece = IP(src=packet[IP].src, dst=packet[IP].dst, id=ident, proto=6, flags="MF" if more else 0, frag=offset // 8)
    return bytes(Ether(**MAC) / piece / Raw(data))


def _piece6(packet: Packet, offset: int, data: bytes, more: bool, ident: int = 9) -> bytes:
    fragment_header = IPv6ExtHdrFragment(id=ident, offset=offset // 8, m=int(more), nh=6)
    return bytes(Ether(**MAC) / IPv6(src=packet.src, dst=packet.dst) / fragment_header / Raw(data))


@pytest.mark.parametrize("version", [4, 6])
def test_a_piece_past_65535_bytes_spoils_an_ipv4_datagram_and_is_ignored_in_ipv6(
    version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux takes an IPv4 piece ending past 65 535 bytes: its datagram can never be whole, and its last piece ends
    it (a decoy cut after such a piece is never read). IPv6 ignores the piece and joins the rest."""
    inner = TCP(sport=41000, dport=25, flags="PA", seq=1) / Raw(b"z" * 44)
    if version == 4:
        packet = _right(IP(src="10.99.0.10", dst="10.99.0.1") / inner)
        whole, cut = bytes(packet[IP].payload), _piece4
    else:
        packet = IPv6(src="2001:db8::10", dst="2001:db8::1") / inner
        packet = IPv6(bytes(packet))
        whole, cut = bytes(packet[TCP]), _piece6
    frames = [cut(packet, 0, whole[:32], True), cut(packet, 32, whole[32:], False)]
    frames.insert(0 if version == 4 else 1, cut(packet, 65528, b"o" * 16, True))  # before the pieces, or among them
    joined = _joined(frames)
    assert (joined is None) if version == 4 else (joined is not None and bytes(Ether(joined)[TCP]) == whole)
    if scanread.native_available():
        path = _write(tmp_path / "over.pcap", [(1_800_000_000.0 + i, frame) for i, frame in enumerate(frames)])
        assert_same(run(path, "auto", monkeypatch), run(path, "python", monkeypatch))


def test_an_ipv6_first_piece_without_its_tcp_header_whole_is_ignored() -> None:
    """RFC 8200 section 4.5 (Linux's ipv6frag_thdr_truncated): the receiver drops a first piece shorter than the TCP
    header, and joins the datagram once a first piece that holds it comes."""
    packet = IPv6(bytes(IPv6(src="2001:db8::10", dst="2001:db8::1") / TCP(sport=41000, dport=25) / Raw(b"q" * 40)))
    whole = bytes(packet[TCP])
    short = _piece6(packet, 0, whole[:16], True)
    rest = _piece6(packet, 16, whole[16:], False)
    assert _joined([short, rest]) is None
    assert _joined([short, _piece6(packet, 0, whole[:24], True), _piece6(packet, 24, whole[24:], False)]) is not None
