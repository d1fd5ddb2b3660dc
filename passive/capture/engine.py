"""Capture sources and the packet loop that feeds TCP reassembly.

Entry points:

* :func:`analyze_file` reads a capture file and drives a :class:`~passive.capture.reassembly.Reassembler`
  with the caller's handler factory; it returns the :class:`~passive.capture.counters.CaptureCounters`.
* :class:`LiveCapture` does the same on a live interface (snaplen, promiscuous mode, BPF)
  and reports libpcap's kernel drop statistics.

Which reader handles a file (decided per file):

* classic pcap, uncompressed -> **libpcap** (pcapy-ng) with a BPF filter, so Python only sees
  mail traffic. libpcap does not say how many records its filter skipped; with
  ``exact_frames`` (default) a header walk over the memory-mapped file recovers the exact
  frame number of every packet it passes (see :class:`~passive.capture.pcapfile.FrameLocator`).
  With ``exact_frames=False`` frames are numbered among the packets the filter passed,
  which is faster but does not match tshark's numbering.
* gzip-compressed files and pcapng -> the built-in pure-Python reader (libpcap cannot
  read gzip, and rejects pcapng files whose interfaces differ in link type, possibly after
  part of the file was already processed). It applies the same port filter in Python.
* no libpcap binding installed -> the pure-Python reader for everything, with a one-line
  notice on stderr. A user BPF expression (``bpf=``) needs libpcap to be compiled.

The filter passes TCP on the mail ports, also under one or two VLAN tags on Ethernet, plus
IPv6 packets that reach TCP through extension headers (BPF cannot check their ports, so
Python does). A user's expression is ANDed in front of it (placed first so the offsets
that ``vlan`` shifts do not apply to it). IPv4 fragments are counted, not reassembled.
"""

from __future__ import annotations

import select
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from passive.capture.counters import CaptureCounters
from passive.capture.linklayer import (
    FRAGMENT_V4,
    FRAGMENT_V6,
    INFO_EXT_HEADERS,
    INFO_FIRST_FRAGMENT,
    LINKTYPE_ETHERNET,
    MALFORMED,
    UNSUPPORTED_LINK,
    decode_tcp,
)
from passive.capture.pcapfile import CaptureFormatError, FileKind, FrameLocator, PacketReader, RawPacket, sniff_kind
from passive.capture.reassembly import MAIL_PORTS, Classifier, HandlerFactory, Reassembler, default_mail_classifier

try:  # libpcap binding; optional at run time
    import pcapy  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - exercised by forcing backend="python" in tests
    pcapy = None

__all__ = [
    "MAIL_PORTS",
    "CaptureError",
    "CaptureOptions",
    "LiveCapture",
    "PcapStats",
    "analyze_file",
    "build_bpf_filter",
    "libpcap_available",
]

_BATCH = 2048
_META = struct.Struct("=IIII")
_NO_LIBPCAP_NOTICE = "leakscope: libpcap binding (pcapy-ng) not available; using the slower built-in capture reader"


class CaptureError(Exception):
    """A capture cannot be opened or read at all; ``str(error)`` is a one-line message."""


@dataclass
class CaptureOptions:
    """How to read and reassemble. Defaults suit offline analysis of mail traffic."""

    ports: frozenset[int] = MAIL_PORTS
    all_ports: bool = False  # pass every TCP flow; `classifier` decides which ones are mail
    classifier: Classifier | None = default_mail_classifier  # used only with all_ports
    bpf: str | None = None  # user expression, ANDed with the mail filter
    backend: str = "auto"  # "auto", "libpcap" or "python"
    exact_frames: bool = True
    idle_timeout: float = 300.0
    max_flows: int = 10_000
    max_buffer: int = 256 * 1024  # out-of-order bytes held per direction
    max_total_buffer: int = 64 * 1024 * 1024
    resync_lines: bool = True


def libpcap_available() -> bool:
    return pcapy is not None


