"""Encapsulations a span port or a capture point hands over, peeled to the packet inside.

Each function takes the frame and the offset where the encapsulation's header starts and returns what is inside:
``(INNER_ETHERNET | INNER_IPV4 | INNER_IPV6, offset)``, or None when the header is cut short, malformed or carries
something else. Every read is bounds-checked; nothing here raises on hostile input.

- GRE (RFC 2784/2890), with ERSPAN types I, II and III (Cisco; GRE protocol 0x88BE and 0x22EB), transparent Ethernet
  bridging (0x6558), IPv4, IPv6 and MPLS inside;
- VXLAN (RFC 7348, UDP 4789) and Geneve (RFC 8926, UDP 6081), Ethernet inside;
- MPLS label stacks (RFC 3032, ethertypes 0x8847/0x8848), IP or an Ethernet pseudowire (RFC 4448, with or without
  its control word) below the bottom label;
- PPPoE sessions (RFC 2516, ethertype 0x8864), IPv4 or IPv6 inside;
- IP in IP: IPv4 (protocol 4) and IPv6 (41) inside IPv4 or IPv6, which the IP decoder handles by recursing.
"""

from __future__ import annotations

INNER_ETHERNET = 1
INNER_IPV4 = 4
INNER_IPV6 = 6
INNER_MPLS = 7

ETHERTYPE_MPLS = frozenset({0x8847, 0x8848})
ETHERTYPE_PPPOE_SESSION = 0x8864
IP_PROTO_IPIP = 4
IP_PROTO_IPV6 = 41
IP_PROTO_GRE = 47
IP_PROTO_UDP = 17
UDP_VXLAN = 4789
UDP_GENEVE = 6081

# Tunnels inside tunnels peeled at most: a hostile frame must not recurse without end.
MAX_DEPTH = 4
# MPLS labels popped at most before giving up on finding the bottom of the stack.
MAX_LABELS = 16

# Kinds, for the per-kind counters of the summary.
GRE, ERSPAN, VXLAN, GENEVE, MPLS, PPPOE, IPIP = "gre", "erspan", "vxlan", "geneve", "mpls", "pppoe", "ip-in-ip"
KINDS = (GRE, ERSPAN, VXLAN, GENEVE, MPLS, PPPOE, IPIP)

_GRE_PAYLOADS = {0x0800: INNER_IPV4, 0x86DD: INNER_IPV6, 0x6558: INNER_ETHERNET, 0x8847: INNER_MPLS}
_ERSPAN_II_III = {0x88BE: 8, 0x22EB: 12}  # GRE protocol -> ERSPAN header length (II, III)

Inner = tuple[int, int]


def gre(data: bytes, offset: int, end: int) -> tuple[Inner, str] | None:
    """A GRE header at ``offset``; the payload and whether it was plain GRE or ERSPAN."""
    if offset + 4 > end:
        return None
    flags, version = data[offset], data[offset + 1] & 0x07
    protocol = data[offset + 2] << 8 | data[offset + 3]
    if version != 0 or flags & 0x40:  # PPTP's enhanced GRE (version 1); RFC 1701 source routing: not transports
        return None
    position = offset + 4
    position += 4 * bool(flags & 0x80) + 4 * bool(flags & 0x20)  # checksum (+ reserved), key
    sequenced = bool(flags & 0x10)
    position += 4 * sequenced
    if position > end:
        return None
    if protocol in _ERSPAN_II_III:
        if protocol == 0x88BE and not sequenced:  # ERSPAN type I: no ERSPAN header, Ethernet at once
            return (INNER_ETHERNET, position), ERSPAN
        header = _ERSPAN_II_III[protocol]
        if protocol == 0x22EB and position + 12 <= end and data[position + 11] & 0x01:
            header += 8  # type III platform-specific subheader (O flag)
        return ((INNER_ETHERNET, position + header), ERSPAN) if position + header <= end else None
    inner = _GRE_PAYLOADS.get(protocol)
    return ((inner, position), GRE) if inner is not None else None


def udp(data: bytes, offset: int, end: int) -> tuple[Inner, str] | None:
    """A UDP header at ``offset``: VXLAN or Geneve by destination port, else nothing."""
    if offset + 8 > end:
        return None
    port = data[offset + 2] << 8 | data[offset + 3]
    position = offset + 8
    if port == UDP_VXLAN:
        if position + 8 > end or not data[position] & 0x08:  # the I flag: a valid VNI follows
            return None
        return (INNER_ETHERNET, position + 8), VXLAN
    if port == UDP_GENEVE:
        if position + 8 > end or data[position] >> 6 != 0:
            return None
        options = (data[position] & 0x3F) * 4
        protocol = data[position + 2] << 8 | data[position + 3]
        inner = _GRE_PAYLOADS.get(protocol)
        start = position + 8 + options
        return ((inner, start), GENEVE) if inner is not None and start <= end else None
    return None


def mpls(data: bytes, offset: int, end: int) -> Inner | None:
    """A label stack at ``offset``: what lies below its bottom label."""
    position = offset
    for _ in range(MAX_LABELS):
        if position + 4 > end:
            return None
        bottom = data[position + 2] & 0x01
        position += 4
        if bottom:
            break
    else:
        return None
    if position >= end:
        return None
    nibble = data[position] >> 4
    if nibble == 4:
        return INNER_IPV4, position
    if nibble == 6:
        return INNER_IPV6, position
    if nibble == 0 and position + 4 <= end:  # the pseudowire control word, then Ethernet
        return INNER_ETHERNET, position + 4
    return INNER_ETHERNET, position


def pppoe(data: bytes, offset: int, end: int) -> Inner | None:
    """A PPPoE session header at ``offset`` and the PPP protocol after it."""
    if offset + 8 > end or data[offset] != 0x11 or data[offset + 1] != 0:  # version 1, type 1; session data code
        return None
    protocol = data[offset + 6] << 8 | data[offset + 7]
    if protocol == 0x0021:
        return INNER_IPV4, offset + 8
    if protocol == 0x0057:
        return INNER_IPV6, offset + 8
    return None
