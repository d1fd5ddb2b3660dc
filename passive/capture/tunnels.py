"""Encapsulations a span port or a capture point hands over, peeled to the packet inside.

Each function takes the frame and the offset where the encapsulation's header starts and returns what is inside:
``(INNER_ETHERNET | INNER_IPV4 | INNER_IPV6 | INNER_MPLS, offset)``; ``(INNER_DAMAGED, offset)`` when the header is
cut short or contradicts itself (options or a label stack running past the packet: the decoder counts the frame as
damaged); None when it is whole but carries something else. Every read is bounds-checked; nothing here raises on
hostile input.

- GRE (RFC 2784/2890), with ERSPAN types I, II and III (Cisco; GRE protocol 0x88BE and 0x22EB), transparent Ethernet
  bridging (0x6558), IPv4, IPv6 and MPLS inside; PPTP's enhanced GRE (RFC 2637: version 1, PPP inside, IPv4 or IPv6
  in the PPP frame; MPPE-encrypted frames and acknowledgments alone carry nothing to read), counted as GRE;
- VXLAN (RFC 7348, UDP 4789, and 8472: the Linux kernel's default, used by flannel and other overlays), Ethernet
  inside; VXLAN-GPE (draft-ietf-nvo3-vxlan-gpe, UDP 4790: IPv4, IPv6, Ethernet or MPLS, counted as VXLAN); Geneve
  (RFC 8926, UDP 6081), with options, Ethernet, IP or MPLS inside;
- MPLS label stacks (RFC 3032: ethertypes 0x8847/0x8848; over UDP, port 6635, RFC 7510; in IP, protocol 137,
  RFC 4023, all counted as MPLS), IP or an Ethernet pseudowire (RFC 4448, with or without its control word) below
  the bottom label. Nothing on the wire says which: a first nibble of 4 or 6 is IP; a first
  nibble of 0 is the control word (RFC 4385) when the Ethernet header after those 4 bytes names a known ethertype,
  else an Ethernet header whose destination MAC begins with a 0 nibble (00:50:56..., 00:0c:29...: common) when that
  reading names one; any other nibble is Ethernet without the control word. tshark's ``pwethheuristic`` may choose
  otherwise: it read the first 4 bytes of a frame to 02:00:00:00:00:02 without a control word as one, and leaves a
  frame to a0:36:9f:... undecoded;
- PPPoE sessions (RFC 2516, ethertype 0x8864), IPv4 or IPv6 inside;
- IP in IP: IPv4 (protocol 4) and IPv6 (41) inside IPv4 or IPv6, which the IP decoder handles by recursing.

**Virtual networks.** Tenants of an overlay reuse addresses: two of them may hold sessions on the same inner 4-tuple
at once. The id of the virtual network a packet travels in (``vnet``, 0 for none) is part of its flow's identity:
the VXLAN or VXLAN-GPE VNI, the Geneve VNI. The innermost one a packet has wins. Not a GRE key, not even on bridged
Ethernet where NVGRE (RFC 7637) puts a virtual subnet id in it: each end of a Linux GRE or gretap tunnel may send its
own key (``ikey``/``okey``), and mirrors key the two directions of one session apart (zeek's ``erspan.pcap``: a
client's frames keyed 0, its server's 0x02000000, in one gretap stream), so a session keyed by it would be split
into two half-flows and its NTLM exchange and verdicts lost; NVGRE tenants on one inner 4-tuple at once are the
rarer loss. Not an ERSPAN session id: it names a mirror session, and two sessions mirroring the same traffic carry
copies of one flow, not two tenants; nor PPTP's call id, which differs per direction.
"""

from __future__ import annotations

INNER_DAMAGED = 0  # the header is cut short or inconsistent: the frame is counted as damaged
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
UDP_VXLAN_GPE = 4790
UDP_GENEVE = 6081
UDP_VXLAN_LINUX = 8472  # the Linux kernel's VXLAN port (before IANA assigned 4789), flannel's and others' default
UDP_MPLS = 6635  # MPLS in UDP (RFC 7510)
IP_PROTO_MPLS = 137  # MPLS in IP (RFC 4023)

