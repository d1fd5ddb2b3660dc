"""Open-relay verdicts that hold up on real traffic.

Every unauthenticated ``RCPT TO`` whose destination is not plainly the server's own is recorded per server (an
overlay's tenants reuse addresses: a server is its endpoint in its virtual network, and its findings say which); the
server's ``open-relay`` findings are rebuilt from those attempts whenever one is added, so what is learned later (a
domain the server may receive mail for) corrects what was said before.

A domain is **local** to a server when it is ``localhost`` or an address literal of the server, one of the
``--local-domain`` domains, a name the server gives itself (banner, EHLO reply) or that name's registered domain
(Public Suffix List: ``mx3.eu.mail.contoso.com`` makes ``contoso.com`` local), or, without ``--local-domain``, a
domain the server behaves as MX for: it accepted it from at least :data:`MX_MIN_CLIENTS` clients sending from
:data:`MX_MIN_SENDER_DOMAINS` different domains (an address's domain being the one its mail goes to:
:func:`~passive.analysis.domains.destined`). Once ``--local-domain`` says which domains are the user's, such a domain
is not local but ``possible-relay`` (:meth:`ServerRelays.served_domains`): spam bots abusing an open relay send from
as many addresses and domains, and their relaying, high, vanished from the findings. An accepted attempt to a domain
that is not local gets a verdict by the rules of :mod:`passive.analysis.relay_rules`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from passive.analysis.domains import destined, registered_domain
from passive.analysis.relay_rules import SEVERITY, Attempt, Decision, RelayPolicy, Stage, Verdict, decide
from passive.analysis.tunnel import note_proxy
from passive.core.endpoints import network_name, split_endpoint
from passive.findings.model import Finding, FindingSet, FindingType

__all__ = ["Attempt", "RelayLedger", "RelayPolicy", "ServerRelays", "Verdict", "decide"]

# A domain accepted from this many distinct clients, sending from this many distinct domains, is one the server
# receives mail for (an MX), not one it relays to.
MX_MIN_CLIENTS = 3
MX_MIN_SENDER_DOMAINS = 3
# Attempts kept per server to rebuild its findings from; past this they are counted by (client, domain, verdict
# inputs) and their count still reaches the findings.
MAX_ATTEMPTS = 200
# Distinct (domain -> clients, sender domains) kept per server for the MX rule, which needs no more names per domain
# than its thresholds; a domain longer than a DNS name can be is no domain a server receives mail for.
MAX_DOMAINS = 256
MAX_NAMES_PER_DOMAIN = max(MX_MIN_CLIENTS, MX_MIN_SENDER_DOMAINS)
MAX_DOMAIN_NAME = 253
# What an attempt keeps of its addresses and of the reply (RFC 5321 4.5.3.1: a path is at most 256 octets, a reply
# line 512); findings show no more of them. 200 attempts with 64 KiB lines held 38 MB for one server.
MAX_RELAY_TEXT = 1024
# The ledger in all, whatever the traffic (100,000 servers with one attempt each held 215 MB, 41 MB now): servers
# whose attempts are kept to rebuild their verdicts; attempts kept (listed, or the last of an overflow count);
# MX-rule domains.
# A new server past MAX_RELAY_SERVERS has each attempt judged on its own, as it comes, never corrected by what is
# learned later (``relay_servers_untracked``). Past MAX_LEDGER_ATTEMPTS, a kept server whose attempt finds no room
# (not even an earlier count of the same client, domain and outcome) is rebuilt no more: its findings stay as they
# are, its kept attempts are let go for others, and its attempts are judged on their own from then on
# (``relay_attempts_judged_alone``). Past MAX_SERVED_DOMAINS no new domain is learned for the MX rule. At most about
# 100 MB in all: 10,000 attempts of about 5 KB, 16,384 domains of 7 names of 253 characters, 1,024 servers of 64.
MAX_RELAY_SERVERS = 1024
MAX_LEDGER_ATTEMPTS = 10_000
MAX_SERVED_DOMAINS = 16_384
# Names a kept server gave itself (banners, EHLO replies) kept for its local domains. A server's findings are rebuilt
# from all its kept attempts only when what is local to it changed (at most once per name or MX domain learned);
# otherwise a new attempt alone is judged (4,000 attempts to one server from many clients and domains took 106 CPU s
# when every attempt rebuilt, 0.19 to 0.25 s now).
MAX_LEDGER_NAMES = 64
# Local domains listed in a finding (the check itself uses all of them).
MAX_LOCAL_DOMAINS_SHOWN = 20


@dataclass
class ServerRelays:
    """One server's unauthenticated attempts and what they say about its domains."""

    server: str
    protocol: str
    source: str
    # The overlay's virtual network the server is in, as (kind, id) (passive.capture.tunnels.vnet_label): tenants
    # reuse addresses, and one tenant's names and deliveries say nothing of another's server.
    network: tuple[str, int] | tuple[()] = ()
    names: set[str] = field(default_factory=set)
    attempts: list[Attempt] = field(default_factory=list)
    # (client ip, domain, accepted, unsure, outer, message refused, proxied, stage reached): what decides an
    # attempt's verdict besides the server's domains.
    overflow: Counter[tuple[str, str, bool, bool, bool, bool, bool, Stage]] = field(default_factory=Counter)
    overflow_last: dict[tuple[str, str, bool, bool, bool, bool, bool, Stage], Attempt] = field(default_factory=dict)
    served: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)  # domain -> (clients, sender domains)
    # A refusal of a message for relaying or its recipients after the server accepted them ("at DATA: 554 ..."), at
    # the latest stage seen: its RCPT 250 is no last word on a recipient whose transaction ended before (relay_rules).
    late_refusal: str = ""
    late_stage: Stage = Stage.RCPT
    # (local domains, knows them, MX-rule domains, late stage) of the findings' last rebuild
    published: tuple[frozenset[str], bool, frozenset[str], Stage] | None = None
    alone: bool = False  # its attempts are judged one at a time, its findings never rebuilt (no room was left)
    judged: dict[Verdict, Finding | None] = field(default_factory=dict)  # the finding each verdict last went to

    def learn_names(self, names: frozenset[str] | set[str]) -> None:
        """Names the server gave itself in a session (its banner, EHLO reply), up to :data:`MAX_LEDGER_NAMES`."""
        for name in names:
            if len(self.names) >= MAX_LEDGER_NAMES:
                return
            self.names.add(name)

    def add(self, attempt: Attempt, room: bool = True, learn: bool = True) -> bool:
        """Keep ``attempt`` (listed, else counted by its client, domain and outcome); without ``room`` only counted
        with an earlier one of the same, if any. ``learn``: a new domain it was accepted for may join the MX rule's.
        Whether it was kept or counted."""
        key = (
            attempt.client_ip,
            attempt.domain,
            attempt.accepted,
            bool(attempt.unsure),
            bool(attempt.outer),
            bool(attempt.refused_later),
            bool(attempt.proxy),
            attempt.reached,
        )
        if room and len(self.attempts) < MAX_ATTEMPTS:
            self.attempts.append(attempt)
        elif room or key in self.overflow:
            self.overflow[key] += 1
            self.overflow_last[key] = attempt
        else:
            return False
        domain = attempt.domain
        new_domain = learn and len(self.served) < MAX_DOMAINS and len(domain) <= MAX_DOMAIN_NAME
        if attempt.accepted and (domain in self.served or new_domain):
            clients, senders = self.served.setdefault(domain, (set(), set()))
            sender = registered_domain(attempt.mail_from.rpartition("@")[2]) or attempt.mail_from
            for names, name in ((clients, attempt.client_ip), (senders, sender)):
                if len(names) < MAX_NAMES_PER_DOMAIN and len(name) <= MAX_DOMAIN_NAME:
                    names.add(name)
        return True

    @property
    def kept(self) -> int:
        """Attempts this server holds: listed, and the last of each overflow count."""
        return len(self.attempts) + len(self.overflow_last)

    def local_domains(self, policy: RelayPolicy) -> set[str]:
        local = set(policy.local_domains) | {n for n in self.names}
        local |= {d for d in (registered_domain(n) for n in self.names) if d}
        return local if policy.local_domains else local | self._mx_domains()

    def served_domains(self, policy: RelayPolicy) -> frozenset[str]:
        """The domains the server behaves as MX for once ``--local-domain`` says which are the user's: not local,
        their attempts possible-relay (the module docstring); none without it, when they are local."""
        return self._mx_domains() if policy.local_domains else frozenset()

    def _mx_domains(self) -> frozenset[str]:
        return frozenset(
            domain
            for domain, (clients, senders) in self.served.items()
            if len(clients) >= MX_MIN_CLIENTS and len(senders) >= MX_MIN_SENDER_DOMAINS
        )

    @property
    def addresses(self) -> frozenset[str]:
        """The server's address, as an address literal's domain names it."""
        return frozenset({split_endpoint(self.server)[0]})

    def knows_its_domains(self, policy: RelayPolicy) -> bool:
        """Whether what decides rule 4 (:mod:`passive.analysis.relay_rules`) is known: a change rebuilds findings."""
        return bool(policy.local_domains) or any(registered_domain(n) for n in self.names)


