"""One session's detectors: the session's shared state, and a dispatch table from event type to the detectors'
handlers. The same code serves captures and the active probe. The detectors' effects on the run's findings,
statistics and relay ledger (:mod:`passive.analysis.detectors.base`) are applied at once here; a worker process's
sessions record them instead (:class:`passive.analysis.merge.RecordingAnalyzer`)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from functools import cache
from typing import Any, NamedTuple

from dissectors import events as ev
from dissectors.registry import INVENTORY_PROTOCOLS
from passive.analysis.detectors.base import Detector, Effect, SessionContext, Shared, counted
from passive.analysis.detectors.service import ServiceDetector
from passive.analysis.relays import RelayLedger
from passive.analysis.stats import RunStats
from passive.analysis.tunnel import note_proxy
from passive.core.endpoints import network_name
from passive.findings.kinds import KINDS
from passive.findings.model import Finding, FindingSet, FindingType, Severity

# Names a server gives itself (banner, EHLO reply) kept per session: the relay check's local domains. Past this
# many, or longer than a DNS name can be (253), a name is counted (``too_many_server_names``), not kept.
MAX_SERVER_NAMES = 16
MAX_SERVER_NAME = 253


class SessionAnalyzer:
    """Feeds one session's events to the detectors; their effects go to the run's :class:`Shared` state (a
    :class:`FindingSet`, :class:`RunStats`, a :class:`RelayLedger`). Without findings and statistics there is no
    state to apply them to: a subclass records them instead (:class:`passive.analysis.merge.RecordingAnalyzer`)."""

    def __init__(
        self,
        context: SessionContext,
        findings: FindingSet | None,
        stats: RunStats | None,
        relays: RelayLedger | None = None,
    ) -> None:
        self.context = context
        if findings is not None and stats is not None:
            self.shared = Shared(findings, stats, relays if relays is not None else RelayLedger())
        self.tls = False
        self.authenticated = False
        self.server_names = _BoundedNames(MAX_SERVER_NAMES, self)
        self.apply(counted, None, "sessions", context.protocol)
        # A carrier whose servers are not mail servers (HTTP) makes no inventory entry: findings only for leaks.
        plan = _plan(context.protocol in INVENTORY_PROTOCOLS)
        detectors = [cls(self) for cls in plan.classes]
        self.detectors: dict[FindingType, Detector] = dict(zip(plan.kinds, detectors, strict=True))
        service = detectors[plan.service] if plan.service is not None else None
        assert service is None or isinstance(service, ServiceDetector)
        self.service: ServiceDetector | None = service
        # Who each handler of the dispatch table is called on: the session itself, then its detectors.
        self._targets: tuple[Any, ...] = (self, *detectors)
        self._dispatch = plan.dispatch

    def finding(self, kind: FindingType, severity: Severity, key: tuple[Any, ...] = (), held: bool = False) -> Finding:
        """The run's finding of this session's server of ``kind`` (and ``key``), made if it is new (``held``: see
        :meth:`passive.analysis.detectors.base.Detector.finding`)."""
        return find(self.shared, self.context, kind, severity, key)

    def apply(self, effect: Effect, finding: Finding | None, *args: Any) -> None:
        """Apply a detector's effect on the run's state (:mod:`passive.analysis.detectors.base`)."""
        effect(finding, self.shared, *args)

    def seen_later(self, finding: Finding, timestamp: float | None) -> None:
        """The same occurrence of ``finding`` seen again later: only its first and last sighting may move (which
        commutes with every other change, so a recording may gather these)."""
        finding.seen(timestamp, None, count=False)

    def feed(self, events: list[ev.Event]) -> None:
        dispatch = self._dispatch
        targets = self._targets
        occurrence = self.service.occurrence if self.service is not None else None
        for event in events:
            if occurrence is not None:
                occurrence(event)
            for slot, handler in dispatch.get(event.__class__, ()):
                handler(targets[slot], event)

    def close(self) -> None:
        """The session ended: whatever was still open is recorded without an outcome. The detectors then let go of
        the session: each refers to it and it to them, a cycle per session that only the cyclic garbage collector
        would free (a busy watch parent spent 1.3 s of its 11 CPU seconds collecting, 0.4 s without these cycles);
        a closed session reads nothing more."""
        for detector in self.detectors.values():
            detector.close()
        self.detectors, self.service, self._targets, self._dispatch = {}, None, (), {}
        self.server_names.session = None

    def _start_tls(self, event: ev.StartTls) -> None:
        if event.accepted:
            self.tls = True
            self.apply(counted, None, "tls_sessions")

    def _auth_result(self, event: ev.AuthResult) -> None:
        if event.success:
            self.authenticated = True

    def _unauthenticated(self, event: ev.Unauthenticated) -> None:
        """IMAP UNAUTHENTICATE taken: what the server lists from now on is what it offers before a login."""
        self.authenticated = False

    def _anomaly(self, event: ev.Anomaly) -> None:
        self.apply(counted, None, "anomalies", event.code)


def find(
    shared: Shared, context: SessionContext, kind: FindingType, severity: Severity, key: tuple[Any, ...]
) -> Finding:
    """The run's finding of ``kind`` for the session's server (and ``key``; an overlay's network is part of it),
    made if it is new; the finding set's refusals and evictions are counted in the run's statistics."""
    findings, stats = shared.findings, shared.stats
    dropped, evicted = findings.dropped, findings.evicted
    network = context.network
    finding = findings.get(kind, context.protocol, context.server, severity, key + network if network else key)
    if network:
        finding.network = network_name(network)
    note_proxy(finding, context.proxy)
    stats.findings_dropped += findings.dropped - dropped
    stats.findings_evicted += findings.evicted - evicted
    finding.source = context.source
    return finding


class _Plan(NamedTuple):
    """What every session of one kind (with or without the inventory) is made of, worked out once: its detectors'
    classes and kinds, and the dispatch table from event type to ``(slot, function)`` pairs, the slot naming whom
    the function is called on (0 the session, then its detectors in order). The session's own state comes first:
    detectors read it."""

    classes: tuple[type[Detector], ...]
    kinds: tuple[FindingType, ...]
    service: int | None  # the index of the inventory's detector (mail-service) among them, if it is one
    dispatch: dict[type[ev.Event], tuple[tuple[int, Callable[[Any, Any], None]], ...]]


@cache
def _plan(inventory: bool) -> _Plan:
    classes = tuple(cls for cls in detector_classes() if inventory or cls.KIND is not FindingType.MAIL_SERVICE)
    table: dict[type[ev.Event], list[tuple[int, Callable[[Any, Any], None]]]] = {
        ev.StartTls: [(0, SessionAnalyzer._start_tls)],
        ev.AuthResult: [(0, SessionAnalyzer._auth_result)],
        ev.Unauthenticated: [(0, SessionAnalyzer._unauthenticated)],
        ev.Anomaly: [(0, SessionAnalyzer._anomaly)],
    }
    for slot, cls in enumerate(classes, 1):
        for event_type, name in cls.HANDLERS.items():
            table.setdefault(event_type, []).append((slot, getattr(cls, name)))
    dispatch = {event_type: tuple(handlers) for event_type, handlers in table.items()}
    kinds = tuple(cls.KIND for cls in classes)
    service = kinds.index(FindingType.MAIL_SERVICE) if FindingType.MAIL_SERVICE in kinds else None
    return _Plan(classes, kinds, service, dispatch)


@cache
def detector_classes() -> tuple[type[Detector], ...]:
    """Every detector of this package, one per kind: the inventory (mail-service) first, then the kinds from the
    least to the most severe, so that what a detector reads of the session is set before it runs."""
    package = importlib.import_module(__package__ or "passive.analysis.detectors")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    found = {cls.KIND: cls for cls in _subclasses(Detector) if hasattr(cls, "KIND")}
    return tuple(found[kind] for kind in reversed(KINDS) if kind in found)


def _subclasses(cls: type[Detector]) -> list[type[Detector]]:
    direct = cls.__subclasses__()
    return direct + [sub for child in direct for sub in _subclasses(child)]


class _BoundedNames(set[str]):
    """A set that stops growing at ``limit`` names (and takes no name longer than a DNS name); what it refuses is
    counted in the run's ``too_many_server_names``."""

    def __init__(self, limit: int, session: SessionAnalyzer) -> None:
        super().__init__()
        self.limit = limit
        self.session: SessionAnalyzer | None = session  # None once the session is closed

    def add(self, name: str) -> None:
        if name in self:
            return
        if len(self) < self.limit and len(name) <= MAX_SERVER_NAME:
            super().add(name)
        elif self.session is not None:
            self.session.apply(counted, None, "anomalies", "too_many_server_names")
