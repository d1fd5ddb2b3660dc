"""One direction's bytes from segments to the handler: trimming, buffering under the policy, gaps, resync.

:class:`Delivery` is the part of :class:`~passive.capture.reassembly.Reassembler` that works on one
:class:`~passive.capture.stream.HalfStream` at a time: where a segment's bytes go (delivered at once, trimmed
against delivered bytes, buffered out of order with overlaps resolved by the policy), when buffered bytes become
deliverable, and when a hole becomes a gap.
"""

from __future__ import annotations

from collections.abc import Callable

from passive.capture.counters import CaptureCounters
from passive.capture.flow import Chunk, Direction, Flow, new_chunk
from passive.capture.policy import ReassemblyPolicy
from passive.capture.stream import SEQ_MASK, HalfStream

TAIL_KEEP = 2048  # bytes of the last delivered piece kept for overlap conflict checks
DIRECTIONS = (Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT)


class Delivery:
    """Per-direction delivery, with the caps on buffered bytes (see the reassembler for the whole policy)."""

    counters: CaptureCounters
    policy: ReassemblyPolicy
    max_buffer: int
    max_buffer_segments: int
    max_total_buffer: int
    resync_lines: bool
    line_start: Callable[[bytes], bool] | None
    _pending_total: int

    def _classify(self, flow: Flow, direction: int, chunk: Chunk) -> None:
        raise NotImplementedError  # the reassembler's

    def _classify_gap(self, flow: Flow, event: tuple) -> None:
        raise NotImplementedError  # the reassembler's

    def _add(
        self, flow: Flow, direction: int, half: HalfStream, rel: int, data: bytes, wire_len: int, frame: int,
        ts: float, policy: ReassemblyPolicy | None = None,
    ) -> None:  # fmt: skip
        """Where ``data`` at stream offset ``rel`` goes; ``policy`` (the run's when None) decides overlaps with
        buffered bytes."""
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
        added, overlapped, new_won, old_won = half.insert(rel, data, frame, ts, policy or self.policy)
        self._pending_total += added
        if overlapped:
            counters.overlaps += 1
            counters.overlap_conflicts += new_won or old_won
            counters.overlaps_new_won += new_won
            counters.overlaps_old_won += old_won
        self._drain(flow, direction, half)
        while half.pending and (
            half.pending_bytes > self.max_buffer
            or len(half.pending) > self.max_buffer_segments
            or self._pending_total > self.max_total_buffer
        ):
            counters.buffer_cap_hits += 1
            self._fill_hole(flow, direction, half)

    def _drain(self, flow: Flow, direction: int, half: HalfStream) -> None:
        pending = half.pending
        while pending and pending[0][0] <= half.next_rel:
            start, data, frame, ts, _origin = half.pop_piece()
            self._pending_total -= len(data)
            if start < half.next_rel:  # bytes the in-order data (or a piece before) already delivered
                data = data[half.next_rel - start :]
            if data:
                self._deliver(flow, direction, half, data, frame, ts)

    def _fill_hole(self, flow: Flow, direction: int, half: HalfStream) -> None:
        """Give up on the hole before the first buffered piece: report it as a gap and drain."""
        if not half.pending:
            return
        start, _data, frame, ts, _origin = half.pending[0]
        if start > half.next_rel:
            self._gap(flow, direction, half, start, frame, ts)
        self._drain(flow, direction, half)

    def _drain_all(self, flow: Flow, direction: int, half: HalfStream) -> None:
        while half.pending:
            self._fill_hole(flow, direction, half)
        if half.fin_rel is not None and half.next_rel < half.fin_rel:
            self._gap(flow, direction, half, half.fin_rel, flow.last_frame, flow.last_ts)

    def _gap(self, flow: Flow, direction: int, half: HalfStream, upto: int, frame: int, ts: float) -> None:
        missing = upto - half.next_rel
        half.next_seq = (half.next_seq + missing) & SEQ_MASK
        if half.urgent is not None and half.urgent < upto:
            half.urgent = None  # lost with the bytes: the receiver read it (or not) where the capture cannot show
        half.next_rel = upto
        self.counters.gaps += 1
        self.counters.gap_bytes += missing
        if not flow.gapped:
            flow.gapped = True
            self.counters.flows_with_gaps += 1
        # What follows lost bytes may begin anywhere in a line, and goes on as it is: the handler hears of the gap
        # first, and its line reading skips the cut line itself, once (dissectors.linebuffer.LineBuffer.resync),
        # knowing what the bytes are (a message body, a literal, ciphertext). Skipping here too lost a whole line
        # more, the first the handler would have read. A mid-stream start not delivered yet is skipped by it too.
        half.resync = half.pickup = False
        if flow.state == Flow.ACTIVE and flow.handler is not None:
            flow.handler.on_gap(flow, DIRECTIONS[direction], missing, frame, ts)
        elif flow.state == Flow.CLASSIFYING and flow._events is not None:
            self._classify_gap(flow, ("gap", direction, missing, frame, ts))

    def _deliver(self, flow: Flow, direction: int, half: HalfStream, data: bytes, frame: int, ts: float) -> None:
        offset = half.next_rel
        size = len(data)
        half.next_rel = offset + size
        half.next_seq = (half.next_seq + size) & SEQ_MASK
        half.tail = data if size <= TAIL_KEEP else data[-TAIL_KEEP:]
        half.tail_rel = offset + size - len(half.tail)
        if half.resync:
            newline = data.find(b"\n")
            skip = size if newline < 0 else newline + 1
            if half.pickup and newline > 0 and self.line_start is not None and self.line_start(data[:newline]):
                skip = 0  # a pickup's first segment begins with a line of the protocol: the sender's write began it
            half.pickup = False
            self.counters.resync_skipped_bytes += skip
            if newline < 0:
                return
            half.resync = False
            data = data[skip:]
            offset += skip
            if not data:
                return
        if half.urgent is not None and half.urgent < offset + len(data):  # (one a gap or resync passed: gone)
            data = self._urgent_out(half, data, offset)  # the application does not read it in line
            if not data:
                return
        self.counters.bytes_delivered += len(data)
        state = flow.state
        if state == Flow.ACTIVE:
            chunk = new_chunk(Chunk, (data, frame, ts, offset))
            flow.handler.on_data(flow, DIRECTIONS[direction], chunk)  # type: ignore[union-attr]
        elif state == Flow.CLASSIFYING:
            self._classify(flow, direction, new_chunk(Chunk, (data, frame, ts, offset)))

    def _urgent_out(self, half: HalfStream, data: bytes, offset: int) -> bytes:
        """``data`` (at stream ``offset``) without ``half``'s urgent byte, which it holds (capture.tcpoptions)."""
        cut = half.urgent - offset  # type: ignore[operator]
        half.urgent = None
        if cut < 0:
            return data
        self.counters.urgent_bytes += 1
        return data[:cut] + data[cut + 1 :]
