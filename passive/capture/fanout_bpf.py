"""The program that spreads a live interface's flows over capture processes (``watch --jobs N``): classic BPF run by
the kernel for a ``PACKET_FANOUT_CBPF`` group, returning a hash of the packet's TCP flow that both directions share.
The kernel hands the packet to member ``hash % N``.

The kernel's own ``PACKET_FANOUT_HASH`` hashes the outermost headers. Inside a tunnel that splits a flow: each VXLAN
or Geneve endpoint picks the outer UDP source port from its own hash of the inner flow, so the two directions of one
mail session travel in outer packets that hash apart, and each process saw one side of the session (its findings
lost or half made). This program hashes what the capture reads as the flow (:mod:`passive.capture.tunnels`): the
TCP 4-tuple inside VXLAN (4789, 8472), VXLAN-GPE (4790), Geneve (6081), GRE (IPv4, IPv6, transparent Ethernet
bridging, NVGRE, ERSPAN types I, II and III), IPv4/IPv6 in IP, MPLS and PPPoE sessions, under up to two VLAN tags at
each level; outside any tunnel, the TCP 4-tuple itself.

The hash is the sum of the flow's address words and ports (a sum does not change when source and destination swap),
mixed afterwards. Where the program cannot reach the TCP header (a fragment inside a tunnel, extension headers, a
tunnel it does not read, such as MPLS over UDP, a non-IP payload) it hashes the innermost addresses it read, which
both directions also share; a packet it cannot read at all goes to the first member. Loads are relative to the
network header: for a packet received, where its data starts (read through the kernel's ``skb_header_pointer``,
which reaches headers a driver left in page fragments, as a tunnel's inner headers often are); for a packet the host
sends, whose data starts at its link header, through ``SKF_NET_OFF`` (before Linux 6.15 that reads the linear part
only, where a host builds its own headers). The outermost ethertype is the packet's protocol as the kernel knows it
(``SKF_AD_PROTOCOL``: a VLAN tag the kernel took off is not in the data).
The group also asks the kernel to join IPv4 fragments before it runs the program (``PACKET_FANOUT_FLAG_DEFRAG``).

The kernel checks the program when the group is given it; tests run it here on every kind of packet (both
directions of each flow must get the same hash) and on a live interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passive.capture.tunnels import MAX_LABELS

# struct sock_filter codes (linux/filter.h, linux/bpf_common.h).
LD, LDX, ST, STX, ALU, JMP, RET, MISC = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, MSH = 0x00, 0x20, 0x40, 0x60, 0xA0
K, X = 0x00, 0x08
ADD, MUL, AND, LSH, RSH, XOR = 0x00, 0x20, 0x50, 0x60, 0x70, 0xA0
JA, JEQ, JSET = 0x00, 0x10, 0x40
RET_A = 0x10
TAX, TXA = 0x00, 0x80
SKF_AD_OFF = -0x1000
SKF_AD_PROTOCOL = 0
SKF_AD_PKTTYPE = 4
PACKET_OUTGOING = 4  # linux/if_packet.h: a packet the host sends
SKF_NET_OFF = -0x100000
MAX_INSNS = 4096  # BPF_MAXINSNS: the kernel refuses a longer program

# Scratch memory slots.
M_HASH, M_L3, M_L4, M_TMP, M_CUR, M_FLAGS = 0, 1, 2, 3, 4, 5

VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
VLAN_TAGS = 2  # tags read at each level (a kernel takes the outermost tag off before the program runs)
# Labels of a stack skipped before the packet inside: as many as the capture pops (deeper stacks: the first member).
# Each direction of an LSP has its own stack, an entropy label pair or a bypass tunnel making one side deeper: a
# shorter bound than the capture's hashed one direction by its TCP flow and the other not at all, splitting it.
MPLS_LABELS = MAX_LABELS
VXLAN_PORTS = (4789, 8472)
GPE_PORT = 4790
GENEVE_PORT = 6081
ETH_IPV4, ETH_IPV6, ETH_TEB, ETH_ERSPAN2, ETH_ERSPAN3 = 0x0800, 0x86DD, 0x6558, 0x88BE, 0x22EB
ETH_MPLS, ETH_MPLS_MC, ETH_PPPOE = 0x8847, 0x8848, 0x8864


@dataclass
class _Assembler:
    """Classic BPF with labels; jumps go forward only, as the kernel requires."""

    code: list[tuple[int, str | None, str | None, int | str]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    prefix: str = ""  # of the labels of the copy being written (one per load base)
    base: int = 0  # what packet loads are relative to: 0 the packet's data, SKF_NET_OFF its network header

    def op(self, code: int, k: int = 0) -> None:
        self.code.append((code, None, None, k))

    def jump(self, code: int, k: int, true: str | None, false: str | None = None) -> None:
        """A conditional jump to ``true`` (or on) / ``false`` (or on). A jump to ``true`` alone may go far: it is
        a conditional step onto an unconditional jump (``ja`` reaches any distance, ``jt`` 255 instructions)."""
        if true is not None and false is None:
            self.code.append((JMP | code | K, None, "+1", k))
            self.goto(true)
            return
        named = (self.prefix + true if true else None, self.prefix + false if false and false != "+1" else false)
        self.code.append((JMP | code | K, *named, k))

    def goto(self, label: str) -> None:
        self.code.append((JMP | JA, None, None, self.prefix + label))

    def label(self, name: str) -> None:
        name = self.prefix + name
        assert name not in self.labels, name
        self.labels[name] = len(self.code)

    def net(self, size: int, offset: int) -> None:
        """A = the ``size`` bytes at X + ``offset`` from the network header (where ``base`` says it is)."""
        self.op(LD | size | IND, self.base + offset)

    def program(self) -> list[tuple[int, int, int, int]]:
        out = []
        for at, (code, true, false, k) in enumerate(self.code):
            if isinstance(k, str):  # ja: a 32-bit offset
                out.append((code, 0, 0, self._distance(at, k)))
                continue
            jt = self._distance(at, true) if true is not None else 0
            jf = 1 if false == "+1" else self._distance(at, false) if false is not None else 0
            if jt > 255 or jf > 255:
                raise ValueError(f"conditional jump too far at {at}")
            out.append((code, jt, jf, k & 0xFFFFFFFF))
        if len(out) > MAX_INSNS:
            raise ValueError(f"program of {len(out)} instructions")
        return out

    def _distance(self, at: int, label: str) -> int:
        target = self.labels[label]
        if target <= at:
            raise ValueError(f"backward jump to {label}")
        return target - at - 1


def _advance(asm: _Assembler, by: int) -> None:
    """X += ``by`` (A is lost)."""
    asm.op(MISC | TXA)
    asm.op(ALU | ADD | K, by)
    asm.op(MISC | TAX)


def _sum_into_hash(asm: _Assembler) -> None:
    """M_HASH += A (X is lost)."""
    asm.op(LDX | MEM, M_HASH)
    asm.op(ALU | ADD | X)
    asm.op(ST, M_HASH)


def _ethertype_dispatch(asm: _Assembler, level: str) -> None:
    """A = an ethertype, X = where its payload starts: VLAN tags, then IPv4 or IPv6 of ``level``."""
    for tag in range(VLAN_TAGS + 1):
        last = tag == VLAN_TAGS
        for vlan in () if last else VLAN_TYPES:
            asm.jump(JEQ, vlan, f"{level}_vlan{tag}")
        asm.jump(JEQ, ETH_IPV4, f"{level}_v4")
        asm.jump(JEQ, ETH_IPV6, f"{level}_v6")
        if level == "outer":
            asm.jump(JEQ, ETH_MPLS, "mpls")
            asm.jump(JEQ, ETH_MPLS_MC, "mpls")
            asm.jump(JEQ, ETH_PPPOE, "pppoe")
        asm.goto(f"{level}_none")
        if not last:
            asm.label(f"{level}_vlan{tag}")
            asm.net(H, 2)  # the tag's ethertype, after its 2-byte TCI
            asm.op(ST, M_TMP)
            _advance(asm, 4)
            asm.op(LD | MEM, M_TMP)


def _ipv4(asm: _Assembler, level: str) -> None:
    asm.label(f"{level}_v4")
    asm.op(STX, M_L3)
    asm.net(W, 12)
    asm.op(ST, M_HASH)  # the addresses replace what an outer level summed
    asm.net(W, 16)
    _sum_into_hash(asm)
    asm.op(LDX | MEM, M_L3)
    asm.net(H, 6)
    asm.jump(JSET, 0x3FFF, f"{level}_addresses")  # a fragment: no ports in most of its pieces
    asm.net(B, 0)
    asm.op(ALU | AND | K, 0x0F)
    asm.op(ALU | LSH | K, 2)
    asm.op(ALU | ADD | X)
    asm.op(ST, M_L4)
    asm.net(B, 9)
    _protocol_dispatch(asm, level)


def _ipv6(asm: _Assembler, level: str) -> None:
    asm.label(f"{level}_v6")
    asm.op(STX, M_L3)
    asm.net(W, 8)
    asm.op(ST, M_HASH)
    for offset in range(12, 40, 4):
        asm.net(W, offset)
        _sum_into_hash(asm)
        asm.op(LDX | MEM, M_L3)
    asm.op(MISC | TXA)
    asm.op(ALU | ADD | K, 40)
    asm.op(ST, M_L4)
    asm.net(B, 6)  # the next header: TCP or a tunnel right after the fixed header (extension headers: addresses)
    _protocol_dispatch(asm, level)


def _protocol_dispatch(asm: _Assembler, level: str) -> None:
    asm.jump(JEQ, 6, f"{level}_ports")
    if level == "outer":
        asm.jump(JEQ, 17, "udp")
        asm.jump(JEQ, 47, "gre")
        asm.jump(JEQ, 4, "in_ip4")
        asm.jump(JEQ, 41, "in_ip6")
    asm.goto(f"{level}_addresses")


def _ports(asm: _Assembler, level: str) -> None:
    """The ports at M_L4 added to the addresses' sum."""
    asm.label(f"{level}_ports")
    asm.op(LDX | MEM, M_L4)
    asm.net(H, 0)
    asm.op(ST, M_TMP)
    asm.net(H, 2)
    asm.op(LDX | MEM, M_TMP)
    asm.op(ALU | ADD | X)
    _sum_into_hash(asm)
    asm.goto("mix")
    asm.label(f"{level}_addresses")
    asm.goto("mix")


