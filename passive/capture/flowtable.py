"""The reassembler's flow table: flows by id and by 4-tuple (and virtual network), and the order in which a full
table evicts them.

A sender can open flows far faster than a mail session sends its next line (a SYN flood from spoofed sources
costs it nothing). Evicting the least recently active flow first would let 10 000 spoofed SYNs push a live
session out of a 10 000-flow table, and the session would come back mid-stream, without its credentials. So
flows are evicted by class first, then by idle time:

1. :data:`HALF_OPEN`: no completed handshake (a SYN never answered, or answered and never acknowledged by its
   sender), and flows the caller does not want (their tombstones);
2. :data:`QUIET`: handshake completed, no payload yet;
3. :data:`ESTABLISHED`: payload seen on a completed handshake, or on a flow picked up mid-stream.

Picking the victim is cheap: one heap per class, keyed by the last activity *recorded in the heap*. The hot path
only stamps ``flow.last_ts``; a popped entry whose flow was active since is pushed back with the new time, and
entries of closed flows or of a flow's former class are dropped when they surface (the heaps are rebuilt from the
live flows when dead entries outnumber them). Every flow is pushed once per class change plus once per time it
surfaced after activity, so eviction costs O(log n) amortised per packet, not a scan of the table.
"""

from __future__ import annotations

import heapq

from passive.capture.flow import Flow

HALF_OPEN, QUIET, ESTABLISHED = 0, 1, 2
_CLASSES = (HALF_OPEN, QUIET, ESTABLISHED)
_SLACK = 1024  # dead heap entries tolerated beyond the live flows before the heaps are rebuilt

FlowKey = tuple[bytes, int, bytes, int, int]  # (source address, port, destination address, port, virtual network)


class FlowTable:
    """Live flows: by id, by the 4-tuple of each direction, and in eviction order."""

    def __init__(self) -> None:
        self.keys: dict[FlowKey, tuple[Flow, int]] = {}
        self.flows: dict[int, Flow] = {}
        self._heaps: tuple[list[tuple[float, int, Flow]], ...] = ([], [], [])
        self._entries = 0

    def __len__(self) -> int:
        return len(self.flows)

    def add(self, flow: Flow, evict_class: int) -> None:
        c2s, s2c = flow._keys
        self.keys[c2s] = (flow, 0)
        self.keys[s2c] = (flow, 1)
        self.flows[flow.id] = flow
        flow.evict_class = evict_class
        self._push(flow)

    def reclass(self, flow: Flow, evict_class: int) -> None:
        """Move ``flow`` to another eviction class."""
        if flow.evict_class != evict_class:
            flow.evict_class = evict_class
            self._push(flow)

    def remove(self, flow: Flow) -> None:
        """Forget ``flow`` (its heap entries are dropped lazily)."""
        for key in flow._keys:
            entry = self.keys.get(key)
            if entry is not None and entry[0] is flow:
                del self.keys[key]
        self.flows.pop(flow.id, None)

    def victim(self) -> Flow | None:
        """The flow to evict: the least recently active one of the lowest class present."""
        flows = self.flows
        for evict_class, heap in enumerate(self._heaps):
            while heap:
                stamp, flow_id, flow = heap[0]
                if flows.get(flow_id) is not flow or flow.evict_class != evict_class:
                    heapq.heappop(heap)  # closed, or moved to another class
                    self._entries -= 1
                elif flow.last_ts > stamp:
                    heapq.heapreplace(heap, (flow.last_ts, flow_id, flow))  # active since: back in line
                else:
                    return flow
        return None

    def _push(self, flow: Flow) -> None:
        heapq.heappush(self._heaps[flow.evict_class], (flow.last_ts, flow.id, flow))
        self._entries += 1
        if self._entries > 2 * len(self.flows) + _SLACK:
            self._rebuild()

    def _rebuild(self) -> None:
        heaps: tuple[list[tuple[float, int, Flow]], ...] = ([], [], [])
        for flow in self.flows.values():
            heaps[flow.evict_class].append((flow.last_ts, flow.id, flow))
        for heap in heaps:
            heapq.heapify(heap)
        self._heaps = heaps
        self._entries = len(self.flows)
