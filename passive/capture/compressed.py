"""Compressed captures read as streams, with the memory a decoder may take bounded whatever the file asks for.

A compressed stream names the window (dictionary) its decoder must keep: gzip 32 KiB and bzip2 at most 900 kB by
their formats, but an xz or zstd header may ask for gigabytes, and the decoder fills what it asked for as it
expands the data: a 45 KB xz file asking for a 256 MiB dictionary took ``analyze`` to 295 MiB. Such a stream is
refused with a one-line reason (:data:`MAX_WINDOW`), as a damaged stream is: every decoder error comes out as
:class:`DamagedStream`, a ``ValueError``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from typing import Any, BinaryIO

MAX_WINDOW = 128 << 20
"""The most memory an xz or zstd decoder may keep for its window: what ``xz -9`` (64 MiB dictionary) and ``zstd
--long`` or ``--ultra -22`` (128 MiB window, zstd's own default limit) need, and nothing a real capture tool or a
user's ``xz``/``zstd`` command writes without being told to exceed it."""
_READ_SIZE = 1 << 16


class DamagedStream(ValueError):
    """The compressed stream cannot be decoded (damaged, or asking for more than :data:`MAX_WINDOW`)."""


def decompressor(compression: str, source: Any) -> BinaryIO:
    """A reading stream of what ``source`` holds compressed: gzip, bz2 and xz by the standard library, zstd by the
    ``zstandard`` package."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=source, mode="rb")
    if compression == "xz":
        return io.BufferedReader(XzReader(source))  # type: ignore[return-value]
    if compression == "bz2":
        return bz2.BZ2File(source, "rb")
    import zstandard  # a runtime dependency; imported here so the other formats never pay for it

    reader = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_reader(
        source, read_across_frames=True, closefd=False
    )
    return io.BufferedReader(_ZstdReader(reader, zstandard.ZstdError))  # type: ignore[return-value]


class _Raw(io.RawIOBase):
    """A raw stream for ``BufferedReader`` whose ``_read(size)`` gives up to ``size`` decoded bytes (b"" at the
    end)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as view, view.cast("B") as target:
            data = self._read(len(target))
            target[: len(data)] = data
            return len(data)

    def _read(self, size: int) -> bytes:
        raise NotImplementedError


class _ZstdReader(_Raw):
    """``zstandard``'s stream reader with its errors (``ZstdError``, not an ``OSError`` nor a ``ValueError``) as
    :class:`DamagedStream`."""

    def __init__(self, reader: Any, error: type[Exception]) -> None:
        super().__init__()
        self.reader, self.error = reader, error

    def _read(self, size: int) -> bytes:
        try:  # a read that meets the error loses what it decoded: small reads lose at most a block's worth
            return self.reader.read(min(size, _READ_SIZE))  # type: ignore[no-any-return]
        except self.error as exc:
            raise DamagedStream(str(exc)) from None

    def close(self) -> None:
        self.reader.close()
        super().close()


class XzReader(_Raw):
    """The streams of an xz file, one after another, as ``lzma.LZMAFile`` reads them (what follows the last stream
    and is not one is ignored), each decoder limited to :data:`MAX_WINDOW`."""

    def __init__(self, source: Any) -> None:
        super().__init__()
        self.source = source
        self._decoder = self._new()
        self._done = False

    def _read(self, size: int) -> bytes:
        while not self._done and size:
            decoder = self._decoder
            if decoder.eof:
                rest = decoder.unused_data or self.source.read(_READ_SIZE)
                if not rest:
                    self._done = True
                    break
                self._decoder = self._new()
                data = self._decompress(rest, size, after_stream=True)
            elif decoder.needs_input:
                raw = self.source.read(_READ_SIZE)
                if not raw:
                    raise EOFError("the xz stream ends before its end marker")
                data = self._decompress(raw, size)
            else:
                data = self._decompress(b"", size)
            if data:
                return data
        return b""

    def _decompress(self, raw: bytes, size: int, after_stream: bool = False) -> bytes:
        """What ``raw`` decodes to; ``after_stream``: ``raw`` is the first of what follows a stream, which is
        trailing data, ignored, if it does not begin another (as LZMAFile judges it: a stream that begins and then
        breaks is damage, reported)."""
        try:
            return self._decoder.decompress(raw, size)
        except lzma.LZMAError as exc:
            if "memory usage limit" in str(exc).lower():
                raise DamagedStream(f"it needs more than {MAX_WINDOW >> 20} MiB of memory to decode") from None
            if not after_stream:
                raise DamagedStream(str(exc)) from None
            self._done = True  # not a further stream: trailing data, ignored as LZMAFile ignores it
            return b""

    @staticmethod
    def _new() -> lzma.LZMADecompressor:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=MAX_WINDOW + (8 << 20))
