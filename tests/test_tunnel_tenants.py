"""Tenants of an overlay reuse addresses: the virtual network a packet travels in (VXLAN or Geneve VNI; never a GRE
key, which each end or mirror direction may set apart) is part of its flow's identity. Two tenants' SMTP AUTH NTLM
sessions on the same inner 4-tuple, with the same sequence numbers, interleaved packet by packet, are reassembled
apart and give two findings with their own server names: by both scanners, on a named port and on a port only the
flow head tells (the scanners' flow tables), with message bodies dropped unread (their tables of such flows), in one
process and in two. The decoders agree on the virtual network of every carrier, and the libpcap reader counts
tunnelled segments as the scanner does."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from scapy.contrib.erspan import ERSPAN_II
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import GRE, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

import passive.capture.scanner as scanning
from dissectors import ntlmssp
from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from passive.capture import scanread
from passive.capture.libpcap import libpcap_available
from passive.capture.linklayer import INFO_VNET_SHIFT, decode_tcp
from passive.capture.tunnels import VNET_GENEVE, VNET_VXLAN, vnet_label
from passive.results.records import finding_record
from tests.corpus import require_corpus
from tests.helpers_capture import pcap_bytes, write
from tests.test_scanner import assert_same, run

MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
OUTER = {"src": "192.0.2.1", "dst": "192.0.2.2"}
CLIENT, SERVER = "10.0.0.10", "10.0.0.25"
TENANTS = {100: ("MAILA", "mail-a.tenant-a.example"), 200: ("MAILB", "mail-b.tenant-b.example")}
BODY = b"x" * 200 + b"\r\n"  # a line of a message body, one segment each


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _dialogue(computer: str, dns: str, body_segments: int) -> list[tuple[str, bytes]]:
    challenge = ntlmssp.build_challenge(
        b"\x01\x02\x03\x04\x05\x06\x07\x08",
        computer,
        {"netbios_computer": computer, "netbios_domain": "CORP", "dns_computer": dns},
    )
    authenticate = ntlmssp.build_authenticate("bob", "CORP", "WS1", lm_response=bytes(24), nt_response=bytes(24))
    return [
        ("s", f"220 {dns} ESMTP\r\n".encode()),
        ("c", b"EHLO ws1.example\r\n"),
        ("s", f"250-{dns}\r\n250 AUTH NTLM\r\n".encode()),
        ("c", b"AUTH NTLM " + _b64(ntlmssp.build_negotiate()) + b"\r\n"),
        ("s", b"334 " + _b64(challenge) + b"\r\n"),
        ("c", _b64(authenticate) + b"\r\n"),
        ("s", b"235 2.7.0 Authentication successful\r\n"),
        ("c", b"MAIL FROM:<bob@corp.example>\r\n"),
        ("s", b"250 ok\r\n"),
        ("c", b"RCPT TO:<alice@corp.example>\r\n"),
        ("s", b"250 ok\r\n"),
        ("c", b"DATA\r\n"),
        ("s", b"354 go ahead\r\n"),
        *(("c", BODY) for _ in range(body_segments)),
        ("c", b".\r\n"),
        ("s", b"250 queued\r\n"),
        ("c", b"QUIT\r\n"),
        ("s", b"221 bye\r\n"),
    ]


def _session(
    port: int, dialogue: list[tuple[str, bytes]], client: str = CLIENT, server: str = SERVER, client_port: int = 41000
) -> list[Packet]:
    """The session's IPv4 packets, handshake and close included; every tenant's has the same ports and ISNs."""
    seq = {"c": 1000, "s": 5000}
    packets = []

    def segment(side: str, flags: str, payload: bytes = b"") -> None:
        other = "s" if side == "c" else "c"
        src, dst, sport, dport = (
            (client, server, client_port, port) if side == "c" else (server, client, port, client_port)
        )
        packet = IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq[side], ack=seq[other])
        packets.append(packet / Raw(payload) if payload else packet)
        seq[side] += len(payload) + ("S" in flags or "F" in flags)

    segment("c", "S")
    segment("s", "SA")
    segment("c", "A")
    for side, data in dialogue:
        segment(side, "PA", data)
        segment("c" if side == "s" else "s", "A")
    segment("c", "FA")
    segment("s", "FA")
    segment("c", "A")
    return packets


def _vxlan(vni: int) -> Any:
    return lambda p: Ether(**MAC) / IP(**OUTER) / UDP(sport=50000, dport=4789) / VXLAN(vni=vni) / Ether(**MAC) / p


def _two_tenants(tmp_path: Path, port: int, body_segments: int = 0, wrap: Any = _vxlan) -> Path:
    """Both tenants' sessions, interleaved packet by packet (each packet of tenant 100, then the same of 200)."""
    sessions = [
        [wrap(vni)(p) for p in _session(port, _dialogue(*names, body_segments))] for vni, names in TENANTS.items()
    ]
    frames = []
    for number, pair in enumerate(zip(*sessions, strict=True)):
        frames += [(1_800_000_000 + number * 0.01, frame) for frame in pair]
    return write(tmp_path / f"tenants-{port}.pcap", pcap_bytes(frames))


