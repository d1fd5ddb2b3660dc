"""Reassembled mail streams of the public corpus equal tshark's ``follow,tcp,raw`` output.

For every corpus capture that carries SMTP, POP3 or IMAP (per truth/_summary.jsonl), each
TCP stream on a mail port is followed with tshark and compared per direction with what
the engine delivered, on both readers (libpcap and pure Python). Every delivered chunk
must also cite a frame of that stream and direction, with that frame's timestamp.

Documented, asserted differences:

* a direction picked up without a SYN starts after its first ``\\n`` (resync), so the
  expected bytes are tshark's from that point on;
* where the engine reported a gap, tshark's output has no marker for it; the engine's
  stream must then equal tshark's with each resynced partial line removed (checked by
  matching every delivered run, in order, inside tshark's bytes).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from dissectors.registry import MAIL_PORTS
from passive.analysis.classify import mail_capture_options
from passive.capture import CaptureCounters, Direction, analyze_file, libpcap_available
from tests.helpers_capture import Recorded, Recorder

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SUMMARY = CORPUS / "truth" / "_summary.jsonl"


def _mail_captures() -> list[str]:
    if not SUMMARY.is_file():
        return []
    names = []
    for line in SUMMARY.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("smtp_packets") or entry.get("pop_packets") or entry.get("imap_packets"):
            names.append(entry["file"])
    return sorted(names)


MAIL_CAPTURES = _mail_captures()

pytestmark = [
    pytest.mark.skipif(not CORPUS.is_dir(), reason=f"public test corpus not found at {CORPUS}"),
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
]


@dataclass
class TsharkStream:
    index: int
    nodes: tuple[str, str] = ("", "")
    data: tuple[bytearray, bytearray] = field(default_factory=lambda: (bytearray(), bytearray()))
    frames: dict[int, tuple[str, float, int]] = field(default_factory=dict)  # frame -> (source endpoint, ts, tcp.len)


def _endpoint(addr: str, port: str) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@cache
def tshark_streams(name: str) -> dict[int, TsharkStream]:
    path = CORPUS / "pcaps" / name
    fields = [
        "frame.number",
        "frame.time_epoch",
        "tcp.stream",
        "ip.src",
        "ipv6.src",
        "tcp.srcport",
        "tcp.dstport",
        "tcp.len",
    ]
    cmd = ["tshark", "-r", str(path), "-Y", "tcp", "-T", "fields", "-E", "occurrence=l"]
    for name_ in fields:
        cmd += ["-e", name_]
    # check=False: tshark exits 2 on a damaged file after printing the packets before the damage.
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    streams: dict[int, TsharkStream] = {}
    for line in out.splitlines():
        frame, ts, stream, src4, src6, sport, dport, length = line.split("\t")
        if int(sport) not in MAIL_PORTS and int(dport) not in MAIL_PORTS:
            continue
        entry = streams.setdefault(int(stream), TsharkStream(int(stream)))
        entry.frames[int(frame)] = (_endpoint(src4 or src6, sport), float(ts), int(length or 0))
    if not streams:
        return streams
    cmd = ["tshark", "-r", str(path), "-q"]
    for index in streams:
        cmd += ["-z", f"follow,tcp,raw,{index}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    current: TsharkStream | None = None
    for line in out.splitlines():
        match = re.match(r"Filter: tcp\.stream eq (\d+)", line)
        if match:
            current = streams[int(match.group(1))]
            continue
        match = re.match(r"Node ([01]): (.*)$", line)
        if match and current is not None:
            nodes = list(current.nodes)
            nodes[int(match.group(1))] = match.group(2)
            current.nodes = (nodes[0], nodes[1])
            continue
        if current is None or not line.strip() or line.startswith(("=", "Follow:")):
            continue
        node = 1 if line.startswith("\t") else 0
        current.data[node].extend(bytes.fromhex(line.strip()))
    return streams


def _run_engine(name: str, backend: str) -> tuple[Recorder, CaptureCounters]:
    recorder = Recorder()
    # tshark follows every segment whatever its checksum (it checks none by default): so does the engine here.
    options = mail_capture_options(backend=backend, check_checksums=False)
    counters = analyze_file(CORPUS / "pcaps" / name, recorder, options)
    return recorder, counters


def _flows_for(recorder: Recorder, stream: TsharkStream) -> list[Recorded]:
    nodes = set(stream.nodes)
    return [r for r in recorder.flows if {r.flow.client, r.flow.server} == nodes]


def _expected(tshark_bytes: bytes, record: Recorded, direction: Direction) -> bytes:
    """tshark's bytes adjusted for the documented resync at a mid-stream start."""
    chunks = record.chunks[direction]
    if not chunks or chunks[0].offset == 0:
        return tshark_bytes
    # The direction was picked up mid-stream: data starts after the first line end.
    newline = tshark_bytes.find(b"\n")
    return tshark_bytes[newline + 1 :] if newline >= 0 else b""


