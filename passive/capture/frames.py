"""Exact frame numbers for the packets libpcap passes through a BPF filter, recovered from the file's record headers."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from passive.capture.pcapfile import MAX_RECORD, PCAP_MAGIC_NSEC, PCAP_MAGIC_USEC

# Mapped pages of the capture already walked are handed back to the kernel in steps of this size.
_RELEASE_EVERY = 32 << 20


class FrameLocator:
    """Recover exact frame numbers for packets libpcap passed through a BPF filter.

    libpcap does not tell how many records its filter skipped, so this walks the record
    headers of the (uncompressed, classic pcap) file alongside it: the next packet
    libpcap hands over is the next record with the same timestamp, captured length and
    bytes. Walking headers costs a fraction of what decoding every packet in Python would.
    """

    def __init__(self, path: Path) -> None:
        with path.open("rb") as fh:
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        head = self._map[:24]
        endian = "<" if struct.unpack("<I", head[:4])[0] in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC) else ">"
        self._nsec = struct.unpack(endian + "I", head[:4])[0] == PCAP_MAGIC_NSEC
        self._caplen = struct.Struct(endian + "I").unpack_from
        self._stamp = struct.Struct(endian + "II").unpack_from
        self._pos = 24
        self._size = len(self._map)
        self._released = 0
        self.frame = 0  # frames walked so far

    def _release(self, pos: int) -> None:
        # Pages already walked would otherwise stay in this process's RSS for the whole run.
        start = self._released
        end = pos - pos % mmap.PAGESIZE
        if end - start >= _RELEASE_EVERY:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)
            self._released = end

    def locate(self, sec: int, usec: int, data: bytes) -> int | None:
        """Frame number of the next record equal to (sec, usec, data); None if the file holds none."""
        mem, pos, end = self._map, self._pos, self._size
        caplen_of, stamp_of = self._caplen, self._stamp
        caplen, frame = len(data), self.frame
        if (
            not self._nsec
            and pos + 16 <= end
            and stamp_of(mem, pos) == (sec, usec)
            and caplen_of(mem, pos + 8)[0] == caplen
        ):
            # Common case: libpcap's packet is the very next record.
            nxt = pos + 16 + caplen
            if mem[pos + 16 : nxt] == data:
                self._pos, self.frame = nxt, frame + 1
                if nxt - self._released >= _RELEASE_EVERY:
                    self._release(nxt)
                return frame + 1
        while pos + 16 <= end:
            length = caplen_of(mem, pos + 8)[0]
            frame += 1
            if length == caplen:
                rec_sec, rec_frac = stamp_of(mem, pos)
                if self._nsec:
                    rec_frac //= 1000
                if rec_sec == sec and rec_frac == usec and mem[pos + 16 : pos + 16 + length] == data:
                    self._pos, self.frame = pos + 16 + length, frame
                    if pos - self._released >= _RELEASE_EVERY:
                        self._release(pos)
                    return frame
            if length > MAX_RECORD:
                break
            pos += 16 + length
        return None

    def count_rest(self) -> int:
        """Walk to the end and return the total number of complete records."""
        mem, pos, end, frame = self._map, self._pos, len(self._map), self.frame
        caplen_of = self._caplen
        while pos + 16 <= end:
            length = caplen_of(mem, pos + 8)[0]
            if length > MAX_RECORD or pos + 16 + length > end:
                break
            pos += 16 + length
            frame += 1
            if pos - self._released >= _RELEASE_EVERY:
                self._release(pos)
        self._pos, self.frame = pos, frame
        return frame

    def close(self) -> None:
        self._map.close()
