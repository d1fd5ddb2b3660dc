"""What TCP reassembly hands its consumers: flows, directions, chunks, and the handler protocol.

A :class:`~passive.capture.reassembly.Reassembler` asks a :data:`HandlerFactory` for one
:class:`StreamHandler` per :class:`Flow` and calls it with ``on_open``, ``on_data`` (contiguous
:class:`Chunk` pieces), ``on_gap`` and ``on_close`` (with a :class:`CloseReason`). A
:data:`Classifier` lets the caller decide, from the first bytes of each side, which flows to keep.

:class:`~passive.capture.stream.HalfStream` is the reassembly state of one direction of a flow; only the
reassembler touches it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum, StrEnum
from typing import NamedTuple, Protocol

from passive.capture.linklayer import ACK, SYN, format_endpoint
from passive.capture.stream import HalfStream


class Direction(IntEnum):
    CLIENT_TO_SERVER = 0
    SERVER_TO_CLIENT = 1


class CloseReason(StrEnum):
    FIN = "fin"
    RST = "rst"
    TIMEOUT = "timeout"
    EVICTED = "evicted"
    END = "end"  # capture ended with the flow still open
    REUSED = "reused"  # a new SYN with another ISN took over the 4-tuple


class Chunk(NamedTuple):
    """A contiguous piece of one direction's byte stream, all from one frame."""

    data: bytes
    frame: int  # 1-based frame number in the capture (as tshark counts)
    ts: float  # capture timestamp of that frame, seconds since the epoch
    offset: int  # stream offset of data[0]; 0 is the first byte after the SYN (or the first byte seen)


new_chunk = tuple.__new__
"""``new_chunk(Chunk, (data, frame, ts, offset))`` is ``Chunk(data, frame, ts, offset)`` without the call of the
Python-level ``__new__`` a NamedTuple has: 40% less for the object every delivered segment makes."""


class StreamHandler(Protocol):
    """Consumer of one flow's events (one instance per flow, made by a HandlerFactory)."""

    def on_open(self, flow: Flow) -> None: ...

    def on_data(self, flow: Flow, direction: Direction, chunk: Chunk) -> None: ...

    def on_gap(self, flow: Flow, direction: Direction, missing: int, frame: int, ts: float) -> None: ...

    def on_close(self, flow: Flow, reason: CloseReason) -> None: ...

    # Only for a handler that calls Flow.want_skip (passive.capture.skipping):

    def skippable(self, flow: Flow, direction: Direction) -> tuple[int, int, bool] | None: ...

    def on_skip(
        self, flow: Flow, direction: Direction, size: int, at_line_start: bool, frame: int, ts: float, tail: bytes = b""
    ) -> None: ...


HandlerFactory = Callable[["Flow"], StreamHandler | None]
"""Called once per new flow; returning None ignores the flow (its packets are then dropped cheaply)."""

Classifier = Callable[[bytes, bytes], str | None]
"""(first server->client bytes, first client->server bytes) -> a label to keep the flow under (the handler factory
reads it as ``flow.label``), ``""`` to ignore it, None while undecided."""


def sender_is_client(sport: int, dport: int, flags: int, server_ports: frozenset[int]) -> bool:
    """Whether the sender of a flow's first segment seen is its client.

    The sender of a SYN is the client, of a SYN+ACK the server. Otherwise the side using one
    of ``server_ports`` is the server; if neither or both do, the lower port is; on equal
    ports the sender is taken for the client.
    """
    if flags & SYN:
        return not flags & ACK
    if (dport in server_ports) != (sport in server_ports):
        return dport in server_ports
    if sport != dport:
        return dport < sport
    return True


class Flow:
    """One TCP connection. ``client``/``server`` are printable ``ip:port`` strings (IPv6 bracketed)."""

    __slots__ = (
        "_events",
        "_halves",
        "_isn",
        "_keys",
        "_seen",
        "_skips",
        "client",
        "client_addr",
        "client_port",
        "evict_class",
        "first_frame",
        "first_ts",
        "gapped",
        "handler",
        "id",
        "label",
        "last_frame",
        "last_ts",
        "partial",
        "server",
        "server_addr",
        "server_port",
        "skip_armed",
        "skip_rules",
        "skip_wanted",
        "state",
        "vnet",
    )

    # states
    CLASSIFYING = 0
    ACTIVE = 1
    IGNORED = 2

    def __init__(
        self,
        flow_id: int,
        client: tuple[bytes, int],
        server: tuple[bytes, int],
        frame: int,
        ts: float,
        vnet: int = 0,
    ) -> None:
        self.id = flow_id
        self.vnet = vnet  # the virtual network the flow travels in (passive.capture.tunnels), 0 for none
        self.client_addr, self.client_port = client
        self.server_addr, self.server_port = server
        self.client = format_endpoint(*client)
        self.server = format_endpoint(*server)
        self.first_frame = self.last_frame = frame
        self.first_ts = self.last_ts = ts
        self.partial = False
        self.gapped = False  # bytes of this flow were lost (a gap on either side): what was read of it is incomplete
        self.label: str | None = None  # the classifier's verdict, when there is a classifier
        self.handler: StreamHandler | None = None
        self.state = Flow.ACTIVE
        self.evict_class = 0  # the flow table's eviction class (passive.capture.flowtable)
        self._halves: tuple[HalfStream, HalfStream] | None = (HalfStream(), HalfStream())
        # Table keys of the two directions: (source address, port, destination address, port, virtual network).
        self._keys = ((*client, *server, vnet), (*server, *client, vnet))
        self._events: list[tuple] | None = None
        self._seen = [b"", b""]
        self._isn: int | None = None  # a dropped flow's client ISN: a SYN with another one is a new connection
        self._skips: list[Flow] | None = None  # the reassembler's list of flows whose handler wants bytes skipped
        self.skip_wanted = False
        self.skip_armed = False  # the scanner was told it may drop this flow's bytes (it may have stopped since)
        self.skip_rules = (0, 0)  # ...per direction (client's first), how: SKIP_NONE (0) where it drops none

    def want_skip(self) -> None:
        """The handler may let what follows be dropped unread (``StreamHandler.skippable``): asked once the batch
        of packets being fed is done (:mod:`passive.capture.skipping`)."""
        if not self.skip_wanted and self._skips is not None:
            self.skip_wanted = True
            self._skips.append(self)

    @property
    def key(self) -> str:
        """Stable printable flow key: ``client->server``."""
        return f"{self.client}->{self.server}"

    def __repr__(self) -> str:
        return f"Flow(#{self.id} {self.key}{' partial' if self.partial else ''})"
