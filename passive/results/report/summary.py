"""The first page (the verdict in a sentence, servers by severity, a table of servers, the five actions that remove
the most risk) and the groups a large network is read by (AD domain, subnet, software)."""

from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from passive.results.report import fixes
from passive.results.report.cards import ntlm_given
from passive.results.report.model import (
    ACTIONS,
    FIRST_PAGE_ROWS,
    SEVERITIES,
    Action,
    Group,
    ServerCard,
)

# What a finding weighs when ranking actions: one server with a password in clear outweighs many that only say
# their names, as the severities say.
WEIGHTS = {"high": 100, "medium": 10, "low": 3, "info": 0}
# Groups listed per grouping; the rest are summed in one row.
GROUPS_LISTED = 25
# Prefix lengths of the subnet grouping.
SUBNET_V4 = 24
SUBNET_V6 = 64
# Run summary counters that mean traffic was not read: a report of such runs says "nothing leaked" only of what
# could be read. The terminal tables name the same counters (tests/test_unread_verdicts.py compares the two lists).
UNREAD = (
    ("tls_sessions", "session(s) inside TLS"),
    ("gap_bytes", "byte(s) lost from the streams"),
    ("truncated_packets", "packet(s) cut short by the snap length"),
    ("ip_fragments", "IP fragment(s) not reassembled"),
    ("flows_evicted", "flow(s) evicted from a full flow table"),
    ("captures_failed", "capture(s) that could not be read"),
    ("decode_errors", "packet(s) that could not be decoded"),
    ("oversized_records", "record(s) over the size cap"),
    ("buffer_cap_hits", "out-of-order buffer(s) full"),
    ("flows_one_sided", "session(s) captured in one direction only"),
    ("flows_midstream", "session(s) picked up mid-stream"),
    ("findings_dropped", "finding(s) past the findings cap"),
    ("kernel_dropped", "packet(s) dropped by the kernel before analysis (live capture)"),
    ("interface_dropped", "packet(s) dropped by the interface before analysis (live capture)"),
)


def unread(summaries: list[dict[str, Any]]) -> str:
    """What the runs did not read, in words ("" when they read everything)."""
    totals = Counter[str]()
    for record in summaries:
        for name, _ in UNREAD:
            value = record.get(name)
            totals[name] += value if isinstance(value, int) and not isinstance(value, bool) else 0
    return ", ".join(f"{totals[name]:,} {words}" for name, words in UNREAD if totals[name] > 0)


def verdict(cards: list[ServerCard], summaries: list[dict[str, Any]] | None = None) -> tuple[str, str]:
    """The verdict in a sentence, as a headline and the rest: how many servers leak and the worst of what; without
    a leak, what the runs (``summaries``) could not read, if anything."""
    exposed = [c for c in cards if c.exposed]
    missed = unread(summaries or [])
    if missed and not exposed:
        seen = f"{len(cards)} mail server(s) were seen" if cards else "No mail traffic was found"
        return "No leak seen in what could be read.", (
            f"{seen} in the traffic that could be read, with no NTLM host information, credentials, clear-text "
            f"authentication or relaying exposed. Not read: {missed}; a leak there cannot be ruled out."
        )
    if not cards:
        return "Nothing leaked.", "No mail traffic was found in what was analyzed."
    if not exposed:
        return "Nothing leaked.", (
            f"{len(cards)} mail server(s) were seen; none exposed NTLM host information, credentials, clear-text "
            "authentication or relaying."
        )
    parts = []
    # NTLM: servers seen giving their names or build, apart from those only seen offering NTLM (or whose CHALLENGE
    # gave neither): the sentence says what the findings show.
    gave = [c for c in exposed if fixes.NTLM in c.issues and ntlm_given(c)]
    for count, words in (
        (sum(fixes.PASSWORDS in c.issues for c in exposed), "let passwords cross the network in clear text"),
        (sum(fixes.RELAY in c.issues for c in exposed), "relay mail for anyone"),
        (len(gave), "give their Active Directory names and Windows build to anyone who asks"),
        (sum(fixes.NTLM in c.issues for c in exposed) - len(gave), "offer NTLM before TLS"),
        (sum(fixes.CLEARTEXT in c.issues for c in exposed), "offer password logins before TLS"),
    ):
        if count:
            parts.append(f"{count} {words}")
    said = "; ".join(parts) if parts else "they relay for internal clients without authentication"
    return f"{len(exposed)} of {len(cards)} mail server(s) expose information:", f"{said}."


def server_counts(cards: list[ServerCard]) -> list[tuple[str, int]]:
    """Servers by their most severe finding."""
    counts = Counter(c.severity for c in cards)
    return [(s, counts.get(s, 0)) for s in SEVERITIES]


