"""The pipeline's one entry point: captures in, findings out.

:func:`analyze_captures` reads capture files through the capture layer (readers, link layers, TCP reassembly) into
an :class:`Analysis`, whose per-flow handlers run the dissectors and detectors. ``analyze``, ``report``,
``compare``, the fuzz harnesses and the benchmarks all call it; ``watch`` drives the same :class:`Analysis` from a
live interface.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from dissectors.registry import PORT_PROTOCOLS
from passive.analysis.budget import MAX_DISSECTOR_BYTES, DissectorBudget
from passive.analysis.classify import mail_capture_options
from passive.analysis.domains import IpNetwork
from passive.analysis.flow import EngineHandler, MailFlow, SessionRecord, UnknownFlow
from passive.analysis.relays import RelayLedger, RelayPolicy
from passive.analysis.stats import RunStats
from passive.capture import analyze_file
from passive.capture.counters import CaptureCounters
from passive.capture.flow import Flow
from passive.capture.options import MAX_FLOWS, CaptureOptions
from passive.capture.policy import DEFAULT_POLICY
from passive.core.endpoints import endpoint
from passive.core.errors import CaptureError
from passive.findings.model import FindingSet

# Events kept per session for --events; past that a session's events are counted, not kept.
MAX_EVENTS_PER_SESSION = 2000


@dataclass
class AnalysisOptions:
    """What to look at and how; every default of the command line comes from here."""

    all_ports: bool = False  # every TCP flow, recognised as mail by what it says
    bpf: str | None = None  # the user's capture filter, ANDed with the mail filter
    local_domains: frozenset[str] = frozenset()  # domains the servers deliver locally (open-relay check)
    trusted_networks: tuple[IpNetwork, ...] = ()  # networks the servers relay for (Postfix mynetworks)
    keep_events: bool = False  # keep per-session events for --events
    max_events_per_session: int = MAX_EVENTS_PER_SESSION
    backend: str = "auto"  # capture reader: "auto", "libpcap" or "python"
    max_flows: int = MAX_FLOWS  # flows reassembled at once
    reassembly_policy: str = DEFAULT_POLICY  # whose bytes win where segments overlap (passive.capture.policy)
    max_dissector_bytes: int = MAX_DISSECTOR_BYTES  # partial state all sessions may hold together

    def capture_options(self) -> CaptureOptions:
        return mail_capture_options(
            all_ports=self.all_ports,
            bpf=self.bpf,
            backend=self.backend,
            max_flows=self.max_flows,
            reassembly_policy=self.reassembly_policy,
        )


class Analysis:
    """One run's sink: findings, counters and (optionally) per-session events, fed by per-flow handlers."""

    def __init__(self, options: AnalysisOptions | None = None) -> None:
        self.options = options or AnalysisOptions()
        self.findings = FindingSet()
        self.stats = RunStats()
        self.budget = DissectorBudget(self.options.max_dissector_bytes, self.stats)
        self.sessions: list[SessionRecord] = []
        self.flows_ignored = 0
        self.file: str | None = None
        self.relays = RelayLedger(RelayPolicy(self.options.local_domains, self.options.trusted_networks))

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
        return EngineHandler(self, protocol, by_port=not flow.label)


@dataclass
class Results:
    """What :func:`analyze_captures` returns: the analysis, the capture counters, which inputs could be read."""

    analysis: Analysis
    counters: CaptureCounters
    analyzed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)

    @property
    def findings(self) -> FindingSet:
        return self.analysis.findings

    @property
    def stats(self) -> RunStats:
        return self.analysis.stats

    def counts(self) -> dict[str, Any]:
        """Every counter of the run, for the summary record."""
        counters = self.counters.as_dict()
        counters.pop("warnings", None)
        return {
            **counters,
            **self.analysis.stats.to_dict(),
            "flows_ignored": self.analysis.flows_ignored,
            "captures": len(self.analyzed),
            "captures_failed": len(self.failed),
        }


FileContext = Callable[[str, CaptureCounters], AbstractContextManager[Any]]


def analyze_captures(
    paths: Iterable[str],
    options: AnalysisOptions | None = None,
    *,
    around_file: FileContext | None = None,
) -> Results:
    """Analyze each capture in turn into one :class:`Analysis`. A capture that cannot be read is listed in
    ``failed`` with its reason; the others are analyzed. ``around_file(path, counters)`` wraps each file (a
    progress display, say)."""
    analysis = Analysis(options)
    capture_options = analysis.options.capture_options()
    results = Results(analysis, CaptureCounters())
    for path in paths:
        analysis.file = path
        wrapper = around_file(path, results.counters) if around_file is not None else contextlib.nullcontext()
        try:
            with wrapper:
                analyze_file(path, analysis.handler_factory, capture_options, counters=results.counters)
        except CaptureError as error:
            results.failed.append((path, str(error)))
        else:
            results.analyzed.append(path)
    return results
