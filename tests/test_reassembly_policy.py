"""Reassembly policies (passive/capture/policy.py): overlaps per receiver, RSTs, the receiver's window, FINs, and
the flow table's eviction order under a SYN flood."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import TCP

from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from passive.capture import CaptureError, CloseReason, Reassembler
from passive.capture.flowtable import ESTABLISHED, HALF_OPEN, QUIET
from passive.capture.linklayer import OPT_SACK_OK, OPT_WSCALE, decode_tcp
from passive.capture.policy import POLICIES
from tests.helpers_capture import ether, ethernet_frames, ipv4, pcap_bytes, smtp_session_segments, write
from tests.test_reassembly import CLIENT, SERVER, Session, handshake, seg

REAL, DECOY = b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", b"NOOP nothing to see here at all\r\n"


def _play(policy: str, pieces: list[tuple[bytes, int, int]], **options: object) -> tuple[bytes, Session]:
    """Client pieces (text, start, stop) after a handshake, then FINs; the client stream as reassembled."""
    s = Session(policy=policy, **options)
    c, v = handshake(s)
    for text, start, stop in pieces:
        s.feed(seg(CLIENT, SERVER, c + start, v, payload=text[start:stop]))
    end = max(stop for _text, _start, stop in pieces)
    s.feed(seg(CLIENT, SERVER, c + end, v, FIN | ACK), seg(SERVER, CLIENT, v, c + end + 1, FIN | ACK))
    return s.finish().flows[0].client_data, s


FIN, ACK, RST, SYN = 0x01, 0x10, 0x04, 0x02
R, D = REAL, DECOY
CLIENT_EP, SERVER_EP = CLIENT, SERVER


def _decoy(start: int, stop: int) -> bytes:
    """The real line with the decoy's bytes from ``start`` to ``stop``."""
    return R[:start] + D[start:stop] + R[stop:]


# name: (client pieces in arrival order, stream per policy). The linux column is what tests/test_receiver.py saw a
# Linux receiver's application read for the same pieces.
OVERLAPS = {
    "ofo-covered-by-in-order": (
        [(D, 10, 20), (R, 0, 33)],
        {"linux": R, "bsd": R, "solaris": R, "first": _decoy(10, 20), "last": R},
    ),
    "same-start-longer": (
        [(D, 10, 20), (R, 10, 33), (R, 0, 10)],
        {"linux": R, "bsd": _decoy(10, 20), "solaris": R, "first": _decoy(10, 20), "last": R},
    ),
    "same-start-same-end": (
        [(R, 10, 33), (D, 10, 33), (R, 0, 10)],
        {"linux": R, "bsd": R, "solaris": _decoy(10, 33), "first": R, "last": _decoy(10, 33)},
    ),
    "earlier-covers": (
        [(D, 10, 20), (R, 5, 33), (R, 0, 5)],
        {"linux": R, "bsd": R, "solaris": R, "first": _decoy(10, 20), "last": R},
    ),
    "earlier-covers-part": (
        [(D, 10, 20), (R, 5, 15), (R, 0, 5), (R, 20, 33)],
        {"linux": _decoy(15, 20), "bsd": _decoy(15, 20), "solaris": _decoy(10, 20), "first": _decoy(10, 20),
         "last": _decoy(15, 20)},
    ),
    "later-inside": (
        [(R, 10, 33), (D, 15, 20), (R, 0, 10)],
        {"linux": R, "bsd": R, "solaris": R, "first": R, "last": _decoy(15, 20)},
    ),
    "later-beyond": (
        [(R, 10, 20), (D, 15, 33), (R, 0, 10)],
        {"linux": _decoy(20, 33), "bsd": _decoy(20, 33), "solaris": _decoy(15, 33), "first": _decoy(20, 33),
         "last": _decoy(15, 33)},
    ),
    "across-coalesced": (
        [(R, 10, 20), (R, 20, 30), (D, 15, 25), (R, 0, 10), (R, 30, 33)],
        {"linux": R, "bsd": _decoy(20, 25), "solaris": _decoy(15, 20), "first": R, "last": _decoy(15, 25)},
    ),
}  # fmt: skip


@pytest.mark.parametrize("policy", ["linux", "bsd", "windows", "solaris", "first", "last"])
@pytest.mark.parametrize("case", list(OVERLAPS))
def test_overlap_rule_per_policy(case: str, policy: str) -> None:
    pieces, expected = OVERLAPS[case]
    data, _s = _play(policy, pieces)
    assert data == expected["bsd" if policy == "windows" else policy]


