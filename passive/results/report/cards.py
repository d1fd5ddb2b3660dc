"""One card per server: its facts, what leaks (in words, from the same facts its tables show), the settings that
fix it on the software it runs, how to verify, its findings and its evidence.

Records reach this module already masked (build.py passes each through the run's ``Redactor``)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from passive.findings.kinds import KINDS, display_order, kind_of
from passive.results.report import fields as f
from passive.results.report import fixes
from passive.results.report.model import (
    LEAK_SEVERITIES,
    SEVERITIES,
    CardFix,
    Credential,
    EvidenceRow,
    FindingRow,
    ServerCard,
)

# Evidence lines a card shows (the findings keep up to 8 per finding); the rest are counted.
CARD_EVIDENCE = 4
# Characters of an evidence line a card shows: enough for any command or reply, not a page of base64 (an NTLM
# CHALLENGE line is 300 and more); the findings file keeps the line.
EVIDENCE_LINE = 160
# Clear-text credential mechanisms, as the mechanism that carried them would be named in a capability list.
_MECHANISM_OFFERED = {"USER-PASS": "USER", "IMAP-LOGIN": "LOGIN-COMMAND"}


def severity(record: dict[str, Any]) -> str:
    value = record.get("severity")
    return value if value in SEVERITIES else "info"


def source(record: dict[str, Any]) -> str:
    return "active" if record.get("source") == "active" else "passive"


def first(records: list[dict[str, Any]], name: str) -> Any:
    """A field's first non-empty value among records (passive records first: they are what was seen)."""
    for record in records:
        value = record.get(name)
        if value not in (None, "", []):
            return value
    return None


def title(record: dict[str, Any]) -> str:
    kind = kind_of(record.get("type"))
    return kind.title_of(record) if kind is not None else str(f.text(record.get("type")))


def build_card(server: str, records: list[dict[str, Any]]) -> ServerCard:
    records = sorted(records, key=lambda r: (source(r) != "passive", display_order(r["type"])))
    of_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        of_type[str(record["type"])].append(record)
    card = ServerCard(
        server=server,
        protocols=sorted({p for r in records if (p := f.text(r.get("protocol")))}),
        severity=min((severity(r) for r in records), key=SEVERITIES.index),
        sources=sorted({source(r) for r in records}),
    )
    service = of_type.get("mail-service", [])
    card.banner = f.text(first(service, "banner"))
    card.banner_host = f.text(first(service, "banner_host"))
    card.software = f.text(first(service, "software"))
    card.starttls_offered = f.flag(first(service + of_type.get("auth-methods", []), "starttls_offered"))
    card.tls_used = f.flag(first(service, "tls"))
    _ntlm_facts(card, of_type.get("ntlm-info", []))
    methods = of_type.get("auth-methods", [])
    card.mechanisms = f.texts(first(methods, "mechanisms"))
    card.cleartext_mechanisms = sorted({m for r in methods for m in f.texts(r.get("cleartext_exposed"))})
    after = first(methods, "mechanisms_after_tls")
    card.mechanisms_after_tls = f.texts(after) if isinstance(after, list) else None
    card.credentials = [_credential(r) for r in of_type.get("cleartext-credentials", [])]
    card.users = sorted(set(card.users) | {c.user for c in card.credentials if c.user})
    card.relay, card.relay_state = _relay(of_type.get("open-relay", []))
    _findings(card, records)
    card.leaks, card.issues = _leaks(card, of_type)
    card.authentication = _authentication(card, any(source(r) == "passive" for r in of_type.get("ntlm-info", [])))
    _fixes(card, of_type)
    return card


def _authentication(card: ServerCard, ntlm: bool) -> list[str]:
    """What the card says about authentication without TLS: offered (capabilities), used (credentials) and NTLM,
    from the same lists its tables show, so the words cannot contradict them."""
    said = []
    offered, used = card.cleartext_mechanisms, used_in_clear(card)
    if offered:
        more = set(card.mechanisms) - set(offered)
        every = f" (all offered: {', '.join(card.mechanisms)})" if more else ""
        said.append(f"Offered before TLS: {', '.join(offered)}{every}.")
    if used:
        said.append(f"Used without TLS: {', '.join(used)}; the credentials below crossed in clear text.")
    if ntlm and card.host:
        said.append("NTLM was exchanged without TLS: the host facts were readable on the wire.")
    if not said and card.mechanisms:
        said.append(f"Offered before TLS: {', '.join(card.mechanisms)}; none sends a password in clear.")
    if not said:
        said.append("No authentication without TLS was seen.")
    return said


