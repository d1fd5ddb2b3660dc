"""A compressed file, standard input or a FIFO is read by the compiled scanner, through a pipe a thread writes it
into (``passive/capture/piped.py``; a large compressed file, a process of its own: ``passive/capture/expand.py``),
and gives what the pure-Python reader gives, expanded by either:

- gzip, xz, bz2 and zstd: the same streams, frames and counters (the compressed bytes counted as read), and the
  compiled scanner was the one reading (it opened the pipe);
- a stream cut short or damaged: everything before the cut, and the warning worded as the pure-Python reader words it;
- an xz file of 5 million empty records (12 KB): every record read, by the compiled scanner;
- a stop request mid-file: reading stops, the thread or the process ends and no descriptor is left open;
- a process that cannot be started: the thread expands the file;
- a FIFO: the same as the pure-Python reader; standard input cut short: worded as the file cut short.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from passive.analysis.classify import mail_capture_options
from passive.capture import analyze_file, expand, piped, scanread
from passive.capture.counters import CaptureCounters
from passive.capture.flow import Direction
from passive.capture.stop import StopFlag
from tests.helpers_capture import Recorder

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gz": gzip.compress,
    "xz": lzma.compress,
    "bz2": bz2.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
}

pytestmark = pytest.mark.skipif(not scanread.native_available(), reason="the compiled scanner is not built")


def read(path: Path, backend: str, stop: StopFlag | None = None) -> tuple[Recorder, CaptureCounters]:
    recorder = Recorder()
    return recorder, analyze_file(path, recorder, mail_capture_options(backend=backend), stop=stop)


def frames(recorder: Recorder) -> list[list[tuple[int | None, int]]]:
    return [[(c.frame, c.offset) for d in Direction for c in r.chunks[d]] for r in recorder.flows]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the compiled scanner opens."""
    paths: list[str] = []
    real = scanread._cscan.Scanner

    def spy(path: Any, **settings: Any) -> Any:
        paths.append(path)
        return real(path, **settings)

    monkeypatch.setattr(scanread._cscan, "Scanner", spy)
    return paths


class Expanding(list):  # type: ignore[type-arg]
    """The processes a test's reads started to expand files (each with ``said``: what :meth:`finish` returned)."""

    mode = "thread"


