"""The fanout program of ``watch --jobs`` (passive/capture/fanout_bpf.py), run by a classic BPF interpreter
(tests/cbpf.py) on the packets of each encapsulation the capture reads: both directions of a flow get one hash, and it
is the hash the same TCP flow gets outside any tunnel (so the program read the inner TCP header, not something else
both directions happen to share). The outer headers differ between directions as real tunnel endpoints make them:
each VXLAN/Geneve endpoint its own UDP source port, each GRE end its own key, each MPLS hop its own labels."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from passive.capture.fanout_bpf import flow_hash_program
from passive.capture.tunnels import MAX_LABELS
from tests import cbpf

PROGRAM = flow_hash_program()
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
V4 = ("10.1.2.3", "10.9.8.7")
V6 = ("2001:db8::10", "2001:db8:ff::25")
PORTS = (40123, 25)


def _tcp(version: int, forward: bool, ports: tuple[int, int] = PORTS, payload: bytes = b"") -> Packet:
    src, dst = V4 if version == 4 else V6
    sport, dport = ports
    if not forward:
        src, dst, sport, dport = dst, src, dport, sport
    ip = IP(src=src, dst=dst) if version == 4 else IPv6(src=src, dst=dst)
    packet = ip / TCP(sport=sport, dport=dport, flags="PA", seq=1000, ack=2000)
    return packet / Raw(payload) if payload else packet


def _hash(frame: Packet, sent: bool = False) -> int:
    """The program's return for an Ethernet frame as the kernel hands it over: its outermost VLAN tag taken off into
    the packet's metadata; received, the data starts at the network header; sent, at the link header."""
    data = bytes(frame)
    protocol, start = int.from_bytes(data[12:14], "big"), 14
    if protocol in (0x8100, 0x88A8):
        protocol, start = int.from_bytes(data[16:18], "big"), 18
    return cbpf.run(PROGRAM, data[start:], protocol, data[:start] if sent else None)


def _outer(forward: bool, version: int = 4) -> Packet:
    a, b = ("192.0.2.1", "192.0.2.2") if version == 4 else ("2001:db8:1::1", "2001:db8:2::2")
    src, dst = (a, b) if forward else (b, a)
    return Ether(**MAC) / (IP(src=src, dst=dst) if version == 4 else IPv6(src=src, dst=dst))


Wrap = Callable[[Packet, bool], Packet]
CARRIERS: dict[str, Wrap] = {
    "plain": lambda p, f: Ether(**MAC) / p,
    "vlan": lambda p, f: Ether(**MAC) / Dot1Q(vlan=10 if f else 20) / p,
    "qinq": lambda p, f: Ether(**MAC) / Dot1AD(vlan=5) / Dot1Q(vlan=10) / p,
    "vxlan": lambda p, f: _outer(f) / UDP(sport=50000 if f else 61234, dport=4789) / VXLAN(vni=7) / Ether(**MAC) / p,
    "vxlan-linux": lambda p, f: (
        _outer(f) / UDP(sport=33333 if f else 44444, dport=8472) / VXLAN(vni=7) / Ether(**MAC) / Dot1Q(vlan=3) / p
    ),
    "vxlan-over-ipv6": lambda p, f: (
        _outer(f, 6) / UDP(sport=50001 if f else 50002, dport=4789) / VXLAN(vni=7) / Ether(**MAC) / p
    ),
    "vxlan-gpe": lambda p, f: (
        _outer(f)
        / UDP(sport=40000 if f else 40001, dport=4790)
        / VXLAN(flags=0x0C, NextProtocol=1 if IP in p else 2, vni=9)
        / p
    ),
    "geneve": lambda p, f: (
        _outer(f)
        / UDP(sport=1111 if f else 2222, dport=6081)
        / GENEVE(vni=5, proto=0x6558, optionlen=2, options=b"\x01\x02\x03\x04\x00\x00\x00\x00")
        / Ether(**MAC)
        / p
    ),
    "geneve-ip": lambda p, f: (
        _outer(f) / UDP(sport=1111 if f else 2222, dport=6081) / GENEVE(vni=5, proto=0x0800 if IP in p else 0x86DD) / p
    ),
    "gre": lambda p, f: _outer(f) / GRE(proto=0x0800 if IP in p else 0x86DD) / p,
    "gre-keys": lambda p, f: (
        _outer(f)
        / GRE(proto=0x0800 if IP in p else 0x86DD, chksum_present=1, key_present=1, key=5 if f else 6, seqnum_present=1)
        / p
    ),
    "nvgre": lambda p, f: (
        _outer(f) / GRE(proto=0x6558, key_present=1, key=0x00123400 if f else 0x00123401) / Ether(**MAC) / p
    ),
    "erspan-i": lambda p, f: _outer(f) / GRE(proto=0x88BE) / Ether(**MAC) / p,
    "erspan-ii": lambda p, f: (
        _outer(f)
        / GRE(proto=0x88BE, seqnum_present=1, sequence_number=9 if f else 12)
        / ERSPAN_II(session_id=3)
        / Ether(**MAC)
        / p
    ),
    "erspan-iii": lambda p, f: (
        _outer(f) / GRE(proto=0x22EB, seqnum_present=1) / ERSPAN_III(session_id=3, o=0) / Ether(**MAC) / p
    ),
    "erspan-iii-platform": lambda p, f: (
        _outer(f)
        / GRE(proto=0x22EB, seqnum_present=1)
        / ERSPAN_III(session_id=3, o=1)
        / ERSPAN_PlatformSpecific()
        / Ether(**MAC)
        / p
    ),
    "ip-in-ip": lambda p, f: _outer(f) / p,
    "ip-in-ipv6": lambda p, f: _outer(f, 6) / p,
    "mpls": lambda p, f: Ether(**MAC, type=0x8847) / MPLS(label=100 if f else 200, s=0) / MPLS(label=7, s=1) / p,
    "pppoe": lambda p, f: Ether(**MAC) / PPPoE(sessionid=0x42) / PPP(proto=0x0021 if IP in p else 0x0057) / p,
}


