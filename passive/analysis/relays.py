"""Open-relay verdicts that hold up on real traffic.

Every unauthenticated ``RCPT TO`` whose destination is not plainly the server's own is recorded per server; the
server's ``open-relay`` findings are rebuilt from those attempts whenever one is added, so what is learned later (a
domain the server turns out to receive mail for) corrects what was said before.

A domain is **local** to a server when it is ``localhost`` or an address literal of the server, one of the
``--local-domain`` domains, a name the server gives itself (banner, EHLO reply) or that name's registered domain
(Public Suffix List: ``mx3.eu.mail.contoso.com`` makes ``contoso.com`` local), or a domain the server behaves as
MX for: it accepted it from at least :data:`MX_MIN_CLIENTS` clients sending from :data:`MX_MIN_SENDER_DOMAINS`
different domains. An accepted attempt to a domain that is not local then gets a verdict, by the first rule that
applies:

1. the client is in a ``--trusted-net`` network: ``relays-for-trusted-network`` (info);
2. no ``--trusted-net`` was given and the client is in a private range (passive analysis only; a probe's vantage
   point is the user's choice): ``relays-for-internal-clients`` (low) -- Postfix's ``mynetworks`` is assumed;
3. the server's own domains are unknown (no ``--local-domain``, no domain in its names): ``possible-relay``
   (medium) -- the recipient domain may be its own;
4. otherwise ``open-relay`` (high): a client outside the trusted networks had mail for a foreign domain accepted.

A refused attempt (5xx) is ``refused`` (info). Each finding says which rule decided, what was assumed, and which
local domains and trusted networks were used.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from passive.analysis.domains import (
    PRIVATE_NETWORKS,
    IpNetwork,
    in_networks,
    is_local,
    registered_domain,
)
from passive.core.endpoints import split_endpoint
from passive.findings.model import EvidenceRecord, FindingSet, FindingType, Severity

# A domain accepted from this many distinct clients, sending from this many distinct domains, is one the server
# receives mail for (an MX), not one it relays to.
MX_MIN_CLIENTS = 3
MX_MIN_SENDER_DOMAINS = 3
# Attempts kept per server to rebuild its findings from; past this they are counted by (client, domain, verdict
# inputs) and their count still reaches the findings.
MAX_ATTEMPTS = 200
# Distinct (domain -> clients, sender domains) kept per server for the MX rule.
MAX_DOMAINS = 256
MAX_NAMES_PER_DOMAIN = 16
# Local domains listed in a finding (the check itself uses all of them).
MAX_LOCAL_DOMAINS_SHOWN = 20


class Verdict(enum.StrEnum):
    OPEN_RELAY = "open-relay"
    POSSIBLE_RELAY = "possible-relay"
    INTERNAL_CLIENTS = "relays-for-internal-clients"
    TRUSTED_NETWORK = "relays-for-trusted-network"
    REFUSED = "refused"


SEVERITY = {
    Verdict.OPEN_RELAY: Severity.HIGH,
    Verdict.POSSIBLE_RELAY: Severity.MEDIUM,
    Verdict.INTERNAL_CLIENTS: Severity.LOW,
    Verdict.TRUSTED_NETWORK: Severity.INFO,
    Verdict.REFUSED: Severity.INFO,
}


@dataclass(frozen=True)
class RelayPolicy:
    """What the user told about the servers: their domains and the networks they trust."""

    local_domains: frozenset[str] = frozenset()
    trusted_networks: tuple[IpNetwork, ...] = ()


@dataclass(frozen=True)
class Attempt:
    client: str
    mail_from: str
    rcpt_to: str
    domain: str
    accepted: bool
    reply: str
    time: float | None
    evidence: tuple[EvidenceRecord, ...]
    file: str | None = None

    @property
    def client_ip(self) -> str:
        return split_endpoint(self.client)[0]


@dataclass
class ServerRelays:
    """One server's unauthenticated attempts and what they say about its domains."""

    server: str
    protocol: str
    source: str
    names: set[str] = field(default_factory=set)
    attempts: list[Attempt] = field(default_factory=list)
    overflow: Counter[tuple[str, str, bool]] = field(default_factory=Counter)  # (client ip, domain, accepted)
    overflow_last: dict[tuple[str, str, bool], Attempt] = field(default_factory=dict)
    served: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)  # domain -> (clients, sender domains)

    def add(self, attempt: Attempt) -> None:
        if len(self.attempts) < MAX_ATTEMPTS:
            self.attempts.append(attempt)
        else:
            key = (attempt.client_ip, attempt.domain, attempt.accepted)
            self.overflow[key] += 1
            self.overflow_last[key] = attempt
        if attempt.accepted and (attempt.domain in self.served or len(self.served) < MAX_DOMAINS):
            clients, senders = self.served.setdefault(attempt.domain, (set(), set()))
            sender = registered_domain(attempt.mail_from.rpartition("@")[2]) or attempt.mail_from
            for names, name in ((clients, attempt.client_ip), (senders, sender)):
                if len(names) < MAX_NAMES_PER_DOMAIN:
                    names.add(name)

    def local_domains(self, policy: RelayPolicy) -> set[str]:
        local = set(policy.local_domains) | {n for n in self.names}
        local |= {d for d in (registered_domain(n) for n in self.names) if d}
        local |= {
            domain
            for domain, (clients, senders) in self.served.items()
            if len(clients) >= MX_MIN_CLIENTS and len(senders) >= MX_MIN_SENDER_DOMAINS
        }
        return local

    def knows_its_domains(self, policy: RelayPolicy) -> bool:
        return bool(policy.local_domains) or any(registered_domain(n) for n in self.names)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    rule: str
    assumed: tuple[str, ...] = ()


