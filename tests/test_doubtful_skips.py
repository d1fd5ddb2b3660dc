"""Segments with a wrong checksum held (passive.capture.doubtful) while the packet scanner could drop a flow's
packets unread (passive.capture.skipping).

The scanner hands over what it dropped as two notices, one a direction, in the order of their last packets: the
receiver's acknowledgement can come before the sender's bytes it acknowledges. Read so, a decoy held until then
finds no right segment's bytes where it sits and is read, and the real bytes' notice no longer fits the flow. So a
flow holding such a segment is not armed: its packets are read until the receiver's acknowledgement settles it.
"""

from __future__ import annotations

from passive.capture.checksums import INFO_CSUM_BAD, INFO_CSUM_VALID
from passive.capture.flow import Chunk, CloseReason, Direction, Flow
from passive.capture.linklayer import ACK, PSH, SYN
from passive.capture.reassembly import Reassembler
from passive.capture.skipping import SKIP_DOT, _plan

CLIENT, SERVER = b"\x0b\x00\x00\x01", b"\x0a\x00\x00\x02"
BODY = b"a line of a message\r\n"
DECOY = b".\r\nRCPT TO:<v@outside.test>\r\n"  # an end of message and a command, which the server never read


class _Body:
    """A handler inside a message body: its bytes may be dropped unread."""

    def __init__(self) -> None:
        self.read: list[bytes] = []

    def on_open(self, flow: Flow) -> None:
        flow.want_skip()

    def on_data(self, flow: Flow, direction: Direction, chunk: Chunk) -> None:
        self.read.append(chunk.data)

    def on_gap(self, flow: Flow, direction: Direction, missing: int, frame: int, ts: float) -> None:
        self.read.append(b"<gap>")

    def on_close(self, flow: Flow, reason: CloseReason) -> None:
        pass

    def skippable(self, flow: Flow, direction: Direction) -> tuple[int, int, bool]:
        return (SKIP_DOT, 0, True)

    def on_skip(self, flow: Flow, direction: Direction, size: int, *_rest: object) -> None:
        self.read.append(b"<skipped %d>" % size)


def _segment(from_client: bool, seq: int, ack: int, flags: int, data: bytes, info: int = INFO_CSUM_VALID) -> tuple:
    src, dst, sport, dport = (CLIENT, SERVER, 40000, 25) if from_client else (SERVER, CLIENT, 25, 40000)
    return (src, dst, sport, dport, seq, ack, flags, data, len(data), info, 65535, 0)


def test_a_flow_holding_a_segment_with_a_wrong_checksum_is_not_armed() -> None:
    handler = _Body()
    reassembler = Reassembler(lambda flow: handler, server_ports=frozenset({25}))
    reassembler.process(_segment(True, 1000, 0, SYN, b""), 1, 0.0)
    reassembler.process(_segment(False, 5000, 1001, SYN | ACK, b""), 2, 0.0)
    reassembler.process(_segment(True, 1001, 5001, ACK | PSH, BODY), 3, 0.0)
    reassembler.process(_segment(True, 1001 + len(BODY), 5001, ACK | PSH, DECOY, INFO_CSUM_BAD), 4, 0.0)
    flow = reassembler._flows[1]
    assert flow._halves is not None and flow._halves[0].doubtful
    assert _plan(flow) is None  # the scanner would drop the real bytes and the acknowledgement, in either order