def _ntlm_names(results: Any) -> list[tuple[str, str, str]]:
    records = [finding_record(f) for f in results.findings if f.type.value == "ntlm-info"]
    return sorted((r["server"], r["netbios_computer"], r["dns_computer"]) for r in records)


EXPECTED = [(f"{SERVER}:{{port}}", names[0], names[1]) for names in TENANTS.values()]


@pytest.mark.parametrize("port", [25, 2626])
@pytest.mark.parametrize("backend", ["auto", "python"])
def test_two_vxlan_tenants_on_one_4_tuple_give_two_findings(tmp_path: Path, port: int, backend: str) -> None:
    results = analyze_captures([str(_two_tenants(tmp_path, port))], AnalysisOptions(backend=backend))
    expected = [(server.format(port=port), computer, dns) for server, computer, dns in EXPECTED]
    assert _ntlm_names(results) == expected
    # Each record says its tenant's network, and their ids differ (the network is part of the identity).
    records = [finding_record(f) for f in results.findings]
    ntlm = sorted((r["network"], r["netbios_computer"]) for r in records if r["type"] == "ntlm-info")
    assert ntlm == [("vxlan-vni:100", "MAILA"), ("vxlan-vni:200", "MAILB")]
    assert len({r["id"] for r in records}) == len(records)
    counters = results.counters
    assert counters.flows == 2 and counters.gaps == 0 and counters.decode_errors == 0
    assert counters.tunnelled == {"vxlan": counters.segments}