def actions(cards: list[ServerCard]) -> list[Action]:
    """The changes that remove the most risk: each setting weighed by the findings it removes, on every server
    whose card lists it. Servers whose banner names no software share one action per issue, naming the setting of
    each software that may be running."""
    found: dict[tuple[str, str], Action] = {}
    counted: set[tuple[str, str, str, str]] = set()
    listed: set[tuple[str, str, str]] = set()  # (owner, setting, server): not searched for in an action's list
    for card in cards:
        weights = _issue_weights(card)
        for fix in card.fixes:
            owner, setting, reference = fix.owner, fix.setting, fix.reference
            if card.software_note and owner not in fixes.GENERAL_OWNERS:
                alternatives = [x for x in card.fixes if x.issue == fix.issue and x.owner not in fixes.GENERAL_OWNERS]
                owner = " or ".join(dict.fromkeys(x.owner for x in alternatives)) + " (banner names no software)"
                setting = "; ".join(f"{x.owner}: {x.setting}" for x in alternatives)
                reference = ", ".join(dict.fromkeys(x.reference for x in alternatives if x.reference))
            action = found.setdefault((owner, setting), Action(owner, setting, reference, fix.finding, [], 0))
            if fix.finding not in action.removes.split(", "):
                action.removes += ", " + fix.finding
            if (owner, setting, card.server) not in listed:
                listed.add((owner, setting, card.server))
                action.servers.append(card.server)
            if (owner, setting, card.server, fix.issue) not in counted:
                counted.add((owner, setting, card.server, fix.issue))
                action.weight += weights.get(fix.issue, 0)
    ranked = sorted(found.values(), key=lambda a: (-a.weight, -len(a.servers), a.owner, a.setting))
    return [a for a in ranked if a.weight > 0][:ACTIONS]


def _issue_weights(card: ServerCard) -> dict[str, int]:
    """Weight of each issue on a server: the findings it removes, by severity."""
    weights: dict[str, int] = defaultdict(int)
    by_type: Counter[str] = Counter()
    for row in card.findings:
        by_type[row.type] = max(by_type[row.type], WEIGHTS[row.severity])
    weights[fixes.PASSWORDS] = by_type["cleartext-credentials"]
    weights[fixes.CLEARTEXT] = by_type["auth-methods"] + by_type["cleartext-credentials"] // 2
    weights[fixes.NTLM] = by_type["ntlm-info"] + (by_type["auth-methods"] if "NTLM" in card.cleartext_mechanisms else 0)
    weights[fixes.EXPOSURE] = by_type["ntlm-info"] // 2
    weights[fixes.RELAY] = by_type["open-relay"]
    return weights


def subnet(server: str) -> str:
    host = server.partition(" in ")[0].rpartition(":")[0].strip("[]")  # without an overlay's network
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "other"
    prefix = SUBNET_V4 if address.version == 4 else SUBNET_V6
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def groups(cards: list[ServerCard], key: Callable[[ServerCard], str], limit: int = GROUPS_LISTED) -> list[Group]:
    """Servers grouped by ``key``, most severe and largest first; past ``limit`` groups the rest in one row."""
    members: dict[str, list[ServerCard]] = defaultdict(list)
    for card in cards:
        members[key(card)].append(card)
    made = [_group(name, group) for name, group in members.items()]
    made.sort(key=lambda g: (SEVERITIES.index(g.severity), -g.exposed, -g.servers, g.name))
    if len(made) > limit:
        rest = [c for g in made[limit:] for c in members[g.name]]
        others = len(made) - limit
        made = [*made[:limit], _group(f"{others} other group{'s' if others > 1 else ''}", rest)]
    return made


def _group(name: str, cards: list[ServerCard]) -> Group:
    leaks: Counter[str] = Counter()
    for card in cards:
        for issue in card.issues:
            leaks[issue] += 1
    said = ", ".join(
        f"{_ISSUE_WORDS[issue]} on {count}"
        for issue, count in sorted(leaks.items(), key=lambda i: -i[1])
        if issue in _ISSUE_WORDS
    )
    return Group(
        name=name,
        servers=len(cards),
        exposed=sum(c.exposed for c in cards),
        leaks=said or "nothing",
        severity=min((c.severity for c in cards), key=SEVERITIES.index),
    )


_ISSUE_WORDS = {
    fixes.PASSWORDS: "passwords in clear",
    fixes.RELAY: "open relay",
    fixes.NTLM: "NTLM names",
    fixes.CLEARTEXT: "clear-text login",
}


def groupings(cards: list[ServerCard]) -> list[tuple[str, list[Group]]]:
    return [
        ("AD domain", groups(cards, lambda c: c.ad_domain or "no NTLM seen")),
        ("Subnet", groups(cards, lambda c: subnet(c.server))),
        ("Software", groups(cards, lambda c: c.software or "not named in the banner")),
    ]


def first_page(cards: list[ServerCard]) -> tuple[list[ServerCard], list[Group], str]:
    """The first page's table: every server while they fit on the page, else the servers grouped by AD domain (by
    subnet when fewer than half speak NTLM)."""
    if len(cards) <= FIRST_PAGE_ROWS:
        return cards, [], ""
    if sum(1 for c in cards if c.ad_domain) * 2 >= len(cards):
        return [], groups(cards, lambda c: c.ad_domain or "no NTLM seen", FIRST_PAGE_ROWS - 1), "AD domain"
    return [], groups(cards, lambda c: subnet(c.server), FIRST_PAGE_ROWS - 1), "subnet"
