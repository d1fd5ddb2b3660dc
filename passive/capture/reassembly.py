"""TCP stream reassembly, sans-I/O: decoded segments in, per-flow handler events out.

Feed :meth:`Reassembler.process` one decoded TCP segment at a time (see :mod:`passive.capture.linklayer`), with its
frame number and capture timestamp. For every connection the reassembler asks a factory for a
:class:`~passive.capture.flow.StreamHandler` and then calls it with ``on_open``, ``on_data`` (contiguous
:class:`~passive.capture.flow.Chunk` pieces, each naming the frame it came from), ``on_gap`` and ``on_close``.

Policy, in short:

* **Direction.** The sender of a SYN (without ACK) is the client, the sender of a SYN+ACK
  the server. Without a SYN, the side using a server port (``server_ports``, given by
  the caller) is the server; if neither or both do, the lower port is the server;
  on equal ports the sender of the first packet seen is the client.
* **Sequence space.** Sequence numbers are compared modulo 2**32 against the next expected one (a signed 32-bit
  difference), then mapped onto an unbounded stream offset, so wrap-around is invisible to the rest of the code.
* **Follow the receiver** (``policy``, :mod:`passive.capture.policy`). Delivered bytes are never replaced: a
  segment overlapping them is trimmed. Where a segment overlaps buffered bytes, the policy's rule says whose bytes
  stay (``linux``, the default: the earlier start wins, or on the same start the longer segment; ``first``: the
  bytes seen first). Except under ``first``, what the receiver would refuse is refused and counted: a RST not at
  the expected sequence number (``rsts_ignored``), data at or beyond the right edge of the receiver's advertised
  window (``window_drops``, ``window_dropped_bytes``), a FIN behind delivered data (``fins_ignored``), a segment
  with a wrong checksum or whose ACK field it refuses (held until it acknowledges them, or dropped:
  ``checksum_drops``, ``ack_drops``; :mod:`passive.capture.doubtful`, :mod:`passive.capture.acks`). Overlapping
  bytes that differ are counted as ``overlap_conflicts``, and per decision as ``overlaps_new_won`` /
  ``overlaps_old_won``.
* **Out of order.** Segments ahead of a hole are buffered, at most ``max_buffer`` bytes
  and ``max_buffer_segments`` pieces per direction and ``max_total_buffer`` bytes
  overall. The hole becomes a **gap** (an ``on_gap`` event with the number of missing
  bytes, never glued over) when a cap is hit, when the peer acknowledges data beyond it
  (the bytes were sent but not captured), or when the flow closes.
* **Mid-stream pickup and resync.** A direction whose first segment is not a SYN marks
  the flow ``partial``. With ``resync_lines`` (default) the data handed on starts after
  the first ``\\n`` of that direction (unless its first line is one of a carried protocol's,
  ``line_start``); skipped bytes are counted in ``resync_skipped_bytes``. After a gap the
  bytes go on as they are: the handler, told of the gap first, resyncs its own reading.
* **Close.** An accepted RST closes at once; FIN closes when both directions have delivered up to
  their FIN. Flows idle longer than ``idle_timeout`` seconds of *capture* time expire.
  When the table holds ``max_flows`` flows one is evicted per new flow: half-open flows first, then flows
  without payload, then established ones, each by idle time (:mod:`passive.capture.flowtable`).
  Anything still open at the end is flushed with reason ``END``.
* **Classification** (:mod:`passive.capture.classifying`). With a ``classifier``, a new flow's events are held
  (at most ``CLASSIFY_LIMIT`` bytes seen; all flows together at most ``max_classify_held``) until the classifier,
  shown the first bytes of each side, names it (the label is set on the flow, the held events are replayed to the
  handler the factory makes for it) or drops it. ``on_verdict(flow, keep)`` hears each verdict (the packet scanner
  learns which flows to keep); a flow dropped stays as a tombstone that swallows its packets, until a SYN with
  another ISN starts a new connection on its 4-tuple.
* **Clock.** Idle flows are swept every few seconds of capture time (segments processed); with ``external_clock``
  the caller calls :meth:`expire` (the scanner measures on every packet read). **Skipped bytes**: see skipping.py.
* **Truncated frames** (snaplen shorter than the segment): the captured bytes are delivered, the rest is a gap.
"""

