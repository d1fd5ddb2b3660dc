"""Shared helpers for the capture/reassembly tests: a recording handler and packet/capture writers."""

from __future__ import annotations

import gzip
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from passive.capture.flow import Chunk, CloseReason, Direction, Flow

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


# -- recording handler -------------------------------------------------------------------


@dataclass
class Recorded:
    flow: Flow
    events: list[tuple] = field(default_factory=list)
    chunks: tuple[list[Chunk], list[Chunk]] = field(default_factory=lambda: ([], []))
    gaps: list[tuple[Direction, int, int, float]] = field(default_factory=list)
    reason: CloseReason | None = None
    opened: bool = False

    def data(self, direction: Direction) -> bytes:
        return b"".join(c.data for c in self.chunks[direction])

    @property
    def client_data(self) -> bytes:
        return self.data(Direction.CLIENT_TO_SERVER)

    @property
    def server_data(self) -> bytes:
        return self.data(Direction.SERVER_TO_CLIENT)


class Recorder:
    """Handler factory that records every event per flow."""

    def __init__(self) -> None:
        self.flows: list[Recorded] = []

    def __call__(self, flow: Flow) -> _RecordingHandler:
        record = Recorded(flow)
        self.flows.append(record)
        return _RecordingHandler(record)

    def by_key(self) -> dict[str, Recorded]:
        return {r.flow.key: r for r in self.flows}

    def streams(self) -> list[tuple[str, str, bytes, bytes]]:
        """(client, server, client bytes, server bytes) per flow, sorted: comparable across runs."""
        return sorted((r.flow.client, r.flow.server, r.client_data, r.server_data) for r in self.flows)


class _RecordingHandler:
    def __init__(self, record: Recorded) -> None:
        self.record = record

    def on_open(self, flow: Flow) -> None:
        self.record.opened = True
        self.record.events.append(("open",))

    def on_data(self, flow: Flow, direction: Direction, chunk: Chunk) -> None:
        self.record.chunks[direction].append(chunk)
        self.record.events.append(("data", direction, chunk.data))

    def on_gap(self, flow: Flow, direction: Direction, missing: int, frame: int, ts: float) -> None:
        self.record.gaps.append((direction, missing, frame, ts))
        self.record.events.append(("gap", direction, missing))

    def on_close(self, flow: Flow, reason: CloseReason) -> None:
        self.record.reason = reason
        self.record.events.append(("close", reason))


# -- packet builders ---------------------------------------------------------------------


def ip4(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, text)


def ip6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def tcp(sport: int, dport: int, seq: int, ack: int = 0, flags: int = ACK | PSH, payload: bytes = b"") -> bytes:
    return (
        struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0) + payload
    )


def ipv4(src: str, dst: str, payload: bytes, proto: int = 6, frag: int = 0x4000, total: int | None = None) -> bytes:
    length = 20 + len(payload) if total is None else total
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, 1, frag, 64, proto, 0, ip4(src), ip4(dst)) + payload


