"""TCP reassembly policy: order, overlaps, wrap-around, mid-stream pickup, gaps, limits, closing."""

from __future__ import annotations

import pytest

from dissectors.registry import MAIL_PORTS
from passive.analysis.classify import classify_mail
from passive.capture import CaptureCounters, Chunk, CloseReason, Direction, Flow, Reassembler
from tests.helpers_capture import ACK, FIN, PSH, RST, SYN, Recorder, ip4, ip6

C2S, S2C = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
CLIENT = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 25)


def seg(src, dst, seq, ack=0, flags=PSH | ACK, payload=b"", wire_len=None, window=65535, options=0):
    """A decoded segment as passive.linklayer.decode_tcp returns it."""
    pack = ip6 if ":" in src[0] else ip4
    length = len(payload) if wire_len is None else wire_len
    return (
        pack(src[0]), pack(dst[0]), src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, payload, length, 0,
        window, options,
    )  # fmt: skip


class Session:
    """Drives a Reassembler with frames numbered 1, 2, ... and timestamps one second apart."""

    def __init__(self, *, server_ports=MAIL_PORTS, **options) -> None:
        self.recorder = Recorder()
        self.counters = CaptureCounters()
        self.reassembler = Reassembler(self.recorder, counters=self.counters, server_ports=server_ports, **options)
        self.frame = 0
        self.ts = 1000.0

    def feed(self, *segments, ts=None):
        for segment in segments:
            self.frame += 1
            self.ts = self.ts + 1 if ts is None else ts
            self.reassembler.process(segment, self.frame, self.ts)

    def finish(self):
        self.reassembler.flush()
        return self.recorder

    @property
    def only(self):
        assert len(self.recorder.flows) == 1
        return self.recorder.flows[0]


def handshake(session: Session, c_isn: int = 100, s_isn: int = 700, client=CLIENT, server=SERVER):
    session.feed(
        seg(client, server, c_isn, 0, SYN),
        seg(server, client, s_isn, c_isn + 1, SYN | ACK),
        seg(client, server, c_isn + 1, s_isn + 1, ACK),
    )
    return c_isn + 1, s_isn + 1


def test_in_order_session_is_delivered_with_frames_and_closed_by_fin():
    s = Session()
    c, v = handshake(s)
    s.feed(
        seg(SERVER, CLIENT, v, c, payload=b"220 mx ESMTP\r\n"),
        seg(CLIENT, SERVER, c, v + 14, payload=b"EHLO a\r\n"),
        seg(SERVER, CLIENT, v + 14, c + 8, payload=b"250 ok\r\n"),
        seg(CLIENT, SERVER, c + 8, v + 22, FIN | ACK),
        seg(SERVER, CLIENT, v + 22, c + 9, FIN | ACK),
    )
    flow = s.only
    assert flow.events[0] == ("open",)
    assert flow.server_data == b"220 mx ESMTP\r\n250 ok\r\n"
    assert flow.client_data == b"EHLO a\r\n"
    assert [(ch.frame, ch.offset) for ch in flow.chunks[S2C]] == [(4, 0), (6, 14)]
    assert flow.chunks[C2S][0] == Chunk(b"EHLO a\r\n", 5, 1005.0, 0)
    assert flow.reason == CloseReason.FIN
    assert flow.flow.client == "10.0.0.1:40000" and flow.flow.server == "10.0.0.2:25"
    assert flow.flow.key == "10.0.0.1:40000->10.0.0.2:25"
    assert not flow.flow.partial
    assert s.counters.flows_closed == 1 and s.reassembler.open_flows == 0


def test_out_of_order_segments_are_buffered_and_delivered_in_order():
    s = Session()
    c, v = handshake(s)
    s.feed(
        seg(SERVER, CLIENT, v + 5, c, payload=b"world\r\n"),
        seg(SERVER, CLIENT, v + 12, c, payload=b"again\r\n"),
        seg(SERVER, CLIENT, v, c, payload=b"hello"),
    )
    flow = s.finish().flows[0]
    assert flow.server_data == b"helloworld\r\nagain\r\n"
    assert [ch.frame for ch in flow.chunks[S2C]] == [6, 4, 5]
    assert s.counters.out_of_order == 2
    assert not flow.gaps


