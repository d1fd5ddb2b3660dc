"""Every core on a live interface: capture processes in one fanout group (passive.capture.fanout_bpf), one writer.

``watch --jobs N`` forks N capture processes. Each opens its own libpcap handle on the interface and joins one
fanout group: the kernel hands every packet of a flow (both directions: the hash is symmetric) to the same
process. Each process runs the packet scanner, reassembly, the dissectors and the detectors on its share, as the
file workers of :mod:`passive.analysis.parallel` do, and records its detectors' effects on the run's findings
(:class:`~passive.analysis.merge.Recording`). The recordings go up a pipe to the parent, which applies them
(:class:`~passive.analysis.merge.Replayer`) to the run's one :class:`~passive.analysis.pipeline.Analysis`: the
finding set, the relay ledger and the SQLite store live there, with the dashboard. A session's
operations all come from one process, in order; sessions of different processes interleave as they arrive.

Every tick each process also sends its capture counters and libpcap's counts (kernel and interface drops), so the
parent shows and records drops per process. The pipe is the bound on what is in flight: a process whose parent
falls behind waits on its pipe, its ring buffer fills, and the kernel counts what it drops.

The processes open their handles and join the group before any of them reads a packet (the parent waits for all
of them): a flow reaching the group before every member joined could otherwise be split between two processes
when the kernel rebalances. A process that ends unexpectedly is a warning; the run goes on with the others.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import math
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from passive.analysis.merge import Op, OpLog, Recording, Replayer, add_analysis_counts, analysis_counts
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.capture import CaptureCounters, LiveCapture, PcapStats
from passive.capture.options import END_FRAME, Cursor
from passive.core.collector import fewer_collections
from passive.core.errors import CaptureError

MAX_JOBS = 64  # capture processes: one per core is the point; beyond a machine's cores they only add memory
FANOUT_CHUNK_OPS = 256
"""Operations a capture process sends at once (each with the events of one dissector call); what is left is sent
every tick, so a finding reaches the store within a tick or two."""
PIPE_BYTES = 1 << 20
"""Each process's pipe to the parent (Linux's default is 64 KiB): what a process may send ahead of the parent, so a
parent busy writing the store for a moment does not stop the capture; beyond it the process waits (the bound)."""
START_TIMEOUT = 30.0  # seconds for every capture process to open its handle and join the group
STOP_GRACE = 15.0  # seconds past the capture drain the parent waits for a process to report its end
MESSAGES_PER_ROUND = 64  # messages read from one process before looking at the others (and at the clock)
ORDER_SLACK = 2.0
"""Seconds of capture time an idle process's clock is held back when it promises to send nothing earlier: packets
wait in a ring block the kernel has not yet handed over (libpcap's read timeout is 250 ms), longer when a loaded
machine keeps the process from running; two seconds cover both, and delay findings by as much at most."""
MAX_HELD_OPS = 20_000
"""Operations the parent holds back to apply them in capture-time order (a few seconds of a busy server's
sessions; kept pickled, about 220 bytes each on an all-mail capture: 4 to 5 MiB); past it the oldest are applied
as they stand, so a stalled process cannot grow the parent."""
_PR_SET_PDEATHSIG = 1  # prctl: a signal for the child when its parent dies


@dataclasses.dataclass
class _Child:
    index: int
    conn: Connection
    process: Any
    counters: CaptureCounters = dataclasses.field(default_factory=CaptureCounters)
    stats: PcapStats | None = None
    capture_now: float | None = None
    analysis_counts: tuple[int, ...] = ()  # flows ignored, then merge.ANALYSIS_STATS (none before its first tick)
    done: bool = False
    ops: deque[Op] = dataclasses.field(default_factory=deque)  # received, not yet applied
    chunks: deque[bytes] = dataclasses.field(default_factory=deque)  # received after ``ops``, still pickled
    watermark: float = -math.inf  # the process sends no operation made before this capture time


class FanoutCapture:
    """``jobs`` capture processes on one interface, started (handles open, group joined) by the constructor.

    ``open_capture(group)`` opens one process's :class:`LiveCapture` in that fanout group; it runs in the child.
    A child that cannot open its handle makes the constructor raise its :class:`CaptureError`.
    """

    def __init__(
        self,
        jobs: int,
        open_capture: Callable[[int], LiveCapture],
        analysis_options: AnalysisOptions,
        file: str,
        tick_interval: float = 1.0,
    ) -> None:
        self.jobs, self.file, self.tick_interval = jobs, file, tick_interval
        self.filter = ""
        self.children: list[_Child] = []
        self.warnings: list[str] = []
        self._held = 0  # operations received and not yet applied
        if "fork" not in multiprocessing.get_all_start_methods():
            raise CaptureError("--jobs on an interface needs fork() and PACKET_FANOUT (Linux)")
        context = multiprocessing.get_context("fork")  # the children share this process's analysis setup
        self._go, self._stop = context.Event(), context.Event()
        group = os.getpid() & 0xFFFF
        try:
            for index in range(jobs):
                reader, writer = context.Pipe(duplex=False)
                with contextlib.suppress(OSError):  # past /proc/sys/fs/pipe-max-size: the default stays
                    fcntl.fcntl(writer.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
                arguments = (writer, index, jobs, open_capture, group, analysis_options, file, self)
                process = context.Process(target=_capture_process, args=arguments, daemon=True)
                process.start()
                writer.close()
                self.children.append(_Child(index, reader, process))
            self._await_ready()
        except BaseException:
            self.close()
            raise

    def _await_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        waiting = {child.conn: child for child in self.children}
        while waiting:
            ready = wait(list(waiting), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise CaptureError(f"capture processes did not start within {START_TIMEOUT:.0f} s")
            for conn in ready:
                child = waiting.pop(conn)  # type: ignore[call-overload]
                try:
                    kind, _index, detail = pickle.loads(child.conn.recv_bytes())
                except EOFError:
                    raise CaptureError(f"capture process {child.index} ended while starting") from None
                if kind != "ready":
                    raise CaptureError(detail)
                self.filter = detail

    # -- the parent's loop ----------------------------------------------------------------------------------------

    def run_into(
        self,
        analysis: Analysis,
        *,
        should_stop: Callable[[], bool],
        counters: CaptureCounters,
        on_tick: Callable[[float], None] | None = None,
    ) -> None:
        """Let the processes capture; replay their recordings into ``analysis`` in capture-time order and sum their
        ``counters`` until stopped (then until every process has drained and reported its end)."""
        with fewer_collections():
            self._run_into(analysis, should_stop, counters, on_tick)

    def _run_into(
        self,
        analysis: Analysis,
        should_stop: Callable[[], bool],
        counters: CaptureCounters,
        on_tick: Callable[[float], None] | None,
    ) -> None:
        replayer = Replayer(analysis)
        self._go.set()
        next_tick = time.monotonic() + self.tick_interval
        stop_deadline: float | None = None
        try:
            while not all(child.done for child in self.children):
                now = time.monotonic()
                if stop_deadline is None and should_stop():
                    self._stop.set()
                    stop_deadline = now + max(1.0, 4 * self.tick_interval) + STOP_GRACE
                if stop_deadline is not None and now >= stop_deadline:
                    self._warn("a capture process did not report its end in time; its last counts are kept")
                    break
                live = {child.conn: child for child in self.children if not child.done}
                for conn in wait(list(live), timeout=max(0.0, min(next_tick - now, 0.25))):
                    self._receive(live[conn])  # type: ignore[index]
                self._replay(replayer)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.tick_interval
                    self._merge(analysis, counters)
                    if on_tick is not None:
                        on_tick(self.capture_now if self.capture_now is not None else time.time())
        finally:
            for child in self.children:  # whatever was received is applied, in order
                child.watermark = math.inf
            self._replay(replayer)
            self._merge(analysis, counters)
            self._stop.set()
            self._join()

    def _receive(self, child: _Child) -> None:
        for _ in range(MESSAGES_PER_ROUND):
            try:
                message = pickle.loads(child.conn.recv_bytes())
            except (EOFError, OSError):
                child.process.join(1)
                self._ended(child, f"ended without reporting (exit code {child.process.exitcode})")
                return
            kind = message[0]
            if kind == "ops":  # ("ops", index, count, watermark, the operations pickled): unpickled when next
                child.chunks.append(message[4])
                self._held += message[2]
                child.watermark = max(child.watermark, message[3])
            elif kind == "fail":
                self._ended(child, f"failed: {message[2].strip().splitlines()[-1]}")
                return
            else:  # "tick" or "done"
                _kind, _index, capture_now, watermark, child.counters, stats, child.analysis_counts = message
                child.stats = stats if stats is not None else child.stats
                child.watermark = max(child.watermark, watermark)
                if capture_now is not None:
                    child.capture_now = capture_now
                if kind == "done":
                    child.done, child.watermark = True, math.inf
                    return
            if not child.conn.poll():
                return

    def _ended(self, child: _Child, how: str) -> None:
        child.done, child.watermark = True, math.inf
        self._warn(f"capture process {child.index} {how}")

    def _replay(self, replayer: Replayer) -> None:
        """Apply every received operation no process can still precede (capture time, then process and order).

        The process with the earliest operation gives a run of them at once: those before every other process's
        first one, while no process with nothing received may still send an earlier one (its watermark)."""
        children, apply = self.children, replayer.apply
        while True:
            for child in children:
                if not child.ops and child.chunks:
                    child.ops.extend(pickle.loads(child.chunks.popleft()))
            queued = [child for child in children if child.ops]
            if not queued:
                return
            best = min(queued, key=_first_key)
            limit = min((_first_key(child) for child in queued if child is not best), default=None)
            waiting = min((child.watermark for child in children if not child.ops), default=math.inf)
            ops = best.ops
            while ops:
                key = ops[0][0]
                if limit is not None and not key < limit:
                    break
                if waiting < key[0] and self._held <= MAX_HELD_OPS:
                    return  # a process with nothing received may still send an earlier one
                apply(ops.popleft())
                self._held -= 1

    def _merge(self, analysis: Analysis, counters: CaptureCounters) -> None:
        """The run's counters: every process's summed (warnings gathered), with the parent's own warnings."""
        total = CaptureCounters()
        for child in self.children:
            for field in dataclasses.fields(CaptureCounters):
                name = field.name
                if name == "tunnelled":
                    for kind, count in child.counters.tunnelled.items():
                        total.tunnelled[kind] = total.tunnelled.get(kind, 0) + count
                elif name != "warnings":
                    setattr(total, name, getattr(total, name) + getattr(child.counters, name))
            for message in child.counters.warnings:
                total.warn(f"capture process {child.index}: {message}", anomaly=False)
        for message in self.warnings:
            total.warn(message, anomaly=False)
        for field in dataclasses.fields(CaptureCounters):
            setattr(counters, field.name, getattr(total, field.name))
        counts = [child.analysis_counts for child in self.children if child.analysis_counts]
        add_analysis_counts(analysis, counts, replace=True)

    @property
    def capture_now(self) -> float | None:
        times = [child.capture_now for child in self.children if child.capture_now is not None]
        return max(times) if times else None

    def process_stats(self) -> list[PcapStats]:
        """libpcap's counts of each process, as it last reported them."""
        return [child.stats for child in self.children if child.stats is not None]

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _join(self) -> None:
        for child in self.children:
            child.process.join(max(1.0, STOP_GRACE))
            if child.process.is_alive():
                child.process.terminate()
                child.process.join(5)

    def close(self) -> None:
        self._stop.set()
        self._go.set()
        for child in self.children:
            if child.process.is_alive():
                child.process.join(STOP_GRACE)
            if child.process.is_alive():
                child.process.terminate()
                child.process.join(5)
            child.conn.close()


# -- a capture process ----------------------------------------------------------------------------------------------


def _capture_process(
    conn: Connection,
    index: int,
    jobs: int,
    open_capture: Callable[[int], LiveCapture],
    group: int,
    options: AnalysisOptions,
    file: str,
    parent: FanoutCapture,
) -> None:
    """One capture process: open and join, wait for the go, capture into a recording until told to stop."""
    stop, go = parent._stop, parent._go
    _child_signals(stop)
    try:
        try:
            capture = open_capture(group)
        except CaptureError as error:
            _send(conn, ("error", index, str(error)))
            return
        _send(conn, ("ready", index, capture.filter))
        go.wait()
        with contextlib.closing(capture):
            _capture(conn, index, jobs, capture, options, file, stop.is_set, parent.tick_interval)
    except BaseException:  # report, whatever it is: the parent warns
        with contextlib.suppress(Exception):
            _send(conn, ("fail", index, traceback.format_exc()))
    finally:
        conn.close()


def _capture(
    conn: Connection,
    index: int,
    jobs: int,
    capture: LiveCapture,
    options: AnalysisOptions,
    file: str,
    should_stop: Callable[[], bool],
    tick_interval: float,
) -> None:
    analysis = Analysis(options)
    analysis.file = file

    def send_ops(ops: list[Op]) -> None:
        if ops:
            # Later operations are made at this capture time or after. The parent keeps what it holds back pickled
            # (a quarter of the memory of the objects) until it applies them.
            _send(conn, ("ops", index, len(ops), log.now(), pickle.dumps(ops, protocol=5)))

    cursor = Cursor()
    capture.options = dataclasses.replace(capture.options, cursor=cursor)
    log = _TimedLog(cursor, send_ops, FANOUT_CHUNK_OPS, index)
    analysis.recording = Recording(log, index, jobs)
    counters = CaptureCounters()

    def report(kind: str, capture_now: float | None) -> None:
        log.flush()
        stats = None
        with contextlib.suppress(Exception):  # statistics are informative: never stop the capture for them
            stats = capture.stats()
        counts = analysis_counts(analysis)
        watermark = math.inf if capture_now is None else max(log.now(), capture_now - ORDER_SLACK)
        _send(conn, (kind, index, capture_now, watermark, counters, stats, counts))

    with fewer_collections():
        capture.run(
            analysis.handler_factory,
            should_stop=should_stop,
            counters=counters,
            on_tick=lambda now: report("tick", now),
            tick_interval=tick_interval,
        )
    report("done", None)


class _TimedLog(OpLog):
    """A capture process's recording: each operation keyed by the capture time it was made at (the packet's, or
    the sweep's; the end of the capture after everything), then the process and its order there."""

    def __init__(self, cursor: Cursor, send: Callable[[list[Op]], None], chunk: int, index: int) -> None:
        super().__init__(cursor, send, chunk)
        self.index = index

    def now(self) -> float:
        return math.inf if self.cursor.frame >= END_FRAME else self.cursor.ts

    def key(self, first_frame: int) -> Any:
        self._order += 1
        return (self.now(), self.cursor.phase, self.index, self._order)


def _first_key(child: _Child) -> Any:
    return child.ops[0][0]


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=5))


def _child_signals(stop: Any) -> None:
    """Ctrl-C reaches the whole process group: the parent decides when to stop. SIGTERM stops this process cleanly;
    the death of the parent sends it SIGTERM (Linux)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _number, _frame: stop.set())
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
