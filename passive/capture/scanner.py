"""The packet scanner: which packets reach Python at all, decided per packet before any per-packet object is made.

Two implementations share one interface and one set of rules: the compiled one (``passive/capture/_scan.c``,
imported as ``passive.capture._cscan``; pcap and pcapng files, compressed files and pipes through a pipe of their
own (:mod:`passive.capture.piped`), and ``next_batch`` buffers of a live capture) and :class:`PyScanner`, its
pure-Python twin (BPF expressions on all but plain classic pcap, and everything when the extension is not built).
Both run on every capture in ``tests/test_scanner*.py``, which compare what they admit, packet by packet.

A scanner numbers every frame (as tshark does), decodes link, tunnel, IP and TCP headers
(:func:`~passive.capture.linklayer.decode_tcp`) and **admits** a TCP segment when:

1. one of its ports is a named server port (the port filter of ``--ports-only``, also applied in every-port mode:
   a named port says the protocol); or, in every-port mode,
2. its flow is new or undecided, within its head (:mod:`passive.capture.flowhead`): fewer than ``head``
   (:data:`FLOW_HEAD`) packets bringing new bytes admitted, enough for the classifier to see the greeting and the
   client's first command, more while they are text in small pieces; or
3. Python declared its flow mail (``keep_flow``) or one of its endpoints a mail server (``keep_server``).

Everything else is dropped and counted: the packets of flows declared not mail (``drop_flow``, until a new SYN
reuses the 4-tuple), and those of flows still undecided past their head. That last verdict, and the admission of
each packet past the flow's first ``head`` (of any kind), is taken only when Python has processed every admitted
packet before it: the scanner ends a batch early rather than decide while a verdict may still be on its way, so what
is admitted (and counted) never depends on where batches end. A flow silent for ``idle_timeout`` seconds of capture
time starts over as new.

A flow is its 4-tuple and virtual network (``vnet``, :mod:`passive.capture.tunnels`). With ``shards`` > 1 a scanner
admits only flows hashing to ``shard`` (:func:`shard_of`): N workers split a capture; shard 0 counts non-flow packets.

A batch is a list of ``(frame, time, segment)``; ``segment`` is :data:`~passive.capture.linklayer.Segment` (its
checksums marked, :mod:`passive.capture.checksums`), or None for a sweep tick: every ``sweep_every`` seconds of
capture time, measured on every packet read (admitted or not), so that idle flows expire alike in every worker."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from passive.capture.checksums import INFO_CSUM_BAD
from passive.capture.defrag import Defragmenter
from passive.capture.flowhead import FULL, MAX_EXTENDING, head_room, new_head, take_slot
from passive.capture.linklayer import (
    ACK,
    FIN,
    FRAGMENT_V4,
    FRAGMENT_V6,
    INFO_FIRST_FRAGMENT,
    INFO_VNET_SHIFT,
    MALFORMED,
    RST,
    SYN,
    TUNNEL_BITS,
    UNSUPPORTED_LINK,
    URG,
    Segment,
    decode_tcp,
)
from passive.capture.skipping import (
    MAX_ARMED,
    SKIP_ALL,
    SKIP_DOT,
    SKIP_NONE,
    SKIP_RAW,
    SKIP_RULE,
    judged,
    twin_notices,
    twin_rule,
)

FLOW_HEAD = 12
"""Packets bringing new bytes admitted of a new flow before its verdict (its head). Classifying takes the greeting
and the client's first command, a segment each, and a reply or two; twelve leave room for a greeting or reply in
several segments, and a mid-stream pickup's first reply and command. Packets that bring no new bytes (the
handshake, bare ACKs, retransmissions, keep-alives, window probes) do not count (:mod:`passive.capture.flowhead`)."""
MAX_SCAN_FLOWS = 1 << 19
"""Flow states a scanner holds (72 bytes each in C: 36 MiB at most). A full table first forgets flows idle past the
timeout, then starts over (``table_resets``): each live flow is then a new flow again, and asked again."""
MAX_SERVERS = 65536
"""Mail server endpoints a scanner admits every packet of (``keep_server``); past this, further ones are refused."""
BATCH_PACKETS = 256
"""Packets per batch at most (each a few hundred bytes of Python objects). Bytes are dropped unread
(:mod:`passive.capture.skipping`) from the batch after the one in which the dissector allowed it, so short batches
drop more: of the all-mail bench capture, 31 k segments with 256 against 6 k with 2048 (38 k with 128); a batch
costs Python one call."""
_FIRST_CAPACITY = 4096  # the compiled table's first size; the twin mirrors its growth so that both purge alike
NEVER = float("-inf")  # the time of a flow not seen yet

NEW, KEEP, DROP, CUT = 1, 2, 3, 4  # CUT: undecided past its head
ADMIT, DROPPED, STALL = 0, 1, 2

COUNTERS = (
    "read", "admitted", "filtered", "not_tcp", "malformed", "fragments", "unsupported_link", "other_port",
    "other_worker", "not_mail", "past_head", "truncated", *TUNNEL_BITS, "table_resets", "head_extended",
)  # fmt: skip
"""What a scanner counts (``counters()``), in the compiled scanner's order."""
(
    READ, ADMITTED, FILTERED, NOT_TCP, MALFORMED_, FRAGMENTS, UNSUPPORTED, OTHER_PORT, OTHER_WORKER, NOT_MAIL,
    PAST_HEAD, TRUNCATED,
) = range(12)  # fmt: skip
TABLE_RESETS, HEAD_EXTENDED = len(COUNTERS) - 2, len(COUNTERS) - 1
_TUNNEL_SLOTS = tuple((bit, COUNTERS.index(name)) for name, bit in TUNNEL_BITS.items())
_STATUS_SLOT = {MALFORMED: MALFORMED_, FRAGMENT_V6: FRAGMENTS, UNSUPPORTED_LINK: UNSUPPORTED}
_WORDS6 = struct.Struct("!4I").unpack