def test_overlap_decisions_are_counted() -> None:
    _data, s = _play("linux", [(D, 10, 20), (R, 5, 15), (R, 0, 5), (R, 20, 33)])
    assert (s.counters.overlaps_new_won, s.counters.overlaps_old_won) == (1, 0)
    _data, s = _play("first", [(D, 10, 20), (R, 5, 15), (R, 0, 5), (R, 20, 33)])
    assert (s.counters.overlaps_new_won, s.counters.overlaps_old_won) == (0, 1)
    assert s.counters.overlap_conflicts == 1


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(CaptureError, match=r"unknown reassembly policy 'vms' \(use linux, "):
        Reassembler(lambda flow: None, policy="vms")
    assert set(POLICIES) >= {"linux", "bsd", "windows", "solaris", "first", "last"}


# ---- RST ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "honoured"),
    [(0, True), (3_000_000, False), (500, False), (-100, False)],
    ids=["exact", "3M-beyond", "in-window", "behind"],
)
def test_rst_resets_only_at_the_next_expected_sequence_number(offset: int, honoured: bool) -> None:
    s = Session()
    c, v = handshake(s)
    s.feed(seg(CLIENT, SERVER, c, v, payload=b"EHLO c\r\n"), seg(CLIENT, SERVER, c + 8 + offset, v, RST | ACK))
    s.feed(seg(CLIENT, SERVER, c + 8, v, payload=REAL))
    flow = s.finish().flows[0]
    assert (flow.reason == CloseReason.RST) is honoured
    assert flow.client_data == b"EHLO c\r\n" + (b"" if honoured else REAL)
    assert s.counters.rsts_ignored == (0 if honoured else 1)


def test_rst_after_fin_and_at_the_sack_edge_and_beyond_a_capture_hole() -> None:
    s = Session()
    c, v = handshake(s)
    s.feed(seg(CLIENT, SERVER, c, v, FIN | ACK), seg(CLIENT, SERVER, c + 1, v, RST | ACK))  # FIN counts one
    assert s.only.reason == CloseReason.RST
    sack = OPT_WSCALE | OPT_SACK_OK
    s = Session()
    s.feed(seg(CLIENT, SERVER, 100, 0, SYN, options=sack), seg(SERVER, CLIENT, 700, 101, SYN | ACK, options=sack))
    s.feed(seg(CLIENT, SERVER, 111, 701, payload=b"later\r\n"))  # buffered: [10, 17)
    s.feed(seg(CLIENT, SERVER, 118, 701, RST | ACK))  # the right edge of the highest SACK block
    assert s.only.reason == CloseReason.RST
    s = Session()
    c, v = handshake(s)
    s.feed(seg(SERVER, CLIENT, v, c + 40, ACK))  # the server got 40 bytes the capture missed
    s.feed(seg(CLIENT, SERVER, c + 40, v, RST | ACK))
    assert s.only.reason == CloseReason.RST


def test_first_policy_honours_every_rst() -> None:
    s = Session(policy="first")
    c, v = handshake(s)
    s.feed(seg(CLIENT, SERVER, c + 3_000_000, v, RST | ACK))
    assert s.only.reason == CloseReason.RST and s.counters.rsts_ignored == 0


def test_rst_answering_a_syn_must_acknowledge_it() -> None:
    s = Session()
    s.feed(seg(CLIENT, SERVER, 100, 0, SYN), seg(SERVER, CLIENT, 0, 999, RST | ACK))
    assert s.counters.rsts_ignored == 1 and s.reassembler.open_flows == 1
    s.feed(seg(SERVER, CLIENT, 0, 101, RST | ACK))
    assert s.only.reason == CloseReason.RST


# ---- the receiver's window ------------------------------------------------------------------------------------------


def _scaled_handshake(s: Session, client_shift: int | None, server_shift: int | None, window: int) -> tuple[int, int]:
    def opts(shift: int | None) -> int:
        return 0 if shift is None else OPT_WSCALE | shift

    s.feed(seg(CLIENT, SERVER, 100, 0, SYN, window=window, options=opts(client_shift)))  # a SYN's: never scaled
    s.feed(seg(SERVER, CLIENT, 700, 101, SYN | ACK, window=window, options=opts(server_shift)))
    s.feed(seg(CLIENT, SERVER, 101, 701, ACK, window=window))
    s.feed(seg(SERVER, CLIENT, 701, 101, ACK, window=window))  # the server's window for the client's bytes
    return 101, 701