def _findings(card: ServerCard, records: list[dict[str, Any]]) -> None:
    firsts = []
    for record in records:
        first_seen = f.timestamp(record.get("first_seen"))
        firsts += [first_seen] if first_seen else []
        card.findings.append(
            FindingRow(
                type=str(record["type"]),
                title=title(record),
                severity=severity(record),
                source=source(record),
                count=int(f.number(record.get("count")) or 0),
                first_seen=f.show_time(first_seen),
                last_seen=f.show_time(f.timestamp(record.get("last_seen"))),
            )
        )
        for item in f.objects(record.get("evidence")):
            if len(card.evidence) < CARD_EVIDENCE:
                card.evidence.append(_evidence(record, item))
            else:
                card.evidence_dropped += 1
        card.evidence_dropped += int(f.number(record.get("evidence_dropped")) or 0)
    card.findings.sort(key=lambda row: SEVERITIES.index(row.severity))
    card.first_seen = f.show_time(min(firsts)) if firsts else None


def _ntlm_facts(card: ServerCard, records: list[dict[str, Any]]) -> None:
    if not records:
        return

    def value(name: str) -> str | None:
        return f.text(first(records, name))

    computer = " / ".join(v for v in (value("netbios_computer"), value("dns_computer")) if v)
    domain = " / ".join(v for v in (value("netbios_domain"), value("dns_domain")) if v)
    build = value("os_version")
    release = value("os_release")
    facts = [
        ("Internal host name", computer),
        ("AD domain", domain),
        ("AD forest", value("dns_tree")),
        ("Target name", value("target_name")),
        ("Windows build", f"{build} ({release})" if build and release else build or release),
        ("Server clock", f.show_time(f.timestamp(first(records, "server_time")), precise=True)),
        ("Clock skew", f.show_skew(f.number(first(records, "clock_skew_seconds")))),
        ("NTLM version used", value("ntlm_version")),
        ("Client OS version", value("client_os_version")),
        ("Service name (SPN)", value("spn")),
        ("NTLM login outcome", value("outcome")),
    ]
    card.host = [(label, shown) for label, shown in facts if shown]
    card.name = value("dns_computer") or value("netbios_computer")
    card.ad_domain = value("dns_domain") or value("netbios_domain")
    users = {u for r in records for u in f.texts(r.get("users"))}
    for record in records:
        for detail in f.objects(record.get("details")):
            user, domain_name = f.text(detail.get("user")), f.text(detail.get("domain"))
            if user:
                users.add(f"{domain_name}\\{user}" if domain_name else user)
    if not users and (user := value("user")):
        users.add(f"{value('domain')}\\{user}" if value("domain") else user)
    card.users = card.ntlm_users = sorted(users)
    workstations = {w for r in records for w in f.texts(r.get("workstations"))}
    if not workstations and (workstation := value("workstation")):
        workstations.add(workstation)
    card.workstations = sorted(workstations)


