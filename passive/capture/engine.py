"""The packet loop's core, decode -> port check -> reassembly, and :func:`analyze_file`.

:func:`analyze_file` reads a capture file and drives a :class:`~passive.capture.reassembly.Reassembler`
with the caller's handler factory; it returns the :class:`~passive.capture.counters.CaptureCounters`.
(:class:`~passive.capture.live.LiveCapture` does the same on a live interface.)

Which reader handles a file (decided per file, ``backend``):

* ``auto`` (default): the packet scanner (:mod:`passive.capture.scanner`, :mod:`passive.capture.scanread`):
  compiled for classic pcap and pcapng files (read into one reused buffer; exact frame numbers counted in C; a
  compressed file or a pipe written into a pipe of its own by a thread), its pure-Python twin for those with a BPF
  expression (but a plain classic pcap file) and for everything when the extension is not built (with a one-line
  notice on stderr). Only the segments it admits reach Python: the port filter, and in every-port mode flow heads
  and the flows the classifier kept (its verdicts reach the scanner through the reassembler).
* ``python``: the twin, whatever the file.
* ``libpcap``: libpcap (pcapy-ng, :mod:`passive.capture.libpcap`) with a BPF filter; with ``exact_frames``
  (default) a header walk over the memory-mapped file recovers the exact frame number of every packet it passes
  (see :class:`~passive.capture.frames.FrameLocator`), with ``exact_frames=False`` frames are numbered among the
  packets the filter passed. Classic pcap only (else the twin); one reader per capture (no ``shards``).

A user BPF expression (``bpf=``) needs libpcap to be compiled. The pieces of an IP packet fragmented on its way (a
TCP segment, a tunnel's packet) are joined again by every reader (:mod:`passive.capture.defrag`); those it cannot join
are counted as fragments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from passive.capture import libpcap
from passive.capture.counters import CaptureCounters
from passive.capture.defrag import Defragmenter, is_piece
from passive.capture.flow import Flow, HandlerFactory
from passive.capture.linklayer import (
    ACK,
    FRAGMENT_V4,
    FRAGMENT_V6,
    INFO_EXT_HEADERS,
    INFO_FIRST_FRAGMENT,
    INFO_TUNNELS,
    INFO_VNET_SHIFT,
    MALFORMED,
    SYN,
    TUNNEL_BITS,
    UNSUPPORTED_LINK,
    Segment,
    decode_tcp,
)
from passive.capture.options import END_FRAME, CaptureOptions
from passive.capture.pcapfile import CaptureFormatError, FileKind, sniff_kind
from passive.capture.pyreader import read_with_python
from passive.capture.reassembly import Reassembler
from passive.capture.scanread import native_available, notice_native_missing, read_with_scanner
from passive.capture.skipping import arm_requested
from passive.capture.stop import StopFlag
from passive.core.errors import CaptureError


class Engine:
    """Decode -> port check -> reassembly, shared by every reader. With ``scanning``, segments come decoded and
    admitted from a scanner (:meth:`feed_items`), which hears the classifier's verdicts and keeps the sweep clock."""

    def __init__(
        self,
        factory: HandlerFactory,
        options: CaptureOptions,
        counters: CaptureCounters,
        stop: StopFlag | None = None,
        *,
        scanning: bool = False,
        keep_servers: bool = False,
    ) -> None:
        self.options = options
        self.counters = counters
        self.stop = stop  # polled by the file readers between packets
        self.ports = options.ports
        self.all_ports = options.all_ports or not options.ports  # no port given: every port passes
        self.reassembler = Reassembler(
            factory,
            counters=counters,
            server_ports=options.ports,
            idle_timeout=options.idle_timeout,
            max_flows=options.max_flows,
            max_buffer=options.max_buffer,
            max_total_buffer=options.max_total_buffer,
            resync_lines=options.resync_lines,
            line_start=options.line_start,
            classifier=options.classifier if options.all_ports else None,
            policy=options.reassembly_policy,
            check_checksums=options.check_checksums,
            on_verdict=self._verdict if scanning else None,
            external_clock=scanning,
        )
        self._unsupported_warned: set[int] = set()
        self._defrag = Defragmenter()  # IP packets fragmented on their way, on the libpcap path (feed)
        self.scanner: Any = None  # the scanner feeding this engine, told each verdict
        self.previous_scanner: Any = None  # the one that read the previous file of a stream (carry_over)
        self.keep_servers = keep_servers  # the scanner also admits every later flow of a server found to be mail
        self.cursor = options.cursor
        self.frame_base = 0  # frames of the files read before this one, when several are one stream (joined.py)
        # Table keys of flows dropped while the scanner's current batch is fed, with the time of the flow's latest
        # packet (one cell for both directions): the scanner admitted the rest of the batch before it knew, so their
        # packets are dropped here as the scanner drops them from then on, but for a SYN or a packet after the idle
        # timeout, which the scanner takes for a new flow.
        self._dropping: dict[tuple[bytes, int, bytes, int, int], list[float]] = {}

    def _verdict(self, flow: Flow, keep: bool) -> None:
        scanner = self.scanner
        if scanner is None:
            return
        if keep:
            scanner.keep_flow(flow.client_addr, flow.client_port, flow.server_addr, flow.server_port, flow.vnet)
            if self.keep_servers:
                scanner.keep_server(flow.server_addr, flow.server_port)
        else:
            scanner.drop_flow(flow.client_addr, flow.client_port, flow.server_addr, flow.server_port, flow.vnet)
            cell = [flow.last_ts]
            for key in flow._keys:
                self._dropping[key] = cell

    def feed_items(self, items: list[tuple[int, float, Segment | None]]) -> None:
        """One scanner batch: admitted segments, and sweep ticks (segment None) that expire idle flows."""
        reassembler, cursor, dropping = self.reassembler, self.cursor, self._dropping
        process, expire, base, idle = (
            reassembler.process,
            reassembler.expire,
            self.frame_base,
            self.options.idle_timeout,
        )
        for frame, ts, segment in items:
            frame += base
            if cursor is not None:
                cursor.frame, cursor.phase, cursor.ts = frame, 1 if segment is not None else 0, ts
            if segment is None:
                expire(ts)
            elif dropping and (cell := dropping.get(key := _table_key(segment))) is not None:
                if segment[6] & (SYN | ACK) == SYN or cell[0] + idle < ts:  # the scanner takes it for a new flow
                    dropping.pop(key, None)
                    dropping.pop((key[2], key[3], key[0], key[1], key[4]), None)
                    process(segment, frame, ts)
                else:
                    cell[0] = ts
                    self._dropped_in_flight(segment)
            else:
                process(segment, frame, ts)
        dropping.clear()
        self.arm()

    def arm(self) -> None:
        """After a batch or a sweep of the live clock: tell the scanner which flows' bytes it may drop unread, and
        which to forget (passive.capture.skipping)."""
        if self.scanner is not None and self.options.skip_unread:
            arm_requested(self.reassembler, self.scanner)
        else:
            self.reassembler.skip_requests.clear()

    def _dropped_in_flight(self, segment: Segment) -> None:
        """Count a segment the scanner admitted before it knew its flow was not mail as the scanner counts those it
        drops itself: not matched, not_mail_packets (so counts do not depend on where batches end)."""
        counters = self.counters
        counters.not_mail_packets += 1
        counters.packets_matched -= 1
        if len(segment[7]) < segment[8]:
            counters.truncated_packets -= 1
        if segment[9] & INFO_TUNNELS:
            tunnelled = counters.tunnelled
            for name, bit in TUNNEL_BITS.items():
                if segment[9] & bit:
                    tunnelled[name] = tunnelled.get(name, 0) - 1  # the scanner's count, added later, makes up for it

    def feed(self, frame: int, ts: float, linktype: int, data: bytes) -> None:
        """One frame that passed the port filter."""
        counters = self.counters
        counters.packets_matched += 1
        frame += self.frame_base
        result = decode_tcp(linktype, data)
        if result.__class__ is int and result in (FRAGMENT_V4, FRAGMENT_V6):
            rebuilt = self._defrag.add(linktype, data, ts)
            if rebuilt is not None:  # the last piece of a fragmented packet (passive.capture.defrag)
                result = decode_tcp(linktype, rebuilt)
                counters.ip_fragments -= self._defrag.joined  # the pieces before it are part of this packet now
                counters.packets_matched -= self._defrag.joined
            elif self._defrag.copy:  # a copy of a piece held or joined: no fragment left unread
                counters.packets_matched -= 1
                return
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
        if segment[9] & INFO_TUNNELS:  # counted as the scanner counts: the segments that reach reassembly
            self._count_tunnels(segment[9])
        self.reassembler.process(segment, frame, ts)  # type: ignore[arg-type]
        if self.reassembler.skip_requests:  # no scanner to drop anything on this path
            self.reassembler.skip_requests.clear()

    def _count_tunnels(self, info: int) -> None:
        tunnelled = self.counters.tunnelled
        for name, bit in TUNNEL_BITS.items():
            if info & bit:
                tunnelled[name] = tunnelled.get(name, 0) + 1

    def would_match(self, data: bytes, linktype: int) -> bool:
        """Python equivalent of the BPF port filter, for readers without libpcap filtering."""
        result = decode_tcp(linktype, data)
        if result.__class__ is int:
            if result in (FRAGMENT_V6, MALFORMED):  # MALFORMED passes so it shows up as a decode error
                return True
            # A piece of a TCP or tunnel packet passes as the filter passes it (its protocol, a later piece): joined.
            return result == FRAGMENT_V4 and (self.all_ports or is_piece(linktype, data))
        if self.all_ports:
            return True
        sport, dport, info = result[2], result[3], result[9]  # type: ignore[index]
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

    def carry_over(self, scanner: Any) -> None:
        """A new file's scanner of a stream of several (:mod:`passive.capture.joined`): told the verdicts on the
        flows that go on, so that it admits the packets of those kept and drops those of the others; and the pieces of
        fragmented packets that the previous file's scanner holds, so that a packet whose fragments a file switch
        parted is joined."""
        previous, self.previous_scanner = self.previous_scanner, None
        if previous is not None and type(previous) is type(scanner):
            scanner.take_datagrams(previous)
        for flow in self.reassembler._flows.values():
            # With the flow's last time: the new scanner's clock has not started (its verdict would expire at once).
            endpoints = (flow.client_addr, flow.client_port, flow.server_addr, flow.server_port, flow.vnet)
            if flow.state == Flow.IGNORED:  # found not mail (its label stays None) or declined
                scanner.drop_flow(*endpoints, flow.last_ts)
            elif flow.label is not None and flow.handler is not None:
                scanner.keep_flow(*endpoints, flow.last_ts)
            # else undecided: the new scanner admits its packets as a new flow's head

    def finish(self) -> None:
        self.previous_scanner = None
        if self.cursor is not None:
            self.cursor.frame, self.cursor.phase = END_FRAME, 0
        self.reassembler.flush()


