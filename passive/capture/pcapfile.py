"""Pure-Python readers for classic pcap and pcapng, plain or gzip-compressed.

Used when libpcap (pcapy) is not available, for gzip files, for pcapng (libpcap
refuses pcapng files whose interfaces have different link types), and for whatever is not
a regular file: a pipe (``<(zcat x.pcap.gz)``, ``/dev/stdin``), a FIFO or a device is read
once, as a stream, the bytes sniffing read kept and read again first. The readers never
raise on damaged content: they stop at the first damaged record and leave a one-line
explanation in :attr:`PacketReader.error`.

Classic pcap: both byte orders, micro- and nanosecond timestamps. pcapng: several
sections and interfaces, per-interface link type, ``if_tsresol`` and ``if_tsoffset``;
enhanced, simple and (obsolete) packet blocks are packets, every other block is skipped.
Frames are numbered from 1 in file order, as tshark does.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import stat
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from passive.capture.compressed import decompressor
from passive.capture.replay import Replay
from passive.core.errors import one_line

PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
GZIP_MAGIC = b"\x1f\x8b"
# Compressed captures, told apart by their magic numbers.
COMPRESSION_MAGICS = (
    (GZIP_MAGIC, "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bz2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)

MAX_RECORD = 262144
"""Largest captured packet read (libpcap's largest snapshot length for every link type leakscope decodes). A
classic pcap record claiming more stops the reader, as it stops libpcap, whatever snapshot length the file header
claims; a pcapng packet is cut to it, as libpcap cuts it to the snapshot length."""
MAX_BLOCK = 16 * 1024 * 1024
"""Largest pcapng block read (libpcap's initial block size limit): the reader holds one block at a time."""
MAX_INTERFACES = 65536
"""Interfaces one pcapng section may declare (as many as the obsolete packet block can name): dumpcap writes one
per interface it captures on, mergecap one per distinct input interface. Each costs about 110 bytes held, so 2
million 20-byte declarations (a 40 MB file) took 267 MiB; past this one, reading stops."""
_READ_SIZE = 1 << 20


# Microsoft Network Monitor's formats (2.x, 1.x), named in the error with how to get a pcapng of them (editcap cannot
# rewrite ETW network events, what netsh trace and PktMon record: they convert from their trace).
_NETMON = (
    ": a Microsoft Network Monitor capture; Ethernet frames convert with Wireshark (editcap -F pcapng FILE OUT), ETW "
    "network events (netsh trace, PktMon) from their .etl trace (pktmon etl2pcap, etl2pcapng)"
)
OTHER_FORMATS = ((b"GMBU", _NETMON), (b"RTSS", _NETMON))


class RawPacket(NamedTuple):
    frame: int  # 1-based position in the file
    ts: float
    linktype: int
    data: bytes
    wire_len: int


class CaptureFormatError(Exception):
    """The file is not a capture this module can read (bad magic, unsupported header)."""


class FileKind(NamedTuple):
    format: str  # "pcap" or "pcapng"
    compression: str | None  # "gzip", "xz", "bz2", "zstd", or None
    # Set for what is not a regular file (a pipe such as ``<(zcat x.pcap.gz)``, a FIFO, a device): it can be read
    # once only, so the stream sniffing opened is kept, the bytes it read to be read again first.
    stream: Replay | None = None


class Tally(Protocol):
    """Where a reader counts the bytes it took from its file (:class:`~passive.capture.counters.CaptureCounters`)."""

    bytes_read: int


class Tallied:
    """A file (or stream) whose reads are counted in ``tally.bytes_read``: the position in the file as stored, so
    the compressed position for a compressed file. One addition per read of up to a megabyte costs nothing."""

    mode = "rb"

    def __init__(self, fh: BinaryIO | Replay, tally: Tally) -> None:
        self.fh = fh
        self.tally = tally

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.tally.bytes_read += len(data)
        return data

    def close(self) -> None:
        self.fh.close()


def _compression(head: bytes) -> str | None:
    return next((name for magic, name in COMPRESSION_MAGICS if head.startswith(magic)), None)


def sniff_kind(path: Path) -> FileKind:
    """Tell pcap/pcapng and their compressions apart by magic numbers (raises OSError or CaptureFormatError).

    A regular file is closed again (its reader opens it anew); anything else is kept open in ``stream``, rewound.
    """
    fh = path.open("rb")
    try:
        regular = stat.S_ISREG(os.fstat(fh.fileno()).st_mode)
        source: BinaryIO | Replay = fh if regular else Replay(fh)
        head = source.read(6)
        compression = _compression(head)
        if compression is not None:
            if isinstance(source, Replay):
                source.rewind(recording=True)
            else:
                fh.seek(0)
            try:
                head = decompressor(compression, source).read(4)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
                raise CaptureFormatError(f"damaged {compression} stream: {exc}") from exc
        kind = _kind_of(head[:4], compression)
    except BaseException:
        fh.close()
        raise
    if isinstance(source, Replay):
        source.rewind()
        return kind._replace(stream=source)
    fh.close()
    return kind


def _kind_of(head: bytes, compressed: str | None) -> FileKind:
    if len(head) < 4:
        raise CaptureFormatError("file too short to be a capture")
    if struct.unpack("<I", head)[0] == PCAPNG_SHB:
        return FileKind("pcapng", compressed)
    magic_le, magic_be = struct.unpack("<I", head)[0], struct.unpack(">I", head)[0]
    if PCAP_MAGIC_USEC in (magic_le, magic_be) or PCAP_MAGIC_NSEC in (magic_le, magic_be):
        return FileKind("pcap", compressed)
    other = next((hint for magic, hint in OTHER_FORMATS if head.startswith(magic)), "")
    raise CaptureFormatError(f"not a pcap or pcapng file (magic {head.hex()}){other}")


class Decompressed:
    """A decompressing stream over a file or a :class:`Replay`; closing it closes both.

    A read gives what one step of the decoder gives (``read1``): at a stream cut short (a capture still being
    compressed) a decompressor's ``read(n)`` raises and drops what it had of the ``n`` bytes, so all before the cut
    is read this way."""

    def __init__(self, compression: str, source: BinaryIO | Replay) -> None:
        self._stream = decompressor(compression, source)
        self._source = source

    def read(self, size: int = -1) -> bytes:
        return self._stream.read1(size)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._source.close()


def is_capture(path: str | Path) -> bool:
    """Whether ``path`` holds a pcap or pcapng capture, plain or gzip-compressed (by magic numbers).

    Raises OSError when the file cannot be read. A pipe is consumed by the look: call this on regular files.
    """
    try:
        kind = sniff_kind(Path(path))
    except CaptureFormatError:
        return False
    if kind.stream is not None:
        kind.stream.close()
    return True


class _Stream:
    """Forward-only buffered access to a binary stream."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.damage: str | None = None  # why a compressed stream ended before its end marker

    def available(self, n: int) -> bool:
        """Make ``n`` bytes available at ``pos``; False when the stream ends first. Read in pieces of
        :data:`_READ_SIZE` joined once: a block of MAX_BLOCK bytes is then held twice at most while it is read
        (a read of it whole, and the buffer grown by it, held it four times: 67 MiB for a 16 MiB block of gzip)."""
        if self.pos + n <= len(self.buf):
            return True
        pieces = [self.buf[self.pos :]]
        have = len(pieces[0])
        while not self.eof and have < n:
            try:
                more = self.fh.read(_READ_SIZE)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:  # damaged compressed stream
                more, self.damage = b"", one_line(exc)
            if not more:
                self.eof = True
            pieces.append(more)
            have += len(more)
        self.buf, self.pos = b"".join(pieces), 0
        return have >= n

    def remaining(self) -> int:
        return len(self.buf) - self.pos


class PacketReader:
    """Iterate :class:`RawPacket` from a pcap/pcapng file (plain or gzip), or from the stream ``kind`` holds."""

    def __init__(self, path: Path | str, kind: FileKind | None = None, tally: Tally | None = None) -> None:
        self.path = Path(path)
        self.kind = kind if kind is not None else sniff_kind(self.path)
        self.tally = tally  # counts the bytes read from the file, if given
        self.error: str | None = None
        self.packets = 0
        self.oversized = 0  # records over MAX_RECORD: the one that stopped a pcap, and the pcapng packets cut to it
        self.cut = 0  # pcapng packets cut to MAX_RECORD
        self.linktypes: set[int] = set()

    def __iter__(self) -> Iterator[RawPacket]:
        with self._open() as fh:
            stream = _Stream(fh)
            if self.kind.format == "pcap":
                yield from self._pcap(stream)
            else:
                yield from self._pcapng(stream)
            if stream.damage is not None:  # the stream broke: the cause of a record the reader then saw cut short
                what = f"{self.kind.compression} stream" if self.kind.compression else "file"
                self._fail(f"truncated capture: {what} ends after frame {self.packets}: {stream.damage}")

    def _open(self) -> BinaryIO:
        source, compression = self.kind.stream, self.kind.compression
        if source is None:
            fh = open(self.path, "rb")  # noqa: SIM115 - returned to a with statement
            if self.tally is not None:
                fh = Tallied(fh, self.tally)  # type: ignore[assignment]
            if compression is None:
                return contextlib.closing(fh) if self.tally is not None else fh  # type: ignore[return-value]
            return contextlib.closing(Decompressed(compression, fh))  # type: ignore[arg-type,return-value]
        if self.tally is not None:
            source = Tallied(source, self.tally)  # type: ignore[assignment]
        if compression is not None:
            # Closing a decompressor leaves the stream under it open: close both.
            return contextlib.closing(Decompressed(compression, source))  # type: ignore[arg-type,return-value]
        return contextlib.closing(source)  # type: ignore[return-value]

    def _fail(self, message: str) -> None:
        self.error = message

    # -- classic pcap --------------------------------------------------------------------

    def _pcap(self, stream: _Stream) -> Iterator[RawPacket]:
        if not stream.available(24):
            self._fail("truncated capture: global header cut short")
            return
        header = stream.buf[:24]
        endian = "<" if struct.unpack("<I", header[:4])[0] in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC) else ">"
        magic, _major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack(endian + "IHHiIII", header)
        divisor = 1e9 if magic == PCAP_MAGIC_NSEC else 1e6
        linktype = network & 0x0FFFFFFF  # upper bits may carry FCS information
        self.linktypes.add(linktype)
        limit = MAX_RECORD  # never the header's snapshot length: a file may claim 4 GiB records
        record = struct.Struct(endian + "IIII").unpack_from
        stream.pos = 24
        frame = 0
        while True:
            if not stream.available(16):
                if stream.remaining():
                    self._fail(f"truncated capture: record header of frame {frame + 1} cut short")
                return
            sec, frac, caplen, wire_len = record(stream.buf, stream.pos)
            if caplen > limit:
                self.oversized += 1
                self._fail(
                    f"corrupt capture: frame {frame + 1} claims {caplen} captured bytes (limit {limit}); "
                    "stopped reading there"
                )
                return
            if not stream.available(16 + caplen):
                self._fail(
                    f"truncated capture: frame {frame + 1} cut short ({stream.remaining() - 16} of {caplen} bytes)"
                )
                return
            start = stream.pos + 16
            data = stream.buf[start : start + caplen]
            stream.pos = start + caplen
            frame += 1
            self.packets = frame
            yield RawPacket(frame, sec + frac / divisor, linktype, data, wire_len)

    # -- pcapng ----------------------------------------------------------------------------

    def _pcapng(self, stream: _Stream) -> Iterator[RawPacket]:
        endian = "<"
        interfaces: list[tuple[int, float, int, int]] = []  # (linktype, units per second, ts offset, snaplen)
        frame = 0
        while True:
            if not stream.available(12):
                if stream.remaining():
                    self._fail(f"truncated capture: block header after frame {frame} cut short")
                return
            buf, pos = stream.buf, stream.pos
            block_type = struct.unpack_from(endian + "I", buf, pos)[0]
            if block_type == PCAPNG_SHB:
                bom = buf[pos + 8 : pos + 12]
                if bom == struct.pack("<I", PCAPNG_BOM):
                    endian = "<"
                elif bom == struct.pack(">I", PCAPNG_BOM):
                    endian = ">"
                else:
                    self._fail(f"corrupt capture: bad section header after frame {frame}")
                    return
                interfaces = []
            total = struct.unpack_from(endian + "I", buf, pos + 4)[0]
            if total < 12 or total % 4 or total > MAX_BLOCK:
                self._fail(f"corrupt capture: block after frame {frame} has impossible length {total}")
                return
            if not stream.available(total):
                self._fail(f"truncated capture: block after frame {frame} cut short")
                return
            buf, pos = stream.buf, stream.pos
            if struct.unpack_from(endian + "I", buf, pos + total - 4)[0] != total:
                self._fail(f"corrupt capture: block after frame {frame} has mismatched trailing length")
                return
            body = memoryview(buf)[pos + 8 : pos + total - 4]  # no copy: a block may hold 16 MiB
            stream.pos = pos + total
            if block_type == 1:
                if len(interfaces) >= MAX_INTERFACES:
                    self._fail(f"corrupt capture: more than {MAX_INTERFACES} interfaces in one section")
                    return
                interfaces.append(self._interface(body, endian))
                self.linktypes.add(interfaces[-1][0])
                continue
            packet = self._packet_block(block_type, body, endian, interfaces)
            if packet is None:
                continue
            if isinstance(packet, str):
                self._fail(f"corrupt capture: frame {frame + 1}: {packet}")
                return
            frame += 1
            self.packets = frame
            linktype, ts, data, wire_len, cut = packet
            if cut:
                self.oversized += 1
                self.cut += 1
            yield RawPacket(frame, ts, linktype, data, wire_len)

    @staticmethod
    def _interface(body: bytes | memoryview, endian: str) -> tuple[int, float, int, int]:
        if len(body) < 8:
            return (-1, 1e6, 0, 0)
        linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", body, 0)
        units, offset = 1e6, 0
        pos = 8
        while pos + 4 <= len(body):
            code, length = struct.unpack_from(endian + "HH", body, pos)
            if code == 0 or pos + 4 + length > len(body):  # the end of options, or one running past the block
                break
            value = body[pos + 4 : pos + 4 + length]
            if code == 9 and length >= 1:  # if_tsresol
                exponent = value[0] & 0x7F
                units = float(2**exponent) if value[0] & 0x80 else float(10**exponent)
            elif code == 14 and length >= 8:  # if_tsoffset
                offset = struct.unpack_from(endian + "q", value, 0)[0]
            pos += 4 + length + (-length % 4)
        return (linktype, units, offset, snaplen)

    @staticmethod
    def _packet_block(
        block_type: int, body: memoryview, endian: str, interfaces: list[tuple[int, float, int, int]]
    ) -> tuple[int, float, bytes, int, bool] | str | None:
        """(link type, time, data cut to MAX_RECORD, length on the wire, whether it was cut), a damage message, or
        None for a block that is not a packet."""
        if block_type == 6:  # enhanced packet block
            if len(body) < 20:
                return "enhanced packet block too short"
            iface, ts_hi, ts_lo, caplen, wire_len = struct.unpack_from(endian + "IIIII", body, 0)
            data_at = 20
        elif block_type == 2:  # obsolete packet block
            if len(body) < 20:
                return "packet block too short"
            iface, _drops, ts_hi, ts_lo, caplen, wire_len = struct.unpack_from(endian + "HHIIII", body, 0)
            data_at = 20
        elif block_type == 3:  # simple packet block: no timestamp, interface 0
            if len(body) < 4:
                return "simple packet block too short"
            wire_len = struct.unpack_from(endian + "I", body, 0)[0]
            iface, ts_hi, ts_lo, data_at = 0, 0, 0, 4
            snaplen = interfaces[0][3] if interfaces else 0
            caplen = min(wire_len, len(body) - 4, snaplen or wire_len)
        else:
            return None
        if iface >= len(interfaces):
            return f"packet on undeclared interface {iface}"
        if data_at + caplen > len(body):
            return f"captured length {caplen} exceeds its block"
        linktype, units, offset, _snaplen = interfaces[iface]
        ts = ((ts_hi << 32) | ts_lo) / units + offset
        kept = min(caplen, MAX_RECORD)
        return (linktype, ts, bytes(body[data_at : data_at + kept]), wire_len, caplen > MAX_RECORD)
