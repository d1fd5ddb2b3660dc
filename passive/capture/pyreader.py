"""Reading capture files with the built-in pure-Python reader, filtering in Python.

Used for gzip-compressed files and pcapng, and for everything when libpcap is not
installed. The port filter is :meth:`~passive.capture.engine.Engine.would_match`; a user's
BPF expression is compiled by libpcap per link type (:func:`~passive.capture.libpcap.compile_filter`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from passive.capture.libpcap import PacketSink, compile_filter
from passive.capture.options import CaptureOptions
from passive.capture.pcapfile import MAX_RECORD, CaptureFormatError, FileKind, PacketReader, RawPacket
from passive.capture.stop import StopFlag
from passive.core.errors import CaptureError, one_line


def read_with_python(path: Path, engine: PacketSink, options: CaptureOptions, kind: FileKind | None = None) -> None:
    """Feed the packets of a pcap/pcapng file (plain or gzip) that pass the filters to ``engine``; stop before the
    next packet once ``engine.stop`` is requested."""
    counters = engine.counters
    stop = engine.stop if engine.stop is not None else StopFlag()
    try:
        reader = PacketReader(path, kind, tally=counters)
    except (OSError, CaptureFormatError) as exc:
        raise CaptureError(f"{path}: {one_line(exc)}") from None
    user_filters: dict[int, Callable[[bytes], bool]] = {}
    feed, would_match = engine.feed, engine.would_match
    packet: RawPacket
    for packet in reader:
        if stop.requested:
            stop.cut = True
            break
        counters.packets_read += 1
        frame, ts, linktype, data, _wire_len = packet
        if not would_match(data, linktype):
            continue
        if options.bpf:
            accept = user_filters.get(linktype)
            if accept is None:
                accept = user_filters[linktype] = compile_filter(options.bpf, linktype)
            if not accept(data):
                continue
        feed(frame, ts, linktype, data)
    if reader.error:
        counters.warn(reader.error)
    counters.oversized_records += reader.oversized
    if reader.cut:
        counters.warn(f"{reader.cut} packets longer than {MAX_RECORD} bytes were cut to that length")
