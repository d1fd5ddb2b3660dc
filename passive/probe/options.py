"""What a probe run is told (options) and what it tells back (one report per service)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from passive.analysis.domains import IpNetwork
from passive.analysis.relays import RelayLedger
from passive.analysis.stats import RunStats
from passive.findings.model import FindingSet

STARTTLS_MODES = ("auto", "always", "never")
# Reply lines read for one reply; a server that never ends a multi-line reply is cut off here.
MAX_REPLY_LINES = 512


@dataclass
class ProbeOptions:
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    service_timeout: float = 60.0
    max_line: int = 16 * 1024
    max_bytes: int = 256 * 1024
    concurrency: int = 16
    starttls: str = "auto"
    ntlm: bool = True
    relay_test: bool = False
    relay_from: str = "example.com"
    relay_to: str = "example.net"
    ehlo_name: str = "leakscope.invalid"
    local_domains: frozenset[str] = frozenset()
    trusted_networks: tuple[IpNetwork, ...] = ()


@dataclass
class ServiceReport:
    """How probing one service went: the per-service status in the summary."""

    target: str
    server: str
    protocol: str | None
    named: bool
    status: str = "ok"  # "ok", "error"
    # As nmap says it: "open" (TCP connected), "closed" (refused), "filtered" (no answer in time), "error" (other).
    port_state: str = "open"
    stage: str | None = None
    error: str | None = None
    banner: str | None = None
    implicit_tls: bool = False
    starttls: str = "not-offered"  # not-offered, not-tried, accepted, refused, failed, implicit
    tls_version: str | None = None
    ntlm_advertised: bool | None = None
    ntlm: str = "not-tried"  # not-tried, challenge, refused, no-challenge, unanswered (the exchange was begun and
    # no answer to AUTH NTLM or to the NEGOTIATE was read: the connection ended, the time ran out, or the answer
    # could not be read; the error says which)
    ntlm_reply: str | None = None
    relay_variants_tried: int = 0
    relay_variants_accepted: int = 0
    elapsed_seconds: float = 0.0
    # HTTP: per path asked, {path, scheme, status, offered, challenge} (passive.probe.http).
    endpoints: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class ProbeRun:
    findings: FindingSet = field(default_factory=FindingSet)
    stats: RunStats = field(default_factory=RunStats)
    reports: list[ServiceReport] = field(default_factory=list)
    relays: RelayLedger = field(default_factory=RelayLedger)
    # Per server (the endpoint connected to), its conversations still open, and the servers a finished conversation
    # heard and confirmed: two targets may name one server (a host name and its address, a range holding it), and
    # their findings are the server's, one set. A conversation that ends silent or unconfirmed withdraws them only
    # when no other conversation with the server is open or vouched for it.
    talking: dict[str, int] = field(default_factory=dict)
    vouched: set[str] = field(default_factory=set)

    @property
    def failed_targets(self) -> list[str]:
        """Targets that could not be probed: a named service that failed, or a bare host none of whose ports did."""
        by_target: dict[str, list[ServiceReport]] = {}
        for report in self.reports:
            by_target.setdefault(report.target, []).append(report)
        failed = []
        for target, reports in by_target.items():
            if any(r.named and r.status != "ok" for r in reports) or all(r.status != "ok" for r in reports):
                failed.append(target)
        return failed
