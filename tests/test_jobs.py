"""``--jobs N`` gives exactly what one process gives: the same finding records (counts, first and last seen,
evidence, details, fields) in the same order, the same counters, hash lines and per-session events; on every
capture of the shared corpus and of pcaps/, on a generated capture of many interleaved flows, on one whose flows
go idle and expire mid-session (the sweeps of several workers interleave), and with many captures in one run."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import passive.capture.scanner as scanning
from passive.analysis import merge, parallel
from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from passive.capture.pcapfile import PacketReader
from passive.results.records import event_record, finding_record
from passive.results.redaction import Redactor
from tests.corpus import CORPUS, require_corpus

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = sorted((CORPUS / "pcaps").glob("*/*.pcap*")) + sorted((ROOT / "pcaps").glob("*.pcap"))
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]


def outcome(paths: list[Path], jobs: int, **options: Any) -> dict[str, Any]:
    results = analyze_captures([str(p) for p in paths], AnalysisOptions(jobs=jobs, keep_events=True, **options))
    redactor = Redactor(show_secrets=True)
    return {
        "findings": [finding_record(f, redactor=redactor) for f in results.findings],
        "counts": results.counts(),
        "warnings": results.counters.warnings,
        "hashes": results.stats.hashes,
        "secrets": sorted(results.stats.secrets),
        "sessions": [
            (s.protocol, s.server, s.client, s.file, [event_record(e, redactor) for e in s.events], s.events_dropped)
            for s in results.analysis.sessions
        ],
        "analyzed": results.analyzed,
        "failed": results.failed,
    }


def assert_same(one: dict[str, Any], many: dict[str, Any]) -> None:
    for name in one:
        assert many[name] == one[name], name


@pytest.fixture
def split_small_captures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split even small captures between the workers (forked workers see the patched value)."""
    monkeypatch.setattr(parallel, "SHARD_MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "WHOLE_MAX_SHARE", 0)


@pytest.mark.parametrize("every_port", [True, False], ids=["every-port", "ports-only"])
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_two_workers_give_what_one_process_gives(path: Path, every_port: bool, split_small_captures: None) -> None:
    require_corpus("pcaps")
    assert_same(outcome([path], 1, all_ports=every_port), outcome([path], 2, all_ports=every_port))


def test_many_captures_in_one_run_spread_by_file_or_split(monkeypatch: pytest.MonkeyPatch) -> None:
    require_corpus("pcaps")
    one = outcome(CAPTURES, 1)
    assert_same(one, outcome(CAPTURES, 2))  # small captures: spread whole, one per worker in turn
    monkeypatch.setattr(parallel, "SHARD_MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "WHOLE_MAX_SHARE", 0)
    assert_same(one, outcome(CAPTURES, 3))  # each split between three workers


def _generated(tmp_path: Path, *extra: str) -> Path:
    path = tmp_path / "generated.pcap"
    command = [sys.executable, str(ROOT / "bench" / "gen_capture.py"), "--size", "4M", "--out", str(path), *extra]
    subprocess.run(command, check=True, capture_output=True)
    return path


@pytest.mark.parametrize(
    "extra",
    [
        ("--mail-fraction", "0.5", "--reorder", "0.01", "--retransmit", "0.01", "--vlan", "0.1"),
        ("--mail-fraction", "1.0", "--odd-ports", "1.0"),
        ("--mail-fraction", "0.3", "--tunnel", "0.3", "--odd-ports", "0.3"),
    ],
    ids=["mixed-perturbed", "all-mail-any-port", "tunnels"],
)
def test_many_interleaved_flows_give_what_one_process_gives(
    tmp_path: Path, extra: tuple[str, ...], split_small_captures: None
) -> None:
    path = _generated(tmp_path, *extra)
    one = outcome([path], 1)
    assert one["findings"] and one["counts"]["flows"] > 100
    assert_same(one, outcome([path], 2))


@pytest.mark.parametrize("chunk", [1, 7])
def test_effects_sent_in_small_chunks_give_what_one_process_gives(
    chunk: int, tmp_path: Path, split_small_captures: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session's later sightings are gathered and recorded before each chunk is sent: with a chunk of one or a
    few operations, every session's are recorded many times in mid-session, between other sessions' effects."""
    monkeypatch.setattr(parallel, "CHUNK_OPS", chunk)
    path = _generated(tmp_path, "--mail-fraction", "1.0", "--size", "1M", "--concurrency", "16")
    one = outcome([path], 1)
    assert one["counts"]["sessions"] and one["findings"]
    assert_same(one, outcome([path], 2))


def test_workers_send_effects_not_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --events the main process is sent no event at all (the detectors ran in the workers), and what it
    makes of their effects is what one process finds."""
    require_corpus("pcaps")
    paths = [str(p) for p in CAPTURES]

    def refuse(packed: Any) -> Any:
        raise AssertionError("events were sent to the main process")

    one = analyze_captures(paths, AnalysisOptions(jobs=1))
    monkeypatch.setattr(merge, "unpack_events", refuse)  # the main process's: workers are forked before it is used
    many = analyze_captures(paths, AnalysisOptions(jobs=2))
    redactor = Redactor(show_secrets=True)
    records = [finding_record(f, redactor=redactor) for f in one.findings]
    assert records and records == [finding_record(f, redactor=redactor) for f in many.findings]
    assert many.counts() == one.counts() and many.stats.hashes == one.stats.hashes


def test_workers_send_no_event_a_session_cannot_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    """With --events a session keeps its first ``max_events_per_session`` events and counts the rest: a worker sends
    the main process those it keeps and the number of the others, whatever the session goes on to say."""
    require_corpus("pcaps")
    most = 3
    one = outcome(CAPTURES, 1, max_events_per_session=most)
    assert any(dropped for *_, dropped in one["sessions"])
    unpacked: list[int] = []
    real_unpack = merge.unpack_events

    def counting(packed: Any) -> Any:
        unpacked.append(len(packed))
        return real_unpack(packed)

    monkeypatch.setattr(merge, "unpack_events", counting)  # the main process's: workers are forked before it is used
    assert_same(one, outcome(CAPTURES, 2, max_events_per_session=most))
    assert sum(unpacked) == sum(len(events) for *_, events, _dropped in one["sessions"])


def _with_pauses(captures: list[Path], target: Path) -> Path:
    """The captures' packets interleaved in one capture, with a 400 s silence after every seventh packet of each:
    flows expire (idle timeout 300 s) in the middle of their sessions and are picked up again after."""
    packets: list[tuple[float, bytes]] = []
    for index, capture in enumerate(captures):
        for number, packet in enumerate(PacketReader(capture)):
            if packet.linktype == 1:
                packets.append((1_700_000_000 + index * 37.0 + (number // 7) * 400.0 + number * 0.01, packet.data))
    packets.sort(key=lambda item: item[0])
    records = b"".join(
        struct.pack("<IIII", int(ts), round((ts % 1) * 1e6) % 1_000_000, len(data), len(data)) + data
        for ts, data in packets
    )
    target.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1) + records)
    return target


@pytest.mark.parametrize("batch", [37, 256, 2048])
def test_flows_expiring_in_the_middle_of_sessions_give_what_one_process_gives(
    batch: int, tmp_path: Path, split_small_captures: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also wherever batches end: a flow found not mail within a batch has the rest of its packets in that batch
    dropped as the scanner would have dropped them, which takes one after the idle timeout for a new flow."""
    monkeypatch.setattr(scanning, "BATCH_PACKETS", batch)
    path = _with_pauses(sorted((ROOT / "pcaps").glob("*.pcap")), tmp_path / "pauses.pcap")
    one = outcome([path], 1)
    assert one["counts"]["flows_expired"] > 10 and one["findings"]
    assert_same(one, outcome([path], 2))
    assert_same(one, outcome([path], 3))


def test_sessions_made_to_give_up_their_state_are_counted_with_jobs() -> None:
    """The dissector budget is a worker's: the sessions it made give up their partial state, and the bytes they gave
    up, are the run's counters as one process's are (each capture read whole by one worker, whose budget sees what
    one process's sees)."""
    paths = sorted((ROOT / "pcaps").glob("*.pcap"))
    one = outcome(paths, 1, max_dissector_bytes=64)
    assert one["counts"]["dissector_evictions"] > 0 and one["counts"]["dissector_bytes_evicted"] > 0
    assert_same(one, outcome(paths, 2, max_dissector_bytes=64))


def test_one_job_starts_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a process was started")

    monkeypatch.setattr(multiprocessing, "get_context", refuse)
    monkeypatch.setattr(multiprocessing, "Process", refuse)
    results = analyze_captures([str(ROOT / "pcaps" / "smtp-ntlm-success-curl.pcap")], AnalysisOptions(jobs=1))
    assert list(results.findings)
    assert parallel.plan_jobs(["/no/such/file"], None) == 1  # small input: the default reads in this process


def test_recorded_events_cross_the_pipe_unchanged() -> None:
    """Workers send events as flat tuples: rebuilt, they are equal to the dissectors' and have the same attributes
    in the same order (the --events records list them in that order)."""
    require_corpus("pcaps")
    results = analyze_captures([str(p) for p in CAPTURES], AnalysisOptions(jobs=1, keep_events=True))
    events = [event for session in results.analysis.sessions for event in session.events]
    assert len({type(event) for event in events}) >= 10
    packed = merge.pack_events(events)
    assert all(type(item) is tuple for item in packed)
    rebuilt = merge.unpack_events(pickle.loads(pickle.dumps(packed, protocol=5)))
    assert rebuilt == events
    for before, after in zip(events, rebuilt, strict=True):
        assert type(after) is type(before)
        assert list(vars(after).items()) == list(vars(before).items())
        assert list(vars(after.evidence).items()) == list(vars(before.evidence).items())


def _sized(directory: Path, count: int, size: int) -> list[list[str]]:
    """``count`` one-file groups of ``size`` bytes (sparse files: only their size is read)."""
    groups = []
    for number in range(count):
        path = directory / f"capture-{number:03d}.pcap"
        with path.open("wb") as stream:
            stream.truncate(size)
        groups.append([str(path)])
    return groups


def test_many_large_captures_go_whole_and_few_are_split(tmp_path: Path) -> None:
    big = parallel.SHARD_MIN_BYTES + 1
    many = _sized(tmp_path, 12, big)
    tasks = parallel.plan_tasks(many, 2)
    assert [[(shard, shards) for shard, shards, _files in mine] for mine in tasks] == [[(0, 1)] * 6] * 2
    indexes = [[files[0][0] for _shard, _shards, files in mine] for mine in tasks]
    assert indexes == [list(range(0, 12, 2)), list(range(1, 12, 2))]  # in capture order, balanced
    for few in (many[:1], many[:2]):  # each more than a quarter of a worker's part: split by flow
        tasks = parallel.plan_tasks(few, 2)
        assert [[(shard, shards) for shard, shards, _files in mine] for mine in tasks] == [
            [(worker, 2)] * len(few) for worker in range(2)
        ]
    (tmp_path / "small").mkdir()
    small = _sized(tmp_path / "small", 1, parallel.SHARD_MIN_BYTES - 1)
    assert parallel.plan_tasks(small, 2) == [[(0, 1, [(0, small[0][0])])], []]


def test_a_cluster_splits_by_the_same_rule_as_local_workers(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from passive.analysis.cluster import ClusterRun

    many = _sized(tmp_path, 12, parallel.SHARD_MIN_BYTES + 1)
    for groups, threads in ((many, 2), (many[:1], 2), (many[:2], 2), (many, 1), (many[:3], 3)):
        local = [task for mine in parallel.plan_tasks(groups, threads) for task in mine]
        cluster = [task for per_group in ClusterRun._plan(groups, threads) for task in per_group]
        assert sorted(cluster) == sorted(local)
    assert [len(tasks) for tasks in ClusterRun._plan(many, 2)] == [1] * 12  # many captures go whole
    assert [len(tasks) for tasks in ClusterRun._plan(many[:1], 2)] == [2]  # one is split


def test_a_failing_worker_is_reported(monkeypatch: pytest.MonkeyPatch, split_small_captures: None) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("worker broke")

    monkeypatch.setattr(parallel, "JoinedStream", broken)
    with pytest.raises(parallel.WorkerFailed, match="worker broke"):
        analyze_captures([str(ROOT / "pcaps" / "smtp-ntlm-success-curl.pcap")], AnalysisOptions(jobs=2))


def test_a_worker_out_of_memory_still_says_why_it_ended(
    monkeypatch: pytest.MonkeyPatch, split_small_captures: None
) -> None:
    """Memory exhausted: no import succeeds any more, yet the worker's report names the error."""
    import builtins

    def exhausted(*args: Any, **kwargs: Any) -> None:
        def no_import(*args: Any, **kwargs: Any) -> None:
            raise MemoryError("no memory for an import")

        monkeypatch.setattr(builtins, "__import__", no_import)  # in the forked worker only
        raise MemoryError("out of memory while reading")

    monkeypatch.setattr(parallel, "JoinedStream", exhausted)
    with pytest.raises(parallel.WorkerFailed, match="out of memory while reading"):
        analyze_captures([str(ROOT / "pcaps" / "smtp-ntlm-success-curl.pcap")], AnalysisOptions(jobs=2))


def test_command_line_output_is_the_same_with_jobs(tmp_path: Path) -> None:
    captures = [str(p) for p in sorted((ROOT / "pcaps").glob("smtp-*.pcap"))]
    outputs = []
    for jobs in ("1", "2"):
        done = subprocess.run(
            [*LEAKSCOPE, "analyze", "--format", "json", "--events", "--jobs", jobs, *captures],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]


def test_a_capture_expanded_by_a_process_of_its_own_is_never_split_by_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker reading a share would expand all of it: a group holding a large gzip (xz, bzip2) file goes whole
    to one worker; a smaller one, expanded by a thread, and a zstd one are split like a plain one."""
    import gzip
    import os

    import zstandard

    from passive.capture import expand

    big = parallel.SHARD_MIN_BYTES + 1
    plain = _sized(tmp_path, 1, big)
    packed = tmp_path / "capture.pcap.gz"
    with gzip.open(packed, "wb", compresslevel=0) as stream:
        stream.write(b"\0" * big)
    fast = tmp_path / "capture.pcap.zst"
    fast.write_bytes(zstandard.ZstdCompressor(level=1).compress(b"\0" * 16) + os.urandom(big))
    assert [len(mine) for mine in parallel.plan_tasks(plain, 2)] == [1, 1]  # split: a share per worker
    assert [len(mine) for mine in parallel.plan_tasks([[str(packed)]], 2)] == [1, 1]  # below EXPAND_APART_MIN
    monkeypatch.setattr(expand, "EXPAND_APART_MIN", packed.stat().st_size)
    assert parallel.plan_tasks([[str(packed)]], 2) == [[(0, 1, [(0, str(packed))])], []]
    ring = [plain[0] + [str(packed)]]  # a ring buffer's group with one such piece
    assert [len(mine) for mine in parallel.plan_tasks(ring, 2)] == [1, 0]
    monkeypatch.setattr(expand, "EXPAND_APART_MIN", 0)
    assert [len(mine) for mine in parallel.plan_tasks([[str(fast)]], 2)] == [1, 1]
