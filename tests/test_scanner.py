"""The compiled packet scanner and its pure-Python twin: same admitted packets, same findings, on every capture.

Each capture of the shared corpus and of pcaps/ (pcapng converted to classic pcap by editcap, which the compiled
scanner reads) goes through the whole analysis twice, once per scanner, in every-port and port mode: the frames
handed to Python (sweep ticks included), the scanner's own counters, the run's counters and every finding record
must be equal. So must damaged variants of them (fuzz/corrupt.py's editcap errors and cuts), the shares of a
capture split between workers, and runs whose batches end after every packet. The decoder is compared on random
and crafted frames.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import passive.capture.scanner as scanning
from fuzz.corrupt import make_variants
from passive.analysis.classify import mail_capture_options
from passive.analysis.pipeline import Analysis, AnalysisOptions, analyze_captures
from passive.capture import engine as engine_module
from passive.capture import scanread
from passive.capture.linklayer import SUPPORTED_LINKTYPES, decode_tcp
from passive.capture.pcapfile import PCAP_MAGIC_NSEC, PCAP_MAGIC_USEC
from passive.capture.reassembly import Reassembler
from passive.results.records import finding_record
from passive.results.redaction import Redactor
from tests.corpus import CORPUS, require_corpus
from tests.test_tunnels import WRAPS, _segments

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = sorted((CORPUS / "pcaps").glob("*/*.pcap*")) + sorted((ROOT / "pcaps").glob("*.pcap"))
CLASSIC = {PCAP_MAGIC_USEC.to_bytes(4, "little"), PCAP_MAGIC_USEC.to_bytes(4, "big")} | {
    PCAP_MAGIC_NSEC.to_bytes(4, "little"),
    PCAP_MAGIC_NSEC.to_bytes(4, "big"),
}


@pytest.fixture(autouse=True, scope="module")
def _compiled_scanner() -> None:
    """Skips without the compiled scanner; under CI, where tests/setup-and-run.sh installs its compiler, fails."""
    if not scanread.native_available():
        reason = f"compiled scanner not built: {scanread.NATIVE_PROBLEM}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def classic_copy(path: Path, directory: Path) -> Path | None:
    """``path`` as a classic pcap file the compiled scanner reads (pcapng converted by editcap), or None."""
    if path.read_bytes()[:4] in CLASSIC:
        return path
    if shutil.which("editcap") is None:
        return None
    target = directory / f"{path.stem}.pcap"
    done = subprocess.run(["editcap", "-F", "pcap", str(path), str(target)], capture_output=True)
    return target if done.returncode == 0 and target.exists() else None


def record_admitted(monkeypatch: pytest.MonkeyPatch, items: list[tuple[int, bool]], kinds: set[str]) -> None:
    """Record what reaches reassembly: each segment's frame, and each sweep tick's (True). A segment the scanner
    admitted before it learnt its flow was dropped is dropped by the engine (and counted as the scanner counts it),
    so this is what a scanner admits in effect, whatever the batches."""
    process, expire = Reassembler.process, Reassembler.expire
    feed = engine_module.Engine.feed_items

    def recording_feed(self: Any, batch: list) -> None:
        kinds.add(type(self.scanner).__name__)
        feed(self, batch)

    def recording_process(self: Reassembler, segment: Any, frame: int, ts: float) -> None:
        items.append((frame, False))
        process(self, segment, frame, ts)

    def recording_expire(self: Reassembler, now: float) -> None:
        items.append((-1, True))
        expire(self, now)

    monkeypatch.setattr(engine_module.Engine, "feed_items", recording_feed)
    monkeypatch.setattr(Reassembler, "process", recording_process)
    monkeypatch.setattr(Reassembler, "expire", recording_expire)


def run(path: Path, backend: str, monkeypatch: pytest.MonkeyPatch, **options: Any) -> dict[str, Any]:
    """Everything a run shows: what reached reassembly, the scanner's counters, the run's counters, the findings."""
    items: list[tuple[int, bool]] = []
    scans: list[dict[str, int]] = []
    kinds: set[str] = set()
    add = scanread.add_scan_counts

    def recording_add(counters: Any, counts: dict[str, int]) -> None:
        scans.append({k: v for k, v in counts.items() if k not in ("admitted", "not_mail")})
        add(counters, counts)

    record_admitted(monkeypatch, items, kinds)
    monkeypatch.setattr(scanread, "add_scan_counts", recording_add)
    results = analyze_captures([str(path)], AnalysisOptions(backend=backend, keep_events=True, **options))
    monkeypatch.undo()
    redactor = Redactor(show_secrets=True)
    return {
        "scanner": kinds,
        "items": items,
        "scan": scans,
        "counts": results.counts(),
        "warnings": results.counters.warnings,
        "failed": results.failed,
        "findings": [finding_record(f, redactor=redactor) for f in results.findings],
        "hashes": results.stats.hashes,
        "skipped": (results.counters.segments_skipped, results.counters.bytes_skipped),
    }


def assert_same(compiled: dict[str, Any], python: dict[str, Any]) -> None:
    assert compiled["scanner"] <= {"Scanner"} and python["scanner"] <= {"PyScanner"}
    if compiled["failed"]:  # how far each reader got into a file it gave up on is its own: the failure is the fact
        for run in (compiled, python):
            run["counts"] = {k: v for k, v in run["counts"].items() if k != "bytes_read"}
    for name in ("items", "scan", "counts", "warnings", "failed", "findings", "hashes"):
        assert compiled[name] == python[name], name


@pytest.mark.parametrize("every_port", [True, False], ids=["every-port", "ports-only"])
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_both_scanners_admit_the_same_packets_and_find_the_same(
    path: Path, every_port: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_corpus("pcaps")
    classic = classic_copy(path, tmp_path)
    if classic is None:
        pytest.skip("no classic pcap form of this capture")
    compiled = run(classic, "auto", monkeypatch, all_ports=every_port)
    python = run(classic, "python", monkeypatch, all_ports=every_port)
    assert_same(compiled, python)


@pytest.mark.parametrize("path", CAPTURES[::3], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_damaged_variants_give_the_same_with_both_scanners(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_corpus("pcaps")
    if shutil.which("editcap") is None:
        pytest.skip("needs editcap")
    classic = classic_copy(path, tmp_path)
    if classic is None:
        pytest.skip("no classic pcap form of this capture")
    for variant in make_variants(classic, 4, tmp_path, random.Random(path.name)):
        compiled = run(variant, "auto", monkeypatch)
        python = run(variant, "python", monkeypatch)
        assert_same(compiled, python)


@pytest.mark.parametrize("path", CAPTURES[::4], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_batches_ending_after_every_packet_change_nothing(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is admitted does not depend on where batches end: verdicts that arrive late are applied as if on time.
    What is dropped unread does (bytes are dropped from the batch after the dissector allowed it), and changes
    nothing else: the same findings and counters, but for those of the bytes skipped."""
    require_corpus("pcaps")
    classic = classic_copy(path, tmp_path)
    if classic is None:
        pytest.skip("no classic pcap form of this capture")
    whole = run(classic, "auto", monkeypatch, skip_unread=False)
    for size in (1, 3):
        monkeypatch.setattr(scanning, "BATCH_PACKETS", size)
        for backend in ("auto", "python"):
            small = run(classic, backend, monkeypatch, skip_unread=False)
            assert small["items"] == whole["items"]
            for name in ("scan", "counts", "findings"):
                assert small[name] == whole[name], name
            skipping = run(classic, backend, monkeypatch)
            for name in ("counts", "findings"):
                assert skipping[name] == whole[name], name