def test_identical_retransmission_is_dropped_and_counted():
    s = Session()
    c, v = handshake(s)
    s.feed(seg(CLIENT, SERVER, c, v, payload=b"EHLO a\r\n"), seg(CLIENT, SERVER, c, v, payload=b"EHLO a\r\n"))
    flow = s.finish().flows[0]
    assert flow.client_data == b"EHLO a\r\n"
    assert (s.counters.retransmissions, s.counters.overlaps, s.counters.overlap_conflicts) == (1, 1, 0)


def test_conflicting_overlap_first_seen_wins_for_delivered_data():
    s = Session()
    c, v = handshake(s)
    s.feed(
        seg(CLIENT, SERVER, c, v, payload=b"USER alice\r\n"),
        seg(CLIENT, SERVER, c + 5, v, payload=b"mallo\r\nPASS x\r\n"),  # overlaps "alice\r\n", then new data
    )
    flow = s.finish().flows[0]
    assert flow.client_data == b"USER alice\r\n" + b"PASS x\r\n"
    assert s.counters.overlaps == 1 and s.counters.overlap_conflicts == 1


def test_conflicting_overlap_first_seen_wins_for_buffered_data():
    s = Session(policy="first")  # the policy this test was written for (Linux lets the earlier start win)
    c, v = handshake(s)
    s.feed(
        seg(CLIENT, SERVER, c + 4, v, payload=b"AAAA\r\n"),  # buffered ahead of a hole
        seg(CLIENT, SERVER, c + 2, v, payload=b"xxBBBB\r\n"),  # overlaps the buffered bytes with others
        seg(CLIENT, SERVER, c, v, payload=b"ab"),
    )
    flow = s.finish().flows[0]
    assert flow.client_data == b"abxxAAAA\r\n"
    assert s.counters.overlap_conflicts == 1
    assert not flow.gaps


@pytest.mark.parametrize("isn", [0xFFFFFFFF - 3, 0xFFFFFFFF, 0xFFFFFFF0])
def test_sequence_wrap_around(isn):
    s = Session()
    c, v = handshake(s, c_isn=isn, s_isn=0xFFFFFFFE)
    lines = [b"line one\r\n", b"line two\r\n", b"line three\r\n"]
    seqs, pos = [], c
    for line in lines:
        seqs.append(pos)
        pos += len(line)
    # deliver 2nd, 3rd then 1st: reordering across the wrap
    s.feed(*(seg(CLIENT, SERVER, seqs[i], v, payload=lines[i]) for i in (1, 2, 0)))
    s.feed(seg(SERVER, CLIENT, v, pos, payload=b"+OK\r\n"))
    flow = s.finish().flows[0]
    assert flow.client_data == b"".join(lines)
    assert flow.server_data == b"+OK\r\n"
    assert not flow.gaps
    assert [ch.offset for ch in flow.chunks[C2S]] == [0, 10, 20]


def test_mid_stream_pickup_is_partial_and_resyncs_at_line_boundary():
    s = Session()
    s.feed(
        seg(SERVER, CLIENT, 5000, 9000, payload=b"lfway through a line\r\n250 next\r\n"),
        seg(CLIENT, SERVER, 9000, 5032, payload=b"QUIT\r\n"),
    )
    flow = s.finish().flows[0]
    assert flow.flow.partial
    assert flow.flow.client == "10.0.0.1:40000"  # server decided by the mail port
    assert flow.server_data == b"250 next\r\n"
    assert flow.chunks[S2C][0].offset == 22
    assert flow.client_data == b""  # first line of a mid-stream direction is dropped too
    assert s.counters.flows_partial == 1
    assert s.counters.resync_skipped_bytes == 22 + 6


def test_mid_stream_pickup_without_resync_keeps_everything():
    s = Session(resync_lines=False)
    s.feed(seg(SERVER, CLIENT, 5000, 9000, payload=b"tail\r\n250 next\r\n"))
    assert s.finish().flows[0].server_data == b"tail\r\n250 next\r\n"


