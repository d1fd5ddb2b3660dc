"""Segments a receiver discards for their ACK field (passive.capture.acks): a decoy without the ACK flag, or one
acknowledging bytes the server never sent, is no bytes the server read (tests/test_receiver.py shows a Linux receiver
reading the real ones); a capture that lost some of the server's segments still has its client's bytes read."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap

from passive.capture.acks import too_old
from passive.capture.linklayer import ACK, SYN
from passive.capture.stream import HalfStream
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_checksums import DECOY, REAL, _insertion, _summary
from tests.test_relay_transactions import CLIENT, SERVER, analyze, relays, transaction, turns


def _no_ack(planted: Ether) -> bytes:
    planted[TCP].flags = "P"
    del planted[IP].len, planted[IP].chksum, planted[TCP].chksum
    return bytes(planted)


def _unsent_ack(planted: Ether) -> bytes:
    planted[TCP].ack = (planted[TCP].ack + 100_000) & 0xFFFFFFFF
    del planted[IP].len, planted[IP].chksum, planted[TCP].chksum
    return bytes(planted)


def _too_old_ack(planted: Ether) -> bytes:
    planted[TCP].ack = (planted[TCP].ack - 1_000_000) & 0xFFFFFFFF  # the capture's segments have no window scale
    del planted[IP].len, planted[IP].chksum, planted[TCP].chksum
    return bytes(planted)


def _half_away_ack(planted: Ether) -> bytes:
    planted[TCP].ack = (planted[TCP].ack + (1 << 31)) & 0xFFFFFFFF
    del planted[IP].len, planted[IP].chksum, planted[TCP].chksum
    return bytes(planted)


@pytest.mark.parametrize(
    "plant",
    [_no_ack, _unsent_ack, _too_old_ack, _half_away_ack],
    ids=["no ACK flag", "ACK of unsent bytes", "ACK too old", "ACK half the sequence space away"],
)
def test_a_foreign_rcpt_the_receiver_discards_for_its_ack_field_is_no_open_relay(tmp_path: Path, plant) -> None:
    """The decoy's checksums are right; its ACK field makes the server discard it, and it reads the local RCPT."""
    pcap = _insertion(tmp_path / "planted.pcap", DECOY, REAL, transaction(rcpts=("a@contoso.com",)), plant)
    assert relays(analyze(pcap)) == []
    summary = _summary(pcap)
    assert summary["ack_drops"] == 1 and summary["checksum_drops"] == 0
    assert relays(analyze(pcap, "--reassembly", "first")) == [("open-relay", "high", True)]


def test_a_fin_without_the_ack_flag_ends_nothing(tmp_path: Path) -> None:
    """A FIN the server discards, planted before the RCPT: the session goes on, and its relay is found."""
    segments = conversation_segments(turns(transaction(rcpts=("v@outside.tst",))), CLIENT, SERVER)
    frames = ethernet_frames(segments)
    out: list[tuple[float, bytes]] = []
    for (ts, frame), segment in zip(frames, segments, strict=True):
        if segment[5].startswith(b"RCPT"):
            fin = frame.copy()
            fin[TCP].flags = "F"
            del fin[Raw], fin[IP].len, fin[IP].chksum, fin[TCP].chksum
            out.append((ts - 0.0005, bytes(fin)))
        out.append((ts, bytes(frame)))
    pcap = tmp_path / "fin.pcap"
    pcap.write_bytes(pcap_bytes(out))
    assert relays(analyze(pcap, "--local-domain", "contoso.com")) == [("open-relay", "high", True)]
    assert _summary(pcap)["ack_drops"] == 1


