"""Decode a captured frame down to its TCP segment.

One function, :func:`decode_tcp`, turns (link type, frame bytes) into either a
:data:`Segment` tuple or an integer status telling why there is no segment. It is on
the per-packet hot path, so it works on fixed offsets with ``struct.unpack_from`` and
returns a plain tuple instead of building objects. It never raises on hostile input:
every read is bounds-checked first. Besides addresses, ports, sequence numbers, flags and payload, a segment
carries its window field and, for a SYN, the window scale and SACK-permitted options (``OPT_*`` bits): the
reassembler follows the receiver's window with them.

Supported link types: Ethernet (with up to three 802.1Q / 802.1ad / 0x9100 VLAN tags: QinQ
and a packet broker's port tag; the BPF filter nests as deep), Linux cooked SLL (113) and SLL2 (276) (tags too, when
the NIC left them in the frame and the cooked header names 802.1Q or 802.1ad), raw IP
(101, and 12/14 which some platforms write for it), LINKTYPE_IPV4 (228) / IPV6 (229),
BSD NULL (0, host byte order) and LOOP (108, network byte order).

IPv6 extension headers (hop-by-hop, routing, destination options, fragment, AH) are walked; a packet whose IP
options or extension headers make a receiver drop it (passive.capture.ipoptions) is a decode error. IP fragments are
a status here, never decoded: the scanners and the libpcap path join the pieces of a TCP or tunnel packet again
(passive.capture.defrag) and decode the whole.
"""

from __future__ import annotations

import socket
import struct

from passive.capture import tunnels
from passive.capture.checksums import checksum_bits, outer_header, with_outer
from passive.capture.ipoptions import (
    AH,
    DESTINATION,
    FRAGMENT,
    FRAGMENTED,
    HOP_BY_HOP,
    MAX_EXTENSION_HEADERS,
    ROUTING,
    UNHANDLED,
    ipv4_options_refused,
    ipv6_header_refused,
)
from passive.capture.tcpfields import (  # noqa: F401 (the TCP header's fields, imported from here by every reader)
    ACK,
    FIN,
    MAX_WSCALE,
    MD5_OPTION,
    OPT_ALIGNED_TS,
    OPT_BAD_SIGNATURE,
    OPT_SACK_OK,
    OPT_SHIFT_MASK,
    OPT_SIGNED,
    OPT_TIMESTAMP,
    OPT_TSVAL_SHIFT,
    OPT_URGENT_SHIFT,
    OPT_WSCALE,
    PSH,
    RST,
    SYN,
    URG,
)
from passive.capture.tcpfields import tcp_options as _options

# Link types (pcap LINKTYPE_* values; libpcap reports DLT_RAW as 12 on Linux).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_DLT12 = 12
LINKTYPE_RAW_DLT14 = 14
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW_DLT12,
        LINKTYPE_RAW_DLT14,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
# VLAN tags peeled: QinQ (802.1ad + 802.1Q) plus the tag a packet broker or span session adds for the port a frame
# came in on. The BPF filter (bpf.py) nests `vlan and (...)` as deep; each level adds about 400 instructions to a
# filter with `protochain` (3 265 at three levels, under the 4 096 libpcap and the kernel accept).
MAX_VLAN_TAGS = 3

# BSD address families seen in NULL/LOOP headers: AF_INET is 2 everywhere, AF_INET6 varies.
_AF_INET = 2
_AF_INET6 = frozenset({10, 24, 28, 30})

# Statuses returned instead of a segment.
NOT_IP = 1  # link payload is not IPv4/IPv6 (ARP, LLDP, ...)
NOT_TCP = 2  # IP but not TCP (UDP, ICMP, ESP, ...)
MALFORMED = 3  # header fields inconsistent or cut before the TCP header ends
FRAGMENT_V4 = 4  # IPv4 fragment (first or not): counted, not reassembled
FRAGMENT_V6 = 5  # IPv6 fragment (first or not): counted, not reassembled
UNSUPPORTED_LINK = 6  # link type this decoder does not know
TOO_MANY_TAGS = 7  # more VLAN tags than the BPF filter can match