def ipv6(src: str, dst: str, payload: bytes, next_header: int = 6, ext: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """IPv6 packet; ``ext`` is a list of (header type, body) extension headers placed before ``payload``.

    Each body is padded so the header is a multiple of 8 bytes (fragment headers are exactly 8).
    """
    chain = b""
    types = [t for t, _ in ext] + [next_header]
    for index, (kind, body) in enumerate(ext):
        nxt = types[index + 1]
        if kind == 44:
            chain += bytes([nxt, 0]) + body[:6].ljust(6, b"\x00")
        elif kind == 51:
            raw = body.ljust(((len(body) + 2 + 3) // 4) * 4 - 2, b"\x00")
            chain += bytes([nxt, (len(raw) + 2) // 4 - 2]) + raw
        else:
            raw = body.ljust(((len(body) + 2 + 7) // 8) * 8 - 2, b"\x00")
            chain += bytes([nxt, (len(raw) + 2) // 8 - 1]) + raw
    first = types[0]
    body = chain + payload
    return struct.pack("!IHBB16s16s", 0x60000000, len(body), first, 64, ip6(src), ip6(dst)) + body


def ether(payload: bytes, ethertype: int = 0x0800, tags: Sequence[tuple[int, int]] = ()) -> bytes:
    head = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb"
    for tpid, vid in tags:
        head += struct.pack("!HH", tpid, vid)
    return head + struct.pack("!H", ethertype) + payload


def sll(payload: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00", protocol) + payload


def sll2(payload: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", protocol, 0, 2, 1, 0, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00") + payload


def null_header(payload: bytes, family: int = 2, byteorder: str = "<") -> bytes:
    return struct.pack(byteorder + "I", family) + payload


# -- capture writers ---------------------------------------------------------------------


def pcap_bytes(
    frames: Iterable[tuple[float, bytes]],
    linktype: int = 1,
    *,
    endian: str = "<",
    nanoseconds: bool = False,
    snaplen: int = 262144,
    caplen_limit: int | None = None,
) -> bytes:
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    scale = 1_000_000_000 if nanoseconds else 1_000_000
    for ts, frame in frames:
        sec = int(ts)
        frac = round((ts - sec) * scale)
        captured = frame if caplen_limit is None else frame[:caplen_limit]
        out.append(struct.pack(endian + "IIII", sec, frac, len(captured), len(frame)) + captured)
    return b"".join(out)


def _pcapng_block(block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def pcapng_bytes(interfaces: Sequence[int], packets: Iterable[tuple[int, float, bytes]], tsresol: int = 6) -> bytes:
    """pcapng with one interface per link type in ``interfaces``; packets are (interface index, ts, frame)."""
    out = [_pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for linktype in interfaces:
        options = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
        out.append(_pcapng_block(1, struct.pack("<HHI", linktype, 0, 262144) + options))
    units = 10**tsresol
    for iface, ts, frame in packets:
        stamp = round(ts * units)
        body = struct.pack("<IIIII", iface, stamp >> 32, stamp & 0xFFFFFFFF, len(frame), len(frame)) + frame
        out.append(_pcapng_block(6, body))
    return b"".join(out)


def write(path: Path, content: bytes, *, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


# -- a canned SMTP session ---------------------------------------------------------------

CLIENT, SERVER = ("10.0.0.1", 40000), ("10.0.0.2", 25)
SMTP_SERVER_LINES = [b"220 mx.example.com ESMTP ready\r\n", b"250-mx\r\n250 AUTH NTLM\r\n", b"221 bye\r\n"]
SMTP_CLIENT_LINES = [b"EHLO client\r\n", b"QUIT\r\n"]


def smtp_session_segments(
    client_isn: int = 1000, server_isn: int = 5000, client: tuple[str, int] = CLIENT, server: tuple[str, int] = SERVER
) -> list[tuple[tuple[str, int], tuple[str, int], int, int, int, bytes]]:
    """(src, dst, seq, ack, flags, payload) for a short complete SMTP session with handshake and FIN."""
    c, s = client_isn, server_isn
    segs = [
        (client, server, c, 0, SYN, b""),
        (server, client, s, c + 1, SYN | ACK, b""),
        (client, server, c + 1, s + 1, ACK, b""),
    ]
    c += 1
    s += 1
    greeting, ehlo_reply, bye = SMTP_SERVER_LINES
    ehlo, quit_ = SMTP_CLIENT_LINES
    for src, dst, payload in (
        (server, client, greeting),
        (client, server, ehlo),
        (server, client, ehlo_reply),
        (client, server, quit_),
        (server, client, bye),
    ):
        if src == server:
            segs.append((src, dst, s, c, PSH | ACK, payload))
            s += len(payload)
        else:
            segs.append((src, dst, c, s, PSH | ACK, payload))
            c += len(payload)
    segs += [
        (server, client, s, c, FIN | ACK, b""),
        (client, server, c, s + 1, FIN | ACK, b""),
        (server, client, s + 1, c + 1, ACK, b""),
    ]
    return segs


def ethernet_frames(
    segments: Iterable[tuple[tuple[str, int], tuple[str, int], int, int, int, bytes]], start: float = 1000.0
) -> list[tuple[float, bytes]]:
    frames = []
    for index, (src, dst, seq, ack, flags, payload) in enumerate(segments):
        frames.append(
            (start + index * 0.001, ether(ipv4(src[0], dst[0], tcp(src[1], dst[1], seq, ack, flags, payload))))
        )
    return frames