Item = tuple[int, float, Segment | None]
Packet = tuple[int, float, int, bytes, int]  # (frame, time, link type, data, length on the wire): a RawPacket
FlowKey = tuple[bytes, int, bytes, int, int]  # canonical 4-tuple, virtual network


def shard_of(segment: Segment) -> int:
    """A hash of the segment's 4-tuple, the same in both directions (the compiled scanner computes the same)."""
    src, dst = segment[0], segment[1]
    if len(src) == 4:
        total = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
    else:
        total = sum(_WORDS6(src)) + sum(_WORDS6(dst))
    mixed = ((total + segment[2] + segment[3]) * 0x9E3779B1) & 0xFFFFFFFF
    return mixed ^ (mixed >> 16)


def canonical(src: bytes, sport: int, dst: bytes, dport: int, vnet: int = 0) -> FlowKey:
    return (src, sport, dst, dport, vnet) if (src, sport) <= (dst, dport) else (dst, dport, src, sport, vnet)


class PyScanner:
    """The scanner in Python: the compiled scanner's interface and rules (see the module docstring).

    ``packets`` yields ``(frame, time, link type, data, wire length)`` (a file reader's RawPacket); without it,
    :meth:`scan` takes libpcap's ``next_batch`` buffers. ``accept(linktype, data)``: a user's BPF filter, first."""

    def __init__(
        self,
        packets: Iterable[Packet] | None,
        ports: Iterable[int],
        *,
        every_port: bool = False,
        head: int = FLOW_HEAD,
        shard: int = 0,
        shards: int = 1,
        sweep_every: float = 0.0,
        idle_timeout: float = 300.0,
        accept: Callable[[int, bytes], bool] | None = None,
        batch_packets: int = BATCH_PACKETS,
    ) -> None:
        if shards < 1 or not 0 <= shard < shards or not 0 <= head <= 65535 or batch_packets < 1:
            raise ValueError("bad scanner settings")
        self.ports = frozenset(ports)
        self._all_named = len(self.ports) == 65536  # no port restriction
        # Where a UDP packet's IPv4 piece counts: port mode passes it as a possible tunnel's only (a TCP one: FRAGMENTS)
        self._v4_pieces = FRAGMENTS if every_port or self._all_named else NOT_TCP
        self.every_port, self.head, self.shard, self.shards = every_port, head, shard, shards
        self.sweep_every, self.idle_timeout, self.accept = sweep_every, idle_timeout, accept
        self.batch_packets = batch_packets
        self._packets: Iterator[Packet] | None = iter(packets) if packets is not None else None
        self._pending: Packet | None = None  # a packet whose admission waits for Python (stalled)
        self._flows: dict[FlowKey, list[Any]] = {}  # canonical 4-tuple -> entry (see _entry)
        self._servers: set[tuple[bytes, int]] = set()
        self._capacity, self._sweep_at, self._now = _FIRST_CAPACITY, NEVER, NEVER
        self._stalled, self.frames, self._counts = False, 0, [0] * len(COUNTERS)  # frames: the last frame read
        self._slots: list[FlowKey | None] = [None] * MAX_EXTENDING  # flows whose head extends (flowhead.take_slot)
        self._defrag = Defragmenter()  # IP packets fragmented on their way (passive.capture.defrag)
        self._rebuilt: bytes | None = None  # the frame a fragment completed, while its admission waits (stalled)
        # Flows whose bytes may be dropped unread (skip_flow): canonical 4-tuple -> [client endpoint, last time,
        # per direction (client's first) [rule, next sequence number, bytes left, at a line's start, notice]].
        self._armed: dict[FlowKey, list[Any]] = {}
        self._dirty: dict[FlowKey, None] = {}  # flows with packets dropped since their notices were last handed over

    # -- the compiled scanner's interface ---------------------------------------------------------------------------

    def next_batch(self) -> list[Item] | None:
        """Admitted segments and sweep ticks, up to :data:`BATCH_PACKETS`; None once the packets are exhausted."""
        items: list[Item] = []
        packets = self._packets
        if packets is None:
            return None
        while len(items) < self.batch_packets:
            packet = self._pending
            if packet is None:
                packet = next(packets, None)
                if packet is None:
                    self._packets = None
                    break
            frame, ts, linktype, data, _wire_len = packet
            if self._record(items, frame, ts, linktype, data) == STALL:
                self._pending = packet
                break
            self._pending = None
            self._stalled, self._rebuilt = False, None
            self.frames = frame
        self._flush_all(items)
        return items if items or self._packets is not None else None

    def scan(self, buf: bytes, meta: bytes, linktype: int, frame: int, start: int) -> tuple[list[Item], int, int]:
        """Like the compiled ``scan``: libpcap ``next_batch`` output from record ``start`` on; returns the items, the
        index of the first record not consumed, and the last frame number given."""
        items: list[Item] = []
        records = len(meta) // 16
        index = max(0, start)
        while index < records and len(items) < self.batch_packets:
            sec, usec, offset, caplen = struct.unpack_from("=IIII", meta, index * 16)
            if offset > len(buf) or caplen > len(buf) - offset:
                index += 1
                continue
            if self._record(items, frame + 1, sec + usec * 1e-6, linktype, buf[offset : offset + caplen]) == STALL:
                break
            self._stalled, self._rebuilt = False, None
            frame += 1
            index += 1
        self._flush_all(items)
        return items, index, frame

    def keep_flow(self, src: bytes, sport: int, dst: bytes, dport: int, vnet: int = 0, last: float = NEVER) -> None:
        self._set_flow(KEEP, canonical(src, sport, dst, dport, vnet), last)

    def drop_flow(self, src: bytes, sport: int, dst: bytes, dport: int, vnet: int = 0, last: float = NEVER) -> None:
        self._set_flow(DROP, canonical(src, sport, dst, dport, vnet), last)

    def _set_flow(self, state: int, key: FlowKey, last: float) -> None:
        entry = self._entry(key, self._now)  # last: the flow's, told a new file's scanner (no clock yet: idle)
        entry[0], entry[2], entry[7] = state, max(entry[2], last), False

    def keep_server(self, address: bytes, port: int) -> bool:
        if (address, port) not in self._servers and len(self._servers) >= MAX_SERVERS:
            return False
        self._servers.add((address, port))
        return True

    def skip_flow(
        self, client: bytes, cport: int, server: bytes, sport: int, last: float, *rules: Any, **flow: int
    ) -> bool:
        """Drop what follows of a flow unread, per direction (client's first): ``rules`` is (rule, next sequence
        number, bytes left of a raw run, at a line's start) twice (:mod:`passive.capture.skipping`); ``flow``: its
        ``vnet``, and per direction its receiver's latest acknowledgement (``client_acked``, ``server_acked``). False:
        the table is full."""
        key = canonical(client, cport, server, sport, flow.get("vnet", 0))
        armed = self._armed
        if not rules[0] & SKIP_RULE and not rules[4] & SKIP_RULE:
            armed.pop(key, None)
            return True
        if key not in armed and len(armed) >= MAX_ARMED:
            limit = self._now - self.idle_timeout
            self._armed = armed = {k: e for k, e in armed.items() if e[1] >= limit}
            if len(armed) >= MAX_ARMED:
                return False
        directions = [twin_rule(rules, i) for i in (0, 4)]
        armed[key] = [(client, cport), last, *directions, [flow.get("client_acked", 0), flow.get("server_acked", 0)]]
        return True

    def skip_none(self) -> None:
        self._armed.clear()  # every flow skip_flow armed (between batches)

    def take_datagrams(self, other: PyScanner) -> None:  # held pieces of fragmented packets: a file switch cut them
        self._defrag, other._defrag = other._defrag, Defragmenter()

    def counters(self) -> dict[str, int]:
        return dict(zip(COUNTERS, self._counts, strict=True))

    @property
    def flows(self) -> int:
        return len(self._flows)

    def close(self) -> None:
        self._packets = None

    # -- one packet ---------------------------------------------------------------------------------------------------

    def _record(self, items: list[Item], frame: int, ts: float, linktype: int, data: bytes) -> int:
        counts = self._counts
        lead = self.shard == 0
        self._now = ts
        if not self._stalled:
            counts[READ] += 1
            if self.sweep_every > 0 and ts >= self._sweep_at:
                self._sweep_at = ts + self.sweep_every
                self._flush_all(items)
                self._armed_expire(ts)
                items.append((frame, ts, None))
            if self.accept is not None and not self.accept(linktype, data):
                counts[FILTERED] += lead
                return DROPPED
        elif self._rebuilt is not None:
            data = self._rebuilt
        segment = decode_tcp(linktype, data)
        if segment.__class__ is int and segment in (FRAGMENT_V4, FRAGMENT_V6) and not self._stalled:
            rebuilt = self._defrag.add(linktype, data, ts)
            if rebuilt is not None:  # the last piece of a fragmented packet: the packet, read as any other
                self._rebuilt, joined = rebuilt, self._defrag.joined  # the pieces before it: counted as they came
                counts[FRAGMENTS if segment == FRAGMENT_V6 or self._defrag.tcp else self._v4_pieces] -= lead * joined
                segment = decode_tcp(linktype, rebuilt)
            elif self._defrag.copy:  # a copy of a piece: no fragment left unread
                return DROPPED
        if segment.__class__ is int:
            slot = (FRAGMENTS if self._defrag.tcp else self._v4_pieces) if segment == FRAGMENT_V4 else NOT_TCP
            counts[_STATUS_SLOT.get(segment, slot)] += lead  # type: ignore
            return DROPPED
        if self.shards > 1 and shard_of(segment) % self.shards != self.shard:  # type: ignore[arg-type]
            counts[OTHER_WORKER] += 1
            return DROPPED
        info = segment[9]  # type: ignore[index]
        named = segment[2] in self.ports or segment[3] in self.ports  # type: ignore[index]
        if info & INFO_FIRST_FRAGMENT:  # counted, never reassembled (linklayer)
            counts[FRAGMENTS if named or self.every_port else OTHER_PORT] += 1
            return DROPPED
        if not named:
            if not self.every_port:
                counts[OTHER_PORT] += 1
                return DROPPED
            verdict = self._admission(segment, ts, not items)  # type: ignore[arg-type]
            if verdict != ADMIT:
                self._stalled = verdict == STALL
                return verdict
        if not self._armed or not self._skipped(items, frame, ts, segment, self._rebuilt is not None):  # type: ignore[arg-type]
            items.append((frame, ts, segment))  # type: ignore[arg-type]
        counts[ADMITTED] += 1
        if len(segment[7]) < segment[8]:  # type: ignore[index]
            counts[TRUNCATED] += 1
        if info:
            for bit, slot in _TUNNEL_SLOTS:
                if info & bit:
                    counts[slot] += 1
        return ADMIT

    def _admission(self, segment: Segment, ts: float, batch_empty: bool) -> int:
        """Nothing of the flow's entry changes but on ADMIT or the cut: a stalled segment is judged again."""
        src, dst, sport, dport, flags = segment[0], segment[1], segment[2], segment[3], segment[6]
        servers = self._servers
        if servers and ((src, sport) in servers or (dst, dport) in servers):
            return ADMIT
        key = canonical(src, sport, dst, dport, segment[9] >> INFO_VNET_SHIFT)
        entry = self._entry(key, ts)
        if entry[2] + self.idle_timeout < ts:
            entry[:] = new_head(ts, NEW)
        entry[2] = ts
        state = entry[0]
        if state == KEEP:
            return ADMIT
        if state in (DROP, CUT):
            if flags & (SYN | ACK) != SYN:
                self._counts[NOT_MAIL if state == DROP else PAST_HEAD] += 1
                return DROPPED
            entry[:] = new_head(ts, NEW)  # a new connection on the 4-tuple
        if flags & (FIN | RST):
            entry[7] = False  # its slot is free
        if entry[1] + entry[3] >= self.head and not batch_empty:
            return STALL  # past `head` packets of any kind, wait for Python: its verdict is usually known by then
        counts = self._counts
        side = 5 if key[0] == src and key[1] == sport else 6

        def slot() -> bool:
            return take_slot(self._slots, self._flows, key, ts, self.idle_timeout)

        room = head_room(entry, side, segment, self.head, counts[HEAD_EXTENDED], counts[READ], batch_empty, slot)
        if room != FULL:
            counts[HEAD_EXTENDED] += room  # EXTENDED is 1
            return ADMIT
        if not batch_empty:
            return STALL  # let Python catch up: its verdict may be on the way
        entry[0], entry[7] = CUT, False
        self._counts[PAST_HEAD] += 1
        return DROPPED

    # -- bytes dropped unread (passive.capture.skipping) ----------------------------------------------------------

    def _skipped(self, items: list[Item], frame: int, ts: float, segment: Segment, rebuilt: bool) -> bool:
        """Whether an admitted segment of an armed flow is dropped into its direction's notice; otherwise the
        flow is disarmed (its notices handed over first) and the segment goes on. A segment of a frame joined from
        fragments (``rebuilt``) always goes on: the compiled scanner keeps no such frame past the packet."""
        src, dst, sport, dport = segment[0], segment[1], segment[2], segment[3]
        key = canonical(src, sport, dst, dport, segment[9] >> INFO_VNET_SHIFT)
        entry = self._armed.get(key)
        if entry is None:
            return False
        direction = 0 if entry[0] == (src, sport) else 1
        rule = entry[2 + direction]
        flags, payload, size = segment[6], segment[7], segment[8]
        if flags & (SYN | FIN | RST | URG) or not flags & ACK or rebuilt or segment[9] & (INFO_CSUM_BAD | rule[5]):
            return self._disarm(items, key, entry)  # rule[5]: INFO_CSUM_LEFT where Python doubts those (SKIP_STRICT)
        if judged(entry, direction, segment):  # Python judges it (passive.capture.tcpoptions)
            return self._disarm(items, key, entry)
        if entry[1] + self.idle_timeout < ts:  # Python may have expired the flow
            return self._disarm(items, key, entry)
        if size:
            mode = rule[0]
            if mode == SKIP_NONE or segment[4] != rule[1] or len(payload) != size:
                return self._disarm(items, key, entry)
            if mode == SKIP_DOT:
                if size < 2 or b"\n." in payload or b"\r." in payload or (rule[3] and payload[0] == 46):
                    return self._disarm(items, key, entry)
                rule[3] = payload[-1] in (10, 13)  # a LF or a CR: a dot next would begin a line
            elif mode == SKIP_RAW:
                if size >= rule[2]:
                    return self._disarm(items, key, entry)
                rule[2] -= size
            elif mode != SKIP_ALL:
                return self._disarm(items, key, entry)
            rule[1] = (rule[1] + size) & 0xFFFFFFFF
        notice = rule[4]
        if (
            notice is None
        ):  # [sender, receiver, ports, first seq, bytes, last segment, packets, ack, window, frame, time]
            notice = rule[4] = [src, dst, sport, dport, segment[4], 0, b"", 0, 0, 0, 0, 0.0, 0, 0.0, -1]
            self._dirty[key] = None
        if size:
            if not notice[5]:
                notice[4] = segment[4]
            notice[5] += size
            notice[6], notice[12], notice[13] = payload, frame, ts
        notice[7] += 1
        notice[14] = -1 if rule[6] is None else rule[6]
        notice[8], notice[9], notice[10], notice[11] = segment[5], segment[10], frame, ts
        entry[1] = ts
        return True

    def _armed_expire(self, now: float) -> None:
        """Forget the armed flows idle past the timeout at ``now``, as Python's sweep closes them."""
        limit = now - self.idle_timeout
        if self._armed:
            self._armed = {key: entry for key, entry in self._armed.items() if entry[1] >= limit}

    def _disarm(self, items: list[Item], key: FlowKey, entry: list[Any]) -> bool:
        twin_notices(items, entry, key[4])
        self._dirty.pop(key, None)
        del self._armed[key]
        return False

    def _flush_all(self, items: list[Item]) -> None:
        """Hand over every notice (before a sweep tick, at the end of a batch)."""
        armed = self._armed
        for key in self._dirty:
            twin_notices(items, armed[key], key[4])
        self._dirty.clear()

    def _entry(self, key: FlowKey, now: float) -> list[Any]:
        flows = self._flows
        if (entry := flows.get(key)) is not None:
            return entry
        capacity = self._capacity
        if len(flows) + 1 > (capacity // 2 if capacity < MAX_SCAN_FLOWS else capacity // 4 * 3):
            if capacity < MAX_SCAN_FLOWS:
                self._capacity *= 2
            else:
                limit = now - self.idle_timeout
                self._flows = flows = {k: e for k, e in flows.items() if e[2] >= limit}
                if len(flows) + 1 > capacity // 2:
                    self._counts[TABLE_RESETS] += 1
                    self._flows = flows = {}
        entry = flows[key] = new_head(now, NEW)
        return entry