def test_lost_segment_becomes_gap_at_close_never_glued():
    s = Session()
    c, v = handshake(s)
    s.feed(
        seg(CLIENT, SERVER, c, v, payload=b"MAIL FROM:<a@b>\r\n"),
        # 10 bytes lost here
        seg(CLIENT, SERVER, c + 27, v, payload=b"rest of line\r\nDATA\r\n"),
        seg(CLIENT, SERVER, c + 47, v, FIN | ACK),
        seg(SERVER, CLIENT, v, c + 48, FIN | ACK),
    )
    flow = s.only
    assert flow.gaps == [(C2S, 10, 5, 1005.0)]
    kinds = [e[0] for e in flow.events if e[0] != "open"]
    assert kinds == ["data", "gap", "data", "close"]
    # After the gap the bytes go on as they are: the handler, told of the gap, skips the cut line itself.
    assert flow.client_data == b"MAIL FROM:<a@b>\r\nrest of line\r\nDATA\r\n"
    assert s.counters.gaps == 1 and s.counters.gap_bytes == 10
    assert flow.reason == CloseReason.FIN


def test_ack_beyond_a_hole_declares_the_gap_immediately():
    s = Session()
    c, v = handshake(s)
    s.feed(
        seg(SERVER, CLIENT, v, c, payload=b"220 hi\r\n"),
        seg(SERVER, CLIENT, v + 20, c, payload=b"x\r\n250 ok\r\n"),  # 12 bytes missing before it
    )
    assert s.only.gaps == []
    s.feed(seg(CLIENT, SERVER, c, v + 31, ACK))  # the client acknowledged everything: the hole is lost
    assert s.only.gaps == [(S2C, 12, 5, 1005.0)]
    assert s.only.server_data == b"220 hi\r\nx\r\n250 ok\r\n"


def test_buffer_cap_turns_hole_into_gap():
    s = Session(max_buffer=16)
    c, v = handshake(s)
    s.feed(seg(CLIENT, SERVER, c + 100, v, payload=b"0123456789\r\n"))
    assert s.counters.buffer_cap_hits == 0
    s.feed(seg(CLIENT, SERVER, c + 112, v, payload=b"abcdefghij\r\n"))
    assert s.counters.buffer_cap_hits == 1
    flow = s.only
    assert flow.gaps[0][:2] == (C2S, 100)
    assert flow.client_data == b"0123456789\r\nabcdefghij\r\n"  # after the gap, as they are (no line dropped)
    s.feed(seg(CLIENT, SERVER, c, v, payload=b"late\r\n"))  # too late: already declared lost
    assert flow.client_data == b"0123456789\r\nabcdefghij\r\n"
    assert s.counters.retransmissions == 1


def test_segment_count_cap_bounds_pending_pieces():
    s = Session(max_buffer_segments=4)
    c, v = handshake(s)
    for i in range(10):
        s.feed(seg(CLIENT, SERVER, c + 10 + i * 3, v, payload=b"a\r\n"))
    assert s.counters.buffer_cap_hits >= 1
    assert s.reassembler._flows[1]._halves[0].pending == []


def test_flow_table_cap_evicts_least_recently_active():
    s = Session(max_flows=2)
    for port in (40001, 40002):
        s.feed(seg(("10.0.0.1", port), SERVER, 1, 0, SYN))
    s.feed(seg(("10.0.0.1", 40001), SERVER, 2, 1, payload=b"EHLO\r\n"))  # 40002 is now the idlest
    s.feed(seg(("10.0.0.1", 40003), SERVER, 1, 0, SYN))
    flows = {r.flow.client_port: r for r in s.recorder.flows}
    assert flows[40002].reason == CloseReason.EVICTED
    assert flows[40001].reason is None
    assert s.counters.flows_evicted == 1
    assert s.reassembler.open_flows == 2


