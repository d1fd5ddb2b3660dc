"""A classic BPF interpreter for tests: runs a ``struct sock_filter`` program on a packet as the Linux kernel runs a
``PACKET_FANOUT_CBPF`` program (loads relative to the network header through ``SKF_NET_OFF``, the packet's protocol
through ``SKF_AD_PROTOCOL``; a load past the packet's end ends the program with 0). It also checks what the kernel's
checker checks of such a program: forward jumps within it, scratch memory written before it is read on every path,
a return at the end."""

from __future__ import annotations

from passive.capture.fanout_bpf import PACKET_OUTGOING, SKF_AD_OFF, SKF_AD_PKTTYPE, SKF_AD_PROTOCOL, SKF_NET_OFF

MEMWORDS = 16
MASK = 0xFFFFFFFF


def _signed(k: int) -> int:
    return k - (1 << 32) if k & 0x80000000 else k


def run(program: list[tuple[int, int, int, int]], network: bytes, protocol: int, link: bytes | None = None) -> int:
    """The program's return for a packet whose network header (and what follows) is ``network``: received, its data
    starts there; sent (``link``: its link header, in the data before the network header), at ``link``."""
    data = network if link is None else link + network
    a = x = 0
    memory = [0] * MEMWORDS
    pc = 0
    steps = 0
    while True:
        steps += 1
        assert steps <= len(program), "a loop (classic BPF jumps forward only)"
        code, jt, jf, k = program[pc]
        pc += 1
        cls, size, mode = code & 0x07, code & 0x18, code & 0xE0
        if cls in (0x00, 0x01):  # LD, LDX
            if mode == 0x00:  # IMM
                value = k
            elif mode == 0x60:  # MEM
                value = memory[k]
            elif mode in (0x20, 0x40):  # ABS, IND
                offset = _signed(k) + (x if mode == 0x40 else 0)
                width = {0x00: 4, 0x08: 2, 0x10: 1}[size]
                if offset == SKF_AD_OFF + SKF_AD_PROTOCOL:
                    value = protocol
                elif offset == SKF_AD_OFF + SKF_AD_PKTTYPE:
                    value = 0 if link is None else PACKET_OUTGOING
                else:
                    source, start = (data, offset) if offset >= 0 else (network, offset - SKF_NET_OFF)
                    assert offset >= 0 or offset >= SKF_NET_OFF, f"load outside the packet: {offset}"
                    if start + width > len(source):
                        return 0
                    value = int.from_bytes(source[start : start + width], "big")
            else:
                raise AssertionError(f"load mode {mode:#x}")
            if cls == 0x00:
                a = value
            else:
                x = value
        elif cls == 0x02:  # ST
            memory[k] = a
        elif cls == 0x03:  # STX
            memory[k] = x
        elif cls == 0x04:  # ALU
            operand = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x00:
                a = (a + operand) & MASK
            elif op == 0x20:
                a = (a * operand) & MASK
            elif op == 0x50:
                a &= operand
            elif op == 0x60:
                a = (a << operand) & MASK
            elif op == 0x70:
                a >>= operand
            elif op == 0xA0:
                a ^= operand
            else:
                raise AssertionError(f"ALU op {op:#x}")
        elif cls == 0x05:  # JMP
            op = code & 0xF0
            if op == 0x00:
                pc += k
            else:
                taken = a == k if op == 0x10 else bool(a & k) if op == 0x40 else None
                assert taken is not None, f"jump op {op:#x}"
                pc += jt if taken else jf
        elif cls == 0x06:  # RET
            return a if code & 0x10 else k
        elif cls == 0x07:  # MISC
            if code & 0x80:
                a = x
            else:
                x = a
        assert pc < len(program), "ran off the end"


def check(program: list[tuple[int, int, int, int]]) -> None:
    """What the kernel's checker asks of the program (bpf_check_classic, check_load_and_stores)."""
    assert 0 < len(program) <= 4096
    assert program[-1][0] & 0x07 == 0x06, "the last instruction returns"
    valid: list[int | None] = [None] * len(program)
    valid[0] = 0
    for pc, (code, jt, jf, k) in enumerate(program):
        here = valid[pc]
        if here is None:
            continue  # unreachable
        cls, mode = code & 0x07, code & 0xE0
        if cls in (0x00, 0x01) and mode == 0x60:
            assert here >> k & 1, f"scratch slot {k} read at {pc} before it is written on every path"
        if cls in (0x02, 0x03):
            here |= 1 << k
        targets = []
        if cls == 0x05:
            targets = [pc + 1 + k] if code & 0xF0 == 0x00 else [pc + 1 + jt, pc + 1 + jf]
        elif cls != 0x06:
            targets = [pc + 1]
        for target in targets:
            assert pc < target < len(program), f"jump from {pc} to {target}"
            valid[target] = here if valid[target] is None else valid[target] & here