def test_a_capture_that_lost_server_segments_still_reads_the_client(tmp_path: Path) -> None:
    """The first line of the server's EHLO reply is not in the capture: the client's next segments acknowledge bytes
    the capture does not hold, and the server's acknowledge the client's held ones. Each is held until its receiver
    acknowledges it, then read: the relay is found as in the whole capture, nothing dropped."""
    segments = conversation_segments(turns(transaction(rcpts=("v@outside.tst",))), CLIENT, SERVER)
    frames = ethernet_frames(segments)
    whole = tmp_path / "whole.pcap"
    whole.write_bytes(pcap_bytes([(ts, bytes(frame)) for ts, frame in frames]))
    lost = tmp_path / "lost.pcap"
    kept = [(ts, bytes(f)) for (ts, f), seg in zip(frames, segments, strict=True) if not seg[5].startswith(b"250-mx")]
    assert len(kept) == len(frames) - 1
    lost.write_bytes(pcap_bytes(kept))
    expected = relays(analyze(whole, "--local-domain", "contoso.com"))
    assert expected == [("open-relay", "high", True)]
    assert relays(analyze(lost, "--local-domain", "contoso.com")) == expected
    summary = _summary(lost)
    assert summary["ack_drops"] == 0 and summary["gaps"] == 1


def test_what_is_held_is_bounded_over_all_flows_and_given_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every flow's client sends segments acknowledging bytes its server never sent: held, within MAX_HELD_DIRECTION
    per direction (past it the oldest is dropped) and MAX_HELD_BYTES over all flows (past it the new one is); the
    flows' end gives every byte back."""
    from passive.capture import doubtful
    from tests.test_reassembly import Session, handshake, seg

    size, flows = 1_000, 8
    cost = doubtful.HELD_SEGMENT_COST + size
    monkeypatch.setattr(doubtful, "MAX_HELD_DIRECTION", 16 * cost)
    monkeypatch.setattr(doubtful, "MAX_HELD_BYTES", 50 * cost)
    session = Session()
    for number in range(flows):
        client = ("10.0.0.1", 40000 + number)
        c, v = handshake(session, client=client)
        for index in range(18):
            session.feed(seg(client, ("10.0.0.2", 25), c + index * size, v + 5_000, payload=b"x" * size))
        assert session.reassembler._held_bytes <= 50 * cost
    assert session.reassembler._held_bytes == 50 * cost  # 16 a flow, the fourth flow's 18 stopped at 50
    session.finish()  # the capture's end: what is held brought bytes nothing else did, and is read
    assert session.reassembler._held_bytes == 0
    read = sum(len(flow.client_data) for flow in session.recorder.flows)
    assert read == 50 * size and session.counters.ack_drops == flows * 18 - 50


def test_the_capture_cut_after_the_last_command_still_reads_it(tmp_path: Path) -> None:
    """The server's reply to EHLO is lost, the capture ends after AUTH PLAIN: nothing acknowledges it, but no other
    segment brought its bytes, so it is read at the capture's end (held until then)."""
    segments = conversation_segments(turns("\n".join([
        "S: 220 mx.contoso.com ESMTP", "C: EHLO client.example", "S: 250-mx.contoso.com", "S: 250 AUTH PLAIN",
        "C: AUTH PLAIN AGFsaWNlAHNlY3JldA==",
    ])), CLIENT, SERVER)  # fmt: skip
    frames = ethernet_frames(segments)
    kept = [(ts, bytes(f)) for (ts, f), seg in zip(frames, segments, strict=True) if not seg[5].startswith(b"250")]
    kept = kept[: next(i for i, (_, f) in enumerate(kept) if b"AUTH PLAIN AG" in f) + 1]
    pcap = tmp_path / "cut.pcap"
    pcap.write_bytes(pcap_bytes(kept))
    kinds = [f["type"] for f in analyze(pcap)]
    assert "cleartext-credentials" in kinds
    assert _summary(pcap)["ack_drops"] == 0


