"""How ``leakscope`` ends as a process: once ``analyze`` has written its outputs it ends without the interpreter's
teardown (``os._exit`` in passive.cli.main._end_at_once), yet with everything Python's exit gives: exit handlers
run, standard output flushed whole, the status kept, a thread still working waited for. A closed standard output is
a one-line error, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