def test_the_program_is_one_the_kernel_takes() -> None:
    cbpf.check(PROGRAM)


@pytest.mark.parametrize("sent", [False, True], ids=["received", "sent"])
@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("carrier", sorted(CARRIERS))
def test_both_directions_of_a_tunnelled_flow_hash_as_the_bare_flow(carrier: str, version: int, sent: bool) -> None:
    """Received or sent by the capturing host (its own sessions: one direction sent, the other received), every
    packet of the flow hashes as the bare flow received."""
    wrap = CARRIERS[carrier]
    bare = _hash(Ether(**MAC) / _tcp(version, True))
    assert bare != 0
    assert _hash(Ether(**MAC) / _tcp(version, False)) == bare
    for forward in (True, False):
        for payload in (b"", b"220 mail.example ESMTP\r\n"):
            assert _hash(wrap(_tcp(version, forward, payload=payload), forward), sent) == bare, (forward, payload)


@pytest.mark.parametrize("carrier", ["plain", "vxlan", "erspan-ii", "mpls"])
def test_flows_spread_over_members(carrier: str) -> None:
    """Flows that differ only in the client's port land on every member of a group of 2, 3 and 4, about evenly."""
    wrap = CARRIERS[carrier]
    hashes = [_hash(wrap(_tcp(4, True, (port, 25)), True)) for port in range(40000, 40400)]
    for members in (2, 3, 4):
        counts = [sum(1 for h in hashes if h % members == m) for m in range(members)]
        assert min(counts) >= 400 / members * 0.7, (members, counts)


def test_what_the_program_cannot_read_still_keeps_both_directions_together() -> None:
    """A fragment inside a tunnel (no ports in its later pieces), IPv6 extension headers before TCP, a tunnel's
    non-IP payload: hashed by the innermost addresses read, the same both ways. A packet cut short: the first
    member."""
    fragment = [_hash(CARRIERS["vxlan"](IP(src=s, dst=d, flags="MF") / UDP() / Raw(b"x" * 40), f))
                for s, d, f in ((V4[0], V4[1], True), (V4[1], V4[0], False))]  # fmt: skip
    assert fragment[0] == fragment[1] != 0
    from scapy.layers.inet6 import IPv6ExtHdrDestOpt

    extension = [
        _hash(Ether(**MAC) / IPv6(src=s, dst=d) / IPv6ExtHdrDestOpt() / TCP(sport=a, dport=b))
        for s, d, a, b in ((V6[0], V6[1], 40000, 25), (V6[1], V6[0], 25, 40000))
    ]
    assert extension[0] == extension[1] != 0
    mpls_udp = [
        _hash(_outer(f) / UDP(sport=50000 if f else 60000, dport=6635) / MPLS(label=16, s=1) / _tcp(4, f))
        for f in (True, False)
    ]
    assert mpls_udp[0] == mpls_udp[1] != 0
    arp_inside = [_hash(CARRIERS["vxlan"](Ether(**MAC, type=0x0806) / Raw(b"\x00" * 28), f)) for f in (True, False)]
    assert arp_inside[0] == arp_inside[1] != 0
    frame = bytes(CARRIERS["vxlan"](_tcp(4, True), True))
    assert cbpf.run(PROGRAM, frame[14:60], 0x0800) == 0


def test_label_stacks_of_different_depths_each_way_hash_as_the_bare_flow() -> None:
    """Each direction of an LSP has its own stack: one side may carry entropy labels or a bypass tunnel's label. A
    stack as deep as the capture reads (passive.capture.tunnels.MAX_LABELS) is skipped both ways; before, past 4
    labels the program gave up (the first member) while the other direction went by its TCP flow."""

    def stack(depth: int, packet: Packet) -> Packet:
        frame = Ether(**MAC, type=0x8847)
        for label in range(depth - 1):
            frame = frame / MPLS(label=100 + label, s=0)
        return frame / MPLS(label=7, s=1) / packet

    bare = _hash(Ether(**MAC) / _tcp(4, True))
    for depth in (1, 2, 5, 6, MAX_LABELS):
        assert _hash(stack(depth, _tcp(4, True))) == _hash(stack(2, _tcp(4, False))) == bare, depth
