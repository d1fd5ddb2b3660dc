"""A differential fuzzer of the two packet scanners: the compiled one (``passive/capture/_scan.c``) and its Python
twin (``passive/capture/scanner.py``) must admit the same packets, as the same segments, with the same counters,
whatever the capture holds.

Frames are made from valid TCP segments (IPv4 and IPv6, mail and other ports, text and binary payloads) wrapped in
random tunnels (GRE with and without a key, NVGRE, ERSPAN, VXLAN on 4789 and 8472, VXLAN-GPE, Geneve with options,
MPLS over Ethernet, UDP 6635 and IP, PPPoE, IP in IP, VLAN tags), nested up to the decoders' depth and beyond, with
random virtual network ids; the outer packet is often cut into IPv4 or IPv6 fragments, which are reordered,
repeated, overlapped, lost and delayed. Then bytes are flipped, frames cut short, length and offset fields changed.
Both scanners read the same frames through ``scan`` (libpcap's buffer interface), in batches of a random size, and
receive the same verdicts (keep or drop a flow, keep a server) between batches, as the analysis would give them;
or from a file written as classic pcap or (a third of the time) pcapng, cut short at times.

    python fuzz/scanners.py --seconds 300            # run until then, a new seed per round
    python fuzz/scanners.py --seed 7 --rounds 1      # one round, replayable

Each round is one seed: a mismatch or exception names it. Run under AddressSanitizer (docs/hardening.md says how) to
check the compiled scanner's reads as well as its answers.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from passive.capture import scanread  # noqa: E402
from passive.capture.defrag import MAX_PIECES  # noqa: E402
from passive.capture.pcapfile import CaptureFormatError, PacketReader  # noqa: E402
from passive.capture.scanner import PyScanner  # noqa: E402

MAIL = (25, 110, 143, 587)
MAC = bytes.fromhex("020000000002020000000001")


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(proto: int, payload: bytes, rng: random.Random, *, ident: int | None = None, frag: int = 0) -> bytes:
    options = b"\x01" * 4 * rng.choice([0, 0, 0, 1, 2]) if rng.random() < 0.1 else b""
    ihl = 5 + len(options) // 4
    ident = rng.randrange(65536) if ident is None else ident
    header = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            0,
            20 + len(options) + len(payload),
            ident,
            frag,
            64,
            proto,
            0,
            bytes([10, rng.randrange(3), 0, 1]),
            bytes([10, rng.randrange(3), 0, 2]),
        )
        + options
    )
    return header[:10] + struct.pack("!H", _sum16(header)) + header[12:] + payload


def ipv6(next_header: int, payload: bytes, rng: random.Random) -> bytes:
    src = bytes.fromhex("20010db8000000000000000000000001")[:-1] + bytes([rng.randrange(1, 4)])
    dst = bytes.fromhex("20010db8000000000000000000000002")
    return struct.pack("!IHBB", 0x60000000, len(payload), next_header, 64) + src + dst + payload


def new_flow(rng: random.Random) -> dict[str, Any]:
    """A connection: its version, endpoints, sequence numbers, and the tunnel layers its packets travel in."""
    server = rng.choice((*MAIL, 2626, 8025, rng.randrange(1, 65536)))
    client = rng.choice([40000, 40001, rng.randrange(1024, 65536)])
    return {
        "version": 4 if rng.random() < 0.7 else 6,
        "client": client,
        "server": server,
        "host": rng.randrange(3),
        "seq": [rng.randrange(1 << 32), rng.randrange(1 << 32)],
        "layers": rng.choice([0, 1, 1, 1, 2, 3, 5]),
        "seed": rng.randrange(1 << 30),
        "text": rng.random() < 0.8,
        "quiet": rng.random() < 0.2,
    }


def tcp_segment(rng: random.Random, flow: dict[str, Any]) -> bytes:
    """The flow's next TCP segment in its IP packet: flags, sequence numbers and payload of a mail or other
    exchange, in small text pieces or binary; now and then a retransmission or a jump."""
    side = rng.randrange(2)
    sport, dport = (flow["client"], flow["server"]) if side == 0 else (flow["server"], flow["client"])
    flags = rng.choice([0x02, 0x12, 0x10, 0x18, 0x18, 0x18, 0x18, 0x18, 0x11, 0x04, 0x19])
    text = rng.choice(
        [
            b"EHLO client.example\r\n",
            b"220 mx.example ESMTP\r\n",
            b"AUTH NTLM\r\n",
            b"+OK\r\n",
            b"a1 CAPABILITY\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"",
            b"A",
            b"x" * 700,
            b"y" * rng.randrange(440, 540),  # cut in 8-byte pieces: about MAX_PIECES of them
        ]
    )
    binary = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    payload = text if flow["text"] or rng.random() < 0.3 else binary
    if flow["quiet"] and rng.random() < 0.7:  # mostly bare ACKs: the head's packets without new bytes
        flags, payload = 0x10, b""
    if flags & 0x06:
        payload = b""
    options = b""
    if flags & 0x02:
        options = b"\x02\x04\x05\xb4\x04\x02\x03\x03\x07\x01"[: rng.choice([0, 4, 10])]
        options += b"\0" * (-len(options) % 4)
    seq = flow["seq"][side]
    if rng.random() < 0.1:
        seq = (seq - rng.choice([1, len(payload), 100])) % (1 << 32)  # bytes seen again
    elif rng.random() < 0.03:
        seq = rng.randrange(1 << 32)
    flow["seq"][side] = (seq + len(payload) + (1 if flags & 0x03 else 0)) % (1 << 32)
    header = (
        struct.pack(
            "!HHIIBBHHH", sport, dport, seq, flow["seq"][1 - side], (5 + len(options) // 4) << 4, flags, 65535, 0, 0
        )
        + options
    )
    host = bytes([10, 9, 0, flow["host"]])
    if flow["version"] == 4:
        packet = ipv4(6, header + payload, rng)
        return packet[:12] + (host + packet[16:20] if side == 0 else packet[16:20] + host) + packet[20:]
    packet = ipv6(6, header + payload, rng)
    return packet


def _eth(ethertype: int, payload: bytes, rng: random.Random) -> bytes:
    """An Ethernet frame, now and then with VLAN tags (more than the decoders take, at times)."""
    tags = [rng.choice([0x8100, 0x88A8]) for _ in range(rng.choice([1, 2, 4]) if rng.random() < 0.1 else 0)]
    types = [*tags, ethertype]
    header = MAC + struct.pack("!H", types[0])
    for following in types[1:]:
        header += struct.pack("!HH", rng.randrange(4096), following)
    return header + payload


LINKTYPES = (1, 1, 1, 113, 276, 101, 0, 108)


def relink(linktype: int, frame: bytes, rng: random.Random) -> bytes:
    """An Ethernet frame under another link layer (Linux cooked v1 and v2, raw IP, BSD loopback): its ethertype
    and payload, under that link layer's header."""
    if linktype == 1 or len(frame) < 14:
        return frame
    ethertype, payload = frame[12] << 8 | frame[13], frame[14:]
    if linktype == 113:
        return struct.pack("!HHH8sH", rng.choice([0, 4]), 1, 6, MAC[:8], ethertype) + payload
    if linktype == 276:
        return struct.pack("!HHIHBB8s", ethertype, 0, 2, 1, 0, 6, MAC[:8]) + payload
    if linktype == 101:
        return payload
    family = 2 if ethertype == 0x0800 else rng.choice([10, 24, 28, 30]) if ethertype == 0x86DD else 7
    return struct.pack("<I" if linktype == 0 and rng.random() < 0.8 else ">I", family) + payload


