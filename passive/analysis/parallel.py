"""Every core: one run's captures read by several worker processes, merged into one process's results.

A capture of :data:`SHARD_MIN_BYTES` or more, unless it is a small share of the run (:data:`WHOLE_MAX_SHARE`),
is split by flow: every worker reads all of it, and its scanner admits
only the flows whose 4-tuple hashes to that worker (:func:`passive.capture.scanner.shard_of`, the same hash for
both directions). Smaller captures, and what can be read once only (a pipe), go whole to one worker each, in turn:
many captures are spread by file. Workers reassemble, dissect and run the detectors; the main process applies the
effects they recorded to the run's one :class:`~passive.analysis.pipeline.Analysis`, in the order one process would have
(:mod:`passive.analysis.merge`), capture after capture, as the recordings stream in: it holds at most a chunk per
worker beyond what it can replay, and a worker that gets ahead waits on its pipe.

Workers are forked where the platform can (spawned elsewhere); ``jobs`` = 1 reads in the calling process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import signal
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from passive.analysis.merge import (
    WATERMARK_PHASE,
    Key,
    Op,
    OpLog,
    Recording,
    Replayer,
    add_analysis_counts,
    add_counters,
    analysis_counts,
    merge_file_counters,
)
from passive.analysis.processes import end_with_parent, processes
from passive.capture.counters import CaptureCounters
from passive.capture.expand import expanded_apart
from passive.capture.joined import FileMap, JoinedStream, counters_since, snapshot
from passive.capture.options import Cursor
from passive.capture.rings import Span, describe
from passive.core.errors import CaptureError
from passive.core.files import regular_file_size

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

PARALLEL_MIN_BYTES = 16 << 20
"""With ``jobs`` None (as many as cores): captures smaller than this in all are read in the calling process, where
starting workers and merging would cost more than they save."""
SHARD_MIN_BYTES = 32 << 20
"""A capture this big is split by flow between all workers; smaller ones go whole to one worker (a worker reading
a capture scans all of it, so splitting a small one costs more scanning than it spreads work)."""
WHOLE_MAX_SHARE = 0.25
"""Nor is a capture split, whatever its size, when it is at most this share of one worker's part of the run (the
run's bytes over the workers): many captures balance out whole, each scanned once instead of once per worker (20
captures of 100 MB: --jobs 2 took 1.58x less time than one process split by flow, 1.76x whole). The worst imbalance
whole captures leave is one such capture."""
CHUNK_OPS = 512
"""Operations a worker sends at once (each with the events of one dissector call), fewer only every WATERMARK_FRAMES
and at a capture's end: a message costs the main process a wake-up, a read, an unpickler and a replay pass (sent after
each batch of packets that made any, 1 292 for the all-mail bench capture: 1.62 CPU s in the main process of --jobs
2; in chunks of 512, 120 messages and 1.46 s; of 256, 1.49 s)."""
READ_AHEAD_BYTES = 64 << 20
"""Recordings of later captures the main process reads ahead from one worker while it replays an earlier capture
from others: enough for a worker to read several captures ahead (a 100 MB capture of 2% mail records about a MB)
instead of waiting on a full pipe, so that many captures keep every worker busy; past it the worker waits."""
WATERMARK_FRAMES = 20_000
"""A worker sends what it holds, operations or none, once it has read this many frames since it last sent: the main
process replays another worker's operations only up to where every worker says it has read."""
STOP_POLL_SECONDS = 0.2
"""How often the main process, waiting for its workers, looks for a stop request to pass on to them."""
CUT, NOT_READ = "cut", "not-read"
"""How a stop request left a worker's file: stopped within it, or never begun."""
_DONE: Key = (1 << 62, 0, 0, 0, 0)