@pytest.fixture(params=["thread", "process"])
def expanding(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Expanding:
    """Compressed files expanded by the thread, or (gzip, xz, bzip2) each by a forked process whatever its size."""
    started = Expanding()
    started.mode = request.param
    if request.param == "process":
        monkeypatch.setattr(expand, "EXPAND_APART_MIN", 0)
        monkeypatch.setattr(piped, "Expander", _recording(started))
    return started


def _recording(started: list[Any], after_start: Callable[[Any], None] | None = None) -> type:
    class Recorded(expand.Expander):
        said: str | None = "not finished"

        def start(self) -> bool:
            begun = super().start()
            started.append(self)
            if after_start is not None:
                after_start(self)
            return begun

        def finish(self, counted: bool = True) -> str | None:
            self.said = super().finish(counted)
            return self.said

    return Recorded


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_the_compiled_scanner_reads_the_pipe_as_the_pure_python_reader_reads_the_file(
    tmp_path: Path, suffix: str, opened: list[str], expanding: list[Any]
) -> None:
    data = (PCAPS / "smtp-ntlm-success-curl.pcap").read_bytes()
    packed = tmp_path / f"capture.pcap.{suffix}"
    packed.write_bytes(COMPRESSORS[suffix](data))
    through_pipe, piped_counters = read(packed, "auto")
    assert len(opened) == 1 and opened[0].startswith("/proc/self/fd/")
    assert len(expanding) == (expanding.mode == "process" and suffix != "zst")
    assert all(process.said is None for process in expanding)
    twin, twin_counters = read(packed, "python")
    assert through_pipe.streams() == twin.streams() and through_pipe.streams()
    assert frames(through_pipe) == frames(twin)
    assert piped_counters.as_dict() == twin_counters.as_dict()
    assert piped_counters.bytes_read == packed.stat().st_size


@pytest.mark.parametrize(("suffix", "name"), [("gz", "gzip"), ("xz", "xz")])
def test_a_stream_cut_short_gives_all_before_the_cut_worded_alike(
    tmp_path: Path, suffix: str, name: str, expanding: list[Any]
) -> None:
    data = (PCAPS / "smtp-ntlm-success-curl.pcap").read_bytes()
    packed = COMPRESSORS[suffix](data)
    cut = tmp_path / f"cut.pcap.{suffix}"
    cut.write_bytes(packed[: len(packed) * 2 // 3])
    piped, piped_counters = read(cut, "auto")
    assert all(process.said for process in expanding) and len(expanding) == (expanding.mode == "process")
    twin, twin_counters = read(cut, "python")
    assert piped.streams() == twin.streams()
    assert piped_counters.packets_read == twin_counters.packets_read > 0
    assert piped_counters.warnings == twin_counters.warnings and twin_counters.warnings
    assert f"{name} stream ends after frame" in twin_counters.warnings[0]


def test_five_million_empty_records_in_twelve_kilobytes(tmp_path: Path, opened: list[str]) -> None:
    """An expansion of 6 800 to 1: the decoder sets the pace, not a Python step per record."""
    records = 5_000_000
    bomb = tmp_path / "bomb.pcap.xz"
    with lzma.open(bomb, "wb", preset=9) as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        empty = bytes(16) * 100_000
        for _ in range(records // 100_000):
            out.write(empty)
    assert bomb.stat().st_size < 16_000
    _, counters = read(bomb, "auto")
    assert counters.packets_read == records and opened


def test_a_stop_request_ends_the_thread_and_leaves_no_descriptor(tmp_path: Path, expanding: list[Any]) -> None:
    data = (PCAPS / "smtp-ntlm-success-curl.pcap").read_bytes()
    head, body = data[:24], data[24:]
    packed = tmp_path / "long.pcap.gz"
    packed.write_bytes(gzip.compress(head + body * 3000, compresslevel=1))  # more than a pipe and a batch hold
    before = set(os.listdir("/proc/self/fd"))
    stop = StopFlag()
    stop.requested = True
    _, counters = read(packed, "auto", stop)
    assert 0 < counters.packets_read < 3000 * 10
    assert not [t for t in threading.enumerate() if t.name == "capture-pipe"]
    assert all(process.said is None for process in expanding)  # ended at its next write, and waited for
    for process in expanding:
        with pytest.raises(ChildProcessError):
            os.waitpid(process.pid, os.WNOHANG)  # reaped
    assert set(os.listdir("/proc/self/fd")) <= before


def test_a_process_that_cannot_start_leaves_the_file_to_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused() -> int:
        raise OSError("no more processes")

    monkeypatch.setattr(expand, "EXPAND_APART_MIN", 0)
    monkeypatch.setattr(expand.os, "fork", refused)
    data = (PCAPS / "smtp-ntlm-success-curl.pcap").read_bytes()
    packed = tmp_path / "capture.pcap.gz"
    packed.write_bytes(gzip.compress(data))
    before = set(os.listdir("/proc/self/fd"))
    recorder, counters = read(packed, "auto")
    plain, _ = read(PCAPS / "smtp-ntlm-success-curl.pcap", "python")
    assert recorder.streams() == plain.streams() and counters.bytes_read == packed.stat().st_size
    assert counters.warnings == [] and set(os.listdir("/proc/self/fd")) <= before


def test_ctrl_c_reaching_the_process_as_it_starts_is_left_to_the_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal sends SIGINT to the whole process group: the expanding process blocks it from its first
    instruction on and reads to the end (the analysis decides whether to stop)."""
    started: list[Any] = []
    monkeypatch.setattr(expand, "EXPAND_APART_MIN", 0)
    monkeypatch.setattr(piped, "Expander", _recording(started, lambda process: os.kill(process.pid, signal.SIGINT)))
    data = (PCAPS / "smtp-ntlm-success-curl.pcap").read_bytes()
    packed = tmp_path / "capture.pcap.gz"
    packed.write_bytes(gzip.compress(data))
    recorder, counters = read(packed, "auto")
    plain, _ = read(PCAPS / "smtp-ntlm-success-curl.pcap", "python")
    assert [process.said for process in started] == [None]
    assert recorder.streams() == plain.streams() and counters.warnings == []


def test_a_fifo_is_never_waited_on_to_tell_its_compression(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    looked: list[Any] = []
    look = threading.Thread(
        target=lambda: looked.append((expand.compression_of(str(fifo)), expand.expanded_apart(str(fifo))))
    )
    look.start()
    look.join(10)
    assert looked == [(None, False)]
    if look.is_alive():  # pragma: no cover - the look waited for a writer: let it end
        fifo.write_bytes(b"")


def fifo_read(tmp_path: Path, data: bytes, backend: str) -> tuple[Recorder, CaptureCounters]:
    fifo = tmp_path / f"pipe-{backend}"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    try:
        return read(fifo, backend)
    finally:
        writer.join()


@pytest.mark.parametrize("name", ["smtp-ntlm-success-curl.pcap", "imap-login-fetchmail.pcap"])
def test_a_pipe_is_read_by_the_compiled_scanner(tmp_path: Path, name: str, opened: list[str]) -> None:
    """Standard input or a FIFO (``tcpdump -w - | leakscope analyze -``): what sniffing read first is written to the
    scanner's pipe before the rest."""
    data = (PCAPS / name).read_bytes()
    piped, counters = fifo_read(tmp_path, data, "auto")
    assert len(opened) == 1 and opened[0].startswith("/proc/self/fd/")
    twin, twin_counters = fifo_read(tmp_path, data, "python")
    assert piped.streams() == twin.streams() and frames(piped) == frames(twin)
    assert counters.as_dict() == twin_counters.as_dict() and counters.bytes_read == len(data)


@pytest.mark.parametrize("size", [3, 10, 23, 30, 200])
def test_a_pipe_cut_short_is_worded_as_the_file_cut_short(tmp_path: Path, size: int) -> None:
    cut = (PCAPS / "smtp-ntlm-success-curl.pcap").read_bytes()[:size]
    file = tmp_path / "cut.pcap"
    file.write_bytes(cut)
    argv = [sys.executable, "-m", "passive", "analyze", "--format", "jsonl"]
    from_pipe = subprocess.run([*argv, "-"], input=cut, capture_output=True, timeout=60, check=False)
    from_file = subprocess.run([*argv, str(file)], capture_output=True, timeout=60, check=False)
    assert from_pipe.returncode == from_file.returncode
    assert from_pipe.stderr.decode().replace("/dev/stdin", "F") == from_file.stderr.decode().replace(str(file), "F")
    assert from_pipe.stdout.decode().replace("/dev/stdin", "F") == from_file.stdout.decode().replace(str(file), "F")


def test_without_proc_the_twin_reads_compressed_files_and_pipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opened: list[str]
) -> None:
    """Where the pipe cannot be opened by name (no /proc), what is read once only goes to the pure-Python reader,
    never to a compiled scanner that would lose what sniffing read."""
    monkeypatch.setattr(scanread, "PIPES_READABLE", False)
    data = (PCAPS / "smtp-ntlm-success-curl.pcap").read_bytes()
    packed = tmp_path / "c.pcap.gz"
    packed.write_bytes(gzip.compress(data))
    plain, _ = read(PCAPS / "smtp-ntlm-success-curl.pcap", "python")
    for recorder, counters in (read(packed, "auto"), fifo_read(tmp_path, data, "auto")):
        assert recorder.streams() == plain.streams() and counters.packets_read > 0
    assert opened == []


@pytest.mark.parametrize(("suffix", "apart"), [("gz", True), ("xz", True), ("bz2", True), ("zst", False)])
def test_slow_decoders_are_expanded_apart_and_zstd_by_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, apart: bool
) -> None:
    started: list[Any] = []
    monkeypatch.setattr(piped, "Expander", _recording(started))
    packed = tmp_path / f"capture.pcap.{suffix}"
    packed.write_bytes(COMPRESSORS[suffix]((PCAPS / "smtp-ntlm-success-curl.pcap").read_bytes()))
    read(packed, "auto")
    assert started == []  # smaller than EXPAND_APART_MIN: the thread
    monkeypatch.setattr(expand, "EXPAND_APART_MIN", packed.stat().st_size)
    recorder, _ = read(packed, "auto")
    assert len(started) == apart and recorder.streams()
    if apart:
        assert started[0].compression == {"gz": "gzip"}.get(suffix, suffix) and started[0].said is None
