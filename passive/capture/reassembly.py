"""TCP stream reassembly, sans-I/O: decoded segments in, per-flow handler events out.

Feed :meth:`Reassembler.process` one decoded TCP segment at a time (see
:mod:`passive.capture.linklayer`), with its frame number and capture timestamp. For every
connection the reassembler asks a factory for a :class:`~passive.capture.flow.StreamHandler`
and then calls it with ``on_open``, ``on_data`` (contiguous :class:`~passive.capture.flow.Chunk`
pieces, each naming the frame it came from), ``on_gap`` and ``on_close``.

Policy, in short:

* **Direction.** The sender of a SYN (without ACK) is the client, the sender of a SYN+ACK
  the server. Without a SYN, the side using a server port (``server_ports``, given by
  the caller) is the server; if neither or both do, the lower port is the server;
  on equal ports the sender of the first packet seen is the client.
* **Sequence space.** Sequence numbers are compared modulo 2**32 against the next
  expected one (a signed 32-bit difference), then mapped onto an unbounded stream offset,
  so wrap-around is invisible to the rest of the code.
* **Overlaps: first seen wins** (like the Linux "first" target policy). Data already
  delivered or already buffered is never replaced; a segment overlapping it is trimmed.
  Overlapping bytes that differ are counted as ``overlap_conflicts`` (checked against
  the buffered data and the last delivered piece of the stream).
* **Out of order.** Segments ahead of a hole are buffered, at most ``max_buffer`` bytes
  and ``max_buffer_segments`` pieces per direction and ``max_total_buffer`` bytes
  overall. The hole becomes a **gap** (an ``on_gap`` event with the number of missing
  bytes, never glued over) when a cap is hit, when the peer acknowledges data beyond it
  (the bytes were sent but not captured), or when the flow closes.
* **Mid-stream pickup and resync.** A direction whose first segment is not a SYN marks
  the flow ``partial``. With ``resync_lines`` (default) the data handed on starts after
  the first ``\\n`` of that direction, and after every gap, so consumers always start on
  a line boundary; skipped bytes are counted in ``resync_skipped_bytes``.
* **Close.** RST closes at once; FIN closes when both directions have delivered up to
  their FIN. Flows idle longer than ``idle_timeout`` seconds of *capture* time expire.
  When the table holds ``max_flows`` flows the least recently active ones are evicted.
  Anything still open at the end is flushed with reason ``END``.
* **Classification.** With a ``classifier``, a new flow's events are held (at most
  ``_CLASSIFY_LIMIT`` bytes seen) until the classifier, shown the first bytes of each
  side, names it (the label is set on the flow, the held events are replayed to the handler the factory makes for
  it) or drops it.
* **Truncated frames** (snaplen shorter than the segment): the captured bytes are
  delivered, the rest reported as a gap.
"""

from __future__ import annotations

import heapq

from passive.capture.counters import CaptureCounters
from passive.capture.flow import (
    SEQ_MASK,
    Chunk,
    Classifier,
    CloseReason,
    Direction,
    Flow,
    HandlerFactory,
    _Half,
    sender_is_client,
)
from passive.capture.linklayer import ACK, FIN, RST, SYN, Segment
from passive.capture.options import IDLE_TIMEOUT, MAX_BUFFER, MAX_BUFFER_SEGMENTS, MAX_FLOWS, MAX_TOTAL_BUFFER

_TAIL_KEEP = 2048  # bytes of the last delivered piece kept for overlap conflict checks
_CLASSIFY_LIMIT = 4096  # bytes of a flow's first data (both sides) shown to the classifier; undecided then: dropped
_DIRECTIONS = (Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT)


