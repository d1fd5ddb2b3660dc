"""The main process of ``analyze --jobs N`` applies its workers' operations in one order whatever their arrivals.

``ParallelRun._replay`` applies a run of operations from one worker at a time; these tests hold it to the plain
algorithm it replaced (one operation at a time: the earliest of every worker's first, the first worker's of equal
ones, held back while a worker with nothing received and not ended has a watermark below it), over arbitrary
interleavings of operations, watermarks and ends, keys that tie between workers and keys out of order in a worker.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passive.analysis.parallel import ParallelRun, _Worker
from tests.test_fanout_order import interleaved_arrivals

_KEYS = st.tuples(st.integers(0, 1), st.integers(0, 4), st.integers(0, 1), st.just(0), st.integers(0, 3))
_WATERMARKS = st.tuples(st.integers(0, 1), st.integers(0, 4), st.just(9), st.just(0), st.just(0))


def _plain(involved: list[_Worker], applied: list[Any]) -> None:
    """The previous ``_replay``: one operation per pass."""
    while True:
        best: _Worker | None = None
        for worker in involved:
            if worker.ops and (best is None or worker.ops[0][0] < best.ops[0][0]):
                best = worker
        if best is None:
            return
        key = best.ops[0][0]
        for worker in involved:
            if worker is not best and not worker.ops and worker.done is None and worker.watermark < key:
                return
        applied.append(best.ops.popleft())


class _Applied:
    def __init__(self) -> None:
        self.ops: list[Any] = []

    def apply(self, op: Any) -> None:
        self.ops.append(op)


@st.composite
def _schedules(draw: Any) -> tuple[int, list[tuple[int, Any]], list[bool]]:
    """What each worker sends (operations with the watermark they carry, then maybe its end), interleaved at random;
    after which arrivals the main process replays."""
    jobs = draw(st.integers(1, 4))
    streams: list[list[Any]] = []
    for index in range(jobs):
        messages: list[Any] = []
        for _ in range(draw(st.integers(0, 5))):
            ops = [(draw(_KEYS), index, n, None) for n in range(draw(st.integers(0, 5)))]
            messages.append(("ops", ops, draw(_WATERMARKS)))
        if draw(st.booleans()):
            messages.append(("done",))
        streams.append(messages)
    schedule, replays = interleaved_arrivals(draw, streams)
    return jobs, schedule, replays


def _workers(jobs: int) -> list[_Worker]:
    return [_Worker(None, None, watermark=(0, 0, 0, 0, 0)) for _ in range(jobs)]  # type: ignore[arg-type]


def _receive(worker: _Worker, message: Any) -> None:
    """What ``ParallelRun._take`` makes of a message."""
    if message[0] == "ops":
        worker.ops.extend(message[1])
        worker.watermark = message[2]
    else:
        worker.done, worker.watermark = (), (1 << 62, 0, 0, 0, 0)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schedules())
def test_replay_applies_in_the_order_of_the_one_at_a_time_algorithm(schedule: Any) -> None:
    jobs, arrivals, replays = schedule
    run = object.__new__(ParallelRun)
    applied = run.replayer = _Applied()  # type: ignore[assignment]
    runs, plain = _workers(jobs), _workers(jobs)
    expected: list[Any] = []
    for (index, message), replay in zip(arrivals, replays, strict=True):
        _receive(runs[index], message)
        _receive(plain[index], message)
        if replay:
            run._replay(runs)
            _plain(plain, expected)
            assert applied.ops == expected
            assert [list(w.ops) for w in runs] == [list(w.ops) for w in plain]
    for worker in [*runs, *plain]:  # every worker ended: everything is applied
        _receive(worker, ("done",))
    run._replay(runs)
    _plain(plain, expected)
    assert applied.ops == expected
    assert not any(worker.ops for worker in runs)


def test_a_worker_with_nothing_received_holds_back_later_operations_until_its_watermark_passes() -> None:
    """The property above, on one schedule spelled out: a run of the first worker's operations stops at the second
    worker's first one, and at the watermark of a worker with nothing received."""
    run = object.__new__(ParallelRun)
    applied = run.replayer = _Applied()  # type: ignore[assignment]
    first, second, third = workers = _workers(3)
    first.ops = deque([((0, frame, 1, 0, frame), "a", frame, None) for frame in (1, 2, 3, 6, 7)])
    second.ops, second.watermark = deque([((0, 4, 1, 0, 1), "b", 4, None)]), (0, 6, 9, 0, 0)
    third.watermark = (0, 5, 9, 0, 0)
    run._replay(workers)
    assert [op[2] for op in applied.ops] == [1, 2, 3, 4]  # 6 waits: the third worker may still send one at 5
    third.watermark = (0, 8, 9, 0, 0)
    run._replay(workers)
    assert [op[2] for op in applied.ops] == [1, 2, 3, 4, 6]  # 7 waits for the second worker, now without any
    third.done, third.watermark = (), (1 << 62, 0, 0, 0, 0)
    second.done = ()
    run._replay(workers)
    assert [op[2] for op in applied.ops] == [1, 2, 3, 4, 6, 7]
