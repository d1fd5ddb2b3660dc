"""What real capture points hand over beyond the basic encapsulations of test_tunnels.py: a real SMTP AUTH NTLM
session (pcaps/smtp-ntlm-success-curl.pcap) inside GRE with its optional fields, ERSPAN III with its platform
sub-header, Geneve with options and IP inside, MPLS stacks and Ethernet pseudowires, PPPoE, IP in IP of either
version, tunnels inside tunnels and Linux cooked captures of VLAN-tagged frames; VXLAN on Linux's port 8472, MPLS
over UDP and MPLS in IP. Each is found with the inner server and counted per kind, by both scanners, and tshark
decodes the same file to the same server. Damaged encapsulation headers are counted as decode errors (never dropped
unnamed) and never stop the session beside them."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.erspan import ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import GRE, GRE_PPTP, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw
from scapy.utils import rdpcap

from dissectors.registry import MAIL_PORTS
from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from passive.capture import scanread
from passive.capture.bpf import build_bpf_filter
from passive.capture.libpcap import libpcap_available
from passive.capture.linklayer import MALFORMED, MAX_VLAN_TAGS, NOT_TCP, decode_tcp
from passive.results.records import finding_record
from tests.helpers_capture import pcap_bytes, sll, sll2, write

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "pcaps" / "smtp-ntlm-success-curl.pcap"
SERVER = {4: "10.99.0.1", 6: "2001:db8:99::1"}
V6 = {"10.99.0.10": "2001:db8:99::10", "10.99.0.1": "2001:db8:99::1"}
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
VMWARE = {"dst": "00:50:56:aa:bb:cc", "src": "00:0c:29:11:22:33"}  # a first nibble of 0, like a control word's
OUTER4 = {"src": "192.0.2.1", "dst": "192.0.2.2"}
OUTER6 = {"src": "2001:db8::1", "dst": "2001:db8::2"}


def _session(version: int) -> list[tuple[float, Packet]]:
    """The shipped session's IP packets (time, packet), as IPv4 or moved to IPv6."""
    packets = []
    for frame in rdpcap(str(SOURCE)):
        ip = frame[IP]
        if version == 6:
            segment = ip[TCP].copy()
            del segment.chksum
            ip = IPv6(src=V6[ip.src], dst=V6[ip.dst]) / segment
        packets.append((float(frame.time), ip.copy()))
    return packets


def _eth(**fields: int) -> Ether:
    return Ether(**MAC, **fields)


def _labels(count: int) -> Packet:
    stack = MPLS(label=100, s=int(count == 1), ttl=64)
    for index in range(1, count):
        stack = stack / MPLS(label=100 + index, s=int(index == count - 1), ttl=64)
    return stack


def _gpe(next_protocol: int) -> Raw:
    """A VXLAN-GPE header (draft-ietf-nvo3-vxlan-gpe): I and P flags, the next protocol (1 IPv4, 3 Ethernet), VNI."""
    return Raw(bytes([0x0C, 0, 0, next_protocol, 0, 0, 42, 0]))