def test_held_segments_of_a_flow_named_no_mail_are_given_back() -> None:
    """A held segment is kept while the one read before it names the flow no mail (every-port mode): its bytes go
    back to the budget with the flow."""
    from passive.analysis.classify import classify_mail
    from passive.capture.linklayer import ACK
    from tests.test_reassembly import Session, handshake, seg

    session = Session(classifier=classify_mail, server_ports=frozenset())
    for number in range(3):
        client, server = ("10.0.0.1", 41000 + number), ("10.0.0.2", 8000)
        c, v = handshake(session, client=client, server=server)
        greeting = b"220 ftp01\r\n"  # a bare 220 waits for the client's first line
        session.feed(seg(server, client, v, c, payload=greeting))
        v += len(greeting)
        first = b"USER anonymous\r\n"  # FTP's USER: no mail
        session.feed(seg(client, server, c + len(first), v + 5000, payload=b"B" * 100))  # held, kept below
        session.feed(seg(client, server, c, v + 5000, payload=first))  # held
        session.feed(seg(server, client, v, c + len(first), ACK))  # the first is read: no mail
        assert session.reassembler._held_bytes == 0
    for number in range(3, 5):  # the capture ends first: both read then, the first names the flow no mail
        client, server = ("10.0.0.1", 41000 + number), ("10.0.0.2", 8000)
        c, v = handshake(session, client=client, server=server)
        session.feed(seg(server, client, v, c, payload=b"220 ftp01\r\n"))
        session.feed(seg(client, server, c, v + 5011, payload=b"USER anonymous\r\n"))
        session.feed(seg(client, server, c + 16, v + 5011, payload=b"B" * 100))
    session.finish()
    assert session.reassembler._held_bytes == 0 and session.counters.flows_not_mail == 5
    assert session.counters.ack_drops == 0  # a flow that is no mail held no decoy


def test_a_burst_after_a_lost_receiver_segment_is_read_once_acknowledged() -> None:
    """The capture lost a server segment; the client's next 40 segments acknowledge it, and are held until the
    server acknowledges them: all read, in order, none dropped."""
    from passive.capture.linklayer import ACK
    from tests.test_reassembly import CLIENT as C
    from tests.test_reassembly import SERVER as S
    from tests.test_reassembly import Session, handshake, seg

    session = Session()
    c, v = handshake(session)
    session.feed(seg(S, C, v, c, payload=b"220 mx\r\n"))
    lost = b"250 ok\r\n"  # sent, not in the capture
    body = [b"line %04d\r\n" % n for n in range(40)]
    at = c
    for line in body:
        session.feed(seg(C, S, at, v + 8 + len(lost), payload=line))
        at += len(line)
    session.feed(seg(S, C, v + 8 + len(lost), at, ACK))
    flow = session.finish().flows[0]
    assert flow.client_data == b"".join(body)
    assert session.counters.ack_drops == 0 and session.reassembler._held_bytes == 0


def test_a_bare_ack_of_unsent_bytes_moves_no_base_for_a_decoy(tmp_path: Path) -> None:
    """A bare ACK acknowledging bytes the server never sent (the receiver discards it) comes first, then the decoy
    with the same acknowledgement, then the real RCPT: the decoy is still held and dropped."""
    pcap = _insertion(tmp_path / "bare.pcap", DECOY, REAL, transaction(rcpts=("a@contoso.com",)), _unsent_ack)
    out: list[tuple[float, bytes]] = []
    for packet in rdpcap(str(pcap)):
        if packet.haslayer(Raw) and packet[Raw].load == DECOY:
            bare = packet.copy()
            del bare[Raw], bare[IP].len, bare[IP].chksum, bare[TCP].chksum
            out.append((float(packet.time) - 0.0001, bytes(bare)))  # the decoy's acknowledgement, alone
        out.append((float(packet.time), bytes(packet)))
    pcap.write_bytes(pcap_bytes(out))
    assert relays(analyze(pcap)) == []
    assert _summary(pcap)["ack_drops"] == 1


