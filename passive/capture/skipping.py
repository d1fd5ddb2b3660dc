"""Bytes dropped unread below Python: message bodies, literals nobody reads, ciphertext.

Most bytes of a mail session are a message body (SMTP DATA, a POP3 RETR answer), a literal the server sends (an
IMAP FETCH) or TLS ciphertext, and none of them makes a finding. A dissector knows when it is inside one
(``StreamHandler.skippable``); its handler then calls :meth:`~passive.capture.flow.Flow.want_skip`, and once the
batch being fed is done, :func:`arm_requested` tells the packet scanner, per direction, the next sequence number and
the rule (the dissectors' ``SKIP_*``):

* ``SKIP_DOT``: inside a dot-terminated body, a segment in which no line starts with a dot cannot end it: no
  ``\\n.``, no ``\\r.`` (a server may take a bare CR for a line end: SMTP smuggling into Cisco Secure Email), and
  no leading dot right after a LF or a CR. A segment under two bytes is read, so that a notice's tail always says
  how the line before the next dot ended (CR LF or a bare LF: the exact end line, or a lax one);
* ``SKIP_RAW``: inside a run of ``left`` bytes counted off, a segment shorter than what is left cannot end it;
* ``SKIP_ALL``: the session is TLS, or the flow turned out to carry no mail (what a proxy's tunnel carries, a
  Redis server on a mail port): nothing in it is read.

The scanner then drops, without making a Python object, the segments that continue exactly where the direction is
(the next sequence number, no SYN/FIN/RST, ACK set, captured whole, no wrong checksum) and keep to the rule, and the
bare ACKs of either direction. Anything else (a retransmission, a hole, a FIN, a segment that may end the body) ends the
arrangement: the scanner first hands over a **notice** of what it dropped, then the segment, which Python reads as
usual (and may arm again after the batch). Notices are also handed over before a sweep tick and at the end of every
batch, so a flow is never idle in Python's eyes while its packets are being dropped. A flow holding a segment with a
wrong checksum (:mod:`passive.capture.doubtful`) is not armed: a direction's notice may come after the other's
acknowledging its bytes, which would read the held segment where those bytes, unread yet, were.

A notice is a :data:`~passive.capture.linklayer.Segment` with ``INFO_SKIPPED`` in its info field: the direction's
4-tuple, the sequence number of the first byte dropped, the last acknowledgement and window the direction sent (flag
ACK when it sent one), the last segment dropped (its last ``TAIL_KEEP`` bytes; or nothing), the number of bytes
dropped, and in the options field the number of packets, the frames since the last one with bytes and its time
(the handler dates what it read last by it: a bare ACK is no data). :func:`apply_notice` moves the reassembler on
as reading those packets would have (the stream offset, the peer's acknowledged edge and window, the delivered
tail a retransmission is checked against), and tells the handler how many bytes went unread (``on_skip``). Counted:
``segments_skipped``, ``bytes_skipped``. A flow's two notices are handed over in the order of their last packets:
its latest time and frame are then its last packet's, as when they were read.

Python must never lose a flow while the scanner drops its packets, or what it dropped would come back as strays
where reading them would have opened a new flow:

* at a sweep tick, the scanner forgets the armed flows the sweep closes (idle past the timeout at the tick's time,
  whatever time later packets carry), and an armed flow's packet after the idle timeout goes on;
* a full flow table evicts its least recently active flow, and a flow whose packets are being dropped looks idle
  until its notice: so nothing is armed while the table could fill within a batch (fewer free places than a
  batch's packets, each of which may open a flow), and the scanner forgets what it had armed (``skip_none``);
* a flow Python closes otherwise (FIN, RST, eviction, a sweep of the live capture's clock) is forgotten once the
  batch (or the tick) is done.

Nor may anything in Python depend on where the scanner is inside a notice: a session the run's dissector budget
could make give up its state mid-notice (it holds more than its share of the budget's low-water mark) is read, not
skipped (``passive.analysis.flow.EngineHandler.skippable``).
"""

from __future__ import annotations

from typing import Any, Protocol

from passive.capture.checksums import INFO_CSUM_LEFT
from passive.capture.counters import CaptureCounters
from passive.capture.delivery import DIRECTIONS, TAIL_KEEP
from passive.capture.flow import Direction, Flow
from passive.capture.flowtable import ESTABLISHED
from passive.capture.linklayer import (
    ACK,
    INFO_SKIPPED,
    INFO_VNET_SHIFT,
    OPT_BAD_SIGNATURE,
    OPT_SIGNED,
    OPT_TIMESTAMP,
    OPT_TSVAL_SHIFT,
    Segment,
)
from passive.capture.stream import SEQ_HALF, SEQ_MASK, HalfStream
from passive.capture.tcpoptions import PAWS_WINDOW, newer_timestamp

