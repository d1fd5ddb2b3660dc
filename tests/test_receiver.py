"""Reassembly against a real Linux receiver: what leakscope reassembles must be what the server's application read.

A sender crafts segments that a naive reassembler and a Linux receiver take differently (overlaps with decoy bytes,
RSTs the receiver ignores, data beyond its window), towards a small server that records the bytes it read
(tests/helpers_receiver.py); tcpdump records the link. The capture then goes through leakscope's capture layer.
Under the ``linux`` policy every case must give the application's bytes; under ``first`` (how leakscope reassembled
before policies) the decoys win, which is what these cases were built to show.

The IP layer's variants go the same way: a decoy in a segment whose IPv4 header carries options, or whose IPv6
header is followed by extension headers, then the real bytes plainly; the bytes the server read say whether its
kernel took the variant's segment (a second lab run, over IPv6, plays the IPv6 cases). So do the TCP header's: TCP
timestamps and PAWS, options the connection did not negotiate, urgent data (a third run, over IPv4, whose handshakes
may offer timestamps). leakscope does not follow timestamps, the MD5 option or urgent data yet: the Linux policy
test fails for the cases where the kernel dropped a segment for them, or left an urgent byte unread.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from pathlib import Path

import pytest

from passive.capture import CaptureOptions, analyze_file
from tests.helpers_capture import Recorder
from tests.helpers_receiver import FIRST_CLIENT_PORT, IPV4, IPV6, PORT, Family, ReceiverLab, missing_tools
from tests.helpers_sender import TS_CLOCK, ZERO_THEN

REAL = b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"  # what the server must read: 33 bytes
DECOY = b"NOOP nothing to see here at all\r\n"  # what a sender would rather show a monitor
END = len(REAL)
assert len(DECOY) == END


def _piece(text: bytes, start: int, stop: int) -> tuple[str, int, bytes]:
    return ("data", start, text[start:stop])


TCP_CASES: dict[str, list[tuple]] = {
    "control": [_piece(REAL, 0, 20), _piece(REAL, 20, END), ("fin", END)],
    # Out-of-order decoy, then in-order data covering it: Linux keeps the in-order bytes.
    "ofo-covered-by-in-order": [_piece(DECOY, 10, 20), _piece(REAL, 0, END), ("fin", END)],
    # Same start, the second segment longer: Linux replaces the first.
    "same-start-longer": [_piece(DECOY, 10, 20), _piece(REAL, 10, END), _piece(REAL, 0, 10), ("fin", END)],
    # Same start and end: Linux keeps the first.
    "same-start-same-end": [_piece(REAL, 10, END), _piece(DECOY, 10, END), _piece(REAL, 0, 10), ("fin", END)],
    # The second starts earlier and covers the first: the second wins.
    "earlier-covers": [_piece(DECOY, 10, 20), _piece(REAL, 5, END), _piece(REAL, 0, 5), ("fin", END)],
    # The second starts earlier and covers part of the first: the second wins where they overlap.
    "earlier-covers-part": [
        _piece(DECOY, 10, 20),
        _piece(REAL, 5, 15),
        _piece(REAL, 0, 5),
        _piece(REAL, 20, END),
        ("fin", END),
    ],
    # The second starts later, inside the first: dropped.
    "later-inside": [_piece(REAL, 10, END), _piece(DECOY, 15, 20), _piece(REAL, 0, 10), ("fin", END)],
    # The second starts later and ends beyond the first: the first keeps its bytes, the second adds its tail.
    "later-beyond": [_piece(REAL, 10, 20), _piece(DECOY, 15, END), _piece(REAL, 0, 10), ("fin", END)],
    # Two adjacent out-of-order segments join (Linux coalesces them); a decoy across the seam then loses.
    "across-coalesced": [
        _piece(REAL, 10, 20),
        _piece(REAL, 20, 30),
        _piece(DECOY, 15, 25),
        _piece(REAL, 0, 10),
        _piece(REAL, 30, END),
        ("fin", END),
    ],
    "rst-out-of-window": [("data", 0, b"EHLO c\r\n"), ("rst", 3_000_000), ("data", 8, REAL), ("fin", 8 + END)],
    "rst-in-window": [("data", 0, b"EHLO c\r\n"), ("rst", 500), ("data", 8, REAL), ("fin", 8 + END)],
    "rst-exact": [("data", 0, b"EHLO c\r\n"), ("rst", 8), ("data", 8, REAL)],
    "beyond-window": [("data", 0, b"EHLO c\r\n"), ("beyond", 70_000, DECOY), ("data", 8, REAL), ("fin", 8 + END)],
    # A decoy with a wrong checksum first, then the real bytes at the same place.
    "bad-checksum-decoy": [("badsum", 0, DECOY), ("data", 0, REAL), ("fin", END)],
    "bad-checksum-rst": [("data", 0, b"EHLO c\r\n"), ("badrst", 8), ("data", 8, REAL), ("fin", 8 + END)],
    # The decoy whole with a wrong checksum, the real bytes in IPv4 fragments: the receiver joins and reads them.
    "bad-checksum-decoy-real-in-fragments": [("badsum", 0, DECOY), ("frag", 0, REAL), ("fin", END)],
    # The decoy in fragments, one with a wrong IPv4 header checksum (the receiver drops it), then the real bytes.
    "fragment-bad-header-decoy": [("fragbad", 0, DECOY), ("data", 0, REAL), ("fin", END)],
    # A decoy without the ACK flag, or acknowledging bytes the server never sent, then the real bytes.
    "no-ack-decoy": [("noack", 0, DECOY), ("data", 0, REAL), ("fin", END)],
    "unsent-ack-decoy": [("badack", 0, DECOY), ("data", 0, REAL), ("fin", END)],
}


def _decoy_in(kind: str, extra: object = None) -> list[tuple]:
    """The decoy in a segment of the variant under test, then the real bytes plainly at the same place: the server
    reads the decoy where its kernel took the variant's segment (the real bytes are then a duplicate), the real
    bytes where it dropped it."""
    decoy = (kind, 0, DECOY) if extra is None else (kind, 0, DECOY, extra)
    return [decoy, ("data", 0, REAL), ("fin", END)]


SERVER4 = bytes([10, 98, 0, 2])  # the lab's server address (tests/helpers_receiver.py), as a route names it
# IPv4 header options (RFC 791 and its successors), EOL-padded to a word by the lab.
IP_OPTION_CASES: dict[str, list[tuple]] = {
    f"ipopt-{name}": _decoy_in("ipopt", options)
    for name, options in {
        "nop-eol": b"\x01\x01\x01\x00",
        "record-route": b"\x07\x07\x04" + bytes(4),  # one empty slot, pointer at it
        "router-alert": b"\x94\x04\x00\x00",
        "lsrr-start": b"\x83\x07\x04" + SERVER4,  # pointer at the server's address: still to visit
        "lsrr-past-end": b"\x83\x07\x08" + SERVER4,  # pointer past the list: the route was followed
        "ssrr-start": b"\x89\x07\x04" + SERVER4,
        "ssrr-past-end": b"\x89\x07\x08" + SERVER4,
        "timestamp": b"\x44\x0c\x05\x00" + bytes(8),  # timestamps only, two empty slots, pointer at the first
        "timestamp-bad-pointer": b"\x44\x0c\x04\x00" + bytes(8),  # pointer 4: inside the option's own header
        "length-0": b"\x9e\x00\x00\x00",
        "length-1": b"\x9e\x01\x00\x00",
        "length-past-header": b"\x9e\x08\x00\x00",  # 8 bytes said, 4 in the header
        "unknown": b"\x9e\x04\x00\x00",
        "cipso": b"\x86\x0a\x00\x00\x00\x01\x01\x04\x00\x03",  # DOI 1, tag 1 (bitmap): level 3, no categories
        "security": b"\x82\x03\xab",  # RFC 1108 basic security: Unclassified, no authority flags
    }.items()
}
CASES = {**TCP_CASES, **IP_OPTION_CASES}

HOP_BY_HOP, ROUTING, DESTINATION = 0, 43, 60  # IPv6 Next Header values of the extension headers
SERVER6 = ipaddress.IPv6Address(IPV6.server).packed
PAD1 = b"\x00"


def _padn(length: int, fill: int = 0) -> bytes:
    """A PadN option with ``length`` bytes of padding data (RFC 8200 says zeros)."""
    return bytes([1, length]) + bytes([fill]) * length


def _options(*options: bytes) -> bytes:
    """A Hop-by-Hop or Destination Options header after its Next Header byte: its length, then ``options``."""
    size = 2 + sum(map(len, options))
    if size % 8:
        raise ValueError(f"an options header is a multiple of 8 bytes long, not {size}")
    return bytes([size // 8 - 1, *b"".join(options)])


PADDED = _options(_padn(4))
ACTIONS = {"skip": 0x1E, "discard": 0x5E, "discard-icmp": 0x9E, "discard-icmp-unicast": 0xDE}  # the top two bits
# IPv6 (RFC 8200): extension headers, each (type, bytes after its Next Header byte), before the TCP header.
EXTENSION_HEADERS: dict[str, tuple[tuple[int, bytes], ...]] = {
    "dest-pad": ((DESTINATION, _options(PAD1, PAD1, _padn(2))),),
    "dest-padn-not-zero": ((DESTINATION, _options(_padn(4, 0xAA))),),
    "dest-pad-longer-than-7": ((DESTINATION, _options(_padn(12))),),
    **{
        f"dest-unknown-{name}": ((DESTINATION, _options(bytes([kind, 0]), _padn(2))),) for name, kind in ACTIONS.items()
    },
    "dest-8-unknown": ((DESTINATION, _options(b"\x1e\x00" * 8, _padn(4))),),
    "dest-9-unknown": ((DESTINATION, _options(b"\x1e\x00" * 9, _padn(2))),),
    "dest-option-past-end": ((DESTINATION, _options(b"\x1e\x08" + bytes(4))),),  # 10 bytes said, 6 left
    "dest-twice": ((DESTINATION, PADDED), (DESTINATION, PADDED)),
    "hbh": ((HOP_BY_HOP, PADDED),),
    "hbh-after-dest": ((DESTINATION, PADDED), (HOP_BY_HOP, PADDED)),
    # Routing: length, type, segments left, then type 0's reserved word and addresses, or type 4's (segment routing)
    # last entry, flags, tag and segments.
    "rh0-left-0": ((ROUTING, bytes([2, 0, 0]) + bytes(4) + SERVER6),),
    "rh0-left-1": ((ROUTING, bytes([2, 0, 1]) + bytes(4) + SERVER6),),
    "rh4-left-0": ((ROUTING, bytes([2, 4, 0, 0, 0, 0, 0]) + SERVER6),),
    "rh4-left-1": ((ROUTING, bytes([4, 4, 1, 1, 0, 0, 0]) + SERVER6 * 2),),
}
CASES6: dict[str, list[tuple]] = {
    "v6-control": [_piece(REAL, 0, 20), _piece(REAL, 20, END), ("fin", END)],
    "v6-data": _decoy_in("data"),
    "v6-frag": _decoy_in("frag"),  # a Fragment header right after the IPv6 header
    **{f"v6-{name}": _decoy_in("ext", headers) for name, headers in EXTENSION_HEADERS.items()},
    "v6-dest-then-frag": _decoy_in("extfrag", ((DESTINATION, PADDED),)),
    "v6-hbh-then-frag": _decoy_in("extfrag", ((HOP_BY_HOP, PADDED),)),
}
HELLO = b"EHLO c\r\n"  # the bytes before a TCP header variant's decoy: segments the receiver took before it
FAR = TS_CLOCK + 100_000  # a TSval far ahead of the clock
WRAPPED = (TS_CLOCK - 2**31 - 1) % 2**32  # a TSval 2^31 + 1 behind the clock: ahead of it in 32-bit serial order


def _after_hello(kind: str, extra: object, timestamps: bool = True) -> list[tuple]:
    """HELLO, then the decoy in a segment of the variant under test, then the real bytes plainly at the same place,
    in a connection whose SYN offered timestamps (or not)."""
    steps = [("data", 0, HELLO), (kind, len(HELLO), DECOY, extra), ("data", len(HELLO), REAL)]
    return [*([("timestamps",)] if timestamps else []), *steps, ("fin", len(HELLO) + END)]


def _ts_recent(first: tuple, decoy: tuple, real: tuple) -> list[tuple]:
    """Whether a segment raised ts_recent: ``first`` carries a TSval 1000 ahead of the clock, ``decoy`` the clock's
    (PAWS drops it if ts_recent was raised), ``real`` a TSval 2000 ahead, which the connection keeps after it."""
    return [
        ("timestamps",),
        ("data", 0, HELLO),
        ("ts", *first, TS_CLOCK + 1000),
        ("data", *decoy),
        ("ts", *real, TS_CLOCK + 2000),
        ("clock", TS_CLOCK + 2000),
        ("fin", len(HELLO) + END),
    ]


def _decoy_then_real(decoy: int, real: int) -> list[tuple]:
    """After HELLO, the decoy with TSval ``decoy``, then the real bytes at the same place with TSval ``real``; the
    later segments carry the higher of the two."""
    return [
        ("timestamps",),
        ("data", 0, HELLO),
        ("ts", len(HELLO), DECOY, decoy),
        ("ts", len(HELLO), REAL, real),
        ("clock", max(decoy, real)),
        ("fin", len(HELLO) + END),
    ]


def _inserted(text: bytes, *marks: tuple[int, bytes]) -> bytes:
    """``text`` with each ``(position, byte)`` of ``marks`` inserted, positions counted in the result."""
    out = bytearray(text)
    for position, byte in marks:
        out[position:position] = byte
    return bytes(out)


def _urgent(stream: bytes, segments: list[tuple[int, int, int, bool]]) -> list[tuple]:
    """``stream`` sent in the ``(start, stop, urgent pointer, URG flag)`` segments given, then a FIN."""
    return [("urg", start, stream[start:stop], pointer, flag) for start, stop, pointer, flag in segments] + [
        ("fin", len(stream))
    ]


H = len(HELLO)
MARKED = _inserted(REAL, (10, b"!"))  # "!" at 10: the urgent byte, if the receiver takes it for one
# TCP header variants: timestamps (RFC 7323 PAWS), options a connection did not negotiate, urgent data. A third lab
# run (IPv4) plays them: the timestamps cases need the option in the handshake.
TCP_HEADER_CASES: dict[str, list[tuple]] = {
    "ts-control": [("timestamps",), ("data", 0, HELLO), ("data", H, REAL), ("fin", H + END)],
    **{f"ts-behind-{d}": _after_hello("ts", TS_CLOCK - d) for d in (1, 2, 1000)},
    "ts-wrapped": [*_after_hello("ts", WRAPPED)[:3], ("clock", WRAPPED), *_after_hello("ts", WRAPPED)[3:]],
    "ts-equal": _after_hello("ts", TS_CLOCK),
    "ts-missing": _after_hello("ts", None),
    "ts-decoy-behind-real-ahead": _decoy_then_real(TS_CLOCK - 1000, TS_CLOCK + 1000),
    "ts-decoy-current-real-behind": _decoy_then_real(TS_CLOCK, TS_CLOCK - 1000),
    "ts-unoffered-0": _after_hello("ts", 0, timestamps=False),
    "ts-unoffered-1": _after_hello("ts", 1, timestamps=False),
    # Which accepted segment raises ts_recent: in order at the receiver's last ACK, out of order, a retransmission.
    "ts-recent-in-order": _ts_recent((H, REAL[:10]), (H + 10, DECOY[10:]), (H + 10, REAL[10:])),
    "ts-recent-out-of-order": _ts_recent((H + 10, REAL[10:]), (H, DECOY[:10]), (H, REAL[:10])),
    "ts-recent-retransmission": _ts_recent((0, HELLO), (H, DECOY), (H, REAL)),
    # Options of a connection that negotiated none of them: TCP MD5 (RFC 2385), TCP-AO (RFC 5925), an unknown kind.
    "opt-md5": _after_hello("opt", [(19, bytes(16))], timestamps=False),
    "opt-ao-4": _after_hello("opt", [(29, b"\x01\x01")], timestamps=False),  # key ids only, no MAC
    "opt-ao-16": _after_hello("opt", [(29, b"\x01\x01" + bytes(12))], timestamps=False),
    "opt-unknown-253": _after_hello("opt", [(253, b"\x00\x00")], timestamps=False),
    "opt-md5-with-ts": _after_hello("opt", [(19, bytes(16))]),
    # Urgent data (the server reads with recv, not SO_OOBINLINE; tcp_stdurg 0): "!" and "?" are the bytes the urgent
    # pointer points at, seq + pointer - 1, where the receiver takes them for urgent bytes.
    "urg-inside": _urgent(MARKED, [(0, 20, 11, True), (20, END + 1, 0, False)]),
    "urg-1": _urgent(b"!" + REAL, [(0, 20, 1, True), (20, END + 1, 0, False)]),
    "urg-past-end": _urgent(_inserted(REAL, (25, b"!")), [(0, 20, 26, True), (20, END + 1, 0, False)]),
    "urg-twice": _urgent(_inserted(REAL, (5, b"!"), (16, b"?")), [(0, 12, 6, True), (12, END + 2, 5, True)]),
    "urg-pointer-0": _urgent(b"!" + REAL, [(0, 20, 0, True), (20, END + 1, 0, False)]),
    "urg-pointer-without-flag": _urgent(MARKED, [(0, 20, 11, False), (20, END + 1, 0, False)]),
    # Segments the receiver refuses, whose urgent pointer it never reads (the pointer names REAL's byte 10): without
    # the ACK flag; wholly before what it acknowledged; with a timestamp 1 000 behind.
    "urg-bare-no-ack": [("data", 0, HELLO), ("raw", H, b"", "U", None, 11), ("data", H, REAL), ("fin", H + END)],
    "urg-bare-old": [("data", 0, HELLO), ("raw", 0, b"", "AU", None, H + 11), ("data", H, REAL), ("fin", H + END)],
    "urg-old-copy": [
        ("data", 0, HELLO),
        ("raw", 0, HELLO[:4], "PAU", None, H + 11),
        ("data", H, REAL),
        ("fin", H + END),
    ],
    "urg-bare-paws": [
        ("timestamps",),
        ("data", 0, HELLO),
        ("raw", H, b"", "AU", TS_CLOCK - 1000, 11),
        ("data", H, REAL),
        ("fin", H + END),
    ],
    # A bare ACK's timestamp kept; a second Timestamps option, the one read; an MD5 option too short to be looked for.
    "ts-bare-ack-kept": [
        ("timestamps",),
        ("data", 0, HELLO),
        ("raw", H, b"", "A", TS_CLOCK + 1000, 0),
        ("ts", H, DECOY, TS_CLOCK),
        ("ts", H, REAL, TS_CLOCK + 2000),
        ("clock", TS_CLOCK + 2000),
        ("fin", H + END),
    ],
    "ts-second-option-old": _after_hello("opt", [(8, (TS_CLOCK - 1000).to_bytes(4, "big") + bytes(4))]),
    "opt-md5-short": _after_hello("opt", [(19, b"\x00\x00")], timestamps=False),
    # A timestamp far ahead in a bare segment the receiver discards keeps nothing: without the ACK flag,
    # acknowledging unsent bytes; one with an acknowledgement older than the last, on Linux's fast path, is kept.
    "ts-bare-no-ack": [
        *[("timestamps",), ("data", 0, HELLO), ("raw", H, b"", "P", FAR, 0), ("data", H, REAL), ("fin", H + END)]
    ],
    "ts-bare-unsent": [
        *[("timestamps",), ("data", 0, HELLO), ("raw", H, b"", "A", FAR, 0, 100_000), ("data", H, REAL)],
        ("fin", H + END),
    ],
    "ts-stale-ack-fast-path": [
        *[("timestamps",), ("data", 0, HELLO), ("raw", H, b"", "A", FAR, 0, -1), ("ts", H, DECOY, TS_CLOCK)],
        *[("ts", H, REAL, FAR + 1), ("clock", FAR + 1), ("fin", H + END)],
    ],
    # Where Linux's fast path keeps a stale bare ACK's TSval, and where it does not: a FIN held out of order, the
    # window field the receiver holds not the one an older acknowledgement brought, a first timestamp off the fast
    # path, a kept 0 against a TSval 2^31 ahead (compared signed), a data segment (its acknowledgement judged first).
    "ts-stale-ack-fin-held": [
        *[("timestamps",), ("data", 0, HELLO), ("raw", H + END, b"", "FA", None, 0), ("raw", H, b"", "A", FAR, 0, -1)],
        *[("ts", H, DECOY, TS_CLOCK), ("ts", H, REAL, FAR + 1), ("clock", FAR + 1), ("fin", H + END)],
    ],
    "ts-stale-ack-window": [
        *[
            ("timestamps",),
            ("data", 0, HELLO),
            ("raw", H, b"", "A", None, 0, -1, 1000),
            ("raw", H, b"", "A", FAR, 0, -1),
        ],
        *[("ts", H, DECOY, TS_CLOCK), ("ts", H, REAL, FAR + 1), ("clock", FAR + 1), ("fin", H + END)],
    ],
    "ts-stale-ack-slow-first": [
        *[("timestamps-bare3",), ("raw", 0, b"", "A", FAR, 0, -1, 64240, 4), ("ts", 0, HELLO + DECOY, TS_CLOCK)],
        *[("ts", 0, HELLO + REAL, FAR + 1), ("clock", FAR + 1), ("fin", H + END)],
    ],
    "ts-stale-ack-zero-signed": [
        *[("timestamps0-bare3",), ("raw", 0, b"", "A", 0, 0, 0), ("raw", 0, b"", "A", None, 0, -1)],
        *[("ts", 0, HELLO + DECOY, 0x20000000), ("ts", 0, HELLO + REAL, 0x90000001), ("clock", 0x90000001)],
        ("fin", H + END),
    ],
    "ts-stale-ack-data": [
        *[("timestamps",), ("data", 0, HELLO), ("raw", H, REAL[:10], "PA", FAR, 0, -1), ("ts", H, DECOY, TS_CLOCK)],
        *[("ts", H, REAL, FAR + 1), ("clock", FAR + 1), ("fin", H + END)],
    ],
    # The window field Linux compares on its fast path moves only as tcp_may_update_window lets it: a second bare ACK
    # at the same place with a smaller window leaves it, so a stale ACK carrying the larger one takes the fast path.
    "ts-stale-ack-window-kept": [
        *[("timestamps",), ("data", 0, HELLO), ("raw", H, b"", "A", None, 0, 0, 2000)],
        *[("raw", H, b"", "A", None, 0, 0, 1000), ("raw", H, b"", "A", FAR, 0, -1, 2000)],
        *[("ts", H, DECOY, TS_CLOCK), ("ts", H, REAL, FAR + 1), ("clock", FAR + 1), ("fin", H + END)],
    ],
    "ts-stale-ack-window-not-kept": [
        *[("timestamps",), ("data", 0, HELLO), ("raw", H, b"", "A", None, 0, 0, 2000)],
        *[("raw", H, b"", "A", None, 0, 0, 1000), ("raw", H, b"", "A", FAR, 0, -1, 1000)],
        *[("ts", H, DECOY, TS_CLOCK), ("ts", H, REAL, FAR + 1), ("clock", FAR + 1), ("fin", H + END)],
    ],
    # A SYN whose TSval is 0: any later one replaces it, and a decoy 1 000 behind that is dropped.
    "ts-zero-replaced": [
        *[("timestamps0",), ("data", 0, HELLO), ("ts", H, DECOY, ZERO_THEN - 1000), ("data", H, REAL)],
        ("fin", H + END),
    ],
}
# Where reassembling "first seen wins", every RST and no window (leakscope before policies) shows the decoy.
FIRST_FOOLED = {
    "ofo-covered-by-in-order",
    "same-start-longer",
    "earlier-covers",
    "earlier-covers-part",
    "rst-out-of-window",
    "rst-in-window",
    "beyond-window",
    "bad-checksum-decoy",
    "bad-checksum-rst",
    "bad-checksum-decoy-real-in-fragments",
    "no-ack-decoy",
    "unsent-ack-decoy",
}  # not "fragment-bad-header-decoy": a piece with a wrong header checksum is never joined with right ones, whatever
# the policy


def _lab_run(factory: pytest.TempPathFactory, family: Family, cases: dict[str, list[tuple]]) -> tuple[Path, dict]:
    """The capture and what the application read, per case (one run of every case)."""
    if os.geteuid() != 0:
        pytest.skip("the Linux receiver needs root: network namespaces, a packet socket, tcpdump")
    missing = missing_tools()
    try:
        import scapy  # noqa: F401
    except ImportError:
        missing.append("scapy")
    if missing:
        reason = f"the Linux receiver needs {' '.join(missing)} (tests/setup-and-run.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    work = factory.mktemp(f"receiver-{family.name}")
    with ReceiverLab(work, family) as lab:
        read = lab.run(cases)
    return lab.pcap, read


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The IPv4 run of CASES."""
    return _lab_run(tmp_path_factory, IPV4, CASES)


