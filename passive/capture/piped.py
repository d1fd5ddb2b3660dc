"""A capture the compiled scanner cannot open itself, read through a pipe: a compressed file, or standard input and
other pipes (``xzcat day.pcap.xz | tcpdump -r -``, inside one process). A thread writes the capture's bytes,
decompressed, into the pipe, which the scanner reads as it reads a file.

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
import threading
import zlib
from pathlib import Path
from typing import Any

from passive.capture.pcapfile import Decompressed, Tallied, Tally
from passive.core.errors import one_line

CHUNK = 1 << 16
"""Bytes asked per step of the decoder or per read of a pipe, as the pure-Python reader asks: larger steps cost
more than they save (a 1 MiB step took 2.4 s of system time to decompress 1 GB, page faults of new buffers; 64 KiB,
0.3 s)."""
PIPE_BYTES = 1 << 20
"""The pipe's buffer asked of the kernel (Linux's default ceiling, ``/proc/sys/fs/pipe-max-size``; 64 KiB if
refused): the writer and the scanner wake each other less often."""
_DECODER_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)


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

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self._read}"

    def __enter__(self) -> PipedCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._read)  # the scanner holds a descriptor of its own: a writer still busy now gets EPIPE
        self._thread.join()

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
        except _DECODER_ERRORS as exc:  # a damaged stream: all before the damage was passed on
            self.damage = one_line(exc)
            return b""