SKIP_NONE, SKIP_DOT, SKIP_RAW, SKIP_ALL = 0, 1, 2, 3
"""The rules, as the dissectors number them (``dissectors.linebuffer.SKIP_*``)."""
SKIP_RULE = 3  # the rule's bits of a direction's mode; above them:
SKIP_PAWS = 8
"""Or-ed into a direction's rule where its receiver judges timestamps (passive.capture.tcpoptions), with the one it
kept above :data:`SKIP_TS_SHIFT`: a segment whose timestamp is older than it, or than the latest of the segments
dropped since, by more than ``PAWS_WINDOW``, is handed over (Python drops it), and so is one with a signature or the
URG flag; the notice tells the latest timestamp dropped (-1: none)."""
SKIP_TS_SHIFT = 8
SKIP_STRICT = 4
"""Or-ed into a direction's rule when the direction showed right checksums (``HalfStream.checked``): a segment
whose checksum is as offload leaves it is then handed over, for Python to doubt (:mod:`passive.capture.doubtful`);
elsewhere it is a capturing host's own (offload) and may be dropped unread. A wrong checksum is always handed over."""
MAX_ARMED = 16384
"""Flows a scanner drops bytes of at once: flows inside a body or a literal, and TLS sessions (256 bytes each in C,
twice that with the table's slack: 8 MiB at most). Past it, further flows are read as usual; flows idle past the
idle timeout make room first."""
MAX_LEFT = 1 << 62  # a raw run longer than this (a claimed literal size) is read as usual (the scanner: 64 bits)


class Reassembler(Protocol):
    """What a notice moves on (:class:`passive.capture.reassembly.Reassembler`)."""

    counters: CaptureCounters
    skip_requests: list[Flow]
    max_flows: int
    _keys: dict[tuple[bytes, int, bytes, int, int], tuple[Flow, int]]

    @property
    def open_flows(self) -> int: ...

    def _acknowledged(self, flow: Flow, direction: int, half: HalfStream) -> None: ...


def arm_requested(reassembler: Reassembler, scanner: Any) -> None:
    """After a batch: tell ``scanner`` which flows' next bytes may be dropped, and how (see the module docstring)."""
    flows = reassembler.skip_requests
    if reassembler.open_flows + scanner.batch_packets > reassembler.max_flows:  # the table could fill: nothing is armed
        scanner.skip_none()
        for flow in flows:
            flow.skip_wanted = flow.skip_armed = False
            flow.skip_rules = (0, 0)
        flows.clear()
        return
    for flow in flows:
        flow.skip_wanted = False
        plan = _plan(flow)
        if plan is None and not flow.skip_armed:
            continue
        armed = (
            scanner.skip_flow(
                flow.client_addr,
                flow.client_port,
                flow.server_addr,
                flow.server_port,
                flow.last_ts,
                *(plan or _NOTHING),
                vnet=flow.vnet,
                client_acked=flow._halves[0].acked_high if plan else 0,  # type: ignore[index]
                server_acked=flow._halves[1].acked_high if plan else 0,  # type: ignore[index]
            )
            and plan is not None
        )
        flow.skip_armed, flow.skip_rules = armed, (plan[0], plan[4]) if armed and plan else (0, 0)
    flows.clear()


_NOTHING = (SKIP_NONE, 0, 0, False, SKIP_NONE, 0, 0, False)  # a closed flow: the scanner forgets it


def _plan(flow: Flow) -> list[Any] | None:
    """Per direction (client's first): rule, next sequence number, bytes left of a raw run, at a line's start."""
    halves, handler = flow._halves, flow.handler
    if halves is None or handler is None or flow.state != Flow.ACTIVE or flow.evict_class != ESTABLISHED:
        return None
    skippable = getattr(handler, "skippable", None)  # a handler that never drops bytes need not have one
    if skippable is None:
        return None
    plan: list[Any] = []
    for direction in (Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT):
        half = halves[direction]
        if not half.started or half.pending or half.resync or half.fin_rel is not None or half.finished:
            return None
        if half.doubtful or half.urgent is not None:  # held until acknowledged: the notices' order would settle it
            return None  # (doubtful.py); an urgent byte to take out (tcpoptions.py)
        rule = skippable(flow, DIRECTIONS[direction])
        mode, left, line_start = rule if rule is not None else (SKIP_NONE, 0, False)
        if left > MAX_LEFT:
            mode, left = SKIP_NONE, 0
        if mode != SKIP_NONE:
            mode |= SKIP_STRICT if half.checked else 0
            if half.ts_recent is not None and halves[1 - direction].ts_recent is not None:  # both SYNs had one
                mode |= SKIP_PAWS | half.ts_recent << SKIP_TS_SHIFT
        plan += [mode, half.next_seq, left, line_start]
    return plan if plan[0] & SKIP_RULE or plan[4] & SKIP_RULE else None