from __future__ import annotations

from collections.abc import Callable

from passive.capture.acks import AckChecks
from passive.capture.checksums import INFO_CSUM_VALID, INFO_CSUM_WRONG
from passive.capture.classifying import MAX_CLASSIFY_HELD, Classification
from passive.capture.counters import CaptureCounters
from passive.capture.delivery import DIRECTIONS, TAIL_KEEP
from passive.capture.doubtful import Doubts
from passive.capture.flow import (
    Chunk,
    Classifier,
    CloseReason,
    Direction,
    Flow,
    HandlerFactory,
    new_chunk,
    sender_is_client,
)
from passive.capture.flowtable import ESTABLISHED, HALF_OPEN, QUIET, FlowTable
from passive.capture.held import HeldBudget
from passive.capture.linklayer import ACK, FIN, INFO_SKIPPED, INFO_VNET_SHIFT, OPT_TIMESTAMP, RST, SYN, URG, Segment
from passive.capture.options import IDLE_TIMEOUT, MAX_BUFFER, MAX_BUFFER_SEGMENTS, MAX_FLOWS, MAX_TOTAL_BUFFER
from passive.capture.policy import DEFAULT_POLICY, policy_named
from passive.capture.skipping import apply_notice
from passive.capture.stream import SEQ_MASK, HalfStream, handshake_done, one_sided, rst_valid, syn_seen
from passive.capture.tcpoptions import OptionChecks