class Reassembler:
    """Per-direction TCP reassembly over a bounded flow table (see the module docstring for the policy)."""

    def __init__(
        self,
        handler_factory: HandlerFactory,
        *,
        counters: CaptureCounters | None = None,
        server_ports: frozenset[int] = frozenset(),
        idle_timeout: float = IDLE_TIMEOUT,
        max_flows: int = MAX_FLOWS,
        max_buffer: int = MAX_BUFFER,
        max_buffer_segments: int = MAX_BUFFER_SEGMENTS,
        max_total_buffer: int = MAX_TOTAL_BUFFER,
        resync_lines: bool = True,
        classifier: Classifier | None = None,
    ) -> None:
        self.factory = handler_factory
        self.counters = counters if counters is not None else CaptureCounters()
        self.server_ports = server_ports
        self.idle_timeout = idle_timeout
        self.max_flows = max(1, max_flows)
        self.max_buffer = max_buffer
        self.max_buffer_segments = max(1, max_buffer_segments)
        self.max_total_buffer = max_total_buffer
        self.resync_lines = resync_lines
        self.classifier = classifier
        self._table: dict[tuple[bytes, int, bytes, int], tuple[Flow, int]] = {}
        self._flows: dict[int, Flow] = {}
        self._next_id = 1
        self._pending_total = 0
        self._sweep_at = float("-inf")
        self._sweep_every = max(1.0, min(idle_timeout / 4, 30.0))

    @property
    def open_flows(self) -> int:
        return len(self._flows)

    # -- input ---------------------------------------------------------------------------

    def process(self, segment: Segment, frame: int, ts: float) -> None:
        """Handle one decoded TCP segment captured in ``frame`` at ``ts``."""
        src, dst, sport, dport, seq, ack, flags, payload, wire_len, _info = segment
        self.counters.segments += 1
        if ts >= self._sweep_at:
            self.expire(ts)
        entry = self._table.get((src, sport, dst, dport))
        if entry is None or flags & SYN:
            entry = self._flow_for(entry, segment, frame, ts)
            if entry is None:
                return
        flow, direction = entry
        flow.last_ts = ts
        flow.last_frame = frame
        halves = flow._halves
        if halves is None:  # ignored flow: keep the tombstone until it idles out
            if flags & RST:
                self._forget(flow)
            return
        half = halves[direction]
        if not wire_len and not flags & (SYN | FIN | RST) and half.started:
            # A bare ACK: only the peer's holes care.
            other = halves[1 - direction]
            if other.pending and flags & ACK and other.rel(ack) >= other.pending[0][0]:
                self._fill_hole(flow, 1 - direction, other)
            if half.fin_rel is not None or other.fin_rel is not None:
                self._check_finished(flow, halves)
            return
        if (
            wire_len
            and not flags & (SYN | FIN | RST)
            and seq == half.next_seq
            and half.started
            and not half.pending
            and not half.resync
            and half.fin_rel is None
            and flow.state == Flow.ACTIVE
            and len(payload) == wire_len
        ):
            # Fast path, most segments: the next in-order bytes of an established, accepted flow.
            offset = half.next_rel
            half.next_rel = end = offset + wire_len
            half.next_seq = (seq + wire_len) & SEQ_MASK
            if wire_len <= _TAIL_KEEP:
                half.tail, half.tail_rel = payload, offset
            else:
                half.tail, half.tail_rel = payload[-_TAIL_KEEP:], end - _TAIL_KEEP
            self.counters.bytes_delivered += wire_len
            flow.handler.on_data(flow, _DIRECTIONS[direction], Chunk(payload, frame, ts, offset))  # type: ignore[union-attr]
            other = halves[1 - direction]
            if other.pending and flags & ACK and other.rel(ack) >= other.pending[0][0]:
                self._fill_hole(flow, 1 - direction, other)
            return
        self._segment(flow, halves, direction, segment, frame, ts)

    def _flow_for(
        self, entry: tuple[Flow, int] | None, segment: Segment, frame: int, ts: float
    ) -> tuple[Flow, int] | None:
        """The flow and direction of a segment that is a SYN or matches no flow; None for a stray segment."""
        flags = segment[6]
        if entry is None:
            if not segment[8] and not flags & SYN:
                self.counters.stray_segments += 1
                return None
            return self._open(segment, frame, ts)
        if flags & SYN and not flags & ACK and entry[0].state != Flow.IGNORED:
            return self._maybe_reused(entry, segment, frame, ts)
        return entry

    def _segment(
        self, flow: Flow, halves: tuple[_Half, _Half], direction: int, segment: Segment, frame: int, ts: float
    ) -> None:
        """Any segment off the fast path: first of its direction, SYN/FIN/RST, out of order, overlapping..."""
        _src, _dst, _sport, _dport, seq, ack, flags, payload, wire_len, _info = segment
        half = halves[direction]
        if not half.started and not half.start(seq, flags, self.resync_lines) and not flow.partial:
            flow.partial = True  # picked up mid-stream
            self.counters.flows_partial += 1
        if flags & SYN:
            seq = (seq + 1) & SEQ_MASK
        if wire_len:
            self._add(flow, direction, half, half.rel(seq), payload, wire_len, frame, ts)
        if flags & ACK:
            other = halves[1 - direction]
            if other.pending and other.rel(ack) >= other.pending[0][0]:
                self._fill_hole(flow, 1 - direction, other)
        if flags & RST:
            self._close(flow, CloseReason.RST)
            return
        if flags & FIN and half.fin_rel is None:
            half.fin_rel = half.rel(seq) + wire_len
        if half.fin_rel is not None or halves[1 - direction].fin_rel is not None:
            self._check_finished(flow, halves)

    def _check_finished(self, flow: Flow, halves: tuple[_Half, _Half]) -> None:
        for half in halves:
            if half.fin_rel is not None and not half.finished and not half.pending and half.next_rel >= half.fin_rel:
                half.finished = True
        if halves[0].finished and halves[1].finished:
            self._close(flow, CloseReason.FIN)

    def flush(self) -> None:
        """End of capture: deliver what is buffered (holes as gaps) and close every flow with reason END."""
        for flow in list(self._flows.values()):
            self._close(flow, CloseReason.END)

    def expire(self, now: float) -> None:
        """Close flows idle for more than ``idle_timeout`` seconds of capture time before ``now``."""
        self._sweep_at = now + self._sweep_every
        limit = now - self.idle_timeout
        for flow in [f for f in self._flows.values() if f.last_ts < limit]:
            self._close(flow, CloseReason.TIMEOUT)

    # -- flow table ------------------------------------------------------------------------

    def _open(self, segment: Segment, frame: int, ts: float) -> tuple[Flow, int]:
        src, dst, sport, dport, _seq, _ack, flags, _payload, _wire_len, _info = segment
        if len(self._flows) >= self.max_flows:
            self._evict()
        if sender_is_client(sport, dport, flags, self.server_ports):
            client, server, direction = (src, sport), (dst, dport), Direction.CLIENT_TO_SERVER
        else:
            client, server, direction = (dst, dport), (src, sport), Direction.SERVER_TO_CLIENT
        flow = Flow(self._next_id, client, server, frame, ts)
        self._next_id += 1
        self.counters.flows += 1
        c2s, s2c = flow._keys
        self._table[c2s] = (flow, Direction.CLIENT_TO_SERVER)
        self._table[s2c] = (flow, Direction.SERVER_TO_CLIENT)
        self._flows[flow.id] = flow
        if self.classifier is None or flow.server_port in self.server_ports:
            self._activate(flow)  # a named server port says what the flow is: no classification
        else:
            flow.state = Flow.CLASSIFYING
            flow._events = []
        return flow, direction

    def _activate(self, flow: Flow) -> None:
        handler = self.factory(flow)
        if handler is None:
            self.counters.flows_declined += 1
            self._ignore(flow)
            return
        flow.handler = handler
        flow.state = Flow.ACTIVE
        handler.on_open(flow)

    def _ignore(self, flow: Flow) -> None:
        if flow._halves is not None:
            for half in flow._halves:
                self._pending_total -= half.pending_bytes
                half.pending_bytes = 0
                half.pending.clear()  # also stops a drain loop that is running on this list
        flow.state = Flow.IGNORED
        flow._halves = None
        flow._events = None
        flow._seen = [b"", b""]
        flow.handler = None

    def _maybe_reused(self, entry: tuple[Flow, int], segment: Segment, frame: int, ts: float) -> tuple[Flow, int]:
        """A SYN on an open 4-tuple: a new connection if its ISN differs from the flow's first SYN."""
        flow, direction = entry
        halves = flow._halves
        if halves is None:
            return entry
        syn_seq = halves[direction].syn_seq
        if syn_seq is None or syn_seq == segment[4]:
            return entry  # first SYN of a flow opened by another packet, or a retransmitted SYN
        self._close(flow, CloseReason.REUSED)
        return self._open(segment, frame, ts)

    def _evict(self) -> None:
        count = max(1, self.max_flows // 64)  # evict a batch so the scan is amortised
        for flow in heapq.nsmallest(count, self._flows.values(), key=lambda f: f.last_ts):
            self.counters.flows_evicted += 1
            self._close(flow, CloseReason.EVICTED, counted=False)

    def _forget(self, flow: Flow) -> None:
        for key in flow._keys:
            entry = self._table.get(key)
            if entry is not None and entry[0] is flow:
                del self._table[key]
        self._flows.pop(flow.id, None)

    def _close(self, flow: Flow, reason: CloseReason, *, counted: bool = True) -> None:
        halves = flow._halves
        if halves is not None:
            for direction, half in enumerate(halves):
                self._drain_all(flow, direction, half)
        if flow.state == Flow.CLASSIFYING:
            self.counters.flows_not_mail += 1
            self._ignore(flow)
        handler = flow.handler
        if counted:
            if reason in (CloseReason.FIN, CloseReason.RST, CloseReason.REUSED):
                self.counters.flows_closed += 1
            elif reason == CloseReason.TIMEOUT:
                self.counters.flows_expired += 1
            elif reason == CloseReason.END:
                self.counters.flows_flushed += 1
        self._forget(flow)
        if handler is not None and flow.state == Flow.ACTIVE:
            flow.handler = None
            handler.on_close(flow, reason)
        flow._halves = None

    # -- one direction ---------------------------------------------------------------------

    def _add(
        self, flow: Flow, direction: int, half: _Half, rel: int, data: bytes, wire_len: int, frame: int, ts: float
    ) -> None:
        counters = self.counters
        next_rel = half.next_rel
        end = rel + wire_len
        if rel < next_rel:
            counters.overlaps += 1
            if end <= next_rel:
                counters.retransmissions += 1
            if half.tail_conflicts(rel, data):
                counters.overlap_conflicts += 1
            if end <= next_rel:
                return
            cut = next_rel - rel
            data = data[cut:]
            wire_len -= cut
            rel = next_rel
        if rel == next_rel and not half.pending:
            if data:  # a frame cut right after the TCP header carries no captured byte: only the gap below
                self._deliver(flow, direction, half, data, frame, ts)
            if len(data) < wire_len:  # frame cut by the snaplen
                self._gap(flow, direction, half, half.next_rel + wire_len - len(data), frame, ts)
            return
        if rel > next_rel:
            counters.out_of_order += 1
        added, overlapped, conflict = half.insert(rel, data, frame, ts)
        self._pending_total += added
        if overlapped:
            counters.overlaps += 1
            counters.overlap_conflicts += conflict
        self._drain(flow, direction, half)
        while half.pending and (
            half.pending_bytes > self.max_buffer
            or len(half.pending) > self.max_buffer_segments
            or self._pending_total > self.max_total_buffer
        ):
            counters.buffer_cap_hits += 1
            self._fill_hole(flow, direction, half)

    def _drain(self, flow: Flow, direction: int, half: _Half) -> None:
        pending = half.pending
        while pending and pending[0][0] <= half.next_rel:
            start, data, frame, ts = pending.pop(0)
            half.pending_bytes -= len(data)
            self._pending_total -= len(data)
            if start < half.next_rel:  # cannot happen with disjoint pieces; kept as a guard
                data = data[half.next_rel - start :]
            if data:
                self._deliver(flow, direction, half, data, frame, ts)

    def _fill_hole(self, flow: Flow, direction: int, half: _Half) -> None:
        """Give up on the hole before the first buffered piece: report it as a gap and drain."""
        if not half.pending:
            return
        start, _, frame, ts = half.pending[0]
        if start > half.next_rel:
            self._gap(flow, direction, half, start, frame, ts)
        self._drain(flow, direction, half)

    def _drain_all(self, flow: Flow, direction: int, half: _Half) -> None:
        while half.pending:
            self._fill_hole(flow, direction, half)
        if half.fin_rel is not None and half.next_rel < half.fin_rel:
            self._gap(flow, direction, half, half.fin_rel, flow.last_frame, flow.last_ts)

    def _gap(self, flow: Flow, direction: int, half: _Half, upto: int, frame: int, ts: float) -> None:
        missing = upto - half.next_rel
        half.next_seq = (half.next_seq + missing) & SEQ_MASK
        half.next_rel = upto
        self.counters.gaps += 1
        self.counters.gap_bytes += missing
        if self.resync_lines:
            half.resync = True
        if flow.state == Flow.ACTIVE and flow.handler is not None:
            flow.handler.on_gap(flow, _DIRECTIONS[direction], missing, frame, ts)
        elif flow.state == Flow.CLASSIFYING and flow._events is not None:
            flow._events.append(("gap", direction, missing, frame, ts))

    def _deliver(self, flow: Flow, direction: int, half: _Half, data: bytes, frame: int, ts: float) -> None:
        offset = half.next_rel
        size = len(data)
        half.next_rel = offset + size
        half.next_seq = (half.next_seq + size) & SEQ_MASK
        half.tail = data if size <= _TAIL_KEEP else data[-_TAIL_KEEP:]
        half.tail_rel = offset + size - len(half.tail)
        if half.resync:
            newline = data.find(b"\n")
            skip = size if newline < 0 else newline + 1
            self.counters.resync_skipped_bytes += skip
            if newline < 0:
                return
            half.resync = False
            data = data[skip:]
            offset += skip
            if not data:
                return
        self.counters.bytes_delivered += len(data)
        state = flow.state
        if state == Flow.ACTIVE:
            flow.handler.on_data(flow, _DIRECTIONS[direction], Chunk(data, frame, ts, offset))  # type: ignore[union-attr]
        elif state == Flow.CLASSIFYING:
            self._classify(flow, direction, Chunk(data, frame, ts, offset))

    def _classify(self, flow: Flow, direction: int, chunk: Chunk) -> None:
        events = flow._events
        assert events is not None and self.classifier is not None
        events.append(("data", direction, chunk))
        seen = flow._seen
        if len(seen[direction]) < _CLASSIFY_LIMIT:
            seen[direction] += chunk.data[: _CLASSIFY_LIMIT - len(seen[direction])]
        verdict = self.classifier(seen[Direction.SERVER_TO_CLIENT], seen[Direction.CLIENT_TO_SERVER])
        if verdict is None and len(seen[0]) + len(seen[1]) >= _CLASSIFY_LIMIT:
            verdict = ""
        if verdict is None:
            return
        if not verdict:
            self.counters.flows_not_mail += 1
            self._ignore(flow)
            return
        flow.label = verdict
        flow._events = None
        flow._seen = [b"", b""]
        self._activate(flow)
        handler = flow.handler
        if handler is None:
            return
        for event in events:
            if event[0] == "data":
                handler.on_data(flow, _DIRECTIONS[event[1]], event[2])
            else:
                handler.on_gap(flow, _DIRECTIONS[event[1]], event[2], event[3], event[4])