def twin_rule(rules: tuple[Any, ...], at: int) -> list[Any]:
    """The pure-Python scanner's state of one direction from ``skip_flow``'s rules at ``at``: rule, next sequence
    number, bytes left of a raw run, at a line's start, its notice (none yet), the checksum bit that hands a
    segment over besides a wrong checksum's (INFO_CSUM_LEFT where SKIP_STRICT, else 0), and the timestamp an older
    one is judged against (SKIP_PAWS; else None)."""
    mode = rules[at]
    left = INFO_CSUM_LEFT if mode & SKIP_STRICT else 0
    tsval = mode >> SKIP_TS_SHIFT if mode & SKIP_PAWS else None
    return [mode & SKIP_RULE, rules[at + 1], rules[at + 2], bool(rules[at + 3]), None, left, tsval]


def judged(entry: list[Any], direction: int, segment: Segment) -> bool:
    """Whether the pure-Python scanner hands over a segment of an armed flow (``entry``: its twin rules, then the
    acknowledgements per direction) for its options: a signature or damaged list, or a timestamp older than the kept
    one by more than PAWS_WINDOW (SKIP_PAWS). Else the kept one is raised where the receiver would keep it
    (tcpoptions.keep_timestamp), and the acknowledgements move on."""
    options, acked = segment[11], entry[4]
    if options & (OPT_SIGNED | OPT_BAD_SIGNATURE):
        return True
    rule, seq, ack = entry[2 + direction], segment[4], segment[5]
    fresh_ack = (ack - acked[1 - direction]) & SEQ_MASK < SEQ_HALF
    if rule[6] is not None and (not fresh_ack or 0 < (ack - entry[3 - direction][1]) & SEQ_MASK < SEQ_HALF):
        return True  # an old acknowledgement, or one past the peer's next byte: Python judges its timestamp
    if rule[6] is not None and options & OPT_TIMESTAMP:
        tsval = options >> OPT_TSVAL_SHIFT & SEQ_MASK
        if rule[6] and PAWS_WINDOW < (rule[6] - tsval) & SEQ_MASK < SEQ_HALF:
            return True
        start, end = (seq - acked[direction]) & SEQ_MASK, (seq + segment[8] - acked[direction]) & SEQ_MASK
        if (not start or start >= SEQ_HALF) and end < SEQ_HALF and newer_timestamp(rule[6], tsval):
            rule[6] = tsval
    if fresh_ack:
        acked[1 - direction] = ack
    return False


def twin_notices(items: list[Any], entry: list[Any], vnet: int) -> None:
    """The pure-Python scanner's notices of an armed flow (``entry``), both directions', in the order of their last
    packets (the flow's latest time is its last's)."""
    client, server = entry[2][4], entry[3][4]
    server_first = client is not None and server is not None and server[10] < client[10]
    for rule in (entry[3], entry[2]) if server_first else entry[2:4]:
        notice = rule[4]
        if notice is not None:
            rule[4] = None
            src, dst, sport, dport, seq, size, last, count, ack, window, frame, ts, data_frame, data_ts, tsval = notice
            packets = (count, frame - data_frame, data_ts, tsval)
            tail = last[-TAIL_KEEP:]  # the last segment dropped, kept for overlap conflict checks
            info = INFO_SKIPPED | vnet << INFO_VNET_SHIFT
            segment = (src, dst, sport, dport, seq, ack, ACK, tail, size, info, window, packets)
            items.append((frame, ts, segment))


def apply_notice(reassembler: Reassembler, segment: Segment, frame: int, ts: float) -> None:
    """The scanner dropped packets of one direction unread: move the flow on as reading them would have."""
    src, dst, sport, dport, seq, ack, flags, last, size, info, window, (packets, since_data, data_ts, tsval) = segment
    counters = reassembler.counters
    counters.segments += packets
    counters.segments_skipped += packets
    entry = reassembler._keys.get((src, sport, dst, dport, info >> INFO_VNET_SHIFT))
    if entry is None:  # the flow left the table (evicted) while the scanner dropped its packets
        counters.stray_segments += packets
        return
    flow, direction = entry
    flow.last_ts, flow.last_frame = ts, frame
    halves = flow._halves
    if halves is None:
        return
    half, other = halves[direction], halves[1 - direction]
    if flags & ACK:
        other.ack_to(ack, window, (seq + size) & SEQ_MASK)  # the last packet's start: past what came before
        if other.doubtful:
            reassembler._acknowledged(flow, 1 - direction, other)
    if tsval >= 0 and half.ts_recent is not None and newer_timestamp(half.ts_recent, tsval):
        half.ts_recent = tsval  # the latest of the segments dropped (passive.capture.tcpoptions)
    if not size:
        return
    handler = flow.handler
    if flow.state != Flow.ACTIVE or handler is None or seq != half.next_seq or half.pending or half.fin_rel is not None:
        return  # not where the flow is (cannot happen while the scanner keeps to its rules): the hole shows as a gap
    half.next_rel += size
    half.next_seq = (seq + size) & SEQ_MASK
    half.tail, half.tail_rel = last, half.next_rel - len(last)
    counters.bytes_delivered += size
    counters.bytes_skipped += size
    handler.on_skip(flow, DIRECTIONS[direction], size, last[-1:] == b"\n", frame - since_data, data_ts, last[-2:])
