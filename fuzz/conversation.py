"""A byte format for one TCP conversation, so a fuzzer can mutate both sides and where they are split.

Layout: one protocol byte (``smtp``, ``pop3``, ``imap`` by value modulo 3), then records. A record is a control
byte and its payload: bit 0 is the side (0 client, 1 server); bit 1 marks a gap (two bytes, little-endian, say how
many bytes were lost; no payload); otherwise one length byte follows, 255 meaning a two-byte length comes next,
then that many bytes of data (fewer when the input ends). Any byte string parses; seeds are real conversations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PROTOCOLS = ("smtp", "pop3", "imap")
CLIENT, SERVER = 0, 1


@dataclass(frozen=True)
class Record:
    side: int  # CLIENT or SERVER
    data: bytes = b""
    gap: int = 0  # bytes lost instead of data


def parse(raw: bytes) -> tuple[str, list[Record]]:
    """The protocol and records a fuzz input stands for (never raises)."""
    if not raw:
        return PROTOCOLS[0], []
    protocol = PROTOCOLS[raw[0] % len(PROTOCOLS)]
    records: list[Record] = []
    position, size = 1, len(raw)
    while position < size:
        control = raw[position]
        position += 1
        side = control & 1
        if control & 2:
            lost = int.from_bytes(raw[position : position + 2], "little") or 1
            position += 2
            records.append(Record(side, gap=lost))
            continue
        if position >= size:
            break
        length = raw[position]
        position += 1
        if length == 255:
            length = int.from_bytes(raw[position : position + 2], "little")
            position += 2
        records.append(Record(side, raw[position : position + length]))
        position += length
    return protocol, records


def encode(protocol: str, records: Iterable[Record]) -> bytes:
    """The inverse of :func:`parse` (long payloads are split into several records)."""
    out = bytearray([PROTOCOLS.index(protocol)])
    for record in records:
        if record.gap:
            out += bytes([record.side | 2]) + min(record.gap, 0xFFFF).to_bytes(2, "little")
            continue
        data = record.data
        for start in range(0, max(len(data), 1), 0xFFFF):
            piece = data[start : start + 0xFFFF]
            out.append(record.side)
            if len(piece) < 255:
                out.append(len(piece))
            else:
                out += b"\xff" + len(piece).to_bytes(2, "little")
            out += piece
    return bytes(out)
