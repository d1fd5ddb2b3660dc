"""The packet loop's core, decode -> port check -> reassembly, and :func:`analyze_file`.

:func:`analyze_file` reads a capture file and drives a :class:`~passive.capture.reassembly.Reassembler`
with the caller's handler factory; it returns the :class:`~passive.capture.counters.CaptureCounters`.
(:class:`~passive.capture.live.LiveCapture` does the same on a live interface.)

Which reader handles a file (decided per file):

* classic pcap, uncompressed -> **libpcap** (pcapy-ng, :mod:`passive.capture.libpcap`) with a
  BPF filter, so Python only sees the wanted ports. libpcap does not say how many records its
  filter skipped; with ``exact_frames`` (default) a header walk over the memory-mapped file
  recovers the exact frame number of every packet it passes (see
  :class:`~passive.capture.frames.FrameLocator`). With ``exact_frames=False`` frames are
  numbered among the packets the filter passed, which is faster but does not match tshark's
  numbering.
* gzip-compressed files and pcapng -> the built-in pure-Python reader
  (:mod:`passive.capture.pyreader`; libpcap cannot read gzip, and rejects pcapng files whose
  interfaces differ in link type, possibly after part of the file was already processed). It
  applies the same port filter in Python.
* no libpcap binding installed -> the pure-Python reader for everything, with a one-line
  notice on stderr. A user BPF expression (``bpf=``) needs libpcap to be compiled.

The filter is :func:`~passive.capture.bpf.build_bpf_filter`'s. IPv4 fragments are counted,
not reassembled.
"""

from __future__ import annotations

import sys
from pathlib import Path

from passive.capture import libpcap
from passive.capture.counters import CaptureCounters
from passive.capture.flow import HandlerFactory
from passive.capture.linklayer import (
    FRAGMENT_V4,
    FRAGMENT_V6,
    INFO_EXT_HEADERS,
    INFO_FIRST_FRAGMENT,
    INFO_TUNNELS,
    MALFORMED,
    TUNNEL_BITS,
    UNSUPPORTED_LINK,
    decode_tcp,
)
from passive.capture.options import CaptureOptions
from passive.capture.pcapfile import CaptureFormatError, FileKind, sniff_kind
from passive.capture.pyreader import read_with_python
from passive.capture.reassembly import Reassembler
from passive.core.errors import CaptureError

_NO_LIBPCAP_NOTICE = "leakscope: libpcap binding (pcapy-ng) not available; using the slower built-in capture reader"


class Engine:
    """Decode -> port check -> reassembly, shared by every reader."""

    def __init__(self, factory: HandlerFactory, options: CaptureOptions, counters: CaptureCounters) -> None:
        self.options = options
        self.counters = counters
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
        )
        self._unsupported_warned: set[int] = set()

    def feed(self, frame: int, ts: float, linktype: int, data: bytes) -> None:
        """One frame that passed the port filter."""
        counters = self.counters
        counters.packets_matched += 1
        result = decode_tcp(linktype, data)
        if result.__class__ is int:
            self._status(result, linktype)  # type: ignore[arg-type]
            return
        segment = result  # type: ignore[assignment]
        if segment[9] & INFO_TUNNELS:
            self._count_tunnels(segment[9])
        if not self.all_ports and segment[2] not in self.ports and segment[3] not in self.ports:
            counters.ignored += 1
            return
        if len(segment[7]) < segment[8]:
            counters.truncated_packets += 1
        if segment[9] & INFO_FIRST_FRAGMENT:
            counters.ip_fragments += 1
            return
        self.reassembler.process(segment, frame, ts)  # type: ignore[arg-type]

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
            return result == FRAGMENT_V4 and self.all_ports
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

    def finish(self) -> None:
        self.reassembler.flush()


def analyze_file(
    path: str | Path,
    handler_factory: HandlerFactory,
    options: CaptureOptions | None = None,
    *,
    counters: CaptureCounters | None = None,
) -> CaptureCounters:
    """Read a capture file, reassemble its flows into ``handler_factory``'s handlers, return the counters.

    ``options`` say which ports to keep; without them every TCP flow is reassembled.
    Raises :class:`~passive.core.errors.CaptureError` (one-line message) when the file is
    missing, unreadable or not a capture. Damage inside a capture does not raise: packets before
    it are processed, an anomaly is counted and the message lands in ``counters.warnings``.
    """
    options = options or CaptureOptions()
    counters = counters if counters is not None else CaptureCounters()
    path = Path(path)
    kind = _sniff(path)
    # libpcap takes the name as UTF-8; a name that is not (bytes from argv) goes to the built-in reader, and so
    # does a pipe or FIFO (``kind.stream``): sniffing read its first bytes, which only the built-in reader has.
    libpcap_can_read = kind.format == "pcap" and kind.compression is None and kind.stream is None and _utf8_name(path)
    backend = _choose_backend(options, libpcap_can_read)
    engine = Engine(handler_factory, options, counters)
    if backend != "libpcap" or not libpcap.read_with_libpcap(path, engine, options):
        read_with_python(path, engine, options, kind)
    engine.finish()
    return counters


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


def _choose_backend(options: CaptureOptions, libpcap_can_read: bool) -> str:
    if options.backend not in ("auto", "libpcap", "python"):
        raise CaptureError(f"unknown capture backend {options.backend!r} (use auto, libpcap or python)")
    if options.backend == "python":
        return "python"
    if not libpcap.libpcap_available():
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
