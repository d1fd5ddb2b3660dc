"""The capture layer: packets in, reassembled TCP streams out.

It reads capture files (classic pcap and pcapng, plain or gzip-compressed; through libpcap
when it can, else a pure-Python reader) or a live interface, decodes link, IP and TCP
headers, keeps the TCP flows on the ports its caller names (or every flow, with a
caller-supplied classifier deciding), reassembles each direction into a byte stream and hands
it to the caller's per-flow handlers, counting everything it drops. It knows nothing of
any application protocol.

Modules: :mod:`~passive.capture.options` (what to capture, limits),
:mod:`~passive.capture.engine` (:func:`analyze_file`), :mod:`~passive.capture.live`,
:mod:`~passive.capture.libpcap` and :mod:`~passive.capture.pyreader` (the two file readers),
:mod:`~passive.capture.pcapfile` (file formats), :mod:`~passive.capture.bpf`,
:mod:`~passive.capture.linklayer` (decoding), :mod:`~passive.capture.flow`,
:mod:`~passive.capture.reassembly`, :mod:`~passive.capture.delivery`, :mod:`~passive.capture.stream` and
:mod:`~passive.capture.flowtable` (TCP), :mod:`~passive.capture.policy` (whose bytes win, what a receiver refuses),
:mod:`~passive.capture.counters`. Its one error,
:class:`~passive.core.errors.CaptureError`, is the application's.
"""

from passive.capture.bpf import build_bpf_filter
from passive.capture.counters import CaptureCounters
from passive.capture.engine import analyze_file
from passive.capture.flow import Chunk, Classifier, CloseReason, Direction, Flow, HandlerFactory, StreamHandler
from passive.capture.libpcap import libpcap_available
from passive.capture.live import LiveCapture, PcapStats
from passive.capture.options import CaptureOptions
from passive.capture.pcapfile import is_capture
from passive.capture.reassembly import Reassembler
from passive.core.errors import CaptureError

__all__ = [
    "CaptureCounters",
    "CaptureError",
    "CaptureOptions",
    "Chunk",
    "Classifier",
    "CloseReason",
    "Direction",
    "Flow",
    "HandlerFactory",
    "LiveCapture",
    "PcapStats",
    "Reassembler",
    "StreamHandler",
    "analyze_file",
    "build_bpf_filter",
    "is_capture",
    "libpcap_available",
]