def test_a_pickup_with_much_in_flight_keeps_the_client_s_first_command(tmp_path: Path) -> None:
    """Picked up mid-stream (no SYN: the window scale unknown), the server 100 KB into an answer the client has not
    acknowledged yet: the client's pipelined LOGIN acknowledges far less than the server's first captured byte, and
    is no acknowledgement too old to a receiver whose windows are not known."""
    server, client = ("198.51.100.20", 143), ("192.0.2.10", 40000)
    frames: list[tuple[float, bytes]] = []

    def send(src, dst, seq, ack, load=b""):
        packet = Ether() / IP(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], seq=seq, ack=ack, flags="PA")
        frames.append((1.0 + len(frames) / 1000, bytes(packet / load if load else packet)))

    cs, ss, inflight = 5000, 900_000, 100_000
    for index in range(3):
        send(server, client, ss + inflight + index * 1400, cs, b"x" * 1400)
    login = b"a3 LOGIN alice s3cretpw\r\n"
    send(client, server, cs, ss, login)
    send(server, client, ss + inflight + 4200, cs + len(login), b"a3 OK LOGIN completed\r\n")
    send(client, server, cs + len(login), ss + inflight + 4223, b"a4 LOGOUT\r\n")
    pcap = tmp_path / "pickup.pcap"
    pcap.write_bytes(pcap_bytes(frames))
    assert "cleartext-credentials" in [finding["type"] for finding in analyze(pcap)]
    assert _summary(pcap)["ack_drops"] == 0


def test_a_fin_seen_before_the_bytes_it_acknowledges_still_ends_its_direction() -> None:
    """A capture merged from two taps shows the client's FIN before the server's last reply and FIN that it
    acknowledges: held, it ends the client's direction once the server acknowledges it, and the flow closes by FIN."""
    from passive.capture.flow import CloseReason
    from passive.capture.linklayer import ACK, FIN
    from tests.test_reassembly import CLIENT as C
    from tests.test_reassembly import SERVER as S
    from tests.test_reassembly import Session, handshake, seg

    session = Session()
    c, v = handshake(session)
    session.feed(seg(S, C, v, c, payload=b"220 mx\r\n"), seg(C, S, c, v + 8, payload=b"QUIT\r\n"))
    bye = b"221 bye\r\n"
    session.feed(seg(C, S, c + 6, v + 8 + len(bye) + 1, FIN | ACK))  # acknowledges the reply and FIN to come
    session.feed(seg(S, C, v + 8, c + 7, FIN | ACK, payload=bye))  # which acknowledges the client's FIN
    session.feed(seg(C, S, c + 7, v + 8 + len(bye) + 1, ACK))
    flow = session.only
    assert flow.reason == CloseReason.FIN and flow.server_data == b"220 mx\r\n" + bye
    assert session.counters.ack_drops == 0 and session.reassembler._held_bytes == 0


def _lines_run(monkeypatch: pytest.MonkeyPatch, held: int, packets: int, attack: str) -> int:
    """How many lines of passive/capture the reassembler runs for ``packets`` packets once the client holds ``held``
    one-byte segments acknowledging bytes the server never sent: bare ACKs from the server acknowledging less than
    their end (``bare``), or each settling the oldest while the client holds one more (``settle``), or segments of
    either side acknowledging bytes past all the other side holds (``both``)."""
    import sys
    from collections.abc import Callable
    from types import FrameType

    from passive.capture.linklayer import ACK
    from tests.test_reassembly import CLIENT as C
    from tests.test_reassembly import SERVER as S
    from tests.test_reassembly import Session, handshake, seg

    session = Session()
    c, v = handshake(session)
    session.feed(seg(S, C, v, c, payload=b"220 mx\r\n"))
    v += 8
    for index in range(held):
        session.feed(seg(C, S, c + 10 + index, v + 100_000, payload=b"x"))
    lines = [0]

    def count(frame: FrameType, event: str, _arg: object) -> Callable | None:  # a trace function
        if "passive/capture/" not in frame.f_code.co_filename:
            return None
        lines[0] += event == "line"
        return count

    sys.settrace(count)
    try:
        for index in range(packets):
            if attack == "both":
                session.feed(seg(S, C, v + 10 + index, c + 10_000_000, payload=b"y"))
                session.feed(seg(C, S, c + 10 + held + index, v + 10_000_000, payload=b"x"))
            elif attack == "settle":
                session.feed(seg(S, C, v, c + 11 + index, ACK))
                session.feed(seg(C, S, c + 10 + held + index, v + 100_000, payload=b"x"))
            else:
                session.feed(seg(S, C, v, c, ACK))
    finally:
        sys.settrace(None)
    assert session.reassembler._held_bytes > 0
    return lines[0]


