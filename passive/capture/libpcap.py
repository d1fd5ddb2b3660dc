"""Reading capture files through libpcap (the pcapy-ng binding), with a BPF filter.

libpcap filters in C, so Python only sees the packets the filter passes. The binding is
optional at run time: :func:`libpcap_available` says whether it is installed; without it
the capture layer falls back to its pure-Python reader (:mod:`passive.capture.pyreader`).
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from passive.capture.bpf import build_bpf_filter
from passive.capture.counters import CaptureCounters
from passive.capture.frames import FrameLocator
from passive.capture.linklayer import SUPPORTED_LINKTYPES
from passive.capture.options import CaptureOptions
from passive.capture.pcapfile import MAX_RECORD
from passive.capture.stop import StopFlag
from passive.core.errors import CaptureError, one_line


class PacketSink(Protocol):
    """Where a file reader hands packets (:class:`~passive.capture.engine.Engine`)."""

    counters: CaptureCounters
    stop: StopFlag | None

    def feed(self, frame: int, ts: float, linktype: int, data: bytes) -> None: ...

    def would_match(self, data: bytes, linktype: int) -> bool: ...


@functools.cache
def binding() -> Any:
    """The libpcap binding (pcapy-ng), imported on first use, or None when it is not installed (it is optional at
    run time). Loading it loads libpcap, which a run reading files with the compiled scanner and no BPF filter
    never uses: only a filter, a live capture or the libpcap backend ask for it."""
    try:
        import pcapy  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - exercised by forcing backend="python" in tests
        return None
    return pcapy


BATCH_BYTES = 16 * 1024 * 1024
"""Packet bytes one next_batch call may hand over (it copies them twice: libpcap's buffer, then a bytes object)."""
BATCH = BATCH_BYTES // MAX_RECORD
"""Packets asked of libpcap per next_batch call on files. next_batch counts packets, not bytes, so the count is the
byte budget over the largest record libpcap accepts for the link types it is given (MAX_RECORD: libpcap refuses
bigger records for them, whatever snapshot length the file header claims). 64 packets per call costs no
measurable time against 2 048 on bench/gen_capture.py captures."""
META = struct.Struct("=IIII")  # next_batch's per-packet record: seconds, microseconds, offset in the buffer, length


def libpcap_available() -> bool:
    return binding() is not None


def read_with_libpcap(path: Path, engine: PacketSink, options: CaptureOptions) -> bool:
    """Feed the packets of a classic pcap file that pass the filter to ``engine``.

    Returns False, having read nothing, when libpcap refuses the file (e.g. a link type it
    does not know): the built-in reader may still cope.
    """
    counters = engine.counters
    pcapy = binding()
    try:
        reader = pcapy.open_offline(str(path))
    except pcapy.PcapError as exc:
        counters.warn(f"libpcap could not open the file ({exc}); using the built-in reader", anomaly=False)
        return False
    linktype = reader.datalink()
    if linktype not in SUPPORTED_LINKTYPES:
        # libpcap accepts far bigger records for some link types (128 MiB for D-Bus): the built-in reader caps them.
        reader.close()
        return False
    expr = build_bpf_filter(options.ports, all_ports=options.all_ports, user_filter=options.bpf, linktype=linktype)
    try:
        reader.setfilter(expr)
    except pcapy.PcapError as exc:
        raise CaptureError(f"invalid BPF filter: {one_line(exc)}") from None
    locator = FrameLocator(path) if options.exact_frames else None
    batches = _LibpcapBatches(path, reader, expr)
    base = counters.packets_read
    try:
        read = _feed_batches(batches, engine, linktype, locator, _Position(reader, counters))
    finally:
        if locator is not None:
            locator.close()
        reader.close()
    counters.packets_read = base + read
    damage = batches.damage
    if damage is not None:
        if "capture length" in damage:  # libpcap: "invalid packet capture length N, bigger than snaplen of M"
            counters.oversized_records += 1
        what = "truncated" if "truncated" in damage else "corrupt"
        counters.warn(f"{what} capture: stopped after frame {read}: {damage}")
    return True


def _feed_batches(
    batches: _LibpcapBatches, engine: PacketSink, linktype: int, locator: FrameLocator | None, position: _Position
) -> int:
    """Feed every packet to the engine, numbered by ``locator`` if given; return the frames read. Between batches,
    the counters say how far the file was read, and a stop request ends the reading."""
    counters = engine.counters
    stop = engine.stop if engine.stop is not None else StopFlag()
    locate = locator.locate if locator is not None else None
    feed = engine.feed
    ordinal = 0
    base = counters.packets_read
    iter_meta = META.iter_unpack
    for buf, meta in batches:
        if stop.requested:
            stop.cut = True
            return locator.frame if locator is not None else ordinal
        for sec, usec, offset, caplen in iter_meta(meta):
            data = buf[offset : offset + caplen]
            ordinal += 1
            if locate is None:
                frame = ordinal
            else:
                frame = locate(sec, usec, data)
                if frame is None:
                    counters.warn(
                        "exact frame numbers lost (file and libpcap disagree); numbering matched packets instead"
                    )
                    locator.close()  # type: ignore[union-attr]
                    locator = locate = None
                    frame = ordinal
            feed(frame, sec + usec * 1e-6, linktype, data)
        counters.packets_read = base + (locator.frame if locator is not None else ordinal)
        position.update()
    position.update()
    return locator.count_rest() if locator is not None else ordinal


class _Position:
    """Where libpcap is in its file, as ``counters.bytes_read`` (one lseek per batch: libpcap says nothing of it)."""

    def __init__(self, reader: object, counters: CaptureCounters) -> None:
        self.counters = counters
        self.base = counters.bytes_read
        try:
            self.fd: int | None = reader.getfd()  # type: ignore[attr-defined]
        except (AttributeError, binding().PcapError):
            self.fd = None

    def update(self) -> None:
        if self.fd is None:
            return
        try:
            self.counters.bytes_read = self.base + os.lseek(self.fd, 0, os.SEEK_CUR)
        except OSError:
            self.fd = None


class _LibpcapBatches:
    """Packet batches from ``next_batch``, salvaging the packets before a damaged record.

    ``next_batch`` discards the whole batch when libpcap hits damage part-way through it,
    so on error the file is reopened, the packets already handed out are skipped, and the
    rest are read one by one up to the damage. ``damage`` then holds libpcap's message.
    """

    def __init__(self, path: Path, reader: object, expr: str) -> None:
        self.path, self.reader, self.expr = path, reader, expr
        self.damage: str | None = None

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        handed_out = 0
        reader = self.reader
        pcapy = binding()
        while True:
            try:
                buf, meta = reader.next_batch(BATCH)  # type: ignore[attr-defined]
            except pcapy.PcapError as exc:
                self.damage = one_line(exc)
                break
            if not meta:
                return
            handed_out += len(meta) // META.size
            yield buf, meta
        yield from self._salvage(handed_out)

    def _salvage(self, handed_out: int) -> Iterator[tuple[bytes, bytes]]:
        """Reread the file past the ``handed_out`` packets, one by one, up to the damage."""
        pcapy = binding()
        salvage = pcapy.open_offline(str(self.path))
        try:
            salvage.setfilter(self.expr)
            for _ in range(handed_out):
                salvage.next()
            while True:
                try:
                    header, data = salvage.next()
                except pcapy.PcapError:
                    break
                if header is None:
                    break
                sec, usec = header.getts()
                # A damaged record may hold a negative time; next_batch reports it as unsigned, so do the same.
                yield data, META.pack(sec & 0xFFFFFFFF, usec & 0xFFFFFFFF, 0, len(data))
        finally:
            salvage.close()


def compile_filter(expr: str, linktype: int) -> Callable[[bytes], bool]:
    """A user's BPF expression as a predicate on frames of ``linktype``, for readers libpcap does not filter."""
    pcapy = binding()
    if pcapy is None:
        raise CaptureError("a BPF filter expression needs libpcap (pcapy-ng), which is not installed")
    try:
        program = pcapy.compile(linktype, MAX_RECORD, expr, 1, 0xFFFFFFFF)
    except pcapy.PcapError as exc:
        raise CaptureError(f"invalid BPF filter for link type {linktype}: {one_line(exc)}") from None
    return lambda data: bool(program.filter(data))
