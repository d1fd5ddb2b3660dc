"""``leakscope watch`` on live interfaces: replayed captures, real servers and clients, SIGKILL, idle expiry.

Live tests need root (network namespaces, capture); they run in CI, which is root, and skip otherwise.
Captures are replayed with tcpreplay onto a veth pair inside a network namespace of this module's own;
the real servers and clients are those of the mail lab (tests/lab.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from dissectors.registry import MAIL_PORTS
from passive.analysis.classify import mail_capture_options
from passive.analysis.pipeline import Analysis
from passive.analysis.relays import Attempt
from passive.capture import analyze_file, libpcap_available
from passive.capture.live import BUFFER_MIB
from passive.cli.dashboard import dashboard as _dashboard
from passive.cli.dashboard import entry_line as _entry_line
from passive.findings.kinds import FindingType
from passive.findings.model import FindingSet
from passive.findings.schema import Severity
from passive.live.monitor import CROWDED, Monitor, WatchOptions, open_capture
from passive.results.records import finding_record
from passive.results.redaction import Redactor
from passive.results.store import FindingStore

ROOT = Path(__file__).resolve().parents[1]
PCAPS = sorted((ROOT / "pcaps").glob("*.pcap"))
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
REPLAY_NS = f"lswatch-{os.getpid()}"  # a run of its own: another test run on the machine kills only its own
REPLAY_IF, WATCH_IF = "lswt-r", "lswt-w"  # tcpreplay sends on one end, watch listens on the other
# Fields that depend on when and in which frame something was seen, not on what was seen.
VOLATILE = {"first_seen", "last_seen", "evidence", "evidence_dropped", "details", "details_dropped"}
VOLATILE_NTLM = {"clock_skew_seconds"}  # server clock minus capture time: replaying moves the capture time

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: live capture and network namespaces")
needs_libpcap = pytest.mark.skipif(not libpcap_available(), reason="needs libpcap (pcapy-ng)")


def _require_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        message = f"missing tools: {' '.join(missing)} (tests/setup-and-run.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def _wait_for(
    condition: Callable[[], bool], what: str, explain: Callable[[], str] | None = None, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"gave up waiting for {what}" + (f": {explain()}" if explain is not None else ""))


def _delete_namespace(name: str) -> None:
    if name in _run(["ip", "netns", "list"], check=False).stdout.split():
        for pid in _run(["ip", "netns", "pids", name], check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        _run(["ip", "netns", "delete", name], check=False)


@pytest.fixture(scope="module")
def replay_link() -> Iterator[None]:
    """A namespace holding one veth pair: frames sent on REPLAY_IF arrive on WATCH_IF and go nowhere else."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and live capture")
    _require_tools("ip", "tcpreplay")
    _delete_namespace(REPLAY_NS)
    try:
        _run(["ip", "netns", "add", REPLAY_NS])
        _run(["ip", "-n", REPLAY_NS, "link", "add", REPLAY_IF, "type", "veth", "peer", "name", WATCH_IF])
        for interface in (REPLAY_IF, WATCH_IF):
            # No IPv6 on the link: no neighbour chatter; no addresses: nothing answers the replayed packets.
            _run(["ip", "netns", "exec", REPLAY_NS, "sysctl", "-qw", f"net.ipv6.conf.{interface}.disable_ipv6=1"])
            _run(["ip", "-n", REPLAY_NS, "link", "set", interface, "up"])
        yield
    finally:
        _delete_namespace(REPLAY_NS)


def _start_watch(namespace: str, interface: str, *arguments: str) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", namespace, *LEAKSCOPE, "watch", "-i", interface, *arguments]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _watch_started(db: Path) -> Callable[[], bool]:
    """True once the watch under test recorded its run: its capture handle is open by then."""

    def started() -> bool:
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
                return connection.execute("SELECT count(*) FROM runs WHERE command = 'watch'").fetchone()[0] > 0
        except sqlite3.Error:
            return False

    return started


def _stored(db: Path) -> list[dict[str, Any]]:
    with FindingStore(db, create=False) as store:
        return store.query()


def _identity(record: dict[str, Any]) -> tuple[Any, ...]:
    key: Any = None
    if record["type"] == "cleartext-credentials":
        key = (record.get("mechanism"), record.get("user"))
    elif record["type"] == "open-relay":
        key = record.get("accepted")
    return record["type"], record["server"], key


