"""The verdict on an unauthenticated RCPT TO to a domain that is not local to its server
(:meth:`passive.analysis.relays.ServerRelays.local_domains`): the first of these rules that applies.

1. the client is in a ``--trusted-net`` network: ``relays-for-trusted-network`` (info);
2. no ``--trusted-net`` was given and the client is in a private range (passive analysis only; a probe's vantage
   point is the user's choice): ``relays-for-internal-clients`` (low) -- Postfix's ``mynetworks`` is assumed;
3. the session may have authenticated unseen (bytes were lost before the transaction, or an AUTH's verdict was
   not seen): ``possible-relay`` (medium) -- the server may have taken the client for one of its users;
   so is a foreign domain named in the local part of an address at a local domain (``user%example.net@server``,
   ``example.net!user@server``, ``"user@example.net"@server``): the server may deliver it as a local mailbox;
   and so is a recipient whose transaction ended (the client sent RSET or a new MAIL, quit, or the capture ended)
   before the stage at which its server was seen refusing another message for relaying or its recipients after
   accepting them (at DATA, or at the end of the data: :attr:`passive.analysis.relays.ServerRelays.late_refusal`):
   that server's RCPT 250 is not its last word on a recipient;
4. nothing says the domain is not one the server receives mail for: ``possible-relay`` (medium). A domain of a single
   label (``user@mx``) is routed nowhere on the Internet: the server may complete it with its own; nor is an address
   literal that is no address as written (``[192.000.002.025]``), which servers read differently. The names a server
   gives itself name some of its domains, never all: an MX takes mail for every domain it is MX for (a company's
   several, a hosting provider's or Microsoft 365's customers'), so in traffic, delivery to an MX and relaying look
   the same. Passively, only the user's ``--local-domain`` says which domains are foreign, and only for a server that
   names itself in one of them (or in the same registered domain) or gives no name (outbound mail to another's MX is
   no relaying; a server that gives no name, a masked banner, is taken for one of the user's). A probe's relay test
   sends to a domain it chose: there, a server whose names or ``--local-domain`` give its domains is judged. Outside
   the ``--local-domain`` domains, a domain the server took mail for from many clients sending from many domains
   (:meth:`passive.analysis.relays.ServerRelays.served_domains`) is possible-relay too: the server may be its MX (a
   backup MX), or an open relay spam bots abuse, which send from as many addresses and domains;
5. otherwise ``open-relay`` (high): a client outside the trusted networks had mail for a foreign domain accepted.

A refused attempt (5xx) is ``refused`` (info), and so is a recipient the server accepted in a transaction whose
message it then refused for relaying (a 5xx to DATA or at the end of the data naming relaying or the recipients:
servers that check relaying there); a message refused for another reason (a content filter's) relayed nothing, but
leaves the attempt ``possible-relay`` (medium) after rules 1 and 2: a message the filter passes may be relayed.
Each finding says which rule decided, what was assumed, and which local domains and trusted networks were used.
A client through a proxy (CONNECT, SOCKS) is not judged by its own address (rules 1, 2); rule 5 is possible-relay.
"""

from __future__ import annotations

import enum
from collections.abc import Set
from dataclasses import dataclass
from typing import Protocol

from passive.analysis.domains import (
    PRIVATE_NETWORKS,
    IpNetwork,
    address_literal,
    in_networks,
    is_local,
    registered_domain,
)
from passive.core.endpoints import split_endpoint
from passive.findings.model import EvidenceRecord, Severity


class Stage(enum.IntEnum):
    """How far a transaction went after its RCPT: the server's last word on its recipients comes at one of these."""

    RCPT = 0  # no further: it ended before DATA was taken (RSET, a new MAIL, QUIT, the capture's end)
    DATA = 1  # the server took DATA (354): checks it makes there were passed; the end of the data was not answered
    MESSAGE = 2  # the server gave its verdict on the message (or on a BDAT chunk)


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


class ServerRelays(Protocol):
    """What the rules read of a server's ledger (:class:`passive.analysis.relays.ServerRelays`)."""

    source: str  # "passive", or a probe's
    names: set[str]  # the names the server gave itself
    late_refusal: str  # a refusal of a message for relaying after its recipients were accepted, or ""
    late_stage: Stage  # the latest stage at which it refused so (Stage.RCPT: never)

    @property
    def addresses(self) -> frozenset[str]: ...

    def local_domains(self, policy: RelayPolicy) -> Set[str]: ...

    def knows_its_domains(self, policy: RelayPolicy) -> bool: ...

    def served_domains(self, policy: RelayPolicy) -> Set[str]: ...


