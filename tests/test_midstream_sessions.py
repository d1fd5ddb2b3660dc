"""Sessions picked up mid-stream (the capture began while they were open): what they said before it began, a login
among it, is not in the capture, so a run over them says so instead of "no leak found"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import TCP
from scapy.utils import rdpcap

from passive.results.report.build import build_report
from tests.helpers_capture import pcap_bytes, write

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
CAVEAT = "picked up mid-stream"


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "passive", "analyze", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _summary(capture: Path) -> dict:
    result = _analyze("--format", "jsonl", str(capture))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def _from(capture: Path, first: int, out: Path) -> Path:
    """The frames of ``capture`` from its ``first``-th TCP segment with data on (the handshake and what came before
    it left out, as a capture begun while the session was open)."""
    frames = [(float(p.time), p) for p in rdpcap(str(capture)) if TCP in p]
    with_data = [n for n, (_, p) in enumerate(frames) if len(p[TCP].payload)]
    kept = frames[with_data[first] :]
    assert kept and not any(p[TCP].flags & 0x02 for _, p in kept)  # no SYN left
    return write(out, pcap_bytes(kept))


@pytest.mark.parametrize(
    ("capture", "first"),
    [("pop3-user-pass-fetchmail.pcap", 0), ("smtp-auth-plain-swaks.pcap", 4), ("imap-login-fetchmail.pcap", 2)],
)
def test_a_session_begun_before_the_capture_is_said_partly_unread(tmp_path: Path, capture: str, first: int) -> None:
    whole = PCAPS / capture
    assert _summary(whole)["flows_midstream"] == 0
    late = _from(whole, first, tmp_path / "late.pcap")
    summary = _summary(late)
    assert summary["flows_midstream"] == 1 and sum(summary["sessions"].values()) == 1
    table = " ".join(_analyze(str(late)).stdout.split())
    assert f"1 session(s) {CAVEAT}" in table
    assert "No leak found in 1 session(s)" not in table or "not everything was read" in table
    scope = dict(build_report([summary], []).scope)
    assert scope.get("Sessions picked up mid-stream") == "1"


def test_a_late_session_with_nothing_found_is_no_clean_bill(tmp_path: Path) -> None:
    """A POP3 session picked up after its login (only RETR and their answers in the capture): nothing leaks in what
    was captured, and the headline does not say nothing leaked."""
    frames = [(float(p.time), p) for p in rdpcap(str(PCAPS / "pop3-user-pass-fetchmail.pcap")) if TCP in p]
    commands = [n for n, (_, p) in enumerate(frames) if bytes(p[TCP].payload).upper().startswith((b"STAT", b"LIST"))]
    assert commands, "the capture holds a command after the login"
    late = write(tmp_path / "after-login.pcap", pcap_bytes(frames[commands[0] :]))
    summary = _summary(late)
    assert summary["flows_midstream"] == 1 and "cleartext-credentials" not in summary["findings"]
    headline = _analyze(str(late)).stdout.splitlines()[0]
    assert headline.startswith("No leak found in what could be read") or "not everything was read" in headline
