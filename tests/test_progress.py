"""Progress people trust: on a terminal (a pseudo-terminal here), standard error shows the file, percent of its
bytes, ETA, packets, flows and findings while a capture is read, then the rendering as a phase of the same display;
standard output never gets any of it, and without a terminal nothing is shown at all."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_interrupt import HANG_GUARD, ROOT, SMALL, big_capture, interrupt, start

__all__ = ["big_capture"]  # the fixture, shared with test_interrupt

# Findings enough that rendering them as tables takes longer than the display's delay (about 3,000 findings).
RENDERING_CAPTURE_SIZE = "15M"
PERCENT_AND_PACKETS = re.compile(r"\d+% of [\d.]+ MB, ETA \d+:\d\d · [\d,]+ packets, [\d,]+ flows, [\d,]+ findings")


class Terminal:
    """The console script run with standard error (and input) on a pseudo-terminal 200 columns wide and standard
    output on a pipe, both read as they come."""

    def __init__(self, *args: str, stdin: Any = None) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        executable = shutil.which("leakscope")
        assert executable, "the leakscope console script is not installed (pip install -e .)"
        env = {**os.environ, "TERM": "xterm", "COLUMNS": "200"}
        env.pop("NO_COLOR", None)
        self.process = subprocess.Popen(
            [executable, *args], stdin=slave if stdin is None else stdin, stdout=subprocess.PIPE, stderr=slave, env=env
        )
        os.close(slave)
        self.master = master
        self.screen = b""
        self.stdout = b""
        self._out = threading.Thread(target=self._drain_stdout, daemon=True)
        self._out.start()

    def _drain_stdout(self) -> None:
        self.stdout = self.process.stdout.read()  # type: ignore[union-attr]

    def read_until(self, pattern: re.Pattern[str] | None) -> str:
        """Read the terminal until ``pattern`` shows (None: until the process closes it)."""
        deadline = time.monotonic() + HANG_GUARD
        while pattern is None or not pattern.search(self.text()):
            assert time.monotonic() < deadline, self.text()[-2000:]
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the process is gone and closed its end
                break
            if not data:
                break
            self.screen += data
        return self.text()

    def text(self) -> str:
        return self.screen.decode(errors="replace")

    def finish(self) -> int:
        self.read_until(None)
        self._out.join(HANG_GUARD)
        os.close(self.master)
        return self.process.wait(HANG_GUARD)


@pytest.fixture(scope="module")
def rendering_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("progress") / "mail.pcap"
    generator = str(ROOT / "bench" / "gen_capture.py")
    subprocess.run(
        [sys.executable, generator, "--size", RENDERING_CAPTURE_SIZE, "--mail-fraction", "1.0", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=HANG_GUARD,
    )
    return out


def test_progress_on_a_terminal_shows_file_percent_eta_packets_flows_findings(big_capture: Path) -> None:
    terminal = Terminal("analyze", str(big_capture), str(SMALL), "--format", "jsonl")
    shown = terminal.read_until(PERCENT_AND_PACKETS)
    terminal.process.send_signal(signal.SIGINT)  # seen enough: the rest of the run is not needed
    status = terminal.finish()

    assert status == 130
    line = PERCENT_AND_PACKETS.search(shown)
    assert line is not None
    assert f"file 1/2 · {big_capture} · " in shown
    assert "Traceback" not in terminal.text()
    # Standard output is the JSON lines alone: no progress text, no escape sequence.
    out = terminal.stdout.decode()
    assert "\x1b" not in out and "ETA" not in out and "\r" not in out
    records = [json.loads(text) for text in out.splitlines()]
    assert records[-1]["type"] == "summary" and records[-1]["partial"] is True


def test_rendering_is_a_phase_of_the_display(rendering_capture: Path, tmp_path: Path) -> None:
    tables = tmp_path / "tables.txt"
    terminal = Terminal("analyze", str(rendering_capture), "-o", str(tables))
    status = terminal.finish()

    assert status == 0, terminal.text()[-2000:]
    assert re.search(r"rendering: [\d,]+ findings", terminal.text())
    assert terminal.stdout == b""
    assert "ntlm-info" in tables.read_text()


def test_standard_input_shows_bytes_read_without_percent(big_capture: Path) -> None:
    with big_capture.open("rb") as source:
        cat = subprocess.Popen(["cat"], stdin=source, stdout=subprocess.PIPE)
    terminal = Terminal("analyze", "-", "--format", "jsonl", stdin=cat.stdout)
    cat.stdout.close()  # type: ignore[union-attr]
    pattern = re.compile(r"/dev/stdin · [\d.]+ [kM]B read · [\d,]+ packets, [\d,]+ flows, [\d,]+ findings")
    shown = terminal.read_until(pattern)
    terminal.process.send_signal(signal.SIGINT)
    cat.kill()  # as Ctrl-C on a shell pipeline would: the writer goes too, the reader sees the end
    status = terminal.finish()
    cat.wait(HANG_GUARD)

    assert status == 130
    assert "%" not in pattern.search(shown).group(0)  # type: ignore[union-attr]
    assert json.loads(terminal.stdout.decode().splitlines()[-1])["partial"] is True


def test_without_a_terminal_nothing_is_shown(big_capture: Path) -> None:
    process = start("analyze", str(big_capture), "--format", "jsonl")
    time.sleep(1.2)  # past the display's delay (not a timing assertion: the display must never appear)
    _stdout, stderr = interrupt(process, big_capture)

    assert process.returncode == 130
    assert stderr.splitlines() == [line for line in stderr.splitlines() if line.startswith("leakscope: interrupted")]
    assert len(stderr.splitlines()) == 1
