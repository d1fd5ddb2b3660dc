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
    resync_lines: bool = True  # start delivery on a line boundary after a gap or a mid-stream pickup
    # Whether a mid-stream pickup's first line (a whole line of its first segment) starts a line of the protocols
    # read, so that it is kept rather than skipped as the tail of a line; None: always skipped.
    line_start: LineStart | None = None
    reassembly_policy: str = DEFAULT_POLICY  # whose bytes win on overlaps, what is refused (passive.capture.policy)