@dataclass(frozen=True)
class Attempt:
    """One RCPT TO to a domain that is not local, as the server answered it, with the transaction's evidence."""

    client: str
    mail_from: str
    rcpt_to: str
    domain: str
    accepted: bool
    reply: str
    time: float | None
    evidence: tuple[EvidenceRecord, ...]
    file: str | None = None
    # Why the client may have authenticated without the capture showing it ("" when it plainly did not).
    unsure: str = ""
    # The server refused the message after accepting this recipient: where, and its reply ("at DATA: 554 ...").
    refused_later: str = ""
    # The proxy whose XCLIENT named ``client`` (the session's own client), or "".
    via: str = ""
    # The domain after the last "@" when ``domain`` came from a relay trick in the local part (percent hack, bang
    # path, quoted address), or "".
    outer: str = ""
    proxy: str = ""  # how the client reached the server through a proxy's tunnel (analysis.tunnel.hop), or ""
    reached: Stage = Stage.RCPT  # how far its transaction went: the server's verdicts seen after the RCPT

    @property
    def client_ip(self) -> str:
        return split_endpoint(self.client)[0]


@dataclass(frozen=True)
class Decision:
    """The verdict on one attempt, the rule that gave it and what it assumed."""

    verdict: Verdict
    rule: str
    assumed: tuple[str, ...] = ()


def decide(relays: ServerRelays, attempt: Attempt, policy: RelayPolicy) -> Decision:
    """The verdict on one attempt that is not to a local domain (the module docstring's rules, in order)."""
    if not attempt.accepted:
        if attempt.refused_later:
            return Decision(
                Verdict.REFUSED,
                f"the server accepted {attempt.rcpt_to} ({attempt.reply}) but refused the message "
                f"{attempt.refused_later}; nothing was relayed",
            )
        return Decision(Verdict.REFUSED, f"the server refused {attempt.rcpt_to} ({attempt.reply})")
    ip = attempt.client_ip
    who = _who(attempt)
    if policy.trusted_networks and not attempt.proxy:
        network = in_networks(ip, policy.trusted_networks)
        if network is not None:
            return Decision(Verdict.TRUSTED_NETWORK, f"client {who} is in the trusted network {network}")
    elif (
        relays.source == "passive" and not attempt.proxy and (network := in_networks(ip, PRIVATE_NETWORKS)) is not None
    ):
        return Decision(
            Verdict.INTERNAL_CLIENTS,
            f"client {who} is in the private range {network}: a server relays for its own network",
            ("clients in private ranges are in the server's trusted networks (give --trusted-net to decide)",),
        )
    if attempt.refused_later:
        return Decision(
            Verdict.POSSIBLE_RELAY,
            f"{attempt.domain} was accepted for client {who}, but the server refused the message "
            f"{attempt.refused_later}; nothing was relayed here",
            ("the refusal was about that message, not about relaying: a message the server does not refuse may be",),
        )
    if attempt.unsure:
        return Decision(
            Verdict.POSSIBLE_RELAY,
            f"{attempt.domain} was accepted for client {who}, but {attempt.unsure}",
            ("a client that authenticated unseen would be relayed for as one of the server's users",),
        )
    if attempt.outer and is_local(attempt.outer, relays.local_domains(policy), relays.addresses):
        return Decision(
            Verdict.POSSIBLE_RELAY,
            f"{attempt.rcpt_to} names {attempt.domain} in its local part, at the server's own {attempt.outer}",
            ("the server may take it for a mailbox of its own and deliver it there, not relay it",),
        )
    if attempt.reached < relays.late_stage:
        return _ended_early(relays, attempt, who)
    if (unknown := _not_known_foreign(relays, attempt, policy)) is not None:
        return unknown
    if attempt.proxy:
        return _proxied(attempt, who)
    outside = "outside the trusted networks" if policy.trusted_networks else "not in a private range"
    return Decision(
        Verdict.OPEN_RELAY,
        f"client {who} is {outside} and {attempt.domain} is not among the server's local domains",
        # A backup MX or a relay_domains entry takes mail for another's domain from anyone: told by --local-domain.
        (f"{attempt.domain} is not a domain the server receives mail for (a backup MX, a relay domain)",),
    )