# Tunnels inside tunnels peeled at most: a hostile frame must not recurse without end.
MAX_DEPTH = 4
# MPLS labels popped at most before giving up on finding the bottom of the stack.
MAX_LABELS = 16
# Ethertypes that make a reading of an Ethernet pseudowire plausible (with or without the control word).
_PW_ETHERTYPES = frozenset({0x0800, 0x86DD, 0x8100, 0x88A8, 0x9100, 0x8847, 0x8848, 0x8864})

# Kinds, for the per-kind counters of the summary.
GRE, ERSPAN, VXLAN, GENEVE, MPLS, PPPOE, IPIP = "gre", "erspan", "vxlan", "geneve", "mpls", "pppoe", "ip-in-ip"
KINDS = (GRE, ERSPAN, VXLAN, GENEVE, MPLS, PPPOE, IPIP)

_GRE_PAYLOADS = {0x0800: INNER_IPV4, 0x86DD: INNER_IPV6, 0x6558: INNER_ETHERNET, 0x8847: INNER_MPLS}
_PPP_PAYLOADS = {0x0021: INNER_IPV4, 0x0057: INNER_IPV6}
_GPE_PAYLOADS = {1: INNER_IPV4, 2: INNER_IPV6, 3: INNER_ETHERNET, 5: INNER_MPLS}  # VXLAN-GPE next protocol
_ERSPAN_II_III = {0x88BE: 8, 0x22EB: 12}  # GRE protocol -> ERSPAN header length (II, III)

# Virtual network ids (``vnet``): the kind in the bits from VNET_KIND_SHIFT on, the id in the 32 below, so that a
# VXLAN VNI and a Geneve VNI of the same value stay apart. A GRE key is no tenant's id (see the module docstring).
VNET_KIND_SHIFT = 32
VNET_VXLAN, VNET_GENEVE = 1 << VNET_KIND_SHIFT, 2 << VNET_KIND_SHIFT
_VNET_NAMES = {VNET_VXLAN: "vxlan-vni", VNET_GENEVE: "geneve-vni"}

Inner = tuple[int, int]
_DAMAGED = (INNER_DAMAGED, 0)


def vnet_label(vnet: int) -> tuple[str, int] | tuple[()]:
    """A virtual network id as (kind, id), e.g. ``("vxlan-vni", 42)``; () for none."""
    name = _VNET_NAMES.get(vnet & ~0xFFFFFFFF)
    return (name, vnet & 0xFFFFFFFF) if name else ()


def gre(data: bytes, offset: int, end: int) -> tuple[Inner, str, int] | None:
    """A GRE header at ``offset``; the payload, whether it was plain GRE or ERSPAN, and its virtual network id."""
    if offset + 4 > end:
        return _DAMAGED, GRE, 0
    flags, version = data[offset], data[offset + 1] & 0x07
    protocol = data[offset + 2] << 8 | data[offset + 3]
    if version == 1:
        return _pptp(data, offset, end)
    if version != 0 or flags & 0x40:  # RFC 1701 source routing: not a transport
        return None
    key_at = offset + 4 + 4 * bool(flags & 0x80)  # after the checksum (+ reserved)
    position = key_at + 4 * bool(flags & 0x20)  # the key
    sequenced = bool(flags & 0x10)
    position += 4 * sequenced
    if position > end:
        return _DAMAGED, GRE, 0
    if protocol in _ERSPAN_II_III:
        if protocol == 0x88BE and not sequenced:  # ERSPAN type I: no ERSPAN header, Ethernet at once
            return (INNER_ETHERNET, position), ERSPAN, 0
        header = _ERSPAN_II_III[protocol]
        if protocol == 0x22EB and position + 12 <= end and data[position + 11] & 0x01:
            header += 8  # type III platform-specific subheader (O flag)
        return ((INNER_ETHERNET, position + header) if position + header <= end else _DAMAGED), ERSPAN, 0
    inner = _GRE_PAYLOADS.get(protocol)
    if inner is None:
        return None
    return (inner, position), GRE, 0


