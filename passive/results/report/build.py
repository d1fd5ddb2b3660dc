"""Build the report model from finding records: the first page (verdict, servers, actions, inputs), one card per
server (or, past ``CARDS_UP_TO`` servers, tables grouped by AD domain, subnet and software), remediation per kind of
finding, a passive/active comparison and a timeline.

Every record is passed through the run's one ``Redactor`` before anything reads it: it learns the users, mailboxes
and secrets of all the records first, so a name masked in a credential is masked in every banner, reply, evidence
line and chart label too.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from passive.core.endpoints import server_name
from passive.findings.kinds import display_order, kind_of
from passive.results.redaction import MASK, Redactor, mask_name
from passive.results.report import fields as f
from passive.results.report import summary
from passive.results.report.cards import build_card, first, severity, source, title
from passive.results.report.charts import bar_chart, timeline
from passive.results.report.model import (
    LEAK_SEVERITIES,
    LISTED,
    SEVERITIES,
    Comparison,
    InputFile,
    NessusRow,
    RemediationItem,
    Report,
    ServerCard,
    TimelineEntry,
    listing,
)


def build_report(
    records: list[dict[str, Any]],
    summaries: list[dict[str, Any]] | None = None,
    title: str = "Mail traffic exposure report",
    redact: bool = True,
    generated: datetime | None = None,
    nessus: dict[str, Any] | None = None,
    inputs: list[InputFile] | None = None,
) -> Report:
    """The report model for finding records (summary records may be mixed in or passed apart); ``nessus`` is the
    verification document of :func:`passive.results.nessus_verify.verify`, shown as its own section."""
    summaries = list(summaries or [])
    findings: list[dict[str, Any]] = []
    for record in records:
        if not isinstance(record, dict):
            continue
        if record.get("type") == "summary":
            summaries.append(record)
        elif kind_of(record.get("type")) is not None and f.text(record.get("server")):
            findings.append(record)
    findings = redacted(findings, redact)
    by_server: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in findings:
        by_server[server_label(record)].append(record)
    cards = [build_card(server, group) for server, group in by_server.items()]
    cards.sort(key=lambda c: (SEVERITIES.index(c.severity), server_order(c.server)))
    severity_counts = _counts(Counter(severity(r) for r in findings))
    leaks = [r for r in findings if severity(r) in LEAK_SEVERITIES]
    rows, groups, grouping = summary.first_page(cards)
    report = Report(
        title=f.text(title, 200) or "Mail traffic exposure report",
        generated=f.show_time(generated or datetime.now(UTC)) or "",
        redacted=redact,
        servers_seen=len(cards),
        servers_exposed=sum(c.exposed for c in cards),
        severity_counts=severity_counts,
        learned=_learned(cards),
        scope=_scope(summaries, findings),
        cards=cards,
        remediation=_remediation(findings),
        comparisons=_comparisons(by_server),
        timeline_entries=_timeline_entries(leaks),
        severity_chart=bar_chart(severity_counts),
        nessus=_nessus_rows(nessus),
        nessus_totals=list((nessus or {}).get("summary", {}).items()),
        timeline_chart=None,
        verdict=summary.verdict(cards, summaries),
        window=_window(findings),
        server_counts=summary.server_counts(cards),
        first_page_rows=rows,
        first_page_groups=groups,
        first_page_grouping=grouping,
        actions=summary.actions(cards),
        inputs=list(inputs or []),
    )
    if report.compact:
        report.groupings = summary.groupings(cards)
    report.timeline_chart = timeline(_timeline_points(leaks, cards, report.compact), order=_row_order(report))
    return report


def redacted(findings: list[dict[str, Any]], redact: bool) -> list[dict[str, Any]]:
    """The records as the report may show them: one ``Redactor`` that knows every name and secret they hold."""
    redactor = Redactor(show_secrets=not redact, name_mask=distinct_masks())
    if not redact:
        return findings
    for record in findings:
        redactor.learn_record(record, _secret_fields(record))
        for secret in _secrets(record):
            for form in base64_forms(secret):
                redactor.learn(form)
    return [_whole_tokens(redactor.record(record, _secret_fields(record))) for record in findings]


def distinct_masks() -> Callable[[str], str]:
    """:func:`mask_name` for one report, but a name that masks as another did gets a mask of its own ("annie" as
    "a***e#2" after "alice"): the report counts accounts and NTLM users by the names it shows, and alice and annie
    were one account. The same name keeps its mask."""
    masks: dict[str, str] = {}
    taken: Counter[str] = Counter()

    def mask(name: str) -> str:
        if name not in masks:
            shown = mask_name(name)
            taken[shown] += 1
            masks[name] = shown if taken[shown] == 1 else f"{shown}#{taken[shown]}"
        return masks[name]

    return mask


# A mask with base64 characters glued to it: what is left of a token a secret's base64 form was masked in (the
# characters around the form encode its first and last bytes with what surrounds it).
_BASE64_AROUND_MASK = re.compile("[A-Za-z0-9+/]*" + re.escape(MASK) + "[A-Za-z0-9+/]*=*")


def _whole_tokens(record: dict[str, Any]) -> dict[str, Any]:
    """The record with each evidence line's masked base64 token masked whole."""
    for item in f.objects(record.get("evidence")):
        if isinstance(item.get("line"), str) and MASK in item["line"]:
            item["line"] = _BASE64_AROUND_MASK.sub(MASK, item["line"])
    return record