@pytest.fixture(scope="module")
def receiver_tcp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The IPv4 run of TCP_HEADER_CASES."""
    return _lab_run(tmp_path_factory, IPV4, TCP_HEADER_CASES)


@pytest.fixture(scope="module")
def receiver6(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The IPv6 run of CASES6."""
    return _lab_run(tmp_path_factory, IPV6, CASES6)


# The variants' segments this kernel took (Linux 6.18, a new network namespace's defaults: IPv4 accept_source_route
# 0 on "all", IPv6 seg6_enabled 0, max_dst_opts_number 8); it dropped the others.
VARIANTS = [*IP_OPTION_CASES, *(case for case in CASES6 if case != "v6-control")]
TAKEN = {
    *(f"ipopt-{name}" for name in ("nop-eol", "record-route", "router-alert", "timestamp", "unknown", "security")),
    *(f"v6-{name}" for name in ("data", "frag", "dest-pad", "dest-unknown-skip", "dest-8-unknown", "dest-twice")),
    *(f"v6-{name}" for name in ("hbh", "rh0-left-0", "dest-then-frag", "hbh-then-frag")),
}


@functools.cache
def _reassembled(pcap: Path, policy: str, names: tuple[str, ...]) -> dict[str, bytes]:
    """The client stream of each case's connection (the flow its SYN opened), as leakscope reassembles it; the
    cases ``names`` in the order the lab played them."""
    recorder = Recorder()
    options = CaptureOptions(ports=frozenset({PORT}), reassembly_policy=policy, resync_lines=False)
    analyze_file(pcap, recorder, options)
    streams = {record.flow.client_port: record.client_data for record in recorder.flows if not record.flow.partial}
    return {name: streams.get(FIRST_CLIENT_PORT + number, b"") for number, name in enumerate(names)}