def _udp(asm: _Assembler) -> None:
    asm.label("udp")
    asm.op(LDX | MEM, M_L4)
    asm.net(H, 2)
    for port in VXLAN_PORTS:
        asm.jump(JEQ, port, "vxlan")
    asm.jump(JEQ, GPE_PORT, "gpe")
    asm.jump(JEQ, GENEVE_PORT, "geneve")
    asm.goto("outer_addresses")  # no TCP flow is read from UDP; another tunnel's source port differs each way
    asm.label("vxlan")
    _advance(asm, 16)  # UDP and VXLAN headers, then Ethernet
    asm.goto("inner_ethernet")
    asm.label("gpe")
    asm.net(B, 11)  # the next protocol: 1 IPv4, 2 IPv6, 3 Ethernet
    asm.op(ST, M_TMP)
    _advance(asm, 16)
    asm.op(LD | MEM, M_TMP)
    asm.jump(JEQ, 3, "inner_ethernet")
    asm.jump(JEQ, 1, "gpe_ipv4")
    asm.jump(JEQ, 2, "gpe_ipv6")
    asm.goto("inner_none")
    asm.label("gpe_ipv4")
    asm.op(LD | IMM, ETH_IPV4)
    asm.goto("inner")
    asm.label("gpe_ipv6")
    asm.op(LD | IMM, ETH_IPV6)
    asm.goto("inner")
    asm.label("geneve")
    asm.net(B, 8)  # options length, in 4-byte words
    asm.op(ALU | AND | K, 0x3F)
    asm.op(ALU | LSH | K, 2)
    asm.op(ALU | ADD | K, 16)
    asm.op(ALU | ADD | X)
    asm.op(ST, M_CUR)
    asm.net(H, 10)  # the protocol of what follows
    asm.op(LDX | MEM, M_CUR)
    asm.jump(JEQ, ETH_TEB, "inner_ethernet")
    asm.goto("inner")