def test_idle_timeout_uses_capture_time():
    s = Session(idle_timeout=60)
    c, v = handshake(s)
    s.feed(seg(CLIENT, SERVER, c, v, payload=b"NOOP\r\n"))
    s.feed(seg(("10.0.0.9", 1234), SERVER, 1, 0, SYN), ts=s.ts + 59)
    assert s.recorder.flows[0].reason is None
    s.feed(seg(("10.0.0.9", 1234), SERVER, 2, 0, payload=b"x\r\n"), ts=s.ts + 120)
    assert s.recorder.flows[0].reason == CloseReason.TIMEOUT
    assert s.counters.flows_expired >= 1


def test_rst_closes_immediately_and_flushes_buffered_data_with_gap():
    s = Session()
    c, v = handshake(s)
    s.feed(seg(CLIENT, SERVER, c + 4, v, payload=b"tail\r\nNEXT\r\n"), seg(SERVER, CLIENT, v, c, RST | ACK))
    flow = s.only
    assert flow.reason == CloseReason.RST
    assert flow.gaps[0][:2] == (C2S, 4)
    assert flow.client_data == b"tail\r\nNEXT\r\n"
    assert s.reassembler.open_flows == 0


def test_end_of_capture_flushes_open_flows():
    s = Session()
    c, v = handshake(s)
    s.feed(seg(CLIENT, SERVER, c, v, payload=b"HELO\r\n"))
    recorder = s.finish()
    assert recorder.flows[0].reason == CloseReason.END
    assert s.counters.flows_flushed == 1


def test_truncated_segment_delivers_captured_bytes_then_gap():
    s = Session()
    c, v = handshake(s)
    s.feed(seg(CLIENT, SERVER, c, v, payload=b"AUTH PLAIN abc", wire_len=100))
    s.feed(seg(CLIENT, SERVER, c + 100, v, payload=b"\r\nQUIT\r\n"))
    flow = s.finish().flows[0]
    assert flow.gaps[0][:2] == (C2S, 86)
    assert flow.chunks[C2S][0].data == b"AUTH PLAIN abc"
    assert flow.client_data == b"AUTH PLAIN abc\r\nQUIT\r\n"


def test_direction_without_syn_uses_ports():
    s = Session(server_ports=frozenset({143}))
    s.feed(seg(("10.0.0.5", 143), ("10.0.0.6", 5555), 1, 1, payload=b"* OK\r\n"))
    s.feed(seg(("10.0.0.7", 6000), ("10.0.0.8", 7000), 1, 1, payload=b"x\r\n"))  # lower port is the server
    first, second = s.finish().flows
    assert (first.flow.client, first.flow.server) == ("10.0.0.6:5555", "10.0.0.5:143")
    assert (second.flow.client, second.flow.server) == ("10.0.0.8:7000", "10.0.0.7:6000")


def test_syn_decides_direction_even_on_odd_ports():
    s = Session()
    s.feed(seg(("10.0.0.5", 25), ("10.0.0.6", 80), 1, 0, SYN))
    assert s.finish().flows[0].flow.client == "10.0.0.5:25"


def test_ipv6_endpoints_are_bracketed():
    s = Session()
    client, server = ("2001:db8::1", 50000), ("2001:db8::25", 25)
    handshake(s, client=client, server=server)
    flow = s.finish().flows[0].flow
    assert flow.key == "[2001:db8::1]:50000->[2001:db8::25]:25"


def test_stray_ack_without_flow_is_counted_not_opened():
    s = Session()
    s.feed(seg(CLIENT, SERVER, 1, 1, ACK))
    assert s.recorder.flows == [] and s.counters.stray_segments == 1


def test_factory_declining_a_flow_ignores_its_packets():
    counters = CaptureCounters()
    reassembler = Reassembler(lambda flow: None, counters=counters, server_ports=MAIL_PORTS)
    reassembler.process(seg(CLIENT, SERVER, 1, 0, SYN), 1, 1.0)
    reassembler.process(seg(CLIENT, SERVER, 2, 0, payload=b"x" * 100), 2, 2.0)
    reassembler.flush()
    assert counters.flows_declined == 1 and counters.bytes_delivered == 0


