"""The receiver lab's packet building (tests/helpers_frames.py), without the lab: what a step asks is what goes out."""

from __future__ import annotations

import struct

import pytest

from tests.helpers_frames import frames_from, internet_checksum, ipv6_packets, with_ipv4_options

CLIENT6, SERVER6 = "fd98::9", "fd98::2"
SEGMENT = bytes([0x9C, 0x40, 0x09, 0xDD]) + bytes(8) + bytes([0x50, 0x18]) + bytes(6) + b"0123456789" * 5  # 70 bytes


def _plain_ipv4(payload: bytes) -> bytes:
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 7, 0, 64, 6, 0, bytes(4), bytes(4)))
    header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    return bytes(header) + payload


def test_ipv4_options_are_padded_and_the_header_is_right_around_them() -> None:
    packet = with_ipv4_options(_plain_ipv4(SEGMENT), b"\x9e\x00\x01")
    assert packet[0] == 0x46  # six words: a length byte of 0 is kept as given, one EOL pads
    assert packet[20:24] == b"\x9e\x00\x01\x00"
    assert struct.unpack("!H", packet[2:4])[0] == len(packet) == 24 + len(SEGMENT)
    assert internet_checksum(packet[:24]) == 0
    assert packet[24:] == SEGMENT


def test_ipv4_options_beyond_the_header_are_refused() -> None:
    with pytest.raises(ValueError):
        with_ipv4_options(_plain_ipv4(SEGMENT), bytes(41))


def test_ipv6_extension_headers_name_each_other_then_tcp() -> None:
    destination = (60, b"\x00\x01\x04\x00\x00\x00\x00")
    hop_by_hop = (0, b"\x00\x01\x04\x00\x00\x00\x00")
    [packet] = ipv6_packets(CLIENT6, SERVER6, SEGMENT, [destination, hop_by_hop])
    assert packet[6] == 60 and packet[40] == 0 and packet[48] == 6
    assert struct.unpack("!H", packet[4:6])[0] == 16 + len(SEGMENT)
    assert packet[56:] == SEGMENT


def test_ipv6_fragments_follow_the_headers_and_the_first_holds_the_tcp_header() -> None:
    packets = ipv6_packets(CLIENT6, SERVER6, SEGMENT, [(60, b"\x00\x01\x04\x00\x00\x00\x00")], cut=8, ident=5)
    assert [len(packet) - 56 for packet in packets] == [24, 8, 8, 8, 8, 8, 6]
    joined = b""
    for number, packet in enumerate(packets):
        assert packet[6] == 60 and packet[40] == 44 and packet[48] == 6
        field, ident = struct.unpack("!HI", packet[50:56])
        assert (field & ~7, field & 1, ident) == (len(joined), int(number < len(packets) - 1), 5)
        joined += packet[56:]
    assert joined == SEGMENT


def test_frames_from_counts_whole_frames_from_the_address() -> None:
    def record(source: bytes) -> bytes:
        frame = bytes(12) + b"\x08\x00" + _plain_ipv4(b"")[:12] + source + bytes(4)
        return struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame

    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    client = bytes([10, 98, 0, 9])
    pcap = header + record(client) + record(bytes([10, 98, 0, 2])) + record(client)
    assert frames_from(pcap, "10.98.0.9") == 2
    assert frames_from(pcap[:-1], "10.98.0.9") == 1  # the last record still being written
