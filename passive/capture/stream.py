"""One direction of a TCP flow as its receiver sees it: sequence space, out-of-order buffer, window.

:class:`HalfStream` is the reassembly state of one direction (the sender's bytes, as the other side receives them).
Only the reassembler touches it. Its buffer holds disjoint pieces of not yet deliverable bytes, each remembering the
bounds of the segment it came from (its *origin*), which the policy's overlap rule compares with a new segment's
(see :mod:`passive.capture.policy`).
"""

from __future__ import annotations

import bisect

from passive.capture.linklayer import (
    ACK,
    OPT_SACK_OK,
    OPT_SHIFT_MASK,
    OPT_SIGNED,
    OPT_TIMESTAMP,
    OPT_TSVAL_SHIFT,
    OPT_WSCALE,
    SYN,
)
from passive.capture.policy import ReassemblyPolicy

SEQ_MASK = 0xFFFFFFFF  # sequence numbers are 32-bit
SEQ_HALF = 0x80000000  # (a - b) & SEQ_MASK < SEQ_HALF: sequence number a is at or after b
_SERVER_TO_CLIENT = 1  # passive.capture.flow.Direction.SERVER_TO_CLIENT (that module imports this one)

Origin = list
"""Bounds of the segment a buffered piece came from, and how many pieces still hold its bytes: [start, end, pieces].
Shared by those pieces; a segment joining it (Linux coalescing) moves its end."""

Piece = tuple[int, bytes, int, float, Origin]
"""A buffered out-of-order piece: (stream offset, data, frame, ts, origin)."""


