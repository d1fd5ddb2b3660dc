"""Which capture files are pieces of one capture: ring buffers (``tcpdump -C``/``-G -W``, ``dumpcap -b``) joined.

A capture tool writing a ring buffer closes one file and opens the next between two packets: a TCP session open at
that moment has its first half in one file and the rest in the next. Read apart, the second half is a flow picked up
mid-stream (its authentication, perhaps, lost). So files are **grouped**, and a group is read as one stream
(:mod:`passive.capture.joined`): flows go on from one file to the next.

Files are grouped when they look like consecutive pieces of one capture (:func:`group_captures`):

* they are regular files in the same directory (a capture tool writes its ring in one place) whose names differ
  only in their digits (``ring.pcap``, ``ring.pcap1``; ``cap_00001_20250301120000.pcapng``, ``cap_00002_…``), a
  counter or a compression suffix ending the name being optional;
* same format, link types, snapshot length and (pcapng) interface names;
* ordered by their first packet's time, each file's first packet comes at or after the previous file's last, and
  at most :data:`JOIN_GAP` seconds after it; and its last packet comes after the previous file's last. A capture
  tool switches files before a packet, which the next file holds: a file whose time range equals or lies inside
  its predecessor's is no piece a ring's tool writes. Two copies of a one-packet capture (first and last packet
  at one instant) would otherwise be read as one stream, the copy's packet a retransmission.
* A clock stepped back at the switch (a leap second, an NTP step) gives the next file a first packet before the
  previous file's last: up to :data:`STEP_BACK` seconds before it, and by at most half of either file's time
  range, the file still goes on when its name comes after the previous file's (its runs of digits, the ring's
  counter or time, compared as numbers: ``ring.pcap``, ``ring.pcap1``). Copies, other sensors' captures and one
  capture per host over the same minutes overlap by most of their length, or do not add time.

Where two chains of files could go on with a file (two sensors' rings in one directory, their times overlapping),
it goes on the one whose names it follows (:func:`_affinity`).

Anything else stays a group of its own: files of two interfaces, captures whose times overlap (two sensors, the
same capture copied twice), a file whose times cannot be read (its reader reports the damage). Groups are listed in
the order of their first file among the inputs; a group's files in time order.
"""

from __future__ import annotations

import bisect
import contextlib
import lzma
import math
import mmap
import os
import re
import stat
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from passive.capture.compressed import decompressor
from passive.capture.options import IDLE_TIMEOUT
from passive.capture.pcapfile import (
    MAX_RECORD,
    PCAP_MAGIC_NSEC,
    PCAPNG_SHB,
    CaptureFormatError,
    PacketReader,
    sniff_kind,
)
from passive.capture.scanread import read_through

JOIN_GAP = IDLE_TIMEOUT
"""Seconds of silence allowed between one file's last packet and the next file's first: past the idle timeout every
flow of the first file would have expired before the next packet anyway, so joining would gain nothing."""
TAIL_WINDOW = 4 * (MAX_RECORD + 16)
"""Bytes at the end of a classic pcap file searched for its last records (a few of the largest records): the last
packet's time is found without reading the file, which matters on an archive of thousands of 100 MB files."""
HEAD_BYTES = 1 << 16
"""Bytes of a pcapng file's start read for its interface descriptions."""
STEP_BACK = 1.0
"""Seconds a ring's next file may begin before the previous file's last packet (a clock stepped back between them)
and still go on it: a leap second steps a clock back by 1 s, ``ntpd`` steps it once the offset passes 128 ms.
Larger steps (a clock set by hand, a virtual machine restored) are rare and not told apart from captures that
overlap; those files stay apart, a session open at the switch read as two halves."""
MAX_FITTING = 64
"""Chains a file could go on (ending within :data:`JOIN_GAP` before its first packet) whose names are compared with
its own: the latest-ending ones. More than this many sensors' rings switching files at one moment in one directory
may see a file go on another sensor's; the bound keeps the work per file small whatever the number of files."""
_MAX_SPAN = 10 * 366 * 86400  # seconds a record's time may be past the file's first one and still be believed
_MIN_CHAIN = 3  # records a chain found in the tail must hold (unless it starts at the first record) to be believed

Key = tuple[str, str, str, tuple[int, ...], int, tuple[str, ...]]
# (directory, name without its digits, format, link types, snapshot length, interfaces)
_DIGITS = re.compile(r"\d+")
_COMPRESSED = re.compile(r"\.(gz|xz|bz2|zst|zstd)$", re.IGNORECASE)  # the compressions the readers take


@dataclass(frozen=True)
class Span:
    """A capture file's identity for grouping, and its first and last packet times."""

    path: str
    key: Key
    first: float
    last: float