def _labels(rng: random.Random) -> bytes:
    count = rng.choice([1, 1, 2, 3, 17]) if rng.random() < 0.95 else rng.randrange(1, 20)
    out = b""
    for i in range(count):
        bottom = 1 if i == count - 1 else 0
        out += struct.pack("!I", rng.randrange(16, 1 << 20) << 12 | bottom << 8 | 64)
    return out


def wrap(kind: str, data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One more layer around ``data`` (of ``kind``: ip4, ip6, eth, mpls): the new kind and bytes."""
    ip_kind = kind if kind in ("ip4", "ip6") else None
    choice = rng.choice(
        [
            "gre",
            "gre",
            "nvgre",
            "erspan",
            "vxlan",
            "vxlan",
            "gpe",
            "geneve",
            "mpls-udp",
            "mpls-ip",
            "ipip",
            "eth-mpls",
            "pppoe",
        ]
    )
    vni = rng.choice([0, 1, 5000, 0xFFFFFF, rng.randrange(1 << 24)])

    def eth_inner() -> bytes:
        if kind == "eth":
            return data
        return _eth({"ip4": 0x0800, "ip6": 0x86DD, "mpls": 0x8847}[kind], data, rng)

    def ip_inner() -> tuple[int, bytes]:
        if ip_kind:
            return (0x0800 if ip_kind == "ip4" else 0x86DD), data
        if kind == "mpls":
            return 0x8847, data
        return 0x6558, data

    def outer(proto: int, payload: bytes) -> tuple[str, bytes]:
        if rng.random() < 0.6:
            return "ip4", ipv4(proto, payload, rng)
        return "ip6", ipv6(proto, payload, rng)

    def udp(port: int, payload: bytes) -> bytes:
        return struct.pack("!HHHH", rng.randrange(49152, 65536), port, 8 + len(payload), 0) + payload

    if choice in ("gre", "nvgre"):
        ethertype, inner = (0x6558, eth_inner()) if choice == "nvgre" else ip_inner()
        flags = rng.choice([0, 0x20, 0x20, 0x30, 0xB0, 0x10])
        header = struct.pack("!BBH", flags, 0, ethertype)
        if flags & 0x80:
            header += b"\0\0\0\0"
        if flags & 0x20:
            header += struct.pack("!I", vni << 8 | rng.randrange(256) if choice == "nvgre" else rng.randrange(1 << 32))
        if flags & 0x10:
            header += struct.pack("!I", rng.randrange(1 << 32))
        return outer(47, header + inner)
    if choice == "erspan":
        flags = rng.choice([0, 0x10])
        header = struct.pack("!BBH", flags, 0, 0x88BE) + (struct.pack("!I", 7) if flags else b"")
        erspan = struct.pack("!II", 0x10000000 | rng.randrange(1024) << 16, rng.randrange(1 << 20)) if flags else b""
        return outer(47, header + erspan + eth_inner())
    if choice in ("vxlan", "gpe"):
        if choice == "gpe" and kind != "eth":
            protocol = {"ip4": 1, "ip6": 2, "mpls": 5}[kind]
            return outer(17, udp(4790, struct.pack("!BBBB", 0x0C, 0, 0, protocol) + struct.pack("!I", vni << 8) + data))
        port = rng.choice([4789, 8472])
        return outer(17, udp(port, struct.pack("!I", 0x08000000) + struct.pack("!I", vni << 8) + eth_inner()))
    if choice == "geneve":
        ethertype, inner = ip_inner()
        if ethertype == 0x6558:
            inner = eth_inner()
        options = bytes(rng.randrange(256) for _ in range(4 * rng.choice([0, 0, 1, 3])))
        header = struct.pack("!BBH", len(options) // 4, 0, ethertype) + struct.pack("!I", vni << 8) + options
        return outer(17, udp(6081, header + inner))
    if choice in ("mpls-udp", "mpls-ip", "eth-mpls"):
        if kind == "mpls":
            stack = data
        elif kind == "eth":
            stack = _labels(rng) + (b"\0\0\0\0" if rng.random() < 0.5 else b"") + data
        else:
            stack = _labels(rng) + data
        if choice == "mpls-udp":
            return outer(17, udp(6635, stack))
        if choice == "mpls-ip":
            return outer(137, stack)
        return "eth", _eth(0x8847, stack, rng)
    if choice == "pppoe" and ip_kind:
        ppp = struct.pack("!H", 0x0021 if ip_kind == "ip4" else 0x0057) + data
        return "eth", _eth(0x8864, struct.pack("!BBHH", 0x11, 0, rng.randrange(65536), len(ppp)) + ppp, rng)
    if ip_kind:
        return outer(4 if ip_kind == "ip4" else 41, data)
    return wrap(kind, data, rng)


def fragments(kind: str, packet: bytes, rng: random.Random) -> list[bytes]:
    """The IP packet ``packet`` cut into pieces (outer fragmentation), as network-layer packets; some pieces
    overlap, some sizes are not multiples of 8, the offsets are sometimes wrong."""
    if kind == "ip4":
        ihl = (packet[0] & 0x0F) * 4
        header, payload, proto = packet[:ihl], packet[ihl:], packet[9]
    else:
        header, payload, proto = packet[:40], packet[40:], packet[6]
    ident = rng.choice([1, 2, rng.randrange(1 << 16)])
    size = rng.choice([8, 24, 64, 96, 200, 200, 1000, 1000]) if rng.random() < 0.9 else rng.randrange(1, 300)
    count = rng.choice([MAX_PIECES - 1, MAX_PIECES, MAX_PIECES + 1])
    exact = rng.random() < 0.1 and len(payload) > 8 * count  # exactly about MAX_PIECES pieces: a larger first one
    first = (len(payload) - 8 * (count - 1) - 1) // 8 * 8 + 8 if exact else size
    pieces = []
    start = 0
    while start < len(payload) or start == 0:
        end = min(len(payload), start + (first if start == 0 else 8 if exact else size))
        more = end < len(payload)
        offset = start if exact or rng.random() < 0.97 else rng.randrange(0, 65536 // 8) * 8
        chunk = payload[start:end]
        if kind == "ip4":
            field = offset // 8 | (0x2000 if more else 0)
            piece = bytearray(header)
            struct.pack_into("!HHH", piece, 2, len(header) + len(chunk), ident, field)
            pieces.append(bytes(piece) + chunk)
        else:
            fragment = struct.pack("!BBHI", proto, 0, offset & 0xFFF8 | more, ident)
            piece = bytearray(header)
            struct.pack_into("!HB", piece, 4, 8 + len(chunk), 44)
            pieces.append(bytes(piece) + fragment + chunk)
        if end >= len(payload):
            break
        overlap = rng.choice([8, 1]) if not exact and rng.random() < 0.05 else 0  # overlaps now and then
        start = max(start + 1, end - overlap)
    trick = rng.random()
    if trick < 0.15:
        rng.shuffle(pieces)
    elif trick < 0.25:
        pieces.insert(rng.randrange(len(pieces) + 1), rng.choice(pieces))
    elif trick < 0.3 and len(pieces) > 1:
        del pieces[rng.randrange(len(pieces))]
    elif trick < 0.4 and len(pieces) > 1:
        del pieces[-1]  # a datagram left open: many of them fill the defragmenter
    return pieces


def mutate(frame: bytes, rng: random.Random) -> bytes:
    """Damage: bit flips, a cut, a length or offset field of some header changed, bytes inserted or removed."""
    data = bytearray(frame)
    for _ in range(rng.choice([1, 1, 2, 3])):
        how = rng.random()
        if not data:
            break
        if how < 0.35:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif how < 0.5:
            del data[rng.randrange(len(data) + 1) :]
        elif how < 0.75:  # a 16-bit field somewhere in the headers: lengths, offsets, ports, protocols
            at = rng.randrange(min(len(data), 160))
            value = rng.choice([0, 1, 7, 8, 20, 40, 0x2000, 0x3FFF, 0xFFF9, 0xFFFF, rng.randrange(65536)])
            data[at : at + 2] = value.to_bytes(2, "big")[: len(data) - at]
        elif how < 0.9:
            data[rng.randrange(len(data))] = rng.choice([0, 4, 6, 17, 41, 44, 47, 137, 0x45, 0x60, 0xFF])
        elif how < 0.95:
            at = rng.randrange(len(data) + 1)
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 8])))
        else:
            at = rng.randrange(len(data))
            del data[at : at + rng.choice([1, 4, 8])]
    return bytes(data)


def frames(rng: random.Random, count: int, linktype: int = 1, heads: bool = False) -> list[tuple[float, bytes]]:
    """``count`` or so frames (pieces counted) of a few flows at a time (or of many, short ones), with their capture
    times, under ``linktype``; with ``heads``, whole and undamaged frames of many flows typing text in small pieces
    (the flow head's extension slots and limits)."""
    out: list[tuple[float, bytes]] = []
    clock = 1_800_000_000.0
    flows = [new_flow(rng) for _ in range(rng.choice([1, 3, 8, 40, 100]) if not heads else rng.choice([3, 100]))]
    renew = rng.choice([0.02, 0.02, 0.3]) if not heads else 0.001
    crowd = rng.choice([0.25, 0.25, 0.9])  # the share of packets cut into pieces
    held: list[tuple[int, bytes]] = []  # last pieces held back: (when to send, frame)

    def tick() -> float:
        nonlocal clock
        jump = rng.choice([0.0001, 0.001, 0.5, 11.0, 29.9, 30.0, 30.1, 31.0, 301.0])  # FRAGMENT_TIMEOUT, idle
        clock += jump if rng.random() < (0.0005 if crowd > 0.5 else 0.03) else 0.0001  # crowds: few expire
        return clock

    for flow in flows if heads else ():
        flow["server"], flow["text"] = rng.randrange(1024, 65536), True  # on no named port: the head decides
    while len(out) < count:
        index = rng.randrange(len(flows))
        if rng.random() < renew:
            flows[index] = new_flow(rng)
        flow = flows[index]
        kind, data = ("ip4" if flow["version"] == 4 else "ip6"), tcp_segment(rng, flow)
        layers = random.Random(flow["seed"]) if rng.random() < 0.9 else rng  # a flow's tunnels, mostly the same
        for _ in range(flow["layers"]):
            kind, data = wrap(kind, data, layers)
        if kind == "mpls":
            kind, data = "eth", _eth(0x8847, data, rng)
        cut = kind in ("ip4", "ip6") and rng.random() < (0.02 if heads else crowd)
        pieces = fragments(kind, data, rng) if cut else [data]
        damaged = rng.randrange(len(pieces)) if rng.random() < (0.01 if heads else 0.15) else -1  # one piece
        for number, piece in enumerate(pieces):
            frame = piece if kind == "eth" else _eth(0x0800 if kind == "ip4" else 0x86DD, piece, rng)
            frame = relink(linktype, frame, rng)
            if number == damaged:
                frame = mutate(frame, rng)
            if cut and number == len(pieces) - 1 and rng.random() < crowd / 2:
                later = rng.randrange(1, 2000 if crowd > 0.5 else 300)
                held.append((len(out) + later, frame))  # sent later: many datagrams open at once
                continue
            out.append((tick(), frame))
        held.sort(key=lambda item: item[0])
        while held and held[0][0] <= len(out):
            out.append((tick(), held.pop(0)[1]))
    return out


def buffers(batch: list[tuple[float, bytes]]) -> tuple[bytes, bytes]:
    """libpcap ``next_batch`` output: the frames one after the other, and their (sec, usec, offset, caplen)."""
    buf, meta = bytearray(), bytearray()
    for ts, frame in batch:
        sec = int(ts)
        meta += struct.pack("=IIII", sec, round((ts - sec) * 1e6) % 1000000, len(buf), len(frame))
        buf += frame
    return bytes(buf), bytes(meta)


def _block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return struct.pack(order + "II", block_type, len(body) + 12) + body + struct.pack(order + "I", len(body) + 12)


def pcapng_bytes(made: list[tuple[float, bytes]], linktype: int, rng: random.Random) -> bytearray:
    """The frames as pcapng (either byte order; microseconds, nanoseconds or 2^-20 s; enhanced or simple packet
    blocks, an unknown block now and then)."""
    order = "<" if rng.random() < 0.7 else ">"
    resolution, units = rng.choice([(6, 1e6), (9, 1e9), (0x94, 2.0**20)])
    out = bytearray(_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    option = struct.pack(order + "HHB3x", 9, 1, resolution) + struct.pack(order + "HH", 0, 0)
    out += _block(order, 1, struct.pack(order + "HHI", linktype, 0, 262144) + option)
    simple = rng.random() < 0.1
    for ts, frame in made:
        if simple:
            out += _block(order, 3, struct.pack(order + "I", len(frame)) + frame)
        else:
            stamp = round(ts * units)
            header = struct.pack(order + "IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF, len(frame), len(frame))
            out += _block(order, 6, header + frame)
        if rng.random() < 0.01:
            out += _block(order, 0x0BAD, bytes(rng.randrange(64)))
    return out


def pcap_file(path: Path, made: list[tuple[float, bytes]], linktype: int, rng: random.Random) -> Path:
    """The frames as a classic pcap file (little or big endian, microseconds, FCS bits in the link type at times), or
    a third of the time as pcapng; now and then cut short at its end."""
    order = "<" if rng.random() < 0.7 else ">"
    network = linktype | rng.choice([0, 0x14000000])
    out = bytearray(struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, network))
    for ts, frame in made:
        sec = int(ts)
        out += struct.pack(order + "IIII", sec, round((ts - sec) * 1e6) % 1000000, len(frame), len(frame)) + frame
    if rng.random() < 0.33:
        out = pcapng_bytes(made, linktype, rng)
    if rng.random() < 0.2:
        del out[len(out) - rng.randrange(1, 40) :]
    path.write_bytes(bytes(out))
    return path


def _plain(items: list[Any]) -> list[Any]:
    return [(frame, ts, None if seg is None else tuple(seg)) for frame, ts, seg in items]


def compare(seed: int, count: int = 400, native: Any = None, directory: Path | None = None) -> dict[str, int]:
    """One round: both scanners over the same frames and verdicts; raises AssertionError at the first difference.
    Returns the compiled scanner's counters. With ``directory``, some rounds read the frames from a pcap file
    written there (the compiled scanner's own file reader)."""
    rng = random.Random(seed)
    heads = rng.random() < 0.2
    every_port = heads or rng.random() < 0.6
    ports = MAIL if heads or rng.random() < 0.8 else range(65536)
    settings = {
        "ports": frozenset(ports),
        "every_port": every_port,
        "head": rng.choice([1, 2, 4, 12]),
        "sweep_every": rng.choice([0.0, 0.0, 5.0]),
        "idle_timeout": rng.choice([300.0, 10.0]),
        "batch_packets": rng.choice([1, 2, 7, 256]),
    }
    if rng.random() < 0.15:  # one worker of a sharded run
        settings["shards"] = rng.choice([2, 3])
        settings["shard"] = rng.randrange(settings["shards"])
    module = native or scanread._cscan
    compiled, python = module.Scanner(None, **settings), PyScanner(None, **settings)
    linktype = rng.choice(LINKTYPES)
    verdicts = 0.0 if heads else rng.choice([0.0, 0.05, 0.3])  # the share of segments Python gives a verdict on
    data = frames(rng, count * 8 if heads else count, linktype, heads)
    if directory is not None and rng.random() < 0.3:
        return _compare_files(seed, rng, settings, data, linktype, verdicts, directory, module)
    records = 0
    while records < len(data):
        chunk = data[records : records + rng.choice([1, 16, 64, 500])]
        buf, meta = buffers(chunk)
        start, frame = 0, records
        while start < len(chunk):
            got_c = compiled.scan(buf, meta, linktype, frame, start)
            got_p = python.scan(buf, meta, linktype, frame, start)
            assert _plain(got_c[0]) == _plain(got_p[0]), f"seed {seed}: items differ at record {records + start}"
            assert got_c[1:] == got_p[1:], f"seed {seed}: cursor differs at record {records + start}"
            assert compiled.counters() == python.counters(), f"seed {seed}: counters differ"
            assert compiled.flows == python.flows, f"seed {seed}: flow tables differ"
            _verdicts(rng, got_c[0], verdicts, (compiled, python))
            if got_c[1] == start and not got_c[0]:
                raise AssertionError(f"seed {seed}: no progress at record {records + start}")
            start, frame = got_c[1], got_c[2]
        records += len(chunk)
    assert compiled.counters() == python.counters(), f"seed {seed}: counters differ at the end"
    return compiled.counters()


def _verdicts(rng: random.Random, items: list[Any], share: float, scanners: tuple[Any, Any]) -> None:
    """The analysis's verdicts on some of the segments admitted, the same for both scanners."""
    for _frame, ts, seg in items:
        if seg is None:
            continue
        pick = rng.random() / share if share else 1.0
        flow = (seg[0], seg[2], seg[1], seg[3], seg[9] >> 16)
        if pick < 0.5:
            for scanner in scanners:
                (scanner.keep_flow if pick < 0.25 else scanner.drop_flow)(*flow)
        elif pick < 0.55:
            assert scanners[0].keep_server(seg[1], seg[3]) == scanners[1].keep_server(seg[1], seg[3])
        elif pick < 0.8:  # what follows may be dropped unread (skipping.py): a body, a literal, ciphertext
            rules = []
            for following in ((seg[4] + seg[8]) & 0xFFFFFFFF, seg[5]):
                rules += [rng.choice([0, 1, 2, 3, 3]), following, rng.choice([1, 100, 1 << 20]), rng.random() < 0.5]
            armed = [
                scanner.skip_flow(seg[0], seg[2], seg[1], seg[3], ts, *rules, vnet=flow[4]) for scanner in scanners
            ]
            assert armed[0] == armed[1]


def _compare_files(
    seed: int,
    rng: random.Random,
    settings: dict[str, Any],
    data: list[tuple[float, bytes]],
    linktype: int,
    share: float,
    directory: Path,
    module: Any,
) -> dict[str, int]:
    path = pcap_file(directory / f"round-{seed}.pcap", data, linktype, rng)
    compiled = module.Scanner(str(path), **settings)
    python = PyScanner(PacketReader(path), **settings)
    try:
        while True:
            got_c = compiled.next_batch()
            try:
                got_p = python.next_batch()
            except CaptureFormatError:
                got_p = None  # the file cut short: the compiled reader says so in its error, and stops there too
                assert compiled.error and not got_c, f"seed {seed}: only the Python reader found damage"
            assert (got_c is None) == (got_p is None), f"seed {seed}: one scanner ended first"
            if got_c is None:
                break
            assert _plain(got_c) == _plain(got_p), f"seed {seed}: items differ (file)"
            assert compiled.counters() == python.counters(), f"seed {seed}: counters differ (file)"
            _verdicts(rng, got_c, share, (compiled, python))
        assert compiled.counters() == python.counters(), f"seed {seed}: counters differ at the end (file)"
        return compiled.counters()
    finally:
        compiled.close()
        path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--rounds", type=int, default=0, help="rounds to run (0: until --seconds)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--frames", type=int, default=400, help="frames per round")
    args = parser.parse_args()
    if not scanread.native_available():
        print(f"compiled scanner not built: {scanread.NATIVE_PROBLEM}", file=sys.stderr)
        return 2
    directory = Path(tempfile.mkdtemp(prefix="scanners-fuzz-"))
    began, seed, rounds, frames_seen, admitted = time.monotonic(), args.seed, 0, 0, 0
    while (args.rounds and rounds < args.rounds) or (not args.rounds and time.monotonic() - began < args.seconds):
        counts = compare(seed, args.frames, directory=directory)
        rounds, seed = rounds + 1, seed + 1
        frames_seen += counts["read"]
        admitted += counts["admitted"]
    print(
        f"{rounds} rounds (seeds {args.seed}..{seed - 1}), {frames_seen} frames read, {admitted} admitted, "
        f"{time.monotonic() - began:.1f} s: the scanners agree"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
