"""A capture on a pipe (``tcpdump -w - | leakscope analyze -``, a named pipe) is read by the compiled scanner from the
pipe itself, starting with the bytes sniffing took from it (``FileKind.stream``, ``Replay.take_prefix``): no thread
copies it into a pipe of its own (:mod:`passive.capture.piped`), which cost a copy of every byte and the interpreter's
lock between the two."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from passive.analysis.classify import mail_capture_options
from passive.capture import analyze_file, piped, scanread
from passive.capture.counters import CaptureCounters
from passive.capture.flow import Direction
from passive.capture.replay import Replay
from tests.helpers_capture import Recorder

REPO = Path(__file__).resolve().parents[1]
PCAPS = REPO / "pcaps"
pytestmark = pytest.mark.skipif(not scanread.native_available(), reason="the compiled scanner is not built")


def read(path: Path, backend: str = "auto") -> tuple[Recorder, CaptureCounters]:
    recorder = Recorder()
    return recorder, analyze_file(path, recorder, mail_capture_options(backend=backend))


def chunks(recorder: Recorder) -> list[list[tuple[int | None, int, bytes]]]:
    return [[(c.frame, c.offset, c.data) for d in Direction for c in r.chunks[d]] for r in recorder.flows]


class NoThread(piped.PipedCapture):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a pipe was copied by a thread")


def through_fifo(tmp_path: Path, data: bytes) -> tuple[Recorder, CaptureCounters]:
    """``data`` read from a named pipe a thread writes."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,), daemon=True)
    writer.start()
    try:
        return read(fifo)
    finally:
        writer.join(10)


@pytest.mark.parametrize("name", ["smtp-ntlm-success-curl.pcap", "imap-login-fetchmail.pcap"])
@pytest.mark.parametrize("form", ["pcap", "pcapng"])
def test_a_pipe_is_read_by_the_scanner_itself_as_the_file_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, form: str
) -> None:
    source = PCAPS / name
    if form == "pcapng":
        converted = tmp_path / "c.pcapng"
        from scapy.utils import rdpcap, wrpcapng

        wrpcapng(str(converted), rdpcap(str(source)))
        source = converted
    data = source.read_bytes()
    from_file, file_counters = read(source)
    monkeypatch.setattr(scanread, "PipedCapture", NoThread)
    from_pipe, pipe_counters = through_fifo(tmp_path, data)
    assert from_pipe.flows and chunks(from_pipe) == chunks(from_file)
    assert pipe_counters.as_dict() == file_counters.as_dict() and pipe_counters.bytes_read == len(data)


GONE_WRITER = """
import os, sys, threading
from pathlib import Path
from passive.capture import scanread
from tests.test_pipe_direct import NoThread, chunks, read

data, fifo = Path(sys.argv[1]).read_bytes(), Path(sys.argv[2])
os.mkfifo(fifo)
writer = threading.Thread(target=fifo.write_bytes, args=(data,), daemon=True)
real = scanread._pipe_of

def after_writer(kind):
    writer.join(10)
    assert not writer.is_alive()
    return real(kind)

scanread._pipe_of, scanread.PipedCapture = after_writer, NoThread
writer.start()
print(chunks(read(fifo)[0]) == chunks(read(Path(sys.argv[1]))[0]))
"""


def test_a_named_pipe_whose_writer_is_gone_is_read_to_its_end(tmp_path: Path) -> None:
    """The writer wrote everything and closed before the scanner opened the pipe: opening a named pipe for reading
    waits for a writer unless told not to, and none would come (the process would hang: run apart, bounded)."""
    source = PCAPS / "smtp-ntlm-success-curl.pcap"
    assert source.stat().st_size < 65536  # the pipe holds it all: the writer can close before anything is read
    command = [sys.executable, "-c", GONE_WRITER, str(source), str(tmp_path / "fifo")]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the scanner waited for a writer that had gone")
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr


def test_a_scanner_refusing_the_pipe_leaves_it_whole_to_the_pure_python_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scanner decides from the bytes it is handed alone (PIPE_HEADER): should it refuse them, nothing more was
    taken from the pipe, and the reader that takes over reads those bytes again first."""
    real = scanread._cscan.Scanner
    refused: list[bytes] = []

    def refusing(path: Any, **settings: Any) -> Any:
        if settings.get("prefix"):
            refused.append(settings["prefix"])
            raise ValueError("refused")
        return real(path, **settings)

    monkeypatch.setattr(scanread._cscan, "Scanner", refusing)
    data = (PCAPS / "smtp-ntlm-success-curl.pcap").read_bytes()
    from_pipe, counters = through_fifo(tmp_path, data)
    assert refused and len(refused[0]) >= scanread.PIPE_HEADER and data.startswith(refused[0])
    assert chunks(from_pipe) == chunks(read(PCAPS / "smtp-ntlm-success-curl.pcap", "python")[0])
    assert counters.bytes_read == len(data)


def test_the_prefix_is_every_byte_taken_from_the_descriptor() -> None:
    """What sniffing read, what the buffered file holds beyond it, and raw reads up to the length asked: the
    descriptor's next byte is the one after them."""
    first, second = os.pipe()
    payload = bytes(range(256)) * 64
    os.write(second, payload[:10])
    fh = os.fdopen(first, "rb")
    replay = Replay(fh)
    assert replay.read(4) == payload[:4]  # the buffered file read all ten bytes there were
    replay.rewind()
    os.write(second, payload[10:])
    os.close(second)
    prefix = replay.take_prefix(24)
    assert prefix == payload[: len(prefix)] and len(prefix) >= 24
    assert os.read(first, 16) == payload[len(prefix) : len(prefix) + 16]
    replay.fh = io.BytesIO(payload[len(prefix) + 16 :])
    assert replay.read(len(prefix)) == prefix  # kept for a reader that takes over
    fh.close()
