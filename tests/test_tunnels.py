"""Mail inside the encapsulations a span port or capture point hands over: GRE, ERSPAN I/II/III, VXLAN, Geneve,
MPLS, IP in IP, PPPoE and 802.1ad, crafted with scapy, found as in a plain capture, counted per kind, and decoded
the way tshark decodes the same files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.contrib.geneve import GENEVE
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.utils import wrpcap

from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from passive.results.records import finding_record
from tests.corpus import require_corpus

MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
CLIENT, SERVER = "10.9.0.10", "10.9.0.25"
DIALOGUE = [
    ("s", b"220 mx.corp.example ESMTP Postfix\r\n"),
    ("c", b"EHLO client.example\r\n"),
    ("s", b"250-mx.corp.example\r\n250 AUTH PLAIN LOGIN\r\n"),
    ("c", b"AUTH PLAIN AGJvYgBUdW5uZWwtU2VjcmV0\r\n"),
    ("s", b"235 2.7.0 Authentication successful\r\n"),
    ("c", b"QUIT\r\n"),
    ("s", b"221 2.0.0 Bye\r\n"),
]


def _segments() -> list:
    """The SMTP session as IPv4/TCP packets, handshake and close included."""
    seq = {"c": 100, "s": 900}
    packets = []

    def segment(side: str, flags: str, payload: bytes = b"") -> None:
        other = "s" if side == "c" else "c"
        src, dst, sport, dport = (CLIENT, SERVER, 41000, 25) if side == "c" else (SERVER, CLIENT, 25, 41000)
        packet = IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq[side], ack=seq[other])
        packets.append(packet / payload if payload else packet)
        seq[side] += len(payload) + ("S" in flags or "F" in flags)

    segment("c", "S")
    segment("s", "SA")
    segment("c", "A")
    for side, data in DIALOGUE:
        segment(side, "PA", data)
    segment("c", "FA")
    segment("s", "FA")
    segment("c", "A")
    return packets


OUTER = {"src": "192.0.2.1", "dst": "192.0.2.2"}
WRAPS = {
    "gre": lambda p: Ether(**MAC) / IP(**OUTER) / GRE(proto=0x0800) / p,
    "gre-ethernet": lambda p: Ether(**MAC) / IP(**OUTER) / GRE(proto=0x6558) / Ether(**MAC) / p,
    "erspan-i": lambda p: Ether(**MAC) / IP(**OUTER) / GRE(proto=0x88BE) / Ether(**MAC) / p,
    "erspan-ii": lambda p: (
        Ether(**MAC) / IP(**OUTER) / GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_II() / Ether(**MAC) / p
    ),
    "erspan-iii": lambda p: (
        Ether(**MAC) / IP(**OUTER) / GRE(proto=0x22EB, seqnum_present=1) / ERSPAN_III() / Ether(**MAC) / p
    ),
    "vxlan": lambda p: Ether(**MAC) / IP(**OUTER) / UDP(sport=50000, dport=4789) / VXLAN(vni=42) / Ether(**MAC) / p,
    "geneve": lambda p: (
        Ether(**MAC)
        / IPv6(src="2001:db8::1", dst="2001:db8::2")
        / UDP(sport=50000, dport=6081)
        / GENEVE(proto=0x6558, vni=7)
        / Ether(**MAC)
        / p
    ),
    "mpls": lambda p: Ether(type=0x8847, **MAC) / MPLS(label=16, s=0) / MPLS(label=17, s=1) / p,
    "ip-in-ip": lambda p: Ether(**MAC) / IP(**OUTER) / p,
    "pppoe": lambda p: Ether(**MAC) / PPPoE(sessionid=5) / PPP(proto=0x0021) / p,
    "802.1ad": lambda p: Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / p,
}
COUNTED = {
    "gre": "gre",
    "gre-ethernet": "gre",
    "erspan-i": "erspan",
    "erspan-ii": "erspan",
    "erspan-iii": "erspan",
    "vxlan": "vxlan",
    "geneve": "geneve",
    "mpls": "mpls",
    "ip-in-ip": "ip-in-ip",
    "pppoe": "pppoe",
}


def _capture(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pcap"
    packets = []
    for number, packet in enumerate(_segments()):
        framed = WRAPS[kind](packet)
        framed.time = 1_800_000_000 + number * 0.01
        packets.append(framed)
    wrpcap(str(path), packets)
    return path


@pytest.mark.parametrize("kind", sorted(WRAPS))
@pytest.mark.parametrize("backend", ["auto", "python"])
def test_mail_inside_each_encapsulation_is_found_and_counted(tmp_path: Path, kind: str, backend: str) -> None:
    results = analyze_captures([str(_capture(tmp_path, kind))], AnalysisOptions(backend=backend))
    records = [finding_record(f) for f in results.findings]
    [credential] = [r for r in records if r["type"] == "cleartext-credentials"]
    assert (credential["server"], credential["user"], credential["outcome"]) == (f"{SERVER}:25", "bob", "success")
    assert results.counters.gaps == 0 and results.counters.decode_errors == 0
    if kind in COUNTED:
        assert results.counters.tunnelled == {COUNTED[kind]: len(_segments())}


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("kind", sorted(WRAPS))
def test_tshark_decodes_the_same_inner_packets(tmp_path: Path, kind: str) -> None:
    """The oracle: tshark, reading the same file, sees the same inner SMTP conversation at the same frames."""
    path = _capture(tmp_path, kind)
    fields = ["frame.number", "ip.src", "tcp.srcport", "tcp.dstport", "smtp.req.command"]
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "tcp.port == 25", "-T", "json", *(f"-e{f}" for f in fields)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shown = [packet["_source"]["layers"] for packet in json.loads(out)]
    assert len(shown) == len(_segments())
    commands = [c for layers in shown for c in layers.get("smtp.req.command", [])]
    assert commands == ["EHLO", "AUTH", "QUIT"]
    assert all(CLIENT in layers["ip.src"][-1:] or SERVER in layers["ip.src"][-1:] for layers in shown)


def test_erspan_corpus_capture_yields_its_http_ntlm() -> None:
    """zeek/erspan.pcap (despite its name GRE with transparent Ethernet bridging, as tshark decodes it) carries HTTP
    NTLM: its challenges are found, and the segments counted as GRE."""
    path = require_corpus("pcaps", "zeek", "erspan.pcap")
    results = analyze_captures([str(path)])
    assert results.counters.tunnelled.get("gre", 0) > 0
    assert any(f.type == "ntlm-info" for f in results.findings)
