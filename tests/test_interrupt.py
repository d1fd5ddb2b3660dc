"""Ctrl-C keeps work: SIGINT sent to the installed console script while it reads a capture stops the reading, the
findings so far are written to every output asked for, marked partial, and the exit status is 130; a second SIGINT
ends the process at once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "pcaps" / "pop3-ntlm-success-curl.pcap"
# Large enough to be still reading well after the interpreter started, even on a fast machine: all mail traffic,
# about 8 s of analysis on the 2-core CI machine.
CAPTURE_SIZE = "60M"
# Bytes of the capture read before the signal is sent: findings have been made by then.
READ_BEFORE_SIGNAL = 2 << 20
# Bound on waiting for the process (not a timing assertion: a hung process fails the test instead of the suite).
HANG_GUARD = 300


@pytest.fixture(scope="module")
def big_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("interrupt") / "all-mail.pcap"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gen_capture.py"),
            "--size",
            CAPTURE_SIZE,
            "--mail-fraction",
            "1.0",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=HANG_GUARD,
    )
    return out


def start(*args: str) -> subprocess.Popen[str]:
    executable = shutil.which("leakscope")
    assert executable, "the leakscope console script is not installed (pip install -e .)"
    return subprocess.Popen(
        [executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )


def read_position(pid: int, capture: Path) -> int:
    """How far the process has read ``capture``: the largest file position among its descriptors of it."""
    best = 0
    fds = Path(f"/proc/{pid}/fd")
    try:
        for fd in fds.iterdir():
            try:
                if os.readlink(fd) != str(capture):
                    continue
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
            except OSError:
                continue
            best = max(best, int(info.split("pos:")[1].split()[0]))
    except OSError:
        pass
    return best


def bytes_read(pid: int) -> int:
    """Bytes the process has read from any file so far (``rchar``)."""
    try:
        return int(Path(f"/proc/{pid}/io").read_text().split("rchar:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return 0


def mapped(pid: int, capture: Path) -> bool:
    """Whether the process maps ``capture``: the libpcap path's frame walk does, the store's digest does not."""
    try:
        return str(capture) in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


# CPU seconds the whole capture takes to analyze, about, on the CI machine: libpcap's frame walk maps the file, so
# how far it has read shows in the CPU time it has spent since it mapped it, not in a file position.
FULL_RUN_CPU = 6.0


def family(pid: int) -> list[int]:
    """The process and its children (the worker processes of --jobs)."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        pass
    return pids


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wait_until_reading(
    process: subprocess.Popen[str], capture: Path, *, walked: bool = False, at: int = READ_BEFORE_SIGNAL
) -> None:
    """Until the analysis has read about ``at`` bytes of ``capture``: by file position (the built-in readers and the
    compiled scanner read it in order), or by the CPU time spent since the capture was mapped (libpcap's frame
    walk), in the process or its workers. With ``walked``, a run with --db first reads every capture whole for its
    digest: a position counts once the process has read the capture's size since it first held it open."""
    deadline = time.monotonic() + HANG_GUARD
    size = capture.stat().st_size
    needed = FULL_RUN_CPU * at / size
    first: dict[int, float] = {}
    opened: int | None = None  # bytes the process had read when it first held the capture open (walked)
    while True:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the capture was never read"
        pids = family(process.pid)
        positions = [read_position(pid, capture) for pid in pids]
        if walked and opened is None and any(positions):
            opened = bytes_read(process.pid)
        digested = not walked or (opened is not None and bytes_read(process.pid) - opened >= size)
        if digested and any(at <= position < size for position in positions):
            return
        for pid in pids:
            if mapped(pid, capture):
                first.setdefault(pid, cpu_seconds(pid))
        if first and sum(cpu_seconds(pid) - start for pid, start in first.items()) >= needed:
            return
        time.sleep(0.02)