def build_bpf_filter(
    ports: Iterable[int] = MAIL_PORTS,
    *,
    all_ports: bool = False,
    user_filter: str | None = None,
    linktype: int = LINKTYPE_ETHERNET,
    ipv6_ext_in_vlan: bool = True,
    protochain: bool = True,
) -> str:
    """BPF expression passing mail TCP (any TCP with ``all_ports``), VLAN-tagged too on Ethernet.

    ``ipv6_ext_in_vlan=False`` leaves out the IPv6 extension-header clause under VLAN tags,
    for live Linux captures where libpcap cannot combine ``protochain`` with ``vlan``.
    ``protochain=False`` replaces ``protochain`` (a loop, which the Linux kernel refuses, so libpcap
    would silently filter every packet in user space) by a check of the first IPv6 next header.
    """
    if all_ports:
        tcp = "tcp"
    else:
        port_list = " or ".join(f"port {p}" for p in sorted(set(ports)))
        tcp = f"tcp and ({port_list})"
    # IPv6 extension headers hide TCP from `tcp`/`port`; protochain finds it, Python checks ports.
    # Fragment headers get their own clause: libpcap's optimiser mishandles them combined with the other.
    chained = "(ip6 protochain 6 and not ip6 proto 6) or (ip6 protochain 44)"
    if not protochain:
        # Hop-by-hop, routing, fragment, destination options, AH: extension headers that may precede TCP.
        chained = "(ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 60 or ip6[6] == 51))"
    base = f"({tcp}) or {chained}"
    expr = base
    if linktype == LINKTYPE_ETHERNET:
        # `vlan` shifts offsets for the rest of the expression, hence the nesting for QinQ.
        tagged = base if ipv6_ext_in_vlan else f"({tcp})"
        expr = f"({base}) or (vlan and (({tagged}) or (vlan and ({tagged}))))"
    if user_filter and user_filter.strip():
        expr = f"({user_filter}) and ({expr})"
    return expr


class _Engine:
    """Decode -> port check -> reassembly, shared by every reader."""

    def __init__(self, factory: HandlerFactory, options: CaptureOptions, counters: CaptureCounters) -> None:
        self.options = options
        self.counters = counters
        self.ports = options.ports
        self.all_ports = options.all_ports
        self.reassembler = Reassembler(
            factory,
            counters=counters,
            server_ports=options.ports,
            idle_timeout=options.idle_timeout,
            max_flows=options.max_flows,
            max_buffer=options.max_buffer,
            max_total_buffer=options.max_total_buffer,
            resync_lines=options.resync_lines,
            classifier=options.classifier if options.all_ports else None,
        )
        self._unsupported_warned: set[int] = set()

    def feed(self, frame: int, ts: float, linktype: int, data: bytes) -> None:
        """One frame that passed the mail filter."""
        counters = self.counters
        counters.packets_matched += 1
        result = decode_tcp(linktype, data)
        if result.__class__ is int:
            self._status(result, linktype)  # type: ignore[arg-type]
            return
        segment = result  # type: ignore[assignment]
        if not self.all_ports and segment[2] not in self.ports and segment[3] not in self.ports:
            counters.ignored += 1
            return
        if len(segment[7]) < segment[8]:
            counters.truncated_packets += 1
        if segment[9] & INFO_FIRST_FRAGMENT:
            counters.ip_fragments += 1
            return
        self.reassembler.process(segment, frame, ts)  # type: ignore[arg-type]

    def would_match(self, data: bytes, linktype: int) -> bool:
        """Python equivalent of the BPF mail filter, for readers without libpcap filtering."""
        result = decode_tcp(linktype, data)
        if result.__class__ is int:
            if result in (FRAGMENT_V6, MALFORMED):  # MALFORMED passes so it shows up as a decode error
                return True
            return result == FRAGMENT_V4 and self.all_ports
        if self.all_ports:
            return True
        _src, _dst, sport, dport, *_rest, info = result  # type: ignore[misc]
        return sport in self.ports or dport in self.ports or bool(info & INFO_EXT_HEADERS)

    def _status(self, status: int, linktype: int) -> None:
        counters = self.counters
        if status == MALFORMED:
            counters.decode_errors += 1
        elif status in (FRAGMENT_V4, FRAGMENT_V6):
            counters.ip_fragments += 1
        else:
            counters.ignored += 1
            if status == UNSUPPORTED_LINK and linktype not in self._unsupported_warned:
                self._unsupported_warned.add(linktype)
                counters.warn(f"link type {linktype} is not supported; its frames are counted as ignored")

    def finish(self) -> None:
        self.reassembler.flush()


