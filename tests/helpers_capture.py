"""Shared helpers for the capture/reassembly tests: a recording handler, packet builders (scapy) and capture
writers (scapy's PcapWriter and PcapNgWriter, and a hand-built pcapng writer for what they cannot express)."""

from __future__ import annotations

import gzip
import io
import socket
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from scapy.fields import Field, IntEnumField
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import LOOPBACK_TYPES, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether, Loopback
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter, PcapWriter

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


# -- packet builders (scapy) -------------------------------------------------------------------------------------
#
# Each builder returns a scapy packet, so the layers stack the usual way (lengths, next-header fields and checksums
# filled in by scapy); a payload may also be raw bytes. Writers take packets or bytes; bytes(packet) gives the wire
# form where a test needs bytes (the decoder, byte-level damage).


# The link-layer address in the cooked-capture headers: a MAC, padded to the field's 8 bytes.
MAC_8 = b"\x00\x11\x22\x33\x44\x55\x00\x00"


def ip4(text: str) -> bytes:
    """An IPv4 address as the decoder returns it (packed)."""
    return socket.inet_pton(socket.AF_INET, text)


def ip6(text: str) -> bytes:
    """An IPv6 address as the decoder returns it (packed)."""
    return socket.inet_pton(socket.AF_INET6, text)


def tcp(sport: int, dport: int, seq: int, ack: int = 0, flags: int = ACK | PSH, payload: bytes = b"") -> Packet:
    segment = TCP(sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, flags=flags, window=65535)
    return segment / Raw(payload) if payload else segment


def ipv4(
    src: str, dst: str, payload: Packet | bytes, proto: int = 6, frag: int = 0x4000, total: int | None = None
) -> Packet:
    """IPv4 packet; ``frag`` is the 16-bit flags-and-offset word (0x4000 DF, 0x2000 MF, low 13 bits the offset in
    8-byte units) and ``total`` overrides the total-length field."""
    packet = IP(src=src, dst=dst, id=1, ttl=64, proto=proto, flags=frag >> 13, frag=frag & 0x1FFF, len=total)
    return packet / _layer(payload)


def ipv6(src: str, dst: str, payload: Packet | bytes, next_header: int = 6, ext: Sequence[Packet] = ()) -> Packet:
    """IPv6 packet with the extension headers ``ext`` (scapy layers such as IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
    IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, AH) before ``payload``; ``next_header`` is the last header's next header,
    the protocol of ``payload``."""
    packet = IPv6(src=src, dst=dst, hlim=64)
    for header in ext:
        packet /= header
    # scapy chains the extension headers itself but leaves AH's next header, and a raw payload, unnamed.
    packet.lastlayer().nh = next_header
    return packet / _layer(payload)


def ether(payload: Packet | bytes, ethertype: int | None = None, tags: Sequence[tuple[int, int]] = ()) -> Packet:
    """Ethernet frame; ``tags`` are (TPID, VLAN id) pairs, outermost first: 802.1ad (0x88A8) as Dot1AD, 802.1Q and
    the old 0x9100 QinQ as Dot1Q. ``ethertype`` defaults to the one scapy picks for the payload (IPv4 for bytes)."""
    frame = Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb")
    for tpid, vid in tags:
        frame.lastlayer().type = tpid
        frame /= (Dot1AD if tpid == 0x88A8 else Dot1Q)(vlan=vid)
    if ethertype is not None or not isinstance(payload, Packet):
        frame.lastlayer().type = 0x0800 if ethertype is None else ethertype
    return frame / _layer(payload)


def sll(payload: Packet | bytes, protocol: int = 0x0800) -> Packet:
    """Linux cooked capture v1 (DLT_LINUX_SLL) header, as for a packet sent to us over Ethernet."""
    return CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=MAC_8, proto=protocol) / _layer(payload)


def sll2(payload: Packet | bytes, protocol: int = 0x0800) -> Packet:
    """Linux cooked capture v2 (DLT_LINUX_SLL2) header, on interface index 2."""
    return CookedLinuxV2(proto=protocol, ifindex=2, lladdrtype=1, pkttype=0, lladdrlen=6, src=MAC_8) / _layer(payload)