RUNS = {"receiver": CASES, "receiver6": CASES6, "receiver_tcp": TCP_HEADER_CASES}  # each lab run's fixture


@pytest.mark.parametrize("case", [case for cases in RUNS.values() for case in cases])
def test_linux_policy_reassembles_what_the_application_read(request: pytest.FixtureRequest, case: str) -> None:
    fixture, cases = next((fixture, cases) for fixture, cases in RUNS.items() if case in cases)
    pcap, read = request.getfixturevalue(fixture)
    assert _reassembled(pcap, "linux", tuple(cases))[case] == read[case]


def test_the_cases_show_the_receiver_taking_the_real_bytes(receiver: tuple[Path, dict[str, bytes]]) -> None:
    """Sanity of the cases themselves: the server read no decoy where a decoy should have been refused."""
    _pcap, read = receiver
    assert read["control"] == read["ofo-covered-by-in-order"] == read["same-start-longer"] == REAL
    assert read["earlier-covers"] == read["across-coalesced"] == read["same-start-same-end"] == REAL
    assert read["earlier-covers-part"] == REAL[:15] + DECOY[15:20] + REAL[20:]
    assert read["later-beyond"] == REAL[:20] + DECOY[20:]
    assert read["rst-out-of-window"] == read["rst-in-window"] == read["beyond-window"] == b"EHLO c\r\n" + REAL
    assert read["rst-exact"] == b"EHLO c\r\n"
    assert read["bad-checksum-decoy"] == REAL and read["bad-checksum-rst"] == b"EHLO c\r\n" + REAL
    assert read["bad-checksum-decoy-real-in-fragments"] == read["fragment-bad-header-decoy"] == REAL
    assert read["no-ack-decoy"] == read["unsent-ack-decoy"] == REAL