Wrap = Callable[[Packet], Packet]
# name: (link type, inner IP version, wrap, the tunnel kinds each packet is counted in)
CARRIERS: dict[str, tuple[int, int, Wrap, tuple[str, ...]]] = {
    "gre-checksum": (1, 4, lambda p: _eth() / IP(**OUTER4) / GRE(proto=0x0800, chksum_present=1) / p, ("gre",)),
    "gre-key-sequence": (
        1,
        4,
        lambda p: _eth() / IP(**OUTER4) / GRE(proto=0x0800, key_present=1, key=7, seqnum_present=1) / p,
        ("gre",),
    ),
    "gre-all-flags-ipv6": (
        1,
        6,
        lambda p: _eth() / IPv6(**OUTER6) / GRE(proto=0x86DD, chksum_present=1, key_present=1, seqnum_present=1) / p,
        ("gre",),
    ),
    "pptp": (
        1,
        4,
        lambda p: (
            _eth()
            / IP(**OUTER4)
            / GRE_PPTP(seqnum_present=1, sequence_number=3, acknum_present=1, ack_number=2, call_id=5)
            / PPP(proto=0x0021)
            / p
        ),
        ("gre",),
    ),
    "pptp-compressed-ppp-ipv6": (  # no address and control field, a one-byte protocol (RFC 1661 ACFC, PFC)
        1,
        6,
        lambda p: _eth() / IP(**OUTER4) / GRE_PPTP(call_id=5) / Raw(b"\x57") / p,
        ("gre",),
    ),
    "erspan-iii-platform": (
        1,
        4,
        lambda p: (
            _eth()
            / IP(**OUTER4)
            / GRE(proto=0x22EB, seqnum_present=1)
            / ERSPAN_III(session_id=3, o=1)
            / ERSPAN_PlatformSpecific(platf_id=3)
            / _eth()
            / Dot1Q(vlan=20)
            / p
        ),
        ("erspan",),
    ),
    "geneve-options-ipv4": (
        1,
        4,
        lambda p: (
            _eth()
            / IP(**OUTER4)
            / UDP(sport=50000, dport=6081)
            / GENEVE(proto=0x0800, vni=7, options=GeneveOptions(classid=0x0102, type=0x80, data=b"\x00" * 8))
            / p
        ),
        ("geneve",),
    ),
    "geneve-options-ipv6": (
        1,
        6,
        lambda p: (
            _eth()
            / IP(**OUTER4)
            / UDP(sport=50000, dport=6081)
            / GENEVE(proto=0x86DD, vni=7, options=GeneveOptions(classid=0x0102, type=0x80, data=b"\x00" * 4))
            / p
        ),
        ("geneve",),
    ),
    "mpls-1-label": (1, 4, lambda p: _eth(type=0x8847) / _labels(1) / p, ("mpls",)),
    "mpls-4-labels-ipv6": (1, 6, lambda p: _eth(type=0x8847) / _labels(4) / p, ("mpls",)),
    "mpls-pw-control-word": (
        1,
        4,
        lambda p: _eth(type=0x8847) / _labels(2) / Raw(b"\x00\x00\x00\x00") / Ether(**VMWARE) / p,
        ("mpls",),
    ),
    "mpls-pw-no-control-word": (1, 4, lambda p: _eth(type=0x8847) / _labels(2) / Ether(**VMWARE) / p, ("mpls",)),
    "mpls-in-gre": (1, 6, lambda p: _eth() / IP(**OUTER4) / GRE(proto=0x8847) / _labels(3) / p, ("gre", "mpls")),
    "pppoe-ipv6": (1, 6, lambda p: _eth() / PPPoE(sessionid=5) / PPP(proto=0x0057) / p, ("pppoe",)),
    "qinq-pppoe": (
        1,
        4,
        lambda p: _eth() / Dot1AD(vlan=100) / Dot1Q(vlan=200) / PPPoE(sessionid=5) / PPP(proto=0x0021) / p,
        ("pppoe",),
    ),
    "vlan-0-priority": (1, 6, lambda p: _eth() / Dot1Q(vlan=0, prio=5) / p, ()),
    "qinq-and-port-tag": (
        1,
        4,
        lambda p: _eth() / Dot1Q(vlan=7, type=0x88A8) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / p,
        (),
    ),
    "6in4": (1, 6, lambda p: _eth() / IP(**OUTER4) / p, ("ip-in-ip",)),
    "4in6": (1, 4, lambda p: _eth() / IPv6(**OUTER6) / p, ("ip-in-ip",)),
    "6in6": (1, 6, lambda p: _eth() / IPv6(**OUTER6) / p, ("ip-in-ip",)),
    "vxlan-in-gre": (
        1,
        4,
        lambda p: (
            _eth()
            / IP(**OUTER4)
            / GRE(proto=0x0800, key_present=1, key=9)
            / IP(src="198.51.100.1", dst="198.51.100.2")
            / UDP(sport=50000, dport=4789)
            / VXLAN(vni=42)
            / _eth()
            / p
        ),
        ("gre", "vxlan"),
    ),
    "vxlan-linux-port": (  # UDP 8472: the Linux kernel's default, flannel's
        1,
        4,
        lambda p: _eth() / IP(**OUTER4) / UDP(sport=50000, dport=8472) / VXLAN(vni=1) / _eth() / p,
        ("vxlan",),
    ),
    "mpls-over-udp": (1, 4, lambda p: _eth() / IP(**OUTER4) / UDP(sport=50000, dport=6635) / _labels(2) / p, ("mpls",)),
    "mpls-over-udp-ipv6": (
        1,
        6,
        lambda p: _eth() / IPv6(**OUTER6) / UDP(sport=50000, dport=6635) / _labels(1) / p,
        ("mpls",),
    ),
    "mpls-in-ip": (1, 4, lambda p: _eth() / IP(**OUTER4, proto=137) / _labels(1) / p, ("mpls",)),
    "mpls-in-ipv6": (1, 6, lambda p: _eth() / IPv6(**OUTER6, nh=137) / _labels(3) / p, ("mpls",)),
    "vxlan-gpe-ipv4": (1, 4, lambda p: _eth() / IP(**OUTER4) / UDP(sport=50000, dport=4790) / _gpe(1) / p, ("vxlan",)),
    "vxlan-gpe-ethernet": (
        1,
        6,
        lambda p: _eth() / IPv6(**OUTER6) / UDP(sport=50000, dport=4790) / _gpe(3) / _eth() / p,
        ("vxlan",),
    ),
    "sll-vlan": (113, 4, lambda p: sll(Dot1Q(vlan=5) / p, 0x8100), ()),
    "sll-mpls": (113, 4, lambda p: sll(_labels(2) / p, 0x8847), ("mpls",)),
    "sll2-pppoe": (276, 6, lambda p: sll2(PPPoE(sessionid=5) / PPP(proto=0x0057) / p, 0x8864), ("pppoe",)),
    "sll2-qinq-ipv6": (276, 6, lambda p: sll2(Dot1Q(vlan=5, type=0x8100) / Dot1Q(vlan=6) / p, 0x88A8), ()),
}


