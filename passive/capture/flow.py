"""What TCP reassembly hands its consumers: flows, directions, chunks, and the handler protocol.

A :class:`~passive.capture.reassembly.Reassembler` asks a :data:`HandlerFactory` for one
:class:`StreamHandler` per :class:`Flow` and calls it with ``on_open``, ``on_data`` (contiguous
:class:`Chunk` pieces), ``on_gap`` and ``on_close`` (with a :class:`CloseReason`). A
:data:`Classifier` lets the caller decide, from the first bytes of each side, which flows to keep.

:class:`_Half` is the reassembly state of one direction of a flow, with its buffer of
out-of-order pieces; only the reassembler touches it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from enum import IntEnum, StrEnum
from typing import NamedTuple, Protocol

from passive.capture.linklayer import ACK, SYN, format_endpoint

SEQ_MASK = 0xFFFFFFFF  # sequence numbers are 32-bit
_SEQ_HALF = 0x80000000


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


class StreamHandler(Protocol):
    """Consumer of one flow's events (one instance per flow, made by a HandlerFactory)."""

    def on_open(self, flow: Flow) -> None: ...

    def on_data(self, flow: Flow, direction: Direction, chunk: Chunk) -> None: ...

    def on_gap(self, flow: Flow, direction: Direction, missing: int, frame: int, ts: float) -> None: ...

    def on_close(self, flow: Flow, reason: CloseReason) -> None: ...


HandlerFactory = Callable[["Flow"], StreamHandler | None]
"""Called once per new flow; returning None ignores the flow (its packets are then dropped cheaply)."""

Classifier = Callable[[bytes, bytes], str | None]
"""(first server->client bytes, first client->server bytes) -> a label to keep the flow under (the handler factory
reads it as ``flow.label``), ``""`` to ignore it, None while undecided."""

Piece = tuple[int, bytes, int, float]
"""A buffered out-of-order piece: (stream offset, data, frame, ts)."""


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


class _Half:
    """Reassembly state of one direction."""

    __slots__ = (
        "fin_rel",
        "finished",
        "next_rel",
        "next_seq",
        "pending",
        "pending_bytes",
        "resync",
        "started",
        "syn_seq",
        "tail",
        "tail_rel",
    )

    def __init__(self) -> None:
        self.started = False
        self.next_seq = 0  # next expected sequence number, mod 2**32
        self.next_rel = 0  # ...as an unbounded stream offset
        self.pending: list[Piece] = []  # sorted, disjoint
        self.pending_bytes = 0
        self.fin_rel: int | None = None
        self.finished = False  # delivered everything up to the FIN
        self.resync = False
        self.syn_seq: int | None = None
        self.tail = b""  # the end of the last delivered piece, for overlap conflict checks
        self.tail_rel = 0

    def start(self, seq: int, flags: int, resync: bool) -> bool:
        """Anchor the sequence space on this direction's first segment; False if that is not a SYN."""
        self.started = True
        if flags & SYN:
            self.syn_seq = seq
            self.next_seq = (seq + 1) & SEQ_MASK
            return True
        self.next_seq = seq
        self.resync = resync
        return False

    def rel(self, seq: int) -> int:
        """Stream offset of sequence number ``seq`` (a signed 32-bit distance from the next expected one)."""
        diff = (seq - self.next_seq) & SEQ_MASK
        if diff & _SEQ_HALF:
            diff -= 0x100000000
        return self.next_rel + diff

    def tail_conflicts(self, rel: int, data: bytes) -> bool:
        """Whether retransmitted ``data`` at ``rel`` differs from the delivered bytes still held."""
        tail, tail_rel = self.tail, self.tail_rel
        lo = max(rel, tail_rel)
        hi = min(rel + len(data), tail_rel + len(tail), self.next_rel)
        return lo < hi and data[lo - rel : hi - rel] != tail[lo - tail_rel : hi - tail_rel]

    def insert(self, rel: int, data: bytes, frame: int, ts: float) -> tuple[int, bool, bool]:
        """Buffer ``data`` at ``rel``, keeping only bytes not already buffered (first seen wins).

        Returns (bytes added to the buffer, overlapped buffered data, overlapping bytes differed).
        """
        pending = self.pending
        end = rel + len(data)
        index = bisect.bisect_left(pending, rel, key=lambda p: p[0])
        if index and pending[index - 1][0] + len(pending[index - 1][1]) > rel:
            index -= 1
        pieces: list[Piece] = []
        cursor = rel
        overlapped = conflict = False
        while index < len(pending) and pending[index][0] < end:
            p_start, p_data = pending[index][0], pending[index][1]
            p_end = p_start + len(p_data)
            if p_start > cursor:
                pieces.append((cursor, data[cursor - rel : p_start - rel], frame, ts))
            lo, hi = max(cursor, p_start), min(end, p_end)
            if lo < hi:
                overlapped = True
                if data[lo - rel : hi - rel] != p_data[lo - p_start : hi - p_start]:
                    conflict = True
            cursor = max(cursor, p_end)
            index += 1
        if cursor < end:
            pieces.append((cursor, data[cursor - rel :], frame, ts))
        added = 0
        for piece in pieces:
            if piece[1]:
                bisect.insort(pending, piece, key=lambda p: p[0])
                added += len(piece[1])
        self.pending_bytes += added
        return added, overlapped, conflict


class Flow:
    """One TCP connection. ``client``/``server`` are printable ``ip:port`` strings (IPv6 bracketed)."""

    __slots__ = (
        "_events",
        "_halves",
        "_keys",
        "_seen",
        "client",
        "client_addr",
        "client_port",
        "first_frame",
        "first_ts",
        "handler",
        "id",
        "label",
        "last_frame",
        "last_ts",
        "partial",
        "server",
        "server_addr",
        "server_port",
        "state",
    )

    # states
    CLASSIFYING = 0
    ACTIVE = 1
    IGNORED = 2

    def __init__(
        self, flow_id: int, client: tuple[bytes, int], server: tuple[bytes, int], frame: int, ts: float
    ) -> None:
        self.id = flow_id
        self.client_addr, self.client_port = client
        self.server_addr, self.server_port = server
        self.client = format_endpoint(*client)
        self.server = format_endpoint(*server)
        self.first_frame = self.last_frame = frame
        self.first_ts = self.last_ts = ts
        self.partial = False
        self.label: str | None = None  # the classifier's verdict, when there is a classifier
        self.handler: StreamHandler | None = None
        self.state = Flow.ACTIVE
        self._halves: tuple[_Half, _Half] | None = (_Half(), _Half())
        # Table keys of the two directions: (source address, port, destination address, port).
        self._keys = ((*client, *server), (*server, *client))
        self._events: list[tuple] | None = None
        self._seen = [b"", b""]

    @property
    def key(self) -> str:
        """Stable printable flow key: ``client->server``."""
        return f"{self.client}->{self.server}"

    def __repr__(self) -> str:
        return f"Flow(#{self.id} {self.key}{' partial' if self.partial else ''})"
