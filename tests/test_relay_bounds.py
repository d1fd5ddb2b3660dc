"""The relay ledger is bounded whatever the traffic: in memory (servers kept, attempts kept, the text of each, the
names and MX domains learned) and in work (an attempt is judged alone unless what is local to its server changed,
which happens at most once per name or domain learned). Attempts it has no room to keep are still judged, and
counted."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from passive.analysis import relays as relay_module
from passive.analysis.detectors.base import Shared
from passive.analysis.detectors.relay import _attempted
from passive.analysis.relays import (
    MAX_LEDGER_ATTEMPTS,
    MAX_RELAY_SERVERS,
    MAX_RELAY_TEXT,
    Attempt,
    RelayLedger,
)
from passive.analysis.stats import RunStats
from passive.findings.model import EvidenceRecord, FindingSet, FindingType

LONG = 60_000  # characters of a hostile address or reply (an SMTP line may hold 64 KiB)


def _attempt(number: int, client: str = "203.0.113.9", size: int = 20) -> Attempt:
    domain = f"d{number}.example.org"
    evidence = EvidenceRecord("f.pcap", number, 1_700_000_000.0 + number, "client", f"RCPT TO:<x@{domain}>")
    return Attempt(
        client=f"{client}:40000",
        mail_from="s" * size + "@sender.example",
        rcpt_to="x" * size + "@" + domain,
        domain=domain,
        accepted=True,
        reply="250 " + "r" * size,
        time=evidence.timestamp,
        evidence=(evidence, evidence),
        file="f.pcap",
    )


def _shared() -> Shared:
    return Shared(FindingSet(), RunStats(), RelayLedger())


def _send(shared: Shared, server: str, attempt: Attempt, names: frozenset[str] = frozenset()) -> None:
    _attempted(None, shared, (server, "smtp", "passive", ()), names, attempt)


def test_the_ledger_holds_a_bounded_number_of_servers_and_attempts_whatever_it_is_sent() -> None:
    shared = _shared()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(MAX_LEDGER_ATTEMPTS + 2_000):  # one server, long lines, each attempt its own domain
            _send(shared, "192.0.2.25:25", _attempt(number, client=f"198.51.100.{number % 200}", size=LONG))
        for number in range(MAX_RELAY_SERVERS + 500):  # then many servers, one attempt each
            _send(shared, f"10.{number >> 8}.{number & 255}.1:25", _attempt(number))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    ledger = shared.relays
    assert len(ledger.servers) == MAX_RELAY_SERVERS
    assert ledger.kept <= MAX_LEDGER_ATTEMPTS
    anomalies = shared.stats.anomalies
    assert anomalies["relay_servers_untracked"] == 501  # the first server, then 1,023 more, were kept
    assert anomalies["relay_attempts_judged_alone"] > 0
    assert held < 120 * 1024 * 1024, held  # 12,000 attempts of 180 KB each would be 2 GB
    relay_findings = [f for f in shared.findings if f.type is FindingType.OPEN_RELAY]
    untracked = {f.server for f in relay_findings if f.server.startswith("10.")}
    assert len(untracked) == MAX_RELAY_SERVERS + 500  # every server judged, kept or not
    longest = max(len(f.fields["rcpt_to"]) for f in relay_findings)
    assert longest == MAX_RELAY_TEXT


def test_an_attempt_is_judged_alone_unless_what_is_local_to_its_server_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """4,000 attempts from many clients to many domains: each is counted once, and the server's findings are rebuilt
    only when it learns something (here: a domain it turns out to receive mail for, by the MX rule, and its name)."""
    calls: list[Any] = []
    count = relay_module.RelayLedger._count

    def counting(self: RelayLedger, *args: Any) -> None:
        calls.append(args)
        count(self, *args)

    monkeypatch.setattr(relay_module.RelayLedger, "_count", counting)
    shared = _shared()
    server = "192.0.2.25:25"
    for number in range(4_000):
        attempt = _attempt(number % 300, client=f"198.51.100.{number % 250}")
        _send(shared, server, attempt, frozenset({"mx.example.net"}) if number == 2_000 else frozenset())
    relay_findings = [f for f in shared.findings if f.type is FindingType.OPEN_RELAY]
    assert sum(f.count for f in relay_findings) == 4_000 - _local_after(shared, server)
    # Each attempt judged once, plus the rebuilds: rebuilding at every attempt would judge about 8 million.
    assert 4_000 <= len(calls) < 50_000, len(calls)


def _local_after(shared: Shared, server: str) -> int:
    """Attempts whose domain the server turned out to receive mail for (not judged as relaying)."""
    relays = shared.relays.servers[server, ()]
    local = relays.local_domains(shared.relays.policy)
    return sum(1 for a in relays.attempts if a.domain in local) + sum(
        count for key, count in relays.overflow.items() if key[1] in local
    )