class HalfStream:
    """Reassembly state of one direction."""

    __slots__ = (
        "acked",
        "acked_high",
        "active",
        "by_end",
        "checked",
        "doubtful",
        "edge",
        "fin_rel",
        "finished",
        "held_cost",
        "held_ends",
        "next_rel",
        "next_seq",
        "peer_shift",
        "pending",
        "pending_bytes",
        "pickup",
        "pred_window",
        "resync",
        "sack_ok",
        "signed",
        "started",
        "syn_seq",
        "syn_window",
        "tail",
        "tail_rel",
        "ts_recent",
        "urgent",
        "win_known",
        "window",
        "window_seq",
        "wscale",
    )

    def __init__(self) -> None:
        self.started = False
        self.next_seq = 0  # next expected sequence number, mod 2**32
        self.next_rel = 0  # ...as an unbounded stream offset
        self.pending: list[Piece] = []  # sorted, disjoint
        self.pending_bytes = 0
        self.by_end: dict[int, Origin] = {}  # buffered segments by end offset, for Linux coalescing
        self.fin_rel: int | None = None
        self.finished = False  # delivered everything up to the FIN
        self.resync = False
        # Picked up mid-stream and nothing delivered yet: a first segment of whole text lines is kept from its start.
        self.pickup = False
        self.syn_seq: int | None = None
        self.tail = b""  # the end of the last delivered piece, for overlap conflict checks
        self.tail_rel = 0
        # The receiver's view, from the other direction's segments (sequence numbers of this direction). The hot
        # path only stores the latest acknowledgement and window field; the right edge is worked out when needed.
        self.acked = 0  # the latest acknowledgement number
        # The highest (what the receiver holds as acknowledged: Linux's snd_una, rcv_wup), and the window field that
        # came with it (its snd_wnd, which header prediction compares): neither moved by an older acknowledgement.
        self.acked_high = 0
        self.pred_window = -1
        self.window_seq: int | None = None  # the receiver's segment that last gave it (snd_wl1)
        self.active = False  # its SYN opened the connection (counted in what its receiver acknowledged of it)
        self.window = 0  # the window field that came with it, unscaled (0 after a SYN: see `edge`)
        self.edge = 0  # right edge of the receiver's window (acknowledgement plus scaled window), the furthest seen
        self.win_known = False  # both SYNs seen: the edge can be trusted
        self.peer_shift = 0  # window scale the receiver's windows are multiplied by (both SYNs carried the option)
        # This direction's SYN options:
        self.wscale: int | None = None
        self.sack_ok = False
        self.syn_window = 0  # the (never scaled) window of this direction's SYN: the peer's first right edge
        # A segment of this direction off the fast path (its SYN, its first, a FIN...) had right checksums: the
        # capture shows them, so a wrong one is no capture artifact (passive.capture.checksums).
        self.checked = False
        # Segments of this direction with a wrong checksum, or acknowledging unsent bytes, awaiting the receiver's
        # acknowledgement: (sequence number, data, frame, time, kind, FIN, end, number) by their number, oldest
        # first; None for none (passive.capture.doubtful, passive.capture.acks).
        self.doubtful: dict[int, tuple] | None = None
        self.held_cost = 0  # what they cost (passive.capture.doubtful.MAX_HELD_DIRECTION)
        # (end, number) of each, sorted (the end a stream offset just past it, a FIN counted): those an
        # acknowledgement settles come first, the last tells where the direction's bytes end, without a pass over all.
        self.held_ends: list[tuple[int, int]] = []
        # What its receiver judges it by (passive.capture.tcpoptions): the latest timestamp it kept (None where the
        # SYN had none), whether the SYN carried a signature, and the stream offset of an urgent byte announced
        # (None for none).
        self.ts_recent: int | None = None
        self.signed = False
        self.urgent: int | None = None

    def start(self, seq: int, flags: int, resync: bool, options: int = 0, window: int = 0) -> bool:
        """Anchor the sequence space on this direction's first segment; False if that is not a SYN."""
        self.started = True
        if flags & SYN:
            self.syn_seq = seq
            self.active = not flags & ACK
            self.next_seq = self.acked = self.acked_high = self.edge = (seq + 1) & SEQ_MASK
            self.window = 0
            self.wscale = options & OPT_SHIFT_MASK if options & OPT_WSCALE else None
            self.sack_ok = bool(options & OPT_SACK_OK)
            self.syn_window = window
            self.ts_recent = options >> OPT_TSVAL_SHIFT if options & OPT_TIMESTAMP else None
            self.signed = bool(options & OPT_SIGNED)
            return True
        self.next_seq = self.acked = self.acked_high = self.edge = seq
        self.window = 0
        self.resync = self.pickup = resync
        return False

    def rel(self, seq: int) -> int:
        """Stream offset of sequence number ``seq`` (a signed 32-bit distance from the next expected one)."""
        diff = (seq - self.next_seq) & SEQ_MASK
        if diff & SEQ_HALF:
            diff -= 0x100000000
        return self.next_rel + diff

    def high_rel(self) -> int:
        """Stream offset just past the highest byte seen (delivered or buffered)."""
        if self.pending:
            last = self.pending[-1]
            return max(self.next_rel, last[0] + len(last[1]))
        return self.next_rel

    # -- the receiver's window and RST checks ----------------------------------------------------------------------

    def ack_to(self, ack: int, window: int, seq: int) -> None:
        """The receiver's latest acknowledgement and window field, in its segment starting at ``seq``, on the fast
        path (see :meth:`note_ack`)."""
        self.acked, self.window = ack, window
        # What a Linux receiver holds of them (``tcp_ack``): the highest (``snd_una``), and the window field it takes
        # (``snd_wnd``, compared by header prediction) only where ``tcp_may_update_window`` lets it: an
        # acknowledgement past the highest, a segment past the one that last gave the window (``snd_wl1``), or the
        # same one with a larger window or none. An older acknowledgement moves nothing (``old_ack``).
        moved = (ack - self.acked_high) & SEQ_MASK
        if moved >= SEQ_HALF:
            return
        self.acked_high = ack
        last = self.window_seq
        if (
            moved
            or last is None
            or 0 < (seq - last) & SEQ_MASK < SEQ_HALF
            or (seq == last and (window > self.pred_window or not window))
        ):
            self.window_seq, self.pred_window = seq, window

    def note_ack(self, ack: int, window: int, syn: bool = False, seq: int | None = None) -> None:
        """The receiver acknowledged ``ack`` with the window field ``window`` (a SYN's is never scaled), in its segment
        starting at ``seq`` (None: its SYN's)."""
        if self.window:
            self._update_edge()
        self.ack_to(ack, window, seq if seq is not None else self.window_seq or 0)
        if syn:
            self.window = 0
            edge = (ack + window) & SEQ_MASK
            if (edge - self.edge) & SEQ_MASK < SEQ_HALF:
                self.edge = edge

    def _update_edge(self) -> int:
        edge = (self.acked + (self.window << self.peer_shift)) & SEQ_MASK
        if (edge - self.edge) & SEQ_MASK < SEQ_HALF:
            self.edge = edge  # never moves left: Linux does not shrink its window
        return self.edge

    def beyond_window(self, seq: int) -> bool:
        """Whether data starting at ``seq`` starts at or past the right edge of the receiver's window (the caller checks
        ``win_known`` first)."""
        return (seq - self._update_edge()) & SEQ_MASK < SEQ_HALF

    def rst_acceptable(self, seq: int, sack: bool) -> bool:
        """Whether a RST at ``seq`` resets the receiver (RFC 5961 3.2 as Linux applies it)."""
        rel = self.rel(seq)
        if rel == self.next_rel:
            return True
        if self.fin_rel is not None and self.next_rel >= self.fin_rel and rel == self.fin_rel + 1:
            return True  # after the FIN, the receiver expects the sequence number past it
        if sack and self.pending and rel == self.high_rel():
            return True  # the right edge of the highest SACK block
        acked = self.rel(self.acked)
        return acked > self.next_rel and rel == acked  # the receiver acknowledged bytes the capture missed

    # -- the out-of-order buffer -----------------------------------------------------------------------------------

    def tail_conflicts(self, rel: int, data: bytes) -> bool:
        """Whether retransmitted ``data`` at ``rel`` differs from the delivered bytes still held."""
        tail, tail_rel = self.tail, self.tail_rel
        lo = max(rel, tail_rel)
        hi = min(rel + len(data), tail_rel + len(tail), self.next_rel)
        return lo < hi and data[lo - rel : hi - rel] != tail[lo - tail_rel : hi - tail_rel]

    def insert(
        self, rel: int, data: bytes, frame: int, ts: float, policy: ReassemblyPolicy
    ) -> tuple[int, bool, bool, bool]:
        """Buffer ``data`` at ``rel``; where it overlaps buffered bytes, ``policy`` says whose bytes stay.

        Returns (bytes added to the buffer, overlapped buffered data, differing bytes went to the new segment,
        differing bytes stayed with the buffered ones).
        """
        pending = self.pending
        end = rel + len(data)
        origin = self.by_end.pop(rel, None) if policy.coalesces else None
        if origin is not None:
            origin[1] = end  # joins the buffered segment ending where it starts
        else:
            origin = [rel, end, 0]
        index = bisect.bisect_left(pending, rel, key=lambda p: p[0])
        if index and pending[index - 1][0] + len(pending[index - 1][1]) > rel:
            index -= 1
        runs, stop, overlapped, new_won, old_won = self._resolve(rel, data, index, origin, policy)
        pieces = self._pieces(runs, rel, data, frame, ts, origin)
        removed = 0
        for piece in pending[index:stop]:
            removed += len(piece[1])
            piece[4][2] -= 1
        for piece in pieces:
            piece[4][2] += 1
        for piece in pending[index:stop]:
            self._release(piece[4])
        pending[index:stop] = pieces
        if origin[2]:
            self.by_end[origin[1]] = origin
        added = sum(len(piece[1]) for piece in pieces) - removed
        self.pending_bytes += added
        return added, overlapped, new_won, old_won

    def _resolve(
        self, rel: int, data: bytes, index: int, origin: Origin, policy: ReassemblyPolicy
    ) -> tuple[list[tuple[int, int, Piece | None]], int, bool, bool, bool]:
        """Who holds each byte from ``pending[index]`` on: runs of (start, stop, buffered piece or None for new)."""
        pending = self.pending
        end = rel + len(data)
        runs: list[tuple[int, int, Piece | None]] = []
        cursor = rel
        overlapped = new_won = old_won = False
        stop = index
        while stop < len(pending) and pending[stop][0] < end:
            piece = pending[stop]
            p_start, p_data, _frame, _ts, p_origin = piece
            p_end = p_start + len(p_data)
            if p_start > cursor:
                runs.append((cursor, p_start, None))
            if p_start < rel:
                runs.append((p_start, rel, piece))
            lo, hi = max(p_start, rel), min(p_end, end)
            overlapped = True
            differ = data[lo - rel : hi - rel] != p_data[lo - p_start : hi - p_start]
            if policy.new_wins(origin[0], end, p_origin[0], p_origin[1]):
                runs.append((lo, hi, None))
                new_won = new_won or differ
            else:
                runs.append((lo, hi, piece))
                old_won = old_won or differ
            if p_end > end:
                runs.append((end, p_end, piece))
            cursor = p_end
            stop += 1
        if cursor < end:
            runs.append((cursor, end, None))
        return runs, stop, overlapped, new_won, old_won

    @staticmethod
    def _pieces(
        runs: list[tuple[int, int, Piece | None]], rel: int, data: bytes, frame: int, ts: float, origin: Origin
    ) -> list[Piece]:
        """Adjacent runs of one holder merged into pieces (a buffered piece kept whole is kept as it was)."""
        merged: list[list] = []
        for start, stop, holder in runs:
            if merged and merged[-1][2] is holder and merged[-1][1] == start:
                merged[-1][1] = stop
            else:
                merged.append([start, stop, holder])
        pieces: list[Piece] = []
        for start, stop, holder in merged:
            if holder is None:
                pieces.append((start, data[start - rel : stop - rel], frame, ts, origin))
            elif holder[0] == start and len(holder[1]) == stop - start:
                pieces.append(holder)
            else:
                offset = holder[0]
                pieces.append((start, holder[1][start - offset : stop - offset], holder[2], holder[3], holder[4]))
        return pieces

    def pop_piece(self) -> Piece:
        """Take the first buffered piece out (to deliver it)."""
        piece = self.pending.pop(0)
        self.pending_bytes -= len(piece[1])
        piece[4][2] -= 1
        self._release(piece[4])
        return piece

    def clear(self) -> int:
        """Drop every buffered piece; return how many bytes they held."""
        dropped = self.pending_bytes
        self.pending.clear()
        self.by_end.clear()
        self.pending_bytes = 0
        return dropped

    def _release(self, origin: Origin) -> None:
        if not origin[2] and self.by_end.get(origin[1]) is origin:
            del self.by_end[origin[1]]


