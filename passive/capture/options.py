"""How a capture is read and reassembled: :class:`CaptureOptions` and the default limits.

Each limit is named once here; :class:`CaptureOptions` and
:class:`~passive.capture.reassembly.Reassembler` take their defaults from these names.
The capture layer knows no application ports: the caller says which server ports to
capture (``ports``) and, for port-independent capture, how to recognise the flows it
wants (``classifier``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from passive.capture.flow import Classifier
from passive.capture.policy import DEFAULT_POLICY
from passive.capture.scanner import FLOW_HEAD

LineStart = Callable[[bytes], bool]

IDLE_TIMEOUT = 300.0
"""Seconds of capture time a flow may stay silent before it is closed as expired."""

MAX_FLOWS = 10_000
"""Flows held at once; when the table is full the least recently active ones are evicted."""

MAX_BUFFER = 256 * 1024
"""Out-of-order bytes held per direction before the hole in front of them is declared a gap."""

MAX_BUFFER_SEGMENTS = 512
"""Out-of-order pieces held per direction before the hole in front of them is declared a gap."""

MAX_TOTAL_BUFFER = 64 * 1024 * 1024
"""Out-of-order bytes held over all flows before holes are declared gaps."""

END_FRAME = 1 << 62
"""The cursor's frame while the flows still open at the end of a capture are closed."""


@dataclass
class Cursor:
    """Where the engine is in a capture: the frame being processed, and the phase: 0 while idle flows expire before
    that frame's packet (a sweep tick), 1 for the packet itself; :data:`END_FRAME` once the capture has ended.

    A caller that merges what several readers of one capture recorded (each reading a share of its flows) orders
    it by this position: it is where one reader of the whole capture would have done the same work. ``done`` is
    the number of frames read and fully processed; ``on_batch`` is called after each batch of packets (scanner
    readers only).
    """

    frame: int = 0
    phase: int = 0
    ts: float = 0.0  # the capture time of that frame (of the sweep, in phase 0)
    done: int = 0
    on_batch: Callable[[], None] | None = None


@dataclass
class CaptureOptions:
    """How to read and reassemble.

    ``ports`` are the server ports: the filter passes TCP to or from them, and they tell
    which side of a flow picked up without its SYN is the server. Empty means no port
    restriction (every TCP flow). With ``all_ports`` every TCP flow passes whatever the
    ports, and ``classifier`` (if given) decides from each flow's first bytes which to keep.
    """

    ports: frozenset[int] = frozenset()
    all_ports: bool = False  # pass every TCP flow; `classifier` decides which ones to keep
    classifier: Classifier | None = None  # used only with all_ports
    bpf: str | None = None  # user expression, ANDed with the port filter
    backend: str = "auto"  # "auto", "libpcap" or "python"
    exact_frames: bool = True  # libpcap reader: number frames as in the file (a header walk), not among matches
    idle_timeout: float = IDLE_TIMEOUT
    max_flows: int = MAX_FLOWS
    max_buffer: int = MAX_BUFFER
    max_total_buffer: int = MAX_TOTAL_BUFFER
    resync_lines: bool = True  # start a mid-stream pickup on a line boundary (after a gap: the handler)
    # Whether a mid-stream pickup's first line (a whole line of its first segment) starts a line of the protocols
    # read, so that it is kept rather than skipped as the tail of a line; None: always skipped.
    line_start: LineStart | None = None
    reassembly_policy: str = DEFAULT_POLICY  # whose bytes win on overlaps, what is refused (passive.capture.policy)
    check_checksums: bool = True  # segments with wrong checksums refused as receivers do (passive.capture.checksums)
    head_packets: int = FLOW_HEAD  # every-port mode: packets of a new flow admitted before its verdict
    shard: int = 0  # with shards > 1: read only the flows whose 4-tuple hashes to this share (scanner.shard_of)
    shards: int = 1
    skip_unread: bool = True  # the scanner drops bodies, unread literals and ciphertext (passive.capture.skipping)
    cursor: Cursor | None = None  # kept up to date with the frame being processed (see Cursor)
