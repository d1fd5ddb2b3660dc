"""Findings as Elastic Common Schema (ECS 8) documents, one JSON line each, for SIEM ingestion (``--format ecs``).

The ECS fields say what any SIEM rule needs (when, who talked to whom, which user, how bad); every leakscope field
of the record, masked as in every other output, is kept under ``leakscope``. docs/schema.md lists the mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from passive.core.endpoints import split_endpoint
from passive.findings.kinds import kind_of, rank

ECS_VERSION = "8.11.0"
# ECS event.severity is numeric; leakscope's four levels spread over it.
SEVERITY_NUMBERS = {"info": 1, "low": 25, "medium": 50, "high": 75}
# Kinds whose findings are about logging in: ECS category "authentication" beside "network".
AUTHENTICATION_KINDS = frozenset({"ntlm-info", "cleartext-credentials", "auth-methods"})
# Kinds that are an inventory, not a risk: ECS kind "event" rather than "alert".
INVENTORY_KINDS = frozenset({"mail-service"})
# NTLM names a server gives away: ECS related.hosts.
HOST_FIELDS = ("netbios_computer", "dns_computer", "dns_domain", "dns_tree", "netbios_domain")


def _endpoint(value: Any) -> dict[str, Any]:
    if not isinstance(value, str) or not value:
        return {}
    host, port = split_endpoint(value)
    return {"ip": host, "port": port, "address": host}


def ecs_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The ECS document of one finding record (a summary record becomes an ``event.kind: metric`` document)."""
    if record.get("type") == "summary":
        return {"event": {"kind": "metric", "dataset": "leakscope.summary", "module": "leakscope"},
                "ecs": {"version": ECS_VERSION}, "leakscope": dict(record)}  # fmt: skip
    kind = kind_of(record.get("type"))
    name = str(record.get("type"))
    severity = str(record.get("severity"))
    users = [u for u in [record.get("user"), *(record.get("users") or [])] if isinstance(u, str) and u]
    client, server = _endpoint(record.get("client")), _endpoint(record.get("server"))
    clients = [split_endpoint(c)[0] for c in record.get("clients") or [] if isinstance(c, str)]
    hosts = sorted({str(record[f]) for f in HOST_FIELDS if record.get(f)})
    document: dict[str, Any] = {
        "@timestamp": record.get("last_seen") or record.get("first_seen"),
        "ecs": {"version": ECS_VERSION},
        "message": f"{kind.title_of(record) if kind else name}: {kind.summary(record) if kind else ''}".strip(),
        "event": {
            "kind": "event" if name in INVENTORY_KINDS or rank(severity) == 0 else "alert",
            "category": ["network", "authentication"] if name in AUTHENTICATION_KINDS else ["network"],
            "type": ["info"],
            "dataset": "leakscope.findings",
            "module": "leakscope",
            "id": record.get("id"),
            "severity": SEVERITY_NUMBERS.get(severity, 1),
            "start": record.get("first_seen"),
            "end": record.get("last_seen"),
            "count": record.get("count"),
        },
        "source": client,
        "destination": server,
        "network": {"transport": "tcp", "protocol": record.get("protocol")},
        "rule": {
            "id": name,
            "name": kind.title if kind else name,
            "category": "mail exposure",
            "reference": record.get("reference"),
            "ruleset": "leakscope",
        },
        "observer": {"vendor": "leakscope", "product": "leakscope", "type": record.get("source")},
        "related": {
            "ip": sorted({ip for ip in [client.get("ip"), server.get("ip"), *clients] if ip}),
            "user": sorted(set(users)),
            "hosts": hosts,
        },
        "leakscope": dict(record),
    }
    if users:
        document["user"] = {"name": users[0]}
        if isinstance(record.get("domain"), str) and record.get("domain"):
            document["user"]["domain"] = record["domain"]
    return {key: value for key, value in document.items() if value not in ({}, None)}