# Bits of Segment.info
INFO_IPV6 = 1
INFO_EXT_HEADERS = 2  # IPv6 with extension headers before TCP (BPF needs `protochain` for these)
INFO_FIRST_FRAGMENT = 4  # IPv4 first fragment (MF set, offset 0): TCP header present, payload partial

# Bits of Segment.info naming the encapsulations the segment was found in (passive.capture.tunnels).
INFO_GRE = 8
INFO_ERSPAN = 16
INFO_VXLAN = 32
INFO_GENEVE = 64
INFO_MPLS = 128
INFO_PPPOE = 256
INFO_IPIP = 512
# INFO_CSUM_VALID, _BAD, _LEFT (1 << 10, 11, 12): the segment's checksums; INFO_OUTER_WRONG, _LEFT (1 << 13, 14):
# a tunnel's IPv4 header around it (passive.capture.checksums)
INFO_SKIPPED = 1 << 15  # not a packet: the scanner's notice of packets it dropped unread (passive.capture.skipping)
# Above the bits: the virtual network the segment travels in (tunnels.py, ``vnet``; 0 for none), part of its flow's
# identity: ``info >> INFO_VNET_SHIFT``.
INFO_VNET_SHIFT = 16
INFO_BITS = (1 << INFO_VNET_SHIFT) - 1
TUNNEL_BITS: dict[str, int] = {
    tunnels.GRE: INFO_GRE,
    tunnels.ERSPAN: INFO_ERSPAN,
    tunnels.VXLAN: INFO_VXLAN,
    tunnels.GENEVE: INFO_GENEVE,
    tunnels.MPLS: INFO_MPLS,
    tunnels.PPPOE: INFO_PPPOE,
    tunnels.IPIP: INFO_IPIP,
}
INFO_TUNNELS = sum(TUNNEL_BITS.values())

# Segment = (src, dst, sport, dport, seq, ack, tcp_flags, payload, wire_payload_len, info, window, syn_options)
#   src/dst: packed addresses (4 or 16 bytes); payload: the captured TCP payload;
#   wire_payload_len: payload length per the IP header (> len(payload) when the frame was cut);
#   info: INFO_* bits, and the virtual network id above them (INFO_VNET_SHIFT);
#   window: the 16-bit window field, unscaled; syn_options: OPT_* bits of its TCP options (a SYN's window scale and
#   SACK permitted; any segment's timestamp and signature) and its urgent pointer.
Segment = tuple[bytes, bytes, int, int, int, int, int, bytes, int, int, int, int]

_U16 = struct.Struct("!H").unpack_from
_U32_LE = struct.Struct("<I").unpack_from
_U32_BE = struct.Struct("!I").unpack_from
_TCP = struct.Struct("!HHIIBBH").unpack_from
_IPV6_JUDGED = UNHANDLED | {HOP_BY_HOP, ROUTING, DESTINATION}  # judged by passive.capture.ipoptions
TUNNEL_PROTOCOLS = frozenset(
    {tunnels.IP_PROTO_GRE, tunnels.IP_PROTO_UDP, tunnels.IP_PROTO_IPIP, tunnels.IP_PROTO_IPV6, tunnels.IP_PROTO_MPLS}
)


_ETH_IPV4 = struct.Struct("!12xHBxHxxHxB2x4s4s").unpack_from  # ethertype, ver/ihl, total, frag, proto, src, dst


def decode_tcp(linktype: int, data: bytes) -> Segment | int:
    """Return the TCP segment carried by ``data`` or a status constant (never raises)."""
    n = len(data)
    if linktype == LINKTYPE_ETHERNET and n >= 54 and data[12] == 8 and data[13] == 0:
        # Fast path, the bulk of real traffic: untagged Ethernet, IPv4 without options, unfragmented TCP.
        _et, ver_ihl, total, frag, proto, src, dst = _ETH_IPV4(data, 0)
        if ver_ihl == 0x45 and proto == 6 and not frag & 0x3FFF and total >= 40:
            sport, dport, seq, ack, offset_byte, flags, window = _TCP(data, 34)
            start = 34 + (offset_byte >> 4) * 4
            end = 14 + total
            if offset_byte >= 0x50 and start <= end and end <= n:
                options = _options(data, 54, start, flags) if start > 54 or flags & URG else 0
                checked = checksum_bits(data, 14, 34, end, n, src, dst)
                return (src, dst, sport, dport, seq, ack, flags, data[start:end], end - start, checked, window, options)
    return _decode_any(linktype, data, n)