def test_the_receiver_takes_or_drops_each_variant_whole(
    receiver: tuple[Path, dict[str, bytes]], receiver6: tuple[Path, dict[str, bytes]]
) -> None:
    """Each variant's segment is taken (the server read the decoy) or dropped (it read the real bytes), as tabled."""
    read = {**receiver[1], **receiver6[1]}
    assert read["v6-control"] == REAL
    assert {case: read[case] for case in VARIANTS if read[case] not in (DECOY, REAL)} == {}
    assert {case for case in VARIANTS if read[case] == DECOY} == TAKEN


def test_first_seen_wins_is_fooled_where_linux_is_not(receiver: tuple[Path, dict[str, bytes]]) -> None:
    pcap, read = receiver
    streams = _reassembled(pcap, "first", tuple(CASES))
    assert {case for case in TCP_CASES if streams[case] != read[case]} == FIRST_FOOLED


# What the application read in each TCP header case (Linux 6.18, a new network namespace's defaults: tcp_stdurg 0, no
# MD5 key, built without TCP-AO). PAWS drops a segment whose TSval is more than 1 behind ts_recent in 32-bit serial
# order (TCP_PAWS_WINDOW), so 1 behind passes and 2^31 + 1 behind is ahead; a segment without the option, or with
# one its SYN did not negotiate, is not checked. Only a segment at the receiver's last ACK (in order, or a
# retransmission ending there) raises ts_recent, not one out of order. A data segment with an MD5 option is dropped,
# a TCP-AO or unknown option ignored. The urgent pointer points past the urgent byte (seq + pointer - 1; a pointer of
# 0 at seq itself), which the application, reading without SO_OOBINLINE, never reads, in the segment or a later one;
# without the URG flag the pointer is ignored.
TCP_HEADER_TAKEN = {
    *("ts-behind-1", "ts-wrapped", "ts-equal", "ts-missing", "ts-decoy-current-real-behind"),
    *("ts-unoffered-0", "ts-unoffered-1", "opt-ao-4", "opt-ao-16", "opt-unknown-253"),
}
TCP_HEADER_DROPPED = {"ts-behind-2", "ts-behind-1000", "ts-decoy-behind-real-ahead", "opt-md5", "opt-md5-with-ts"}
TCP_HEADER_DROPPED |= {"ts-bare-ack-kept", "ts-second-option-old", "ts-stale-ack-fast-path", "ts-zero-replaced"}
TCP_HEADER_TAKEN |= {"opt-md5-short"}
KERNEL_READ: dict[str, bytes] = {
    "ts-control": HELLO + REAL,
    **{case: HELLO + DECOY for case in TCP_HEADER_TAKEN},
    **{case: HELLO + REAL for case in TCP_HEADER_DROPPED},
    "ts-recent-in-order": HELLO + REAL,  # raised: the decoy after it dropped
    "ts-recent-out-of-order": HELLO + DECOY[:10] + REAL[10:],  # not raised: the decoy taken
    "ts-recent-retransmission": HELLO + REAL,
    **{case: REAL for case in TCP_HEADER_CASES if case.startswith("urg-")},  # the urgent bytes "!" and "?" unread
    "urg-pointer-without-flag": MARKED,
    **{case: HELLO + REAL for case in ("urg-bare-no-ack", "urg-bare-old", "urg-old-copy", "urg-bare-paws")},
    **{case: HELLO + REAL for case in ("ts-bare-no-ack", "ts-bare-unsent")},  # nothing planted: the real bytes
    **{case: HELLO + DECOY for case in ("ts-stale-ack-fin-held", "ts-stale-ack-slow-first")},  # FAR not kept
    **{case: HELLO + DECOY for case in ("ts-stale-ack-zero-signed", "ts-stale-ack-data")},
    "ts-stale-ack-window": HELLO + REAL,  # the fast path took it: FAR kept, the decoy dropped
    "ts-stale-ack-window-kept": HELLO + REAL,
    "ts-stale-ack-window-not-kept": HELLO + DECOY,
}


def test_the_receiver_takes_drops_or_cuts_each_tcp_header_variant(receiver_tcp: tuple[Path, dict[str, bytes]]) -> None:
    """The bytes the application read in each TCP header case, as tabled."""
    assert receiver_tcp[1] == KERNEL_READ