def analyze_file(
    path: str | Path,
    handler_factory: HandlerFactory,
    options: CaptureOptions | None = None,
    *,
    counters: CaptureCounters | None = None,
) -> CaptureCounters:
    """Read a capture file, reassemble its mail flows into ``handler_factory``'s handlers, return the counters.

    Raises :class:`CaptureError` (one-line message) when the file is missing, unreadable or
    not a capture. Damage inside a capture does not raise: packets before it are processed,
    an anomaly is counted and the message lands in ``counters.warnings``.
    """
    options = options or CaptureOptions()
    counters = counters if counters is not None else CaptureCounters()
    path = Path(path)
    try:
        kind = sniff_kind(path)
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except PermissionError:
        raise CaptureError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except CaptureFormatError as exc:
        raise CaptureError(f"{path}: {exc}") from None

    # libpcap takes the name as UTF-8; a name that is not (bytes from argv) goes to the built-in reader, and so
    # does a pipe or FIFO (``kind.stream``): sniffing read its first bytes, which only the built-in reader has.
    libpcap_can_read = kind.format == "pcap" and not kind.gzip and kind.stream is None and _utf8_name(path)
    backend = _choose_backend(options, libpcap_can_read)
    engine = _Engine(handler_factory, options, counters)
    if backend == "libpcap":
        _run_libpcap_file(path, engine, options)
    else:
        _run_python_file(path, engine, options, kind)
    engine.finish()
    return counters