@pytest.mark.parametrize(
    ("shifts", "edge"),
    [((7, 7), 512 << 7), ((None, 7), 512), ((7, None), 512), ((None, None), 512), ((14, 14), 512 << 14)],
    ids=["both-7", "client-none", "server-none", "none", "both-14"],
)
def test_data_at_or_beyond_the_window_edge_is_refused(shifts: tuple[int | None, int | None], edge: int) -> None:
    s = Session()
    c, v = _scaled_handshake(s, *shifts, window=512)
    s.feed(seg(CLIENT, SERVER, c, v, payload=b"EHLO c\r\n"))
    s.feed(seg(CLIENT, SERVER, c + edge, v, payload=DECOY))  # starts at the edge: refused
    s.feed(seg(CLIENT, SERVER, c + edge - 1, v, payload=b"X"))  # the last byte in the window: kept
    assert (s.counters.window_drops, s.counters.window_dropped_bytes) == (1, len(DECOY))
    assert s.counters.out_of_order == 1


def test_data_planted_70000_bytes_beyond_the_window_does_not_hide_the_real_line() -> None:
    s = Session()
    c, v = _scaled_handshake(s, 7, 7, window=502)  # 64 256 bytes
    s.feed(seg(CLIENT, SERVER, c, v, payload=b"EHLO c\r\n"))
    planted = 8 + 502 * 128 + 70_000
    s.feed(seg(CLIENT, SERVER, c + planted, v, payload=DECOY))
    s.feed(seg(CLIENT, SERVER, c + 8, v, payload=REAL), seg(CLIENT, SERVER, c + 8 + len(REAL), v, FIN | ACK))
    assert s.finish().flows[0].client_data == b"EHLO c\r\n" + REAL
    assert s.counters.window_drops == 1 and not s.finish().flows[0].gaps


def test_window_is_followed_as_the_receiver_acknowledges() -> None:
    s = Session()
    c, v = _scaled_handshake(s, None, None, window=1000)
    s.feed(seg(CLIENT, SERVER, c + 1500, v, payload=b"ahead\r\n"))  # beyond 1000: refused
    s.feed(seg(SERVER, CLIENT, v, c + 800, ACK, window=1000))  # the edge moves to 1800
    s.feed(seg(CLIENT, SERVER, c + 1500, v, payload=b"ahead\r\n"))
    assert s.counters.window_drops == 1 and s.counters.out_of_order == 1


def test_no_window_check_without_both_syns() -> None:
    s = Session()
    s.feed(seg(CLIENT, SERVER, 5000, 9000, payload=b"EHLO\r\n"), seg(SERVER, CLIENT, 9000, 5006, ACK, window=10))
    s.feed(seg(CLIENT, SERVER, 5006 + 100_000, 9000, payload=b"far\r\n"))
    assert s.counters.window_drops == 0 and s.counters.out_of_order == 1


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([("MSS", 1460), ("SAckOK", b""), ("WScale", 7), ("NOP", None)], OPT_WSCALE | OPT_SACK_OK | 7),
        ([("WScale", 20)], OPT_WSCALE | 14),  # RFC 7323: a shift above 14 is taken as 14
        ([("NOP", None), ("MSS", 1460)], 0),
        ([("WScale", 3), ("EOL", None), ("SAckOK", b"")], OPT_WSCALE | 3),  # nothing read past the end of list
    ],
    ids=["linux-syn", "shift-20", "no-scale", "after-eol"],
)
def test_syn_options_are_decoded(options: list, expected: int) -> None:
    syn = TCP(sport=40000, dport=25, seq=1, flags="S", window=29200, options=options)
    frame = ether(ipv4("10.0.0.1", "10.0.0.2", syn))
    segment = decode_tcp(1, bytes(frame))
    assert segment[10] == 29200 and segment[11] == expected
    no_syn = ether(ipv4("10.0.0.1", "10.0.0.2", TCP(sport=40000, dport=25, seq=1, flags="A", options=options)))
    assert decode_tcp(1, bytes(no_syn))[11] == 0


# ---- FIN ------------------------------------------------------------------------------------------------------------


