"""A capture the compiled scanner cannot open itself, read through a pipe: a compressed file, or standard input and
other pipes (``xzcat day.pcap.xz | tcpdump -r -``, inside one process). A thread writes the capture's bytes,
decompressed, into the pipe, which the scanner reads as it reads a file. A large gzip, xz or bzip2 file is expanded
by a process of its own instead (:mod:`passive.capture.expand`, :data:`EXPAND_APART_MIN`).

The pure-Python reader took about 2 µs a record on top of the decoder, so a capture compressed 6 000 to 1 (an xz
file of empty records: 12 KB for 5 million) cost its expanded size in Python time; now the decoder sets the pace.
The thread holds what one decoder step gives (``Decompressed``, as the pure-Python reader reads it, so a stream
cut short gives all before the cut) and the pipe's buffer; the decoder's window stays bounded by
:data:`~passive.capture.compressed.MAX_WINDOW`. The bytes taken from the file or stream are counted as read
(``tally``: compressed bytes for a compressed file), as the pure-Python reader counts them. A damaged stream ends
the pipe; :attr:`damage` says why, and the caller words it as the pure-Python reader does. The scanner closing its
end (a stop request) ends the thread at its next write.
"""

from __future__ import annotations

import contextlib
import fcntl
import lzma
import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any

from passive.capture.pcapfile import Decompressed, Tallied, Tally
from passive.core.errors import one_line
from passive.core.files import regular_file_size

CHUNK = 1 << 16
"""Bytes asked per step of the decoder or per read of a pipe, as the pure-Python reader asks: larger steps cost
more than they save (a 1 MiB step took 2.4 s of system time to decompress 1 GB, page faults of new buffers; 64 KiB,
0.3 s)."""
PIPE_BYTES = 1 << 20
"""The pipe's buffer asked of the kernel (Linux's default ceiling, ``/proc/sys/fs/pipe-max-size``; 64 KiB if
refused): the writer and the scanner wake each other less often."""
DECODER_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)
EXPAND_APART_MIN = 64 << 20
"""A compressed file of this many bytes or more (in one of :data:`EXPAND_APART`) is expanded by a process of its own
rather than a thread: the thread waits for the interpreter lock the analysis holds, and the two take turns (a 1 GB
gzip capture of 2% mail: 6.7 s with a thread, 5.3 s with a process, one process's analysis). Below it the thread
stays: starting a Python process (about 60 ms) costs more than a small file's turns."""
EXPAND_APART = frozenset({"gzip", "xz", "bz2"})
"""The compressions expanded apart: those whose decoder takes the interpreter lock often or runs long. 200 MB of that
capture, thread against process: gzip 1.41 against 1.19 s, xz 4.99 against 4.83 s, bzip2 8.06 against 7.76 s; zstd
(1 GB) 2.53 against 2.96 s, its decoder fast enough that the pipe between two processes costs more than it saves."""
_PACKAGES = str(Path(__file__).resolve().parents[2])  # where ``passive`` is imported from, for the process


class PipedCapture:
    """The pipe (:attr:`path`, for the scanner to open) a thread writes the capture at ``path`` into: decompressed
    (``compression``), and from ``stream`` (what sniffing it left, :class:`~passive.capture.pcapfile.FileKind`) when
    it is a pipe itself. A context manager that closes the pipe and waits for the thread."""

    def __init__(self, path: Path, compression: str | None, tally: Tally | None, stream: Any = None) -> None:
        self.damage: str | None = None
        self._source, self._compression, self._tally, self._stream = path, compression, tally, stream
        self._read, self._write = os.pipe()
        with contextlib.suppress(OSError, AttributeError):  # fewer wake-ups: the writer fills more at a time
            fcntl.fcntl(self._write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._thread = threading.Thread(target=self._feed, name="capture-pipe", daemon=True)
        self._child: subprocess.Popen[bytes] | None = None  # the process expanding a large file instead
        self._source_fd = -1
        self._base = 0
        self._closed = False

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self._read}"

    def __enter__(self) -> PipedCapture:
        if not self._expand_apart():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Once the scanner closed its own descriptor of the pipe: end the writer (one still busy gets EPIPE at its
        next write) and wait for it, so that :attr:`damage` is final. Once only."""
        if self._closed:
            return
        self._closed = True
        os.close(self._read)
        if self._child is None:
            self._thread.join()
            return
        _, said = self._child.communicate()
        self.count()
        os.close(self._source_fd)
        if self._child.returncode != 0:
            lines = said.decode("utf-8", "replace").strip().splitlines()
            self.damage = one_line(lines[-1] if lines else f"expanding ended with status {self._child.returncode}")

    def count(self) -> None:
        """Count as read the compressed bytes the expanding process took so far (it shares the file's offset)."""
        if self._child is not None and self._tally is not None:
            with contextlib.suppress(OSError):
                self._tally.bytes_read = self._base + os.lseek(self._source_fd, 0, os.SEEK_CUR)

    def _expand_apart(self) -> bool:
        """Start the process that expands a large file (:data:`EXPAND_APART_MIN`, :data:`EXPAND_APART`); False: the
        thread is to write the pipe (a small file, a zstd or uncompressed one, a pipe, a process that could not
        start)."""
        if self._compression not in EXPAND_APART or self._stream is not None:
            return False
        if (regular_file_size(str(self._source)) or 0) < EXPAND_APART_MIN:
            return False
        try:
            source = os.open(self._source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False  # the thread says why
        path = os.pathsep.join(filter(None, [_PACKAGES, os.environ.get("PYTHONPATH")]))
        environment = {**os.environ, "PYTHONPATH": path}
        command = [sys.executable, "-m", "passive.capture.expand", self._compression]
        try:
            self._child = subprocess.Popen(
                command, stdin=source, stdout=self._write, stderr=subprocess.PIPE, env=environment
            )
        except OSError:
            os.close(source)
            return False
        self._source_fd = source
        self._base = self._tally.bytes_read if self._tally is not None else 0
        os.close(self._write)  # the process holds the writing end now: its end is the pipe's end
        return True

    def _feed(self) -> None:
        try:
            raw = self._stream if self._stream is not None else open(self._source, "rb")  # noqa: SIM115 - closed below
            source = raw if self._tally is None else Tallied(raw, self._tally)
            reader = source if self._compression is None else Decompressed(self._compression, source)
            try:
                while chunk := self._step(reader):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(self._write, view) :]
            finally:
                reader.close()
        except BrokenPipeError:
            pass  # the scanner stopped reading
        except OSError as exc:  # the file went away or could not be read
            self.damage = self.damage or one_line(exc)
        finally:
            os.close(self._write)

    def _step(self, reader: Any) -> bytes:
        try:
            return bytes(reader.read(CHUNK))
        except DECODER_ERRORS as exc:  # a damaged stream: all before the damage was passed on
            self.damage = one_line(exc)
            return b""
