"""Segments a receiver discards for their ACK field (passive.capture.acks): a decoy without the ACK flag, or one
acknowledging bytes the server never sent, is no bytes the server read (tests/test_receiver.py shows a Linux receiver
reading the real ones); a capture that lost some of the server's segments still has its client's bytes read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_checksums import DECOY, REAL, _insertion
from tests.test_relay_transactions import CLIENT, SERVER, analyze, relays, run_cli, transaction, turns


def _summary(pcap: Path, *options: str) -> dict:
    for line in run_cli("analyze", "--format", "jsonl", *options, str(pcap)).stdout.splitlines():
        record = json.loads(line)
        if record.get("type") == "summary":
            return record
    raise AssertionError("no summary")


def _no_ack(planted: Ether) -> bytes:
    planted[TCP].flags = "P"
    del planted[IP].len, planted[IP].chksum, planted[TCP].chksum
    return bytes(planted)


def _unsent_ack(planted: Ether) -> bytes:
    planted[TCP].ack = (planted[TCP].ack + 100_000) & 0xFFFFFFFF
    del planted[IP].len, planted[IP].chksum, planted[TCP].chksum
    return bytes(planted)


@pytest.mark.parametrize("plant", [_no_ack, _unsent_ack], ids=["no ACK flag", "ACK of unsent bytes"])
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
    """Every flow's client sends segments acknowledging bytes its server never sent: held, within MAX_DOUBTFUL per
    direction and MAX_HELD_BYTES over all flows (past it, dropped); the flows' end gives every byte back."""
    from passive.capture import doubtful
    from tests.test_reassembly import Session, handshake, seg

    monkeypatch.setattr(doubtful, "MAX_HELD_BYTES", 50_000)
    session = Session()
    size, flows = 1_000, 8
    for number in range(flows):
        client = ("10.0.0.1", 40000 + number)
        c, v = handshake(session, client=client)
        for index in range(doubtful.MAX_DOUBTFUL + 2):
            session.feed(seg(client, ("10.0.0.2", 25), c + index * size, v + 5_000, payload=b"x" * size))
        assert session.reassembler._held_bytes <= 50_000
    assert session.reassembler._held_bytes == 50 * size  # 16 a flow, the third flow's 18 stopped at 50 000 bytes
    session.finish()
    assert session.reassembler._held_bytes == 0
    assert session.counters.ack_drops == flows * (doubtful.MAX_DOUBTFUL + 2)
