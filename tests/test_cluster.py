"""``analyze --scheduler``: a real Dask cluster on loopback (``dask scheduler`` and two ``dask worker`` processes)
gives what one process gives, the client alone writing the outputs and the store; a worker killed mid-run has its
tasks run again by Dask, with the same findings, and the summary says so."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
START_TIMEOUT = 90  # seconds for the scheduler and workers to come up on a loaded machine
RUN_TIMEOUT = 600
CLUSTER_KEYS = ("cluster_tasks", "tasks_retried")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    dask = shutil.which("dask")
    assert dask, "the dask command is not installed (pip install distributed)"
    scheduler_file = tmp_path / "scheduler.json"
    common = {"cwd": ROOT, "env": _env(), "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
         str(scheduler_file)], **common,
    )  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not scheduler_file.exists() and time.monotonic() < deadline and scheduler.poll() is None:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        for name in ("one", "two"):
            workers.append(subprocess.Popen(
                [dask, "worker", address, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                 "--no-dashboard", "--name", name], **common,
            ))  # fmt: skip
        with distributed.Client(address, timeout=START_TIMEOUT) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
        yield address, workers
    finally:
        for process in [*workers, scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*workers, scheduler]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def analyze(*args: str) -> tuple[list[str], dict[str, Any]]:
    done = subprocess.run([*LEAKSCOPE, "analyze", "--format", "jsonl", *args], capture_output=True, text=True,
                          cwd=ROOT, env=_env(), timeout=RUN_TIMEOUT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return parse(done.stdout)


def parse(output: str) -> tuple[list[str], dict[str, Any]]:
    lines = output.splitlines()
    summary = json.loads(next(line for line in lines if '"summary"' in line))
    return sorted(line for line in lines if '"summary"' not in line), summary


def _archive(tmp_path: Path) -> Path:
    """The lab captures, and one of them cut into a ring of three files."""
    archive = tmp_path / "archive"
    shutil.copytree(PCAPS, archive / "lab", ignore=shutil.ignore_patterns("*.json", "*.py", "*.md"))
    (archive / "ring").mkdir()
    source = PCAPS / "smtp-ntlm-success-swaks.pcap"
    subprocess.run(["editcap", "-F", "pcap", "-c", "10", str(source), str(archive / "ring" / "ring.pcap")], check=True)
    return archive


def test_a_two_worker_cluster_gives_what_one_process_gives(
    tmp_path: Path, cluster: tuple[str, list[subprocess.Popen[bytes]]]
) -> None:
    address, _workers = cluster
    archive = _archive(tmp_path)
    one, one_summary = analyze("--jobs", "1", str(archive))
    store = tmp_path / "store.db"
    many, summary = analyze("--scheduler", address, "--db", str(store), str(archive))
    assert many == one and one
    assert summary["cluster_tasks"] >= 2 and summary["captures_joined"] == one_summary["captures_joined"] >= 2
    assert {k: v for k, v in summary.items() if k not in CLUSTER_KEYS} == one_summary
    with sqlite3.connect(store) as db:  # the client wrote the store
        assert db.execute("SELECT count(*) FROM findings").fetchone()[0] == len(one)


def test_a_worker_lost_mid_run_has_its_tasks_run_again(
    tmp_path: Path, cluster: tuple[str, list[subprocess.Popen[bytes]]]
) -> None:
    address, workers = cluster
    archive = tmp_path / "generated"
    archive.mkdir()
    for seed in range(6):  # same times in each: six captures apart, six tasks
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_capture.py"), "--size", "6M", "--mail-fraction",
                        "1.0", "--seed", str(seed), "--out", str(archive / f"gen{seed}.pcap")],
                       check=True, capture_output=True)  # fmt: skip
        (archive / f"gen{seed}.pcap.json").unlink()
    one, _ = analyze("--jobs", "1", str(archive))
    out, err = tmp_path / "out.jsonl", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:  # files, not pipes: nobody reads them during the run
        run = subprocess.Popen([*LEAKSCOPE, "analyze", "--format", "jsonl", "--scheduler", address, str(archive)],
                               cwd=ROOT, env=_env(), stdout=stdout, stderr=stderr)  # fmt: skip
        victim = _kill_a_busy_worker(address, workers, run)
        run.wait(timeout=RUN_TIMEOUT)
    assert run.returncode == 0, err.read_text()
    assert victim.returncode == -signal.SIGKILL
    many, summary = parse(out.read_text())
    assert many == one
    assert summary["tasks_retried"] >= 1 and "cluster task(s) ran again" in err.read_text()


def _kill_a_busy_worker(
    address: str, workers: list[subprocess.Popen[bytes]], run: subprocess.Popen[bytes]
) -> subprocess.Popen[bytes]:
    """SIGKILL the first worker seen running one of the run's tasks (bounded wait)."""
    by_pid = {w.pid: w for w in workers}
    deadline = time.monotonic() + RUN_TIMEOUT
    with distributed.Client(address, timeout=START_TIMEOUT) as client:
        pids = client.run(os.getpid)  # worker address -> its process
        while time.monotonic() < deadline and run.poll() is None:
            for addr, keys in client.processing().items():
                pid = pids.get(addr)
                if keys and pid in by_pid:
                    os.kill(pid, signal.SIGKILL)
                    by_pid[pid].wait(timeout=30)
                    return by_pid[pid]
            time.sleep(0.02)
    pytest.fail("no worker was seen running a task")


def test_a_cluster_sends_every_session_s_events_when_they_are_kept(
    tmp_path: Path, cluster: tuple[str, list[subprocess.Popen[bytes]]]
) -> None:
    """``--events``: the detectors run on the cluster, and the sessions' events come back with their effects."""
    from tests.test_jobs import assert_same, outcome

    address, _workers = cluster
    paths = sorted(_archive(tmp_path).rglob("*.pcap*"))
    one = outcome(paths, 1)
    assert sum(len(events) for *_who, events, _dropped in one["sessions"]) > 100
    many = outcome(paths, 1, scheduler=address)
    assert many["counts"].pop("cluster_tasks") >= 2
    many["counts"].pop("tasks_retried")
    assert_same(one, many)
