"""A compressed classic pcap file read by the compiled scanner: a thread decompresses it into a pipe, which the
scanner reads as it reads a file (``xzcat day.pcap.xz | tcpdump -r -``, inside one process).

The pure-Python reader took about 2 µs a record on top of the decoder, so a capture compressed 6 000 to 1 (an xz
file of empty records: 12 KB for 5 million) cost its expanded size in Python time; now the decoder sets the pace.
The thread holds what one decoder step gives (``Decompressed``, as the pure-Python reader reads it, so a stream
cut short gives all before the cut) and the pipe's buffer; the decoder's window stays bounded by
:data:`~passive.capture.compressed.MAX_WINDOW`. The file's compressed bytes are counted as read (``tally``), as
the pure-Python reader counts them. A damaged stream ends the pipe; :attr:`damage` says why, and the caller words it
as the pure-Python reader does. The scanner closing its end (a stop request) ends the thread at its next write.
"""

from __future__ import annotations

import lzma
import os
import threading
import zlib
from pathlib import Path

from passive.capture.pcapfile import Decompressed, Tallied, Tally
from passive.core.errors import one_line

CHUNK = 1 << 20
"""Decoded bytes asked of the decoder per step (what the pure-Python reader asks for one record at most)."""
_DECODER_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)


class PipedCapture:
    """The pipe (:attr:`path`, for the scanner to open) a thread decompresses ``path`` into; a context manager that
    closes the pipe and waits for the thread."""

    def __init__(self, path: Path, compression: str, tally: Tally | None) -> None:
        self.damage: str | None = None
        self._source, self._compression, self._tally = path, compression, tally
        self._read, self._write = os.pipe()
        self._thread = threading.Thread(target=self._feed, name="decompress", daemon=True)

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
            with open(self._source, "rb") as raw:
                source = raw if self._tally is None else Tallied(raw, self._tally)
                stream = Decompressed(self._compression, source)  # type: ignore[arg-type]
                try:
                    while chunk := self._step(stream):
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(self._write, view) :]
                finally:
                    stream.close()
        except BrokenPipeError:
            pass  # the scanner stopped reading
        except OSError as exc:  # the file went away or could not be read
            self.damage = self.damage or one_line(exc)
        finally:
            os.close(self._write)

    def _step(self, stream: Decompressed) -> bytes:
        try:
            return stream.read(CHUNK)
        except _DECODER_ERRORS as exc:  # a damaged compressed stream: all before the damage was passed on
            self.damage = one_line(exc)
            return b""
