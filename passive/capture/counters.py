"""What the capture engine saw, counted: nothing is dropped without a number going up."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MAX_WARNINGS = 100


@dataclass
class CaptureCounters:
    """Counters of one capture run; :meth:`as_dict` is JSON-serialisable.

    ``packets_read`` counts every frame of a file (with ``exact_frames=False`` on the
    libpcap path, and on live captures, only the frames the BPF filter passed).
    ``packets_matched`` counts frames the port filter (BPF, or its pure-Python
    equivalent) passed; every matched frame then lands in exactly one of
    ``segments`` (reached TCP reassembly), ``ignored`` (not IP/TCP, not a wanted
    port, unsupported link), ``decode_errors`` or ``ip_fragments``.
    """

    packets_read: int = 0
    # Bytes of the capture files read so far, as stored (compressed bytes for a compressed file): where the readers
    # are, for a progress display; libpcap's position is its file's, a little ahead of the packet it hands over.
    bytes_read: int = 0
    packets_matched: int = 0
    segments: int = 0
    ignored: int = 0
    decode_errors: int = 0
    ip_fragments: int = 0
    truncated_packets: int = 0  # IP length says more payload than was captured (snaplen)
    flows: int = 0
    flows_partial: int = 0  # picked up without a SYN
    flows_closed: int = 0  # FIN from both sides, or RST
    flows_expired: int = 0  # idle timeout (capture time)
    flows_evicted: int = 0  # flow table full
    flows_flushed: int = 0  # still open at the end of the capture
    flows_not_mail: int = 0  # dropped by the port-independent classifier (or still undecided at close)
    flows_declined: int = 0  # handler factory returned None
    # Of flows_not_mail, those dropped while being classified to keep what all such flows hold within the bound
    # (passive.capture.classifying.MAX_CLASSIFY_HELD): the ones holding the most.
    classify_evictions: int = 0
    not_mail_packets: int = 0  # packets of flows declared not mail, dropped before reassembly (every-port mode)
    undecided_packets: int = 0  # packets of flows undecided past their head (scanner.FLOW_HEAD), dropped likewise
    head_extended_packets: int = 0  # admitted past a flow's head: a line in small pieces (scanner.HEAD_LINE_BYTES)
    stray_segments: int = 0  # no payload, no SYN, no known flow (late ACK/FIN/RST)
    bytes_delivered: int = 0  # bytes passed on in order, those skipped included
    segments_skipped: int = 0  # segments dropped unread by the scanner: bodies, literals, ciphertext, their ACKs
    bytes_skipped: int = 0  # ...their payload bytes (passive.capture.skipping)
    gaps: int = 0
    gap_bytes: int = 0
    flows_with_gaps: int = 0  # flows that lost bytes (a gap on either side), each counted once
    # Accepted (mail) flows whose bytes went one way while the other end sent no packet at all, not even an ACK: the
    # capture holds one direction only (asymmetric routing, a one-way span or tap); what the other side said,
    # credentials or an NTLM challenge among it, is not in the capture.
    flows_one_sided: int = 0
    # Accepted (mail) flows picked up mid-stream, no SYN of theirs in the capture (it began while they were open):
    # what they said before, a login among it, is not in the capture.
    flows_midstream: int = 0
    resync_skipped_bytes: int = 0  # bytes dropped up to the first line boundary of a mid-stream start
    retransmissions: int = 0  # segments whose data was all already seen
    overlaps: int = 0  # segments partly or wholly covering data already seen
    overlap_conflicts: int = 0  # ...where the bytes differ
    overlaps_new_won: int = 0  # segments whose differing bytes replaced buffered ones (the reassembly policy's call)
    overlaps_old_won: int = 0  # segments whose differing bytes lost to buffered ones (a segment may count in both)
    rsts_ignored: int = 0  # RSTs the receiver would ignore (not at its next expected sequence number)
    window_drops: int = 0  # segments starting at or beyond the right edge of the receiver's window: refused
    window_dropped_bytes: int = 0  # ...their payload bytes
    fins_ignored: int = 0  # FINs behind delivered data, or overtaken by data: the receiver never acts on them
    checksum_drops: int = 0  # segments with a wrong checksum dropped: decoys, never acknowledged (capture.doubtful)
    ack_drops: int = 0  # segments without the ACK flag, or acknowledging unsent bytes, dropped (capture.acks)
    option_drops: int = 0  # segments with an old timestamp (PAWS) or an unexpected signature (capture.tcpoptions)
    urgent_bytes: int = 0  # urgent bytes the receiving application does not read in line (capture.tcpoptions)
    out_of_order: int = 0  # segments buffered ahead of a hole
    buffer_cap_hits: int = 0  # out-of-order buffer full: hole declared a gap
    anomalies: int = 0  # capture file damage, frame numbering lost, other oddities
    oversized_records: int = 0  # records over the record cap (MAX_RECORD): a pcap stops there, pcapng packets are cut
    # Segments found inside each encapsulation (gre, erspan, vxlan, geneve, mpls, pppoe, ip-in-ip); a segment
    # inside two (VXLAN in GRE) counts for both.
    tunnelled: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str, *, anomaly: bool = True) -> None:
        """Record a one-line message (bounded list) and, by default, count an anomaly."""
        if anomaly:
            self.anomalies += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)
        elif len(self.warnings) == MAX_WARNINGS:
            self.warnings.append(SUPPRESSED)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SUPPRESSED = "further warnings suppressed"
"""The last of a run's warnings once :data:`MAX_WARNINGS` were recorded."""

SCHEDULE_DEPENDENT = ("segments_skipped", "bytes_skipped")
"""Counters that depend on where the scanner's batches end (a body is dropped from the batch after the one in which
the dissector allowed it), and so on how a capture is split between workers: what ``analyze`` writes leaves them
out, so that its output is the same with any ``--jobs``; ``watch`` shows them."""
