"""``watch --jobs 2`` on a span port carrying overlays: each VXLAN or Geneve endpoint picks the outer UDP source port
from its own hash of the inner flow, so the two directions of one mail session travel in outer packets the kernel's
``PACKET_FANOUT_HASH`` spreads apart. The capture processes' fanout program (passive/capture/fanout_bpf.py) hashes
the inner flow instead: replayed on a link, the sessions give what ``analyze`` gives from the file, none of them cut
in two. (With the kernel's hash, 25 of 40 such sessions lost their auth-methods finding.)"""

from __future__ import annotations

import signal
from pathlib import Path

from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet

from tests.helpers_capture import pcap_bytes, write
from tests.test_tunnel_tenants import MAC, _dialogue
from tests.test_tunnel_tenants import _session as tenant_session
from tests.test_watch import (
    REPLAY_IF,
    REPLAY_NS,
    WATCH_IF,
    _analyze,
    _comparable,
    _run,
    _run_row,
    _start_watch,
    _stop,
    _stored,
    _wait_for,
    _watch_started,
    needs_libpcap,
    replay_link,  # noqa: F401 - the fixture
)

VTEPS = ("192.0.2.1", "192.0.2.2")
SESSIONS = 40


def _outer(forward: bool, session: int, geneve: bool) -> Packet:
    """What each endpoint wraps its side in: its own source port for the same inner flow."""
    src, dst = VTEPS if forward else VTEPS[::-1]
    sport = 49152 + (session * 7919 if forward else session * 104729 + 17) % 16000
    udp = UDP(sport=sport, dport=6081 if geneve else 4789)
    header = GENEVE(vni=100, proto=0x6558) if geneve else VXLAN(vni=100)
    return Ether(**MAC) / IP(src=src, dst=dst) / udp / header / Ether(**MAC)


def _session(session: int, start: float) -> list[tuple[float, Packet]]:
    """One NTLM SMTP session in VXLAN (even sessions) or Geneve (odd), its packets a millisecond apart."""
    client = f"10.1.0.{session % 200 + 1}"
    dialogue = _dialogue(f"MAIL{session}", f"mail{session}.example", 0)
    packets = tenant_session(25, dialogue, client, f"10.2.{session}.25", 40000 + session)
    return [
        (start + n * 0.001, _outer(packet[IP].src == client, session, geneve=session % 2 == 1) / packet)
        for n, packet in enumerate(packets)
    ]


def _capture(path: Path) -> Path:
    frames = [frame for session in range(SESSIONS) for frame in _session(session, 1_800_000_000.0 + session)]
    return write(path, pcap_bytes(frames))


@needs_libpcap
def test_two_capture_processes_keep_each_tunnelled_session_whole(replay_link: None, tmp_path: Path) -> None:  # noqa: F811
    capture, db = _capture(tmp_path / "overlay.pcap"), tmp_path / "overlay.db"
    expected = _comparable(_analyze([capture], all_ports=True))
    assert sum(1 for kind, _server, _key in expected if kind == "auth-methods") == SESSIONS
    watch = _start_watch(REPLAY_NS, WATCH_IF, "--jobs", "2", "--db", str(db), "--quiet")
    try:
        _wait_for(_watch_started(db), "watch to start")
        replay = _run(["ip", "netns", "exec", REPLAY_NS, "tcpreplay", "-q", "-i", REPLAY_IF, "--mbps", "20",
                       str(capture)])  # fmt: skip
        assert replay.returncode == 0, replay.stderr
        _wait_for(lambda db=db: _comparable(_stored(db)) == expected, "the store to hold what analyze finds")
    finally:
        _out, err = _stop(watch, signal.SIGTERM)
    assert watch.returncode == 0, err
    assert "warning" not in err
    summary = _run_row(db)
    assert summary is not None and summary["flows"] == SESSIONS and summary["flows_partial"] == 0
    processes = summary["capture_processes"]
    assert len(processes) == 2 and all(process["received"] > 0 for process in processes)


def _fragmented_capture(path: Path) -> Path:
    """The VXLAN sessions of :func:`_session`, every outer packet past 180 bytes fragmented by its endpoint into
    pieces of 160 bytes or less (a tunnel whose path MTU is small): a capture joins the pieces again."""
    frames: list[tuple[float, Packet]] = []
    for session in range(0, SESSIONS, 2):
        for time, frame in _session(session, 1_800_000_000.0 + session):
            outer = frame[IP]
            pieces = fragment(outer, 160) if len(outer) > 180 else [outer]
            frames += [(time, Ether(**MAC) / piece) for piece in pieces]
    return write(path, pcap_bytes(frames))


@needs_libpcap
def test_tunnel_packets_fragmented_outside_are_joined_whole_and_a_short_snaplen_is_warned_of(
    replay_link: None,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The fanout group has the kernel join IPv4 fragments before its program runs: every session reaches one
    process whole. A joined packet is longer than each piece, so a --snaplen that keeps every piece (which one process
    joining them itself reads whole) cuts it: that run says so (20 sessions replayed with --snaplen 256 lost all their
    ntlm-info findings, without a word)."""
    capture = _fragmented_capture(tmp_path / "fragmented.pcap")
    expected = _comparable(_analyze([capture], all_ports=True))
    assert sum(1 for kind, _server, _key in expected if kind == "ntlm-info") == SESSIONS // 2
    for snaplen in ("262144", "256"):
        db = tmp_path / f"fragmented-{snaplen}.db"
        watch = _start_watch(REPLAY_NS, WATCH_IF, "--jobs", "2", "--snaplen", snaplen, "--db", str(db), "--quiet")
        try:
            _wait_for(_watch_started(db), "watch to start")
            replay = _run(["ip", "netns", "exec", REPLAY_NS, "tcpreplay", "-q", "-i", REPLAY_IF, "--mbps", "20",
                           str(capture)])  # fmt: skip
            assert replay.returncode == 0, replay.stderr
            if snaplen == "262144":
                _wait_for(lambda db=db: _comparable(_stored(db)) == expected, "the store to hold what analyze finds")
            else:
                _wait_for(
                    lambda db=db: (_run_row(db) or {}).get("truncated_packets", 0) > 0, "cut packets to be counted"
                )
        finally:
            _out, err = _stop(watch, signal.SIGTERM)
        assert watch.returncode == 0, err
        summary = _run_row(db)
        assert summary is not None
        warned = [w for w in summary["warnings"] if "joins IPv4 fragments" in w]
        assert bool(warned) == (snaplen == "256"), summary["warnings"]
