"""A ring buffer read as one stream reads every flow as the file read whole does: each new file's scanner is told the
verdicts reached in earlier files (mail flows kept, others dropped), and keeps them at the flow's next packet.

Before, a new file's scanner had not started its clock, so the verdict it was told looked idle at the flow's next
packet and the flow started over as a new head: a mail session on an odd port spanning three files was cut past its
head in the middle one (its bytes there lost: gaps, an AUTH missed), and flows found not mail were admitted again
(their head re-read, then counted as undecided).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from passive.analysis.pipeline import AnalysisOptions, analyze_captures

ROOT = Path(__file__).resolve().parents[1]
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
# What differs between a capture and its pieces: how many files, and their headers' bytes.
PER_FILE = {"captures", "captures_joined", "bytes_read"}
# Packets per piece: a mail session of the generated capture (20 to 60 packets) spans three pieces or more.
PIECE_PACKETS = 7


def generated(path: Path) -> Path:
    """Mail on odd ports (every-port mode finds it by what it says) among web, TLS and SSH flows."""
    command = [sys.executable, str(ROOT / "bench" / "gen_capture.py"), "--size", "600K", "--seed", "7",
               "--mail-fraction", "0.3", "--odd-ports", "1", "--servers", "3", "--out", str(path)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return path


def run(*args: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    done = subprocess.run([*LEAKSCOPE, "analyze", "--format", "jsonl", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    summary = next(r for r in records if r.get("type") == "summary")
    return [r for r in records if r.get("type") != "summary"], summary


def flat(summary: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in summary.items():
        if isinstance(value, dict):
            out.update({f"{name}.{k}": v for k, v in flat(value).items()})
        elif name not in PER_FILE:
            out[name] = value
    return out


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("ring")
    whole = generated(directory / "whole.pcap")
    pieces = directory / "pieces"
    pieces.mkdir()
    subprocess.run(["editcap", "-F", "pcap", "-c", str(PIECE_PACKETS), str(whole), str(pieces / "ring.pcap")],
                   check=True)  # fmt: skip
    return whole, pieces


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_pieces_of_a_ring_are_read_as_the_whole_capture_is(ring: tuple[Path, Path], jobs: str) -> None:
    whole, pieces = ring
    records, summary = run("--jobs", jobs, str(pieces))
    reference, expected = run(str(whole))
    assert summary["captures_joined"] == len(list(pieces.iterdir())) - 1 > 10
    assert expected["gaps"] == 0 and expected["not_mail_packets"] > 0
    assert flat(summary) == flat(expected)  # gaps, undecided_packets, not_mail_packets, segments, tunnelled...
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in reference)
    assert any(r["type"] == "cleartext-credentials" for r in records)


def test_the_scanners_twin_keeps_the_verdicts_alike(ring: tuple[Path, Path]) -> None:
    whole, pieces = ring
    files = [str(p) for p in sorted(pieces.iterdir())]
    joined = analyze_captures(files, AnalysisOptions(backend="python")).counters
    alone = analyze_captures([str(whole)], AnalysisOptions(backend="python")).counters
    for name in ("gaps", "gap_bytes", "undecided_packets", "not_mail_packets", "segments", "flows_closed"):
        assert getattr(joined, name) == getattr(alone, name), name


def fragmented_vxlan(path: Path) -> Path:
    """An SMTP login inside VXLAN, each tunnel packet longer than 120 bytes fragmented outside (64-byte pieces)."""
    from scapy.layers.inet import IP, UDP, fragment
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes, write
    from tests.test_mail_on_other_ports import SMTP

    frames = []
    for ts, inner in ethernet_frames(conversation_segments(SMTP, ("10.7.0.1", 40000), ("10.7.0.2", 2626))):
        outer = IP(src="192.0.2.1", dst="192.0.2.2", id=len(frames)) / UDP(sport=5000, dport=4789) / VXLAN(vni=9)
        packet = outer / inner
        pieces = fragment(packet, fragsize=64) if len(packet) > 120 else [packet]
        frames += [(ts, Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / piece) for piece in pieces]
    return write(path, pcap_bytes(frames))


@pytest.mark.parametrize("backend", ["auto", "python"])
def test_a_tunnel_packet_fragmented_across_a_file_switch_is_joined(tmp_path: Path, backend: str) -> None:
    whole = fragmented_vxlan(tmp_path / "whole.pcap")
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    subprocess.run(["editcap", "-F", "pcap", "-c", "3", str(whole), str(pieces / "ring.pcap")], check=True)
    files = [str(p) for p in sorted(pieces.iterdir())]
    joined = analyze_captures(files, AnalysisOptions(backend=backend))
    alone = analyze_captures([str(whole)], AnalysisOptions(backend=backend))
    assert joined.counters.gaps == alone.counters.gaps == 0
    kinds = sorted((f.type.value, f.network) for f in joined.findings)
    assert kinds == sorted((f.type.value, f.network) for f in alone.findings)
    assert ("cleartext-credentials", "vxlan-vni:9") in kinds
