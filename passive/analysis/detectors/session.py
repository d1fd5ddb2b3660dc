"""One session's detectors: the session's shared state, and a dispatch table from event type to the detectors'
handlers. The same code serves captures and the active probe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dissectors import events as ev
from passive.analysis.detectors.auth_methods import AuthMethodsDetector
from passive.analysis.detectors.base import Detector, SessionContext
from passive.analysis.detectors.credentials import CredentialsDetector
from passive.analysis.detectors.ntlm import NtlmDetector
from passive.analysis.detectors.relay import RelayDetector
from passive.analysis.detectors.service import ServiceDetector
from passive.analysis.stats import RunStats
from passive.findings.model import Finding, FindingSet, FindingType, Severity

# Names a server gives itself (banner, EHLO reply) kept per session: the relay check's local domains.
MAX_SERVER_NAMES = 16


class SessionAnalyzer:
    """Feeds one session's events to the detectors; findings go into a shared :class:`FindingSet`."""

    def __init__(self, context: SessionContext, findings: FindingSet, stats: RunStats) -> None:
        self.context = context
        self.findings = findings
        self.stats = stats
        self.tls = False
        self.authenticated = False
        self.server_names = _BoundedNames(MAX_SERVER_NAMES)
        stats.sessions[context.protocol] += 1
        self.service = ServiceDetector(self)
        self.auth_methods = AuthMethodsDetector(self)
        self.ntlm = NtlmDetector(self)
        self.credentials = CredentialsDetector(self)
        self.relay = RelayDetector(self)
        self.detectors: tuple[Detector, ...] = (
            self.service,
            self.auth_methods,
            self.ntlm,
            self.credentials,
            self.relay,
        )
        # The session's own state first: detectors read it.
        table: dict[type[ev.Event], list[Callable[[Any], None]]] = {
            ev.StartTls: [self._start_tls],
            ev.AuthResult: [self._auth_result],
            ev.Anomaly: [self._anomaly],
        }
        for detector in self.detectors:
            for event_type, handler in detector.handlers():
                table.setdefault(event_type, []).append(handler)
        self._dispatch = {event_type: tuple(handlers) for event_type, handlers in table.items()}

    def finding(self, kind: FindingType, severity: Severity, key: tuple[Any, ...] = ()) -> Finding:
        dropped = self.findings.dropped
        finding = self.findings.get(kind, self.context.protocol, self.context.server, severity, key)
        self.stats.findings_dropped += self.findings.dropped - dropped
        finding.source = self.context.source
        return finding

    def feed(self, events: list[ev.Event]) -> None:
        dispatch, occurrence = self._dispatch, self.service.occurrence
        for event in events:
            occurrence(event)
            for handler in dispatch.get(event.__class__, ()):
                handler(event)

    def close(self) -> None:
        """The session ended: whatever was still open is recorded without an outcome."""
        for detector in self.detectors:
            detector.close()

    def _start_tls(self, event: ev.StartTls) -> None:
        if event.accepted:
            self.tls = True
            self.stats.tls_sessions += 1

    def _auth_result(self, event: ev.AuthResult) -> None:
        if event.success:
            self.authenticated = True

    def _anomaly(self, event: ev.Anomaly) -> None:
        self.stats.anomalies[event.code] += 1


class _BoundedNames(set[str]):
    """A set that stops growing at ``limit`` names."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def add(self, name: str) -> None:
        if len(self) < self.limit:
            super().add(name)
