"""Compare what the wire showed (passive), what a server tells anyone who asks (active) and, optionally, what nmap's
NSE scripts reported: per server, per field, each source's value and whether they agree, differ, or only one has it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from passive.core.endpoints import split_endpoint
from passive.findings.kinds import KINDS, NTLM_INFO, OPEN_RELAY
from passive.findings.model import SCHEMA_VERSION
from passive.results.nmap_xml import NmapService

SOURCES = ("passive", "active", "nmap")
# The fields compared, per finding type (declared ``compared`` in the kinds); other fields describe one session
# (times, clients) or one challenge (its clock and flags), not the server.
COMPARED: dict[str, tuple[str, ...]] = {str(kind.type): kind.compared for kind in KINDS.values() if kind.compared}
# Lists compared as sets: the order a server lists mechanisms in is no leak.
SET_FIELDS = {"mechanisms", "mechanisms_after_tls"}
# Fields where null is itself a fact (the challenge carried no such name), not a gap in what a source knows.
NULL_IS_A_VALUE = set(NTLM_INFO.compared)


# A server: its endpoint, and the overlay network it was seen in (a finding's ``network``; None outside overlays).
# Tenants reuse addresses, so one endpoint in two networks is two servers; a probe reaches an address, and compares
# with the server seen outside any overlay.
ServerId = tuple[str, str | None]
# Per server: per finding type: field -> value.
ServerFields = dict[ServerId, dict[str, dict[str, Any]]]


@dataclass
class SourceData:
    name: str
    servers: ServerFields = field(default_factory=dict)
    protocols: dict[ServerId, str] = field(default_factory=dict)


def from_records(name: str, records: list[dict[str, Any]]) -> SourceData:
    """Findings records (as ``analyze``/``probe`` write them) reduced to the compared fields."""
    source = SourceData(name)
    for record in records:
        kind, endpoint, network = record.get("type"), record.get("server"), record.get("network")
        if not isinstance(kind, str) or kind not in COMPARED or not isinstance(endpoint, str):
            continue
        server = (endpoint, network if isinstance(network, str) and network else None)
        if isinstance(record.get("protocol"), str):
            source.protocols.setdefault(server, record["protocol"])
        fields = source.servers.setdefault(server, {}).setdefault(kind, {})
        if kind == OPEN_RELAY.type:
            # One finding per verdict: the server relays when any attempt was accepted.
            fields["accepted"] = bool(fields.get("accepted")) or bool(record.get("accepted"))
            continue
        for name in COMPARED[kind]:
            if name in record:
                fields[name] = record[name]
    return source


def from_nmap(services: list[NmapService]) -> SourceData:
    source = SourceData("nmap")
    for service in services:
        server = (service.server, None)
        if service.protocol:
            source.protocols.setdefault(server, service.protocol)
        for kind, fields in service.fields.items():
            target = source.servers.setdefault(server, {}).setdefault(kind, {})
            target.update({name: value for name, value in fields.items() if name in COMPARED.get(kind, ())})
    return source


def _normal(name: str, value: Any) -> Any:
    if name in SET_FIELDS and isinstance(value, list):
        return sorted({str(item).upper() for item in value})
    return value


def compare(sources: list[SourceData]) -> dict[str, Any]:
    """The comparison document: ``servers[].fields[]`` with ``values`` per source and a ``status``."""
    names = [source.name for source in sources]
    servers = sorted({server for source in sources for server in source.servers}, key=_server_key)
    totals: Counter[str] = Counter()
    out: list[dict[str, Any]] = []
    for server in servers:
        rows: list[dict[str, Any]] = []
        for kind, field_names in COMPARED.items():
            for name in field_names:
                values: dict[str, Any] = {}
                for source in sources:
                    fields = source.servers.get(server, {}).get(kind)
                    if fields is None or name not in fields:
                        continue
                    if fields[name] is None and name not in NULL_IS_A_VALUE:
                        continue
                    values[source.name] = fields[name]
                if not values:
                    continue
                status = _status(name, values)
                totals[status] += 1
                rows.append({"finding": kind, "field": name, "values": values, "status": status})
        protocol = next((s.protocols[server] for s in sources if server in s.protocols), None)
        endpoint, network = server
        entry = {"server": endpoint, "protocol": protocol, "fields": rows}
        out.append(entry if network is None else {**entry, "network": network})
    return {
        "type": "comparison",
        "schema_version": SCHEMA_VERSION,
        "sources": names,
        "servers": out,
        "summary": dict(totals),
    }


def _status(name: str, values: dict[str, Any]) -> str:
    if len(values) == 1:
        return f"only-{next(iter(values))}"
    normal = [json.dumps(_normal(name, value), sort_keys=True, default=str) for value in values.values()]
    return "agree" if len(set(normal)) == 1 else "differ"


def _server_key(server: ServerId) -> tuple[str, int, str]:
    return (*split_endpoint(server[0]), server[1] or "")
