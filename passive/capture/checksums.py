"""Whether a captured TCP segment's checksums are right, as its receiver will find them (RFC 1071 sums; the TCP
checksum over a pseudo-header, RFC 9293 section 3.1 and RFC 8200 section 8.1; IPv4's header checksum, RFC 791).

A receiver drops a segment whose checksum is wrong, without a word. A passive analyzer that reads it anyway can be
shown bytes the server never read: a sender makes a segment wrong on purpose (an insertion, Ptacek and Newsham 1998)
to plant a decoy command, reply or RST, then sends the real one at the same sequence numbers. So the reassembler
holds such a segment until its receiver's acknowledgement says whether it took bytes there
(:mod:`passive.capture.doubtful`), but only where the capture shows checksums at all: a capture made on a sending
host shows its outgoing segments before the network card fills their checksum in (checksum offload), and a host that
merges or splits segments in its card or driver (GRO, LRO, TSO) shows packets whose checksum is the first segment's
or none. Those are told apart here:

* ``INFO_CSUM_VALID``: the TCP checksum is right (and an IPv4 header's, unless zero: left to the card);
* ``INFO_CSUM_BAD``: one is wrong, and the TCP checksum is none of what offload leaves: zero, or the pseudo-header's
  sum alone (Linux, Windows NDIS and the BSDs write it there for the card to finish), with the segment's length or,
  for segmentation offload, without it;
* ``INFO_CSUM_LEFT``: not right, but as a capturing host leaves them: the TCP checksum is one of those, or the IPv4
  header's is zero and wrong, or the IPv4 total length is zero (a sending host's segmentation offload), where every
  checksum is left to the card. Linux's GRO writes the pseudo-header's sum into the packets it merges, too. A
  receiver still drops such a segment when it came so on the wire, and a sender can write one as easily as any
  wrong checksum: it is doubted as a wrong one is where the capture shows right checksums in its direction;
* neither: not captured whole (a snapshot length, an IPv4 first fragment).

The IPv4 header of a tunnel packet around the segment (GRE, VXLAN, Geneve, IP in IP, MPLS in IP) counts as the
segment's own: the tunnel's end drops the packet when its checksum is wrong (``INFO_OUTER_WRONG`` makes the segment
``INFO_CSUM_BAD``), and a zero one is left (``INFO_OUTER_LEFT`` makes a right segment ``INFO_CSUM_LEFT``). A UDP
tunnel's checksum (VXLAN, Geneve: usually none) and GRE's optional one are not judged.

Sums are taken modulo 0xFFFF: a number written in base 2**16 is congruent to the sum of its digits, so
``int.from_bytes(data, "big") % 0xFFFF`` is the folded one's complement sum of ``data``'s 16-bit words (0 standing
for both zeros). ``passive/capture/_scan.c`` (``checksum_bits``) is the compiled twin, computed only for the segments
it admits; both mark the same segments (``tests/test_checksums.py``).
"""

from __future__ import annotations

INFO_CSUM_VALID = 1 << 10
"""Segment.info bit: the segment's checksums are right."""
INFO_CSUM_BAD = 1 << 11
"""Segment.info bit: a checksum is wrong, and not as a sending host's offload leaves it."""
INFO_CSUM_LEFT = 1 << 12
"""Segment.info bit: the checksums are not right, as a capturing host's offload leaves them (or as a sender fakes
that)."""
INFO_CSUM_WRONG = INFO_CSUM_BAD | INFO_CSUM_LEFT
"""Segment.info bits of a segment whose checksums are not right."""
INFO_OUTER_WRONG = 1 << 13
"""Segment.info bit: the IPv4 header of a tunnel packet the segment travels in has a wrong checksum (the tunnel's end
drops it before the segment is decapsulated): the segment is one with a wrong checksum."""
INFO_OUTER_LEFT = 1 << 14
"""Segment.info bit: that header's checksum is zero and wrong (as a capturing host's card leaves it)."""
TCP_PROTOCOL = 6


def checksum_bits(data: bytes, ip_at: int, tcp_at: int, end: int, n: int, src: bytes, dst: bytes) -> int:
    """The checksum bits of the TCP segment ``data[tcp_at:end]`` whose IP header starts at ``ip_at`` (IPv4) or is an
    IPv6 one (``ip_at`` -1), from ``src`` to ``dst``; ``n``: the bytes captured. Not for an IPv4 first fragment
    (the segment is cut: its caller leaves it unjudged)."""
    if end > n or tcp_at + 18 > end:
        return 0
    if ip_at >= 0 and not data[ip_at + 2] | data[ip_at + 3]:  # total length 0: the sender's segmentation offload
        return INFO_CSUM_LEFT
    ip_bad = ip_left = False
    if ip_at >= 0:
        ihl = (data[ip_at] & 0x0F) * 4
        ip_wrong = int.from_bytes(data[ip_at : ip_at + ihl], "big") % 0xFFFF != 0
        ip_left = ip_wrong and not data[ip_at + 10] | data[ip_at + 11]  # zero: left to the card
        ip_bad = ip_wrong and not ip_left
    length = end - tcp_at
    pseudo = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + TCP_PROTOCOL
    segment = int.from_bytes(data[tcp_at:end], "big")
    if length & 1:  # the last byte is the high half of a word padded with zero
        segment <<= 8
    if (pseudo + length + segment) % 0xFFFF == 0:
        return INFO_CSUM_BAD if ip_bad else INFO_CSUM_LEFT if ip_left else INFO_CSUM_VALID
    field = data[tcp_at + 16] << 8 | data[tcp_at + 17]
    left = field == 0 or field % 0xFFFF in ((pseudo + length) % 0xFFFF, pseudo % 0xFFFF)
    return INFO_CSUM_BAD if ip_bad or not left else INFO_CSUM_LEFT


def outer_header(data: bytes, at: int, ihl: int) -> int:
    """INFO_OUTER_WRONG, INFO_OUTER_LEFT or 0 for the IPv4 header of a tunnel packet at ``at``."""
    if int.from_bytes(data[at : at + ihl], "big") % 0xFFFF == 0:
        return 0
    return INFO_OUTER_WRONG if data[at + 10] | data[at + 11] else INFO_OUTER_LEFT


def with_outer(bits: int, info: int) -> int:
    """A segment's checksum bits once the tunnel headers around it (``info``'s INFO_OUTER_*) are counted: one wrong
    makes the segment wrong, one zero makes a right one left."""
    if not bits or not info & (INFO_OUTER_WRONG | INFO_OUTER_LEFT):
        return bits
    if info & INFO_OUTER_WRONG:
        return INFO_CSUM_BAD
    return INFO_CSUM_LEFT if bits == INFO_CSUM_VALID else bits


MAX_SINGLE_SEGMENT = 1460
"""Bytes of TCP payload in one segment on a path of 1500-byte Ethernet frames (IPv4 and TCP headers without
options). A segment with a wrong checksum carrying more is taken for a capturing host's merge of several received
(GRO, LRO) or its send not yet split (TSO), which keep the first segment's checksum or none, and is read: refusing
it would lose bytes its receiver did get. A decoy larger than this (on a path of jumbo frames) is read too."""
