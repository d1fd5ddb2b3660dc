"""How ``leakscope`` ends as a process: once ``analyze`` has written its outputs it ends without the interpreter's
teardown (``os._exit`` in passive.cli.main._end_at_once), yet with everything Python's exit gives: exit handlers
run, standard output flushed whole, the status kept, a thread still working waited for. A closed standard output is
a one-line error, not a traceback."""

from __future__ import annotations

import json
import os
import platform
import pstats
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
CAPTURE = str(PCAPS / "smtp-ntlm-success-curl.pcap")

# The command line as a process runs it, after what the test puts before it: an exit handler, a thread, and a
# look at os._exit (the end without the interpreter's teardown).
SCRIPT = """
import atexit, os, sys, threading, time
marks = sys.argv.pop(1)
def mark(word):
    with open(marks, "a") as fh:
        fh.write(word + "\\n")
atexit.register(mark, "atexit")
if os.environ.get("SLOW_THREAD"):
    threading.Thread(target=lambda: (time.sleep(1.0), mark("thread"))).start()
end_at_once = os._exit
def _exit(status):
    mark(f"os._exit({status})")
    end_at_once(status)
os._exit = _exit
from passive.cli.main import main
main()
"""


def _run(
    marks: Path, *arguments: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[bytes], list[str]]:
    command = [sys.executable, "-c", SCRIPT, str(marks), *arguments]
    done = subprocess.run(command, capture_output=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)
    return done, marks.read_text().split() if marks.exists() else []


def test_analyze_ends_at_once_after_its_exit_handlers_with_its_output_whole(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    done, marks = _run(tmp_path / "marks", "analyze", "--format", "jsonl", "-o", str(out), *[CAPTURE] * 3)
    assert done.returncode == 0, done.stderr
    assert marks == ["atexit", "os._exit(0)"], "exit handlers run, then the process ends at once"
    piped, piped_marks = _run(tmp_path / "piped-marks", "analyze", "--format", "jsonl", *[CAPTURE] * 3)
    assert piped.returncode == 0, piped.stderr
    assert piped_marks == ["atexit", "os._exit(0)"]
    assert piped.stdout == out.read_bytes(), "standard output flushed whole before the process ended"
    assert json.loads(piped.stdout.splitlines()[-1])["type"] == "summary"


def test_exit_statuses_are_kept(tmp_path: Path) -> None:
    done, marks = _run(tmp_path / "marks", "analyze", "--format", "jsonl", CAPTURE, str(tmp_path / "missing.pcap"))
    assert done.returncode == 1
    assert b"missing.pcap" in done.stderr and marks == ["atexit", "os._exit(1)"]
    done, marks = _run(tmp_path / "marks-3", "analyze", "--format", "jsonl", "--fail-on", "low", CAPTURE)
    assert done.returncode == 3, done.stderr
    assert marks == ["atexit", "os._exit(3)"]
    assert done.stdout.count(b"\n") > 1


def test_a_thread_still_working_is_waited_for(tmp_path: Path) -> None:
    done, marks = _run(tmp_path / "marks", "analyze", "--format", "jsonl", CAPTURE, env={"SLOW_THREAD": "1"})
    assert done.returncode == 0, done.stderr
    assert marks == ["thread", "atexit"], "Python's own exit: it waits for the thread, then runs the handlers"


def test_other_commands_end_as_python_does(tmp_path: Path) -> None:
    done, marks = _run(tmp_path / "marks", "decode", "--help")
    assert done.returncode == 0, done.stderr
    assert marks == ["atexit"]


@pytest.mark.parametrize("output_format", ["jsonl", "table"])
def test_a_closed_standard_output_is_a_one_line_error(output_format: str) -> None:
    command = [sys.executable, "-m", "passive", "analyze", "--format", output_format, CAPTURE]
    done = subprocess.run(command, cwd=ROOT, stdout=None, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1),
                          timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == ["leakscope: error: cannot write standard output: it is closed"]


# Bound on waiting for a process (not a timing assertion: a hung process fails the test instead of the suite).
HANG_GUARD = 300
# The write system call's number, by machine: /proc/PID/syscall names the call a process is blocked in.
WRITE_SYSCALL = {"x86_64": 1, "aarch64": 64}


@pytest.fixture(scope="module")
def mail_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All mail: its table exceeds a pipe's 64 KiB, and its JSON is megabytes."""
    out = tmp_path_factory.mktemp("exit") / "all-mail.pcap"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gen_capture.py"), "--size", "20M", "--mail-fraction", "1.0",
         "--out", str(out)], check=True, capture_output=True, timeout=HANG_GUARD,
    )  # fmt: skip
    return out


