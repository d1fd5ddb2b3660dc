"""IP options and IPv6 extension headers a receiver refuses: its TCP never sees the segment inside.

A sender can put a decoy segment in a packet whose IP options or IPv6 extension headers make the receiver's IP layer
drop it, and send the real bytes plainly: a reader that decodes the decoy's TCP takes it in their place. The rules
here are those of a Linux receiver with its default settings (``net/ipv4/ip_options.c`` ``ip_options_compile`` and
``ip_rcv_options``; ``net/ipv6/exthdrs.c`` ``ip6_parse_tlv`` and ``ipv6_rthdr_rcv``; ``net/ipv6/ip6_input.c``),
checked on the real kernel by ``tests/test_receiver.py``. A packet so refused is counted as a decode error (Linux
counts most of them as header errors, ``InHdrErrors``), under every reassembly policy. They hold for every IP
header on the way in, a tunnel's too (its end drops the packet), and for each piece of a fragmented packet (Linux
checks a piece's options before joining it).

IPv4 options (RFC 791, RFC 7126): the list ends at End of Option List; a No Operation is one byte; any other option
needs its length byte, at least 2 and within the header. Refused: any source route (Loose, Strict: a host does not
accept source-routed packets, ``accept_source_route`` 0); a second Record Route or Timestamp; a Record Route shorter
than 3 bytes or whose pointer is under 4, or points into the option without room for an address; a Timestamp shorter
than 4 bytes, whose pointer is under 5, that points into the option without room for its entry, or that is full with
its overflow count at 15; a Router Alert shorter than 4 bytes; a CIPSO label (no labelling domain is configured on a
host). Other options are ignored, as Linux ignores them.

IPv6 extension headers (RFC 8200): Hop-by-Hop only right after the IPv6 header; its options and a Destination
Options header's are read as TLVs: Pad1 and PadN pad at most 7 bytes in a row and PadN's bytes are zero; an option
must fit in its header; at most :data:`MAX_TLV_OPTIONS` options that are not padding; an unknown option whose type's
two high bits are not 00 drops the packet (RFC 8200 section 4.2), a Router Alert must be 2 bytes long, a Jumbo
Payload is refused (no jumbograms here), a CALIPSO label is (no domain configured), an IOAM option not 4-aligned is.
A Routing header passes only with no segments left, and not of type 2 (Mobile IPv6), 3 (RPL) or 4 (segment routing:
both off by default). Headers Linux has no handler for (Mobility 135, HIP 139, Shim6 140, experiments 253 and 254)
drop the packet.

Not followed: a receiver's own settings (``accept_source_route``, ``seg6_enabled``, a CIPSO or CALIPSO domain,
IOAM) and build (a kernel without Mobile IPv6, such as the receiver lab's, takes a type 2 Routing header with no
segments left: distributions build it in, and drop it); IPsec's Authentication Header is read through, although a
receiver without a matching security association drops what it carries (a deployment that uses it would otherwise
show nothing).
"""

from __future__ import annotations

MAX_EXTENSION_HEADERS = 65535 // 8 + 1
"""Extension headers walked in an IPv6 packet at most: each is 8 bytes or more, so no packet holds more (Linux walks
them all, with no bound of its own); the walk's time goes with the packet's length."""
FRAGMENTED = frozenset({0, 43, 60, 51})  # HOP_BY_HOP, ROUTING, DESTINATION, AH (below)
"""Headers a Fragment header may name besides TCP and tunnels (Hop-by-Hop, Routing, Destination Options, AH): the
receiver joins the pieces, then reads these in the joined packet (passive.capture.defrag)."""
MAX_TLV_OPTIONS = 8
"""Options that are not padding in one Hop-by-Hop or Destination Options header: Linux's default
``max_hbh_opts_number`` and ``max_dst_opts_number``; a header with more drops its packet."""
MAX_PADDING = 7
"""Bytes of Pad1/PadN in a row: what aligns a header to 8 bytes (RFC 4942 section 2.1.9.5); more drops the packet."""

# IPv4 option types (RFC 791, RFC 1108, RFC 2113, the CIPSO draft)
_EOL, _NOP, _RR, _TS, _LSRR, _SSRR, _RA, _CIPSO = 0, 1, 7, 68, 131, 137, 148, 134
_TS_ADDR, _TS_PRESPEC = 1, 3  # Timestamp flags whose entries hold an address and a time

