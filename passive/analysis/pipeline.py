"""The pipeline's one entry point: captures in, findings out.

:func:`analyze_captures` reads capture files through the capture layer (readers, link layers, TCP reassembly) into
an :class:`Analysis`, whose per-flow handlers run the dissectors and detectors. ``analyze``, ``report``,
``compare``, the fuzz harnesses and the benchmarks all call it; ``watch`` drives the same :class:`Analysis` from a
live interface. With ``jobs`` > 1 the captures are read by that many worker processes
(:mod:`passive.analysis.parallel`) and the results merged into exactly those of one process
(:mod:`passive.analysis.merge`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from dissectors.registry import PORT_PROTOCOLS
from passive.analysis.budget import MAX_DISSECTOR_BYTES, DissectorBudget
from passive.analysis.classify import MAX_PORT_CHECK_HELD, mail_capture_options
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.domains import IpNetwork
from passive.analysis.flow import EngineHandler, MailFlow, SessionRecord, UnknownFlow
from passive.analysis.parallel import (
    ParallelRun,
    available_cores,
    describe_in_workers,
    plan_jobs,
)
from passive.analysis.relays import RelayLedger, RelayPolicy
from passive.analysis.stats import RunStats
from passive.capture.counters import SCHEDULE_DEPENDENT, CaptureCounters
from passive.capture.flow import Flow
from passive.capture.held import HeldBudget
from passive.capture.joined import FileMap, JoinedStream
from passive.capture.options import MAX_FLOWS, CaptureOptions
from passive.capture.policy import DEFAULT_POLICY
from passive.capture.rings import group_captures
from passive.capture.stop import StopFlag
from passive.core.collector import fewer_collections
from passive.core.endpoints import endpoint
from passive.core.errors import CaptureError, InputError, UsageError, one_line
from passive.core.files import regular_file_size
from passive.findings.model import FindingSet

# Events kept per session for --events; past that a session's events are counted, not kept.
MAX_EVENTS_PER_SESSION = 2000


@dataclass
class AnalysisOptions:
    """What to look at and how; every default of the command line comes from here."""

    all_ports: bool = True  # every TCP flow, recognised as mail by what it says (False: the mail ports only)
    bpf: str | None = None  # the user's capture filter, ANDed with the mail filter
    local_domains: frozenset[str] = frozenset()  # domains the servers deliver locally (open-relay check)
    trusted_networks: tuple[IpNetwork, ...] = ()  # networks the servers relay for (Postfix mynetworks)
    keep_events: bool = False  # keep per-session events for --events
    max_events_per_session: int = MAX_EVENTS_PER_SESSION
    backend: str = "auto"  # capture reader: "auto", "libpcap" or "python"
    max_flows: int = MAX_FLOWS  # flows reassembled at once
    reassembly_policy: str = DEFAULT_POLICY  # whose bytes win where segments overlap (passive.capture.policy)
    check_checksums: bool = True  # segments with wrong checksums refused as receivers do (passive.capture.checksums)
    # Worker processes; 1 reads in this process, None as many as cores once the captures are big enough to gain.
    jobs: int | None = 1
    max_dissector_bytes: int = MAX_DISSECTOR_BYTES  # partial state all sessions may hold together
    max_port_check_held: int = MAX_PORT_CHECK_HELD  # what all flows whose port check goes on may hold together
    join: bool = True  # consecutive files of one capture (a ring buffer) read as one stream (passive.capture.rings)
    scheduler: str | None = None  # a Dask scheduler's address: the tasks run on its cluster (analysis.cluster)
    skip_unread: bool = CaptureOptions.skip_unread  # bodies, unread literals, ciphertext dropped below Python

    def capture_options(self) -> CaptureOptions:
        return mail_capture_options(
            all_ports=self.all_ports,
            bpf=self.bpf,
            backend=self.backend,
            max_flows=self.max_flows,
            reassembly_policy=self.reassembly_policy,
            check_checksums=self.check_checksums,
            skip_unread=self.skip_unread,
        )


class Analysis:
    """One run's sink: findings, counters and (optionally) per-session events, fed by per-flow handlers."""

    def __init__(self, options: AnalysisOptions | None = None) -> None:
        self.options = options or AnalysisOptions()
        self.findings = FindingSet()
        self.stats = RunStats()
        self.budget = DissectorBudget(self.options.max_dissector_bytes, self.stats)
        self.held: HeldBudget[EngineHandler] = HeldBudget(self.options.max_port_check_held)  # port checks
        self.sessions: list[SessionRecord] = []
        self.flows_ignored = 0
        self.file: str | None = None
        self.files: FileMap | None = None  # the current file's stream's files (passive.capture.joined)
        self.relays = RelayLedger(RelayPolicy(self.options.local_domains, self.options.trusted_networks))
        self.recording: Any = None  # in a worker process: sessions are recorded for the main one (merge.Recording)

    def session_analyzer(self, context: SessionContext) -> Any:
        """The detectors of one session (in a worker: its recorder)."""
        if self.recording is not None:
            kept = self.options.max_events_per_session if self.options.keep_events else None
            return self.recording.session(context, kept)
        return SessionAnalyzer(context, self.findings, self.stats, self.relays)

    def flow(
        self, server_ip: str, server_port: int, client_ip: str, client_port: int, partial: bool
    ) -> MailFlow | UnknownFlow:
        """A handler for one flow fed directly: standard ports say the protocol, else its first lines do."""
        server, client = endpoint(server_ip, server_port), endpoint(client_ip, client_port)
        protocol = PORT_PROTOCOLS.get(server_port)
        if protocol is None:
            return UnknownFlow(self, server, client, partial)
        return MailFlow(self, server, client, protocol, partial)

    def handler_factory(self, flow: Flow) -> EngineHandler | None:
        """For the capture engine: one handler per reassembled TCP flow, for the protocol its classification (or
        else its server port) names; None (the flow is dropped cheaply) when neither names one."""
        protocol = flow.label or PORT_PROTOCOLS.get(flow.server_port)
        if protocol is None:
            self.flows_ignored += 1
            return None
        if self.recording is not None:
            return self.recording.handler(self, protocol, by_port=not flow.label)
        return EngineHandler(self, protocol, by_port=not flow.label)