def _blocked_writing_stdout(pid: int) -> bool:
    """Whether the process is asleep in a write to its standard output, a full pipe."""
    try:
        if "pipe_write" in Path(f"/proc/{pid}/wchan").read_text():
            return True
        call = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(call) > 1 and call[0] == str(WRITE_SYSCALL.get(platform.machine())) and int(call[1], 16) == 1


@pytest.mark.parametrize("output_format", ["jsonl", "json", "table"])
def test_ctrl_c_while_a_slow_reader_takes_the_output_leaves_it_whole(output_format: str, mail_capture: Path) -> None:
    """Python unbuffered (PYTHONUNBUFFERED, python -u: common in containers) writes standard output straight to its
    descriptor, where a signal cuts a write short: the rest is written all the same."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "passive", "analyze", "--format", output_format, str(mail_capture)]
    whole = subprocess.run(command, capture_output=True, cwd=ROOT, env=env, timeout=HANG_GUARD)
    assert whole.returncode == 0, whole.stderr
    assert len(whole.stdout) > 1 << 17, "more than a pipe holds"
    process = subprocess.Popen(command, bufsize=0, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    try:
        first = process.stdout.read(1)  # type: ignore[union-attr]
        deadline = time.monotonic() + HANG_GUARD
        while not _blocked_writing_stdout(process.pid):
            assert process.poll() is None and time.monotonic() < deadline, "never blocked on the full pipe"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)  # the write under way is cut short
        rest, errors = process.communicate(timeout=HANG_GUARD)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, errors
    assert errors.decode().splitlines() == [
        "leakscope: interrupted after the captures were read: every output is whole"
    ]
    assert first + rest == whole.stdout


def test_a_profiler_still_writes_its_profile(tmp_path: Path) -> None:
    """A profiler (coverage, a tracer, a debugger alike) runs the command in its process and writes its results
    once the command has exited: the process is not ended under it."""
    profile = tmp_path / "analyze.prof"
    command = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "passive", "analyze", "--format", "jsonl",
               "-o", str(tmp_path / "out.jsonl"), CAPTURE]  # fmt: skip
    done = subprocess.run(command, capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=HANG_GUARD)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert profile.exists(), "the profile was never written"
    functions = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    assert any(path.endswith(os.path.join("passive", "cli", "analyze.py")) and name == "analyze"
               for path, _line, name in functions)  # fmt: skip
    assert json.loads((tmp_path / "out.jsonl").read_text().splitlines()[-1])["type"] == "summary"


# A program that runs the command line in a thread of its own and goes on: SystemExit ends the thread, not the
# process, whose garbage collector stays as it was.
IN_A_THREAD = """
import gc, sys, threading
from passive.cli.main import main
thread = threading.Thread(target=main, daemon=True)
thread.start()
thread.join()
print(f"the program goes on, {gc.get_freeze_count()} objects frozen")
sys.exit(7)
"""


def test_the_command_line_run_in_a_thread_leaves_the_program_going(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-c", IN_A_THREAD, "analyze", "--format", "jsonl", "-o", str(out), CAPTURE]
    done = subprocess.run(command, capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=HANG_GUARD)  # fmt: skip
    assert done.stdout.decode().splitlines() == ["the program goes on, 0 objects frozen"], done.stderr
    assert done.returncode == 7
    assert json.loads(out.read_text().splitlines()[-1])["type"] == "summary"


def test_an_interactive_session_asked_for_follows_the_command(tmp_path: Path) -> None:
    """python -i opens an interactive session once the program has exited: here it reads its line from standard
    input."""
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-i", "-m", "passive", "analyze", "--format", "jsonl", "-o", str(out), CAPTURE]
    done = subprocess.run(command, input=b'print("the session ran")\n', capture_output=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=HANG_GUARD)  # fmt: skip
    assert done.stdout.decode().splitlines() == ["the session ran"], done.stderr
    assert done.returncode == 0
    assert json.loads(out.read_text().splitlines()[-1])["type"] == "summary"
