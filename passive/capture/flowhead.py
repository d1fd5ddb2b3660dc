"""The head of a flow in every-port mode: how many of an undecided flow's packets the scanner admits before its
verdict (the rule of :class:`~passive.capture.scanner.PyScanner`, and of ``_scan.c``'s ``flow_admission``).

The head is counted in packets that bring new bytes (beyond the highest sequence number seen in their direction),
not in packets: the handshake, bare ACKs, retransmissions, keep-alives and window probes do not eat it, and are
bounded by :data:`HEAD_QUIET` beside it. Past ``head`` such packets (:data:`~passive.capture.scanner.FLOW_HEAD`),
or past that bound, a packet of text extends the head while the flow has sent fewer than :data:`HEAD_LINE_BYTES`
(bytes sent again or out of order count too): a greeting or a command sent in small pieces (telnet character mode,
a small-MSS path, an evasive peer, retransmitted or reordered) is read whole, where binary or bulk data is cut.
Such packets are counted (``head_extended``), admitted only once Python has read every packet before them (its
verdict first), and bounded in total to a share of the packets read (:data:`HEAD_SHARE`).
"""

from __future__ import annotations

import re
from typing import Any

HEAD_QUIET = 32
"""Packets bringing no new bytes admitted of an undecided flow beyond one per packet that did: the handshake's
three, and the keep-alives, window probes and retransmissions that may come before a greeting. The ACK of each byte
of a line sent one byte per packet is covered by the one per packet."""
HEAD_LINE_BYTES = 1024
"""A head of text extends while the flow has sent fewer bytes than this. The classifier decides a server's first
line at 512 bytes without its end (``dissectors.identify.MAX_FIRST_LINE``); the client's first command is well
within the other 512."""
HEAD_SHARE = 16
"""Extended head packets are at most one per this many packets read (plus :data:`HEAD_FLOOR`): however many flows
send text in small pieces, they cost Python a bounded share of the capture."""
HEAD_FLOOR = 65536
"""Extended head packets allowed whatever the share: a small capture's few slow greetings are never cut by it."""
MAX_EXTENDING = 64
"""Flows whose head extends at once (one slot each, free again once the flow has a verdict, is cut, sends FIN or
RST, or has been idle past the timeout): Python holds each one's pieces until its verdict (up to
:data:`HEAD_LINE_BYTES` of them, about 250 bytes each: some 16 MiB for all). A mail server's span port sees few
greetings typed at once; past this, a further flow is cut at its head."""

ROOM, EXTENDED, FULL = 0, 1, 2
_TEXT = re.compile(rb"[\x20-\x7e\t\r\n]*")  # what a line is made of (_scan.c's is_text)


def new_head(ts: float, state: int) -> list[Any]:
    """A flow entry at the start of its head: state, packets bringing new bytes, last time, packets bringing none,
    new bytes, per direction (from the canonical 4-tuple's first endpoint, then the other's) the end of the highest
    sequence number seen (None: none yet), and whether its head has extended (one of :data:`MAX_EXTENDING`)."""
    return [state, 0, ts, 0, 0, None, None, False]


def take_slot(slots: list[Any], flows: dict[Any, list[Any]], key: Any, now: float, idle_timeout: float) -> bool:
    """A slot of ``slots`` (:data:`MAX_EXTENDING`) for the flow ``key`` whose head is to extend: the first never
    used, or whose flow no longer extends or has been idle past the timeout (``_scan.c``'s ``take_slot``)."""
    for index, held in enumerate(slots):
        if held is not None:
            entry = flows.get(held)
            if entry is not None and entry[7] and entry[2] + idle_timeout >= now:
                continue
        slots[index] = key
        return True
    return False


def head_room(
    entry: list[Any], side: int, segment: Any, head: int, extended: int, read: int, batch_empty: bool, slot: Any
) -> int:
    """ROOM or EXTENDED (admitted: the entry counts it), or FULL (the entry is unchanged: the scanner waits for
    Python or cuts the flow). ``side`` is the entry's slot for the segment's direction (5 or 6), ``extended`` and
    ``read`` the scanner's counts so far; ``slot()`` takes a slot for a flow whose head is to extend."""
    size, last = segment[8], entry[side]
    end = (segment[4] + size) & 0xFFFFFFFF
    ahead = size if last is None else (end - last) & 0xFFFFFFFF
    fresh = min(ahead, size) if size and ahead < 0x80000000 else 0
    if fresh and entry[1] < head:
        entry[1], entry[4], entry[side] = entry[1] + 1, min(entry[4] + fresh, 65535), end
        return ROOM
    if not fresh and entry[3] < entry[1] + HEAD_QUIET:
        entry[3] = min(entry[3] + 1, 65535)
        return ROOM
    if not (
        size
        and batch_empty
        and entry[4] < HEAD_LINE_BYTES
        and extended < read // HEAD_SHARE + HEAD_FLOOR
        and _TEXT.fullmatch(segment[7])
        and (entry[7] or slot())
    ):
        return FULL
    entry[7] = True
    # A piece of a line past the head: new bytes, or bytes seen again or filling a hole (charged all the same).
    entry[4] = min(entry[4] + (fresh or size), 65535)
    if fresh:
        entry[1], entry[side] = min(entry[1] + 1, 65535), end
    return EXTENDED