def _name_key(path: str) -> tuple[str, str]:
    """The directory and the name without its digits, a compression suffix or a counter ending it: files that may
    be pieces of one ring share it. ``tcpdump -C`` names its first file ``ring.pcap`` and the next ``ring.pcap1``;
    an archive compresses the pieces it keeps (``ring.pcap1.gz``) beside the one still written."""
    directory, name = os.path.split(os.path.abspath(path))
    return directory, _DIGITS.sub("#", _COMPRESSED.sub("", name)).removesuffix("#")


def _digit_runs(path: str) -> list[str]:
    return _DIGITS.findall(_COMPRESSED.sub("", os.path.basename(path)))


def _follows(previous: Span, span: Span, runs: dict[str, list[str]]) -> bool:
    """Whether ``span`` may be the ring's next file after ``previous`` (in time, within :data:`JOIN_GAP`): it adds
    time after ``previous``'s last packet, and begins at or after it, or (a clock stepped back at the switch) at
    most :data:`STEP_BACK` before it, by at most half of either file's time range, with a name that comes after
    ``previous``'s. Captures of one time overlap by most of their length (copies moved a little, one capture per
    host over the same minutes)."""
    if span.last <= previous.last:
        return False  # a copy, or a file all of whose packets came at the instant the previous one's last did
    overlap = previous.last - span.first
    if overlap <= 0:
        return True
    if 2 * overlap > min(previous.last - previous.first, span.last - span.first):
        return False
    return [int(run) for run in runs[span.path]] > [int(run) for run in runs[previous.path]]


def _affinity(last: list[str], runs: list[str]) -> int:
    """How many of a file's name's runs of digits (``runs``) a chain's last file's (``last``) has in the same place:
    a sensor's number stays, the ring's counter and time change (``sensor1_00002_…`` goes on ``sensor1_00001_…``,
    not on ``sensor2_…``)."""
    return sum(a == b for a, b in zip(last, runs, strict=False))


def group_captures(
    paths: Iterable[str],
    join: bool = True,
    describe_all: Callable[[list[str]], list[Span | None]] | None = None,
) -> list[list[str]]:
    """The inputs in groups to be read as one stream each (see the module docstring); without ``join``, one group
    per file, in the order given. ``describe_all`` maps :func:`describe` over the distinct paths (several processes
    may share the looks: a compressed file is read through)."""
    paths = list(paths)
    if not join:
        return [[path] for path in paths]
    distinct = list(dict.fromkeys(paths))
    # Only files with a possible sibling are looked at: a lone file (a compressed one would be read through) joins
    # nothing, whatever its times.
    names = [_name_key(path) for path in distinct]
    shared = Counter(names)
    looked = [path for path, name in zip(distinct, names, strict=True) if shared[name] > 1]
    described = describe_all(looked) if describe_all is not None else [describe(path) for path in looked]
    spans: dict[str, Span | None] = dict.fromkeys(distinct)
    spans.update(zip(looked, described, strict=True))
    chains: list[list[Span]] = []
    # By key (a chain may be continued only by a file of its key): (last packet's time, chain) of every chain, in
    # order, so that the chains a file may go on (ending at most JOIN_GAP before its first packet) are found by
    # bisection, not by a look at every chain: a directory of thousands of captures of one day has as many chains.
    ends: dict[Key, list[tuple[float, int]]] = {}
    runs = {span.path: _digit_runs(span.path) for span in spans.values() if span is not None}
    position = {path: n for n, path in reversed(list(enumerate(paths)))}
    order = sorted((s for s in spans.values() if s is not None), key=lambda s: (s.first, s.last, position[s.path]))
    for span in order:
        lasts = ends.setdefault(span.key, [])
        end = bisect.bisect_right(lasts, (span.first + STEP_BACK, math.inf))
        start = max(bisect.bisect_left(lasts, (span.first - JOIN_GAP, -1)), end - MAX_FITTING)
        fitting = [i for i in range(start, end) if _follows(chains[lasts[i][1]][-1], span, runs)]
        if fitting:  # two sensors' rings in one place may both fit: the one whose names it follows, the latest
            best = max(
                fitting,
                key=lambda i: (_affinity(runs[chains[lasts[i][1]][-1].path], runs[span.path]), lasts[i][0], -i),
            )
            number = lasts.pop(best)[1]
            chains[number].append(span)
        else:
            number = len(chains)
            chains.append([span])
        bisect.insort(lasts, (span.last, number))
    leader = {chain[0].path: [s.path for s in chain] for chain in chains}
    member = {s.path for chain in chains for s in chain[1:]}
    groups: list[list[str]] = []
    seen: set[str] = set()
    for path in paths:
        if path in seen and spans[path] is not None:
            groups.append([path])  # named twice: read twice, as the file list says
        elif path in leader:
            groups.append(leader[path])
        elif path not in member:
            groups.append([path])
        seen.add(path)
    return groups


