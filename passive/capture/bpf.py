"""The BPF expression that lets only the wanted TCP through libpcap (files) or the kernel (live).

It passes TCP on the given ports (any TCP with ``all_ports``, or when no port is given),
also under as many VLAN tags on Ethernet as the decoder peels (``MAX_VLAN_TAGS``; tagged frames
of Linux cooked captures pass whole), the encapsulations the decoder peels, plus IPv6
packets that reach TCP through extension headers (BPF cannot check their ports, so Python
does). A user's expression is ANDed in front of it (placed first so the offsets that ``vlan``
shifts do not apply to it).
"""

from __future__ import annotations

from collections.abc import Iterable

from passive.capture.linklayer import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, MAX_VLAN_TAGS
from passive.core.errors import UsageError, one_line

# IPv6 extension headers hide TCP from `tcp`/`port`; protochain finds it, Python checks ports.
# Fragment headers get their own clause: libpcap's optimiser mishandles them combined with the other.
_IPV6_CHAINED = "(ip6 protochain 6 and not ip6 proto 6) or (ip6 protochain 44)"
# Encapsulations the decoder peels (passive.capture.tunnels): BPF cannot see the ports inside, so all of them pass
# and Python checks the inner ports; so do the later fragments of UDP and TCP packets (a tunnel's packet or a segment
# fragmented on its way, joined again by passive.capture.defrag: they carry no ports). MPLS and PPPoE sessions are
# matched by ethertype: the `mpls` and `pppoes` keywords would shift the offsets of what follows them.
_TUNNELS = (
    "(ip proto 47) or (ip proto 4) or (ip proto 41) or (ip proto 137) or (ip6 proto 47) or (ip6 proto 4)"
    " or (ip6 proto 41) or (ip6 proto 137) or (udp dst port 4789) or (udp dst port 4790) or (udp dst port 6081)"
    " or (udp dst port 8472) or (udp dst port 6635) or ((ip proto 17 or ip proto 6) and ip[6:2] & 0x1fff != 0)"
)
_ETHER_TUNNELS = "(ether proto 0x8847) or (ether proto 0x8848) or (ether proto 0x8864)"
# Linux cooked captures name a tag the NIC left in the frame as their protocol; libpcap has no `vlan` for them, so
# tagged frames pass by that protocol and Python checks what is inside.
_COOKED_TAGS = "(ether proto 0x8100) or (ether proto 0x88a8) or (ether proto 0x9100)"
# Without protochain: hop-by-hop, routing, fragment, destination options, AH as the first next header.
_IPV6_CHAINED_LOOP_FREE = "(ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 60 or ip6[6] == 51))"


def build_bpf_filter(
    ports: Iterable[int],
    *,
    all_ports: bool = False,
    user_filter: str | None = None,
    linktype: int = LINKTYPE_ETHERNET,
    ipv6_ext_in_vlan: bool = True,
    protochain: bool = True,
) -> str:
    """BPF expression passing TCP on ``ports`` (any TCP with ``all_ports`` or no ports), VLAN-tagged too on Ethernet.

    ``ipv6_ext_in_vlan=False`` leaves out the IPv6 extension-header clause under VLAN tags,
    for live Linux captures where libpcap cannot combine ``protochain`` with ``vlan``.
    ``protochain=False`` replaces ``protochain`` (a loop, which the Linux kernel refuses, so libpcap
    would silently filter every packet in user space) by a check of the first IPv6 next header.
    """
    port_set = sorted(set(ports))
    if all_ports or not port_set:
        tcp = "tcp"
    else:
        port_list = " or ".join(f"port {p}" for p in port_set)
        tcp = f"tcp and ({port_list})"
    chained = _IPV6_CHAINED if protochain else _IPV6_CHAINED_LOOP_FREE
    base = f"({tcp}) or {chained} or {_TUNNELS}"
    expr = base
    if linktype == LINKTYPE_ETHERNET:
        # `vlan` shifts offsets for the rest of the expression, hence one nested level per tag.
        base = f"{base} or {_ETHER_TUNNELS}"
        tagged = base if ipv6_ext_in_vlan else f"({tcp}) or {_TUNNELS} or {_ETHER_TUNNELS}"
        nested = tagged
        for _ in range(MAX_VLAN_TAGS - 1):
            nested = f"({tagged}) or (vlan and ({nested}))"
        expr = f"({base}) or (vlan and ({nested}))"
    elif linktype in (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2):
        expr = f"{base} or {_ETHER_TUNNELS} or {_COOKED_TAGS}"
    if user_filter and user_filter.strip():
        expr = f"({user_filter}) and ({expr})"
    return expr


def check_user_filter(expression: str | None) -> None:
    """Refuse a BPF expression libpcap cannot compile, before any capture is read (a usage error, not an input one).

    Compiled for Ethernet, the link type nearly every capture has; a filter valid there but not on another link
    type is still reported per capture. Without libpcap there is nothing to compile with: the readers say so.
    """
    if not expression or not expression.strip():
        return
    try:
        import pcapy  # type: ignore[import-untyped]
    except ImportError:
        return
    try:
        pcapy.compile(LINKTYPE_ETHERNET, 65535, expression, 1, 0xFFFFFFFF)
    except pcapy.PcapError as error:
        raise UsageError(f"invalid BPF filter {expression!r}: {one_line(error)}") from None