def _decode_any(linktype: int, data: bytes, n: int) -> Segment | int:
    link = link_header(linktype, data)
    if link.__class__ is int:
        return link  # type: ignore[return-value]
    ethertype, offset = link  # type: ignore[misc]
    return _network(ethertype, data, offset, n, 0, 0)


def link_header(linktype: int, data: bytes) -> tuple[int, int] | int:
    """The ethertype of what follows the link header (and its VLAN tags), and where it starts; or a status."""
    n = len(data)
    if linktype == LINKTYPE_ETHERNET:
        return _ethernet(data, 0, n)
    if linktype in (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2):
        header = 16 if linktype == LINKTYPE_LINUX_SLL else 20
        if n < header:
            return MALFORMED
        at = 14 if linktype == LINKTYPE_LINUX_SLL else 0
        # A tag the NIC did not strip stays in the frame, the cooked header naming 802.1Q (or 802.1ad) instead.
        return _tags(data, data[at] << 8 | data[at + 1], header, n)
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_DLT12, LINKTYPE_RAW_DLT14, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if n < 1:
            return MALFORMED
        version = data[0] >> 4
        ethertype = ETHERTYPE_IPV4 if version == 4 else ETHERTYPE_IPV6 if version == 6 else 0
        offset = 0
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            return MALFORMED
        if linktype == LINKTYPE_LOOP:
            family = _U32_BE(data, 0)[0]
        else:
            # Host byte order of the capturing machine: a small value in one order is huge in the other.
            family = _U32_LE(data, 0)[0]
            if family > 0xFFFF:
                family = _U32_BE(data, 0)[0]
        ethertype = ETHERTYPE_IPV4 if family == _AF_INET else ETHERTYPE_IPV6 if family in _AF_INET6 else 0
        offset = 4
    else:
        return UNSUPPORTED_LINK
    return ethertype, offset


def _ethernet(data: bytes, offset: int, n: int) -> tuple[int, int] | int:
    """An Ethernet header (and up to :data:`MAX_VLAN_TAGS` tags) at ``offset``: the ethertype and where it ends."""
    if offset + 14 > n:
        return MALFORMED
    return _tags(data, data[offset + 12] << 8 | data[offset + 13], offset + 14, n)


def _tags(data: bytes, ethertype: int, offset: int, n: int) -> tuple[int, int] | int:
    """The VLAN tags (up to :data:`MAX_VLAN_TAGS`) after a link header naming ``ethertype`` and ending at
    ``offset``: the ethertype after them and where they end."""
    tags = 0
    while ethertype in VLAN_TPIDS:
        tags += 1
        if offset + 4 > n:
            return MALFORMED
        ethertype = data[offset + 2] << 8 | data[offset + 3]
        offset += 4
    return TOO_MANY_TAGS if tags > MAX_VLAN_TAGS else (ethertype, offset)


def _network(ethertype: int, data: bytes, offset: int, n: int, outer: int, depth: int) -> Segment | int:
    """The packet after a link header; ``outer`` holds the INFO bits of the tunnels around it."""
    if ethertype == ETHERTYPE_IPV4:
        return _decode_ipv4(data, offset, n, outer, depth)
    if ethertype == ETHERTYPE_IPV6:
        return _decode_ipv6(data, offset, n, outer, depth)
    if ethertype in tunnels.ETHERTYPE_MPLS:
        return _inner(tunnels.mpls(data, offset, n), data, n, outer | INFO_MPLS, depth + 1)
    if ethertype == tunnels.ETHERTYPE_PPPOE_SESSION:
        return _inner(tunnels.pppoe(data, offset, n), data, n, outer | INFO_PPPOE, depth + 1)
    return NOT_IP


