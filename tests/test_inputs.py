"""Captures as a capture tool takes them: compressed with gzip, xz, bz2 or zstd, and from standard input (``-``),
each giving what the plain file gives; directories walked and glob patterns expanded."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from passive.capture.paths import expand_inputs

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


# -- directories and patterns ---------------------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("leakscope")
    assert executable, "the leakscope console script is not installed (pip install -e .)"
    return subprocess.run([executable, *args], capture_output=True, text=True, timeout=120)


def _files_read(output: str) -> list[str]:
    """The capture files of a JSON lines output, in the order their first evidence appears."""
    files: list[str] = []
    for line in output.splitlines():
        record = json.loads(line)
        for item in record.get("evidence") or []:
            if item["file"] not in files:
                files.append(item["file"])
    return files


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A capture archive as people keep one: nested folders, a ring buffer, compressed days, notes beside them."""
    root = tmp_path / "archive"
    (root / "ring").mkdir(parents=True)
    (root / "days").mkdir()
    shutil.copy(PCAPS / CAPTURES[0], root / "ring" / "mail10.pcap")
    shutil.copy(PCAPS / CAPTURES[1], root / "ring" / "mail2.pcap")
    (root / "days" / "monday.pcap.gz").write_bytes(gzip.compress((PCAPS / CAPTURES[2]).read_bytes()))
    (root / "README.txt").write_text("captures of the mail segment\n")
    (root / "days" / "empty.pcap").write_bytes(b"")
    (root / "loop").symlink_to(root)  # followed, a walk would never end
    return root


def test_a_directory_is_walked_and_what_is_not_a_capture_is_counted(archive: Path) -> None:
    result = _run("analyze", "--format", "jsonl", str(archive))
    assert result.returncode == 0, result.stderr
    summary = next(line for line in result.stdout.splitlines() if '"summary"' in line)
    assert '"inputs_skipped": 2' in summary and '"captures": 3' in summary
    assert f"{archive / 'README.txt'} is not a capture; skipped" in result.stderr
    assert f"{archive / 'days' / 'empty.pcap'} is not a capture; skipped" in result.stderr
    every = findings(leakscope("analyze", "--format", "jsonl", *(str(PCAPS / c) for c in CAPTURES)))
    assert len(findings(result.stdout)) == len(every)


def test_files_are_read_in_natural_order(archive: Path) -> None:
    # Unjoined: these two are pieces of no ring buffer (a joined ring's files are read in time order, test_rings.py).
    result = _run("analyze", "--format", "jsonl", "--no-join", str(archive / "ring"))
    assert _files_read(result.stdout) == [str(archive / "ring" / "mail2.pcap"), str(archive / "ring" / "mail10.pcap")]


def test_a_pattern_is_expanded_and_a_pattern_matching_nothing_is_an_input_error(archive: Path) -> None:
    result = _run("analyze", "--format", "jsonl", str(archive / "**" / "*.pcap*"))
    assert result.returncode == 0, result.stderr
    assert set(_files_read(result.stdout)) == {
        str(archive / "ring" / "mail2.pcap"),
        str(archive / "ring" / "mail10.pcap"),
        str(archive / "days" / "monday.pcap.gz"),
    }
    missing = _run("analyze", str(archive / "*.pcapng"))
    assert missing.returncode == 1 and missing.stderr.strip().endswith("no file matches")


def test_a_fifo_inside_a_directory_is_never_opened(archive: Path) -> None:
    os.mkfifo(archive / "days" / "pipe")  # opened, it would block the walk for ever
    result = _run("analyze", "--format", "jsonl", str(archive / "days"))
    assert result.returncode == 0 and f"{archive / 'days' / 'pipe'} is not a capture" in result.stderr


