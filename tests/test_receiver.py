"""Reassembly against a real Linux receiver: what leakscope reassembles must be what the server's application read.

A sender crafts segments that a naive reassembler and a Linux receiver take differently (overlaps with decoy bytes,
RSTs the receiver ignores, data beyond its window), towards a small server that records the bytes it read
(tests/helpers_receiver.py); tcpdump records the link. The capture then goes through leakscope's capture layer.
Under the ``linux`` policy every case must give the application's bytes; under ``first`` (how leakscope reassembled
before policies) the decoys win, which is what these cases were built to show.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from passive.capture import CaptureOptions, analyze_file
from tests.helpers_capture import Recorder
from tests.helpers_receiver import FIRST_CLIENT_PORT, PORT, ReceiverLab, missing_tools

REAL = b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"  # what the server must read: 33 bytes
DECOY = b"NOOP nothing to see here at all\r\n"  # what a sender would rather show a monitor
END = len(REAL)
assert len(DECOY) == END


def _piece(text: bytes, start: int, stop: int) -> tuple[str, int, bytes]:
    return ("data", start, text[start:stop])


CASES: dict[str, list[tuple]] = {
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


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """The capture and what the application read, per case (one run of every case, about 10 s)."""
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
    work = tmp_path_factory.mktemp("receiver")
    with ReceiverLab(work) as lab:
        read = lab.run(CASES)
    return lab.pcap, read


def _reassembled(pcap: Path, policy: str) -> dict[str, bytes]:
    """The client stream of each case's connection (the flow its SYN opened), as leakscope reassembles it."""
    recorder = Recorder()
    options = CaptureOptions(ports=frozenset({PORT}), reassembly_policy=policy, resync_lines=False)
    analyze_file(pcap, recorder, options)
    streams = {record.flow.client_port: record.client_data for record in recorder.flows if not record.flow.partial}
    return {name: streams.get(FIRST_CLIENT_PORT + number, b"") for number, name in enumerate(CASES)}


@pytest.mark.parametrize("case", list(CASES))
def test_linux_policy_reassembles_what_the_application_read(receiver: tuple[Path, dict[str, bytes]], case: str) -> None:
    pcap, read = receiver
    assert _reassembled(pcap, "linux")[case] == read[case]


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


def test_first_seen_wins_is_fooled_where_linux_is_not(receiver: tuple[Path, dict[str, bytes]]) -> None:
    pcap, read = receiver
    streams = _reassembled(pcap, "first")
    assert {case for case in CASES if streams[case] != read[case]} == FIRST_FOOLED
