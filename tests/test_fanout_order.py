"""The parent of ``watch --jobs N`` applies its processes' operations in one order whatever the arrivals.

``FanoutCapture._replay`` applies a run of operations from one process at a time and keeps what it holds back
pickled until needed; these tests hold it to the plain algorithm it replaced (one operation at a time, the earliest
of every process's first, held back while a process with nothing received may still send an earlier one, unless
more than MAX_HELD_OPS are held), over arbitrary interleavings of operations, ticks (watermarks) and ends, sent
through real pipes in the messages the capture processes send.
"""

from __future__ import annotations

import math
import multiprocessing
from collections import deque
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passive.capture import CaptureCounters
from passive.live import fanout
from passive.live.fanout import FanoutCapture, _Child, _send


class _PlainOrder:
    """The order of the previous ``_replay``: every received operation unpickled, one applied per pass."""

    def __init__(self, jobs: int, max_held: int) -> None:
        self.ops: list[deque[Any]] = [deque() for _ in range(jobs)]
        self.watermarks = [-math.inf] * jobs
        self.held, self.max_held = 0, max_held
        self.applied: list[Any] = []

    def replay(self) -> None:
        while True:
            best: int | None = None
            for index, ops in enumerate(self.ops):
                if ops and (best is None or ops[0][0] < self.ops[best][0][0]):
                    best = index
            if best is None:
                return
            when = self.ops[best][0][0][0]
            if self.held <= self.max_held and any(
                index != best and not ops and self.watermarks[index] < when for index, ops in enumerate(self.ops)
            ):
                return
            self.applied.append(self.ops[best].popleft())
            self.held -= 1


class _Applied:
    """What the parent's replayer is handed, in order (the operations' contents are the test's own)."""

    def __init__(self) -> None:
        self.ops: list[Any] = []

    def apply(self, op: Any) -> None:
        self.ops.append(op)


_TIMES = st.sampled_from([0.0, 1.0, 1.0, 2.0, 3.0, 5.0, math.inf])  # ties in time are the usual case
_WATERMARKS = st.sampled_from([-math.inf, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, math.inf])


@st.composite
def _schedules(draw: Any) -> tuple[int, list[tuple[int, Any]], list[bool]]:
    """Each process's messages (operations with the watermark they carry, ticks), interleaved at random; after
    which arrivals the parent replays."""
    jobs = draw(st.integers(1, 4))
    streams: list[list[Any]] = []
    for index in range(jobs):
        order, messages = 0, []
        for _ in range(draw(st.integers(0, 6))):
            if draw(st.booleans()):
                ops = []
                for _ in range(draw(st.integers(1, 5))):
                    order += 1
                    phase = draw(st.integers(0, 1))
                    ops.append(((draw(_TIMES), phase, index, order), f"session {index}", order, None))
                messages.append(("ops", ops, draw(_WATERMARKS)))
            else:
                messages.append(("tick", draw(_WATERMARKS)))
        if draw(st.booleans()):
            messages.append(("done",))
        streams.append(messages)
    schedule, replays = interleaved_arrivals(draw, streams)
    return jobs, schedule, replays