# tshark decodes UDP 8472 as VXLAN when told (its VXLAN dissector registers 4789 only).
TSHARK_DECODE_AS = {"vxlan-linux-port": ["-d", "udp.port==8472,vxlan"]}


def _capture(tmp_path: Path, name: str) -> Path:
    linktype, version, wrap, _kinds = CARRIERS[name]
    frames = [(ts, wrap(packet)) for ts, packet in _session(version)]
    return write(tmp_path / f"{name}.pcap", pcap_bytes(frames, linktype))


@pytest.mark.parametrize("name", sorted(CARRIERS))
@pytest.mark.parametrize("backend", ["auto", "python"])
def test_ntlm_inside_each_carrier_is_found_with_the_inner_server(tmp_path: Path, name: str, backend: str) -> None:
    _linktype, version, _wrap, kinds = CARRIERS[name]
    results = analyze_captures([str(_capture(tmp_path, name))], AnalysisOptions(backend=backend))
    records = [finding_record(f) for f in results.findings]
    server = SERVER[version]
    endpoint = f"[{server}]:25" if version == 6 else f"{server}:25"
    [ntlm] = [r for r in records if r["type"] == "ntlm-info"]
    assert ntlm["server"] == endpoint
    packets = len(_session(version))
    assert results.counters.segments == packets
    assert results.counters.tunnelled == dict.fromkeys(kinds, packets)
    assert results.counters.decode_errors == 0 and results.counters.gaps == 0


@pytest.mark.skipif(not libpcap_available(), reason="needs libpcap")
@pytest.mark.parametrize("name", sorted(name for name, carrier in CARRIERS.items() if carrier[0] != 1))
def test_libpcap_filter_passes_what_the_decoder_reads_in_cooked_captures(tmp_path: Path, name: str) -> None:
    """The libpcap reader's filter (and a live capture's on `any`) lets through the tagged, MPLS and PPPoE frames of
    Linux cooked captures that the decoder reads: BPF cannot see their ports, Python checks them."""
    _linktype, version, _wrap, kinds = CARRIERS[name]
    results = analyze_captures([str(_capture(tmp_path, name))], AnalysisOptions(backend="libpcap", all_ports=False))
    assert [f.server.rsplit(":", 1)[0].strip("[]") for f in results.findings if f.type.value == "ntlm-info"] == [
        SERVER[version]
    ]
    assert results.counters.tunnelled == dict.fromkeys(kinds, len(_session(version)))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("name", sorted(CARRIERS))
