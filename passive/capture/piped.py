"""A capture the compiled scanner cannot open itself, read through a pipe: a compressed file (``xzcat day.pcap.xz |
tcpdump -r -``, inside one process), or a stream that is no pipe (a socket or a terminal on standard input; a plain
capture on a pipe is read by the scanner from that pipe, :func:`passive.capture.scanread._pipe_of`). A thread
writes the capture's bytes, decompressed, into the pipe, which the scanner reads as it reads a file. A large gzip,
xz or bzip2 file is expanded by a forked process of its own instead (:mod:`passive.capture.expand`).

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
import os
import threading
from pathlib import Path
from typing import Any

from passive.capture.expand import CHUNK, DECODER_ERRORS, Expander, expanded_apart
from passive.capture.pcapfile import Decompressed, Tallied, Tally
from passive.core.errors import one_line

PIPE_BYTES = 1 << 20
"""The pipe's buffer asked of the kernel (Linux's default ceiling, ``/proc/sys/fs/pipe-max-size``; 64 KiB if
refused): the writer and the scanner wake each other less often."""


class PipedCapture:
    """The pipe (:attr:`path`, for the scanner to open) a thread writes the capture at ``path`` into: decompressed
    (``compression``), and from ``stream`` (what sniffing it left, :class:`~passive.capture.pcapfile.FileKind`) when
    it is a pipe itself (a large gzip, xz or bzip2 file: a forked process). A context manager that closes the pipe and
    waits for the writer (:meth:`close`)."""

    def __init__(self, path: Path, compression: str | None, tally: Tally | None, stream: Any = None) -> None:
        self.damage: str | None = None
        self._source, self._compression, self._tally, self._stream = path, compression, tally, stream
        self._read, self._write = os.pipe()
        with contextlib.suppress(OSError, AttributeError):  # fewer wake-ups: the writer fills more at a time
            fcntl.fcntl(self._write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._thread = threading.Thread(target=self._feed, name="capture-pipe", daemon=True)
        self._expander: Expander | None = None  # the process expanding a large file instead
        self._base = tally.bytes_read if tally is not None else 0
        self._closed = False

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self._read}"

    def __enter__(self) -> PipedCapture:
        if self._compression is not None and self._stream is None and expanded_apart(str(self._source)):
            expander = Expander(str(self._source), self._compression, self._write, self._tally)
            if expander.start():
                self._expander = expander
                os.close(self._write)  # the process holds the writing end now: its end is the pipe's end
                return self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, counted: bool = True) -> None:
        """Once the scanner closed its own descriptor of the pipe: end the writer (one still busy ends at its next
        write) and wait for it, so that :attr:`damage` is final. Once only. ``counted`` False: what the writer
        took from the file is not counted as read (the file is read anew, by the pure-Python reader)."""
        if self._closed:
            return
        self._closed = True
        os.close(self._read)
        if self._expander is not None:
            self.damage = self._expander.finish(counted)
        else:
            self._thread.join()
        if not counted and self._tally is not None:
            self._tally.bytes_read = self._base

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