def decide(relays: ServerRelays, attempt: Attempt, policy: RelayPolicy) -> Decision:
    """The verdict on one attempt that is not to a local domain (the module docstring's rules, in order)."""
    if not attempt.accepted:
        return Decision(Verdict.REFUSED, f"the server refused {attempt.rcpt_to} ({attempt.reply})")
    ip = attempt.client_ip
    if policy.trusted_networks:
        network = in_networks(ip, policy.trusted_networks)
        if network is not None:
            return Decision(Verdict.TRUSTED_NETWORK, f"client {ip} is in the trusted network {network}")
    elif relays.source == "passive" and (network := in_networks(ip, PRIVATE_NETWORKS)) is not None:
        return Decision(
            Verdict.INTERNAL_CLIENTS,
            f"client {ip} is in the private range {network}: a server relays for its own network",
            ("clients in private ranges are in the server's trusted networks (give --trusted-net to decide)",),
        )
    if not relays.knows_its_domains(policy):
        return Decision(
            Verdict.POSSIBLE_RELAY,
            f"{attempt.domain} may be the server's own domain: its names say no domain",
            ("the server's own domains are unknown (give --local-domain to decide)",),
        )
    outside = "outside the trusted networks" if policy.trusted_networks else "not in a private range"
    return Decision(
        Verdict.OPEN_RELAY, f"client {ip} is {outside} and {attempt.domain} is not among the server's local domains"
    )


class RelayLedger:
    """Every server's attempts, and the ``open-relay`` findings rebuilt from them."""

    def __init__(self, policy: RelayPolicy | None = None) -> None:
        self.policy = policy or RelayPolicy()
        self.servers: dict[str, ServerRelays] = {}

    def record(self, findings: FindingSet, relays: ServerRelays, attempt: Attempt) -> None:
        relays.add(attempt)
        self.publish(findings, relays)

    def server(self, server: str, protocol: str, source: str) -> ServerRelays:
        relays = self.servers.get(server)
        if relays is None:
            relays = self.servers[server] = ServerRelays(server, protocol, source)
        return relays

    def publish(self, findings: FindingSet, relays: ServerRelays) -> None:
        """Replace the server's relay findings by the verdicts its attempts get now."""
        for verdict in Verdict:
            old = findings.find(FindingType.OPEN_RELAY, relays.server, (str(verdict),))
            if old is not None:
                findings.discard(old)
        local = relays.local_domains(self.policy)
        addresses = frozenset({split_endpoint(relays.server)[0]})
        for attempt in relays.attempts:
            if not is_local(attempt.domain, local, addresses):
                self._count(findings, relays, attempt, decide(relays, attempt, self.policy), local, 1, True)
        for key, count in relays.overflow.items():
            attempt = relays.overflow_last[key]
            if not is_local(attempt.domain, local, addresses):
                self._count(findings, relays, attempt, decide(relays, attempt, self.policy), local, count, False)

    def _count(
        self,
        findings: FindingSet,
        relays: ServerRelays,
        attempt: Attempt,
        decision: Decision,
        local: set[str],
        count: int,
        detailed: bool,
    ) -> None:
        verdict = decision.verdict
        severity = SEVERITY[verdict]
        finding = findings.get(FindingType.OPEN_RELAY, relays.protocol, relays.server, severity, (str(verdict),))
        finding.source = relays.source
        finding.seen(attempt.time, attempt.client)
        finding.count += count - 1
        for evidence in attempt.evidence:
            finding.add_evidence(evidence)
        fields: dict[str, Any] = {
            "accepted": attempt.accepted,
            "mail_from": attempt.mail_from,
            "rcpt_to": attempt.rcpt_to,
            "reply": attempt.reply,
        }
        if detailed:
            finding.add_detail({"client": attempt.client, **fields, "time": attempt.time, "file": attempt.file})
        finding.set_fields(
            **fields,
            verdict=str(verdict),
            rule=decision.rule,
            assumed=list(decision.assumed),
            local_domains=sorted(local)[:MAX_LOCAL_DOMAINS_SHOWN],
            trusted_networks=[str(n) for n in self.policy.trusted_networks],
        )
