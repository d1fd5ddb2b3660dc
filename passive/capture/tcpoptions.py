"""What a receiver refuses, or reads otherwise, for a segment's TCP options and urgent pointer.

A sender who plants a decoy beside the real bytes wants leakscope to read the decoy and the server the real ones.
Three more ways a Linux receiver (its defaults; checked on the real kernel by ``tests/test_receiver.py``) tells them
apart:

* **an old timestamp** (PAWS, RFC 7323 section 5; Linux's ``tcp_paws_discard``): once both SYNs carried the
  Timestamps option, a data segment, FIN or URG segment (not a RST) carrying one whose TSval (the last option's) is
  older than the latest the receiver kept (``ts_recent``) by more than 1 is discarded (``option_drops``).
  ``ts_recent`` starts at the SYN's TSval and moves to the TSval of a segment taken, a bare ACK too (with the ACK
  flag, acknowledging nothing unsent), that covers the receiver's acknowledgement (Linux's ``rcv_wup``, here the
  highest acknowledgement in the capture: ``HalfStream.acked_high``) when it is not older and the segment's own
  acknowledgement is not older than the highest its sender gave (``tcp_replace_ts_recent``, reached only past
  ``tcp_ack``'s ``old_ack``) or the segment takes Linux's fast path (:func:`fast_path`: it keeps the TSval first); a
  kept TSval of 0 judges nothing and is replaced by any. A segment without the option is taken. A bare ACK is not
  dropped for its timestamp (its acknowledgement is read; Linux lets some through);
* **a signature where none is expected, or a damaged option list**: Linux looks for an MD5 signature option (RFC
  2385) while 18 option bytes remain (``tcp_do_parse_auth_options``); an option there shorter than 2 bytes or running
  past the list, an MD5 option not 18 bytes long, or a second one, drops the segment; a signature where neither SYN
  carried one drops it too (the receiver holds no key: ``tcp_inbound_hash``). Where a SYN carried one, segments are
  read as they come (the signatures are not checked). A TCP-AO option (RFC 5925) is read through: a kernel built
  without TCP-AO (the receiver lab's) takes it, one built with it drops it;
* **urgent data** (RFC 9293 section 3.8.5; Linux's ``tcp_check_urg``, with ``tcp_stdurg`` 0): a segment with the
  URG flag that the receiver takes (its ACK field and timestamp accepted, not wholly before its latest
  acknowledgement, not past its window) names its urgent byte, the one before where its pointer points (the first
  of the segment for a pointer of 0). An application that does not ask for it in line (no ``SO_OOBINLINE``: no mail
  server does) never reads that byte among the others: it is taken out of what is delivered (``urgent_bytes``), and
  the stream's bytes after it move up, as the server reads them. A pointer to a byte delivered already, or not past
  the one announced before, is ignored; a later one replaces one not delivered yet (the receiver then reads that
  one in line). A sender may so show a monitor ``a@contoso.comm`` while the server reads ``a@contoso.com``.

Under the ``first`` policy every segment is read whole, as it comes. Not followed: a receiver's own settings
(``tcp_timestamps`` off, ``tcp_stdurg`` 1, a key for the peer); the timing of the server application's reads, which
decides which of two urgent bytes close together Linux takes out (here: the application reads at once); the URG
flag of a segment held for its checksum or acknowledgement (:mod:`passive.capture.doubtful`), read later in line.
"""

from __future__ import annotations

from passive.capture.counters import CaptureCounters
from passive.capture.flow import Flow
from passive.capture.linklayer import (
    ACK,
    FIN,
    OPT_ALIGNED_TS,
    OPT_BAD_SIGNATURE,
    OPT_SIGNED,
    OPT_TIMESTAMP,
    OPT_TSVAL_SHIFT,
    OPT_URGENT_SHIFT,
    PSH,
    RST,
    SYN,
    Segment,
)
from passive.capture.stream import SEQ_HALF, SEQ_MASK, HalfStream

PAWS_WINDOW = 1
"""How much older than ``ts_recent`` a TSval may be and still be taken: Linux's ``TCP_PAWS_WINDOW``."""


def paws_judged(half: HalfStream, other: HalfStream) -> bool:
    """Whether ``half``'s segments are judged by their timestamps: both SYNs carried one, and the kept one is not 0."""
    return bool(half.ts_recent) and other.ts_recent is not None


def too_old_timestamp(half: HalfStream, tsval: int) -> bool:
    """Whether ``tsval`` is older than what ``half``'s receiver kept by more than :data:`PAWS_WINDOW`."""
    return PAWS_WINDOW < (half.ts_recent - tsval) & SEQ_MASK < SEQ_HALF  # type: ignore[operator]


def keep_timestamp(half: HalfStream, seq: int, end: int, tsval: int) -> None:
    """A segment of ``half`` from ``seq`` to ``end`` carrying ``tsval`` was taken: its receiver keeps the TSval when
    the segment covers its latest acknowledgement and the TSval is not older than the one kept."""
    acked = half.acked_high
    if (seq - acked) & SEQ_MASK and (seq - acked) & SEQ_MASK < SEQ_HALF:
        return  # it starts past the acknowledgement
    if (end - acked) & SEQ_MASK >= SEQ_HALF or not newer_timestamp(half.ts_recent, tsval):  # type: ignore[arg-type]
        return  # it ends before the acknowledgement, or its TSval is older
    half.ts_recent = tsval


def newer_timestamp(kept: int, tsval: int) -> bool:
    """Whether ``tsval`` replaces ``kept``: not older, or anything where 0 is kept (Linux's ``tcp_paws_check``)."""
    return not kept or (tsval - kept) & SEQ_MASK < SEQ_HALF