def syn_seen(half: HalfStream, other: HalfStream) -> None:
    """Once both SYNs are seen, each direction can follow its receiver's window (scaled only if both SYNs asked)."""
    if other.syn_seq is None:
        return
    for sender, receiver in ((half, other), (other, half)):
        sender.win_known = True
        sender.peer_shift = receiver.wscale if sender.wscale is not None and receiver.wscale is not None else 0
        sender.note_ack(sender.acked, receiver.syn_window, True)  # a SYN's window is the peer's first right edge


def handshake_done(halves: tuple[HalfStream, HalfStream], direction: int, flags: int, ack: int, data: int) -> bool:
    """Whether this segment shows a flow opened by a SYN to be more than half-open.

    The client's first ACK of the server's SYN completes the handshake (a spoofed source never sees the server's
    ISN, so cannot acknowledge it); data from the server of a flow whose client side is not captured at all counts
    too (a capture of one direction).
    """
    client, server = halves
    if client.syn_seq is None and server.syn_seq is None:
        return True  # picked up mid-stream
    if direction == _SERVER_TO_CLIENT:
        return bool(data) and not client.started
    if not flags & ACK or flags & SYN:
        return False
    return server.syn_seq is None or 0 <= server.rel(ack) <= server.high_rel() + 1


def rst_valid(half: HalfStream, other: HalfStream, first: bool, seq: int, ack: int, flags: int) -> bool:
    """Whether the receiver of a RST from ``half``'s sender resets (Linux, RFC 5961)."""
    if first:  # the sender's first segment: a reply to a SYN counts if it acknowledges that SYN
        return other.syn_seq is None or (bool(flags & ACK) and ack == (other.syn_seq + 1) & SEQ_MASK)
    return half.rst_acceptable(seq, half.sack_ok and other.sack_ok)


def one_sided(halves: tuple[HalfStream, HalfStream]) -> bool:
    """Whether bytes went one way while the other end sent no packet at all: a receiver acknowledges what it gets,
    so a flow without a single segment from one side was captured in one direction only. A silent end (a client
    that reads a banner and leaves) still sends its SYN and ACKs."""
    client, server = halves
    return (not client.started and server.next_rel > 0) or (not server.started and client.next_rel > 0)