def _check_stream(stream: TsharkStream, record: Recorded) -> None:
    for direction in Direction:
        sender = record.flow.client if direction == Direction.CLIENT_TO_SERVER else record.flow.server
        node = stream.nodes.index(sender)
        tshark_bytes = bytes(stream.data[node])
        delivered = record.data(direction)
        has_gap = any(g[0] == direction for g in record.gaps)
        if not has_gap:
            assert delivered == _expected(tshark_bytes, record, direction), (
                f"stream {stream.index} {direction.name}: {len(delivered)} bytes delivered, tshark has "
                f"{len(tshark_bytes)}"
            )
        else:
            # tshark concatenates across holes; every run the engine delivered must appear, in order.
            position = 0
            for chunk in record.chunks[direction]:
                found = tshark_bytes.find(chunk.data, position)
                assert found >= 0, f"stream {stream.index} {direction.name}: chunk at frame {chunk.frame} not in tshark"
                position = found + len(chunk.data)
        for chunk in record.chunks[direction]:
            assert chunk.frame in stream.frames, f"chunk cites frame {chunk.frame}, not in stream {stream.index}"
            source, ts, length = stream.frames[chunk.frame]
            assert source == sender
            assert abs(ts - chunk.ts) < 2e-6
            assert len(chunk.data) <= length


# SMTP carried inside a SOCKS5 session (port 1080) or an HTTP CONNECT tunnel (port 8240).
NO_MAIL_PORT = {"arkime/socks5-smtp-503.pcap", "zeek/connect-with-smtp.pcap"}
# A record header claims a 3.9 GB packet part-way through; tshark also stops there.
DAMAGED = {"suricata-verify/smtp-to-comma__10.7.29.101_49898-178.63.41.150_25.pcap"}

BACKENDS = ["python", "libpcap"] if libpcap_available() else ["python"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", MAIL_CAPTURES)
def test_mail_streams_match_tshark(name: str, backend: str) -> None:
    streams = tshark_streams(name)
    recorder, counters = _run_engine(name, backend)
    if name in DAMAGED:
        assert counters.anomalies >= 1
        assert any("corrupt" in w for w in counters.warnings), counters.warnings
    else:
        assert counters.anomalies == 0, counters.warnings
    with_data = [s for s in streams.values() if s.data[0] or s.data[1]]
    if name in NO_MAIL_PORT:
        # Mail tunnelled through another port: nothing on a mail port for tshark, nor for the engine.
        assert not with_data
        assert not any(r.client_data or r.server_data for r in recorder.flows)
        return
    assert with_data, f"{name}: no mail stream with data according to tshark"
    for stream in with_data:
        flows = _flows_for(recorder, stream)
        assert flows, f"{name}: tshark stream {stream.index} {stream.nodes} has no flow in the engine"
        # A 4-tuple reused within the capture is one tshark stream per connection; match by first frame.
        first_frame = min(stream.frames)
        record = min(flows, key=lambda r: abs(r.flow.first_frame - first_frame))
        _check_stream(stream, record)


def test_corpus_has_mail_captures() -> None:
    assert len(MAIL_CAPTURES) >= 30