def _table_key(segment: Segment) -> tuple[bytes, int, bytes, int, int]:
    """The reassembler's table key of a segment's direction (passive.capture.flow.Flow._keys)."""
    return segment[0], segment[2], segment[1], segment[3], segment[9] >> INFO_VNET_SHIFT


def analyze_file(
    path: str | Path,
    handler_factory: HandlerFactory,
    options: CaptureOptions | None = None,
    *,
    counters: CaptureCounters | None = None,
    stop: StopFlag | None = None,
) -> CaptureCounters:
    """Read a capture file, reassemble its flows into ``handler_factory``'s handlers, return the counters.

    ``options`` say which ports to keep; without them every TCP flow is reassembled. When ``stop.requested`` is
    set, reading stops at the next packet boundary (``stop.cut`` is then set) and the flows read so far are
    finished as at the end of a file.
    Raises :class:`~passive.core.errors.CaptureError` (one-line message) when the file is
    missing, unreadable or not a capture. Damage inside a capture does not raise: packets before
    it are processed, an anomaly is counted and the message lands in ``counters.warnings``.
    """
    options = options or CaptureOptions()
    counters = counters if counters is not None else CaptureCounters()
    engine = make_engine(handler_factory, options, counters, stop)
    read_into(engine, Path(path), options)
    engine.finish()
    return counters


