"""Seed inputs for the harnesses, taken from the project's captures (pcaps/) and the shared corpus.

Conversations are the reassembled streams of every mail flow in those captures, encoded with
:mod:`fuzz.conversation`; NTLMSSP seeds are the corpus vectors plus every NTLM blob found in the conversations;
capture seeds are the capture files themselves (those small enough for the harness); frame seeds are single frames.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

from fuzz import amplify, canary
from fuzz.conversation import CLIENT, SERVER, Record, encode
from passive.analysis.classify import mail_capture_options
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.capture import CaptureError, Chunk, CloseReason, Direction, Flow, analyze_file
from passive.capture.linklayer import SUPPORTED_LINKTYPES
from passive.capture.pcapfile import PacketReader
from passive.results.jsonio import write_json, write_jsonl
from passive.results.records import finding_record, summary_record

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
_NTLM_BASE64 = re.compile(rb"TlRMTVNTUA[A-Za-z0-9+/=]+")
_PORT_PROTOCOLS = {25: "smtp", 465: "smtp", 587: "smtp", 2525: "smtp", 110: "pop3", 995: "pop3", 143: "imap"}
_PORT_PROTOCOLS[993] = "imap"
_GREETINGS = ((b"220", "smtp"), (b"+OK", "pop3"), (b"* OK", "imap"), (b"* PREAUTH", "imap"))
_BASE64_LINE = re.compile(rb"^(?:[+]\s|334\s|\S+\s+AUTHENTICATE\s+\S+\s+|AUTH\s+\S+\s+)?([A-Za-z0-9+/=]{8,})\s*$")


def capture_paths() -> list[Path]:
    """Every capture of pcaps/ and of the shared corpus, in a stable order."""
    paths = sorted((REPO / "pcaps").glob("*.pcap"))
    corpus = CORPUS / "pcaps"
    if corpus.is_dir():
        paths += sorted(p for p in corpus.rglob("*") if p.is_file())
    return paths


class _Recording:
    def __init__(self, flow: Flow, flows: list[tuple[Flow, list[Record]]]) -> None:
        self.records: list[Record] = []
        flows.append((flow, self.records))

    def on_open(self, flow: Flow) -> None:
        pass

    def on_data(self, flow: Flow, direction: Direction, chunk: Chunk) -> None:
        side = CLIENT if direction is Direction.CLIENT_TO_SERVER else SERVER
        self.records.append(Record(side, chunk.data))

    def on_gap(self, flow: Flow, direction: Direction, missing: int, frame: int, ts: float) -> None:
        self.records.append(Record(CLIENT if direction is Direction.CLIENT_TO_SERVER else SERVER, gap=missing))

    def on_close(self, flow: Flow, reason: CloseReason) -> None:
        pass


def conversations() -> Iterator[tuple[str, list[Record]]]:
    """(protocol, records) for every mail flow of every capture."""
    for path in capture_paths():
        flows: list[tuple[Flow, list[Record]]] = []

        def factory(flow: Flow, flows: list[tuple[Flow, list[Record]]] = flows) -> _Recording:
            return _Recording(flow, flows)

        try:
            analyze_file(path, factory, mail_capture_options(all_ports=True, backend="python"))
        except CaptureError:
            continue
        for flow, records in flows:
            protocol = _PORT_PROTOCOLS.get(flow.server_port)
            if protocol is None:
                first = b"".join(r.data for r in records if r.side == SERVER)[:16]
                protocol = next((name for prefix, name in _GREETINGS if first.startswith(prefix)), None)
            if protocol and records:
                yield protocol, records


def _vector_blobs() -> Iterator[bytes]:
    directory = CORPUS / "vectors"
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.json")):
        for match in re.finditer(r'"hex"\s*:\s*"([0-9a-fA-F]+)"', path.read_text()):
            yield bytes.fromhex(match.group(1))


def _ntlm_blobs(records: list[Record]) -> Iterator[bytes]:
    for record in records:
        for match in _NTLM_BASE64.finditer(record.data):
            try:
                yield base64.b64decode(match.group(), validate=False)
            except (binascii.Error, ValueError):
                continue


def _frames() -> Iterator[bytes]:
    linktypes = [*sorted(SUPPORTED_LINKTYPES), 147]
    for path in capture_paths():
        try:
            reader = PacketReader(path)
            for number, packet in enumerate(reader):
                if number >= 40:
                    break
                if packet.linktype in linktypes:
                    yield bytes([linktypes.index(packet.linktype)]) + packet.data
        except Exception:  # a corpus file the reader refuses is simply not a seed
            continue


def _findings_files() -> Iterator[bytes]:
    """Each capture's findings as ``analyze --format jsonl`` and ``--format json`` write them."""
    for path in sorted((REPO / "pcaps").glob("*.pcap")):
        analysis = Analysis(AnalysisOptions())
        analysis.file = path.name
        try:
            analyze_file(path, analysis.handler_factory)
        except CaptureError:
            continue
        records = [finding_record(finding) for finding in analysis.findings]
        summary = summary_record(analysis.stats.to_dict(), analysis.findings)
        lines = io.StringIO()
        write_jsonl(lines, [*records, summary])
        yield lines.getvalue().encode()
        document = io.StringIO()
        write_json(document, records, summary)
        yield document.getvalue().encode()