def _comparable(records: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    result = {}
    for record in records:
        skip = VOLATILE | (VOLATILE_NTLM if record["type"] == "ntlm-info" else set())
        result[_identity(record)] = {name: value for name, value in record.items() if name not in skip}
    return result


def _analyze(captures: list[Path], all_ports: bool = False) -> list[dict[str, Any]]:
    analysis = Analysis()
    for capture in captures:
        analysis.file = str(capture)
        analyze_file(capture, analysis.handler_factory, mail_capture_options(all_ports=all_ports))
    return [finding_record(finding) for finding in analysis.findings]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut short by SIGKILL
            records.append(json.loads(line))
    return records


# -- replayed captures -----------------------------------------------------------------------------------------


@needs_libpcap
def test_replayed_captures_give_what_analyze_gives_from_the_files(replay_link: None, tmp_path: Path) -> None:
    db, jsonl = tmp_path / "watch.db", tmp_path / "watch.jsonl"
    expected = _comparable(_analyze(PCAPS))
    watch = _start_watch(REPLAY_NS, WATCH_IF, "--ports-only", "--db", str(db), "--jsonl", str(jsonl), "--quiet")
    try:
        _wait_for(_watch_started(db), "watch to start")
        replay = _run(
            ["ip", "netns", "exec", REPLAY_NS, "tcpreplay", "-q", "-i", REPLAY_IF, "--topspeed", *map(str, PCAPS)]
        )
        assert replay.returncode == 0, replay.stderr
        _wait_for(lambda: _comparable(_stored(db)) == expected, "the store to hold what analyze finds")
    finally:
        out, err = _stop(watch, signal.SIGTERM)
    assert watch.returncode == 0, err
    assert out.startswith("leakscope watch: ") and "stopped_by=SIGTERM" in out and "kernel_dropped=" in out
    stored = _stored(db)
    assert _comparable(stored) == expected
    assert {r["evidence"][0]["file"] for r in stored if r["evidence"]} == {f"live:{WATCH_IF}"}
    # The JSONL file carries every change; its latest record of each finding is the stored one.
    latest = {_identity(record): record for record in _jsonl(jsonl)}
    assert latest == {_identity(record): record for record in stored}
    with FindingStore(db) as store:
        [run] = store.runs()
    assert run["ended_at"] and run["summary"]["stopped_by"] == "SIGTERM"
    assert run["summary"]["packets_read"] >= 800 and run["summary"]["flows"] == 37


@needs_libpcap
def test_watch_on_every_port_finds_what_analyze_finds_on_every_port(replay_link: None, tmp_path: Path) -> None:
    """The default: every TCP packet reaches the scanner, which keeps what the classifier says is mail; the servers
    on 1110 and 1143 that --ports-only misses are found too."""
    db = tmp_path / "every.db"
    expected = _comparable(_analyze(PCAPS, all_ports=True))
    assert {("mail-service", "10.99.0.1:1110"), ("mail-service", "10.99.0.1:1143")} <= {k[:2] for k in expected}
    watch = _start_watch(REPLAY_NS, WATCH_IF, "--db", str(db), "--quiet")
    try:
        _wait_for(_watch_started(db), "watch to start")
        replay = _run(
            ["ip", "netns", "exec", REPLAY_NS, "tcpreplay", "-q", "-i", REPLAY_IF, "--topspeed", *map(str, PCAPS)]
        )
        assert replay.returncode == 0, replay.stderr
        _wait_for(lambda: _comparable(_stored(db)) == expected, "the store to hold what analyze finds")
    finally:
        _out, err = _stop(watch, signal.SIGTERM)
    assert watch.returncode == 0, err
    assert _comparable(_stored(db)) == expected


def _run_row(db: Path) -> dict[str, Any] | None:
    """The watch run's stored summary (written as the run goes, then at its end), or None before there is one."""
    with contextlib.suppress(sqlite3.Error), FindingStore(db, create=False) as store:
        runs = [run for run in store.runs() if run["command"] == "watch"]
        return runs[0]["summary"] if runs else None
    return None


@needs_libpcap
def test_two_fanout_processes_find_what_analyze_finds(replay_link: None, tmp_path: Path) -> None:
    """watch --jobs 2: two capture processes in one PACKET_FANOUT_HASH group, each flow on one of them, every
    session replayed into the one writer; the captures at top speed give what analyze gives from the files."""
    db = tmp_path / "fanout.db"
    expected = _comparable(_analyze(PCAPS, all_ports=True))

    def _differences() -> str:
        stored = _comparable(_stored(db))
        keys = sorted(set(stored) | set(expected), key=repr)
        return "; ".join(
            f"{key}: " + ", ".join(f"{name} {stored.get(key, {}).get(name)!r} != {expected.get(key, {}).get(name)!r}"
                                   for name in sorted(set(stored.get(key, {})) | set(expected.get(key, {})))
                                   if stored.get(key, {}).get(name) != expected.get(key, {}).get(name))
            for key in keys if stored.get(key) != expected.get(key)
        )  # fmt: skip

    options = mail_capture_options(all_ports=True)
    flows = sum(analyze_file(capture, Analysis().handler_factory, options).flows for capture in PCAPS)
    watch = _start_watch(REPLAY_NS, WATCH_IF, "--jobs", "2", "--db", str(db), "--quiet")
    try:
        _wait_for(_watch_started(db), "watch to start")
        replay = _run(
            ["ip", "netns", "exec", REPLAY_NS, "tcpreplay", "-q", "-i", REPLAY_IF, "--topspeed", *map(str, PCAPS)]
        )
        assert replay.returncode == 0, replay.stderr
        _wait_for(lambda: _comparable(_stored(db)) == expected, "the store to hold what analyze finds", _differences)
    finally:
        out, err = _stop(watch, signal.SIGTERM)
    assert watch.returncode == 0, err
    assert "Traceback" not in err and "warning" not in err
    assert _comparable(_stored(db)) == expected
    summary = _run_row(db)
    assert summary is not None and summary["jobs"] == 2 and summary["stopped_by"] == "SIGTERM"
    processes = summary["capture_processes"]
    assert len(processes) == 2 and all(process["received"] > 0 for process in processes)  # both had flows
    assert summary["kernel_received"] == sum(process["received"] for process in processes)
    assert summary["kernel_dropped"] == sum(process["dropped"] for process in processes) == 0
    assert summary["flows"] == flows  # the processes' counters add up to one reader's
    assert f"kernel_received={summary['kernel_received']}" in out and "jobs=2" in out


@needs_libpcap
def test_kernel_drops_reach_the_summary_and_the_store(replay_link: None, tmp_path: Path) -> None:
    """A 1 MiB ring and an all-mail capture replayed at top speed: the kernel drops packets, and says so."""
    capture, db = tmp_path / "allmail.pcap", tmp_path / "drops.db"
    generate = [sys.executable, str(ROOT / "bench" / "gen_capture.py"), "--size", "12M", "--mail-fraction", "1.0"]
    _run([*generate, "--out", str(capture)])
    watch = _start_watch(REPLAY_NS, WATCH_IF, "--buffer-size", "1", "--db", str(db), "--quiet")
    try:
        _wait_for(_watch_started(db), "watch to start")
        top_speed = ["tcpreplay", "-q", "-i", REPLAY_IF, "--topspeed", "--loop", "2", str(capture)]
        for _attempt in range(5):  # a machine busy elsewhere may slow the replay as much as the reader
            replay = _run(["ip", "netns", "exec", REPLAY_NS, *top_speed])
            assert replay.returncode == 0, replay.stderr
            with contextlib.suppress(pytest.fail.Exception):
                _wait_for(lambda: ((_run_row(db) or {}).get("kernel_dropped") or 0) > 0, "drops", timeout=5)
                break
        # The run row has the drops while the run goes on: a watch killed later still says what it missed.
        _wait_for(lambda: ((_run_row(db) or {}).get("kernel_dropped") or 0) > 0, "the drops to reach the run row")
    finally:
        out, err = _stop(watch, signal.SIGTERM)
    assert watch.returncode == 0, err
    summary = _run_row(db)
    assert summary is not None and summary["stopped_by"] == "SIGTERM" and summary["buffer_size_mib"] == 1
    dropped, received = summary["kernel_dropped"], summary["kernel_received"]
    assert isinstance(dropped, int) and isinstance(received, int) and 0 < dropped < received
    assert isinstance(summary["interface_dropped"], int)
    assert summary["capture_processes"] == [
        {"received": received, "dropped": dropped, "interface_dropped": summary["interface_dropped"]}
    ]
    assert summary["dropped_percent"] == round(100 * (dropped + summary["interface_dropped"]) / received, 3)
    assert summary["drops_per_second_peak"] > 0
    # What was lost shows in the streams: flows with gaps, each counted once.
    assert 0 < summary["flows_with_gaps"] <= summary["gaps"]
    assert f"kernel_dropped={dropped} " in out and f"flows_with_gaps={summary['flows_with_gaps']} " in out
    # Message bodies were dropped below Python (passive.capture.skipping), and watch says how many.
    assert summary["segments_skipped"] > 0 and summary["bytes_skipped"] > 0


@needs_libpcap
def test_watch_jsonl_rotates_by_size_keeping_whole_records(replay_link: None, tmp_path: Path) -> None:
    db, jsonl = tmp_path / "watch.db", tmp_path / "watch.jsonl"
    arguments = ("--db", str(db), "--jsonl", str(jsonl), "--jsonl-rotate", "4k", "--jsonl-keep", "3", "--quiet")
    watch = _start_watch(REPLAY_NS, WATCH_IF, *arguments)
    try:
        _wait_for(_watch_started(db), "watch to start")
        replay = _run(
            ["ip", "netns", "exec", REPLAY_NS, "tcpreplay", "-q", "-i", REPLAY_IF, "--topspeed", *map(str, PCAPS)]
        )
        assert replay.returncode == 0, replay.stderr
        _wait_for(lambda: (tmp_path / "watch.jsonl.3").exists(), "three rotations")
    finally:
        _, err = _stop(watch, signal.SIGTERM)
    assert watch.returncode == 0, err
    files = sorted(tmp_path.glob("watch.jsonl*"))
    assert [f.name for f in files] == ["watch.jsonl", "watch.jsonl.1", "watch.jsonl.2", "watch.jsonl.3"]
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines and all(json.loads(line)["type"] for line in lines)  # whole records only
        if path.name != "watch.jsonl":
            # A file is closed at the first write past 4 KiB: it holds at least 4 KiB, and one record more at most.
            assert 4096 <= path.stat().st_size <= 4096 + max(len(line.encode()) + 1 for line in lines)


@needs_libpcap
def test_sigkill_during_watch_leaves_a_sound_store_with_every_committed_finding(
    replay_link: None, tmp_path: Path
) -> None:
    db, jsonl = tmp_path / "killed.db", tmp_path / "killed.jsonl"
    watch = _start_watch(REPLAY_NS, WATCH_IF, "--db", str(db), "--jsonl", str(jsonl), "--quiet")
    replay: subprocess.Popen[str] | None = None
    try:
        _wait_for(_watch_started(db), "watch to start")
        # The same sessions again and again, spread over several store commits.
        replay = subprocess.Popen(
            ["ip", "netns", "exec", REPLAY_NS, "tcpreplay", "-q", "-i", REPLAY_IF, "--pps", "1500", "--loop", "0"]
            + [str(p) for p in PCAPS],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def replayed_three_times() -> bool:
            return any(
                r["type"] == "mail-service" and r["server"] == "10.99.0.5:25" and r["count"] >= 6 for r in _jsonl(jsonl)
            )

        _wait_for(replayed_three_times, "three rounds of replayed sessions")
        watch.kill()
        watch.wait(10)
    finally:
        if replay is not None:
            replay.kill()
            replay.wait()
        _stop(watch, signal.SIGKILL)
    assert watch.returncode == -signal.SIGKILL
    committed = _jsonl(jsonl)  # written only after the commit that stored them
    assert committed
    with FindingStore(db) as store:
        assert store.integrity_check() == "ok"
        stored = {_identity(record): record for record in store.query()}
        [run] = store.runs()
    assert run["ended_at"] is None  # the run never got to say it ended
    for record in committed:
        assert _identity(record) in stored
        assert stored[_identity(record)]["count"] >= record["count"]


# -- flows expire and findings leave memory ---------------------------------------------------------------------


class _IdleSmtpServer:
    """Greets, answers EHLO, then leaves the connection open and silent."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _peer = self.listener.accept()
                self.connections.append(connection)
                connection.sendall(b"220 mx.idle.test ESMTP ready\r\n")
                connection.recv(200)
                connection.sendall(b"250-mx.idle.test\r\n250 AUTH PLAIN LOGIN\r\n")

    def session(self) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.port))
        client.recv(200)
        client.sendall(b"EHLO client.idle.test\r\n")
        client.recv(200)
        return client  # left open: only the idle timeout ends this flow

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@needs_root
@needs_libpcap
def test_idle_flows_expire_without_traffic_and_idle_findings_move_to_the_store(tmp_path: Path) -> None:
    server = _IdleSmtpServer()
    options = WatchOptions(
        "lo", bpf=f"tcp port {server.port}", all_ports=True, idle_timeout=1, retention=1, tick_interval=0.2
    )
    store = FindingStore(tmp_path / "idle.db")
    monitor = Monitor(options, store)
    runner = threading.Thread(target=monitor.run, args=(open_capture(options),))
    runner.start()
    clients = []
    try:
        clients.append(server.session())
        _wait_for(lambda: monitor.counters.flows_expired >= 1, "the idle flow to expire")
        _wait_for(lambda: monitor.findings_forgotten >= 2, "its findings to leave memory")
        clients.append(server.session())

        def both_sessions_stored() -> bool:
            with FindingStore(tmp_path / "idle.db") as reader:
                return {r["type"]: r["count"] for r in reader.query()} == {"mail-service": 2, "auth-methods": 2}

        _wait_for(both_sessions_stored, "the second session to add to the stored findings")
    finally:
        monitor.stop("test")
        runner.join(30)
        for client in clients:
            client.close()
        server.close()
        store.close()
    assert not runner.is_alive()
    assert monitor.counters.flows_expired >= 1 and monitor.counters.flows == 2
    assert len(monitor.analysis.findings) <= 2  # only the second session's, at most
    summary = monitor.summary()
    assert summary["flows_expired"] >= 1 and summary["findings_forgotten"] >= 2


@needs_root
@needs_libpcap
def test_fanout_processes_expire_their_flows_and_the_dashboard_shows_each_one(tmp_path: Path) -> None:
    """--jobs 2 on a real SMTP server: each process expires its idle flows, the parent forgets idle findings and
    adds later sessions to the stored ones, and the dashboard lists every process's counts."""
    server = _IdleSmtpServer()
    options = WatchOptions("lo", bpf=f"tcp port {server.port}", jobs=2, idle_timeout=1, retention=1, tick_interval=0.2)
    store = FindingStore(tmp_path / "fanout-idle.db")
    monitor = Monitor(options, store)
    runner = threading.Thread(target=monitor.run, args=(open_capture(options),))  # forks here, in this thread
    runner.start()
    clients = []
    try:
        for _ in range(4):
            clients.append(server.session())
        _wait_for(lambda: monitor.counters.flows_expired >= 4, "the idle flows to expire in their processes")
        _wait_for(lambda: monitor.findings_forgotten >= 2, "their findings to leave the parent's memory")
        clients.append(server.session())

        def every_session_stored() -> bool:
            with FindingStore(tmp_path / "fanout-idle.db") as reader:
                return {r["type"]: r["count"] for r in reader.query()} == {"mail-service": 5, "auth-methods": 5}

        _wait_for(every_session_stored, "the fifth session to add to the stored findings")
        _wait_for(lambda: len(monitor.drops.processes) == 2, "both processes to report their counts")
        buffer = io.StringIO()
        Console(file=buffer, width=200, color_system=None).print(_dashboard(monitor))
    finally:
        monitor.stop("test")
        runner.join(60)
        for client in clients:
            client.close()
        server.close()
        store.close()
    assert not runner.is_alive()
    [row] = [line for line in buffer.getvalue().splitlines() if "dropped / received" in line]
    shown = [tuple(int(n.replace(",", "")) for n in pair.split("/")) for pair in row.strip(" │").split()[-2:]]
    # Both processes are listed; which of them the kernel's flow hash gives the five sessions to is its choice (all
    # to one of them one time in sixteen), so only the total must show them.
    assert len(shown) == 2 and all(0 <= dropped <= received for dropped, received in shown)
    assert sum(received for _dropped, received in shown) > 0
    processes = monitor.drops.processes
    summary = monitor.summary()
    assert summary["jobs"] == 2 and len(summary["capture_processes"]) == 2
    assert summary["buffer_size_mib"] == BUFFER_MIB  # each process's ring
    assert summary["flows"] == 5 and summary["flows_expired"] >= 4
    assert summary["kernel_received"] == sum(p.received for p in processes) > 0
    assert not summary["warnings"]


def test_a_burst_of_new_findings_is_flushed_and_leaves_memory_before_the_finding_set_fills(tmp_path: Path) -> None:
    """Flushes are spaced out (FLUSH_SHARE), but not past the point where findings would be lost: once memory holds
    more than CROWDED times ``max_live_findings``, a tick writes them all and keeps only the most recent."""
    options = WatchOptions("lo", max_live_findings=100)
    store = FindingStore(tmp_path / "burst.db")
    monitor = Monitor(options, store)
    monitor.writer = store.writer("watch", Redactor(show_secrets=False))
    findings = monitor.analysis.findings
    now = 1_800_000_000.0

    def burst(first: int, count: int) -> None:
        for number in range(first, first + count):
            finding = findings.get(
                FindingType.MAIL_SERVICE, "smtp", f"192.0.2.{number % 250}:{2000 + number}", Severity.INFO
            )
            finding.seen(now + number / 1000, "198.51.100.7:40000")

    try:
        burst(0, int(CROWDED * 100))  # at the threshold: the flush waits for its turn
        monitor._next_flush = time.monotonic() + 3600
        monitor._tick(now + 1)
        assert len(findings) == int(CROWDED * 100) and monitor.findings_changed == 0
        burst(1000, 1)  # past it
        monitor._tick(now + 1)
        assert monitor.findings_changed == int(CROWDED * 100) + 1
        assert len(findings) == 100 and monitor.findings_forgotten == int(CROWDED * 100) + 1 - 100
        kept = sorted(finding.server for finding in findings)
        assert f"192.0.2.{1000 % 250}:3000" in kept  # the most recent stay in memory
        assert "192.0.2.0:2000" not in kept
        with FindingStore(tmp_path / "burst.db") as reader:
            assert len(list(reader.query())) == int(CROWDED * 100) + 1
        assert findings.dropped == 0
    finally:
        store.close()


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([0, 1, 3, 8]),
    st.lists(st.lists(st.tuples(st.integers(0, 11), st.sampled_from([None, 0, 1, 2, 5, 30]))), max_size=8),
)
def test_crowded_flushes_forget_only_what_the_store_has(max_live: int, ticks: list[list[tuple[int, Any]]]) -> None:
    """Whatever leaves memory (idle, past the cap, or past CROWDED times it) was written first, and a finding that
    comes back adds to its stored row: at the end the store counts every occurrence once, including findings never
    given a capture time (they stay in memory) and ``max_live_findings=0``."""
    options = WatchOptions("lo", max_live_findings=max_live, retention=10)
    store = FindingStore(":memory:")
    monitor = Monitor(options, store)
    monitor.writer = store.writer("watch", Redactor(show_secrets=False))
    findings = monitor.analysis.findings
    now, occurrences = 1_800_000_000.0, dict[str, int]()
    try:
        for tick, seen in enumerate(ticks):
            for number, age in seen:
                server = f"192.0.2.{number}:25"
                finding = findings.get(FindingType.MAIL_SERVICE, "smtp", server, Severity.INFO)
                finding.seen(None if age is None else now + tick * 10 - age, "198.51.100.7:40000")
                occurrences[server] = occurrences.get(server, 0) + 1
            monitor._next_flush = time.monotonic() + 3600  # only CROWDED makes this tick flush
            before = {id(f): f for f in findings}
            monitor._tick(now + tick * 10)
            if len(before) > CROWDED * max_live:  # flushed, then back under the cap (unseen findings stay)
                assert len(findings) <= max_live + sum(f.last_seen is None for f in findings)
            else:
                assert len(findings) == len(before)  # no flush, nothing forgotten
        monitor._flush()  # as run() does at the end
        stored = {record["server"]: record["count"] for record in store.query()}
        assert stored == occurrences
        assert findings.dropped == 0
    finally:
        store.close()


def test_a_finding_the_set_evicted_and_that_comes_back_adds_to_its_stored_row(tmp_path: Path) -> None:
    """A full finding set evicts the oldest inventory finding for a new one of another kind (FindingSet.MAX_FINDINGS);
    the store has what was written of it. The same server seen again later starts a fresh finding, whose counts add
    to the stored row as after any finding that left memory, instead of replacing them."""
    options = WatchOptions("lo", retention=10)
    store = FindingStore(tmp_path / "evicted.db")
    monitor = Monitor(options, store)
    monitor.writer = store.writer("watch", Redactor(show_secrets=False))
    monitor.analysis.findings = findings = FindingSet(max_findings=4)
    now = 1_800_000_000.0

    def tick(capture_now: float) -> None:
        monitor._next_flush = 0.0
        monitor._tick(capture_now)

    try:
        service = findings.get(FindingType.MAIL_SERVICE, "smtp", "192.0.2.1:25", Severity.INFO)
        for second in range(5):
            service.seen(now + second, "198.51.100.7:40000")
        tick(now + 5)
        for number in range(4):  # the set is full: the mail-service finding makes room
            findings.get(FindingType.NTLM_INFO, "smtp", f"192.0.2.{10 + number}:25", Severity.MEDIUM).seen(
                now + 6, None
            )
        assert findings.evicted == 1 and findings.find(FindingType.MAIL_SERVICE, "192.0.2.1:25") is None
        tick(now + 100)  # the NTLM findings are written and leave memory: idle past retention
        assert len(findings) == 0
        findings.get(FindingType.MAIL_SERVICE, "smtp", "192.0.2.1:25", Severity.INFO).seen(now + 100, "198.51.100.7:1")
        tick(now + 101)
        monitor._flush()
        stored = {(record["type"], record["server"]): record["count"] for record in store.query()}
        assert stored[("mail-service", "192.0.2.1:25")] == 6
        assert sum(count for (kind, _server), count in stored.items() if kind == "ntlm-info") == 4
    finally:
        store.close()


def test_an_open_relay_finding_that_left_memory_comes_back_with_the_run_count_not_added_twice() -> None:
    """The relay ledger keeps every attempt of the run and republishes a server's open-relay findings with all of
    them: once such a finding left memory (idle past retention), the next attempt's finding already counts what
    the store has from this run."""
    store = FindingStore(":memory:")
    monitor = Monitor(WatchOptions("lo", retention=10), store)
    monitor.writer = store.writer("watch", Redactor(show_secrets=False))
    ledger, findings = monitor.analysis.relays, monitor.analysis.findings
    relays = ledger.server("192.0.2.5:25", "smtp", "passive")
    now = 1_800_000_000.0

    def attempt(capture_time: float) -> None:
        ledger.record(
            findings,
            relays,
            Attempt(
                "198.51.100.9:4000", "a@example.org", "b@example.net", "example.net", True, "250 ok", capture_time, ()
            ),
        )

    def stored() -> int:
        return sum(record["count"] for record in store.query() if record["type"] == "open-relay")

    try:
        for second in range(3):
            attempt(now + second)
        monitor._tick(now + 3)
        assert stored() == 3
        monitor._next_flush = 0.0
        monitor._tick(now + 100)
        assert len(findings) == 0 and monitor.findings_forgotten == 1
        attempt(now + 100)
        monitor._next_flush = 0.0
        monitor._tick(now + 101)
        assert stored() == 4
    finally:
        store.close()


# -- the live filter -----------------------------------------------------------------------------------------------


@needs_libpcap
def test_live_filter_has_no_protochain_and_passes_mail_only() -> None:
    import pcapy  # type: ignore[import-untyped]
    from scapy.layers.inet6 import IPv6ExtHdrHopByHop

    from passive.capture import build_bpf_filter
    from tests.helpers_capture import ether, ipv4, ipv6, tcp

    # protochain compiles to a loop, which the Linux kernel refuses: libpcap would then filter in user space.
    expression = build_bpf_filter(MAIL_PORTS, protochain=False)
    assert "protochain" not in expression
    program = pcapy.compile(1, 262144, expression, 1, 0xFFFFFFFF)
    smtp, web = tcp(40000, 25, 1), tcp(40000, 443, 1)
    passes = {
        "IPv4 SMTP": ether(ipv4("10.0.0.1", "10.0.0.2", smtp)),
        "IPv6 IMAP": ether(ipv6("2001:db8::1", "2001:db8::2", tcp(40000, 143, 1)), 0x86DD),
        "IPv6 hop-by-hop then TCP": ether(ipv6("2001:db8::1", "2001:db8::2", smtp, ext=[IPv6ExtHdrHopByHop()]), 0x86DD),
        "VLAN-tagged IPv4 POP3": ether(ipv4("10.0.0.1", "10.0.0.2", tcp(40000, 110, 1)), tags=[(0x8100, 7)]),
    }
    for name, frame in passes.items():
        assert program.filter(bytes(frame)), name
    assert not program.filter(bytes(ether(ipv4("10.0.0.1", "10.0.0.2", web))))
    assert not program.filter(bytes(ether(ipv6("2001:db8::1", "2001:db8::2", web), 0x86DD)))


@needs_root
@needs_libpcap
def test_watch_takes_the_reassembly_policy_and_sizes_its_batches_in_bytes() -> None:
    from passive.capture.live import LIVE_BATCH_BYTES

    capture = open_capture(WatchOptions(interface="lo", reassembly_policy="bsd"))
    try:
        assert capture.options.reassembly_policy == "bsd"
        assert capture._batch * 262144 <= LIVE_BATCH_BYTES  # next_batch counts packets: at most 16 MiB of them
    finally:
        capture.close()
    help_text = subprocess.run(["leakscope", "watch", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--reassembly" in help_text and "[default: linux]" in help_text


def test_buffer_size_and_jobs_are_documented_and_bounded() -> None:
    help_text = _run([*LEAKSCOPE, "watch", "--help"]).stdout
    assert "--buffer-size" in help_text and f"[default: {BUFFER_MIB};" in help_text and "PACKET_FANOUT" in help_text
    for wrong in (["--jobs", "0"], ["--buffer-size", "0"], ["--buffer-size", "100000"]):
        result = _run([*LEAKSCOPE, "watch", "-i", "lo", *wrong], check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, wrong


# -- the dashboard stays inert ------------------------------------------------------------------------------------


def test_dashboard_and_log_lines_show_hostile_names_as_escapes(tmp_path: Path) -> None:
    monitor = Monitor(WatchOptions("eth-test"), FindingStore(":memory:"))
    monitor.writer = monitor.store.writer("watch")
    for capture in sorted((ROOT / "pcaps").glob("*hostile-names*.pcap")):
        analyze_file(capture, monitor.analysis.handler_factory, mail_capture_options())
    monitor._flush()
    buffer = io.StringIO()
    Console(file=buffer, width=200, force_terminal=True, color_system="truecolor").print(_dashboard(monitor))
    lines = "\n".join(_entry_line(entry) for entry in monitor.feed.values())
    for text in (buffer.getvalue(), lines):
        assert "\x1b[31mred" not in text and "\x1b]8;;" not in text
        assert "\\x1b[31mred" in text
    assert "10.99.0.5:25" in buffer.getvalue() and len(monitor.servers) == 3


# -- errors ---------------------------------------------------------------------------------------------------------


@needs_root
@needs_libpcap
def test_missing_capture_privilege_is_one_line_naming_cap_net_raw(tmp_path: Path) -> None:
    _require_tools("setpriv")
    # Root without CAP_NET_RAW in its bounding set: what an unprivileged user gets.
    argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-net_raw,-net_admin", *LEAKSCOPE, "watch", "-i", "lo"]
    result = _run([*argv, "--db", str(tmp_path / "f.db")], check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "CAP_NET_RAW" in result.stderr and "root" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "f.db").exists()


@needs_root
@needs_libpcap
def test_unknown_interface_is_one_line_listing_the_available_ones() -> None:
    result = _run([*LEAKSCOPE, "watch", "-i", "no-such-if0", "--quiet"], check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "'no-such-if0'" in result.stderr
    assert "available: " in result.stderr and "lo" in result.stderr.split("available: ")[1]


# -- real servers and clients -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The suite's mail lab (fixture ``mail_lab``) when conftest provides it; otherwise one for this module."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the mail lab runs in network namespaces")
    try:
        yield request.getfixturevalue("mail_lab")
        return
    except pytest.FixtureLookupError:
        pass
    from tests.lab import MailLab

    with MailLab() as own:
        yield own


@needs_libpcap
def test_watch_on_the_lab_link_stores_what_real_servers_leak(lab: Any, tmp_path: Path) -> None:
    from tests import lab as mail

    _require_tools("curl", "swaks")
    db = tmp_path / "lab.db"
    message = tmp_path / "message.eml"
    message.write_text(f"From: <{mail.MAIL_FROM}>\r\nTo: <{mail.MAIL_TO}>\r\nSubject: watch\r\n\r\nHello.\r\n")
    watch = _start_watch(lab.client_namespace, lab.client_interface, "--db", str(db), "--quiet")
    win = mail.FAKE_PROFILES[mail.WIN2019_IP]
    try:
        _wait_for(_watch_started(db), "watch to start")
        curl = ["curl", "-sS", "--max-time", "30", "--login-options", "AUTH=NTLM"]
        swaks = ["swaks", "--port", "25", "--ehlo", mail.EHLO_NAME, "--from", mail.MAIL_FROM, "--timeout", "30"]
        plain = ["--auth", "PLAIN", "--auth-user", mail.USER2, "--auth-password", mail.PASSWORD2]
        upload = ["--mail-from", mail.MAIL_FROM, "--mail-rcpt", mail.MAIL_TO, "-T", str(message)]
        clients = [
            # Dovecot answering NTLM through Samba's winbind.
            [
                *curl,
                f"pop3://{mail.SRV_IP}:110/",
                "-u",
                f"{mail.AD_DOMAIN}\\{mail.USER}:{mail.PASSWORD}",
                "-o",
                os.devnull,
            ],
            # Postfix taking a clear-text AUTH PLAIN.
            [*swaks, "--server", mail.SRV_IP, "--to", mail.MAIL_TO, *plain],
            # The open relay.
            [*swaks, "--server", mail.RELAY_IP, "--to", mail.RELAY_RCPT],
            # The Windows-like server's NTLM challenge over SMTP.
            [*curl, f"smtp://{mail.WIN2019_IP}:25", "-u", f"{win['domain']}\\{win['user']}:{win['password']}", *upload],
        ]
        for argv in clients:
            result = lab.client(argv)
            assert result.returncode == 0, result.stderr.decode(errors="replace")

        def stored_everything() -> bool:
            kinds = {(r["type"], r["server"]) for r in _stored(db)}
            wanted = {
                ("ntlm-info", f"{mail.SRV_IP}:110"),
                ("cleartext-credentials", f"{mail.SRV_IP}:25"),
                ("open-relay", f"{mail.RELAY_IP}:25"),
                ("ntlm-info", f"{mail.WIN2019_IP}:25"),
            }
            return wanted <= kinds

        _wait_for(stored_everything, "the findings of every client to land in the store")
    finally:
        out, err = _stop(watch, signal.SIGINT)
    assert watch.returncode == 0, err
    assert "stopped_by=SIGINT" in out
    stored = {(r["type"], r["server"]): r for r in _stored(db)}
    dovecot = stored[("ntlm-info", f"{mail.SRV_IP}:110")]
    assert dovecot["netbios_computer"] == mail.DC_NAME and dovecot["dns_domain"] == mail.DNS_DOMAIN
    assert dovecot["users"] == [f"{mail.AD_DOMAIN}\\{mail.USER}"] and dovecot["outcome"] == "success"
    credentials = stored[("cleartext-credentials", f"{mail.SRV_IP}:25")]
    assert credentials["user"] == mail.USER2 and credentials["password"] == "********"
    assert credentials["outcome"] == "success"
    relay = stored[("open-relay", f"{mail.RELAY_IP}:25")]
    assert relay["accepted"] is True and relay["rcpt_to"] == mail.RELAY_RCPT
    windows = stored[("ntlm-info", f"{mail.WIN2019_IP}:25")]
    assert windows["netbios_computer"] == win["netbios_computer"] and windows["os_version"] == "10.0.17763"
    assert windows["dns_tree"] == win["dns_tree"] and windows["users"] == [f"{win['domain']}\\{win['user']}"]
    service = stored[("mail-service", f"{mail.SRV_IP}:25")]
    assert service["software"] and "Postfix" in service["software"]