def _credential(record: dict[str, Any]) -> Credential:
    clients = f.texts(record.get("clients"))
    return Credential(
        mechanism=f.text(record.get("mechanism")),
        user=f.text(record.get("user")),
        secret=f.text(record.get("password")),
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
    record = min(records, key=lambda r: SEVERITIES.index(severity(r)))
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


def _evidence(record: dict[str, Any], item: dict[str, Any]) -> EvidenceRow:
    frame = f.number(item.get("frame"))
    return EvidenceRow(
        finding=title(record),
        file=f.text(item.get("file")),
        frame=str(int(frame)) if frame is not None else None,
        time=f.show_time(f.timestamp(item.get("time")), precise=True),
        side=f.text(item.get("side")),
        line=f.text(item.get("line"), EVIDENCE_LINE),
    )


def used_in_clear(card: ServerCard) -> list[str]:
    """Mechanisms a client used without TLS, as the capability list would name them (credentials seen)."""
    used = {c.mechanism for c in card.credentials if c.mechanism}
    return sorted(_MECHANISM_OFFERED.get(m, m) for m in used)


def _leaks(card: ServerCard, of_type: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[str]]:
    """What leaks, in short phrases, and the issues (fixes.*) to fix; from the facts the card's tables show."""
    leaks: list[str] = []
    issues: list[str] = []
    if card.credentials:
        accounts = len({c.user for c in card.credentials})
        mechanisms = ", ".join(sorted({c.mechanism or "?" for c in card.credentials}))
        leaks.append(f"passwords of {accounts} account(s) in clear text ({mechanisms})")
        issues += [fixes.PASSWORDS, fixes.CLEARTEXT]
    relay = [r for r in of_type.get("open-relay", []) if severity(r) in ("high", "medium")]
    if relay:
        leaks.append("relays mail for anyone" if card.relay_state == "open" else "may relay mail for anyone")
        issues.append(fixes.RELAY)
    elif card.relay_state == "internal":
        leaks.append("relays for internal clients without authentication")
    if card.banner_host:
        leaks.append(f"its internal host name ({card.banner_host}) in its greeting")
        issues.append(fixes.EXPOSURE)
    ntlm = _ntlm_leak(card, of_type)
    if ntlm:
        leaks.append(ntlm)
        issues += [fixes.NTLM, fixes.EXPOSURE]
    offered = [m for m in card.cleartext_mechanisms if m != "NTLM" and m not in used_in_clear(card)]
    if offered:
        leaks.append(f"offers {', '.join(offered)} before TLS")
        issues.append(fixes.CLEARTEXT)
    if "NTLM" in card.cleartext_mechanisms and not ntlm:
        leaks.append("offers NTLM before TLS")
        issues.append(fixes.NTLM)
    return leaks, list(dict.fromkeys(issues))


# The NTLM facts of a card that the server gave (the others are what a client said of itself, or the outcome).
_SERVER_NAMES = frozenset({"Internal host name", "AD domain", "AD forest", "Target name"})
_SERVER_BUILD = frozenset({"Windows build"})


def ntlm_given(card: ServerCard) -> list[str]:
    """What the server's NTLM CHALLENGE gave of what the report names: "AD names", "Windows build"."""
    shown = {label for label, _ in card.host}
    return [part for part, labels in (("AD names", _SERVER_NAMES), ("Windows build", _SERVER_BUILD)) if shown & labels]


def _ntlm_leak(card: ServerCard, of_type: dict[str, list[dict[str, Any]]]) -> str | None:
    """What NTLM gave away, in a phrase, only as far as the findings show it: a CHALLENGE without names or version
    gives neither, and one that no client answered leaks no user name nor response."""
    given = ntlm_given(card)
    users = _ntlm_users(of_type)
    if not given:
        return "user names with crackable responses over NTLM" if users else None
    return " and ".join(given) + " over NTLM" + (", user names with crackable responses" if users else "")


def _ntlm_users(of_type: dict[str, list[dict[str, Any]]]) -> bool:
    """A client answered a CHALLENGE with an AUTHENTICATE naming its user (a response a password can be cracked
    from)."""
    records = of_type.get("ntlm-info", [])
    return any(
        f.texts(r.get("users"))
        or f.text(r.get("user"))
        or any(f.text(d.get("user")) for d in f.objects(r.get("details")))
        for r in records
    )


def _fixes(card: ServerCard, of_type: dict[str, list[dict[str, Any]]]) -> None:
    """The settings for this server's issues on the software it runs, and how to verify each finding's fix."""
    family = fixes.family(card.software)
    families = (family,) if family else fixes.guesses_for(card.protocols)
    if card.issues and not family:
        named = f"{card.software}, which this report has no settings for" if card.software else "no software"
        card.software_note = (
            f"The banner names {named}; the settings are given for {' and '.join(families)}: "
            "apply those of the software this server runs."
        )
    settings = [s for name in families for s in fixes.settings_for(name, card.protocols)] + list(fixes.GENERAL)
    for issue in card.issues:
        for setting in settings:
            if setting.issue == issue:
                said = (setting.owner, setting.setting, setting.reference, setting.note)
                card.fixes.append(CardFix(issue, fixes.ISSUE_TITLES[issue], *said))
    for kind in sorted(of_type, key=display_order):
        leaking = [r for r in of_type[kind] if severity(r) in LEAK_SEVERITIES]
        declaration = kind_of(kind)
        if leaking and declaration is not None and kind != "mail-service":
            card.verification.append((KINDS[declaration.type].title, declaration.verification))