@dataclass
class Results:
    """What :func:`analyze_captures` returns: the analysis, the capture counters, which inputs could be read."""

    analysis: Analysis
    counters: CaptureCounters
    analyzed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    # Set when a stop request ended the run early: the capture cut short ({"file", "packets", "bytes", "size"}; the
    # packets and bytes read of it), and the captures not read at all.
    stopped_at: dict[str, Any] | None = None
    not_read: list[str] = field(default_factory=list)
    joined: int = 0  # files read on from the file before them, as one stream (ring buffers)
    tasks: int = 0  # tasks run on a Dask cluster
    retried: int = 0  # of them, those run more than once (a task that raised, or whose worker was lost)

    @property
    def partial(self) -> bool:
        """Whether some capture was not read to its end (a stop request)."""
        return self.stopped_at is not None or bool(self.not_read)

    @property
    def findings(self) -> FindingSet:
        return self.analysis.findings

    @property
    def stats(self) -> RunStats:
        return self.analysis.stats

    def counts(self) -> dict[str, Any]:
        """Every counter of the run, for the summary record."""
        counters = self.counters.as_dict()
        for name in ("warnings", *SCHEDULE_DEPENDENT):
            counters.pop(name, None)
        return {
            **counters,
            **self.analysis.stats.to_dict(),
            "flows_ignored": self.analysis.flows_ignored,
            "captures": len(self.analyzed),
            "captures_failed": len(self.failed),
            **self._partial(),
            **({"captures_joined": self.joined} if self.joined else {}),
            **({"cluster_tasks": self.tasks, "tasks_retried": self.retried} if self.tasks else {}),
        }

    def _partial(self) -> dict[str, Any]:
        if not self.partial:
            return {}
        return {"partial": True, "stopped_at": self.stopped_at, "not_read": list(self.not_read)}


FileContext = Callable[[str, CaptureCounters], AbstractContextManager[Any]]


