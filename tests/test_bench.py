"""bench/run.py works end to end on small captures: every target of issue 15 is printed with its figure, its anchor
and a verdict, and every NTLM exchange the generator wrote is found by the real CLI (speed is not judged here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
def test_quick_benchmark_prints_every_target(tmp_path: Path) -> None:
    tshark = shutil.which("tshark") is not None
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--runs", "1", "--out", str(tmp_path)]
    result = subprocess.run(cmd if tshark else [*cmd, "--skip-tshark"], capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 1), result.stderr
    # The target table: the name in the first 62 columns, the verdict last.
    verdicts = {
        line[:62].strip(): "NOT MET" if line.endswith("NOT MET") else "MET"
        for line in result.stdout.splitlines()
        if line.endswith(" MET")
    }
    expected = [
        "all-mail 10M: >= 250,000 mail packets/s per core",
        "mixed-50M-0.02.pcap: <= 2x tcpdump -r (mail ports)",
        "mixed-50M-0.02-perturbed.pcap: <= 2x tcpdump -r (mail ports)",
        "mixed-50M-0.02.pcap: --jobs 2 >= 1.8x --jobs 1",
        "allmail-10M.pcap: every NTLM exchange found",
        "mixed-50M-0.02.pcap: every NTLM exchange found",
        "mixed-50M-0.02-perturbed.pcap: every NTLM exchange found",
        "mixed-50M-0.02.pcapng: every NTLM exchange found",
        "mixed-50M-0.02.pcap.gz: every NTLM exchange found",
        "peak RSS <= 150 MiB per process (every leakscope run)",
    ] + (["all-mail 10M: >= 3x faster than tshark"] if tshark else [])
    assert sorted(verdicts) == sorted(expected)
    assert [name for name, verdict in verdicts.items() if "NTLM" in name and verdict != "MET"] == []
    assert result.returncode == (0 if set(verdicts.values()) == {"MET"} else 1)


def test_alternating_runs_compare_two_trees(tmp_path: Path) -> None:
    """bench/alternate.py runs each command on both trees in turn and prints one line of medians per command; a
    run that fails stops it with the command named (here the other tree is this one, and a capture is missing)."""
    capture = ROOT / "pcaps" / "smtp-ntlm-success-curl.pcap"
    cmd = [sys.executable, str(ROOT / "bench" / "alternate.py"), "--before", str(ROOT), "--rounds", "2"]
    result = subprocess.run([*cmd, "--captures", str(capture)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(capture.name)]
    assert [row[1:3] for row in rows] == [["--jobs", "1"], ["--jobs", "2"]]
    for row in rows:
        wall_before, cpu_before, wall_now, cpu_now = (float(x) for x in row[3:7])
        assert min(wall_before, cpu_before, wall_now, cpu_now) > 0 and row[7].endswith("%")
    missing = subprocess.run([*cmd, "--captures", str(tmp_path / "none.pcap")], capture_output=True, text=True)
    assert missing.returncode != 0 and "none.pcap failed" in missing.stderr
