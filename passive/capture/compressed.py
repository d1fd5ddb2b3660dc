"""Compressed captures read as streams, with the memory a decoder may take bounded whatever the file asks for.

A compressed stream names the window (dictionary) its decoder must keep: gzip 32 KiB and bzip2 at most 900 kB by
their formats, but an xz or zstd header may ask for gigabytes, and the decoder fills what it asked for as it
expands the data: a 45 KB xz file asking for a 256 MiB dictionary took ``analyze`` to 295 MiB. Such a stream is
refused with a one-line reason (:data:`MAX_WINDOW`), as a damaged stream is: every decoder error comes out as
:class:`DamagedStream`, a ``ValueError``.
"""

from __future__ import annotations

import collections
import io
import itertools
import lzma
from collections.abc import Callable
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
    ``zstandard`` package. Each format's module is imported here, for a file in that format: a run of plain
    captures never loads them."""
    if compression == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=source, mode="rb")
    if compression == "xz":
        return io.BufferedReader(XzReader(source))  # type: ignore[return-value]
    if compression == "bz2":
        import bz2

        return bz2.BZ2File(source, "rb")
    import zstandard  # a runtime dependency

    decoder = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).decompressobj(read_across_frames=True)
    return io.BufferedReader(ZstdReader(source, decoder, zstandard.ZstdError))  # type: ignore[return-value]


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


class ZstdReader(_Raw):
    """The frames of a zstd stream decoded one block at a time, its errors (``ZstdError``, not an ``OSError`` nor a
    ``ValueError``) as :class:`DamagedStream`, and a frame cut short an ``EOFError``, as a gzip or xz stream cut
    short ends.

    Not ``zstandard``'s stream reader: it ends a frame cut short as it ends a whole one, without a word, and at a
    cut that falls at the end of a block it drops that block's part it had not handed out yet (half of it, read 64
    KiB at a time). Here the compressed bytes are cut after each block's end (:class:`ZstdFrames` follows the
    frames' headers), and each piece is given to the decoder alone: each decoding gives at most one block (128 KiB,
    the format's largest), however much a piece of a hostile file would expand."""

    def __init__(self, source: Any, decoder: Any, error: type[Exception]) -> None:
        super().__init__()
        self.source, self.decoder, self.error = source, decoder, error
        self.frames = ZstdFrames()
        self._pieces: collections.deque[bytes] = collections.deque()
        self._decoded, self._offset = b"", 0

    def _read(self, size: int) -> bytes:
        while self._offset >= len(self._decoded) and size:
            if not self._pieces:
                raw = self.source.read(_READ_SIZE)
                if not raw:
                    if not self.frames.whole():
                        raise EOFError(f"zstd frame {self.frames.count + 1} is cut short")
                    return b""
                self._pieces.extend(self.frames.split(raw))
                continue
            try:
                self._decoded, self._offset = self.decoder.decompress(self._pieces.popleft()), 0
            except self.error as exc:
                raise DamagedStream(str(exc)) from None
        data = self._decoded[self._offset : self._offset + size]
        self._offset += len(data)
        return data


_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE = 0x184D2A50  # skippable frames: this magic number with its last 4 bits any
_FCS_BYTES = (0, 2, 4, 8)  # frame content size bytes by the header's flag (0: 1 byte in a single segment, else 0)
_DICT_BYTES = (0, 1, 2, 4)
_LOST_PIECE = 64
"""Bytes per piece given to the decoder past what :class:`ZstdFrames` cannot follow (not a frame: the decoder
refuses it at once): however it would expand, at most 16 RLE blocks' worth (2 MiB)."""