def _inner(inner: tuple[int, int] | None, data: bytes, n: int, outer: int, depth: int) -> Segment | int:
    """What an encapsulation holds, decoded like the outer packet; ``depth`` counts the encapsulation just peeled,
    and one nested deeper than :data:`~passive.capture.tunnels.MAX_DEPTH` is counted as damage."""
    if inner is None:
        return NOT_TCP
    kind, offset = inner
    if kind == tunnels.INNER_DAMAGED or depth > tunnels.MAX_DEPTH:
        return MALFORMED
    if kind == tunnels.INNER_ETHERNET:
        link = _ethernet(data, offset, n)
        if link.__class__ is int:
            return link  # type: ignore[return-value]
        ethertype, offset = link  # type: ignore[misc]
        return _network(ethertype, data, offset, n, outer, depth)
    if kind == tunnels.INNER_IPV4:
        return _decode_ipv4(data, offset, n, outer, depth)
    if kind == tunnels.INNER_IPV6:
        return _decode_ipv6(data, offset, n, outer, depth)
    return _network(0x8847, data, offset, n, outer, depth)  # INNER_MPLS


def _tunnel(proto: int, data: bytes, pos: int, end: int, n: int, outer: int, depth: int) -> Segment | int:
    """An IP payload that is not TCP: a tunnel's packet inside (bounded by the outer packet), NOT_TCP, or MALFORMED
    for a damaged tunnel header or one nested too deep."""
    limit = min(end, n)
    if proto == tunnels.IP_PROTO_GRE or proto == tunnels.IP_PROTO_UDP:
        found = (tunnels.gre if proto == tunnels.IP_PROTO_GRE else tunnels.udp)(data, pos, limit)
        if found is None:
            return NOT_TCP
        inner, kind, vnet = found
        if vnet:  # the innermost virtual network is the flow's
            outer = (outer & INFO_BITS) | vnet << INFO_VNET_SHIFT
        return _inner(inner, data, limit, outer | TUNNEL_BITS[kind], depth + 1)
    if proto == tunnels.IP_PROTO_MPLS:
        return _inner((tunnels.INNER_MPLS, pos), data, limit, outer | INFO_MPLS, depth + 1)
    if depth >= tunnels.MAX_DEPTH:
        return MALFORMED
    if proto == tunnels.IP_PROTO_IPIP:
        return _decode_ipv4(data, pos, limit, outer | INFO_IPIP, depth + 1)
    if proto == tunnels.IP_PROTO_IPV6:
        return _decode_ipv6(data, pos, limit, outer | INFO_IPIP, depth + 1)
    return NOT_TCP


def _decode_ipv4(data: bytes, offset: int, n: int, outer: int = 0, depth: int = 0) -> Segment | int:
    if offset + 20 > n:
        return MALFORMED
    first = data[offset]
    ihl = (first & 0x0F) * 4
    if first >> 4 != 4 or ihl < 20 or offset + ihl > n:
        return MALFORMED
    total = _U16(data, offset + 2)[0]
    if total == 0:
        total = n - offset  # sender-side capture with TCP segmentation offload: the NIC fills the length in
    if total < ihl or (ihl > 20 and ipv4_options_refused(data, offset, ihl)):
        return MALFORMED  # options a receiver refuses (passive.capture.ipoptions) make it drop the packet
    frag = _U16(data, offset + 6)[0]
    proto = data[offset + 9]
    if proto != 6:
        if frag & 0x3FFF:
            return NOT_TCP if proto not in TUNNEL_PROTOCOLS else FRAGMENT_V4
        if proto in TUNNEL_PROTOCOLS:
            outer |= outer_header(data, offset, ihl)
        return _tunnel(proto, data, offset + ihl, offset + total, n, outer, depth)
    info = outer
    if frag & 0x3FFF:  # MF flag or a fragment offset
        if frag & 0x1FFF or not depth:  # the outermost packet's pieces are joined (passive.capture.defrag)
            return FRAGMENT_V4
        info |= INFO_FIRST_FRAGMENT
    end = offset + total
    return _decode_tcp(
        data, data[offset + 12 : offset + 16], data[offset + 16 : offset + 20], offset + ihl, end, n, info, offset
    )


