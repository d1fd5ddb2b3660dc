"""Segments with a wrong checksum, held until the receiver's acknowledgement tells whether it took bytes there.

A receiver drops a segment whose checksum is wrong (:mod:`passive.capture.checksums`). A sender plants a decoy that
way (an insertion) and then sends the real bytes at the same place, which the receiver reads and acknowledges. A
capture edited without fixing checksums (sanitised, a test file made by hand) shows the only copy of some bytes with
a wrong checksum, bytes its receiver got in their first form and acknowledged. Both are told apart by waiting:

* a data segment with a wrong checksum, in a direction the capture shows right checksums in (``HalfStream.checked``)
  and no larger than one segment on the wire (``MAX_SINGLE_SEGMENT``; a larger one is a capturing host's merge and
  is read as it comes), is **held** (``HalfStream.doubtful``), read neither in order nor buffered;
* once the receiver acknowledges its end, it is read where no right segment brought those bytes before: bytes
  delivered or buffered stay (it never overrides them, whatever the policy), and a hole it fills is filled. Held
  segments whose bytes were all delivered by then were decoys: they are dropped (``checksum_drops``);
* at the flow's end (a close, an idle timeout, eviction), held segments never acknowledged are dropped and counted.

A SYN, RST or FIN, or a bare ACK, with a wrong checksum is dropped at once (a reset or an end the receiver never
saw). A checksum as offload leaves it (``INFO_CSUM_LEFT``) is doubted alike, being as easy to write: the bytes of a
capturing host's merge of received segments (GRO), which carries one, are read once acknowledged, but a FIN at its
end is not (the flow then ends by its idle timeout, or the capture's end). At most :data:`MAX_DOUBTFUL` segments
are held per direction; past it the oldest is dropped, so a flood of them costs no more than that many segments of
memory. ``--ignore-checksums`` (``check_checksums`` False) and the
``first`` policy read every segment as it comes.
"""

from __future__ import annotations

from passive.capture.checksums import INFO_CSUM_BAD, MAX_SINGLE_SEGMENT
from passive.capture.counters import CaptureCounters
from passive.capture.flow import Flow
from passive.capture.linklayer import FIN, RST, SYN, Segment
from passive.capture.policy import POLICIES, ReassemblyPolicy
from passive.capture.stream import HalfStream

MAX_DOUBTFUL = 16
"""Segments with a wrong checksum (or acknowledging unsent bytes: passive.capture.acks) held per direction awaiting
the receiver's acknowledgement: a window's worth of small segments (16 of at most 1460 bytes: 23 KiB a direction at
most; the others are held whole, 16 of at most 64 KiB); past it the oldest is dropped."""
MAX_HELD_BYTES = 8 << 20
"""Bytes held over all flows (8 MiB): :data:`MAX_DOUBTFUL` per direction times the flow table's 10 000 flows could
hold gigabytes; a capture holds a few segments at a time (the receiver's next acknowledgement settles them), so past
this a further segment is dropped, as one never acknowledged is."""
ACK_UNSENT = 1
"""A held item's kind (its fifth field, when it has one): held for acknowledging bytes not sent
(:mod:`passive.capture.acks`), not for its checksum."""
KEEP_BUFFERED = POLICIES["first"]
"""How held bytes go in where bytes are already buffered: they never replace them."""


class Doubts:
    """The reassembler's handling of segments with a wrong checksum (a mixin of
    :class:`~passive.capture.reassembly.Reassembler`)."""

    counters: CaptureCounters
    check_checksums: bool
    _held_bytes = 0  # bytes of the segments held, over all flows (MAX_HELD_BYTES)

    def _hold_segment(self, half: HalfStream, item: tuple) -> None:
        """Hold ``item`` (sequence number, data, frame, time[, kind]) in ``half`` until its receiver acknowledges it,
        within :data:`MAX_DOUBTFUL` and :data:`MAX_HELD_BYTES`."""
        size = len(item[1])
        if self._held_bytes + size > MAX_HELD_BYTES:
            self._drop_held(item)
            return
        held = half.doubtful
        if held is None:
            held = half.doubtful = []
        elif len(held) >= MAX_DOUBTFUL:
            self._unhold(held.pop(0), dropped=True)
        held.append(item)
        self._held_bytes += size

    def _unhold(self, item: tuple, dropped: bool) -> None:
        """``item`` is held no more: read, or ``dropped`` (counted)."""
        self._held_bytes -= len(item[1])
        if dropped:
            self._drop_held(item)

    def _drop_held(self, item: tuple) -> None:
        """Count a held segment dropped: one with a wrong checksum, or one acknowledging unsent bytes."""
        if len(item) > 4 and item[4] == ACK_UNSENT:
            self.counters.ack_drops += 1
        else:
            self.counters.checksum_drops += 1

    def _add(
        self, flow: Flow, direction: int, half: HalfStream, rel: int, data: bytes, wire_len: int, frame: int,
        ts: float, policy: ReassemblyPolicy | None = None,
    ) -> None:  # fmt: skip
        raise NotImplementedError  # the reassembler's (passive.capture.delivery)

    def _doubted(self, entry: tuple[Flow, int], segment: Segment, frame: int, ts: float) -> bool:
        """A segment with a wrong checksum: True when it is held or dropped here, False when it is read as it comes
        (its direction never showed a right checksum, or it is larger than one segment on the wire)."""
        halves = entry[0]._halves
        if halves is None or not self.check_checksums:
            return False
        half = halves[entry[1]]
        size = segment[8]
        if not half.checked or size > MAX_SINGLE_SEGMENT:
            return False
        flags = segment[6]
        ended = flags & FIN and segment[9] & INFO_CSUM_BAD  # a merge (GRO) may end with a FIN: its bytes are held
        if not size or flags & (SYN | RST) or ended or len(segment[7]) != size:
            self.counters.checksum_drops += 1  # a reset, an end or an acknowledgement the receiver never saw
            return True
        self._hold_segment(half, (segment[4], segment[7], frame, ts))
        return True

    def _acknowledged(self, flow: Flow, direction: int, half: HalfStream, ack: int | None = None) -> None:
        """The receiver acknowledged up to ``ack`` (``half.acked`` when None): the held segments it covers are read
        where no right segment brought their bytes, or dropped as decoys when every byte of theirs was delivered."""
        held = half.doubtful
        assert held is not None
        if ack is not None:
            half.acked = ack
        acked = half.rel(half.acked)
        kept: list[tuple] = []
        half.doubtful = None  # being settled here: a flow ended meanwhile finds nothing of it held
        for index, item in enumerate(held):
            if flow._halves is None:  # what was read named the flow no mail: nothing more is read
                for rest in kept + held[index:]:
                    self._unhold(rest, dropped=False)
                return
            seq, data, frame, ts = item[:4]
            rel = half.rel(seq)
            end = rel + len(data)
            if end > acked:
                kept.append(item)
                continue
            self._unhold(item, dropped=end <= half.next_rel)  # its bytes came, right, in another segment: a decoy
            if end > half.next_rel:
                self._add(flow, direction, half, rel, data, len(data), frame, ts, KEEP_BUFFERED)
        half.doubtful = kept or None
        if not kept:
            flow.want_skip()  # settled: its packets may be dropped unread again (passive.capture.skipping)

    def _forget_doubts(self, halves: tuple[HalfStream, HalfStream]) -> None:
        """The flow ends: what is held was never acknowledged, and is dropped."""
        for half in halves:
            for item in half.doubtful or ():
                self._unhold(item, dropped=True)
            half.doubtful = None