def make_engine(
    handler_factory: HandlerFactory, options: CaptureOptions, counters: CaptureCounters, stop: StopFlag | None = None
) -> Engine:
    """The engine the chosen backend feeds (raises CaptureError for a backend that cannot be had); its readers stop
    at a packet boundary once ``stop.requested`` is set."""
    backend = _choose_backend(options)
    if backend == "libpcap" and options.shards > 1:
        raise CaptureError("the libpcap reader reads whole captures: it cannot share one between workers")
    return Engine(handler_factory, options, counters, stop, scanning=backend != "libpcap")


def read_into(engine: Engine, path: Path, options: CaptureOptions) -> None:
    """Feed one capture file to ``engine`` (its flows are not flushed: a following file may go on with them)."""
    kind = _sniff(path)
    # A regular, uncompressed classic pcap file whose name libpcap can take as UTF-8 (a name that is not: bytes from
    # argv) can be read in place; a pipe or FIFO (``kind.stream``) only by the built-in reader, which holds the bytes
    # sniffing read.
    in_place = kind.format == "pcap" and kind.compression is None and kind.stream is None
    if options.backend == "libpcap":
        if not (in_place and _utf8_name(path)) or not libpcap.read_with_libpcap(path, engine, options):
            read_with_python(path, engine, options, kind)
    else:  # pcapng, compressed files and pipes too, without a BPF expression (libpcap's, for one link type)
        native = options.backend == "auto" and (in_place or not options.bpf)
        if native and not native_available():
            notice_native_missing()
            native = False
        read_with_scanner(path, engine, options, kind, native=native)


def _sniff(path: Path) -> FileKind:
    try:
        return sniff_kind(path)
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


def _utf8_name(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _choose_backend(options: CaptureOptions) -> str:
    if options.backend not in ("auto", "libpcap", "python"):
        raise CaptureError(f"unknown capture backend {options.backend!r} (use auto, libpcap or python)")
    if options.backend == "libpcap" and not libpcap.libpcap_available():
        raise CaptureError("libpcap backend requested but pcapy-ng is not installed")
    return options.backend