def _parent(jobs: int) -> tuple[FanoutCapture, list[Any]]:
    """A parent as the constructor leaves it, with a real pipe per process instead of the forked processes."""
    parent = object.__new__(FanoutCapture)
    parent.jobs, parent.warnings, parent._held = jobs, [], 0
    parent.children, senders = [], []
    for index in range(jobs):
        reader, writer = multiprocessing.Pipe(duplex=False)
        parent.children.append(_Child(index, reader, None))
        senders.append(writer)
    return parent, senders


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schedules(), st.sampled_from([0, 1, 3, 8, fanout.MAX_HELD_OPS]))
def test_replay_applies_in_the_order_of_the_one_at_a_time_algorithm(schedule: Any, max_held: int) -> None:
    jobs, arrivals, replays = schedule
    parent, senders = _parent(jobs)
    plain, applied = _PlainOrder(jobs, max_held), _Applied()
    sent: list[Any] = []
    try:
        with mock.patch.object(fanout, "MAX_HELD_OPS", max_held):
            for (index, message), replay in zip(arrivals, replays, strict=True):
                child = parent.children[index]
                if message[0] == "ops":
                    _kind, ops, watermark = message
                    fanout_message = ("ops", index, len(ops), watermark, fanout.pickle.dumps(ops, protocol=5))
                    plain.ops[index].extend(ops)
                    plain.held += len(ops)
                    sent.extend(ops)
                elif message[0] == "tick":
                    watermark = message[1]
                    fanout_message = ("tick", index, 0.0, watermark, CaptureCounters(), None, (0, 0, 0))
                else:
                    watermark = math.inf
                    fanout_message = ("done", index, None, math.inf, CaptureCounters(), None, (0, 0, 0))
                plain.watermarks[index] = max(plain.watermarks[index], watermark)
                _send(senders[index], fanout_message)
                parent._receive(child)
                assert parent._held == plain.held and child.watermark == plain.watermarks[index]
                if replay:
                    plain.replay()
                    parent._replay(applied)  # type: ignore[arg-type]
                    assert applied.ops == plain.applied
                    assert parent._held == plain.held
            # The end of the run (run_into's finally): every watermark at infinity, everything applied.
            for child in parent.children:
                child.watermark = math.inf
            plain.watermarks = [math.inf] * jobs
            plain.replay()
            parent._replay(applied)  # type: ignore[arg-type]
    finally:
        for end in senders:
            end.close()
        for child in parent.children:
            child.conn.close()
    assert applied.ops == plain.applied
    assert sorted(applied.ops, key=lambda op: op[0]) == sorted(sent, key=lambda op: op[0])  # none lost, none twice
    assert parent._held == 0 and not any(child.ops or child.chunks for child in parent.children)


def test_a_process_with_nothing_received_holds_back_later_operations_until_its_watermark_passes() -> None:
    """The property above, on one schedule spelled out: what the replay waits for, and what lets it go on."""
    parent, senders = _parent(2)
    applied = _Applied()
    try:
        early = [((1.0, 1, 0, n), "a", n, None) for n in (1, 2, 3)]
        late = [((4.0, 1, 0, 4), "a", 4, None)]
        _send(senders[0], ("ops", 0, 4, 1.0, fanout.pickle.dumps(early + late, protocol=5)))
        parent._receive(parent.children[0])
        parent._replay(applied)  # type: ignore[arg-type]
        assert applied.ops == [] and parent._held == 4  # process 1 may still send something at 0.0
        _send(senders[1], ("tick", 1, 3.0, 3.0, CaptureCounters(), None, (0, 0, 0)))
        parent._receive(parent.children[1])
        parent._replay(applied)  # type: ignore[arg-type]
        assert applied.ops == early and parent._held == 1  # up to its watermark, not past it
        other = [((2.0, 0, 1, 1), "b", 1, None)]
        _send(senders[1], ("ops", 1, 1, 2.0, fanout.pickle.dumps(other, protocol=5)))
        parent._receive(parent.children[1])
        parent._replay(applied)  # type: ignore[arg-type]
        assert applied.ops == early + other and parent._held == 1  # its watermark is still 3.0
        _send(senders[1], ("done", 1, None, math.inf, CaptureCounters(), None, (0, 0, 0)))
        parent._receive(parent.children[1])
        parent._replay(applied)  # type: ignore[arg-type]
        assert applied.ops == early + other + late and parent._held == 0
    finally:
        for end in senders:
            end.close()
        for child in parent.children:
            child.conn.close()


def interleaved_arrivals(draw: Any, streams: list[list[Any]]) -> tuple[list[tuple[int, Any]], list[bool]]:
    """Each worker's messages, in its order, interleaved with the others' in an order drawn; and after which arrivals
    the main process replays."""
    order = draw(st.permutations([index for index, messages in enumerate(streams) for _ in messages]))
    positions = [0] * len(streams)
    schedule = []
    for index in order:
        schedule.append((index, streams[index][positions[index]]))
        positions[index] += 1
    return schedule, draw(st.lists(st.booleans(), min_size=len(schedule), max_size=len(schedule)))
