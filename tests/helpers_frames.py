"""IP packets for the receiver lab (tests/helpers_receiver.py), built byte by byte around a TCP segment.

scapy builds the TCP segments, but would tidy what some steps must send raw: IPv4 header options exactly as a case
gives them (a length byte of 0, a pointer past the end), and IPv6 extension headers in any order, cut into
fragments behind any of them. So the IP layer is put together here: lengths, IHL and the IPv4 header checksum
right, the options and extension headers as given.
"""

from __future__ import annotations

import itertools
import socket
import struct

IPV4_OPTIONS_ALIGN = 4  # IHL counts 32-bit words: options are padded with EOL (0) bytes to a multiple of this
MAX_IPV4_OPTIONS = 40  # IHL is 4 bits: 15 words at most, 5 of them the fixed header
HOP_LIMIT = 64
TCP_PROTOCOL = 6
FRAGMENT_HEADER = 44  # IPv6 Next Header value of the Fragment header
FRAGMENT_UNIT = 8  # fragment offsets count 8-byte units: every piece but the last is a multiple of this long
MORE_FRAGMENTS = 1  # the M flag in the Fragment header's offset field

ExtensionHeader = tuple[int, bytes]  # (its type, as a Next Header value names it; its bytes after Next Header)


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the one's complement of the one's complement sum of the 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def with_ipv4_options(packet: bytes, options: bytes) -> bytes:
    """The IPv4 ``packet`` (a 20-byte header, no options) with ``options`` in its header, EOL-padded to a word;
    IHL, total length and header checksum set to match. The options' own bytes are not checked: a case may make
    them wrong on purpose."""
    if packet[0] != 0x45:
        raise ValueError("with_ipv4_options takes a packet whose header has no options yet")
    padded = options + b"\0" * (-len(options) % IPV4_OPTIONS_ALIGN)
    if len(padded) > MAX_IPV4_OPTIONS:
        raise ValueError(f"{len(padded)} bytes of IPv4 options: at most {MAX_IPV4_OPTIONS} fit the header")
    words = 5 + len(padded) // IPV4_OPTIONS_ALIGN
    header = bytearray(packet[:20] + padded)
    header[0] = 0x40 | words
    header[2:4] = struct.pack("!H", len(packet) + len(padded))
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    return bytes(header) + packet[20:]


def _ipv6_header(src: str, dst: str, next_header: int, payload_length: int) -> bytes:
    addresses = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return struct.pack("!IHBB", 6 << 28, payload_length, next_header, HOP_LIMIT) + addresses


def _chain(headers: list[ExtensionHeader], last: int) -> tuple[int, bytes]:
    """The IPv6 header's Next Header value and the extension headers' bytes, each naming the one after it, the
    last naming ``last``."""
    types = [kind for kind, _body in headers] + [last]
    chained = b"".join(bytes([types[i + 1]]) + body for i, (_kind, body) in enumerate(headers))
    return types[0], chained


def ipv6_packets(
    src: str, dst: str, segment: bytes, headers: list[ExtensionHeader], cut: int | None = None, ident: int = 0
) -> list[bytes]:
    """The TCP ``segment`` in IPv6 behind ``headers``; with ``cut``, behind them a Fragment header, the segment
    in pieces of ``cut`` bytes, but the first long enough for the whole TCP header (RFC 8200 4.5: a receiver
    discards a first piece without it)."""
    if cut is None:
        first, chained = _chain(headers, TCP_PROTOCOL)
        return [_ipv6_header(src, dst, first, len(chained) + len(segment)) + chained + segment]
    if cut <= 0 or cut % FRAGMENT_UNIT:
        raise ValueError(f"IPv6 pieces are a positive multiple of {FRAGMENT_UNIT} bytes long, not {cut}")
    first, chained = _chain(headers, FRAGMENT_HEADER)
    tcp_header = (segment[12] >> 4) * 4
    bounds = [0, max(cut, -(-tcp_header // FRAGMENT_UNIT) * FRAGMENT_UNIT)]
    while bounds[-1] < len(segment):
        bounds.append(bounds[-1] + cut)
    packets = []
    for start, stop in itertools.pairwise(bounds):
        piece = segment[start:stop]
        more = MORE_FRAGMENTS if stop < len(segment) else 0
        fragment = struct.pack("!BBHI", TCP_PROTOCOL, 0, start | more, ident & 0xFFFFFFFF)
        payload = chained + fragment + piece
        packets.append(_ipv6_header(src, dst, first, len(payload)) + payload)
    return packets


PCAP_MAGIC = 0xA1B2C3D4  # a pcap file's first word, microsecond timestamps (0xA1B23C4D: nanosecond ones)
PCAP_MAGIC_NS = 0xA1B23C4D
ETHERNET_HEADER = 14


def frames_from(pcap: bytes, source: str) -> int:
    """How many Ethernet frames of a pcap file (as tcpdump writes it: possibly a record short at its end) carry an
    IP packet from the address ``source``."""
    if len(pcap) < 24:
        return 0
    order = next((mark for mark in "<>" if struct.unpack(mark + "I", pcap[:4])[0] in (PCAP_MAGIC, PCAP_MAGIC_NS)), "")
    if not order:
        raise ValueError("not a pcap file")
    v6 = ":" in source
    packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, source)
    start = ETHERNET_HEADER + (8 if v6 else 12)  # the source address in the IPv6 or IPv4 header
    where = slice(start, start + len(packed))
    count, pos = 0, 24
    while pos + 16 <= len(pcap):
        (captured,) = struct.unpack_from(order + "I", pcap, pos + 8)
        frame = pcap[pos + 16 : pos + 16 + captured]
        if len(frame) < captured:
            break
        count += frame[where] == packed
        pos += 16 + captured
    return count