def _pptp(data: bytes, offset: int, end: int) -> tuple[Inner, str, int] | None:
    """PPTP's enhanced GRE header at ``offset`` (its key, payload length and call ID, always there; sequence and
    acknowledgment numbers by the S and A flags) and the PPP frame after it."""
    flags, protocol = data[offset], data[offset + 2] << 8 | data[offset + 3]
    if protocol != 0x880B or flags & 0xC0 or not flags & 0x20:  # no checksum or routing; the key is mandatory
        return None
    position = offset + 8 + 4 * bool(flags & 0x10) + 4 * bool(data[offset + 1] & 0x80)
    if position > end:
        return _DAMAGED, GRE, 0
    if position == end:
        return None  # an acknowledgment alone
    if data[position] == 0xFF:  # address and control (absent when both sides agreed to leave them out)
        position += 2
    if position >= end:
        return _DAMAGED, GRE, 0
    if data[position] & 0x01:  # a compressed one-byte protocol field
        protocol, position = data[position], position + 1
    elif position + 2 <= end:
        protocol, position = data[position] << 8 | data[position + 1], position + 2
    else:
        return _DAMAGED, GRE, 0
    inner = _PPP_PAYLOADS.get(protocol)
    return ((inner, position), GRE, 0) if inner is not None else None


def udp(data: bytes, offset: int, end: int) -> tuple[Inner, str, int] | None:
    """A UDP header at ``offset``: VXLAN, VXLAN-GPE, Geneve or MPLS by destination port, else nothing; the payload,
    the kind it is counted as, and its virtual network id."""
    if offset + 8 > end:
        return None  # not even a UDP header: the ports that would name a tunnel are unknown
    port = data[offset + 2] << 8 | data[offset + 3]
    position = offset + 8
    if port in (UDP_VXLAN, UDP_VXLAN_GPE, UDP_VXLAN_LINUX):
        if position + 8 > end:
            return _DAMAGED, VXLAN, 0
        flags = data[position]
        if not flags & 0x08:  # the I flag: a valid VNI follows
            return None
        inner: int | None = INNER_ETHERNET
        if port == UDP_VXLAN_GPE and flags & 0x04:  # the P flag: the next protocol is named (Ethernet without it)
            inner = _GPE_PAYLOADS.get(data[position + 3])
        vni = data[position + 4] << 16 | data[position + 5] << 8 | data[position + 6]
        return ((inner, position + 8), VXLAN, VNET_VXLAN | vni) if inner is not None else None
    if port == UDP_GENEVE:
        if position + 8 > end:
            return _DAMAGED, GENEVE, 0
        options = (data[position] & 0x3F) * 4
        protocol = data[position + 2] << 8 | data[position + 3]
        inner = _GRE_PAYLOADS.get(protocol)
        if data[position] >> 6 != 0 or inner is None:  # another version; a protocol not peeled here
            return None
        start = position + 8 + options
        if start > end:
            return _DAMAGED, GENEVE, 0
        vni = data[position + 4] << 16 | data[position + 5] << 8 | data[position + 6]
        return (inner, start), GENEVE, VNET_GENEVE | vni
    if port == UDP_MPLS:
        return (INNER_MPLS, position), MPLS, 0  # the label stack is checked where it is peeled
    return None


def mpls(data: bytes, offset: int, end: int) -> Inner | None:
    """A label stack at ``offset``: what lies below its bottom label."""
    position = offset
    for _ in range(MAX_LABELS):
        if position + 4 > end:
            return _DAMAGED
        bottom = data[position + 2] & 0x01
        position += 4
        if bottom:
            break
    else:
        return _DAMAGED
    if position >= end:
        return _DAMAGED
    nibble = data[position] >> 4
    if nibble == 4:
        return INNER_IPV4, position
    if nibble == 6:
        return INNER_IPV6, position
    if nibble == 0 and (_pw_ethertype(data, position + 4, end) or not _pw_ethertype(data, position, end)):
        return INNER_ETHERNET, position + 4  # the pseudowire control word, then Ethernet
    return INNER_ETHERNET, position


def _pw_ethertype(data: bytes, position: int, end: int) -> bool:
    """Whether an Ethernet header read at ``position`` names an ethertype a pseudowire plausibly carries."""
    return position + 14 <= end and (data[position + 12] << 8 | data[position + 13]) in _PW_ETHERTYPES


def pppoe(data: bytes, offset: int, end: int) -> Inner | None:
    """A PPPoE session header at ``offset`` and the PPP protocol after it."""
    if offset + 8 > end:
        return _DAMAGED
    if data[offset] != 0x11 or data[offset + 1] != 0:  # version 1, type 1; session data code
        return None
    protocol = data[offset + 6] << 8 | data[offset + 7]
    if protocol == 0x0021:
        return INNER_IPV4, offset + 8
    if protocol == 0x0057:
        return INNER_IPV6, offset + 8
    return None