@pytest.mark.parametrize("path", CAPTURES[1::3], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shares_of_a_capture_are_the_same_with_both_scanners(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Split between two workers: each scanner admits the same packets of its share, and the shares partition the
    flows (together they admit what one scanner admits, tick for tick)."""
    require_corpus("pcaps")
    classic = classic_copy(path, tmp_path)
    if classic is None:
        pytest.skip("no classic pcap form of this capture")
    shares = []
    for shard in (0, 1):
        per_backend = []
        for backend in ("auto", "python"):
            frames: list[tuple[int, bool]] = []
            record_admitted(monkeypatch, frames, set())
            analysis = Analysis()
            options = mail_capture_options(all_ports=True, backend=backend, shard=shard, shards=2)
            engine_module.analyze_file(classic, analysis.handler_factory, options)
            monkeypatch.undo()
            per_backend.append(frames)
        assert per_backend[0] == per_backend[1]
        shares.append(per_backend[0])
    whole = run(classic, "auto", monkeypatch)["items"]
    ticks = sum(tick for _frame, tick in whole)
    for share in shares:
        assert sum(tick for _frame, tick in share) == ticks
    packets = sorted(frame for share in shares for frame, tick in share if not tick)
    assert packets == sorted(frame for frame, tick in whole if not tick)


# -- the decoder ---------------------------------------------------------------------------------------------------

LINKTYPES = [*sorted(SUPPORTED_LINKTYPES), 147]


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(LINKTYPES), st.binary(max_size=160))
def test_decoders_agree_on_random_frames(linktype: int, data: bytes) -> None:
    assert scanread._cscan.decode(linktype, data) == decode_tcp(linktype, data)


def _crafted_frames() -> list[bytes]:
    frames = []
    for wrap in WRAPS.values():
        for packet in _segments()[:5]:
            frames.append(bytes(wrap(packet)))
    return frames


CRAFTED = _crafted_frames()


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(CRAFTED), st.integers(0, 200), st.integers(0, 255), st.integers(0, 260))
def test_decoders_agree_on_damaged_tunnels(frame: bytes, position: int, value: int, cut: int) -> None:
    """Every encapsulation the decoder peels, with one byte changed and the frame cut anywhere."""
    damaged = bytearray(frame)
    if position < len(damaged):
        damaged[position] = value
    damaged = damaged[: max(cut, 0)] if cut < len(damaged) else damaged
    assert scanread._cscan.decode(1, bytes(damaged)) == decode_tcp(1, bytes(damaged))


FILTERS = [
    "tcp",
    "not port 80",
    "host 10.0.6.1 or net 192.168.0.0/16",
    "vlan and tcp",
    "ip6 or (ip and ip[2:2] > 60)",
    "greater 100",
    "tcp[tcpflags] & tcp-syn != 0 or tcp[13] & 1 = 1",
    "tcp portrange 20-1000 and not src port 25",
    "ip[8] * 4 % 7 < 3",
]


@pytest.mark.parametrize("expr", FILTERS)
@pytest.mark.parametrize("path", CAPTURES[::5], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_user_filters_run_in_the_compiled_scanner_as_in_libpcap(
    path: Path, expr: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled scanner runs libpcap's compiled program itself; the twin asks libpcap (pcapy) per packet."""
    require_corpus("pcaps")
    if scanread.binding() is None:
        pytest.skip("BPF expressions need libpcap (pcapy-ng)")
    classic = classic_copy(path, tmp_path)
    if classic is None:
        pytest.skip("no classic pcap form of this capture")
    compiled = run(classic, "auto", monkeypatch, bpf=expr)
    python = run(classic, "python", monkeypatch, bpf=expr)
    assert_same(compiled, python)