@pytest.mark.parametrize("attack", ["bare", "settle", "both"])
def test_held_segments_are_not_walked_again_for_every_packet(monkeypatch: pytest.MonkeyPatch, attack: str) -> None:
    """A sender holds hundreds of one-byte segments (each costs HELD_SEGMENT_COST, so a direction holds about
    680), then sends packets that settle none or one of them: each packet costs the same work however many are
    held (it cost a pass over them all: 10 to 70 times a plain packet's time)."""
    few = _lines_run(monkeypatch, 10, 100, attack)
    many = _lines_run(monkeypatch, 600, 100, attack)
    assert many < 1.5 * few


def test_what_held_segments_are_counted_covers_what_they_hold() -> None:
    """600 one-byte segments held (each a new bytes object, frame number and time, as a capture gives them):
    the memory they take is no more than what the bounds count for them."""
    import tracemalloc

    from tests.test_reassembly import CLIENT as C
    from tests.test_reassembly import SERVER as S
    from tests.test_reassembly import Session, handshake, seg

    session = Session()
    c, v = handshake(session)
    session.feed(seg(S, C, v, c, payload=b"220 mx\r\n"))
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for index in range(600):
            session.feed(seg(C, S, c + 10 + index, v + 100_000, payload=b"%c" % (index % 256)))
        taken = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert session.counters.ack_drops == 0
    assert 0 < taken <= session.reassembler._held_bytes


def test_a_segment_with_a_wrong_checksum_yields_to_a_right_one_held_at_its_place(tmp_path: Path) -> None:
    """The capture lost the server's reply to MAIL, so the client's real RCPT, acknowledging it, is held until the
    server acknowledges the RCPT; a decoy with a wrong checksum came just before it at the same place, held too. The
    server's acknowledgement settles both: the right one is read (the receiver never took the other), not the one
    held first (which then dropped the real one as a copy of bytes delivered)."""
    script = transaction(rcpts=("a@contoso.com",))
    pcap = _insertion(tmp_path / "lost-reply.pcap", DECOY, REAL, script, lost="250 2.1.0")  # the MAIL's reply lost
    summary = _summary(pcap)
    assert summary["checksum_drops"] == 1 and summary["ack_drops"] == 0  # the decoy dropped, the real RCPT read


def test_what_its_receiver_saw_acknowledged_counts_the_syn_and_every_byte() -> None:
    """An acknowledgement older than all its receiver saw acknowledged is too old (Linux: ``min(max_window,
    bytes_acked)``): the opener's SYN counts, and so do more than 4 GiB of bytes."""
    opener = HalfStream()
    opener.start(1000, SYN, False, 0, 65535)
    opener.win_known = True
    assert not too_old(opener, 1000)  # one before its first byte: only its SYN acknowledged, old by one
    assert too_old(opener, 999)
    answerer = HalfStream()
    answerer.start(1000, SYN | ACK, False, 0, 65535)
    answerer.win_known = True
    assert too_old(answerer, 1000)  # no SYN of its own counted: nothing acknowledged to be old by
    answerer.next_rel = 2**32 + 100  # more than 4 GiB read: the sequence numbers wrapped
    answerer.next_seq = answerer.acked = answerer.acked_high = (1001 + answerer.next_rel) & 0xFFFFFFFF
    assert not too_old(answerer, (answerer.acked_high - 1000) & 0xFFFFFFFF)
    assert too_old(answerer, (answerer.acked_high - 70_000) & 0xFFFFFFFF)  # past any window it could give