@pytest.mark.parametrize("suffix", ["gz", "xz"])
def test_a_compressed_capture_cut_short_gives_what_its_decompressor_gives(tmp_path: Path, suffix: str) -> None:
    """A capture still being compressed (``tcpdump -w - | gzip > day.pcap.gz``, an archive job stopped half way)
    ends in the middle of its compressed stream: everything before the cut is read, as zcat and xzcat read it."""
    data = b"".join((PCAPS / c).read_bytes()[24 if n else 0 :] for n, c in enumerate([CAPTURES[0]] * 3))
    packed = tmp_path / f"live.pcap.{suffix}"
    whole = COMPRESSORS[suffix](data)
    packed.write_bytes(whole[: len(whole) * 3 // 4])
    tool = {"gz": "zcat", "xz": "xzcat"}[suffix]
    partial = tmp_path / "partial.pcap"
    partial.write_bytes(subprocess.run([tool, str(packed)], capture_output=True).stdout)  # exits 1: stream cut
    read = subprocess.run(["tcpdump", "-r", str(partial), "-n"], capture_output=True, text=True)
    packets = len(read.stdout.splitlines())
    assert packets > 10 and "truncated" in read.stderr
    got = _run("analyze", "--format", "jsonl", str(packed))
    assert got.returncode == 0, got.stderr
    summary = json.loads(got.stdout.splitlines()[-1])
    assert summary["packets_read"] == packets
    assert f"{packed}: truncated capture" in got.stderr
    expected = _run("analyze", "--format", "jsonl", str(partial))
    same = [line.replace(str(partial), "CAPTURE") for line in expected.stdout.splitlines() if '"summary"' not in line]
    assert findings(got.stdout.replace(str(packed), "CAPTURE")) == sorted(same)


def test_a_piece_being_compressed_beside_its_ring_is_read_once(tmp_path: Path) -> None:
    """``tcpdump -C 1 -z gzip``: while gzip runs, the rotated piece is there whole and, beside it, in part as
    ``.gz``. Reading both counted its sessions twice; the plain file is read and the compressed one noted."""
    ring = tmp_path / "ring"
    ring.mkdir()
    piece = (PCAPS / CAPTURES[0]).read_bytes()
    (ring / "mail.pcap1").write_bytes(piece)
    packed = gzip.compress(piece)
    (ring / "mail.pcap1.gz").write_bytes(packed[: len(packed) // 2])  # gzip is half way through it
    (ring / "mail.pcap2").write_bytes((PCAPS / CAPTURES[1]).read_bytes())
    result = _run("analyze", "--format", "jsonl", str(ring))
    assert result.returncode == 0, result.stderr
    assert f"{ring / 'mail.pcap1.gz'} is {ring / 'mail.pcap1'} compressed, read once; skipped" in result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["captures"] == 2 and summary["inputs_skipped"] == 1
    alone = _run("analyze", "--format", "jsonl", str(ring / "mail.pcap1"), str(ring / "mail.pcap2"))
    assert findings(result.stdout) == findings(alone.stdout)


def test_a_compressed_capture_is_read_when_the_name_beside_it_holds_no_capture(tmp_path: Path) -> None:
    """The compressed copy is skipped only for a plain file that is read: not beside a dangling link of its plain
    name, nor beside an empty file of it (the walk would otherwise read neither)."""
    archive = tmp_path / "archive"
    archive.mkdir()
    packed = gzip.compress((PCAPS / CAPTURES[0]).read_bytes())
    (archive / "a.pcap.gz").write_bytes(packed)
    (archive / "a.pcap").symlink_to(tmp_path / "rotated-away.pcap")
    (archive / "b.pcap.gz").write_bytes(packed)
    (archive / "b.pcap").write_bytes(b"")
    expanded = expand_inputs([str(archive)])
    assert expanded.paths == [str(archive / "a.pcap.gz"), str(archive / "b.pcap.gz")]
    assert expanded.reasons == {str(archive / "a.pcap"): "is a dangling link"}


def test_a_zstd_capture_on_standard_input_is_read_whole(tmp_path: Path) -> None:
    """Sniffing a pipe's compression decodes its first bytes with a decoder then dropped: dropping it must not close
    the pipe, whose bytes past the replayed head were lost (\"read of closed file\") for zstd alone."""
    from tests.helpers_capture import ether, ipv4, pcap_bytes, tcp

    frames = [
        (
            1000 + n / 1000,
            ether(ipv4("10.0.0.1", "10.0.0.2", tcp(40000, 25, 1000 + n * 200, 1, payload=os.urandom(200)))),
        )
        for n in range(3000)
    ]  # random payloads: several hundred KB compressed, more than the decoder's first read of the pipe
    packed = tmp_path / "capture.pcap.zst"
    packed.write_bytes(zstandard.ZstdCompressor().compress(pcap_bytes(frames)))
    executable = shutil.which("leakscope")
    assert executable
    command = [executable, "analyze", "--format", "jsonl", "-"]
    result = subprocess.run(command, input=packed.read_bytes(), capture_output=True, timeout=120)
    assert result.returncode == 0 and b"warning" not in result.stderr, result.stderr.decode()
    assert json.loads(result.stdout.splitlines()[-1])["packets_read"] == 3000