class LoopbackBE(Packet):
    """The BSD loopback header (DLT_NULL, DLT_LOOP) in big-endian order. scapy's Loopback writes the family in the
    host's order (little-endian here) and has a big-endian twin only when running on OpenBSD."""

    name = "Loopback (big-endian)"
    fields_desc: ClassVar[list[Field]] = [IntEnumField("type", 2, LOOPBACK_TYPES)]


def null_header(payload: Packet | bytes, family: int = 2, byteorder: str = "<") -> Packet:
    """DLT_NULL/DLT_LOOP header: the address family (2 AF_INET; 24, 28 or 30 AF_INET6 on the BSDs and macOS)."""
    header = Loopback(type=family) if byteorder == "<" else LoopbackBE(type=family)
    return header / _layer(payload)


def _layer(payload: Packet | bytes) -> Packet:
    return payload if isinstance(payload, Packet) else Raw(payload)


# -- capture writers ---------------------------------------------------------------------------------------------


def pcap_bytes(
    frames: Iterable[tuple[float, Packet | bytes]],
    linktype: int = 1,
    *,
    endian: str = "<",
    nanoseconds: bool = False,
    snaplen: int = 262144,
    caplen_limit: int | None = None,
) -> bytes:
    """A pcap file, written by scapy's PcapWriter; ``caplen_limit`` keeps only that much of each frame (the record
    still gives the full length on the wire)."""
    buffer = io.BytesIO()
    writer = PcapWriter(buffer, endianness=endian, nano=nanoseconds, snaplen=snaplen)
    writer.linktype = linktype  # set here: the constructor ignores 0 (DLT_NULL)
    writer.write_header(None)
    scale = 1_000_000_000 if nanoseconds else 1_000_000
    for ts, frame in frames:
        data = bytes(frame)
        sec = int(ts)
        captured = data if caplen_limit is None else data[:caplen_limit]
        writer.write_packet(captured, sec=sec, usec=round((ts - sec) * scale), wirelen=len(data))
    writer.flush()
    return buffer.getvalue()


