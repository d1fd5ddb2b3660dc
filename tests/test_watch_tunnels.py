"""``watch --jobs 2`` on a span port carrying overlays: each VXLAN or Geneve endpoint picks the outer UDP source port
from its own hash of the inner flow, so the two directions of one mail session travel in outer packets the kernel's
``PACKET_FANOUT_HASH`` spreads apart. The capture processes' fanout program (passive/capture/fanout_bpf.py) hashes
the inner flow instead: replayed on a link, the sessions give what ``analyze`` gives from the file, none of them cut
in two. (With the kernel's hash, 25 of 40 such sessions lost their auth-methods finding.)"""

from __future__ import annotations

import signal
from pathlib import Path

from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from tests.helpers_capture import pcap_bytes, write
from tests.test_tunnel_tenants import MAC, _dialogue
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
    client, server, cport = f"10.1.0.{session % 200 + 1}", f"10.2.{session}.25", 40000 + session
    seq = {"c": 1000, "s": 5000}
    frames: list[tuple[float, Packet]] = []

    def segment(side: str, flags: str, payload: bytes = b"") -> None:
        other = "s" if side == "c" else "c"
        forward = side == "c"
        src, dst, sport, dport = (client, server, cport, 25) if forward else (server, client, 25, cport)
        inner = IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq[side], ack=seq[other])
        seq[side] += len(payload) + ("S" in flags or "F" in flags)
        outer = _outer(forward, session, geneve=session % 2 == 1)
        frames.append((start + len(frames) * 0.001, outer / (inner / Raw(payload) if payload else inner)))

    segment("c", "S")
    segment("s", "SA")
    segment("c", "A")
    for side, data in _dialogue(f"MAIL{session}", f"mail{session}.example", 0):
        segment(side, "PA", data)
        segment("c" if side == "s" else "s", "A")
    segment("c", "FA")
    segment("s", "FA")
    segment("c", "A")
    return frames


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
        _wait_for(lambda: _comparable(_stored(db)) == expected, "the store to hold what analyze finds")
    finally:
        _out, err = _stop(watch, signal.SIGTERM)
    assert watch.returncode == 0, err
    assert "warning" not in err
    summary = _run_row(db)
    assert summary is not None and summary["flows"] == SESSIONS and summary["flows_partial"] == 0
    processes = summary["capture_processes"]
    assert len(processes) == 2 and all(process["received"] > 0 for process in processes)