def test_fin_behind_delivered_data_or_overtaken_by_it_is_ignored() -> None:
    s = Session()
    c, v = handshake(s)
    s.feed(seg(CLIENT, SERVER, c, v, payload=b"EHLO c\r\n"), seg(CLIENT, SERVER, c + 3, v, FIN | ACK))  # stale
    s.feed(seg(CLIENT, SERVER, c + 20, v, FIN | ACK))  # ahead, in the window...
    s.feed(seg(CLIENT, SERVER, c + 8, v, payload=REAL))  # ...and data goes past it
    s.feed(seg(SERVER, CLIENT, v, c + 41, FIN | ACK))
    flow = s.only
    assert flow.reason is None and s.counters.fins_ignored == 2
    s.feed(seg(CLIENT, SERVER, c + 41, v, FIN | ACK))
    assert flow.reason == CloseReason.FIN and flow.client_data == b"EHLO c\r\n" + REAL


# ---- flow table: who is evicted -------------------------------------------------------------------------------------


def test_eviction_classes_follow_the_handshake_and_the_payload() -> None:
    s = Session()
    s.feed(seg(CLIENT, SERVER, 100, 0, SYN))
    flow = s.reassembler._flows[1]
    assert flow.evict_class == HALF_OPEN
    s.feed(seg(SERVER, CLIENT, 700, 101, SYN | ACK), seg(CLIENT, SERVER, 101, 999, ACK))  # acknowledges nothing sent
    assert flow.evict_class == HALF_OPEN
    s.feed(seg(CLIENT, SERVER, 101, 701, ACK))
    assert flow.evict_class == QUIET
    s.feed(seg(SERVER, CLIENT, 701, 101, payload=b"220 hi\r\n"))
    assert flow.evict_class == ESTABLISHED
    s.feed(seg(("10.0.0.7", 5555), SERVER, 1, 1, payload=b"x\r\n"))  # picked up mid-stream
    assert s.reassembler._flows[2].evict_class == ESTABLISHED


def test_full_table_evicts_half_open_flows_before_idle_sessions() -> None:
    s = Session(max_flows=3)
    c, v = handshake(s)
    s.feed(seg(CLIENT, SERVER, c, v, payload=b"EHLO c\r\n"))
    for port in range(50000, 50010):
        s.feed(seg(("10.0.0.9", port), SERVER, port, 0, SYN))
    s.feed(seg(CLIENT, SERVER, c + 8, v, payload=REAL))
    session = s.recorder.flows[0]
    assert session.reason is None and session.client_data == b"EHLO c\r\n" + REAL
    assert s.counters.flows_evicted == 8 and s.reassembler.open_flows == 3  # 11 flows through a 3-flow table


def _syn_frame(number: int, ts: float) -> tuple[float, bytes]:
    src = struct.pack("!I", 0x0A640000 + number)
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 40, 0, 0x4000, 64, 6, 0) + src + bytes([10, 0, 0, 2])
    tcp = struct.pack("!HHIIBBHHH", 1024 + number % 60000, 25, number * 7919, 0, 0x50, SYN, 64240, 0, 0)
    return ts, b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00" + ip + tcp


def test_live_session_survives_a_10200_syn_flood_and_its_credentials_are_found(tmp_path: Path) -> None:
    credentials = b"AUTH PLAIN " + base64.b64encode(b"\x00alice\x00flood-secret") + b"\r\n"
    segments = smtp_session_segments()
    frames = ethernet_frames(segments[:6])  # handshake, greeting, EHLO, its reply
    flood = [_syn_frame(number, 1000.01 + number * 1e-5) for number in range(10_200)]
    c, v = segments[5][3], segments[5][2] + len(segments[5][5])  # the client's next sequence number, the server's
    rest = [
        (CLIENT_EP, SERVER_EP, c, v, 0x18, credentials),
        (SERVER_EP, CLIENT_EP, v, c + len(credentials), 0x18, b"235 ok\r\n"),
    ]
    tail = ethernet_frames(rest, start=1001.0)
    path = write(tmp_path / "flood.pcap", pcap_bytes([*frames, *flood, *tail]))
    results = analyze_captures([str(path)], AnalysisOptions())
    counts = results.counts()
    assert counts["flows_evicted"] == 10_200 + 1 - 10_000 and counts["flows_partial"] == 0
    found = [f for f in results.findings if f.type.value == "cleartext-credentials"]
    assert found and found[0].fields.get("user") == "alice"

