"""Build the report model from finding records: an executive summary, one card per server, remediation per
finding, evidence, a passive/active comparison and a timeline."""

from __future__ import annotations

import ipaddress
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

from passive.findings.kinds import KINDS, display_order, kind_of
from passive.results.redaction import MASK, mask_client_line, mask_name
from passive.results.report import fields as f
from passive.results.report.charts import bar_chart, timeline
from passive.results.report.model import (
    LEAK_SEVERITIES,
    LISTED,
    SEVERITIES,
    Comparison,
    Credential,
    EvidenceRow,
    FindingRow,
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
    by_server: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in findings:
        by_server[str(f.text(record["server"]))].append(record)
    cards = [_card(server, group, redact) for server, group in by_server.items()]
    cards.sort(key=lambda c: (SEVERITIES.index(c.severity), server_order(c.server)))
    severity_totals = Counter(_severity(r) for r in findings)
    severity_counts = [(s, severity_totals.get(s, 0)) for s in SEVERITIES]
    leaks = [r for r in findings if _severity(r) in LEAK_SEVERITIES]
    return Report(
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
        timeline_chart=timeline(_timeline_points(leaks), order=server_order),
        nessus=_nessus_rows(nessus),
        nessus_totals=list((nessus or {}).get("summary", {}).items()),
    )


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


def server_order(server: str) -> tuple[int, bytes, int, str]:
    """Servers in address order (10.0.0.2 before 10.0.0.10), IPv4 before IPv6; anything else last, by name."""
    host, _, port = server.rpartition(":")
    try:
        address = ipaddress.ip_address(host.strip("[]"))
        return (address.version, address.packed, int(port), "")
    except ValueError:
        return (99, b"", 0, server)


def _severity(record: dict[str, Any]) -> str:
    severity = record.get("severity")
    return severity if severity in SEVERITIES else "info"


def _source(record: dict[str, Any]) -> str:
    return "active" if record.get("source") == "active" else "passive"


def _first(records: list[dict[str, Any]], name: str) -> Any:
    """A field's first non-empty value among records (passive records first: they are what was seen)."""
    for record in records:
        value = record.get(name)
        if value not in (None, "", []):
            return value
    return None


def _title(record: dict[str, Any]) -> str:
    kind = kind_of(record.get("type"))
    return kind.title_of(record) if kind is not None else str(f.text(record.get("type")))


def _card(server: str, records: list[dict[str, Any]], redact: bool) -> ServerCard:
    records = sorted(records, key=lambda r: (_source(r) != "passive", display_order(r["type"])))
    of_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        of_type[str(record["type"])].append(record)
    card = ServerCard(
        server=server,
        protocols=sorted({p for r in records if (p := f.text(r.get("protocol")))}),
        severity=min((_severity(r) for r in records), key=SEVERITIES.index),
        sources=sorted({_source(r) for r in records}),
    )
    service = of_type.get("mail-service", [])
    card.banner = f.text(_first(service, "banner"))
    card.software = f.text(_first(service, "software"))
    card.starttls_offered = f.flag(_first(service + of_type.get("auth-methods", []), "starttls_offered"))
    card.tls_used = f.flag(_first(service, "tls"))
    _ntlm_facts(card, of_type.get("ntlm-info", []), redact)
    methods = of_type.get("auth-methods", [])
    card.mechanisms = f.texts(_first(methods, "mechanisms"))
    card.cleartext_mechanisms = sorted({m for r in methods for m in f.texts(r.get("cleartext_exposed"))})
    after = _first(methods, "mechanisms_after_tls")
    card.mechanisms_after_tls = f.texts(after) if isinstance(after, list) else None
    card.credentials = [_credential(r, redact) for r in of_type.get("cleartext-credentials", [])]
    card.relay, card.relay_state = _relay(of_type.get("open-relay", []))
    for record in records:
        card.findings.append(
            FindingRow(
                type=str(record["type"]),
                title=_title(record),
                severity=_severity(record),
                source=_source(record),
                count=int(f.number(record.get("count")) or 0),
                first_seen=f.show_time(f.timestamp(record.get("first_seen"))),
                last_seen=f.show_time(f.timestamp(record.get("last_seen"))),
            )
        )
        for item in f.objects(record.get("evidence")):
            card.evidence.append(_evidence(record, item, redact))
        card.evidence_dropped += int(f.number(record.get("evidence_dropped")) or 0)
    card.findings.sort(key=lambda row: SEVERITIES.index(row.severity))
    return card


def _ntlm_facts(card: ServerCard, records: list[dict[str, Any]], redact: bool) -> None:
    if not records:
        return

    def value(name: str) -> str | None:
        return f.text(_first(records, name))

    computer = " / ".join(v for v in (value("netbios_computer"), value("dns_computer")) if v)
    domain = " / ".join(v for v in (value("netbios_domain"), value("dns_domain")) if v)
    build = value("os_version")
    release = value("os_release")
    server_time = f.timestamp(_first(records, "server_time"))
    skew = f.number(_first(records, "clock_skew_seconds"))
    facts = [
        ("Internal host name", computer),
        ("AD domain", domain),
        ("AD forest", value("dns_tree")),
        ("Target name", value("target_name")),
        ("Windows build", f"{build} ({release})" if build and release else build or release),
        ("Server clock", f.show_time(server_time, precise=True)),
        ("Clock skew", f.show_skew(skew)),
        ("NTLM version used", value("ntlm_version")),
        ("Client OS version", value("client_os_version")),
        ("Service name (SPN)", value("spn")),
        ("NTLM login outcome", value("outcome")),
    ]
    card.host = [(label, shown) for label, shown in facts if shown]
    users = {u for r in records for u in f.texts(r.get("users"))}
    for record in records:
        for detail in f.objects(record.get("details")):
            user, domain_name = f.text(detail.get("user")), f.text(detail.get("domain"))
            if user:
                users.add(f"{domain_name}\\{user}" if domain_name else user)
    if not users and (user := value("user")):
        users.add(f"{value('domain')}\\{user}" if value("domain") else user)
    card.users = sorted({mask_name(u) if redact else u for u in users})
    workstations = {w for r in records for w in f.texts(r.get("workstations"))}
    if not workstations and (workstation := value("workstation")):
        workstations.add(workstation)
    card.workstations = sorted(workstations)


def _credential(record: dict[str, Any], redact: bool) -> Credential:
    user = f.text(record.get("user"))
    secret = f.text(record.get("password"))
    if redact and secret:
        secret = MASK
    clients = f.texts(record.get("clients"))
    return Credential(
        mechanism=f.text(record.get("mechanism")),
        user=mask_name(user) if user and redact else user,
        secret=secret,
        secret_kind=f.text(record.get("secret_kind")),
        outcome=f.text(record.get("outcome")),
        count=int(f.number(record.get("count")) or 0),
        clients=", ".join(clients[:5]) + (f" and {len(clients) - 5} more" if len(clients) > 5 else "") or None,
    )


# How a card states each relay verdict (the most severe one the server has), and the style it is shown in.
_RELAY_WORDS = {
    "open-relay": ("Open relay", "open"),
    "possible-relay": ("Possible open relay", "open"),
    "relays-for-internal-clients": ("Relays for internal clients", "internal"),
    "relays-for-trusted-network": ("Relays for its trusted networks", "internal"),
}


def _relay(records: list[dict[str, Any]]) -> tuple[str, str]:
    if not records:
        return "No relay attempt seen.", "unknown"
    record = min(records, key=lambda r: SEVERITIES.index(_severity(r)))
    verdict = f.text(record.get("verdict")) or ("open-relay" if record.get("accepted") is True else "refused")
    if verdict not in _RELAY_WORDS:
        return (
            f"Refused to relay to {f.text(record.get('rcpt_to')) or '?'} "
            f"(reply: {f.text(record.get('reply')) or '?'}).",
            "refused",
        )
    words, state = _RELAY_WORDS[verdict]
    rule = f.text(record.get("rule"))
    return (
        f"{words}: accepted mail from {f.text(record.get('mail_from')) or '?'} to "
        f"{f.text(record.get('rcpt_to')) or '?'} without authentication "
        f"(reply: {f.text(record.get('reply')) or '?'})" + (f"; {rule}." if rule else "."),
        state,
    )


def _evidence(record: dict[str, Any], item: dict[str, Any], redact: bool) -> EvidenceRow:
    side = f.text(item.get("side"))
    line = f.text(item.get("line"))
    if redact and line and side != "server":
        line = f.text(mask_client_line(str(item.get("line")), mask_name))
    frame = f.number(item.get("frame"))
    return EvidenceRow(
        finding=_title(record),
        file=f.text(item.get("file")),
        frame=str(int(frame)) if frame is not None else None,
        time=f.show_time(f.timestamp(item.get("time")), precise=True),
        side=side,
        line=line,
    )


def _learned(cards: list[ServerCard]) -> list[str]:
    """What an outsider learns, in sentences, one per kind of leak."""
    learned: list[str] = []
    ntlm = [c for c in cards if c.host]
    for card in ntlm[:LISTED]:
        facts = dict(card.host)
        parts = [f"internal host name {facts['Internal host name']}" if "Internal host name" in facts else None]
        parts.append(f"AD domain {facts['AD domain']}" if "AD domain" in facts else None)
        parts.append(f"forest {facts['AD forest']}" if "AD forest" in facts else None)
        parts.append(f"Windows build {facts['Windows build']}" if "Windows build" in facts else None)
        parts.append(f"clock skew {facts['Clock skew']}" if "Clock skew" in facts else None)
        learned.append(f"{card.server} answers AUTH NTLM with its " + ", ".join(p for p in parts if p) + ".")
    if len(ntlm) > LISTED:
        learned.append(f"{len(ntlm) - LISTED} more server(s) answer AUTH NTLM with the same kind of information.")
    users = sorted({u for c in cards for u in c.users})
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


def _scope(summaries: list[dict[str, Any]], findings: list[dict[str, Any]]) -> list[tuple[str, str]]:
    totals: Counter[str] = Counter()
    sessions: Counter[str] = Counter()
    for summary in summaries:
        for name in ("captures", "captures_failed", "packets_read", "flows", "tls_sessions"):
            totals[name] += int(f.number(summary.get(name)) or 0)
        per_protocol = summary.get("sessions")
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
    sources = sorted({_source(r) for r in findings})
    if sources:
        scope.append(("Sources", " and ".join(sources)))
    return scope


def _remediation(findings: list[dict[str, Any]]) -> list[RemediationItem]:
    items: dict[str, RemediationItem] = {}
    for record in findings:
        kind = str(record["type"])
        if kind != "mail-service" and _severity(record) not in LEAK_SEVERITIES:
            continue  # a refused relay, mechanisms that need no fix: nothing to do
        item = items.setdefault(kind, RemediationItem(kind, KINDS[kind].title, "info", [], [], []))
        severity = _severity(record)
        if SEVERITIES.index(severity) < SEVERITIES.index(item.severity):
            item.severity = severity
        server = str(f.text(record["server"]))
        if server not in item.servers:
            item.servers.append(server)
        for name, target in (("remediation", item.remediation), ("verification", item.verification)):
            shown = f.text(record.get(name), 2000)
            if shown and shown not in target and len(target) < 3:
                target.append(shown)
    ordered = sorted(items.values(), key=lambda i: (SEVERITIES.index(i.severity), display_order(i.type)))
    return [i for i in ordered if i.severity in LEAK_SEVERITIES or i.type == "mail-service"]


def _comparisons(by_server: dict[str, list[dict[str, Any]]]) -> list[Comparison]:
    comparisons = []
    for server, records in sorted(by_server.items(), key=lambda item: server_order(item[0])):
        passive = [r for r in records if _source(r) == "passive"]
        active = [r for r in records if _source(r) == "active"]
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
            seen = f.text(_first([r for r in passive if r.get("type") == kind], name))
            probed = f.text(_first([r for r in active if r.get("type") == kind], name))
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


def _timeline_points(leaks: list[dict[str, Any]]) -> list[tuple[str, datetime, str, str]]:
    points = []
    for record in leaks:
        for moment in _leak_times(record):
            points.append((str(f.text(record["server"])), moment, _severity(record), _title(record)))
    return points


def _timeline_entries(leaks: list[dict[str, Any]]) -> list[TimelineEntry]:
    entries = []
    for record in leaks:
        first = f.timestamp(record.get("first_seen"))
        entries.append(
            TimelineEntry(
                time=f.show_time(first) or "time unknown",
                server=str(f.text(record["server"])),
                title=_title(record),
                severity=_severity(record),
            )
        )
    return sorted(entries, key=lambda e: (e.time, server_order(e.server)))