def describe(path: str) -> Span | None:
    """``path``'s :class:`Span`, or None when it is not a regular capture file whose times can be read (it is then
    read on its own, and its reader says what is wrong)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        kind = sniff_kind(Path(path))
        if kind.format == "pcap":
            head = _head(path, kind.compression, 24)
            snaplen, interfaces = struct.unpack(_endian(head) + "I", head[16:20])[0], ()
        else:
            snaplen, interfaces = _pcapng_interfaces(_head(path, kind.compression, HEAD_BYTES))
        reader = PacketReader(path, kind)
        first = next(iter(reader), None)
        if first is None:
            return None
        last, linktypes = None, frozenset(reader.linktypes)
        if kind.format == "pcap" and kind.compression is None:
            last = _pcap_last_time(path)
        if last is None:  # read through, by the compiled scanner where it is built
            last, linktypes = read_through(Path(path), kind)
        key = (*_name_key(path), kind.format, tuple(sorted(linktypes)), snaplen, interfaces)
        return Span(path, key, first.ts, max(last if last is not None else first.ts, first.ts))
    except (OSError, CaptureFormatError, EOFError, ValueError, struct.error, zlib.error, lzma.LZMAError):
        return None  # a damaged compressed stream included: its reader reports it


def _head(path: str, compression: str | None, size: int) -> bytes:
    """The first ``size`` bytes of ``path``'s capture, or what comes before the end of a compressed stream cut short
    (a piece still being written, whose reader reports the cut): read one decoder step at a time, as the reader
    reads, since a read that meets the cut drops what it had decoded."""
    with open(path, "rb") as fh:
        if compression is None:
            return fh.read(size)
        stream, head = decompressor(compression, fh), b""
        with contextlib.suppress(EOFError):
            while len(head) < size and (more := stream.read1(size - len(head))):
                head += more
        return head


def _endian(header: bytes) -> str:
    return "<" if struct.unpack("<I", header[:4])[0] in (0xA1B2C3D4, PCAP_MAGIC_NSEC) else ">"


def _pcapng_interfaces(head: bytes) -> tuple[int, tuple[str, ...]]:
    """The first section's largest snapshot length and interface names (``if_name``, else the link type)."""
    endian, pos, snaplen, names = "<", 0, 0, []
    while pos + 12 <= len(head):
        block, total = struct.unpack_from(endian + "II", head, pos)
        if block == PCAPNG_SHB:
            endian = "<" if head[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            total = struct.unpack_from(endian + "I", head, pos + 4)[0]
        if total < 12 or pos + total > len(head) or block in (2, 3, 6):
            break
        if block == 1 and total >= 20:
            linktype, _reserved, length = struct.unpack_from(endian + "HHI", head, pos + 8)
            snaplen, name, at = max(snaplen, length), str(linktype), pos + 16
            while at + 4 <= pos + total - 4:
                code, size = struct.unpack_from(endian + "HH", head, at)
                if code == 0:
                    break
                if code == 2:
                    name = head[at + 4 : at + 4 + size].decode("utf-8", "replace")
                at += 4 + size + (-size % 4)
            names.append(name)
        pos += total
    return snaplen, tuple(names)


def _pcap_last_time(path: str) -> float | None:
    """The time of a classic pcap file's last record, found in its tail: the first offset from which records chain
    to the end of the file exactly. None when no such chain is found (a file cut in the middle of a record, say):
    the caller reads the file through."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 24 + 16:
            return None
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            header = data[:24]
            endian = _endian(header)
            magic, first_sec = struct.unpack(endian + "I", header[:4])[0], struct.unpack_from(endian + "I", data, 24)[0]
            divisor = 1e9 if magic == PCAP_MAGIC_NSEC else 1e6
            record = struct.Struct(endian + "IIII").unpack_from
            start = max(24, size - TAIL_WINDOW)
            for offset in range(start, size - 15):
                found = _chain(data, offset, size, record, first_sec, divisor)
                if found is not None and (found[0] >= _MIN_CHAIN or offset == 24):
                    return found[1]
    return None


def _chain(data: mmap.mmap, offset: int, size: int, record, first_sec: int, divisor: float) -> tuple[int, float] | None:
    """(records, last time) when plausible records run from ``offset`` exactly to ``size``."""
    count, last = 0, 0.0
    while offset + 16 <= size:
        sec, frac, caplen, wire_len = record(data, offset)
        if caplen > MAX_RECORD or caplen > wire_len or frac >= divisor or not first_sec <= sec <= first_sec + _MAX_SPAN:
            return None
        if sec + frac / divisor < last:
            return None
        last = sec + frac / divisor
        count += 1
        offset += 16 + caplen
        if offset == size:
            return count, last
    return None
