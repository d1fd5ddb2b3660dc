"""Captures as a capture tool takes them: compressed with gzip, xz, bz2 or zstd, and from standard input (``-``),
each giving what the plain file gives."""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
CAPTURES = ["smtp-ntlm-success-curl.pcap", "pop3-user-pass-fetchmail.pcap", "imap-login-fetchmail.pcap"]
COMPRESSORS = {
    "gz": gzip.compress,
    "xz": lzma.compress,
    "bz2": bz2.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


def leakscope(*args: str, stdin: bytes | None = None) -> str:
    executable = shutil.which("leakscope")
    assert executable, "the leakscope console script is not installed (pip install -e .)"
    result = subprocess.run([executable, *args], input=stdin, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def findings(output: str) -> list[str]:
    """The finding lines of a JSON lines output, without the summary and the capture's name."""
    return sorted(line.replace("/dev/stdin", "CAPTURE") for line in output.splitlines() if '"summary"' not in line)


@pytest.mark.parametrize("capture", CAPTURES)
@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_captures_give_what_the_plain_file_gives(tmp_path: Path, capture: str, suffix: str) -> None:
    plain = tmp_path / capture
    plain.write_bytes((PCAPS / capture).read_bytes())
    packed = tmp_path / f"{capture}.{suffix}"
    packed.write_bytes(COMPRESSORS[suffix]((PCAPS / capture).read_bytes()))
    expected = findings(leakscope("analyze", "--format", "jsonl", str(plain)).replace(str(plain), "CAPTURE"))
    assert expected
    got = findings(leakscope("analyze", "--format", "jsonl", str(packed)).replace(str(packed), "CAPTURE"))
    assert got == expected


@pytest.mark.parametrize("capture", CAPTURES)
def test_standard_input_equals_the_file(capture: str) -> None:
    path = PCAPS / capture
    expected = findings(leakscope("analyze", "--format", "jsonl", str(path)).replace(str(path), "CAPTURE"))
    got = findings(leakscope("analyze", "--format", "jsonl", "-", stdin=path.read_bytes()))
    assert got == expected


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
def test_a_real_tcpdump_pipe(tmp_path: Path) -> None:
    """``tcpdump -r x -w - | leakscope analyze -``: tcpdump writes the stream, leakscope reads it as it comes."""
    capture = PCAPS / CAPTURES[0]
    tcpdump = subprocess.Popen(
        ["tcpdump", "-r", str(capture), "-w", "-"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    executable = shutil.which("leakscope")
    assert executable
    result = subprocess.run(
        [executable, "analyze", "--format", "jsonl", "-"], stdin=tcpdump.stdout, capture_output=True, timeout=120
    )
    tcpdump.wait(timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    expected = findings(leakscope("analyze", "--format", "jsonl", str(capture)).replace(str(capture), "CAPTURE"))
    assert findings(result.stdout.decode()) == expected
