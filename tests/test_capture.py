"""Capture sources: link types, file formats, filters, damage, errors, hostile packets.

Every capture here is written by the test itself. Where libpcap can read a file, the
libpcap reader and the pure-Python reader must deliver the same streams and frame numbers.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, PadN
from scapy.layers.ipsec import AH
from scapy.packet import Packet, Padding

import passive.capture as capture
from dissectors.registry import MAIL_PORTS
from passive.analysis.classify import mail_capture_options
from passive.capture import (
    CaptureCounters,
    CaptureError,
    CaptureOptions,
    Direction,
    Reassembler,
    analyze_file,
    build_bpf_filter,
    is_capture,
    libpcap_available,
)
from passive.capture.linklayer import (
    FRAGMENT_V4,
    FRAGMENT_V6,
    MALFORMED,
    NOT_IP,
    NOT_TCP,
    SUPPORTED_LINKTYPES,
    TOO_MANY_TAGS,
    decode_tcp,
)
from tests.helpers_capture import (
    ACK,
    PSH,
    SMTP_CLIENT_LINES,
    SMTP_SERVER_LINES,
    SYN,
    Recorder,
    ether,
    ethernet_frames,
    ipv4,
    ipv6,
    null_header,
    pcap_bytes,
    pcapng_bytes,
    pcapng_bytes_tsresol,
    sll,
    sll2,
    smtp_session_segments,
    tcp,
    write,
)

BACKENDS = ["python", "libpcap"] if libpcap_available() else ["python"]
SERVER_BYTES = b"".join(SMTP_SERVER_LINES)
CLIENT_BYTES = b"".join(SMTP_CLIENT_LINES)


def run(path: Path, backend: str = "python", **options) -> tuple[Recorder, CaptureCounters]:
    recorder = Recorder()
    counters = analyze_file(path, recorder, mail_capture_options(backend=backend, **options))
    return recorder, counters


def run_all(path: Path, **options) -> tuple[Recorder, CaptureCounters]:
    """Run every available reader; assert they agree on streams, frames and counters; return the first."""
    results = [run(path, backend, **options) for backend in BACKENDS]
    first_rec, first_counters = results[0]
    for recorder, counters in results[1:]:
        assert recorder.streams() == first_rec.streams()
        frames = [[(c.frame, c.offset) for d in Direction for c in r.chunks[d]] for r in recorder.flows]
        first_frames = [[(c.frame, c.offset) for d in Direction for c in r.chunks[d]] for r in first_rec.flows]
        assert frames == first_frames
        # Same numbers; the damage messages are worded by each reader.
        assert {**counters.as_dict(), "warnings": len(counters.warnings)} == {
            **first_counters.as_dict(),
            "warnings": len(first_counters.warnings),
        }
    return first_rec, first_counters


def session_frames(wrap, start: float = 1000.0) -> list[tuple[float, Packet]]:
    """The canned SMTP session, each IPv4 packet wrapped by ``wrap`` (a function of the scapy IP packet)."""
    frames = []
    for index, (src, dst, seq, ack, flags, payload) in enumerate(smtp_session_segments()):
        packet = ipv4(src[0], dst[0], tcp(src[1], dst[1], seq, ack, flags, payload))
        frames.append((start + index * 0.001, wrap(packet)))
    return frames


def assert_smtp_session(recorder: Recorder) -> None:
    assert len(recorder.flows) == 1
    flow = recorder.flows[0]
    assert flow.server_data == SERVER_BYTES
    assert flow.client_data == CLIENT_BYTES
    assert flow.flow.client == "10.0.0.1:40000"
    # Frames: 3 handshake packets, then the greeting is frame 4.
    assert flow.chunks[Direction.SERVER_TO_CLIENT][0].frame == 4


# -- link types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("linktype", "wrap"),
    [
        (1, lambda ip: ether(ip)),
        (1, lambda ip: ether(ip, tags=[(0x8100, 10)])),
        (1, lambda ip: ether(ip, tags=[(0x88A8, 100), (0x8100, 10)])),
        (1, lambda ip: ether(ip, tags=[(0x9100, 100), (0x8100, 10)])),
        (1, lambda ip: ether(ip, tags=[(0x8100, 7), (0x88A8, 100), (0x8100, 10)])),
        (113, lambda ip: sll(ip)),
        (276, lambda ip: sll2(ip)),
        (101, lambda ip: ip),
        (228, lambda ip: ip),
        (0, lambda ip: null_header(ip, 2, "<")),
        (108, lambda ip: null_header(ip, 2, ">")),
    ],
    ids=["ether", "vlan", "qinq-88a8", "qinq-9100", "qinq-port-tag", "sll", "sll2", "raw", "ipv4", "null", "loop"],
)
def test_link_types(tmp_path, linktype, wrap):
    path = write(tmp_path / "c.pcap", pcap_bytes(session_frames(wrap), linktype))
    recorder, counters = run_all(path)
    assert_smtp_session(recorder)
    assert counters.packets_read == counters.packets_matched == 11
    assert counters.flows_closed == 1 and counters.anomalies == 0


def test_null_header_in_big_endian_capture(tmp_path):
    # DLT_NULL carries the writer's host byte order, which matches the file's byte order.
    frames = session_frames(lambda ip: null_header(ip, 2, ">"))
    recorder, _ = run_all(write(tmp_path / "c.pcap", pcap_bytes(frames, 0, endian=">")))
    assert_smtp_session(recorder)


def test_four_vlan_tags_are_beyond_the_filter(tmp_path):
    frames = session_frames(lambda ip: ether(ip, tags=[(0x8100, 7), (0x88A8, 1), (0x8100, 2), (0x8100, 3)]))
    path = write(tmp_path / "c.pcap", pcap_bytes(frames))
    recorder, counters = run_all(path)
    assert recorder.flows == [] and counters.packets_matched == 0 and counters.packets_read == 11


def test_ipv6_with_extension_headers_and_fragments(tmp_path):
    client, server = ("2001:db8::1", 40000), ("2001:db8::2", 143)
    segments = smtp_session_segments(client=client, server=server)
    ext_sets = [
        [],
        [IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\x00" * 4)])],  # hop-by-hop with a PadN option
        [IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(), IPv6ExtHdrDestOpt()],  # hop-by-hop, routing, destination options
        [AH(payloadlen=1)],  # AH without ICV (12 bytes); scapy leaves the length field to the caller
        [IPv6ExtHdrFragment(offset=0, m=0, id=1)],  # atomic fragment header (offset 0, M=0): not fragmented
    ]
    frames = []
    for index, (src, dst, seq, ack, flags, payload) in enumerate(segments):
        body = tcp(src[1], dst[1], seq, ack, flags, payload)
        packet = ipv6(src[0], dst[0], body, ext=ext_sets[index % len(ext_sets)])
        frames.append((1000 + index * 0.001, ether(packet, 0x86DD)))
    # A non-first fragment of the flow, and a first fragment: counted, skipped.
    frames.append(
        (
            1001.0,
            ether(
                ipv6(client[0], server[0], b"\x00" * 16, next_header=6, ext=[IPv6ExtHdrFragment(offset=2, id=7)]),
                0x86DD,
            ),
        )
    )
    frames.append(
        (1001.1, ether(ipv6(client[0], server[0], tcp(40000, 143, 1), ext=[IPv6ExtHdrFragment(m=1, id=8)]), 0x86DD))
    )
    path = write(tmp_path / "v6.pcap", pcap_bytes(frames))
    recorder, counters = run_all(path)
    flow = recorder.flows[0]
    assert flow.server_data == SERVER_BYTES and flow.client_data == CLIENT_BYTES
    assert flow.flow.key == "[2001:db8::1]:40000->[2001:db8::2]:143"
    assert counters.ip_fragments == 2
    assert counters.packets_read == 13


def test_ipv4_pieces_never_joined_are_counted(tmp_path):
    frames = ethernet_frames(smtp_session_segments())
    first = ipv4("10.0.0.1", "10.0.0.2", tcp(40000, 25, 5, 0, PSH | ACK, b"AUTH PLAIN"), frag=0x2000)
    later = ipv4("10.0.0.1", "10.0.0.2", b"more bytes", frag=0x0004)
    frames += [(2000.0, ether(first)), (2000.1, ether(later))]
    path = write(tmp_path / "frag.pcap", pcap_bytes(frames))
    recorder, counters = run_all(path)
    assert_smtp_session(recorder)
    # The filter passes a TCP packet's later piece too (it has no ports); the first piece, 30 bytes, is cut to 24 as
    # Linux cuts it, and the later one, at 32, leaves a hole: nothing is joined.
    assert counters.ip_fragments == 2 and counters.packets_matched == 13


def test_zero_ip_length_from_segmentation_offload_uses_frame_length(tmp_path):
    frames = ethernet_frames(smtp_session_segments())
    frames[3][1][IP].len = 0  # IPv4 total length 0, as written by captures on TSO senders
    recorder, _ = run_all(write(tmp_path / "tso.pcap", pcap_bytes(frames)))
    assert_smtp_session(recorder)


def test_ethernet_padding_is_not_stream_data(tmp_path):
    frames = [(ts, frame / Padding(b"\x00" * 6)) for ts, frame in ethernet_frames(smtp_session_segments())]
    recorder, _ = run_all(write(tmp_path / "pad.pcap", pcap_bytes(frames)))
    assert_smtp_session(recorder)


# -- file formats ------------------------------------------------------------------------


@pytest.mark.parametrize(("endian", "nanoseconds"), [("<", False), (">", False), ("<", True), (">", True)])
def test_pcap_byte_orders_and_precisions(tmp_path, endian, nanoseconds):
    frames = ethernet_frames(smtp_session_segments(), start=1700000000.123456)
    path = write(tmp_path / "c.pcap", pcap_bytes(frames, endian=endian, nanoseconds=nanoseconds))
    recorder, _ = run_all(path)
    assert_smtp_session(recorder)
    greeting = recorder.flows[0].chunks[Direction.SERVER_TO_CLIENT][0]
    assert greeting.ts == pytest.approx(1700000000.123456 + 0.003, abs=2e-6)


def test_pcapng_with_two_interfaces_of_different_link_types(tmp_path):
    ether_frames = ethernet_frames(smtp_session_segments())
    raw_frames = [(ts + 0.0005, f[IP]) for ts, f in ethernet_frames(smtp_session_segments(client=("10.9.9.9", 41000)))]
    packets = []
    for (ts_a, a), (ts_b, b) in zip(ether_frames, raw_frames, strict=True):
        packets += [(0, ts_a, a), (1, ts_b, b)]
    path = write(tmp_path / "multi.pcapng", pcapng_bytes_tsresol([1, 101], packets, tsresol=9))
    recorder, counters = run_all(path)
    flows = recorder.by_key()
    assert flows["10.0.0.1:40000->10.0.0.2:25"].server_data == SERVER_BYTES
    assert flows["10.9.9.9:41000->10.0.0.2:25"].client_data == CLIENT_BYTES
    assert flows["10.9.9.9:41000->10.0.0.2:25"].chunks[Direction.SERVER_TO_CLIENT][0].frame == 8
    assert counters.packets_read == 22


@pytest.mark.parametrize("name", ["c.pcap.gz", "c.pcapng.gz"])
def test_gzip_captures_are_read_transparently(tmp_path, name):
    frames = ethernet_frames(smtp_session_segments())
    content = pcap_bytes(frames) if ".pcap." in name else pcapng_bytes(frames)
    recorder, _ = run_all(write(tmp_path / name, content, compress=True))
    assert_smtp_session(recorder)


def test_exact_frame_numbers_among_non_mail_traffic(tmp_path):
    noise = ether(ipv4("10.1.1.1", "10.1.1.2", tcp(5555, 9100, 1, 0, ACK, b"PJL \r\n\r\n")))
    frames = []
    for index, frame in enumerate(ethernet_frames(smtp_session_segments())):
        frames += [(frame[0] - 0.0001, noise)] * (index % 3) + [frame]
    path = write(tmp_path / "mixed.pcap", pcap_bytes(frames))
    recorder, counters = run_all(path)
    greeting = recorder.flows[0].chunks[Direction.SERVER_TO_CLIENT][0]
    expected = 1 + next(i for i, (_, f) in enumerate(frames) if SMTP_SERVER_LINES[0] in bytes(f))
    assert greeting.frame == expected
    assert counters.packets_read == len(frames) and counters.packets_matched == 11


@pytest.mark.skipif(not libpcap_available(), reason="needs libpcap")
def test_ordinal_frames_when_exact_numbering_is_off(tmp_path):
    noise = ether(ipv4("10.1.1.1", "10.1.1.2", tcp(5555, 9100, 1, 0, ACK, b"x")))
    frames = [(999.0, noise)] * 5 + ethernet_frames(smtp_session_segments())
    recorder, counters = run(write(tmp_path / "m.pcap", pcap_bytes(frames)), "libpcap", exact_frames=False)
    assert recorder.flows[0].chunks[Direction.SERVER_TO_CLIENT][0].frame == 4
    assert counters.packets_read == 11


# -- filters -----------------------------------------------------------------------------


def test_bpf_filter_covers_vlan_qinq_and_ipv6_extension_headers():
    expr = build_bpf_filter(MAIL_PORTS)
    assert "vlan and ((" in expr and "(vlan and (" in expr
    assert "port 2525" in expr and "ip6 protochain 6" in expr
    assert "vlan" not in build_bpf_filter(MAIL_PORTS, linktype=113)
    assert build_bpf_filter(MAIL_PORTS, user_filter="host 10.0.0.1").startswith("(host 10.0.0.1) and (")
    assert build_bpf_filter(MAIL_PORTS, all_ports=True).startswith("((tcp) or")


def test_non_mail_ports_are_ignored_unless_all_ports(tmp_path):
    frames = [
        (ts, ether(ipv4("10.0.0.1", "10.0.0.2", tcp(40000, 8025, 1000 + i, 0, PSH | ACK, b"x\r\n"))))
        for i, ts in enumerate([1.0, 2.0])
    ]
    frames += session_frames(ether, start=3.0)
    path = write(tmp_path / "c.pcap", pcap_bytes(frames))
    recorder, counters = run_all(path)
    assert len(recorder.flows) == 1 and counters.packets_matched == 11
    recorder, counters = run_all(path, all_ports=True)
    assert len(recorder.flows) == 1  # the 8025 flow never greeted like a mail server
    assert counters.flows_not_mail == 1 and counters.packets_matched == 13


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_ports_every_tcp_flow_is_kept(tmp_path, backend):
    frames = [
        (ts, ether(ipv4("10.0.0.1", "10.0.0.2", tcp(40000, 8025, 1000 + i, 0, PSH | ACK, b"x\r\n"))))
        for i, ts in enumerate([1.0, 2.0])
    ]
    frames += session_frames(ether, start=3.0)
    path = write(tmp_path / "c.pcap", pcap_bytes(frames))
    recorder = Recorder()
    counters = analyze_file(path, recorder, CaptureOptions(backend=backend))
    keys = sorted(r.flow.key for r in recorder.flows)
    assert keys == ["10.0.0.1:40000->10.0.0.2:25", "10.0.0.1:40000->10.0.0.2:8025"]
    assert counters.packets_matched == 13 and counters.flows_not_mail == 0
    assert build_bpf_filter(()).startswith("((tcp) or")


@pytest.mark.skipif(not libpcap_available(), reason="BPF expressions need libpcap")
@pytest.mark.parametrize("backend", BACKENDS)
def test_user_bpf_filter_is_anded(tmp_path, backend):
    frames = session_frames(ether) + [
        (ts + 10, f) for ts, f in ethernet_frames(smtp_session_segments(client=("10.0.0.7", 40001)))
    ]
    path = write(tmp_path / "c.pcap", pcap_bytes(frames))
    recorder, _ = run(path, backend, bpf="host 10.0.0.7")
    assert [r.flow.client for r in recorder.flows] == ["10.0.0.7:40001"]
    with pytest.raises(CaptureError, match="invalid BPF filter"):
        run(path, backend, bpf="host and and")


def test_without_libpcap_the_builtin_reader_is_used_with_a_notice(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(capture.libpcap, "binding", lambda: None)
    monkeypatch.setattr(capture.scanread, "binding", lambda: None)
    # The default reader is the compiled scanner, which needs no libpcap: the fallback is when it is missing too.
    monkeypatch.setattr(capture.scanread, "_cscan", None)
    monkeypatch.setattr(capture.scanread, "_notice_shown", False)
    path = write(tmp_path / "c.pcap", pcap_bytes(session_frames(ether)))
    recorder = Recorder()
    analyze_file(path, recorder, mail_capture_options())
    assert_smtp_session(recorder)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "built-in capture reader" in err
    with pytest.raises(CaptureError, match="needs libpcap"):
        analyze_file(path, Recorder(), mail_capture_options(bpf="host 10.0.0.1"))


# -- damage and errors -------------------------------------------------------------------


def test_truncated_capture_keeps_packets_before_the_cut(tmp_path):
    content = pcap_bytes(session_frames(ether))
    path = write(tmp_path / "cut.pcap", content[:-30])
    recorder, counters = run_all(path)
    flow = recorder.flows[0]
    assert flow.server_data == SERVER_BYTES  # the cut is in the last packet, a bare ACK
    assert counters.packets_read == 10 and counters.anomalies == 1
    assert counters.warnings[0].startswith("truncated capture")


def test_corrupt_record_header_stops_with_message(tmp_path):
    frames = session_frames(ether)
    head = pcap_bytes(frames[:5])
    tail = pcap_bytes(frames[5:])[24:]
    garbage = struct.pack("<IIII", 0xDEADBEEF, 0xFFFFFFF0, 0x7FFFFFF0, 0x7FFFFFF0)
    path = write(tmp_path / "bad.pcap", head + garbage + tail)
    recorder, counters = run_all(path)
    flow = recorder.flows[0]
    assert flow.server_data == SMTP_SERVER_LINES[0] and flow.client_data == SMTP_CLIENT_LINES[0]
    assert counters.packets_read == 5 and counters.anomalies == 1
    assert "corrupt capture" in counters.warnings[0] and "\n" not in counters.warnings[0]


def test_truncated_pcapng_block(tmp_path):
    frames = ethernet_frames(smtp_session_segments())
    content = pcapng_bytes(frames)
    recorder, counters = run_all(write(tmp_path / "cut.pcapng", content[:-10]))
    assert recorder.flows[0].server_data == SERVER_BYTES
    assert counters.packets_read == 10 and counters.warnings[0].startswith("truncated capture")


@pytest.mark.parametrize(
    "option", [struct.pack("<HH", 9, 1), struct.pack("<HHB3x", 14, 8, 1)], ids=["tsresol", "tsoffset"]
)
def test_a_pcapng_interface_option_running_past_its_block_ends_the_options(tmp_path, option):
    """An if_tsresol or if_tsoffset option longer than what is left of its block (the reader raised IndexError or
    struct.error: a traceback): the options end there, and the interface stands with its defaults."""
    packets = [(0, ts, frame) for ts, frame in ethernet_frames(smtp_session_segments())]
    path = write(tmp_path / "option.pcapng", pcapng_bytes_tsresol([1], packets, options=option))
    recorder, counters = run_all(path)
    assert_smtp_session(recorder)
    assert counters.packets_read == len(packets) and not counters.warnings


def test_snaplen_truncation_counts_and_reports_gap(tmp_path):
    frames = ethernet_frames(smtp_session_segments())
    path = write(tmp_path / "snap.pcap", pcap_bytes(frames, caplen_limit=60, snaplen=60))
    recorder, counters = run_all(path)
    assert counters.truncated_packets == 4  # every payload but "QUIT\r\n" (exactly 60 bytes) is cut
    assert recorder.flows[0].gaps


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.pcap", "no such file"),
        (lambda p: p, "is a directory"),
        (lambda p: write(p / "text.pcap", b"hello, this is not a capture"), "not a pcap or pcapng file"),
        (lambda p: write(p / "empty.pcap", b""), "too short"),
    ],
)
def test_unreadable_inputs_raise_capture_error(tmp_path, make, message):
    with pytest.raises(CaptureError) as info:
        analyze_file(make(tmp_path), Recorder())
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_permission_denied_raises_capture_error(tmp_path):
    path = write(tmp_path / "secret.pcap", pcap_bytes(session_frames(ether)))
    path.chmod(0)
    with pytest.raises(CaptureError, match="permission denied"):
        analyze_file(path, Recorder())


def test_is_capture_tells_captures_by_their_magic(tmp_path):
    frames = ethernet_frames(smtp_session_segments())
    pcapng = pcapng_bytes(frames)
    assert is_capture(write(tmp_path / "a.pcap", pcap_bytes(frames)))
    assert is_capture(write(tmp_path / "b.pcapng", pcapng))
    assert is_capture(write(tmp_path / "c.pcapng.gz", pcapng, compress=True))
    assert not is_capture(write(tmp_path / "d.json", b'{"findings": []}'))
    assert not is_capture(write(tmp_path / "e.json.gz", b'{"findings": []}', compress=True))
    assert not is_capture(write(tmp_path / "f", b""))
    with pytest.raises(OSError):
        is_capture(tmp_path / "missing.pcap")


def test_unknown_backend_is_rejected(tmp_path):
    path = write(tmp_path / "c.pcap", pcap_bytes(session_frames(ether)))
    with pytest.raises(CaptureError, match="unknown capture backend"):
        analyze_file(path, Recorder(), CaptureOptions(backend="dpdk"))


def test_counters_are_json_serialisable(tmp_path):
    import json

    _, counters = run(write(tmp_path / "c.pcap", pcap_bytes(session_frames(ether))))
    data = json.loads(json.dumps(counters.as_dict()))
    assert data["flows"] == 1 and data["bytes_delivered"] == len(SERVER_BYTES) + len(CLIENT_BYTES)


# -- decoder statuses and hostile input ----------------------------------------------------


def test_decoder_statuses():
    assert decode_tcp(1, bytes(ether(b"\x00" * 28, 0x0806))) == NOT_IP
    assert decode_tcp(1, bytes(ether(ipv4("1.1.1.1", "2.2.2.2", b"\x00" * 8, proto=17)))) == NOT_TCP
    assert decode_tcp(1, bytes(ether(ipv4("1.1.1.1", "2.2.2.2", b"\x00" * 8, frag=0x0010)))) == FRAGMENT_V4
    assert decode_tcp(1, bytes(ether(ipv4("1.1.1.1", "2.2.2.2", b"\x00" * 8)))) == MALFORMED  # TCP header cut
    assert decode_tcp(1, b"\x00" * 10) == MALFORMED
    tags = [(0x8100, 1)] * 4
    assert decode_tcp(1, bytes(ether(ipv4("1.1.1.1", "2.2.2.2", tcp(1, 25, 1)), tags=tags))) == TOO_MANY_TAGS
    frag = ipv6("::1", "::2", b"\x00" * 20, ext=[IPv6ExtHdrFragment(offset=1, id=1)])
    assert decode_tcp(229, bytes(frag)) == FRAGMENT_V6
    null_v6 = null_header(ipv6("::1", "::2", tcp(1, 25, 7)), 30)  # AF_INET6 on macOS
    assert isinstance(decode_tcp(0, bytes(null_v6)), tuple)
    segment = decode_tcp(229, bytes(ipv6("::1", "::2", tcp(1, 25, 7, 0, SYN))))
    assert isinstance(segment, tuple) and segment[2:7] == (1, 25, 7, 0, SYN)


LINKTYPES = [*sorted(SUPPORTED_LINKTYPES), 147]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linktype=st.sampled_from(LINKTYPES), data=st.binary(max_size=200))
def test_random_frames_never_crash(linktype, data):
    result = decode_tcp(linktype, data)
    assert isinstance(result, int | tuple)


def _valid_frames() -> list[bytes]:
    frames = [f for _, f in ethernet_frames(smtp_session_segments())]
    frames.append(
        ether(
            ipv6("2001:db8::1", "2001:db8::2", tcp(1, 25, 1, 0, PSH | ACK, b"x\r\n"), ext=[IPv6ExtHdrHopByHop()]),
            0x86DD,
        )
    )
    frames.append(ether(ipv4("10.0.0.1", "10.0.0.2", tcp(40000, 25, 1, 0, PSH | ACK, b"y\r\n")), tags=[(0x8100, 5)]))
    return [bytes(frame) for frame in frames]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(_valid_frames()) - 1), st.integers(0, 2000), st.integers(0, 7)), max_size=40
    ),
    cut=st.lists(st.integers(0, 120), min_size=len(_valid_frames()), max_size=len(_valid_frames())),
    order=st.permutations(range(len(_valid_frames()))),
)
def test_bit_flipped_frames_through_decoder_and_reassembler_never_crash(flips, cut, order):
    frames = [bytearray(f) for f in _valid_frames()]
    for index, position, bit in flips:
        frame = frames[index]
        frame[position % len(frame)] ^= 1 << bit
    counters = CaptureCounters()
    reassembler = Reassembler(
        Recorder(), counters=counters, server_ports=MAIL_PORTS, max_buffer=64, max_flows=3, idle_timeout=5
    )
    for number, index in enumerate(order, 1):
        frame = bytes(frames[index])
        if cut[index] % 4 == 0:
            frame = frame[: cut[index]]
        result = decode_tcp(1, frame)
        if isinstance(result, tuple):
            reassembler.process(result, number, float(number))
    reassembler.flush()
    assert counters.segments <= len(order)


# -- live capture ------------------------------------------------------------------------


@pytest.mark.skipif(not libpcap_available(), reason="needs libpcap")
def test_live_capture_on_missing_interface_raises_capture_error():
    with pytest.raises(CaptureError, match="cannot capture on"):
        capture.LiveCapture("no-such-interface0")


@pytest.mark.skipif(not libpcap_available(), reason="needs libpcap")
def test_live_capture_on_loopback_reassembles_a_session():
    import socket
    import threading
    import time

    try:
        live = capture.LiveCapture("lo", CaptureOptions(ports=frozenset({2525})), timeout_ms=50)
    except CaptureError as exc:
        pytest.skip(f"cannot capture on loopback here: {exc}")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    live.close()
    live = capture.LiveCapture("lo", CaptureOptions(ports=frozenset({port})), timeout_ms=50)
    recorder = Recorder()
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"220 test ESMTP\r\n")
            conn.recv(100)
            conn.sendall(b"221 bye\r\n")
        done.set()

    server = threading.Thread(target=serve)
    server.start()
    expected = b"220 test ESMTP\r\n221 bye\r\n"

    def session_seen() -> bool:
        return any(r.flow.server_port == port and r.reason is not None for r in recorder.flows)

    # Stop once the connection was seen to close, or at a deadline generous enough for a loaded machine.
    runner = threading.Thread(
        target=lambda: live.run(recorder, should_stop=lambda: session_seen() or time.monotonic() > stop_at[0])
    )
    stop_at = [time.monotonic() + 60]
    runner.start()  # the handle is already active: packets queue in the kernel until read
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.recv(100)
        client.sendall(b"QUIT\r\n")
        client.recv(100)
    server.join(5)
    runner.join(65)
    stats = live.stats()
    live.close()
    listener.close()
    flows = [r for r in recorder.flows if r.flow.server_port == port]
    assert flows and flows[0].server_data == expected
    assert flows[0].client_data == b"QUIT\r\n"
    assert stats.received >= 8 and stats.dropped == 0


@pytest.mark.skipif(not libpcap_available(), reason="needs libpcap")
def test_live_capture_reads_what_the_kernel_queued_before_the_stop():
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        live = capture.LiveCapture("lo", CaptureOptions(ports=frozenset({port})), timeout_ms=50)
    except CaptureError as exc:
        listener.close()
        pytest.skip(f"cannot capture on loopback here: {exc}")
    # The whole session happens before run(): its packets wait in the kernel's capture buffer.
    with socket.create_connection(("127.0.0.1", port)) as client:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"220 queued ESMTP\r\n")
            client.recv(100)
            client.sendall(b"QUIT\r\n")
            conn.recv(100)
            conn.sendall(b"221 bye\r\n")
            client.recv(100)
    listener.close()
    recorder = Recorder()
    counters = live.run(recorder, should_stop=lambda: True)  # asked to stop before reading anything
    live.close()
    [flow] = [r for r in recorder.flows if r.flow.server_port == port]
    assert flow.server_data == b"220 queued ESMTP\r\n221 bye\r\n" and flow.client_data == b"QUIT\r\n"
    assert counters.packets_read >= 8
