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
end is not (the flow then ends by its idle timeout, or the capture's end). What is held costs at most
:data:`MAX_HELD_DIRECTION` a direction (past it the oldest is dropped) and :data:`MAX_HELD_BYTES` in all (past it a
further segment is dropped), so a flood of them costs no more. ``--ignore-checksums`` (``check_checksums`` False)
and the ``first`` policy read every segment as it comes.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from passive.capture.checksums import INFO_CSUM_BAD, MAX_SINGLE_SEGMENT
from passive.capture.counters import CaptureCounters
from passive.capture.flow import Flow
from passive.capture.linklayer import FIN, RST, SYN, Segment
from passive.capture.options import MAX_BUFFER
from passive.capture.policy import POLICIES, ReassemblyPolicy
from passive.capture.stream import HalfStream

HELD_SEGMENT_COST = 384
"""What holding one segment costs beside its bytes: a one-byte segment held measured 298 bytes of objects in CPython
3.11 (its item, its bytes object, frame number and time, its end and number, its places in ``HalfStream.doubtful``
and ``HalfStream.held_ends``); 384 rounds it up, so the bounds count no less than is held."""
MAX_HELD_DIRECTION = MAX_BUFFER
"""What the segments held in one direction may cost (their bytes, and :data:`HELD_SEGMENT_COST` each): as much as its
out-of-order bytes (256 KiB). A receiver's acknowledgement settles what it covers within a round trip; a capture
that lost one of the receiver's segments holds the sender's next ones until it does (a window's worth, an upload's
burst); past it the oldest is dropped, as one never acknowledged is (read, it would let a sender push a decoy through
by volume)."""
MAX_HELD_BYTES = 8 << 20
"""What segments held over all flows may cost (8 MiB): :data:`MAX_HELD_DIRECTION` times the flow table's 10 000 flows
would be gigabytes; past it a further segment is dropped."""
WRONG_CHECKSUM, ACK_UNSENT = 0, 1
"""A held item's kind (its fifth field): held for its checksum, or for acknowledging bytes not sent
(:mod:`passive.capture.acks`); its sixth says whether it carried a FIN (only the latter's may), its seventh where it
ends in its direction's stream (a FIN counted), placed when it is held (or when its direction starts: it came
first), its eighth its number (``HalfStream.doubtful`` is keyed by it, oldest first). ``HalfStream.held_ends`` keeps
(end, number) of each, sorted: those an acknowledgement settles are found there, so that no packet costs a pass over
all a direction holds (hundreds of one-byte segments, each pass 10 to 70 times a plain packet's time)."""
KEEP_BUFFERED = POLICIES["first"]
"""How held bytes go in where bytes are already buffered: they never replace them."""


def _checksum_wrong(item: tuple) -> bool:
    return item[4] == WRONG_CHECKSUM


class Doubts:
    """The reassembler's handling of segments with a wrong checksum, and its holding of segments until their receiver
    acknowledges them (theirs, and those of :mod:`passive.capture.acks`; a mixin of
    :class:`~passive.capture.reassembly.Reassembler`)."""

    counters: CaptureCounters
    check_checksums: bool
    _held_bytes = 0  # what the segments held cost, over all flows (MAX_HELD_BYTES)
    _held_numbers = 0  # segments held so far: the next one's number

    def _hold_segment(self, half: HalfStream, item: tuple) -> None:
        """Hold ``item`` (sequence number, data, frame, time, kind, FIN) in ``half`` until its receiver acknowledges it,
        within :data:`MAX_HELD_DIRECTION` and :data:`MAX_HELD_BYTES`; its end and number are added to it."""
        cost = HELD_SEGMENT_COST + len(item[1])
        if self._held_bytes + cost > MAX_HELD_BYTES or cost > MAX_HELD_DIRECTION:
            self._drop_held(item)
            return
        held = half.doubtful
        if held is None:
            held = half.doubtful = {}
        while held and half.held_cost + cost > MAX_HELD_DIRECTION:
            self._unhold(half, held.pop(next(iter(held))), dropped=True)  # the oldest
        end = half.rel(item[0]) + len(item[1]) + item[5]
        number = self._held_numbers = self._held_numbers + 1
        held[number] = (*item, end, number)
        insort(half.held_ends, (end, number))
        half.held_cost += cost
        self._held_bytes += cost

    def _unhold(self, half: HalfStream, item: tuple, dropped: bool) -> None:
        """``item`` is held in ``half`` no more: read, or ``dropped`` (counted)."""
        cost = HELD_SEGMENT_COST + len(item[1])
        half.held_cost -= cost
        self._held_bytes -= cost
        ends = half.held_ends
        del ends[bisect_left(ends, (item[6], item[7]))]
        if dropped:
            self._drop_held(item)

    def _rebase_held(self, half: HalfStream) -> None:
        """``half`` started after it held segments (their sequence space anchored only now): their ends are placed
        anew."""
        if half.doubtful:
            ends = {n: half.rel(item[0]) + len(item[1]) + item[5] for n, item in half.doubtful.items()}
            half.doubtful = {n: (*item[:6], ends[n], n) for n, item in half.doubtful.items()}
            half.held_ends = sorted((end, n) for n, end in ends.items())

    def _drop_held(self, item: tuple) -> None:
        """Count a held segment dropped: one with a wrong checksum, or one acknowledging unsent bytes."""
        if item[4] == ACK_UNSENT:
            self.counters.ack_drops += 1
        else:
            self.counters.checksum_drops += 1

    def _note_fin(self, half: HalfStream, fin_rel: int) -> None:
        raise NotImplementedError  # the reassembler's

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
        self._hold_segment(half, (segment[4], segment[7], frame, ts, WRONG_CHECKSUM, False))
        return True

    def _acknowledged(self, flow: Flow, direction: int, half: HalfStream) -> None:
        """The receiver acknowledged up to ``half.acked``: the held segments it covers are read where no right segment
        brought their bytes, or dropped as decoys when every byte of theirs was delivered."""
        kept = half.doubtful
        assert kept is not None
        ends = half.held_ends
        count = bisect_left(ends, (half.rel(half.acked) + 1,))  # those ending by what is acknowledged
        if not count and flow._halves is not None:
            return
        half.doubtful = None  # being settled here: a flow ended meanwhile finds nothing of it held
        settled = [kept.pop(number) for number in sorted(number for _end, number in ends[:count])]  # oldest first
        settled.sort(key=_checksum_wrong)  # those with right checksums first: a receiver took one of them, if any
        for index, item in enumerate(settled):
            if flow._halves is None:  # what was read named the flow no mail: nothing more is read
                for rest in settled[index:]:
                    self._unhold(half, rest, dropped=False)
                break
            _seq, data, frame, ts, _kind, fin, stop, _n = item  # fin: a FIN held (passive.capture.acks), in stop
            end = stop - fin
            rel = end - len(data)
            decoy = end <= half.next_rel and not fin  # its bytes came, right, in another segment
            self._unhold(half, item, dropped=decoy)
            if end > half.next_rel:
                self._add(flow, direction, half, rel, data, len(data), frame, ts, KEEP_BUFFERED)
            if fin and flow._halves is not None:
                self._note_fin(half, end)  # the flow ends with the next segment's check (Reassembler.process)
        if flow._halves is None:  # what was read named the flow no mail
            for rest in kept.values():
                self._unhold(half, rest, dropped=False)
            return
        half.doubtful = kept or None
        if not kept:
            flow.want_skip()  # settled: its packets may be dropped unread again (passive.capture.skipping)

    def _forget_doubts(
        self, flow: Flow, halves: tuple[HalfStream, HalfStream], read_unsent: bool = False, counted: bool = True
    ) -> None:
        """The flow ends: what is held was never acknowledged, and is dropped (counted unless ``counted`` is False:
        the flow is named no mail); but with ``read_unsent`` (the capture ends) a segment held for acknowledging bytes
        not in the capture is read where nothing else brought its bytes: the capture most often lost the receiver's
        segments, or ends before its acknowledgement. What a flow named no mail meanwhile holds is given back."""
        for direction, half in enumerate(halves):
            held, half.doubtful = half.doubtful, None
            for item in (held or {}).values():
                alive = flow._halves is not None
                rel = item[6] - item[5] - len(item[1])
                read = alive and read_unsent and item[4] == ACK_UNSENT and rel + len(item[1]) > half.next_rel
                self._unhold(half, item, dropped=counted and alive and not read)
                if read:
                    self._add(flow, direction, half, rel, item[1], len(item[1]), item[2], item[3], KEEP_BUFFERED)