# IPv6 extension headers and Hop-by-Hop options (RFC 8200, RFC 2711, RFC 2675, RFC 5570, RFC 9486)
HOP_BY_HOP, ROUTING, DESTINATION, FRAGMENT, AH = 0, 43, 60, 44, 51
UNHANDLED = frozenset({135, 139, 140, 253, 254})
"""Extension headers a Linux receiver has no handler for: the packet is dropped (``ip6_protocol_deliver_rcu``)."""
_PAD1, _PADN, _ROUTER_ALERT, _JUMBO, _CALIPSO, _IOAM = 0, 1, 5, 0xC2, 7, 0x31
_ROUTING_REFUSED = frozenset({2, 3, 4})  # Mobile IPv6, RPL, segment routing


def ipv4_options_refused(data: bytes, at: int, ihl: int) -> bool:
    """Whether the options of the IPv4 header at ``at`` (``ihl`` bytes, within ``data``) make a receiver drop it."""
    pos, end = at + 20, at + ihl
    seen: set[int] = set()
    while pos < end:
        kind = data[pos]
        if kind == _EOL:
            return False
        if kind == _NOP:
            pos += 1
            continue
        if pos + 2 > end:
            return True
        length = data[pos + 1]
        if length < 2 or pos + length > end:
            return True
        if _option_refused(kind, data[pos : pos + length], seen):
            return True
        pos += length
    return False


def _option_refused(kind: int, option: bytes, seen: set[int]) -> bool:
    length = len(option)
    if kind in (_LSRR, _SSRR, _CIPSO):
        return True
    if kind == _RA:
        return length < 4
    if kind not in (_RR, _TS):
        return False
    if kind in seen:
        return True
    seen.add(kind)
    if kind == _RR:
        return length < 3 or option[2] < 4 or (option[2] <= length and option[2] + 3 > length)
    if length < 4 or option[2] < 5:
        return True
    pointer, flag = option[2], option[3] & 0x0F
    if pointer <= length:
        room = 7 if flag in (_TS_ADDR, _TS_PRESPEC) else 3
        return pointer + room > length
    return flag != _TS_PRESPEC and option[3] >> 4 == 15


def ipv6_header_refused(kind: int, data: bytes, at: int, limit: int, pos: int) -> bool:
    """Whether the extension header ``kind`` at ``pos`` (of the IPv6 packet whose header is at ``at``, its bytes up
    to ``limit``) makes a receiver drop the packet: Hop-by-Hop, Routing and Destination Options are judged, the
    headers in :data:`UNHANDLED` always refused; any other kind is the caller's."""
    if kind in UNHANDLED:
        return True
    if pos + 8 > limit:
        return True
    size = (data[pos + 1] + 1) * 8
    if pos + size > limit:
        return True
    if kind == ROUTING:
        return data[pos + 3] != 0 or data[pos + 2] in _ROUTING_REFUSED
    if kind == HOP_BY_HOP and pos != at + 40:
        return True
    return _tlvs_refused(data, at, pos + 2, pos + size, kind == HOP_BY_HOP)


def _tlvs_refused(data: bytes, at: int, pos: int, end: int, hop_by_hop: bool) -> bool:
    """The options of a Hop-by-Hop or Destination Options header, from ``pos`` to ``end`` (``ip6_parse_tlv``)."""
    padding = options = 0
    while pos < end:
        kind = data[pos]
        if kind == _PAD1:
            padding += 1
            if padding > MAX_PADDING:
                return True
            pos += 1
            continue
        if pos + 2 > end:
            return True
        size = data[pos + 1] + 2
        if pos + size > end:
            return True
        if kind == _PADN:
            padding += size
            if padding > MAX_PADDING or any(data[pos + 2 : pos + size]):
                return True
        else:
            options += 1
            if options > MAX_TLV_OPTIONS or _tlv_refused(kind, size, pos - at, hop_by_hop):
                return True
            padding = 0
        pos += size
    return False


def _tlv_refused(kind: int, size: int, offset: int, hop_by_hop: bool) -> bool:
    """One option that is not padding, ``size`` bytes long with its type and length, ``offset`` bytes into the
    IPv6 packet."""
    if hop_by_hop and kind == _ROUTER_ALERT:
        return size != 4
    if hop_by_hop and kind in (_JUMBO, _CALIPSO):
        return True
    if hop_by_hop and kind == _IOAM:
        return offset % 4 != 0
    return kind >> 6 != 0  # unknown: the two high bits say skip (00) or drop
