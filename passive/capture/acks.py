"""Segments a synchronized receiver discards for what they acknowledge, which a sender plants as decoys.

Past the handshake a receiver reads a segment only when it acknowledges what the receiver sent (RFC 9293 section
3.10.7.4, the "fifth, check the ACK field" step; Linux's ``tcp_rcv_established`` and ``tcp_ack``):

* a segment without the ACK flag (neither a SYN nor a RST) is discarded: dropped here at once (``ack_drops``);
* a segment acknowledging bytes the receiver never sent (past its next sequence number, its FIN counted) is
  discarded too. A capture that lost some of the receiver's segments shows a real one so, its acknowledgement past
  what the capture holds: so such a segment is held as one with a wrong checksum is
  (:mod:`passive.capture.doubtful`) until the receiver acknowledges its end, then read where no other segment
  brought its bytes, and dropped where one did (a decoy) or when never acknowledged (``ack_drops``); at the
  capture's end, what is still held is read where nothing else brought its bytes (the capture ended, or lost the
  acknowledgement);
* a segment acknowledging bytes older than what its sender acknowledged already, by more than any window it could
  give (:data:`MAX_WINDOW` scaled) or than all of the receiver's bytes acknowledged so far, is discarded: dropped at
  once, where both SYNs are in the capture (the window scale known, the acknowledgements followed from the start:
  :func:`too_old`).

These hold for data and FINs (a FIN so planted would end what the server goes on with; one acknowledging unsent
bytes is held like data, and ends its direction once acknowledged: a capture merged from two taps shows a FIN before
the peer's bytes it acknowledges); a bare ACK is read as it comes (one past what the capture holds is the usual sign
of a capture that lost packets, and its acknowledgement only closes holes). Under the ``first`` policy every
segment is read. Not judged: a direction whose receiver's bytes the scanner drops unread
(:mod:`passive.capture.skipping`: their end is not known here); an acknowledgement older than the largest window its
sender gave but not than the largest it could give, which Linux discards (a sender can plant one so).
"""

from __future__ import annotations

from passive.capture.counters import CaptureCounters
from passive.capture.doubtful import ACK_UNSENT
from passive.capture.flow import Flow
from passive.capture.linklayer import ACK, FIN, RST, SYN, Segment
from passive.capture.stream import SEQ_HALF, SEQ_MASK, HalfStream

MAX_WINDOW = 65_535
"""The largest window field. Linux discards an acknowledgement older than what it acknowledged already by more than
the largest window its sender gave (RFC 5961 section 5.2); here, by more than the largest it could give, this scaled
by its window scale (so nothing Linux takes is dropped). Without it an acknowledgement half the sequence space away
would pass for an old one."""


def peer_end(other: HalfStream) -> int:
    """The sequence number just past the highest byte of the direction ``other`` the capture shows (delivered,
    buffered, held or lost), its FIN counted."""
    high = other.high_rel()
    if other.held_ends:  # held, not read yet: sent all the same (a held FIN counted)
        high = max(high, other.held_ends[-1][0])
    end = (other.next_seq + high - other.next_rel) & SEQ_MASK
    return (end + 1) & SEQ_MASK if other.fin_rel is not None else end


def acknowledges_unsent(other: HalfStream, ack: int) -> bool:
    """Whether ``ack``, sent to the direction ``other`` is, acknowledges bytes it never sent: past :func:`peer_end`."""
    return other.started and 0 < (ack - peer_end(other)) & SEQ_MASK < SEQ_HALF


def too_old(other: HalfStream, ack: int) -> bool:
    """Whether ``ack`` is older than what its sender acknowledged already by more than any window it could give, or
    than all of the receiver's bytes it acknowledged (Linux's ``tcp_ack``: ``min(max_window, bytes_acked)``). Only
    where both SYNs were seen (the window scale known, the acknowledgements followed from the start); the base is the
    highest acknowledgement, unless it is past what the capture shows of ``other`` (a receiver discards such an
    acknowledgement, so a sender could otherwise move the base where it likes), then that end."""
    if not other.win_known or other.syn_seq is None:
        return False
    end = peer_end(other)
    high = other.acked_high
    base = high if (end - high) & SEQ_MASK < SEQ_HALF else end
    sent = max(0, other.rel(base)) + other.active  # what the receiver saw acknowledged (bytes_acked: its SYN too)
    return min(MAX_WINDOW << other.peer_shift, sent) < (base - ack) & SEQ_MASK < SEQ_HALF


class AckChecks:
    """The reassembler's handling of segments whose ACK field the receiver refuses (a mixin of
    :class:`~passive.capture.reassembly.Reassembler`)."""

    counters: CaptureCounters

    def _ack_refused(self, flow: Flow, direction: int, segment: Segment, frame: int, ts: float) -> bool:
        """A data segment or FIN (``Reassembler.process`` asks of no other) without the ACK flag, dropped, or
        acknowledging unsent bytes, held: True when done with here."""
        flags = segment[6]
        if flags & (SYN | RST):
            return False
        if not flags & ACK:
            self.counters.ack_drops += 1
            return True
        halves = flow._halves
        assert halves is not None
        other = halves[1 - direction]
        ack = segment[5]
        span = (other.next_seq - other.acked) & SEQ_MASK  # past SEQ_HALF: an acknowledgement past what was delivered
        if not other.started or (span < SEQ_HALF and (ack - other.acked) & SEQ_MASK <= span):
            return False  # the usual case, first: between what it acknowledged before and what the capture delivered
        if too_old(other, ack):
            self.counters.ack_drops += 1  # before what it acknowledged already, by more than any window it could give
            return True
        if (flow.skip_armed and flow.skip_rules[1 - direction]) or not acknowledges_unsent(other, ack):
            return False  # (its receiver's bytes go unread below Python: where they end is not known here)
        if len(segment[7]) != segment[8]:
            self.counters.ack_drops += 1  # not captured whole: nothing to hold
            return True
        held = (segment[4], segment[7], frame, ts, ACK_UNSENT, bool(flags & FIN))
        self._hold_segment(halves[direction], held)
        return True

    def _unsent(self, other: HalfStream, ack: int) -> bool:
        """Whether ``ack`` acknowledges bytes the direction ``other`` never sent (:func:`acknowledges_unsent`)."""
        return acknowledges_unsent(other, ack)

    def _hold_segment(self, half: HalfStream, item: tuple) -> None:
        raise NotImplementedError  # passive.capture.doubtful