def test_new_syn_on_open_tuple_starts_a_new_flow():
    s = Session()
    c, v = handshake(s, c_isn=100)
    s.feed(seg(CLIENT, SERVER, c, v, payload=b"HELO\r\n"))
    handshake(s, c_isn=90000)
    first, second = s.finish().flows
    assert first.reason == CloseReason.REUSED
    assert second.flow.id == 2 and not second.flow.partial


class TestClassifier:
    def test_mail_greeting_accepts_flow_and_replays_held_events(self):
        s = Session(classifier=classify_mail, server_ports=frozenset())
        server = ("10.0.0.2", 8025)
        c, v = handshake(s, server=server)
        s.feed(seg(server, CLIENT, v, c, payload=b"220 mx.example.com ESMTP\r\n"))
        flow = s.finish().flows[0]
        assert flow.events[0] == ("open",)
        assert flow.server_data == b"220 mx.example.com ESMTP\r\n"

    def test_non_mail_flow_is_dropped_early(self):
        s = Session(classifier=classify_mail, server_ports=frozenset())
        server = ("10.0.0.2", 22)
        c, v = handshake(s, server=server)
        s.feed(seg(CLIENT, server, c, v, payload=b"SSH-2.0-PuTTY_07\r\n"))
        s.feed(seg(server, CLIENT, v, c + 18, payload=b"SSH-2.0-OpenSSH_9.2\r\n" + b"x" * 5000))
        assert s.recorder.flows == []
        assert s.counters.flows_not_mail == 1
        flow: Flow = s.reassembler._flows[1]
        assert flow._halves is None

    @pytest.mark.parametrize(
        ("server", "client", "verdict"),
        [
            (b"220 mail.example.com ESMTP Postfix\r\n", b"", True),
            # a greeting is confirmed or refuted by what the client answers, not decided at its end
            (b"220 ProFTPD Server ready\r\n", b"", None),
            (b"220 ProFTPD Server ready\r\n", b"USER anonymous\r\n", False),
            (b"220 ProFTPD Server ready\r\n", b"AUTH TLS\r\n", None),  # FTP and SMTP both have AUTH
            (b"220 ProFTPD Server ready\r\n", b"AUTH TLS\r\nPBSZ 0\r\n", False),
            (b"220 mail01\r\n", b"EHLO client\r\n", True),
            (b"220 gw\r\n", b"", None),
            (b"+OK\r\n", b"*1\r\n$4\r\nPING\r\n", False),  # Redis answers +OK to RESP commands
            (b"+OK\r\n", b"CAPA\r\n", True),
            # picked up mid-stream: a command only mail has, and a reply of that protocol
            (b"250 2.1.0 Ok\r\n", b"RCPT TO:<b@example.test>\r\n", True),
            (b"250 2.1.0 Ok\r\n", b"", None),
            (b"a2 OK done\r\n", b"a2 LOGIN bob secret\r\n", True),
            # HTTP is a carrier of NTLM and Basic credentials: kept, read by the HTTP dissector
            (b"HTTP/1.1 200 OK\r\n", b"GET / HTTP/1.1\r\n", True),
            (b"+OK POP3 ready\r\n", b"", True),
            (b"* OK [CAPABILITY IMAP4rev1] ready\r\n", b"", True),
            (b"* PREAUTH hi\r\n", b"", True),
            (b"SSH-2.0-OpenSSH\r\n", b"", False),
            (b"220 partial", b"", None),
            (b"", b"EHLO x\r\n", True),
            (b"", b"EHLO\r\n", True),
            (b"", b"CAPA\r\n", True),
            (b"", b"EHLO", None),  # the command may go on
            (b"", b"EHLOX\r\n", None),
            (b"", b"GET / HTTP/1.1\r\n", True),
            (b"", b"GET / RTSP/1.0\r\n", None),  # the server's reply decides
            (b"", b"AUTH NTLM\r\n", None),
        ],
    )
    def test_default_classifier(self, server, client, verdict):
        label = classify_mail(server, client)  # a protocol name keeps the flow, "" drops it
        assert (None if label is None else bool(label)) is verdict