class Reassembler(Classification, Doubts, AckChecks, OptionChecks):
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
        line_start: Callable[[bytes], bool] | None = None,
        classifier: Classifier | None = None,
        policy: str = DEFAULT_POLICY,
        check_checksums: bool = True,
        on_verdict: Callable[[Flow, bool], None] | None = None,
        external_clock: bool = False,
        max_classify_held: int = MAX_CLASSIFY_HELD,
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
        self.line_start = line_start
        self.classifier = classifier
        self.on_verdict = on_verdict
        self.external_clock = external_clock
        self.policy = policy_named(policy)
        self.check_checksums = check_checksums and self.policy.validates  # passive.capture.checksums
        self.check_acks = self.policy.validates  # passive.capture.acks
        self.held: HeldBudget[Flow] = HeldBudget(max_classify_held)  # what the flows being classified hold
        self.skip_requests: list[Flow] = []  # flows whose handler would let bytes be dropped (capture.skipping)
        self._table = FlowTable()
        self._flows = self._table.flows
        self._keys = self._table.keys
        self._next_id = 1
        self._pending_total = 0
        self._sweep_at = float("inf") if external_clock else float("-inf")
        self._sweep_every = sweep_interval(idle_timeout)

    @property
    def open_flows(self) -> int:
        return len(self._flows)

    # -- input ---------------------------------------------------------------------------

    def process(self, segment: Segment, frame: int, ts: float) -> None:
        """One decoded TCP segment of ``frame`` at ``ts``: bare ACKs and in-order bytes here, the rest elsewhere."""
        src, dst, sport, dport, seq, ack, flags, payload, wire_len, info, window, _options = segment
        entry = self._keys.get((src, sport, dst, dport, info >> INFO_VNET_SHIFT))
        if entry is None or flags & SYN or info & INFO_SKIPPED or ts >= self._sweep_at:
            entry = self._enter(entry, segment, frame, ts)
            if entry is None:
                return
        else:
            self.counters.segments += 1
        flow, direction = entry
        flow.last_ts, flow.last_frame = ts, frame
        halves = flow._halves
        if halves is None:  # ignored flow: keep the tombstone until it idles out, or a RST ends it
            return self._forget(flow) if flags & RST else None
        half = halves[direction]
        if info & INFO_CSUM_WRONG and half.checked and self._doubted(entry, segment, frame, ts):
            return  # held until its receiver acknowledges it, or dropped (passive.capture.doubtful)
        if self.check_acks and (wire_len or flags & (FIN | URG)) and self._refused(flow, direction, segment, frame, ts):
            return  # its options or ACK field refused: dropped, or held (passive.capture.tcpoptions, .acks)
        if flags & (SYN | FIN | RST | URG) or not half.started:
            self._segment(flow, halves, direction, segment, frame, ts)
        elif not wire_len:  # a bare ACK: the receiver's acknowledgement and window (see beyond_window), the peer's
            other = halves[1 - direction]  # holes, the handshake; its timestamp (passive.capture.tcpoptions)
            if segment[11] & OPT_TIMESTAMP and self.check_acks:
                self._timestamp(half, other, segment)  # (before the ACK field moves on: fast_path)
            if flags & ACK:
                other.ack_to(ack, window, seq)
                if (other.doubtful or other.pending) and not self._peer_acked(flow, direction, other, ack):
                    return
                if flow.evict_class == HALF_OPEN:
                    self._reclass(flow, halves, direction, flags, ack, 0)
            if half.fin_rel is not None or other.fin_rel is not None:
                self._check_finished(flow, halves)
        elif (
            seq == half.next_seq
            and not half.pending
            and not half.resync
            and half.fin_rel is None
            and half.urgent is None
            and flow.state == Flow.ACTIVE
            and len(payload) == wire_len
        ):  # the next in-order bytes of an established, accepted flow
            if flags & ACK:  # what it acknowledges came before what it brings: a hole closed, held segments read
                other = halves[1 - direction]
                other.ack_to(ack, window, seq)
                if other.doubtful or other.pending:
                    self._peer_acked(flow, direction, other, ack)  # an accepted flow stays one
            offset = half.next_rel
            half.next_rel = end = offset + wire_len
            half.next_seq = (seq + wire_len) & SEQ_MASK
            tail = payload if wire_len <= TAIL_KEEP else payload[-TAIL_KEEP:]
            half.tail, half.tail_rel = tail, end - len(tail)
            self.counters.bytes_delivered += wire_len
            chunk = new_chunk(Chunk, (payload, frame, ts, offset))
            flow.handler.on_data(flow, DIRECTIONS[direction], chunk)  # type: ignore[union-attr]
            if flow.evict_class != ESTABLISHED:
                self._reclass(flow, halves, direction, flags, ack, wire_len)
        else:
            self._segment(flow, halves, direction, segment, frame, ts)

    def _enter(
        self, entry: tuple[Flow, int] | None, segment: Segment, frame: int, ts: float
    ) -> tuple[Flow, int] | None:
        """A segment that is a skip notice, a SYN, the first of a flow, or due for a sweep of idle flows first: its
        flow and direction, or None when nothing more is to be done."""
        if segment[9] & INFO_SKIPPED:
            apply_notice(self, segment, frame, ts)
            return None
        self.counters.segments += 1
        if segment[9] & INFO_CSUM_WRONG and entry is not None and self._doubted(entry, segment, frame, ts):
            return None  # held until its receiver's acknowledgement, or dropped (passive.capture.doubtful)
        if ts >= self._sweep_at:
            self.expire(ts)
            entry = self._keys.get((segment[0], segment[2], segment[1], segment[3], segment[9] >> INFO_VNET_SHIFT))
        if entry is None or segment[6] & SYN:
            return self._flow_for(entry, segment, frame, ts)
        return entry

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
        if flags & SYN and not flags & ACK:
            if entry[0].state != Flow.IGNORED:
                return self._maybe_reused(entry, segment, frame, ts)
            if entry[0]._isn != segment[4]:  # a new connection where a flow was dropped
                self._forget(entry[0])
                return self._open(segment, frame, ts)
        return entry

    def _segment(
        self, flow: Flow, halves: tuple[HalfStream, HalfStream], direction: int, segment: Segment, frame: int, ts: float
    ) -> None:
        """Any segment off the fast path: first of its direction, SYN/FIN/RST, out of order, overlapping..."""
        _src, _dst, _sport, _dport, seq, ack, flags, payload, wire_len, info, window, options = segment
        half, other = halves[direction], halves[1 - direction]
        first = not half.started
        if info & INFO_CSUM_VALID:
            half.checked = True
        validates = self.policy.validates
        if flags & RST and validates and not rst_valid(half, other, first, seq, ack, flags):
            self.counters.rsts_ignored += 1  # the receiver ignores it (or answers with a challenge ACK)
            return
        if first:
            if not half.start(seq, flags, self.resync_lines, options, window) and not flow.partial:
                flow.partial = True  # picked up mid-stream
                self.counters.flows_partial += 1
            self._rebase_held(half)  # segments it held before: their ends placed in its sequence space
            if flags & SYN:
                syn_seen(half, other)
        if flags & ACK:  # what it acknowledges came before what it brings
            other.note_ack(ack, window, bool(flags & SYN), segment[4])
            if (other.doubtful or other.pending) and not self._peer_acked(flow, direction, other, ack):
                return
        if flags & SYN:
            seq = (seq + 1) & SEQ_MASK
        refused = validates and half.win_known and bool(wire_len or flags & FIN) and half.beyond_window(seq)
        if refused:
            self.counters.window_drops += 1
            self.counters.window_dropped_bytes += wire_len
        elif wire_len or flags & URG:
            if flags & URG and validates and not flags & SYN:
                self._urgent(half, segment)  # before its own bytes (passive.capture.tcpoptions)
            if wire_len:
                self._add(flow, direction, half, half.rel(seq), payload, wire_len, frame, ts)
        if flags & RST:
            self._close(flow, CloseReason.RST)
            return
        if flow.evict_class != ESTABLISHED and flow._halves is not None and (wire_len or not flags & SYN):
            self._reclass(flow, halves, direction, flags, ack, wire_len and not refused)
        if flags & FIN and not refused:
            self._note_fin(half, half.rel(seq) + wire_len)
        if half.fin_rel is not None or other.fin_rel is not None:
            self._check_finished(flow, halves)

    def _peer_acked(self, flow: Flow, direction: int, other: HalfStream, ack: int) -> bool:
        """A segment of ``direction`` acknowledged ``ack``: the peer's held segments it covers are read and the hole
        it acknowledges past is a gap, before the segment's own bytes. False when the bytes so read named the flow
        no mail (every-port mode): it is a tombstone, its segment's bytes go nowhere."""
        if other.doubtful:
            self._acknowledged(flow, 1 - direction, other)
        if other.pending and other.rel(ack) >= other.pending[0][0]:
            self._fill_hole(flow, 1 - direction, other)
        return flow._halves is not None

    def _note_fin(self, half: HalfStream, fin_rel: int) -> None:
        if not self.policy.validates:
            if half.fin_rel is None:
                half.fin_rel = fin_rel
        elif fin_rel < half.next_rel:
            self.counters.fins_ignored += 1  # behind delivered data: the receiver drops it as a duplicate
        elif half.fin_rel is None or fin_rel < half.fin_rel or half.fin_rel < half.next_rel:
            half.fin_rel = fin_rel

    def _check_finished(self, flow: Flow, halves: tuple[HalfStream, HalfStream]) -> None:
        for half in halves:
            fin_rel = half.fin_rel
            if fin_rel is None or half.finished or half.pending:
                continue
            if half.next_rel > fin_rel and self.policy.validates:
                half.fin_rel = None  # data went past it: the receiver never reached that FIN
                self.counters.fins_ignored += 1
            elif half.next_rel >= fin_rel:
                half.finished = True
        if halves[0].finished and halves[1].finished:
            self._close(flow, CloseReason.FIN)

    def _reclass(
        self, flow: Flow, halves: tuple[HalfStream, HalfStream], direction: int, flags: int, ack: int, data: int
    ) -> None:
        """Move a flow up the eviction order: handshake completed, then payload seen."""
        evict_class = flow.evict_class
        if evict_class == HALF_OPEN:
            if not handshake_done(halves, direction, flags, ack, data):
                return
            evict_class = QUIET
        if data or halves[0].high_rel() or halves[1].high_rel():
            evict_class = ESTABLISHED
        self._table.reclass(flow, evict_class)

    def flush(self) -> None:
        """End of capture: deliver what is buffered (holes as gaps) and close every flow with reason END."""
        for flow in list(self._flows.values()):
            self._close(flow, CloseReason.END)

    def expire(self, now: float) -> None:
        """Close flows idle for more than ``idle_timeout`` seconds of capture time before ``now``."""
        if not self.external_clock:
            self._sweep_at = now + self._sweep_every
        limit = now - self.idle_timeout
        for flow in [f for f in self._flows.values() if f.last_ts < limit]:
            self._close(flow, CloseReason.TIMEOUT)

    # -- flow table ------------------------------------------------------------------------

    def _open(self, segment: Segment, frame: int, ts: float) -> tuple[Flow, int]:
        src, dst, sport, dport, _seq, _ack, flags, *_rest = segment
        if len(self._flows) >= self.max_flows:
            victim = self._table.victim()
            if victim is not None:
                self.counters.flows_evicted += 1
                self._close(victim, CloseReason.EVICTED, counted=False)
        if sender_is_client(sport, dport, flags, self.server_ports):
            client, server, direction = (src, sport), (dst, dport), Direction.CLIENT_TO_SERVER
        else:
            client, server, direction = (dst, dport), (src, sport), Direction.SERVER_TO_CLIENT
        flow = Flow(self._next_id, client, server, frame, ts, segment[9] >> INFO_VNET_SHIFT)
        flow._skips = self.skip_requests
        self._next_id += 1
        self.counters.flows += 1
        # A flow opened by a SYN proves nothing yet; one picked up mid-stream opens on payload.
        self._table.add(flow, HALF_OPEN if flags & SYN else ESTABLISHED)
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
            flow._isn = flow._halves[Direction.CLIENT_TO_SERVER].syn_seq
            self._forget_doubts(flow, flow._halves, counted=False)  # no mail: nothing in it was a decoy
            for half in flow._halves:
                self._pending_total -= half.clear()  # also stops a drain loop that is running on this list
        if flow._events is not None:
            self.held.forget(flow)
        flow.state = Flow.IGNORED
        flow._halves = None
        flow._events = None
        flow._seen = [b"", b""]
        flow.handler = None
        if flow.id in self._flows:
            self._table.reclass(flow, HALF_OPEN)  # a tombstone is the first to go when the table is full

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

    def _forget(self, flow: Flow) -> None:
        self._table.remove(flow)

    def _close(self, flow: Flow, reason: CloseReason, *, counted: bool = True) -> None:
        halves = flow._halves
        if halves is not None:
            self._forget_doubts(flow, halves, reason == CloseReason.END)
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
        if flow.skip_armed:
            flow.want_skip()  # after the batch, the scanner forgets it (passive.capture.skipping)
        if handler is not None and flow.state == Flow.ACTIVE:
            self.counters.flows_one_sided += halves is not None and one_sided(halves)
            self.counters.flows_midstream += flow.partial
            flow.handler = None
            handler.on_close(flow, reason)
        flow._halves = None


def sweep_interval(idle_timeout: float) -> float:
    """Seconds of capture time between two sweeps for idle flows."""
    return max(1.0, min(idle_timeout / 4, 30.0))