def _decode_ipv6(data: bytes, offset: int, n: int, outer: int = 0, depth: int = 0) -> Segment | int:
    if offset + 40 > n:
        return MALFORMED
    if data[offset] >> 4 != 6:
        return MALFORMED
    payload_len = _U16(data, offset + 4)[0]
    next_header = data[offset + 6]
    src = data[offset + 8 : offset + 24]
    dst = data[offset + 24 : offset + 40]
    end = offset + 40 + payload_len
    pos = offset + 40
    info = INFO_IPV6 | outer
    limit = min(n, end)
    # Bounded walk: each header is at least 8 bytes, so a 64 KiB payload can hold only so many.
    for _ in range(MAX_EXTENSION_HEADERS):
        if next_header == 6:
            break
        if next_header in _IPV6_JUDGED:  # what a receiver refuses is dropped here (passive.capture.ipoptions)
            if ipv6_header_refused(next_header, data, offset, limit, pos):
                return MALFORMED
            next_header, size = data[pos], (data[pos + 1] + 1) * 8
        elif next_header == FRAGMENT:
            if pos + 8 > n:
                return MALFORMED
            if _U16(data, pos + 2)[0] & 0xFFF9:  # an offset or the M flag: a piece (passive.capture.defrag)
                joined = data[pos] == 6 or data[pos] in TUNNEL_PROTOCOLS or data[pos] in FRAGMENTED
                return FRAGMENT_V6 if joined else NOT_TCP
            next_header, size = data[pos], 8  # an atomic fragment (RFC 6946): a whole packet
        elif next_header == AH:
            if pos + 8 > n:
                return MALFORMED
            next_header, size = data[pos], (data[pos + 1] + 2) * 4
        elif next_header in TUNNEL_PROTOCOLS and payload_len:
            return _tunnel(next_header, data, pos, end, n, outer, depth)
        else:
            return NOT_TCP
        pos += size
        info |= INFO_EXT_HEADERS
    else:
        return MALFORMED
    if payload_len == 0:
        return MALFORMED  # jumbograms are not used on links we capture from
    return _decode_tcp(data, src, dst, pos, end, n, info, -1)


def _decode_tcp(
    data: bytes, src: bytes, dst: bytes, pos: int, end: int, n: int, info: int, ip_at: int
) -> Segment | int:
    """The TCP segment at ``pos`` (the IP packet ends at ``end``, its IPv4 header at ``ip_at``, -1 for IPv6)."""
    if pos + 20 > n or pos + 20 > end:
        return MALFORMED
    sport, dport, seq, ack, offset_byte, flags, window = _TCP(data, pos)
    header = (offset_byte >> 4) * 4
    start = pos + header
    if header < 20 or start > end:
        return MALFORMED
    wire_len = end - start
    # Ethernet pads short frames: the IP length, not the frame length, says where data stops.
    payload = data[start:end] if end <= n else data[start:n]
    if start > n:
        payload = b""
    options = _options(data, pos + 20, min(start, n), flags) if start > pos + 20 or flags & URG else 0
    if not info & INFO_FIRST_FRAGMENT:  # a first fragment's segment is cut: its checksums are not judged
        info |= with_outer(checksum_bits(data, ip_at, pos, end, n, src, dst), info)
    return (src, dst, sport, dport, seq, ack, flags, payload, wire_len, info, window, options)


def format_endpoint(addr: bytes, port: int) -> str:
    """Printable ``ip:port`` (IPv6 bracketed: ``[2001:db8::1]:25``)."""
    if len(addr) == 16:
        return f"[{socket.inet_ntop(socket.AF_INET6, addr)}]:{port}"
    return f"{socket.inet_ntop(socket.AF_INET, addr)}:{port}"