def fast_path(half: HalfStream, other: HalfStream, segment: Segment) -> bool:
    """Whether Linux's header prediction takes the bare ACK of ``half`` and keeps its TSval before looking at its
    acknowledgement (``tcp_rcv_established``): its options just NOP, NOP, Timestamps, its flags ACK (and PSH), its
    window field the one Linux holds (``pred_window``), at the next byte expected with everything before
    acknowledged, nothing out of order, urgent or FIN held, its TSval not older (compared signed, a kept 0 included).
    A data segment may leave the fast path for memory the capture cannot show (``sk_forward_alloc``): none is taken
    to keep its TSval so."""
    options = segment[11]
    return bool(
        not segment[8]
        and options & OPT_ALIGNED_TS
        and segment[6] & ~PSH == ACK
        and segment[10] == other.pred_window
        and segment[4] == half.next_seq == half.acked_high
        and not half.pending
        and half.urgent is None
        and half.fin_rel is None
        and other.fin_rel is None
        and ((options >> OPT_TSVAL_SHIFT) - half.ts_recent) & SEQ_MASK < SEQ_HALF  # type: ignore[operator]
    )


def note_urgent(half: HalfStream, seq: int, urgent_pointer: int) -> None:
    """A segment of ``half`` taken with the URG flag: the urgent byte it names, unless delivered already or not past
    the one announced before (``tcp_check_urg``)."""
    rel = half.rel((seq + urgent_pointer - 1 if urgent_pointer else seq) & SEQ_MASK)
    if rel < half.next_rel or (half.urgent is not None and rel <= half.urgent):
        return
    half.urgent = rel


class OptionChecks:
    """The reassembler's checks of a data segment or FIN before it is taken (a mixin of
    :class:`~passive.capture.reassembly.Reassembler`): its options (here), then its ACK field
    (:mod:`passive.capture.acks`)."""

    counters: CaptureCounters

    def _refused(self, flow: Flow, direction: int, segment: Segment, frame: int, ts: float) -> bool:
        """A data segment, FIN or URG segment: True when dropped (or held) for its options or its ACK field; else its
        timestamp is kept."""
        options, flags = segment[11], segment[6]
        halves = flow._halves
        assert halves is not None
        half, other = halves[direction], halves[1 - direction]
        if options and not flags & (SYN | RST):
            if options & OPT_BAD_SIGNATURE or (options & OPT_SIGNED and not (half.signed or other.signed)):
                self.counters.option_drops += 1  # a damaged list, or signed where the receiver holds no key
                return True
            tsval = options >> OPT_TSVAL_SHIFT & SEQ_MASK
            if options & OPT_TIMESTAMP and paws_judged(half, other) and too_old_timestamp(half, tsval):
                self.counters.option_drops += 1  # PAWS
                return True
        if segment[8] or flags & FIN:
            if self._ack_refused(flow, direction, segment, frame, ts):
                return True
        elif not flags & (SYN | RST) and (not flags & ACK or self._unsent(other, segment[5])):
            return True  # a bare URG segment the receiver discards for its ACK field: nothing to hold
        if options & OPT_TIMESTAMP:
            self._timestamp(half, other, segment)
        return False

    def _timestamp(self, half: HalfStream, other: HalfStream, segment: Segment) -> None:
        """A segment of ``half`` taken, with a timestamp: kept where its receiver keeps it (:func:`keep_timestamp`).
        Not for one without the ACK flag or acknowledging bytes never sent (a bare one: discarded), nor for an
        acknowledgement older than the highest its sender gave (Linux's ``tcp_ack`` returns before, at ``old_ack``)
        unless the segment takes Linux's fast path (:func:`fast_path`), which keeps the TSval before looking at the
        acknowledgement. On every segment of a connection with timestamps: the usual ones leave first."""
        start = (segment[4] - half.acked_high) & SEQ_MASK
        if (start and start < SEQ_HALF) or half.ts_recent is None or other.ts_recent is None:
            return  # it starts past the receiver's latest acknowledgement (data in flight), or no timestamps
        flags, ack = segment[6], segment[5]
        if not flags & ACK or (
            not (ack - other.acked) & SEQ_MASK <= (other.next_seq - other.acked) & SEQ_MASK < SEQ_HALF
            and self._unsent(other, ack)
        ):
            return
        if (ack - other.acked_high) & SEQ_MASK >= SEQ_HALF and not fast_path(half, other, segment):
            return  # older than the highest acknowledgement its sender gave, off the fast path
        tsval = segment[11] >> OPT_TSVAL_SHIFT & SEQ_MASK
        if segment[8]:
            end = segment[4] + segment[8] + (1 if flags & FIN else 0)
            keep_timestamp(half, segment[4], end & SEQ_MASK, tsval)
        elif not (half.ts_recent and too_old_timestamp(half, tsval)):  # a bare ACK Linux discards keeps nothing
            keep_timestamp(half, segment[4], segment[4] + (1 if flags & FIN else 0), tsval)

    def _urgent(self, half: HalfStream, segment: Segment) -> None:
        """A segment taken with the URG flag (``Reassembler._segment``): its urgent byte noted, unless the segment lies
        wholly before the receiver's latest acknowledgement or past its window (Linux's ``tcp_sequence`` drops it)."""
        seq, size = segment[4], segment[8]
        if (seq + size - half.acked) & SEQ_MASK >= SEQ_HALF or (half.win_known and half.beyond_window(seq)):
            return
        note_urgent(half, seq, segment[11] >> OPT_URGENT_SHIFT & 0xFFFF)

    def _ack_refused(self, flow: Flow, direction: int, segment: Segment, frame: int, ts: float) -> bool:
        raise NotImplementedError  # passive.capture.acks

    def _unsent(self, other: HalfStream, ack: int) -> bool:
        raise NotImplementedError  # passive.capture.acks