def interrupt(process: subprocess.Popen[str], capture: Path, *, walked: bool = False) -> tuple[str, str]:
    wait_until_reading(process, capture, walked=walked)
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=HANG_GUARD)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sigint_writes_every_output_marked_partial_and_exits_130(big_capture: Path, tmp_path: Path) -> None:
    out, hashes, base, db = tmp_path / "out.jsonl", tmp_path / "hashes.txt", tmp_path / "all", tmp_path / "s.db"
    process = start(
        "analyze", str(big_capture), str(SMALL), "--jobs", "1", "--format", "jsonl", "-o", str(out),
        "--hashes", str(hashes),
        "-oA", str(base), "--db", str(db),
    )  # fmt: skip
    _stdout, stderr = interrupt(process, big_capture, walked=True)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    records = jsonl(out)
    summary = records[-1]
    assert summary["type"] == "summary" and summary["partial"] is True
    cut = summary["stopped_at"]
    assert cut["file"] == str(big_capture)
    assert 0 < cut["packets"] < json.loads(big_capture.with_suffix(".pcap.json").read_text())["packets"]
    assert 0 < cut["bytes"] < cut["size"] == big_capture.stat().st_size
    assert summary["not_read"] == [str(SMALL)]
    findings = [r for r in records[:-1] if r["type"] == "ntlm-info"]
    assert findings and sum(summary["findings"].values()) == len(records) - 1
    note = [line for line in stderr.splitlines() if "interrupted" in line]
    assert len(note) == 1 and f"of {big_capture}" in note[0] and "1 capture(s) not read" in note[0]
    # Every other output holds the same partial run.
    assert jsonl(base.with_suffix(".jsonl"))[-1]["partial"] is True
    assert base.with_suffix(".html").stat().st_size > 0 and "ntlm-info" in base.with_suffix(".txt").read_text()
    assert len(hashes.read_text().splitlines()) == summary["hashes"] > 0
    stored = subprocess.run(
        [shutil.which("leakscope") or "leakscope", "findings", "--db", str(db), "--format", "jsonl"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert stored.returncode == 0, stderr
    stored_types = [json.loads(line).get("type") for line in stored.stdout.splitlines()]
    assert stored_types.count("ntlm-info") == len(findings), stored.stdout[-3000:]
    assert "not recorded as merged" in stderr


def test_sigint_with_worker_processes_keeps_what_they_read(big_capture: Path) -> None:
    process = start("analyze", str(big_capture), "--jobs", "2", "--format", "jsonl")
    stdout, stderr = interrupt(process, big_capture)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    summary = records[-1]
    assert summary["partial"] is True and summary["stopped_at"]["file"] == str(big_capture)
    total = json.loads(big_capture.with_suffix(".pcap.json").read_text())["packets"]
    assert 0 < summary["stopped_at"]["packets"] < total
    assert 0 < summary["stopped_at"]["bytes"] < summary["stopped_at"]["size"] == big_capture.stat().st_size
    assert any(r["type"] == "ntlm-info" for r in records[:-1])
    assert sum(summary["findings"].values()) == len(records) - 1


def test_sigint_on_a_compressed_capture_says_how_far_it_read(big_capture: Path, tmp_path: Path) -> None:
    compressed = tmp_path / "all-mail.pcap.gz"
    subprocess.run(["gzip", "-1", "-c", str(big_capture)], stdout=compressed.open("wb"), check=True)
    process = start("analyze", str(compressed), "--format", "jsonl")
    stdout, stderr = interrupt(process, compressed)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    cut = records[-1]["stopped_at"]
    assert records[-1]["partial"] is True and records[-1]["not_read"] == []
    assert 0 < cut["bytes"] < cut["size"] == compressed.stat().st_size  # the compressed position
    assert len(records) > 1


def test_report_interrupted_still_writes_the_report(big_capture: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    process = start("report", str(big_capture), "-o", str(report))
    _stdout, stderr = interrupt(process, big_capture)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "NTLM" in report.read_text()


def test_compare_interrupted_compares_what_was_read(big_capture: Path, tmp_path: Path) -> None:
    active = tmp_path / "active.jsonl"
    analyzed = subprocess.run(
        [shutil.which("leakscope") or "leakscope", "analyze", str(SMALL), "--format", "jsonl", "-o", str(active)],
        capture_output=True,
        timeout=HANG_GUARD,
    )
    assert analyzed.returncode == 0
    process = start("compare", "--passive", str(big_capture), "--active", str(active), "--format", "json")
    stdout, stderr = interrupt(process, big_capture)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    document = json.loads(stdout)
    assert document["type"] == "comparison" and document["partial"] is True
    assert document["stopped_at"]["file"] == str(big_capture) and document["servers"]


def test_a_second_sigint_exits_at_once(big_capture: Path, tmp_path: Path) -> None:
    tables = tmp_path / "tables.txt"
    process = start("analyze", str(big_capture), "-o", str(tables))
    # A quarter of the capture read: rendering its findings as tables outlasts the signals that follow.
    wait_until_reading(process, big_capture, at=big_capture.stat().st_size // 4)
    # Signals sent back to back may be delivered as one: send until the process is gone.
    while process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
    _stdout, stderr = process.communicate(timeout=HANG_GUARD)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "Aborted" not in stderr
    assert stderr.splitlines()[-1] == "leakscope: interrupted again: exiting at once"
    assert not tables.exists()  # it ended before writing