def _gre(asm: _Assembler) -> None:
    """GRE: 4 bytes, and 4 more for each of checksum, key and sequence number present."""
    asm.label("gre")
    asm.op(LDX | MEM, M_L4)
    asm.net(H, 0)
    asm.op(ST, M_FLAGS)
    asm.op(MISC | TXA)
    asm.op(ALU | ADD | K, 4)
    asm.op(ST, M_CUR)
    for bit, name in ((0x8000, "csum"), (0x2000, "key"), (0x1000, "seq")):
        asm.op(LD | MEM, M_FLAGS)
        asm.jump(JSET, bit, None, f"gre_no_{name}")
        asm.op(LD | MEM, M_CUR)
        asm.op(ALU | ADD | K, 4)
        asm.op(ST, M_CUR)
        asm.label(f"gre_no_{name}")
    asm.net(H, 2)  # the protocol (X is still the GRE header)
    asm.op(LDX | MEM, M_CUR)
    asm.jump(JEQ, ETH_IPV4, "inner")
    asm.jump(JEQ, ETH_IPV6, "inner")
    asm.jump(JEQ, ETH_TEB, "inner_ethernet")
    asm.jump(JEQ, ETH_ERSPAN2, "erspan2")
    asm.jump(JEQ, ETH_ERSPAN3, "erspan3")
    asm.goto("outer_addresses")
    asm.label("erspan2")  # type II carries a sequence number and an 8-byte header; type I neither
    asm.op(LD | MEM, M_FLAGS)
    asm.jump(JSET, 0x1000, None, "inner_ethernet")
    _advance(asm, 8)
    asm.goto("inner_ethernet")
    asm.label("erspan3")  # 12 bytes, and an 8-byte platform subheader when its O flag is set
    asm.net(B, 11)
    asm.jump(JSET, 0x01, None, "erspan3_short")
    _advance(asm, 20)
    asm.goto("inner_ethernet")
    asm.label("erspan3_short")
    _advance(asm, 12)
    asm.goto("inner_ethernet")