def _secrets(record: dict[str, Any]) -> list[str]:
    """The secrets a record shows (a findings file written with ``--show-secrets``): its secret fields' values and
    its attempts' passwords."""
    fields = [record.get(name) for name in _secret_fields(record)]
    attempts = [a.get("password") for a in f.objects(record.get("attempts"))]
    return [value for value in (*fields, *attempts) if isinstance(value, str) and value != MASK]


def base64_forms(secret: str) -> list[str]:
    """What base64 shows of ``secret`` wherever it stands in what was encoded, at each of its three alignments: the
    characters that encode its bytes alone. A server echoing a client's SASL response (PLAIN, LOGIN, XOAUTH2, a
    Basic token, with any user or authorization identity around the password) shows one of them, which a findings
    file written with ``--show-secrets`` does not hold as such: the report learns them from the password."""
    data = secret.encode("utf-8", "surrogatepass")
    forms = []
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode()
        start, end = (4 if offset else 0), 4 * ((offset + len(data)) // 3)
        forms.append(encoded[start:end])
    return [form for form in forms if len(form) >= MIN_BASE64_FORM]


# The shortest base64 form of a secret learned: one group of four characters, three of the password's bytes. Those of
# a 6 or 7 byte password are that short at two of the three alignments (8 let "\0bob\0Xq7#pz" be echoed whole); as
# MIN_SCRUBBED, four characters is what free text is searched for. An empty form (a password of one or two bytes,
# or of four or five at some alignments) is none.
MIN_BASE64_FORM = 4


def _secret_fields(record: dict[str, Any]) -> tuple[str, ...]:
    kind = kind_of(record.get("type"))
    return kind.secret_fields if kind is not None else ()


def _counts(totals: Counter[str]) -> list[tuple[str, int]]:
    return [(s, totals.get(s, 0)) for s in SEVERITIES]


def _window(findings: list[dict[str, Any]]) -> str | None:
    """From the first to the last moment a finding was seen (the capture window as far as mail goes)."""
    moments = [f.timestamp(r.get(name)) for r in findings for name in ("first_seen", "last_seen")]
    known = [m for m in moments if m is not None]
    if not known:
        return None
    start, end = min(known), max(known)
    days = (end - start).total_seconds() / 86_400
    length = f"{days:.0f} days" if days >= 2 else f.show_skew((end - start).total_seconds()).lstrip("+") or "0 s"
    return f"{f.show_time(start)} to {f.show_time(end)} ({length})"


def _nessus_rows(document: dict[str, Any] | None) -> list[NessusRow]:
    rows = []
    for record in (document or {}).get("records", []):
        evidence = ", ".join(
            f"{f.text(e.get('file'))} frame {e.get('frame')}" if e.get("source") == "passive" else "probe"
            for e in record.get("evidence", [])
        )
        server = f.text(record.get("server") or record.get("host")) or "?"
        plugin = f"{record.get('plugin_id')} {f.text(record.get('plugin_name'), 120) or ''}".strip()
        rows.append(NessusRow(server, plugin, str(record.get("verdict")), f.text(record.get("reason")) or "", evidence))
    return rows


def server_label(record: dict[str, Any]) -> str:
    """A finding's server as the report names it: its address, with the virtual network of the overlay it was seen
    in (``10.0.0.5:25 in vxlan-vni:42``): tenants reusing one address are servers apart."""
    return server_name(str(f.text(record["server"])), f.text(record.get("network")))


def server_order(server: str) -> tuple[int, bytes, int, str]:
    """Servers in address order (10.0.0.2 before 10.0.0.10), IPv4 before IPv6; anything else last, by name."""
    address_part, _, network = server.partition(" in ")
    host, _, port = address_part.rpartition(":")
    try:
        address = ipaddress.ip_address(host.strip("[]"))
        return (address.version, address.packed, int(port), network)
    except ValueError:
        return (99, b"", 0, server)


_LEARNED_FACTS = (
    ("Internal host name", "internal host name"),
    ("AD domain", "AD domain"),
    ("AD forest", "forest"),
    ("Windows build", "Windows build"),
    ("Clock skew", "clock skew"),
)


def _ntlm_parts(card: ServerCard) -> list[str]:
    """What the server's CHALLENGE told of it, as parts of a sentence (the card's other NTLM facts are the client's)."""
    facts = dict(card.host)
    return [f"{words} {facts[label]}" for label, words in _LEARNED_FACTS if label in facts]


def _learned(cards: list[ServerCard]) -> list[str]:
    """What an outsider learns, in sentences, one per kind of leak."""
    learned: list[str] = []
    # Servers whose CHALLENGE gave something: one without names, version or time gave nothing to list.
    ntlm = [(card, parts) for card in cards if (parts := _ntlm_parts(card))]
    for card, parts in ntlm[:LISTED]:
        learned.append(f"{card.server} answers AUTH NTLM with its {', '.join(parts)}.")
    if len(ntlm) > LISTED:
        learned.append(f"{len(ntlm) - LISTED} more server(s) answer AUTH NTLM with the same kind of information.")
    users = sorted({u for c in cards for u in c.ntlm_users})  # not the credentials' users: they sent no NTLM
    workstations = sorted({w for c in cards for w in c.workstations})
    if users or workstations:
        learned.append(
            f"Clients sent {len(users)} user name(s) and {len(workstations)} workstation name(s) in NTLM, "
            "with a NetNTLM response that can be cracked offline."
        )
    credentials = [(c.server, cred) for c in cards for cred in c.credentials]
    if credentials:
        mechanisms = sorted({cred.mechanism or "?" for _, cred in credentials})
        servers = sorted({server for server, _ in credentials})
        learned.append(
            f"{len(credentials)} credential(s) ({', '.join(mechanisms)}) crossed the network in clear text "
            f"to {listing(servers)}: anyone on the path has them."
        )
    relays = [c.server for c in cards if c.relay_state == "open"]
    if relays:
        learned.append(f"{listing(relays)} relay(s) mail for anyone: spam and phishing can be sent through it.")
    offering = [c for c in cards if c.cleartext_mechanisms]
    if offering:
        offered = "; ".join(f"{c.server}: {', '.join(c.cleartext_mechanisms)}" for c in offering[:LISTED])
        if len(offering) > LISTED:
            offered += f"; and {len(offering) - LISTED} more server(s)"
        learned.append(f"Mechanisms offered before TLS, so passwords or NTLM exchanges cross in clear: {offered}.")
    software = sorted({c.software for c in cards if c.software})
    if software and learned:
        learned.append(f"Banners name the mail software: {listing(software)}.")
    return learned


_SCOPE_COUNTS = (
    "captures",
    "captures_failed",
    "packets_read",
    "flows",
    "tls_sessions",
    "kernel_dropped",
    "interface_dropped",
    "flows_with_gaps",
    "flows_one_sided",
    "flows_midstream",
)


def _scope(summaries: list[dict[str, Any]], findings: list[dict[str, Any]]) -> list[tuple[str, str]]:
    totals: Counter[str] = Counter()
    sessions: Counter[str] = Counter()
    for record in summaries:
        for name in _SCOPE_COUNTS:
            totals[name] += int(f.number(record.get(name)) or 0)
        per_protocol = record.get("sessions")
        if isinstance(per_protocol, dict):
            for protocol, count in list(per_protocol.items())[:10]:
                sessions[str(f.text(protocol))] += int(f.number(count) or 0)
    scope = [("Findings", str(len(findings)))]
    if summaries:
        scope += [
            ("Captures analyzed", str(totals["captures"])),
            ("Packets read", str(totals["packets_read"])),
            ("Mail sessions", ", ".join(f"{p} {n}" for p, n in sorted(sessions.items())) or "0"),
            ("Sessions in TLS (not readable)", str(totals["tls_sessions"])),
        ]
        if totals["captures_failed"]:
            scope.append(("Captures that could not be read", str(totals["captures_failed"])))
        dropped = totals["kernel_dropped"] + totals["interface_dropped"]
        if dropped:  # a live capture that could not keep up: its view is incomplete, and says by how much
            scope.append(("Packets dropped before analysis (live capture)", str(dropped)))
        if totals["flows_with_gaps"]:
            scope.append(("Connections with bytes missing", str(totals["flows_with_gaps"])))
        if totals["flows_one_sided"]:  # what the other side sent (credentials, a challenge) is not in the capture
            scope.append(("Sessions captured in one direction only", str(totals["flows_one_sided"])))
        if totals["flows_midstream"]:  # what they said before the capture began (a login) is not in it
            scope.append(("Sessions picked up mid-stream", str(totals["flows_midstream"])))
    sources = sorted({source(r) for r in findings})
    if sources:
        scope.append(("Sources", " and ".join(sources)))
    return scope


def _remediation(findings: list[dict[str, Any]]) -> list[RemediationItem]:
    """Per kind of finding: what to do and how to verify, as the kind's declaration says, and the servers."""
    items: dict[str, RemediationItem] = {}
    listed: dict[str, set[str]] = {}  # each item's servers as a set: 20 000 servers searched in a list took minutes
    for record in findings:
        kind = kind_of(record["type"])
        if kind is None or (kind.type != "mail-service" and severity(record) not in LEAK_SEVERITIES):
            continue  # a refused relay, mechanisms that need no fix: nothing to do
        said = ([kind.remediation], [kind.verification])
        item = items.setdefault(str(kind.type), RemediationItem(str(kind.type), kind.title, "info", [], *said))
        if SEVERITIES.index(severity(record)) < SEVERITIES.index(item.severity):
            item.severity = severity(record)
        server = server_label(record)
        if server not in (servers := listed.setdefault(item.type, set())):
            servers.add(server)
            item.servers.append(server)
    ordered = sorted(items.values(), key=lambda i: (SEVERITIES.index(i.severity), display_order(i.type)))
    return [i for i in ordered if i.severity in LEAK_SEVERITIES or i.type == "mail-service"]


def _comparisons(by_server: dict[str, list[dict[str, Any]]]) -> list[Comparison]:
    comparisons = []
    for server, records in sorted(by_server.items(), key=lambda item: server_order(item[0])):
        passive = [r for r in records if source(r) == "passive"]
        active = [r for r in records if source(r) == "active"]
        if not passive or not active:
            continue
        rows = []
        for label, kind, name in (
            ("Banner", "mail-service", "banner"),
            ("STARTTLS offered", "mail-service", "starttls_offered"),
            ("Mechanisms before TLS", "auth-methods", "mechanisms"),
            ("Mechanisms after TLS", "auth-methods", "mechanisms_after_tls"),
            ("Internal host name", "ntlm-info", "dns_computer"),
            ("NetBIOS name", "ntlm-info", "netbios_computer"),
            ("AD domain", "ntlm-info", "dns_domain"),
            ("AD forest", "ntlm-info", "dns_tree"),
            ("Windows build", "ntlm-info", "os_version"),
            ("Relay", "open-relay", "accepted"),
        ):
            seen = f.text(first([r for r in passive if r.get("type") == kind], name))
            probed = f.text(first([r for r in active if r.get("type") == kind], name))
            if label == "Relay":
                seen = {"yes": "open", "no": "refused"}.get(seen or "", seen)
                probed = {"yes": "open", "no": "refused"}.get(probed or "", probed)
            if seen is None and probed is None:
                continue
            if seen is None or probed is None:
                verdict = "only " + ("probe" if seen is None else "traffic")
            else:
                verdict = "same" if seen == probed else "differs"
            rows.append((label, seen or "—", probed or "—", verdict))
        comparisons.append(Comparison(server, rows))
    return comparisons


def _leak_times(record: dict[str, Any]) -> list[datetime]:
    times = [f.timestamp(e.get("time")) for e in f.objects(record.get("evidence"))]
    times += [f.timestamp(d.get("time")) for d in f.objects(record.get("details"))]
    times += [f.timestamp(record.get("first_seen")), f.timestamp(record.get("last_seen"))]
    return sorted({t for t in times if t is not None})


def _timeline_points(
    leaks: list[dict[str, Any]], cards: list[ServerCard], compact: bool
) -> list[tuple[str, datetime, str, str]]:
    """A point per time a leak was seen, on the row of its server (of its AD domain, else subnet, past
    ``CARDS_UP_TO`` servers: 2,000 rows would be a poster)."""
    row_of = {c.server: c.server for c in cards}
    if compact:
        row_of = {c.server: c.ad_domain or summary.subnet(c.server) for c in cards}
    points = []
    for record in leaks:
        row = row_of.get(server_label(record), "?")
        for moment in _leak_times(record):
            points.append((row, moment, severity(record), title(record)))
    return points


def _row_order(report: Report) -> Any:
    if not report.compact:
        return server_order
    rank = {c.ad_domain or summary.subnet(c.server): SEVERITIES.index(c.severity) for c in reversed(report.cards)}
    return lambda row: (rank.get(row, len(SEVERITIES)), row)


def _timeline_entries(leaks: list[dict[str, Any]]) -> list[TimelineEntry]:
    entries = []
    for record in leaks:
        first = f.timestamp(record.get("first_seen"))
        entries.append(
            TimelineEntry(
                time=f.show_time(first) or "time unknown",
                server=server_label(record),
                title=title(record),
                severity=severity(record),
            )
        )
    return sorted(entries, key=lambda e: (e.time, server_order(e.server)))
