"""A flow's head in every-port mode, when its first lines come in many small pieces.

A greeting and a first command sent one byte per segment (telnet character mode, a small-MSS path, an evasive peer),
each byte acknowledged, are read whole on any port and the session found, NTLM included; bare ACKs and
retransmissions do not eat the head. A flow that is not mail still costs its head only: binary bytes one per
packet are cut after :data:`FLOW_HEAD` of them, an SSH banner typed byte by byte is declared not mail at its end,
and text that never makes a mail line is cut at :data:`HEAD_LINE_BYTES`; their later packets never reach Python and
are counted. The compiled scanner and its twin admit the same packets, whatever the batches.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

import passive.capture.flowhead as flowhead
import passive.capture.scanner as scanning
from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from passive.capture import scanread
from passive.capture.flowhead import HEAD_LINE_BYTES, HEAD_QUIET
from passive.capture.pcapfile import PacketReader
from passive.capture.scanner import FLOW_HEAD
from tests.helpers_capture import (
    ACK,
    FIN,
    PSH,
    conversation_segments,
    ether,
    ethernet_frames,
    interleaved,
    ipv4,
    pcap_bytes,
    reached_segments,
    tcp,
    write,
)
from tests.test_every_port import with_server_port
from tests.test_scanner import assert_same, run

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"


def byte_by_byte(source: Path, old: int, new: int, target: Path, pieces: int = 2) -> Path:
    """``source`` (Ethernet/IPv4) with port ``old`` moved to ``new`` and its first ``pieces`` segments that carry
    data (the greeting and the client's first command) sent one byte per segment, each byte acknowledged by the
    peer and the first one sent twice (a retransmission). Other packets are kept as they are, their checksums made
    right (the lab's loopback capture left them to the card, which the new pieces' right ones would make doubted)."""
    moved = with_server_port(source, old, new, target.with_suffix(".moved.pcap"))
    frames: list[tuple[float, Any]] = []
    windows: dict[tuple[str, int], int] = {}
    split = 0
    for packet in PacketReader(moved):
        layer = Ether(packet.data)
        segment = layer.getlayer(TCP)
        payload = bytes(segment.payload) if segment is not None else b""
        if segment is not None:
            windows[(layer[IP].src, segment.sport)] = segment.window
        if not payload or split >= pieces:  # checksums made anew, as for the pieces: one state for the whole capture
            if segment is not None:
                del layer[IP].chksum, layer[TCP].chksum
            frames.append((packet.ts, layer if segment is not None else packet.data))
            continue
        split += 1
        src, dst = layer[IP].src, layer[IP].dst
        for index in range(len(payload)):
            seq = (segment.seq + index) & 0xFFFFFFFF
            one = ether(
                ipv4(
                    src, dst, tcp(segment.sport, segment.dport, seq, segment.ack, PSH | ACK, payload[index : index + 1])
                )
            )
            one[TCP].window = segment.window
            peer = ether(ipv4(dst, src, tcp(segment.dport, segment.sport, segment.ack, (seq + 1) & 0xFFFFFFFF, ACK)))
            peer[TCP].window = windows.get((dst, segment.dport), segment.window)
            frames += [(packet.ts, one)] * (2 if index == 0 else 1) + [(packet.ts, peer)]
    return write(target, pcap_bytes(frames))


SESSIONS = [
    ("smtp-ntlm-success-curl.pcap", 25, 2525, "smtp"),
    ("smtp-ntlm-success-curl.pcap", 25, 2626, "smtp"),
    ("imap-ntlm-success-curl.pcap", 143, 1143, "imap"),
    ("pop3-ntlm-success-curl.pcap", 110, 10110, "pop3"),
]


@pytest.mark.parametrize(("capture", "old", "new", "protocol"), SESSIONS)
@pytest.mark.parametrize("backend", ["auto", "python"])
def test_a_greeting_and_command_one_byte_per_packet_are_found_on_any_port(
    tmp_path: Path, capture: str, old: int, new: int, protocol: str, backend: str
) -> None:
    split = byte_by_byte(PCAPS / capture, old, new, tmp_path / f"bytes-{new}.pcap")
    results = analyze_captures([str(split)], AnalysisOptions(backend=backend))
    found = {(f.type.value, f.protocol, f.server.rsplit(":", 1)[1]) for f in results.findings}
    assert ("mail-service", protocol, str(new)) in found
    assert ("ntlm-info", protocol, str(new)) in found
    whole = byte_by_byte(PCAPS / capture, old, new, tmp_path / f"whole-{new}.pcap", pieces=0)
    same = analyze_captures([str(whole)], AnalysisOptions(backend=backend))
    assert found == {(f.type.value, f.protocol, f.server.rsplit(":", 1)[1]) for f in same.findings}
    assert results.counters.undecided_packets == 0 and results.counters.not_mail_packets == 0
    if new != 2525:  # a named port says the protocol: no head there
        assert results.counters.head_extended_packets > 0


def typed(turns: list[tuple[bool, bytes, bool]], client: tuple[str, int], server: tuple[str, int]) -> list:
    """Segments of one connection: the handshake, each turn (from server, bytes, one byte per segment with each
    byte acknowledged by the peer, or all in one segment), the close."""
    c, s = 1001, 5001
    segments = conversation_segments([], client, server)[:3]
    for from_server, data, bytewise in turns:
        sender, receiver = (server, client) if from_server else (client, server)
        for piece in [data[i : i + 1] for i in range(len(data))] if bytewise else [data]:
            mine, theirs = (s, c) if from_server else (c, s)
            segments.append((sender, receiver, mine, theirs, PSH | ACK, piece))
            mine += len(piece)
            if bytewise:
                segments.append((receiver, sender, theirs, mine, ACK, b""))
            s, c = (mine, theirs) if from_server else (theirs, mine)
    close = [(server, client, s, c, FIN | ACK, b""), (client, server, c, s + 1, FIN | ACK, b"")]
    return [*segments, *close, (server, client, s + 1, c + 1, ACK, b"")]


BANNER = b"SSH-2.0-OpenSSH_9.6\r\n"
GREETING = b"220 mx.example.org ESMTP\r\n"


def _not_mail(tmp_path: Path) -> Path:
    """An SSH server typing its banner one byte per packet and then sending binary; a server sending binary one byte
    per packet (no line end: undecided); a client typing text that never ends a line (twice HEAD_LINE_BYTES); and
    an SMTP session whose greeting is typed the same way; interleaved."""
    noise = random.Random(15)
    binary = bytes(noise.choice([b for b in range(256) if b != 10]) for _ in range(300))
    flows = {
        2222: [(True, BANNER, True), (False, b"SSH-2.0-PuTTY\r\n", False)] + [(True, bytes(range(200)), False)] * 20,
        7000: [(True, binary, True)],
        7001: [(False, b"x" * 2 * HEAD_LINE_BYTES, True)],
        2626: [(True, GREETING, True), (False, b"EHLO me\r\n", False), (True, b"250 mx\r\n", False)],
    }
    per_flow = [typed(turns, ("10.2.0.1", 40000 + port), ("10.2.0.2", port)) for port, turns in flows.items()]
    segments = interleaved(per_flow)
    return write(tmp_path / "heads.pcap", pcap_bytes(ethernet_frames(segments)))


@pytest.mark.parametrize("backend", ["auto", "python"])
def test_flows_that_are_not_mail_cost_their_head_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    path = _not_mail(tmp_path)
    total: dict[int, int] = {}
    for packet in PacketReader(path):
        segment = Ether(packet.data)[TCP]
        port = segment.dport if segment.dport < 40000 else segment.sport
        total[port] = total.get(port, 0) + 1
    reached = reached_segments(monkeypatch)
    results = analyze_captures([str(path)], AnalysisOptions(backend=backend))
    counters = results.counters
    seen = {port: sum(1 for _frame, sport, dport in reached if port in (sport, dport)) for port in total}
    # SSH: declared not mail once its banner's line ends; the ACK of that last byte was already admitted (dropped
    # by the engine, in flight) and the rest dropped by the scanner, counted as not mail.
    assert seen[2222] == 3 + 2 * len(BANNER) - 1
    # Binary bytes make no line: the head's FLOW_HEAD data packets, each acknowledged, after the handshake.
    assert seen[7000] == 3 + 2 * FLOW_HEAD
    # Text that never makes a mail line: read until the flow has sent HEAD_LINE_BYTES.
    assert seen[7001] == 3 + 2 * HEAD_LINE_BYTES
    assert seen[2626] == total[2626]  # the mail session, every packet
    assert counters.not_mail_packets == total[2222] - seen[2222]
    assert counters.undecided_packets == total[7000] - seen[7000] + total[7001] - seen[7001]
    # Past FLOW_HEAD: the banner's bytes, the typed ones, and the SMTP greeting's (found mail: kept from its end).
    extended = (len(BANNER) - FLOW_HEAD) + (HEAD_LINE_BYTES - FLOW_HEAD) + (len(GREETING) - FLOW_HEAD)
    assert counters.head_extended_packets == extended
    assert ("mail-service", "10.2.0.2:2626") in {(f.type.value, f.server) for f in results.findings}
    assert {f.server for f in results.findings} == {"10.2.0.2:2626"}


def test_bare_acks_and_retransmissions_do_not_eat_the_head(tmp_path: Path) -> None:
    """Before the greeting the client sends keep-alives (bare ACKs); the server retransmits its greeting's first
    piece: the greeting, cut in FLOW_HEAD + 5 pieces, is still read and the session found. One more packet without
    new bytes than HEAD_QUIET allows before the greeting, and the flow is cut."""
    greeting = b"220 mx.example.org ESMTP ready\r\n"
    client, server = ("10.3.0.1", 40000), ("10.3.0.2", 2626)
    piece = -(-len(greeting) // (FLOW_HEAD + 5))
    for keepalives, found in ((HEAD_QUIET - 3, True), (HEAD_QUIET - 2, False)):
        segments = conversation_segments([], client, server)[:3]  # three packets without bytes
        segments += [(client, server, 1000, 5001, ACK, b"")] * keepalives
        session = conversation_segments(
            [(True, greeting), (False, b"EHLO me\r\n"), (True, b"250 mx\r\n")], client, server, piece=piece
        )[3:]
        segments += session[:1] * 2 + session[1:]  # the first piece retransmitted
        path = write(tmp_path / f"quiet-{keepalives}.pcap", pcap_bytes(ethernet_frames(segments)))
        for backend in ("auto", "python"):
            results = analyze_captures([str(path)], AnalysisOptions(backend=backend))
            assert any(f.type.value == "mail-service" for f in results.findings) is found
            assert (results.counters.undecided_packets > 0) is not found


def test_a_greeting_sent_backwards_and_retransmitted_is_read(tmp_path: Path) -> None:
    """An evasive server sends its greeting one byte per segment, last byte first, each three times: bytes that
    fill a hole or come again are charged to the head's bytes, not refused; the session is found."""
    greeting = b"220 mx.example.org ESMTP\r\n"
    client, server = ("10.5.0.1", 40000), ("10.5.0.2", 2626)
    session = conversation_segments([(True, greeting), (False, b"EHLO me\r\n"), (True, b"250 mx\r\n")], client, server)
    pieces = [(server, client, 5001 + i, 1001, PSH | ACK, greeting[i : i + 1]) for i in reversed(range(len(greeting)))]
    segments = session[:3] + [piece for piece in pieces for _ in range(3)] + session[4:]
    path = write(tmp_path / "backwards.pcap", pcap_bytes(ethernet_frames(segments)))
    for backend in ("auto", "python"):
        results = analyze_captures([str(path)], AnalysisOptions(backend=backend))
        assert ("mail-service", "10.5.0.2:2626") in {(f.type.value, f.server) for f in results.findings}
        assert results.counters.undecided_packets == 0
        # Every copy but: the first (new bytes, in the head), HEAD_QUIET + 1 - 3 without new bytes (one more per
        # packet with new bytes; the handshake took three), and the two copies of the greeting's first byte that
        # come after the verdict.
        extended = 3 * len(greeting) - 1 - (HEAD_QUIET + 1 - 3) - 2
        assert results.counters.head_extended_packets == extended


def _typists(tmp_path: Path) -> Path:
    """MAX_EXTENDING + 4 clients typing 40 bytes of text at once, never a line, then closing; then one more."""
    flows = [
        typed([(False, b"y" * 40, True)], (f"10.6.{index // 200}.{index % 200 + 1}", 40000), ("10.6.9.9", 7100 + index))
        for index in range(flowhead.MAX_EXTENDING + 4)
    ]
    segments = [flow[index] for index in range(len(flows[0])) for flow in flows]
    segments += typed([(False, b"y" * 40, True)], ("10.6.8.8", 40000), ("10.6.9.9", 7099))
    return write(tmp_path / "typists.pcap", pcap_bytes(ethernet_frames(segments)))


@pytest.mark.parametrize("backend", ["auto", "python"])
def test_heads_extend_for_a_bounded_number_of_flows_at_once(tmp_path: Path, backend: str) -> None:
    results = analyze_captures([str(_typists(tmp_path))], AnalysisOptions(backend=backend))
    counters = results.counters
    # The first MAX_EXTENDING flows to ask extend, the four after them are cut at their head (each of their 86
    # packets but the handshake and FLOW_HEAD bytes with their ACKs), and the one after they all closed extends.
    assert counters.head_extended_packets == (flowhead.MAX_EXTENDING + 1) * (40 - FLOW_HEAD)
    assert counters.undecided_packets == 4 * (3 + 2 * 40 + 3 - (3 + 2 * FLOW_HEAD))


@pytest.fixture
def _compiled() -> None:
    if not scanread.native_available():
        pytest.skip(f"compiled scanner not built: {scanread.NATIVE_PROBLEM}")


def test_the_compiled_limits_are_the_twins(_compiled: None) -> None:
    compiled = scanread._cscan
    for name in ("HEAD_QUIET", "HEAD_LINE_BYTES", "HEAD_SHARE", "HEAD_FLOOR", "MAX_EXTENDING"):
        assert getattr(compiled, name) == getattr(flowhead, name), name


@pytest.mark.parametrize("size", [1, 3, scanning.BATCH_PACKETS])
def test_both_scanners_admit_the_same_heads_whatever_the_batches(
    _compiled: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    path, typists = _not_mail(tmp_path), _typists(tmp_path)
    split = byte_by_byte(PCAPS / "imap-ntlm-success-curl.pcap", 143, 1143, tmp_path / "imap.pcap")
    whole = {p: run(p, "auto", monkeypatch) for p in (path, split, typists)}
    monkeypatch.setattr(scanning, "BATCH_PACKETS", size)
    for capture in (path, split, typists):
        compiled = run(capture, "auto", monkeypatch, skip_unread=False)
        python = run(capture, "python", monkeypatch, skip_unread=False)
        assert_same(compiled, python)
        assert compiled["items"] == whole[capture]["items"]
        assert compiled["scan"] == whole[capture]["scan"]
        assert compiled["findings"] == whole[capture]["findings"]