def pcapng_bytes(frames: Iterable[tuple[float, Packet | bytes]], linktype: int = 1) -> bytes:
    """A pcapng file with one interface, written by scapy's PcapNgWriter (microsecond time stamps)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "capture.pcapng"
        writer = PcapNgWriter(str(path))  # it writes to a named file only
        writer.linktype = linktype
        writer.write_header(None)
        for ts, frame in frames:
            writer.write_packet(bytes(frame), sec=ts)
        writer.close()
        return path.read_bytes()


def _pcapng_block(block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def pcapng_bytes_tsresol(
    interfaces: Sequence[int],
    packets: Iterable[tuple[int, float, Packet | bytes]],
    tsresol: int = 6,
    options: bytes | None = None,
) -> bytes:
    """pcapng with one interface per link type in ``interfaces`` and the if_tsresol option (10^-tsresol seconds), or
    the interface ``options`` given as they are; packets are (interface index, ts, frame).

    Written by hand: scapy's PcapNgWriter always stamps microseconds and writes no if_tsresol option, and it opens
    a further interface only per capture-interface name, with a link type taken from the packet's class.
    """
    out = [_pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    if options is None:
        options = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
    for linktype in interfaces:
        out.append(_pcapng_block(1, struct.pack("<HHI", linktype, 0, 262144) + options))
    units = 10**tsresol
    for iface, ts, frame in packets:
        data = bytes(frame)
        stamp = round(ts * units)
        body = struct.pack("<IIIII", iface, stamp >> 32, stamp & 0xFFFFFFFF, len(data), len(data)) + data
        out.append(_pcapng_block(6, body))
    return b"".join(out)


def write(path: Path, content: bytes, *, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


# -- a canned SMTP session ---------------------------------------------------------------

CLIENT, SERVER = ("10.0.0.1", 40000), ("10.0.0.2", 25)
SMTP_SERVER_LINES = [b"220 mx.example.com ESMTP ready\r\n", b"250-mx\r\n250 AUTH NTLM\r\n", b"221 bye\r\n"]
SMTP_CLIENT_LINES = [b"EHLO client\r\n", b"QUIT\r\n"]


Segment = tuple[tuple[str, int], tuple[str, int], int, int, int, bytes]


def conversation_segments(
    turns: Iterable[tuple[bool, bytes]],
    client: tuple[str, int] = CLIENT,
    server: tuple[str, int] = SERVER,
    client_isn: int = 1000,
    server_isn: int = 5000,
    piece: int | None = None,
    acks: bool = False,
) -> list[Segment]:
    """(src, dst, seq, ack, flags, payload) for one TCP connection: the handshake, each turn (from_server, bytes)
    as one segment (or cut into ``piece``-byte segments), then FIN from the server, FIN from the client and the last
    ACK. With ``acks``, the peer sends a bare ACK after every second segment of a turn and after the turn."""
    c, s = client_isn, server_isn
    segs = [
        (client, server, c, 0, SYN, b""),
        (server, client, s, c + 1, SYN | ACK, b""),
        (client, server, c + 1, s + 1, ACK, b""),
    ]
    c += 1
    s += 1
    for from_server, payload in turns:
        parts = (
            [payload]
            if piece is None or not payload
            else [payload[i : i + piece] for i in range(0, len(payload), piece)]
        )
        for n, part in enumerate(parts):
            if from_server:
                segs.append((server, client, s, c, PSH | ACK, part))
                s += len(part)
            else:
                segs.append((client, server, c, s, PSH | ACK, part))
                c += len(part)
            if acks and n % 2:
                segs.append((client, server, c, s, ACK, b"") if from_server else (server, client, s, c, ACK, b""))
        if acks:
            segs.append((client, server, c, s, ACK, b"") if from_server else (server, client, s, c, ACK, b""))
    segs += [
        (server, client, s, c, FIN | ACK, b""),
        (client, server, c, s + 1, FIN | ACK, b""),
        (server, client, s + 1, c + 1, ACK, b""),
    ]
    return segs


def smtp_session_segments(
    client_isn: int = 1000, server_isn: int = 5000, client: tuple[str, int] = CLIENT, server: tuple[str, int] = SERVER
) -> list[Segment]:
    """A short complete SMTP session: greeting, EHLO, its reply, QUIT, bye."""
    greeting, ehlo_reply, bye = SMTP_SERVER_LINES
    ehlo, quit_ = SMTP_CLIENT_LINES
    turns = [(True, greeting), (False, ehlo), (True, ehlo_reply), (False, quit_), (True, bye)]
    return conversation_segments(turns, client, server, client_isn, server_isn)


def ethernet_frames(segments: Iterable[Segment], start: float = 1000.0) -> list[tuple[float, Packet]]:
    """(time, Ethernet/IPv4/TCP frame) per segment, a millisecond apart."""
    frames = []
    for index, (src, dst, seq, ack, flags, payload) in enumerate(segments):
        frames.append(
            (start + index * 0.001, ether(ipv4(src[0], dst[0], tcp(src[1], dst[1], seq, ack, flags, payload))))
        )
    return frames


def reached_segments(monkeypatch: Any) -> list[tuple[int, int, int]]:
    """(frame, source port, destination port) of every segment that reaches reassembly (``monkeypatch``: pytest's)."""
    from passive.capture.reassembly import Reassembler

    reached: list[tuple[int, int, int]] = []
    process = Reassembler.process

    def recording(self: Reassembler, segment: Any, frame: int, ts: float) -> None:
        reached.append((frame, segment[2], segment[3]))
        process(self, segment, frame, ts)

    monkeypatch.setattr(Reassembler, "process", recording)
    return reached


def interleaved(flows: Sequence[Sequence[Any]]) -> list[Any]:
    """The flows' packets taken in turn: each flow's first, then each one's second, and so on."""
    return [flow[index] for index in range(max(map(len, flows), default=0)) for flow in flows if index < len(flow)]