@pytest.mark.parametrize("backend", ["auto", "python"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_tenants_bodies_are_dropped_unread_apart(tmp_path: Path, backend: str, jobs: int) -> None:
    """Each tenant's message body is dropped below Python on its own flow (the scanner's armed flows are keyed by
    virtual network too): both sessions still reach their end, and both findings keep their names."""
    path = _two_tenants(tmp_path, 2626, body_segments=300)
    results = analyze_captures([str(path)], AnalysisOptions(backend=backend, jobs=jobs))
    assert _ntlm_names(results) == [(server.format(port=2626), c, d) for server, c, d in EXPECTED]
    counters = results.counters
    assert counters.segments_skipped > 0 and counters.bytes_skipped > 0
    assert counters.gaps == 0 and counters.flows == 2
    sessions = results.analysis.stats.sessions["smtp"]
    assert sessions == 2


def test_same_tenant_twice_is_one_flow(tmp_path: Path) -> None:
    """The contrast: the same two sessions in one virtual network are one flow (the second a copy of the first's
    packets with other bytes, read as the same 4-tuple)."""
    path = _two_tenants(tmp_path, 25, wrap=lambda _vni: _vxlan(7))
    results = analyze_captures([str(path)], AnalysisOptions(backend="python"))
    assert results.counters.flows == 1


def _gre(key: int, protocol: int = 0x0800) -> Any:
    def wrap(p: Packet) -> Packet:
        inner = Ether(**MAC) / p if protocol == 0x6558 else p
        return Ether(**MAC) / IP(**OUTER) / GRE(proto=protocol, key_present=1, key=key) / inner

    return wrap


@pytest.mark.parametrize("backend", ["auto", "python"])
@pytest.mark.parametrize(
    ("keys", "protocol"),
    [((5, 6), 0x0800), ((0, 0x02000000), 0x6558), ((0x00123400, 0x00456700), 0x6558)],
    ids=["ikey-okey", "bridged-mirror", "bridged-nvgre-keys"],
)
def test_a_gre_tunnel_whose_ends_send_different_keys_is_one_session(
    tmp_path: Path, backend: str, keys: tuple[int, int], protocol: int
) -> None:
    """Linux's ``ip tunnel add ... ikey 5 okey 6``: each end sends its own key; a gretap mirror keys the client's frames
    0 and its server's 0x02000000 (zeek's erspan.pcap), which NVGRE would read as two virtual subnets. The session is
    whole, not two halves."""
    frames = [
        (1_800_000_000 + n * 0.01, _gre(keys[0] if p[IP].src == CLIENT else keys[1], protocol)(p))
        for n, p in enumerate(_session(2626, _dialogue(*TENANTS[100], 0)))
    ]
    path = write(tmp_path / "gre-keys.pcap", pcap_bytes(frames))
    results = analyze_captures([str(path)], AnalysisOptions(backend=backend))
    assert _ntlm_names(results) == [(f"{SERVER}:2626", *TENANTS[100])]
    assert results.counters.flows == 1 and results.counters.flows_partial == 0
    assert results.counters.flows_one_sided == 0
    assert all(finding.network is None for finding in results.findings)


INNER = _session(25, _dialogue("MAILA", "mail-a.example", 0))[5]
CARRIERS = {
    "vxlan": (_vxlan(0xABCDEF)(INNER), VNET_VXLAN | 0xABCDEF),
    "vxlan-linux-port": (
        Ether(**MAC) / IP(**OUTER) / UDP(sport=50000, dport=8472) / VXLAN(vni=42) / Ether(**MAC) / INNER,
        VNET_VXLAN | 42,
    ),
    "geneve": (
        Ether(**MAC) / IP(**OUTER) / UDP(sport=50000, dport=6081) / GENEVE(proto=0x0800, vni=7) / INNER,
        VNET_GENEVE | 7,
    ),
    "gre-key": (_gre(0xFFFFFFFF)(INNER), 0),  # a plain GRE key is no tenant's (each end may send its own)
    "nvgre": (_gre(0x00123456, 0x6558)(INNER), 0),  # keyed per direction by mirrors: no tenant's id either
    "gre-without-key": (Ether(**MAC) / IP(**OUTER) / GRE(proto=0x0800) / INNER, 0),
    "erspan-ii": (
        Ether(**MAC)
        / IP(**OUTER)
        / GRE(proto=0x88BE, seqnum_present=1)
        / ERSPAN_II(session_id=9)
        / Ether(**MAC)
        / INNER,
        0,
    ),
    "vxlan-in-nvgre": (_gre(5 << 8, 0x6558)(_vxlan(300)(INNER)[IP]), VNET_VXLAN | 300),  # the innermost wins
    "nvgre-in-vxlan": (_vxlan(300)(_gre(5 << 8, 0x6558)(INNER)[IP]), VNET_VXLAN | 300),  # the key names none
    "gre-key-in-vxlan": (_vxlan(300)(_gre(5)(INNER)[IP]), VNET_VXLAN | 300),  # a plain key names no network
}


@pytest.mark.parametrize("name", sorted(CARRIERS))
def test_the_virtual_network_is_read_alike_by_both_decoders(name: str) -> None:
    frame, vnet = CARRIERS[name]
    segment = decode_tcp(1, bytes(frame))
    assert isinstance(segment, tuple)
    assert segment[9] >> INFO_VNET_SHIFT == vnet
    assert (segment[0], segment[1], segment[3]) == (bytes([10, 0, 0, 10]), bytes([10, 0, 0, 25]), 25)
    if scanread.native_available():
        assert scanread._cscan.decode(1, bytes(frame)) == segment


def test_virtual_network_labels() -> None:
    assert vnet_label(VNET_VXLAN | 42) == ("vxlan-vni", 42)
    assert vnet_label(VNET_GENEVE) == ("geneve-vni", 0)
    assert vnet_label(0) == ()


@pytest.mark.skipif(not libpcap_available(), reason="needs libpcap")
def test_libpcap_reader_counts_tunnelled_segments_as_the_scanner(tmp_path: Path) -> None:
    """Port mode: the libpcap filter passes every tunnel packet whole (BPF cannot see the inner ports); only the
    segments on a mail port are counted as tunnelled, as the scanner counts those it admits. Beside the mail session
    in VXLAN, a database session in VXLAN and in GRE, and a mail segment's first fragment inside GRE."""
    mail = [_vxlan(100)(p) for p in _session(25, _dialogue("MAILA", "mail-a.example", 0))]
    db_session = _session(3306, [("s", b"J\x00\x00\x00\x0a8.0.36\x00"), ("c", b"\x00" * 32)])
    database = [_vxlan(100)(p) for p in db_session] + [
        Ether(**MAC) / IP(**OUTER) / GRE(proto=0x0800) / p for p in db_session
    ]
    fragment = IP(src=CLIENT, dst=SERVER, flags="MF") / TCP(sport=41001, dport=25, flags="PA") / Raw(b"HELO x\r\n")
    frames = [*mail, *database, Ether(**MAC) / IP(**OUTER) / GRE(proto=0x0800) / fragment]
    path = write(tmp_path / "mixed.pcap", pcap_bytes([(1_800_000_000 + i * 0.01, f) for i, f in enumerate(frames)]))
    counted = {}
    for backend in ("libpcap", "auto", "python"):
        results = analyze_captures([str(path)], AnalysisOptions(backend=backend, all_ports=False))
        counted[backend] = (results.counters.tunnelled, results.counters.segments, _ntlm_names(results))
    assert counted["libpcap"] == counted["auto"] == counted["python"]
    assert counted["libpcap"][0] == {"vxlan": len(mail)} and counted["libpcap"][1] == len(mail)


@pytest.mark.skipif(not scanread.native_available(), reason="the compiled scanner is not built")
@pytest.mark.parametrize("every_port", [True, False], ids=["every-port", "ports-only"])
def test_both_scanners_admit_the_same_tenant_packets(
    tmp_path: Path, every_port: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packet by packet, sweep ticks and counters included, in whole batches and in batches of one packet (each
    tenant's verdict reaching the scanner late): the flow tables of both scanners key flows by virtual network."""
    path = _two_tenants(tmp_path, 2626, body_segments=30)
    compiled = run(path, "auto", monkeypatch, all_ports=every_port)
    python = run(path, "python", monkeypatch, all_ports=every_port)
    assert_same(compiled, python)
    whole = run(path, "auto", monkeypatch, all_ports=every_port, skip_unread=False)
    monkeypatch.setattr(scanning, "BATCH_PACKETS", 1)
    for backend in ("auto", "python"):
        small = run(path, backend, monkeypatch, all_ports=every_port, skip_unread=False)
        assert small["items"] == whole["items"] and small["findings"] == whole["findings"]


@pytest.mark.parametrize("backend", ["auto", "python"])
def test_a_real_gretap_mirror_keyed_per_direction_is_read_whole(backend: str) -> None:
    """zeek's erspan.pcap: a Windows client's HTTP NTLM logon to a SharePoint server mirrored in gretap, the client's
    frames keyed 0 and the server's 0x02000000, big frames fragmented outside. Each session is one flow; its
    pieces, joined again, are not left counted as fragments; the challenge and the logon are one finding."""
    path = require_corpus("pcaps", "zeek", "erspan.pcap")
    results = analyze_captures([str(path)], AnalysisOptions(backend=backend))
    counters = results.counters
    assert counters.flows == 5 and counters.flows_one_sided == 0 and counters.ip_fragments == 0
    [ntlm] = [finding_record(f) for f in results.findings if str(f.type) == "ntlm-info"]
    assert (ntlm["server"], ntlm["netbios_computer"], ntlm["users"], ntlm["workstations"]) == (
        "192.168.69.2:80",
        "TFDSP",
        ["sp\\administrator"],
        ["STEVE-PC"],
    )
    assert ntlm["outcome"] == "success" and "network" not in ntlm