def analyze_captures(
    paths: Iterable[str],
    options: AnalysisOptions | None = None,
    *,
    around_file: FileContext | None = None,
    stop: StopFlag | None = None,
    watch: Callable[[Results], None] | None = None,
) -> Results:
    """Analyze each capture in turn into one :class:`Analysis`. A capture that cannot be read is listed in
    ``failed`` with its reason; the others are analyzed. ``around_file(path, counters)`` wraps each file (a
    progress display, say); ``watch(results)`` is handed the results before the first capture is read (a display
    counts their findings as they come). Once ``stop.requested`` is set, reading stops at the next packet boundary,
    the flows read so far are finished as at the end of a capture, and the results say what was not read
    (``partial``). With ``options.jobs`` other than 1, worker processes share the work; the results are those of
    one process."""
    with fewer_collections():
        return _analyze_captures(paths, options, around_file, stop, watch)


def _analyze_captures(
    paths: Iterable[str],
    options: AnalysisOptions | None,
    around_file: FileContext | None,
    stop: StopFlag | None,
    watch: Callable[[Results], None] | None,
) -> Results:
    analysis = Analysis(options)
    results = Results(analysis, CaptureCounters())
    if watch is not None:
        watch(results)
    paths = list(paths)
    jobs = plan_jobs(paths, analysis.options.jobs)
    describe_all = functools.partial(describe_in_workers, jobs=jobs) if jobs > 1 else None
    groups = group_captures(paths, analysis.options.join, describe_all)
    results.joined = sum(len(group) - 1 for group in groups)
    if analysis.options.scheduler is not None:
        _cluster_run(analysis, results, groups, around_file)
        return results
    if jobs > 1:
        ParallelRun(analysis, results, jobs, around_file, stop).run(groups)
        return results
    capture_options = analysis.options.capture_options()
    for group in groups:
        _read_group(analysis, results, group, capture_options, around_file, stop)
    return results


def _cluster_run(analysis: Analysis, results: Results, groups: list[list[str]], around: FileContext | None) -> None:
    try:  # dask is imported only by a run that asks for a cluster
        from passive.analysis.cluster import ClusterRun
    except ImportError as exc:
        raise UsageError(f"--scheduler needs the distributed package ({exc}): pip install leakscope[cluster]") from None
    try:
        ClusterRun(analysis, results, analysis.options.scheduler or "", around).run(groups)
    except (OSError, TimeoutError) as exc:
        raise InputError(f"scheduler {analysis.options.scheduler}: {one_line(exc)}") from None


def _read_group(
    analysis: Analysis,
    results: Results,
    group: list[str],
    options: CaptureOptions,
    around_file: FileContext | None,
    stop: StopFlag | None = None,
) -> None:
    """One group of files (one file, or a ring buffer's pieces) read as one stream; a file that cannot be read is
    listed in ``failed`` and the stream goes on with the next. Once a stop is requested, the files not begun are
    listed in ``not_read`` and the flows read so far are finished."""
    try:
        stream = JoinedStream(analysis.handler_factory, options, results.counters, stop)
    except CaptureError as error:
        results.failed.extend((path, str(error)) for path in group)
        return
    try:
        for path in group:
            if stop is not None and stop.requested:
                results.not_read.append(path)
                continue
            _read_piece(analysis, results, stream, path, around_file, stop)
    finally:
        stream.finish()  # the stream's flows end after its last file, whether it could be read


def _read_piece(
    analysis: Analysis,
    results: Results,
    stream: JoinedStream,
    path: str,
    around_file: FileContext | None,
    stop: StopFlag | None,
) -> None:
    wrapper = around_file(path, results.counters) if around_file is not None else contextlib.nullcontext()
    analysis.file, analysis.files = path, stream.files
    packets, position = results.counters.packets_read, results.counters.bytes_read
    try:
        with wrapper:
            stream.read(path)
    except CaptureError as error:
        results.failed.append((path, str(error)))
    else:
        results.analyzed.append(path)
    if stop is not None and stop.cut:
        stop.cut = False
        results.stopped_at = {
            "file": path,
            "packets": results.counters.packets_read - packets,
            "bytes": results.counters.bytes_read - position,
            "size": regular_file_size(path),
        }


DEFAULT_JOBS = available_cores()
"""What ``analyze --jobs`` defaults to: the cores this process may run on."""