class ZstdFrames:
    """The frames of a zstd stream, followed by their headers alone as the compressed bytes go by (RFC 8878: a
    frame header, blocks each with its 3-byte header and the last one marked, an optional 4-byte checksum; or a
    skippable frame of a stated size). :meth:`split` cuts the bytes after each block's end; :meth:`whole` tells a
    stream that ends at a frame's end from one cut inside a frame. Following stops at what is no frame (the decoder
    reports it). Nothing is held but a header's bytes."""

    def __init__(self) -> None:
        self.count = 0  # frames ended
        self._held = b""  # the part of the header being read
        self._need = 4  # its length
        self._step: Callable[[bytes], None] = self._magic  # what reads the header once it is whole
        self._skip = 0  # content bytes still to pass over before the next header
        self._closing = False  # the bytes skipped end a block (or a skippable frame)
        self._ends_frame = False  # and a frame
        self._checksum = False
        self._lost = False  # not a frame: no longer followed

    def whole(self) -> bool:
        """Whether the bytes seen end where a frame ends (or at what is no frame: the decoder's to report)."""
        return self._lost or (self._step == self._magic and not self._held and not self._skip)

    def split(self, data: bytes) -> list[bytes]:
        """``data``, the next bytes of the stream, cut after each block's (or skippable frame's) end."""
        cuts, pos, size = [0], 0, len(data)
        while pos < size and not self._lost:
            if self._skip:
                passed = min(self._skip, size - pos)
                self._skip -= passed
                pos += passed
                if not self._skip:
                    self._ended(cuts, pos)
                continue
            taken = data[pos : pos + self._need - len(self._held)]
            self._held += taken
            pos += len(taken)
            if len(self._held) == self._need:
                header, self._held = self._held, b""
                self._step(header)
                if self._closing and not self._skip:  # content of no bytes
                    self._ended(cuts, pos)
        if self._lost:
            cuts += range(pos, size, _LOST_PIECE)
        cuts.append(size)
        return [data[start:end] for start, end in itertools.pairwise(cuts) if end > start]

    def _ended(self, cuts: list[int], pos: int) -> None:
        """A block (or skippable frame) ended at ``pos``."""
        self._closing = False
        cuts.append(pos)
        if self._ends_frame:
            self.count += 1
            self._ends_frame = False

    def _expect(self, length: int, step: Callable[[bytes], None]) -> None:
        self._need, self._step = length, step

    def _pass(self, length: int, ends_frame: bool) -> None:
        """Content of ``length`` bytes follows; then a block header, or the next frame."""
        self._skip, self._ends_frame, self._closing = length, ends_frame, True
        if ends_frame:
            self._expect(4, self._magic)
        else:
            self._expect(3, self._block)

    def _magic(self, header: bytes) -> None:
        magic = int.from_bytes(header, "little")
        if magic == _ZSTD_MAGIC:
            self._expect(1, self._descriptor)
        elif magic & 0xFFFFFFF0 == _SKIPPABLE:
            self._expect(4, lambda size: self._pass(int.from_bytes(size, "little"), ends_frame=True))
        else:
            self._lost = True

    def _descriptor(self, header: bytes) -> None:
        flags = header[0]
        single = bool(flags & 0x20)
        self._checksum = bool(flags & 0x04)
        rest = (0 if single else 1) + _DICT_BYTES[flags & 3] + (_FCS_BYTES[flags >> 6] or int(single))
        if flags & 0x08:  # a reserved bit set: not a frame this follows
            self._lost = True
        elif rest:
            self._expect(rest, lambda _header: self._expect(3, self._block))
        else:
            self._expect(3, self._block)

    def _block(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        last, kind, length = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3:  # reserved block type
            self._lost = True
            return
        length = 1 if kind == 1 else length  # an RLE block holds its one byte
        self._pass(length + (4 if last and self._checksum else 0), ends_frame=bool(last))


_XZ_MAGIC = b"\xfd7zXZ\x00"


class XzReader(_Raw):
    """The streams of an xz file, one after another, as ``xz -d`` reads them, each decoder limited to
    :data:`MAX_WINDOW`. Streams may be followed by stream padding (null bytes, a multiple of four: the xz format,
    section 2.2); padding of another length, or anything after a stream that is neither padding nor another stream,
    is damage, reported (``lzma.LZMAFile`` stops at padding, losing the streams after it, and ignores the rest)."""

    def __init__(self, source: Any) -> None:
        super().__init__()
        self.source = source
        self._decoder = self._new()
        self._streams = 1
        self._done = False

    def _read(self, size: int) -> bytes:
        while not self._done and size:
            decoder = self._decoder
            if decoder.eof:
                rest = self._after_padding(decoder.unused_data)
                if not rest:
                    self._done = True
                    break
                if not _XZ_MAGIC.startswith(rest[: len(_XZ_MAGIC)]):
                    raise DamagedStream(f"what follows xz stream {self._streams} is neither padding nor a stream")
                self._decoder, self._streams = self._new(), self._streams + 1
                data = self._decompress(rest, size)
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

    def _after_padding(self, rest: bytes) -> bytes:
        """What follows a stream's padding, from ``rest`` (the bytes after the stream) on: b"" at the end of the
        file. Padding that is not a multiple of four bytes is damage, as ``xz -d`` finds it."""
        padding = 0
        while True:
            if not rest:
                rest = self.source.read(_READ_SIZE)
                if not rest:
                    break
            stripped = rest.lstrip(b"\0")
            padding += len(rest) - len(stripped)
            rest = stripped
            if rest:
                break
        if padding % 4:
            raise DamagedStream(f"{padding} null bytes of padding after xz stream {self._streams}, not a multiple of 4")
        return rest

    def _decompress(self, raw: bytes, size: int) -> bytes:
        try:
            return self._decoder.decompress(raw, size)
        except lzma.LZMAError as exc:
            if "memory usage limit" in str(exc).lower():
                raise DamagedStream(f"it needs more than {MAX_WINDOW >> 20} MiB of memory to decode") from None
            raise DamagedStream(str(exc)) from None

    @staticmethod
    def _new() -> lzma.LZMADecompressor:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=MAX_WINDOW + (8 << 20))