def crafted_captures() -> Iterator[bytes]:
    """Small captures that expand far past the record cap: what a reader must refuse without buffering it.

    A gzip pcap whose header allows 4 GiB records, holding one 48 MiB record of zeros (48 KB compressed), and a
    gzip pcapng with one packet as big as a block may be (16 MiB).
    """
    size = 48 << 20
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0xFFFFFFFF, 1)
    yield gzip.compress(header + struct.pack("<IIII", 1, 0, size, size) + bytes(size), compresslevel=9, mtime=0)
    size = (16 << 20) - 64
    section = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
    interface = struct.pack("<IIHHII", 1, 20, 1, 0, 0, 20)
    total = 32 + size
    packet = struct.pack("<IIIIIII", 6, total, 0, 0, 1, size, size) + bytes(size) + struct.pack("<I", total)
    yield gzip.compress(section + interface + packet, compresslevel=9, mtime=0)


def build(directory: Path, max_len: dict[str, int] | None = None) -> dict[str, int]:
    """Write every seed set under ``directory/<set>/``; returns the number of seeds per set."""
    names = ("ntlmssp", "conversation", "base64", "smtp", "pop3", "imap", "capture", "frames", "findings")
    names += ("amplify", "canary", "none")
    sets: dict[str, dict[str, bytes]] = {name: {} for name in names}
    limits = max_len or {}

    def add(name: str, data: bytes) -> None:
        limit = limits.get(name)
        if limit is not None and len(data) > limit:
            data = data[:limit]
        sets[name][hashlib.sha1(data).hexdigest()] = data

    for blob in _vector_blobs():
        add("ntlmssp", blob)
    for protocol, records in conversations():
        encoded = encode(protocol, records)
        add(protocol, encoded)
        add("conversation", encoded)
        for blob in _ntlm_blobs(records):
            add("ntlmssp", blob)
        for record in records:
            for line in record.data.split(b"\n"):
                match = _BASE64_LINE.match(line.strip())
                if match:
                    add("base64", match.group(1))
    for path in capture_paths():
        size = path.stat().st_size
        if size <= limits.get("capture", 65536):
            add("capture", path.read_bytes())
    for data in crafted_captures():
        add("capture", data)
    for frame in _frames():
        add("frames", frame)
    for findings in _findings_files():
        add("findings", findings)
    add("none", b"")
    for shape in amplify.KNOWN_SHAPES.values():
        add("amplify", amplify.shape_to_bytes(shape, 60 * 1024))
    for seed in canary.SEEDS:
        add("canary", seed)
    counts = {}
    for name, seeds in sets.items():
        target = directory / name
        target.mkdir(parents=True, exist_ok=True)
        for digest, data in seeds.items():
            (target / digest).write_bytes(data)
        counts[name] = len(seeds)
    (directory / "counts.json").write_text(json.dumps(counts, indent=2))
    return counts
