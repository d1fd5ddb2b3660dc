"""A run on a Dask cluster (``--scheduler ADDRESS``): the tasks of :mod:`passive.analysis.parallel` on its workers.

Each group of files (:mod:`passive.capture.rings`) is a Dask task; a group split by flow by the rule local workers
follow (:func:`~passive.analysis.parallel.split_by_flow`: big, and a large share of a thread's part of the run) is
one task per worker thread, each reading the group's flows that hash to it. A task returns what a local worker
process would have sent down its pipe (the recorded sessions and each file's counters); the client replays the
results group after group into its one analysis, exactly as it replays its own worker processes'
(:class:`~passive.analysis.parallel.ParallelRun`), and alone writes the outputs and the store. The workers must see
the captures under the names the client was given (shared storage).

A task that raises is run again by Dask (``retries``); the tasks of a worker lost mid-run are given to another by
the scheduler. Either way the task ran more than once, which the scheduler's log of transitions shows
(``Client.story``): the run counts such tasks (``tasks_retried`` in the summary). The client submits at most
:data:`AHEAD_PER_THREAD` tasks per worker thread beyond the group it is replaying, so that results waiting for it
stay bounded.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import zstandard
from distributed import Client, Future

from passive.analysis.parallel import (
    FileContext,
    ParallelRun,
    Task,
    WorkerFailed,
    _Worker,
    group_bytes,
    run_tasks,
    split_by_flow,
)
from passive.core.collector import fewer_collections

RETRIES = 2
"""Times Dask runs a task again after it raised (a worker's storage hiccup, say) before the run fails."""
AHEAD_PER_THREAD = 2
"""Tasks submitted per worker thread ahead of the group the client replays: every thread has its next task queued
while results wait, at most this many per thread, in the cluster's memory."""
CONNECT_TIMEOUT = "30s"
"""How long the client waits for the scheduler to answer."""
ZSTD_LEVEL = 1
"""A task's messages are compressed (zstd) while they wait for the client, on the worker, over the network and in
the client until replayed: 2.7 times smaller at level 1 (12.1 MB to 4.4 MB for a 63 MB all-mail capture, 32 ms to
compress and 16 ms to expand; higher levels gain under 5% more)."""


def record_task(analysis: Any, task: Task) -> list[bytes]:
    """On a Dask worker: one task's messages, as a local worker process would send them."""
    outbox = _Outbox(zstandard.ZstdCompressor(level=ZSTD_LEVEL))
    shard, shards, _files = task
    with fewer_collections():
        run_tasks(outbox, shard, shards, [task], analysis)
    return outbox.messages


class _Outbox:
    def __init__(self, compressor: zstandard.ZstdCompressor) -> None:
        self.compress = compressor.compress
        self.messages: list[bytes] = []

    def send_bytes(self, data: bytes) -> None:
        self.messages.append(self.compress(data))


class _Result:
    """A task's messages, read one by one as from a worker's pipe (the first read waits for the task)."""

    def __init__(self, future: Future) -> None:
        self.future = future
        self.messages: deque[bytes] | None = None
        self.expand = zstandard.ZstdDecompressor().decompress

    def recv_bytes(self) -> bytes:
        if self.messages is None:
            try:
                self.messages = deque(self.future.result())
            except Exception as exc:
                raise WorkerFailed(f"a cluster task failed: {type(exc).__name__}: {exc}") from exc
        if not self.messages:
            raise EOFError
        return self.expand(self.messages.popleft())

    def close(self) -> None:
        self.future.release()


class ClusterRun(ParallelRun):
    """The client's side: submit the groups as tasks, replay their results in order, count the retried ones."""

    def __init__(self, analysis: Any, results: Any, address: str, around_file: FileContext | None) -> None:
        super().__init__(analysis, results, 1, around_file)
        self.address = address

    def run(self, groups: list[list[str]]) -> None:
        options = dataclasses.replace(self.analysis.options, scheduler=None, jobs=1)
        task_analysis = type(self.analysis)(options)
        with Client(self.address, timeout=CONNECT_TIMEOUT) as client:
            threads = max(1, sum(client.nthreads().values()))
            tasks = self._plan(groups, threads)
            submitted: deque[list[Future]] = deque()
            keys: list[str] = []
            queued = iter(tasks)
            index = 0
            for group in groups:
                while len(submitted) <= AHEAD_PER_THREAD * threads:
                    batch = next(queued, None)
                    if batch is None:
                        break
                    futures = [client.submit(record_task, task_analysis, t, pure=False, retries=RETRIES) for t in batch]
                    keys.extend(f.key for f in futures)
                    submitted.append(futures)
                involved = [_Worker(_Result(f), None) for f in submitted.popleft()]  # type: ignore[arg-type]
                self._group()
                for path in group:
                    self._capture(index, path, involved)
                    index += 1
                for worker in involved:
                    worker.conn.close()
            self.results.tasks = len(keys)
            self.results.retried = _retried(client, keys)

    @staticmethod
    def _plan(groups: list[list[str]], threads: int) -> list[list[Task]]:
        """Per group, its tasks: the whole group, or one share of its flows per worker thread (by the rule local
        workers follow, :func:`~passive.analysis.parallel.split_by_flow`)."""
        plan: list[list[Task]] = []
        index = 0
        sizes = [group_bytes(group) for group in groups]
        total = sum(sizes)
        for group, size in zip(groups, sizes, strict=True):
            files = [(index + n, path) for n, path in enumerate(group)]
            index += len(group)
            shards = threads if split_by_flow(group, size, total, threads) else 1
            plan.append([(shard, shards, files) for shard in range(shards)])
        return plan

    def _ready(self, conns: list[Any]) -> list[Any]:
        return conns  # each read waits for its task's result


def _retried(client: Client, keys: list[str]) -> int:
    """Tasks the scheduler set processing more than once: run again after an error, or after their worker left."""
    if not keys:
        return 0
    runs: dict[str, int] = {}
    for entry in client.story(*keys, on_error="ignore"):
        if entry[0] == "scheduler" and len(entry) > 3 and entry[3] == "processing":
            runs[entry[1]] = runs.get(entry[1], 0) + 1
    return sum(1 for count in runs.values() if count > 1)