def _in_ip(asm: _Assembler) -> None:
    for name, ethertype in (("in_ip4", ETH_IPV4), ("in_ip6", ETH_IPV6)):
        asm.label(name)
        asm.op(LDX | MEM, M_L4)
        asm.op(LD | IMM, ethertype)
        asm.goto("inner")


def _mpls_and_pppoe(asm: _Assembler) -> None:
    """The packet inside an MPLS stack (its first nibble says IPv4 or IPv6) and inside a PPPoE session."""
    asm.label("mpls")
    for _ in range(MPLS_LABELS):
        asm.net(W, 0)
        asm.op(ST, M_TMP)
        _advance(asm, 4)
        asm.op(LD | MEM, M_TMP)
        asm.jump(JSET, 0x100, "mpls_bottom", None)  # the bottom of the stack
    asm.goto("outer_none")
    asm.label("mpls_bottom")
    asm.net(B, 0)
    asm.op(ALU | RSH | K, 4)
    asm.jump(JEQ, 4, "label_ipv4")
    asm.jump(JEQ, 6, "label_ipv6")
    asm.goto("outer_none")
    asm.label("pppoe")
    asm.net(H, 6)  # PPP's protocol after the 6-byte session header
    asm.op(ST, M_TMP)
    _advance(asm, 8)
    asm.op(LD | MEM, M_TMP)
    asm.jump(JEQ, 0x0021, "label_ipv4")
    asm.jump(JEQ, 0x0057, "label_ipv6")
    asm.goto("outer_none")
    for name, ethertype in (("label_ipv4", ETH_IPV4), ("label_ipv6", ETH_IPV6)):
        asm.label(name)
        asm.op(LD | IMM, ethertype)
        asm.goto("inner")  # read as a tunnel's packet: TCP inside is hashed by its 4-tuple


def flow_hash_program() -> list[tuple[int, int, int, int]]:
    """The program, as ``(code, jt, jf, k)`` rows of ``struct sock_filter``: one copy for received packets, whose
    data starts at their network header and is read through the kernel's ``skb_header_pointer`` (headers in page
    fragments included), one for packets the host sends, whose data starts at their link header and which are read
    through ``SKF_NET_OFF`` (a kernel before 6.15 reads only the linear part that way; a host builds its own
    headers there)."""
    asm = _Assembler()
    asm.op(LD | IMM, 0)
    asm.op(ST, M_HASH)  # the kernel wants every scratch slot written before it is read
    asm.op(LD | W | ABS, SKF_AD_OFF + SKF_AD_PKTTYPE)
    asm.jump(JEQ, PACKET_OUTGOING, "sent")
    asm.prefix, asm.base = "received_", 0
    _copy(asm)
    asm.prefix, asm.base = "", SKF_NET_OFF
    asm.label("sent")
    asm.prefix = "sent_"
    _copy(asm)
    return asm.program()


def _copy(asm: _Assembler) -> None:
    """The program for one load base: the flow's hash, returned."""
    asm.op(LD | W | ABS, SKF_AD_OFF + SKF_AD_PROTOCOL)
    asm.op(LDX | IMM, 0)
    _ethertype_dispatch(asm, "outer")
    _ipv4(asm, "outer")
    _ipv6(asm, "outer")
    _udp(asm)
    _gre(asm)
    _in_ip(asm)
    _mpls_and_pppoe(asm)
    _ports(asm, "outer")
    asm.label("inner_ethernet")  # X: an Ethernet header
    asm.net(H, 12)
    asm.op(ST, M_TMP)
    _advance(asm, 14)
    asm.op(LD | MEM, M_TMP)
    asm.label("inner")  # A: an ethertype, X: where its packet starts
    _ethertype_dispatch(asm, "inner")
    _ipv4(asm, "inner")
    _ipv6(asm, "inner")
    _ports(asm, "inner")
    asm.label("outer_none")  # no IP header read: the first member
    asm.label("inner_none")  # a tunnel's non-IP payload: the tunnel's addresses
    asm.label("mix")
    asm.op(LD | MEM, M_HASH)
    for multiplier in (0x45D9F3B, 0x45D9F3B):
        asm.op(ST, M_TMP)
        asm.op(ALU | RSH | K, 16)
        asm.op(LDX | MEM, M_TMP)
        asm.op(ALU | XOR | X)
        asm.op(ALU | MUL | K, multiplier)
    asm.op(RET | RET_A)