def cut(attempt: Attempt) -> Attempt:
    """The attempt with its addresses and reply cut at :data:`MAX_RELAY_TEXT` (itself if they are short)."""
    names = ("mail_from", "rcpt_to", "reply", "domain", "refused_later", "outer")
    if max(len(getattr(attempt, name)) for name in names) <= MAX_RELAY_TEXT:
        return attempt
    return dataclasses.replace(attempt, **{name: getattr(attempt, name)[:MAX_RELAY_TEXT] for name in names})


def _key(relays: ServerRelays, verdict: Verdict) -> tuple[Any, ...]:
    """A relay finding's key: one finding per verdict, and per overlay network as every finding's
    (:func:`passive.analysis.detectors.session.find`)."""
    return (str(verdict), *relays.network)


class RelayLedger:
    """Every server's attempts, and the ``open-relay`` findings rebuilt from them (bounded in all: see
    :data:`MAX_RELAY_SERVERS`)."""

    def __init__(self, policy: RelayPolicy | None = None) -> None:
        self.policy = policy or RelayPolicy()
        self.servers: dict[tuple[str, tuple[str, int] | tuple[()]], ServerRelays] = {}  # by server and network
        self.kept = 0  # attempts kept by all servers (ServerRelays.kept)
        self.served = 0  # MX-rule domains of all servers

    def record(self, findings: FindingSet, relays: ServerRelays, attempt: Attempt) -> bool:
        """Add ``attempt`` to a kept server's and rebuild its findings; False if it was judged on its own (no room:
        see :data:`MAX_RELAY_SERVERS`)."""
        attempt = cut(attempt)
        if attempt.refused_later and not attempt.accepted and attempt.reached > relays.late_stage:
            relays.late_refusal, relays.late_stage = attempt.refused_later, attempt.reached
        if not relays.alone:
            kept, served = relays.kept, len(relays.served)
            added = relays.add(attempt, self.kept < MAX_LEDGER_ATTEMPTS, self.served < MAX_SERVED_DOMAINS)
            self.kept += relays.kept - kept
            self.served += len(relays.served) - served
            if added:
                self.publish(findings, relays, attempt)
                return True
            relays.alone = True  # no room: its findings stay as they are, its room goes to others
            self.kept -= relays.kept
            relays.attempts.clear()
            relays.overflow.clear()
            relays.overflow_last.clear()
        self.judge(findings, relays, attempt)
        return False

    def server(
        self, server: str, protocol: str, source: str, network: tuple[str, int] | tuple[()] = ()
    ) -> ServerRelays | None:
        """The server's kept attempts (the server in ``network``, an overlay's, if any); None for a new server once
        :data:`MAX_RELAY_SERVERS` are kept."""
        relays = self.servers.get((server, network))
        if relays is None and len(self.servers) < MAX_RELAY_SERVERS:
            relays = self.servers[server, network] = ServerRelays(server, protocol, source, network)
        return relays

    def judge(self, findings: FindingSet, relays: ServerRelays, attempt: Attempt) -> None:
        """An attempt of a server whose attempts are not kept (:data:`MAX_RELAY_SERVERS`): judged on its own by what
        ``relays`` knows of the server, added to its findings as it comes, never rebuilt."""
        attempt = cut(attempt)
        local = relays.local_domains(self.policy)
        if (judged := destined(attempt, local, relays.addresses)) is not None:
            self._count(findings, relays, judged, decide(relays, judged, self.policy), local, 1, True)

    def publish(self, findings: FindingSet, relays: ServerRelays, attempt: Attempt | None = None) -> None:
        """Replace the server's relay findings by the verdicts its attempts get now; when nothing local to the server
        changed since the last time, only ``attempt`` (just added) is judged, since no earlier verdict can move."""
        local = relays.local_domains(self.policy)
        addresses = relays.addresses
        knows = relays.knows_its_domains(self.policy)
        state = (frozenset(local), knows, relays.served_domains(self.policy), relays.late_stage)
        if attempt is not None and state == relays.published:
            if (judged := destined(attempt, local, addresses)) is None:
                return
            decision = decide(relays, judged, self.policy)
            before = relays.judged.get(decision.verdict)
            # Unless its finding left the run's set meanwhile (a watch let it go, or it made room for another):
            # then it is rebuilt whole, with the run's count.
            if (
                before is None
                or findings.find(FindingType.OPEN_RELAY, relays.server, _key(relays, decision.verdict)) is before
            ):
                listed = bool(relays.attempts) and relays.attempts[-1] is attempt
                self._count(findings, relays, judged, decision, local, 1, listed)
                return
        relays.published = state
        for verdict in Verdict:
            old = findings.find(FindingType.OPEN_RELAY, relays.server, _key(relays, verdict))
            if old is not None:
                findings.discard(old)
        for kept in relays.attempts:
            if (judged := destined(kept, local, addresses)) is not None:
                self._count(findings, relays, judged, decide(relays, judged, self.policy), local, 1, True)
        for key, count in relays.overflow.items():
            if (judged := destined(relays.overflow_last[key], local, addresses)) is not None:
                self._count(findings, relays, judged, decide(relays, judged, self.policy), local, count, False)

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
        key = _key(relays, verdict)
        finding = findings.get(FindingType.OPEN_RELAY, relays.protocol, relays.server, severity, key)
        kept = findings.find(FindingType.OPEN_RELAY, relays.server, key) is finding
        if relays.network:
            finding.network = network_name(relays.network)
        relays.judged[verdict] = finding if kept else None  # a finding the full set did not keep is not followed
        finding.source = relays.source
        finding.seen(attempt.time, attempt.client)
        finding.count += count - 1
        for evidence in attempt.evidence:
            finding.add_evidence(evidence)
        note_proxy(finding, attempt.proxy)
        fields: dict[str, Any] = {
            "accepted": attempt.accepted,
            "mail_from": attempt.mail_from,
            "rcpt_to": attempt.rcpt_to,
            "reply": attempt.reply,
        }
        if attempt.refused_later:
            fields["message_refused"] = attempt.refused_later
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
        if attempt.refused_later:
            finding.set_fields(message_refused=attempt.refused_later)
        else:
            finding.fields.pop("message_refused", None)  # the latest attempt's fields: not an earlier one's