def _ended_early(relays: ServerRelays, attempt: Attempt, who: str) -> Decision:
    """Rule 3 for a recipient whose transaction ended before the stage at which its server refused another message
    for relaying after accepting its recipients: that server's RCPT 250 was not its last word."""
    stage = "DATA" if relays.late_stage is Stage.DATA else "the end of the data"
    return Decision(
        Verdict.POSSIBLE_RELAY,
        f"{attempt.domain} was accepted for client {who}, but the transaction ended before {stage}, where the server "
        f"refused a message after accepting its recipients ({relays.late_refusal})",
        (f"the server would have taken this message at {stage}, where it refused another",),
    )


def _not_known_foreign(relays: ServerRelays, attempt: Attempt, policy: RelayPolicy) -> Decision | None:
    """Rule 4: possible-relay when nothing says the domain is not one the server receives mail for; else None."""
    if (unsure := _unsure_destination(attempt.domain)) is not None:
        rule, assumed = unsure
        return Decision(Verdict.POSSIBLE_RELAY, rule, (assumed,))
    if relays.source != "passive":  # a probe's relay test sends to a domain it chose as no server's own
        if relays.knows_its_domains(policy):
            return None
        return Decision(
            Verdict.POSSIBLE_RELAY,
            f"{attempt.domain} may be the server's own domain: its names say no domain",
            ("the server's own domains are unknown (give --local-domain to decide)",),
        )
    if not policy.local_domains:
        return Decision(
            Verdict.POSSIBLE_RELAY,
            f"{attempt.domain} is not among the names the server gives itself, but a server takes mail for every "
            "domain it is MX for: a company's several, a provider's customers'",
            (f"whether the server receives mail for {attempt.domain} is unknown: --local-domain names the domains "
             "your servers receive mail for, probe --relay-test checks",),
        )  # fmt: skip
    if attempt.domain in relays.served_domains(policy):
        return Decision(
            Verdict.POSSIBLE_RELAY,
            f"{attempt.domain} is none of the --local-domain domains, but the server took mail for it from many "
            "clients sending from many domains: it may be MX for it, or an open relay abused by many senders",
            (f"the server is not MX for {attempt.domain} (a backup MX, a relay domain: add it to --local-domain)",),
        )
    if relays.names and not _names_one_of(relays.names, policy.local_domains):
        own = sorted({registered_domain(name) or name for name in relays.names})
        return Decision(
            Verdict.POSSIBLE_RELAY,
            f"the server names itself in {', '.join(own[:3])}, none of the --local-domain domains: it is not one of "
            f"their servers, and may be MX for {attempt.domain}",
            ("--local-domain speaks of the servers that name themselves in those domains (or give no name)",),
        )
    return None


def _unsure_destination(domain: str) -> tuple[str, str] | None:
    """A recipient domain the server may have kept for itself although it names no local domain: the rule saying
    why, and what the verdict assumes; None for an ordinary domain or a readable address literal."""
    if domain.startswith("["):
        if address_literal(domain) is not None:
            return None
        return (
            f"{domain} is no address as written (leading zeros, say, which some read as decimal and others as "
            "octal): the server may have read it as one of its own addresses",
            f"the server read {domain} as another host's address",
        )
    if "." in domain.strip("."):
        return None
    return (
        f"{domain} is a single label, no domain mail is routed to on the Internet: the server may take it for one of "
        "its own (completed with its domain, as Postfix's append_dot_mydomain does) or a local alias",
        f"the server sends mail for {domain} elsewhere instead of delivering it itself",
    )


def _names_one_of(names: Set[str], local_domains: Set[str]) -> bool:
    """Whether a server named ``names`` is one of the servers of ``local_domains``: a name in one of them, or in the
    same registered domain (``mx.corp.example`` for ``eu.corp.example``)."""
    organisations = {registered_domain(domain) or domain for domain in local_domains}
    return any(
        is_local(name, local_domains, frozenset()) or (registered_domain(name) or name) in organisations
        for name in names
    )


def _proxied(attempt: Attempt, who: str) -> Decision:
    """Rule 5 for a client through a proxy: the address the server relayed for is the proxy's, unseen here."""
    return Decision(
        Verdict.POSSIBLE_RELAY,
        f"client {who} had mail for {attempt.domain} accepted, which is not among the server's local domains",
        ("the proxy's outgoing address, unseen, may be in the server's trusted networks: the proxy is open",),
    )


def _who(attempt: Attempt) -> str:
    """The client as a verdict's rule names it: its address, and who named it or how it reached the server."""
    if attempt.proxy:
        return f"{attempt.client_ip} (through {attempt.proxy}, whose outgoing address the server saw)"
    return f"{attempt.client_ip} (named by the XCLIENT of {attempt.via})" if attempt.via else attempt.client_ip