FileContext = Callable[[str, CaptureCounters], AbstractContextManager[Any]]


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def plan_jobs(paths: list[str], jobs: int | None) -> int:
    """Worker processes for ``paths``: ``jobs`` as given, or (None) every core once the captures are big enough."""
    if jobs is not None:
        return max(1, jobs)
    cores = available_cores()
    return cores if cores > 1 and sum(regular_file_size(path) or 0 for path in paths) >= PARALLEL_MIN_BYTES else 1


DESCRIBE_MIN_FILES = 8
"""Captures from which the looks that group ring buffers' files (:func:`passive.capture.rings.describe`) are shared
between worker processes: for fewer, starting them costs more than the looks."""


def describe_in_workers(paths: list[str], jobs: int) -> list[Span | None]:
    """:func:`~passive.capture.rings.describe` of every path, by ``jobs`` processes when there are many."""
    if len(paths) < DESCRIBE_MIN_FILES:
        return [describe(path) for path in paths]
    with processes().Pool(jobs) as pool:
        return pool.map(describe, paths, chunksize=max(1, len(paths) // (4 * jobs)))


def group_bytes(group: list[str]) -> int:
    return sum(regular_file_size(path) or 0 for path in group)


def split_by_flow(group: list[str], size: int, total: int, workers: int) -> bool:
    """Whether ``group``, ``size`` bytes in a run of ``total``, is split by flow between ``workers`` (each then
    scans all of it) rather than read whole by one: :data:`SHARD_MIN_BYTES` or more, and more than
    :data:`WHOLE_MAX_SHARE` of a worker's part; and no file of it one that a process of its own would expand
    (:func:`~passive.capture.expand.expanded_apart`: a large gzip, xz or bzip2 file), which every worker would
    expand whole: more CPU than the analysis it splits, and slower (docs/scaling.md)."""
    return (
        workers > 1
        and size >= SHARD_MIN_BYTES
        and size > WHOLE_MAX_SHARE * total / workers
        and not any(expanded_apart(path) for path in group)
    )


Task = tuple[int, int, list[tuple[int, str]]]  # (shard, shards, the group's files with their capture index)


def plan_tasks(groups: list[list[str]], jobs: int) -> list[list[Task]]:
    """Per worker, its tasks in capture order: a group of :data:`SHARD_MIN_BYTES` or more that is more than
    :data:`WHOLE_MAX_SHARE` of a worker's part is split by flow between all workers; any other goes whole to the
    worker with the fewest bytes to read so far."""
    tasks: list[list[Task]] = [[] for _ in range(jobs)]
    load = [0] * jobs
    index = 0
    sizes = [group_bytes(group) for group in groups]
    total = sum(sizes)
    for group, size in zip(groups, sizes, strict=True):
        files = [(index + n, path) for n, path in enumerate(group)]
        index += len(group)
        if split_by_flow(group, size, total, jobs):
            for worker in range(jobs):
                tasks[worker].append((worker, jobs, files))
                load[worker] += size // jobs
        else:
            worker = min(range(jobs), key=lambda w: (load[w], w))
            tasks[worker].append((0, 1, files))
            load[worker] += size
    return tasks


# -- worker side ----------------------------------------------------------------------------------------------------


class _Sender:
    """A worker's messages to the main process: operations with a watermark, and each capture's end."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.cursor = Cursor(on_batch=self.batch)
        self.log = OpLog(self.cursor, self.ops, CHUNK_OPS)
        self.counters = CaptureCounters()
        self.before = CaptureCounters()
        self._reported = 0

    def begin(self, index: int, counters: CaptureCounters) -> None:
        """A file of a stream starts: what ``counters`` count from now on is that file's."""
        self.log.file, self.counters, self.before, self._reported = index, counters, snapshot(counters), 0
        self.cursor.frame = self.cursor.phase = 0
        self.cursor.done = counters.packets_read  # the frames of the stream's earlier files

    def ops(self, ops: list[Op]) -> None:
        self._reported = self.cursor.done
        counters, before = self.counters, self.before
        progress = (
            counters.packets_read - before.packets_read,
            counters.flows - before.flows,
            counters.bytes_read - before.bytes_read,
        )
        self.conn.send_bytes(pickle.dumps(("ops", self.log.file, ops, self.cursor.done, progress), protocol=5))

    def batch(self) -> None:
        if self.cursor.done - self._reported >= WATERMARK_FRAMES:
            self.log.flush()

    def done(self, counts: tuple[int, ...], error: str | None, state: str | None = None) -> None:
        """The file's end: ``counts`` are what the worker's analysis counted in it (merge's ``analysis_counts``);
        ``state`` is None (read to its end), CUT or NOT_READ (a stop request)."""
        self.log.flush()
        message = ("done", self.log.file, counters_since(self.counters, self.before), counts, error, state)
        self.conn.send_bytes(pickle.dumps(message, protocol=5))


def run_tasks(conn: Any, worker: int, jobs: int, tasks: list[Task], analysis: Any, stop: Any = None) -> None:
    """Analyze each task's share of its group of files, recording sessions; messages go to ``conn.send_bytes``.
    Once ``stop.requested``, reading stops at a batch boundary and the files not begun are reported unread."""
    sender = _Sender(conn)
    analysis.recording = Recording(sender.log, worker, jobs)
    base = analysis.options.capture_options()
    for shard, shards, files in tasks:
        counters = CaptureCounters()
        options = dataclasses.replace(base, shard=shard, shards=shards, cursor=sender.cursor)
        try:
            stream: JoinedStream | None = JoinedStream(analysis.handler_factory, options, counters, stop)
            opening = None
        except CaptureError as exc:
            stream, opening = None, str(exc)
        for number, (index, path) in enumerate(files, 1):
            sender.begin(index, counters)
            analysis.file, analysis.files = path, stream.files if stream is not None else None
            before, error, state = analysis_counts(analysis), opening, None
            try:
                if stop is not None and stop.requested:
                    state = NOT_READ
                elif stream is not None:
                    stream.read(path)
            except CaptureError as exc:
                error = str(exc)
            if stop is not None and stop.cut:
                stop.cut, state = False, CUT
            if stream is not None and number == len(files):
                stream.finish()
            counts = tuple(now - then for now, then in zip(analysis_counts(analysis), before, strict=True))
            sender.done(counts, error, state)  # type: ignore[arg-type]


def _work(conn: Connection, worker: int, jobs: int, tasks: list[Task], analysis: Any, stop: SharedStop) -> None:
    """A worker process: its tasks, reported on ``conn``. Ctrl-C reaches it through the main process (``stop``),
    which decides what is written: a terminal's SIGINT to the whole process group is not the worker's to act on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent()
    import traceback  # here, loaded before it is needed: a worker out of memory can still say why it ended

    try:
        run_tasks(conn, worker, jobs, tasks, analysis, stop)
    except BaseException:  # report, whatever it is: the main process raises it
        with contextlib.suppress(Exception):
            conn.send_bytes(pickle.dumps(("fail", worker, traceback.format_exc()), protocol=5))
    finally:
        conn.close()


# -- main side ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Worker:
    """The main process's view of one worker: its pipe, process, and the operations it sent ahead."""

    conn: Connection
    process: Any
    ops: deque[Op] = dataclasses.field(default_factory=deque)
    watermark: Key = (0, 0, 0, 0, 0)
    held: deque[tuple[tuple, int]] = dataclasses.field(default_factory=deque)  # later captures' messages, and sizes
    held_bytes: int = 0
    reports: int = 0  # captures whose end this worker has still to report (then its pipe closes)
    done: tuple | None = None  # this capture's end: (counters, analysis counts, error, state)
    progress: tuple[int, int, int] = (0, 0, 0)  # packets read, flows, bytes read of the capture being replayed


class SharedStop:
    """A stop request the main process sets in memory it shares with its workers, who read it once a batch; each
    worker's reader says (``cut``) that it stopped before the end of its file."""

    __slots__ = ("cut", "flag")

    def __init__(self, flag: Any) -> None:
        self.flag, self.cut = flag, False

    @property
    def requested(self) -> bool:
        return bool(self.flag.value)


class WorkerFailed(RuntimeError):
    """A worker process raised: its traceback is the message."""


class ParallelRun:
    """The main process's side: start the workers, replay their recordings capture by capture, merge counters."""

    def __init__(
        self, analysis: Any, results: Any, jobs: int, around_file: FileContext | None, stop: Any = None
    ) -> None:
        self.analysis, self.results, self.jobs, self.around_file = analysis, results, jobs, around_file
        self.replayer = Replayer(analysis)
        self._group_start = 0  # packets read in the run before the current group
        self.workers: list[_Worker] = []
        self.stop = stop  # the caller's stop request, passed on to the workers through ``shared``
        self.shared: Any = None

    def run(self, groups: list[list[str]]) -> None:
        tasks = plan_tasks(groups, self.jobs)
        if all(shards == 1 for mine in tasks for _shard, shards, _files in mine):
            self.jobs = min(self.jobs, len(groups))  # no group is split: a worker per group at most
            tasks = plan_tasks(groups, self.jobs)
        self._start(tasks)
        try:
            index = 0
            for group in groups:
                involved = [self.workers[w] for w, mine in enumerate(tasks) if any(t[2][0][0] == index for t in mine)]
                self._group()
                for path in group:
                    self._capture(index, path, involved)
                    index += 1
            for worker in self.workers:
                worker.process.join()
        finally:
            for worker in self.workers:
                if worker.process.is_alive():
                    worker.process.terminate()
                worker.conn.close()

    def _start(self, tasks: list[list[Task]]) -> None:
        context = processes()
        worker_analysis = type(self.analysis)(self.analysis.options)
        self.shared = context.Value("b", 0, lock=False)
        stop = SharedStop(self.shared)
        for index, mine in enumerate(tasks):
            reader, writer = context.Pipe(duplex=False)
            arguments = (writer, index, self.jobs, mine, worker_analysis, stop)
            process = context.Process(target=_work, args=arguments, daemon=True)
            process.start()
            writer.close()
            self.workers.append(_Worker(reader, process, reports=sum(len(files) for _s, _n, files in mine)))

    def _group(self) -> None:
        """A group of files begins: one stream, whose files its sessions' evidence is located in."""
        self.replayer.files = FileMap()
        self._group_start = self.results.counters.packets_read

    def _capture(self, index: int, path: str, involved: list[_Worker]) -> None:
        """Replay one capture's recordings from the workers that read it, then merge its counters."""
        results = self.results
        before = (results.counters.packets_read, results.counters.flows, results.counters.bytes_read)
        self.replayer.files.add(before[0] - self._group_start, path)  # as the workers' streams numbered it
        wrapper = self.around_file(path, results.counters) if self.around_file else contextlib.nullcontext()
        with wrapper:
            for worker in involved:
                worker.ops.clear()
                worker.watermark, worker.done = (index, 0, 0, 0, 0), None
                while worker.held and worker.held[0][0][1] == index:
                    message, size = worker.held.popleft()
                    worker.held_bytes -= size
                    self._take(worker, message, index)
            while not all(w.done is not None and not w.ops for w in involved):
                self._replay(involved)
                if not all(w.done is not None and not w.ops for w in involved):
                    self._receive(involved, index, before)
            self._replay(involved)
            merged = merge_file_counters([w.done[0] for w in involved])  # type: ignore[index]
            results.counters.packets_read, results.counters.flows, results.counters.bytes_read = before
            add_counters(results.counters, merged)
            add_analysis_counts(self.analysis, [w.done[1] for w in involved])  # type: ignore[index]
            error = involved[0].done[2]  # type: ignore[index]
            states = [w.done[3] for w in involved]  # type: ignore[index]
        if all(state == NOT_READ for state in states):
            results.not_read.append(path)
            return
        if error is not None:
            results.failed.append((path, error))
        else:
            results.analyzed.append(path)
        if any(states):  # some worker stopped within it, or before it
            counters = results.counters
            results.stopped_at = {
                "file": path,
                "packets": counters.packets_read - before[0],
                "bytes": counters.bytes_read - before[2],
                "size": regular_file_size(path),
            }

    def _replay(self, involved: list[_Worker]) -> None:
        """Apply every operation no worker can still precede, in the order of one at a time: the earliest worker's
        run of them up to another's first operation or the watermark of one with none received (and not ended)."""
        apply = self.replayer.apply
        while True:
            best: _Worker | None = None  # the worker with the earliest first operation, and its key
            first = _DONE
            for worker in involved:
                if worker.ops and worker.ops[0][0] < first:
                    best, first = worker, worker.ops[0][0]
            if best is None:
                return
            before = after = waiting = _DONE  # the earliest first operation of the workers before best, after it
            for worker in involved:
                if worker is best:
                    before, after = after, _DONE
                elif worker.ops:
                    after = min(after, worker.ops[0][0])
                elif worker.done is None:
                    waiting = min(waiting, worker.watermark)
            if waiting < first:
                return  # a worker with nothing received may still send an earlier one
            ops, limit = best.ops, min(after, waiting)
            while ops and (key := ops[0][0]) < before and key <= limit:
                apply(ops.popleft())

    def _receive(self, involved: list[_Worker], index: int, before: tuple[int, int, int]) -> None:
        """Wait for messages: this capture's from the workers reading it, later ones' read ahead from the others."""
        waiting = {w.conn: w for w in involved if w.done is None and not w.held and not w.ops}  # one ahead at most
        for worker in self.workers:
            if worker.conn not in waiting and worker.reports and worker.held_bytes < READ_AHEAD_BYTES:
                waiting[worker.conn] = worker
        for conn in self._ready(list(waiting)):
            worker = waiting[conn]
            try:
                data = worker.conn.recv_bytes()
            except EOFError:
                code = worker.process.exitcode if worker.process is not None else None
                raise WorkerFailed(f"a worker process ended without reporting (exit code {code})") from None
            message = pickle.loads(data)
            if message[0] == "done":
                worker.reports -= 1
            if message[0] != "fail" and (message[1] != index or worker not in involved or worker.held):
                worker.held.append((message, len(data)))  # a later capture's: kept until that capture's turn
                worker.held_bytes += len(data)
            else:
                self._take(worker, message, index)
        counters = self.results.counters
        counters.packets_read = before[0] + involved[0].progress[0]
        counters.flows = before[1] + sum(w.progress[1] for w in involved)
        counters.bytes_read = before[2] + max(w.progress[2] for w in involved)  # every share reads the whole file

    def _ready(self, conns: list[Any]) -> list[Any]:
        """The workers' pipes that have a message, once one has; meanwhile a stop request is passed on."""
        from multiprocessing.connection import wait  # loaded with the workers (processes())

        while True:
            ready = wait(conns, timeout=STOP_POLL_SECONDS)
            if self.stop is not None and self.stop.requested and self.shared is not None:
                self.shared.value = 1
            if ready:
                return ready  # type: ignore[return-value]

    def _take(self, worker: _Worker, message: tuple, index: int) -> None:
        kind = message[0]
        if kind == "fail":
            raise WorkerFailed(f"worker {message[1]} failed:\n{message[2]}")
        if kind == "ops":
            _kind, _index, ops, done, progress = message
            worker.ops.extend(ops)
            worker.watermark = (index, done, WATERMARK_PHASE, 0, 0)
            worker.progress = progress
        else:
            worker.done = message[2:]
            worker.watermark = _DONE