def test_tshark_finds_the_same_challenge_from_the_same_server(tmp_path: Path, name: str) -> None:
    """The oracle: tshark decodes the NTLM challenge of the same file, from the same (innermost) server address."""
    _linktype, version, _wrap, _kinds = CARRIERS[name]
    field = "ip.src" if version == 4 else "ipv6.src"
    out = subprocess.run(
        ["tshark", "-r", str(_capture(tmp_path, name)), *TSHARK_DECODE_AS.get(name, []), "-o", "smtp.decryption:TRUE",
         "-Y", "ntlmssp.messagetype == 2", "-T", "fields", "-e", field],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert [line.split(",")[-1] for line in out] == [SERVER[version]]


# -- damaged encapsulations ----------------------------------------------------------------------------------------

_DATA = bytes(_session(4)[11][1])  # the client's NTLM NEGOTIATE
_UDP = 17


def _ip(proto: int, payload: bytes) -> bytes:
    return bytes(_eth() / IP(**OUTER4, proto=proto) / Raw(payload))


def _udp(port: int, payload: bytes) -> bytes:
    return bytes(_eth() / IP(**OUTER4) / UDP(sport=50000, dport=port) / Raw(payload))


def _nested_gre(depth: int) -> bytes:
    packet: Packet = _session(4)[11][1]
    for _ in range(depth):
        packet = IP(**OUTER4) / GRE(proto=0x0800) / packet
    return bytes(_eth() / packet)


DAMAGED = {
    "gre-cut": _ip(47, b"\x00\x00"),
    "gre-key-past-the-end": _ip(47, b"\x20\x00\x08\x00\x00\x00"),
    "pptp-ack-past-the-end": _ip(47, b"\x30\x81\x88\x0b\x00\x10\x00\x05\x00\x00\x00\x01\x00"),
    "pptp-ppp-cut": _ip(47, b"\x30\x01\x88\x0b\x00\x02\x00\x05\x00\x00\x00\x01\xff\x03"),
    "erspan-ii-cut": _ip(47, b"\x10\x00\x88\xbe\x00\x00\x00\x01\x10\x00"),
    "erspan-iii-platform-cut": _ip(47, b"\x10\x00\x22\xeb\x00\x00\x00\x01" + bytes(ERSPAN_III(o=1)) + b"\x00" * 4),
    "vxlan-cut": _udp(4789, b"\x08\x00\x00"),
    "vxlan-linux-port-cut": _udp(8472, b"\x08\x00\x00\x00\x00\x00\x01"),
    "mpls-over-udp-cut": _udp(6635, b"\x00\x10"),
    "mpls-in-ip-no-bottom-of-stack": _ip(137, b"\x00\x10\x00\x40" * 2),
    "vxlan-gpe-cut": _udp(4790, b"\x0c\x00\x00\x01\x00"),
    "geneve-cut": _udp(6081, b"\x00\x00\x08"),
    "geneve-options-past-the-end": _udp(6081, bytes([0x3F, 0, 0x08, 0x00, 0, 0, 7, 0]) + _DATA[:100]),
    "mpls-cut-label": bytes(_eth(type=0x8847) / Raw(b"\x00\x10")),
    "mpls-no-bottom-of-stack": bytes(_eth(type=0x8847) / Raw(b"\x00\x10\x00\x40" * 3)),
    "mpls-17-labels": bytes(_eth(type=0x8847) / Raw(b"\x00\x10\x00\x40" * 16 + b"\x00\x10\x01\x40" + _DATA)),
    "mpls-nothing-below": bytes(_eth(type=0x8847) / Raw(b"\x00\x10\x01\x40")),
    "pppoe-cut": bytes(_eth(type=0x8864) / Raw(b"\x11\x00\x00\x05")),
    "gre-nested-past-the-limit": _nested_gre(6),
}
OTHER = {  # well-formed, carrying something else: not TCP, not damage
    "gre-unknown-protocol": _ip(47, b"\x00\x00\x12\x34" + _DATA),
    "gre-version-1-not-ppp": _ip(47, b"\x30\x01\x12\x34" + b"\x00" * 8 + _DATA),
    "pptp-acknowledgment-alone": _ip(47, b"\x20\x81\x88\x0b\x00\x00\x00\x05\x00\x00\x00\x01"),
    "pptp-mppe": _ip(47, b"\x30\x01\x88\x0b\x00\x10\x00\x05\x00\x00\x00\x01\xff\x03\x00\xfd" + _DATA[:12]),
    "vxlan-without-vni": _udp(4789, b"\x00" * 8 + bytes(_eth()) + _DATA),
    "vxlan-linux-port-without-vni": _udp(8472, b"\x00" * 8 + bytes(_eth()) + _DATA),
    "vxlan-gpe-nsh": _udp(4790, bytes([0x0C, 0, 0, 4, 0, 0, 42, 0]) + _DATA),
    "geneve-version-1": _udp(6081, bytes([0x40, 0, 0x08, 0x00, 0, 0, 7, 0]) + _DATA),
    "pppoe-lcp": bytes(_eth() / PPPoE(sessionid=5) / PPP(proto=0xC021) / Raw(b"\x01\x01\x00\x04")),
    "dns": _udp(53, b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_encapsulation_headers_are_malformed_in_both_decoders(name: str) -> None:
    assert decode_tcp(1, DAMAGED[name]) == MALFORMED
    if scanread.native_available():
        assert scanread._cscan.decode(1, DAMAGED[name]) == MALFORMED


@pytest.mark.parametrize("name", sorted(OTHER))
def test_encapsulations_of_something_else_are_not_tcp(name: str) -> None:
    assert decode_tcp(1, OTHER[name]) == NOT_TCP
    if scanread.native_available():
        assert scanread._cscan.decode(1, OTHER[name]) == NOT_TCP


@pytest.mark.parametrize("backend", ["auto", "python"])
def test_damaged_frames_are_counted_beside_an_intact_session(tmp_path: Path, backend: str) -> None:
    session = [(ts, _eth() / packet) for ts, packet in _session(4)]
    noise = list(DAMAGED.values()) + list(OTHER.values())
    frames = session[:5] + [(session[4][0], frame) for frame in noise] + session[5:]
    path = write(tmp_path / "damaged.pcap", pcap_bytes(frames))
    results = analyze_captures([str(path)], AnalysisOptions(backend=backend))
    assert results.counters.decode_errors == len(DAMAGED)
    assert results.counters.packets_read == len(session) + len(noise)
    assert [f.server for f in results.findings if f.type.value == "ntlm-info"] == [f"{SERVER[4]}:25"]


@pytest.mark.skipif(not libpcap_available(), reason="BPF expressions need libpcap")
@pytest.mark.parametrize("protochain", [True, False])
def test_the_port_filter_reaches_as_many_tags_as_the_decoder(protochain: bool) -> None:
    """libpcap's filter (files, and the kernel's on a live capture) passes mail under as many VLAN tags as the
    decoders peel, and no more."""
    import pcapy  # type: ignore[import-untyped]

    program = pcapy.compile(1, 262144, build_bpf_filter(MAIL_PORTS, protochain=protochain), 1, 0xFFFFFFFF)
    smtp = _session(4)[3][1]
    for tags in range(MAX_VLAN_TAGS + 2):
        frame = _eth()
        for vlan in range(tags):
            frame = frame / Dot1Q(vlan=vlan + 1)
        frame = frame / smtp
        assert bool(program.filter(bytes(frame))) == (tags <= MAX_VLAN_TAGS)
        assert isinstance(decode_tcp(1, bytes(frame)), tuple) == (tags <= MAX_VLAN_TAGS)


def _frames_to_damage() -> list[tuple[int, bytes]]:
    frames = [(1, frame) for frame in (*DAMAGED.values(), *OTHER.values())]
    for linktype, version, wrap, _kinds in CARRIERS.values():
        frames += [(linktype, bytes(wrap(packet))) for _ts, packet in _session(version)[3:6]]
    return frames


FRAMES_TO_DAMAGE = _frames_to_damage()


@pytest.mark.skipif(not scanread.native_available(), reason="the compiled scanner is not built")
@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(FRAMES_TO_DAMAGE), st.integers(0, 200), st.integers(0, 255), st.integers(0, 400))
def test_decoders_agree_on_every_carrier_damaged(frame: tuple[int, bytes], position: int, value: int, cut: int) -> None:
    """Each carrier above, with one byte changed and the frame cut anywhere: the same segment or status from the
    compiled decoder and the Python one."""
    linktype, data = frame
    damaged = bytearray(data)
    if position < len(damaged):
        damaged[position] = value
    damaged = damaged[:cut]
    assert scanread._cscan.decode(linktype, bytes(damaged)) == decode_tcp(linktype, bytes(damaged))


def _fragmented_outside(version: int) -> tuple[list[tuple[float, Packet]], int, int]:
    """The session in GRE, each tunnel packet longer than 200 bytes fragmented outside (over IPv4 or IPv6): the
    frames, how many of them are pieces, of how many packets."""
    frames, pieces, cut = [], 0, 0
    for number, (ts, packet) in enumerate(_session(4)):
        if version == 4:
            outer = IP(**OUTER4, id=7 + number) / GRE(proto=0x0800) / packet
            parts = fragment(outer, fragsize=96) if len(outer) > 200 else [outer]
        else:
            outer = IPv6(**OUTER6) / IPv6ExtHdrFragment(id=7 + number) / GRE(proto=0x0800) / packet
            parts = fragment6(outer, 200) if len(outer) > 240 else [IPv6(**OUTER6) / GRE(proto=0x0800) / packet]
        if len(parts) > 1:
            pieces, cut = pieces + len(parts), cut + 1
        frames += [(ts, _eth() / part) for part in parts]
    return frames, pieces, cut


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("backend", ["auto", "python", "libpcap", "libpcap-gzip-ports-only"])
def test_tunnel_packets_fragmented_outside_are_joined_again(tmp_path: Path, version: int, backend: str) -> None:
    """A tunnel endpoint fragments what its MTU cannot carry (over IPv4 or IPv6): the pieces are joined again
    (passive.capture.defrag), the NTLM challenge they carry is found, and pieces of a packet joined again are no
    fragments left unread (none is counted). Also when the libpcap backend hands a compressed file to the built-in
    reader, whose port filter passes the pieces as libpcap's does."""
    if backend.startswith("libpcap") and not libpcap_available():
        pytest.skip("needs libpcap")
    frames, _pieces, cut = _fragmented_outside(version)
    assert cut > 0
    path = write(tmp_path / "f.pcap", pcap_bytes(frames))
    options = AnalysisOptions(backend=backend)
    if backend == "libpcap-gzip-ports-only":
        path = write(tmp_path / "f.pcap.gz", gzip.compress(path.read_bytes()))
        options = AnalysisOptions(backend="libpcap", all_ports=False)
    results = analyze_captures([str(path)], options)
    counters = results.counters
    packets = len(_session(4))
    assert counters.ip_fragments == 0 and counters.decode_errors == 0
    assert counters.segments == packets and counters.tunnelled == {"gre": packets}
    assert counters.gaps == 0
    assert [f.server for f in results.findings if f.type.value == "ntlm-info"] == [f"{SERVER[4]}:25"]


def _reorder(frames: list[tuple[float, Packet]], how: str) -> list[tuple[float, Packet]]:
    """The pieces of each fragmented packet reversed, or each piece sent twice, or each one's first piece moved to
    overlap its second."""
    out: list[tuple[float, Packet]] = []
    groups: dict[tuple[str, int], list[tuple[float, Packet]]] = {}
    for ts, frame in frames:
        ip = frame.getlayer(IP)
        if ip is not None and (ip.flags.MF or ip.frag):
            groups.setdefault((ip.src, ip.id), []).append((ts, frame))
            if ip.flags.MF:
                continue
            group = groups.pop((ip.src, ip.id))
            if how == "reversed":
                out += group[::-1]
            elif how == "duplicated":
                out += [piece for piece in group for piece in (piece, piece)]
            else:  # overlapping: the second piece starts 8 bytes early, with other bytes
                ts2, second = group[1]
                moved = second.copy()
                moved[IP].frag -= 1
                moved[IP].proto = 47  # named: scapy would take it from the payload, which is now raw bytes
                moved[IP].remove_payload()
                moved = moved / Raw(b"X" * 8 + bytes(second[IP].payload))
                del moved[IP].len, moved[IP].chksum
                out += [group[0], (ts2, moved), *group[2:]]
            continue
        out.append((ts, frame))
    return out


@pytest.mark.parametrize("how", ["reversed", "duplicated", "overlapping"])
@pytest.mark.parametrize("backend", ["auto", "python"])
def test_pieces_out_of_order_twice_or_overlapping(tmp_path: Path, how: str, backend: str) -> None:
    """Pieces in reverse order and exact duplicates are joined as Linux joins them (and, joined, counted as no
    fragment); a piece overlapping another drops the whole packet (Linux since 4.19; RFC 5722 for IPv6): the bytes it
    carried are a gap, never a choice, and its pieces are fragments left unread."""
    frames, pieces, cut = _fragmented_outside(4)
    frames = _reorder(frames, how)
    results = analyze_captures([str(write(tmp_path / "f.pcap", pcap_bytes(frames)))], AnalysisOptions(backend=backend))
    counters = results.counters
    packets = len(_session(4))
    if how == "overlapping":
        assert counters.segments == packets - cut and counters.ip_fragments == pieces and counters.gaps > 0
    else:
        assert counters.segments == packets and counters.ip_fragments == 0
        assert [f.server for f in results.findings if f.type.value == "ntlm-info"] == [f"{SERVER[4]}:25"]
