"""Reading a capture file through the packet scanner (:mod:`passive.capture.scanner`) into an engine.

The compiled scanner reads classic pcap and pcapng files, a pipe (standard input, a named pipe) from the pipe itself
after the bytes sniffing took (:func:`_pipe_of`), and a compressed file, or a stream that is no pipe, through a pipe
a thread writes it into (:mod:`passive.capture.piped`); the pure-Python twin reads what has a BPF expression
but a plain classic pcap file, and everything when the extension was not built or cannot be imported, which a
one-line notice on stderr says once per run. A user's BPF expression is compiled by libpcap
(pcapy-ng) for the file's link type and run by the scanner before anything else.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import stat
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import passive.capture.scanner as scanning
from passive.capture.counters import CaptureCounters
from passive.capture.libpcap import binding, compile_filter
from passive.capture.linklayer import SUPPORTED_LINKTYPES
from passive.capture.options import CaptureOptions
from passive.capture.pcapfile import MAX_RECORD, CaptureFormatError, FileKind, PacketReader, Tally
from passive.capture.piped import PIPE_BYTES, PipedCapture
from passive.capture.reassembly import sweep_interval
from passive.capture.scanner import COUNTERS, PyScanner
from passive.capture.stop import StopFlag
from passive.core.errors import CaptureError, one_line

try:  # the compiled scanner; optional (setup.py builds it where a C compiler is there)
    _cscan: Any = importlib.import_module("passive.capture._cscan")
    NATIVE_PROBLEM: str | None = None
except ImportError as _exc:  # pragma: no cover - exercised by forcing the twin in tests
    _cscan = None
    NATIVE_PROBLEM = one_line(_exc)

# "No port restriction": every TCP segment passes on the port rule. A range, which both scanners take as they take a
# set of ports: a set of 65,536 built at import cost every run 3 ms (21 M instructions) and 2 MB.
EVERY_PORT = range(65536)
_NOTICE = "leakscope: compiled packet scanner not available ({}); using the slower built-in capture reader"
_notice_shown = False


class Sink(Protocol):
    """What the scanner feeds (:class:`~passive.capture.engine.Engine`)."""

    counters: CaptureCounters
    scanner: Any
    previous_scanner: Any
    frame_base: int
    stop: StopFlag | None

    def carry_over(self, scanner: Any) -> None: ...

    def feed_items(self, items: list) -> None: ...


def native_available() -> bool:
    return _cscan is not None


def notice_native_missing() -> None:
    """Say once per run that the compiled scanner is missing (the twin is used instead)."""
    global _notice_shown
    if not _notice_shown:
        _notice_shown = True
        print(_NOTICE.format(NATIVE_PROBLEM or "not built"), file=sys.stderr)


def scan_settings(options: CaptureOptions) -> dict[str, Any]:
    """The scanner's rules for ``options``: every-port mode needs a classifier (its verdicts end flow heads);
    without one, or without ports, every TCP segment passes."""
    every_port = options.all_ports and options.classifier is not None
    restricted = bool(options.ports) and (every_port or not options.all_ports)
    return {
        "ports": options.ports if restricted else EVERY_PORT,
        "every_port": every_port,
        "head": options.head_packets,
        "shard": options.shard,
        "shards": options.shards,
        "sweep_every": sweep_interval(options.idle_timeout),
        "idle_timeout": options.idle_timeout,
        "batch_packets": scanning.BATCH_PACKETS,
    }


def read_with_scanner(path: Path, engine: Sink, options: CaptureOptions, kind: FileKind, *, native: bool) -> None:
    """Feed every batch the scanner admits from ``path`` to ``engine``, then its counters and any damage. A
    compressed file, standard input or another pipe reaches the compiled scanner through a pipe of its own
    (:mod:`passive.capture.piped`)."""
    if kind.compression is None and kind.stream is None:
        _read(path, path, engine, options, kind, native, None)
        return
    if not (native and PIPES_READABLE):  # read once only: by the twin, never by a scanner that cannot take it
        _read(path, path, engine, options, kind, False, None)
        return
    pipe = _pipe_of(kind)
    if pipe is not None:  # read by the scanner itself, from the bytes sniffing took on
        _read(pipe[0], path, engine, options, kind, native, None, pipe[1])
        return
    with PipedCapture(path, kind.compression, engine.counters, kind.stream) as piped:
        scanner = _read(Path(piped.path), path, engine, options, kind, native, piped)
    if piped.damage is not None and scanner is not None:  # worded as the pure-Python reader words it
        what = f"{kind.compression} stream" if kind.compression else "file"
        engine.counters.warn(f"truncated capture: {what} ends after frame {scanner.frames}: {piped.damage}")


def _read(
    source: Path, path: Path, engine: Sink, options: CaptureOptions, kind: FileKind, native: bool,
    piped: PipedCapture | None, prefix: bytes = b"",
) -> Any:  # fmt: skip
    """The reading loop (``source``: the file, the pipe ``path`` is written into, or the pipe ``path`` is, whose
    first bytes sniffing took are ``prefix``); the compiled scanner when it read (its damage then left to the
    caller), else None."""
    settings = scan_settings(options)
    scanner, reader = _open(source, kind, options, settings, native, engine.counters, path, piped, prefix)
    engine.scanner = scanner
    engine.carry_over(scanner)
    cursor = options.cursor
    counters = engine.counters
    stop = engine.stop
    base = counters.bytes_read  # the compiled scanner says where it is in its file; the twin's reader counts its reads
    positioned = reader is None and piped is None  # a pipe's compressed bytes are counted as they are read from it
    try:
        while (batch := scanner.next_batch()) is not None:
            engine.feed_items(batch)
            if positioned:
                counters.bytes_read = base + scanner.position
            if cursor is not None:
                cursor.done = engine.frame_base + scanner.frames
                if cursor.on_batch is not None:
                    cursor.on_batch()
            if stop is not None and stop.requested:
                stop.cut = True
                break
    finally:
        if positioned:
            counters.bytes_read = base + scanner.position
        scanner.close()
        if piped is not None:
            piped.close()  # its damage is known from here on
        engine.scanner, engine.previous_scanner = None, scanner
    add_scan_counts(counters, scanner.counters())
    source = scanner if reader is None else reader  # the compiled scanner reads the file itself
    if reader is None and scanner.error is not None and (piped is None or piped.damage is None):
        counters.warn(scanner.error)
    elif reader is not None and reader.error:
        counters.warn(reader.error)
    counters.oversized_records += source.oversized
    if source.cut:
        counters.warn(f"{source.cut} packets longer than {MAX_RECORD} bytes were cut to that length")
    linktypes = set(source.linktypes)
    if scanner.counters()["unsupported_link"]:
        for linktype in sorted(linktypes - SUPPORTED_LINKTYPES):
            counters.warn(f"link type {linktype} is not supported; its frames are counted as ignored")
    return scanner if reader is None else None


PIPES_READABLE = _cscan is not None and os.path.isdir("/proc/self/fd")
"""Whether the compiled scanner can open the pipe a thread writes a capture into (by its ``/proc/self/fd`` name: a
Linux system); elsewhere the twin reads compressed files and pipes, which are read once only."""
PIPE_HEADER = 24
"""Bytes of a capture on a pipe handed to the compiled scanner before it reads the pipe itself: a classic pcap's
global header (a pcapng file's first block header is within them), from which alone it decides whether it can read
the capture; should it refuse it, nothing more was taken from the pipe, and the pure-Python reader reads it all."""


def _pipe_of(kind: FileKind) -> tuple[Path, bytes] | None:
    """An uncompressed capture on a pipe (standard input, a named pipe): the pipe, which the compiled scanner reads
    itself as it reads a file, and the bytes sniffing already took from it, which it reads first. None for anything
    else a stream can be (a socket, a terminal, a compressed stream): a thread copies it into a pipe of its own."""
    stream = kind.stream
    if kind.compression is not None or stream is None:
        return None
    try:
        descriptor = stream.fh.fileno()
        if not stat.S_ISFIFO(os.fstat(descriptor).st_mode):
            return None
        with contextlib.suppress(OSError):  # fewer wake-ups of the writer and the scanner, as for a pipe of our own
            fcntl.fcntl(descriptor, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        return Path(f"/proc/self/fd/{descriptor}"), stream.take_prefix(PIPE_HEADER)
    except (OSError, ValueError, AttributeError):  # no descriptor, or unreadable: the thread's reading says why
        return None


REFUSE_ALL = [(0x06, 0, 0, 0)]
"""A BPF program refusing every packet (``ret #0``): the compiled scanner then reads a file through, admitting
nothing."""


def read_through(path: Path, kind: FileKind) -> tuple[float | None, frozenset[int]]:
    """The time of the last packet of ``path`` (None: it holds none) and the link types it declared, read through
    by the compiled scanner where it is built (a compressed file or a pipe through :mod:`passive.capture.piped`),
    else by the pure-Python reader (raises as :class:`PacketReader` raises; damage ends the reading)."""
    piped = kind.compression is not None or kind.stream is not None
    if _cscan is None or (piped and not PIPES_READABLE):
        reader, last = PacketReader(path, kind), None
        for packet in reader:
            last = packet.ts
        return last, frozenset(reader.linktypes)
    settings = {"ports": EVERY_PORT, "bpf": REFUSE_ALL, "batch_packets": scanning.BATCH_PACKETS}
    with PipedCapture(path, kind.compression, None, kind.stream) if piped else contextlib.nullcontext() as pipe:
        scanner = _cscan.Scanner(pipe.path if pipe is not None else str(path), **settings)
        try:
            while scanner.next_batch() is not None:
                pass
        finally:
            scanner.close()
    return scanner.last_time, frozenset(scanner.linktypes)


def _open(
    source: Path, kind: FileKind, options: CaptureOptions, settings: dict[str, Any], native: bool, tally: Tally,
    path: Path, piped: PipedCapture | None, prefix: bytes = b"",
) -> tuple[Any, PacketReader | None]:  # fmt: skip
    """The compiled scanner on ``source`` (with no reader), or the twin over a :class:`PacketReader` of ``path``
    (the pipe ``piped`` then ended first: what its writer took is not counted as read)."""
    if native and _cscan is not None:
        try:
            program = _bpf_program(options.bpf, _pcap_linktype(source, prefix)) if options.bpf else None
            return _cscan.Scanner(str(source), bpf=program, prefix=prefix, **settings), None
        except (OSError, ValueError):
            pass  # a header the built-in reader explains better (cut short, say): let it
    if piped is not None:
        piped.close(counted=False)
    try:
        reader = PacketReader(path, kind, tally=tally)
    except (OSError, CaptureFormatError) as exc:
        raise CaptureError(f"{path}: {one_line(exc)}") from None
    accept = _user_filter(options.bpf) if options.bpf else None
    return PyScanner(reader, accept=accept, **settings), reader


def _pcap_linktype(path: Path, prefix: bytes = b"") -> int:
    """A classic pcap's link type, from its header (``prefix``: the header of a pipe, which is read once only)."""
    if prefix:
        head = prefix[:24]
    else:
        with path.open("rb") as fh:
            head = fh.read(24)
    if len(head) < 24:
        return 1
    endian = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    return struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF


def _bpf_program(expr: str, linktype: int) -> list[tuple[int, int, int, int]]:
    pcapy = binding()
    if pcapy is None:
        raise CaptureError("a BPF filter expression needs libpcap (pcapy-ng), which is not installed")
    try:
        return pcapy.compile(linktype, MAX_RECORD, expr, 1, 0xFFFFFFFF).get_bpf()
    except pcapy.PcapError as exc:
        raise CaptureError(f"invalid BPF filter for link type {linktype}: {one_line(exc)}") from None


def _user_filter(expr: str) -> Callable[[int, bytes], bool]:
    """A user's BPF expression as ``accept(linktype, frame)``, compiled once per link type."""
    compiled: dict[int, Callable[[bytes], bool]] = {}

    def accept(linktype: int, data: bytes) -> bool:
        test = compiled.get(linktype)
        if test is None:
            test = compiled[linktype] = compile_filter(expr, linktype)
        return test(data)

    return accept


def buffer_scanner(options: CaptureOptions) -> Any:
    """A scanner for libpcap's ``next_batch`` buffers (live capture): compiled if built, else the twin. No sweep
    ticks: the live loop expires flows on its own clock."""
    settings = {**scan_settings(options), "sweep_every": 0.0}
    if _cscan is not None:
        return _cscan.Scanner(None, **settings)
    notice_native_missing()
    return PyScanner(None, **settings)


class ScanTally:
    """Adds a long-running scanner's counts to the capture counters as they grow (live capture)."""

    def __init__(self, counters: CaptureCounters) -> None:
        self.counters = counters
        self.seen = dict.fromkeys(COUNTERS, 0)

    def update(self, counts: dict[str, int]) -> None:
        delta = {name: counts[name] - self.seen[name] for name in COUNTERS}
        self.seen = counts
        add_scan_counts(self.counters, delta)


def add_scan_counts(counters: CaptureCounters, counts: dict[str, int]) -> None:
    """The scanner's counts in the capture counters' terms: what passed the capture filter (admitted segments,
    damaged frames, fragments) is ``packets_matched``."""
    counters.packets_read += counts["read"]
    counters.packets_matched += counts["admitted"] + counts["malformed"] + counts["fragments"]
    counters.decode_errors += counts["malformed"]
    counters.ip_fragments += counts["fragments"]
    counters.truncated_packets += counts["truncated"]
    counters.not_mail_packets += counts["not_mail"]
    counters.undecided_packets += counts["past_head"]
    counters.head_extended_packets += counts["head_extended"]
    tunnelled = counters.tunnelled
    for name in COUNTERS[COUNTERS.index("truncated") + 1 : COUNTERS.index("table_resets")]:
        if counts[name]:
            tunnelled[name] = tunnelled.get(name, 0) + counts[name]
            if not tunnelled[name]:  # all of them dropped in flight by the engine (see Engine._dropped_in_flight)
                del tunnelled[name]
    if counts["table_resets"]:
        counters.warn(
            f"the scanner's flow table filled {counts['table_resets']} time(s) with live flows; each flow then "
            "started over as new"
        )