def _utf8_name(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _choose_backend(options: CaptureOptions, libpcap_can_read: bool) -> str:
    if options.backend not in ("auto", "libpcap", "python"):
        raise CaptureError(f"unknown capture backend {options.backend!r} (use auto, libpcap or python)")
    if options.backend == "python":
        return "python"
    if pcapy is None:
        if options.backend == "libpcap":
            raise CaptureError("libpcap backend requested but pcapy-ng is not installed")
        _notice_no_libpcap()
        return "python"
    return "libpcap" if libpcap_can_read else "python"


_notice_shown = False


def _notice_no_libpcap() -> None:
    global _notice_shown
    if not _notice_shown:
        _notice_shown = True
        print(_NO_LIBPCAP_NOTICE, file=sys.stderr)


def _run_libpcap_file(path: Path, engine: _Engine, options: CaptureOptions) -> None:
    counters = engine.counters
    try:
        reader = pcapy.open_offline(str(path))
    except pcapy.PcapError as exc:
        # libpcap refused the file (e.g. a link type it does not know): the built-in reader may still cope.
        counters.warn(f"libpcap could not open the file ({exc}); using the built-in reader", anomaly=False)
        _run_python_file(path, engine, options)
        return
    linktype = reader.datalink()
    expr = build_bpf_filter(options.ports, all_ports=options.all_ports, user_filter=options.bpf, linktype=linktype)
    try:
        reader.setfilter(expr)
    except pcapy.PcapError as exc:
        raise CaptureError(f"invalid BPF filter: {_one_line(exc)}") from None

    locator = FrameLocator(path) if options.exact_frames else None
    locate = locator.locate if locator is not None else None
    feed = engine.feed
    ordinal = 0
    iter_meta = _META.iter_unpack
    batches = _LibpcapBatches(path, reader, expr)
    try:
        for buf, meta in batches:
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
        read = locator.count_rest() if locator is not None else ordinal
        counters.packets_read += read
        damage = batches.damage
        if damage is not None:
            what = "truncated" if "truncated" in damage else "corrupt"
            counters.warn(f"{what} capture: stopped after frame {read}: {damage}")
    finally:
        if locator is not None:
            locator.close()
        reader.close()


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
        while True:
            try:
                buf, meta = reader.next_batch(_BATCH)  # type: ignore[attr-defined]
            except pcapy.PcapError as exc:
                self.damage = _one_line(exc)
                break
            if not meta:
                return
            handed_out += len(meta) // _META.size
            yield buf, meta
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
                yield data, _META.pack(sec & 0xFFFFFFFF, usec & 0xFFFFFFFF, 0, len(data))
        finally:
            salvage.close()


def _run_python_file(path: Path, engine: _Engine, options: CaptureOptions, kind: FileKind | None = None) -> None:
    counters = engine.counters
    try:
        reader = PacketReader(path, kind)
    except (OSError, CaptureFormatError) as exc:
        raise CaptureError(f"{path}: {_one_line(exc)}") from None
    user_filters: dict[int, Callable[[bytes], bool]] = {}
    feed, would_match = engine.feed, engine.would_match
    packet: RawPacket
    for packet in reader:
        counters.packets_read += 1
        frame, ts, linktype, data, _wire_len = packet
        if not would_match(data, linktype):
            continue
        if options.bpf:
            accept = user_filters.get(linktype)
            if accept is None:
                accept = user_filters[linktype] = _compile_user_filter(options, linktype)
            if not accept(data):
                continue
        feed(frame, ts, linktype, data)
    if reader.error:
        counters.warn(reader.error)


def _compile_user_filter(options: CaptureOptions, linktype: int) -> Callable[[bytes], bool]:
    if pcapy is None:
        raise CaptureError("a BPF filter expression needs libpcap (pcapy-ng), which is not installed")
    try:
        program = pcapy.compile(linktype, 262144, options.bpf, 1, 0xFFFFFFFF)
    except pcapy.PcapError as exc:
        raise CaptureError(f"invalid BPF filter for link type {linktype}: {_one_line(exc)}") from None
    return lambda data: bool(program.filter(data))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return " ".join(text.split())


class PcapStats(NamedTuple):
    received: int
    dropped: int  # dropped by the kernel: buffer full
    if_dropped: int  # dropped by the interface/driver


class LiveCapture:
    """Capture from a live interface (needs libpcap and capture privileges).

    Frames are numbered in the order they are received (only packets the BPF filter
    passes reach us, so these are not positions in any file). Call :meth:`stats` for
    libpcap's receive/drop counts; ``run`` stops when ``should_stop()`` returns true (after
    reading what the kernel had queued, for at most ``drain_seconds``), after ``max_packets``
    packets, or on an error.
    """

    def __init__(
        self,
        interface: str,
        options: CaptureOptions | None = None,
        *,
        snaplen: int = 262144,
        promisc: bool = True,
        timeout_ms: int = 250,
        buffer_size: int | None = None,
    ) -> None:
        if pcapy is None:
            raise CaptureError("live capture needs libpcap (pcapy-ng), which is not installed")
        self.options = options or CaptureOptions()
        self.interface = interface
        try:
            handle = pcapy.create(interface)
            handle.set_snaplen(snaplen)
            handle.set_promisc(bool(promisc))
            handle.set_timeout(timeout_ms)
            if buffer_size:
                handle.set_buffer_size(buffer_size)
            status = handle.activate()
        except pcapy.PcapError as exc:
            raise CaptureError(f"cannot capture on {interface}: {_one_line(exc)}") from None
        if status is not None and status < 0:
            # activate() reports failures as a libpcap status; open_live gives the readable message.
            try:
                pcapy.open_live(interface, snaplen, int(bool(promisc)), timeout_ms).close()
            except pcapy.PcapError as exc:
                raise CaptureError(f"cannot capture on {interface}: {_one_line(exc)}") from None
            raise CaptureError(f"cannot capture on {interface}: libpcap status {status}")
        self._handle = handle
        self._timeout = max(timeout_ms, 1) / 1000
        # After should_stop(): how long at most to keep reading what was captured before the stop.
        self.drain_seconds = max(1.0, 4 * self._timeout)
        # Non-blocking reads plus select(): with TPACKET_V3 a blocking read may wait past its timeout
        # while no packet arrives, and `should_stop` would not be looked at.
        handle.setnonblock(1)
        self.linktype = handle.datalink()
        options = self.options
        # Loop-free, so the kernel runs the filter and only mail reaches user space.
        expr = build_bpf_filter(
            options.ports,
            all_ports=options.all_ports,
            user_filter=options.bpf,
            linktype=self.linktype,
            protochain=False,
        )
        try:
            handle.setfilter(expr)
        except pcapy.PcapError as exc:
            raise CaptureError(f"invalid BPF filter: {_one_line(exc)}") from None
        self.filter = expr

    def run(
        self,
        handler_factory: HandlerFactory,
        *,
        max_packets: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        counters: CaptureCounters | None = None,
        on_tick: Callable[[float], None] | None = None,
        tick_interval: float = 1.0,
    ) -> CaptureCounters:
        """Capture until stopped; ``on_tick(capture_now)`` runs every ``tick_interval`` s, traffic or not.

        Idle flows expire on capture time even when no packet arrives: capture time is carried
        forward from the last packet's timestamp by the wall-clock time elapsed since it arrived.
        """
        counters = counters if counters is not None else CaptureCounters()
        engine = _Engine(handler_factory, self.options, counters)
        reassembler = engine.reassembler
        linktype, feed = self.linktype, engine.feed
        frame = 0
        last_ts: float | None = None
        last_arrival = next_tick = time.monotonic()
        drain_until: float | None = None  # set once stopping: until then, read what the kernel already queued
        idle_waits = 0  # read timeouts waited in a row, while stopping, with nothing read
        try:
            while max_packets is None or frame < max_packets:
                if drain_until is None and should_stop():
                    # Bounded: on a busy span port the queue may never run dry.
                    drain_until = time.monotonic() + self.drain_seconds
                try:
                    buf, meta = self._handle.next_batch(256)
                except pcapy.PcapError as exc:
                    counters.warn(f"capture on {self.interface} failed: {_one_line(exc)}")
                    break
                if not meta:
                    # Two whole read timeouts: TPACKET_V3 retires a partly filled block on a timer, not at once.
                    if drain_until is not None and (idle_waits >= 2 or time.monotonic() >= drain_until):
                        break  # the kernel's queue is empty
                    select.select([self._handle.getfd()], [], [], self._timeout)
                    idle_waits += drain_until is not None
                else:
                    idle_waits = 0
                    for sec, usec, offset, caplen in _META.iter_unpack(meta):
                        frame += 1
                        counters.packets_read += 1
                        last_ts = sec + usec * 1e-6
                        feed(frame, last_ts, linktype, buf[offset : offset + caplen])
                        if max_packets is not None and frame >= max_packets:
                            break
                    last_arrival = time.monotonic()
                now = time.monotonic()
                if drain_until is not None and now >= drain_until:
                    break
                if now >= next_tick:
                    next_tick = now + tick_interval
                    capture_now = time.time() if last_ts is None else last_ts + (now - last_arrival)
                    reassembler.expire(capture_now)
                    if on_tick is not None:
                        on_tick(capture_now)
        finally:
            engine.finish()
        return counters

    def stats(self) -> PcapStats:
        received, dropped, if_dropped = self._handle.stats()
        return PcapStats(received, dropped, if_dropped)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
