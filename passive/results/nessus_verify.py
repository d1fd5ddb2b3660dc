"""Verify a Nessus scan with packet and probe evidence: for each recognised plugin on each host and port, is what
Nessus reported **confirmed** (leakscope saw it too, with the file and frame or the probe that shows it),
**refuted** (a probe asked and was told otherwise: what was seen instead) or **not observed** (nothing decides it).

Only the active probe refutes: a capture without an NTLM exchange, a relay attempt or an AUTH listing shows what
clients did, not what the server would do. Nessus scans an address from its own network: a server seen at that
address only inside an overlay (a finding with a ``network``) may be another tenant's machine, and decides nothing.
``docs/schema.md`` documents the records.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from passive.core.endpoints import endpoint
from passive.findings.model import SCHEMA_VERSION
from passive.results.nessus import NessusItem

CONFIRMED, REFUTED, NOT_OBSERVED = "confirmed", "refuted", "not-observed"
VERDICTS = (CONFIRMED, REFUTED, NOT_OBSERVED)
# Evidence entries cited per verdict.
MAX_EVIDENCE = 4
# Nessus' plugin_output names (lower case, letters only) and the ntlm-info fields they are.
NESSUS_NTLM_NAMES = {
    "targetname": "target_name",
    "netbiosdomainname": "netbios_domain",
    "netbioscomputername": "netbios_computer",
    "dnsdomainname": "dns_domain",
    "dnscomputername": "dns_computer",
    "dnstreename": "dns_tree",
    "productversion": "os_version",
    "osversion": "os_version",
}
_OUTPUT_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z ()_-]{2,40}?)\s*:\s*(\S.*?)\s*$")
_CHALLENGE_FIELDS = ("target_name", "netbios_computer", "dns_computer", "netbios_domain")

Records = dict[str, list[dict[str, Any]]]  # server "ip:port" -> finding records


def output_names(output: str) -> dict[str, str]:
    """The NTLM names a plugin_output lists (``NetBIOS Computer Name: EXCH19``)."""
    names: dict[str, str] = {}
    for line in output.splitlines()[:200]:
        match = _OUTPUT_LINE.match(line)
        if match:
            key = re.sub(r"[^a-z]", "", match.group(1).lower())
            if key in NESSUS_NTLM_NAMES:
                names.setdefault(NESSUS_NTLM_NAMES[key], match.group(2))
    return names


def _evidence(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for record in records:
        if record.get("source") == "active":
            out.append({"source": "active", "probe": record.get("server"), "time": record.get("last_seen")})
            continue
        for item in record.get("evidence") or []:
            if isinstance(item, dict):
                out.append({"source": "passive", "file": item.get("file"), "frame": item.get("frame"),
                            "line": item.get("line")})  # fmt: skip
                break
    return out[:MAX_EVIDENCE]


def _of(records: list[dict[str, Any]], kind: str, protocol: str | None) -> list[dict[str, Any]]:
    return [r for r in records if r.get("type") == kind and (protocol is None or r.get("protocol") == protocol)]


Verdict = tuple[str, str, list[dict[str, Any]]]  # verdict, reason, evidence


def _ntlm(item: NessusItem, records: list[dict[str, Any]], probe: dict[str, Any] | None) -> Verdict:
    found = [r for r in _of(records, "ntlm-info", item.protocol) if any(r.get(f) for f in _CHALLENGE_FIELDS)]
    if found:
        names = ", ".join(str(found[0].get(f)) for f in ("netbios_computer", "dns_domain") if found[0].get(f))
        return CONFIRMED, f"an NTLM CHALLENGE was seen ({names or found[0].get('target_name')})", _evidence(found)
    if probe is not None and probe.get("status") == "ok" and probe.get("ntlm") in ("refused", "no-challenge"):
        reply = probe.get("ntlm_reply") or ""
        return REFUTED, f"the probe asked for NTLM and got no challenge ({probe['ntlm']}: {reply})".strip(), []
    return NOT_OBSERVED, "no NTLM exchange seen; run 'leakscope probe' on the service to decide", []


def _methods(item: NessusItem, records: list[dict[str, Any]], probe: dict[str, Any] | None) -> Verdict:
    found = [r for r in _of(records, "auth-methods", item.protocol) if r.get("mechanisms")]
    if found:
        mechanisms = " ".join(map(str, found[0].get("mechanisms") or []))
        return CONFIRMED, f"mechanisms advertised: {mechanisms}", _evidence(found)
    listed = [r for r in _of(records, "auth-methods", item.protocol) if r.get("source") == "active"]
    if listed or (probe is not None and probe.get("status") == "ok"):
        after = listed[0].get("mechanisms_after_tls") if listed else None
        seen = f"; inside TLS: {' '.join(after)}" if after else ""
        return REFUTED, f"the probe read the capabilities: no mechanism offered in clear text{seen}", _evidence(listed)
    return NOT_OBSERVED, "no capability listing of this service seen", []


def _service(item: NessusItem, records: list[dict[str, Any]], probe: dict[str, Any] | None) -> Verdict:
    found = _of(records, "mail-service", item.protocol)
    if found:
        what = found[0].get("banner") or ("TLS from the first byte" if found[0].get("tls") else "a session")
        return CONFIRMED, f"the service answered: {what}", _evidence(found)
    if probe is not None and probe.get("status") != "ok" and probe.get("stage") in ("connect", "greeting"):
        return REFUTED, f"the probe could not talk to it: {probe.get('error')}", []
    return NOT_OBSERVED, "no session with this service seen", []


def _relay(item: NessusItem, records: list[dict[str, Any]], probe: dict[str, Any] | None) -> Verdict:
    relays = _of(records, "open-relay", "smtp")
    accepted = [r for r in relays if r.get("accepted")]
    relayed = [r for r in accepted if r.get("verdict") == "open-relay"]
    if relayed:
        return CONFIRMED, "a foreign recipient was accepted from outside the trusted networks", _evidence(relayed)
    tested = [
        r for r in _of(records, "mail-service", "smtp") if isinstance(r.get("relay_test"), dict)
    ]  # fmt: skip
    if tested:
        test = tested[0]["relay_test"]
        tried, taken = test.get("variants_tried"), test.get("variants_accepted")
        if taken:  # the probe chose the destination: accepted, it was relayed for the probe, whatever the verdict
            return CONFIRMED, f"the probe's relay test: {taken} of {tried} variants accepted", _evidence(tested)
        return REFUTED, f"the probe's relay test: {tried} variants tried, none accepted", _evidence(tested)
    if accepted:  # for a domain the server may receive mail for, or for a client it may trust: not decisive
        verdicts = ", ".join(sorted({str(r.get("verdict")) for r in accepted}))
        reason = f"recipients the server may take for its own or its clients' were accepted ({verdicts}), which "
        return NOT_OBSERVED, reason + "shows no relaying for anyone; run 'leakscope probe --relay-test' to decide", []
    if relays:  # what clients tried was refused: the variants Nessus tried may still pass
        reason = "the server refused the foreign recipients clients sent in the traffic seen, which does not rule out "
        return NOT_OBSERVED, reason + "the variants Nessus tried; run 'leakscope probe --relay-test' to decide", []
    return NOT_OBSERVED, "no relay attempt seen; run 'leakscope probe --relay-test' to decide", []


CHECKS: dict[str, Callable[[NessusItem, list[dict[str, Any]], dict[str, Any] | None], Verdict]] = {
    "ntlm-info": _ntlm,
    "auth-methods": _methods,
    "mail-service": _service,
    "open-relay": _relay,
}


def _values(item: NessusItem, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For NTLM plugins: each name Nessus printed beside leakscope's value of it."""
    if item.check != "ntlm-info":
        return {}
    ours = next((r for r in _of(records, "ntlm-info", item.protocol) if any(r.get(f) for f in _CHALLENGE_FIELDS)), {})
    values = {}
    for name, theirs in output_names(item.output).items():
        mine = ours.get(name) if ours else None
        agree = None if not ours else str(mine or "").casefold() == theirs.casefold()
        values[name] = {"nessus": theirs, "leakscope": mine, "agree": agree}
    return values


def verify(
    items: list[NessusItem], records: list[dict[str, Any]], probes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The verification document: one record per recognised plugin result, and counts per verdict."""
    by_server: Records = defaultdict(list)
    overlays: dict[str, set[str]] = defaultdict(set)  # server -> overlay networks it was seen in
    for record in records:
        if isinstance(record, dict) and isinstance(record.get("server"), str):
            network = record.get("network")
            if network:  # a tenant's server reusing the address, maybe not the machine Nessus scanned
                overlays[record["server"]].add(str(network))
            else:
                by_server[record["server"]].append(record)
    probe_by_server = {p.get("server"): p for p in probes or [] if isinstance(p, dict)}
    out: list[dict[str, Any]] = []
    for item in items:
        server = endpoint(item.ip, item.port) if item.ip else None
        found = by_server.get(server, []) if server else []
        probe = probe_by_server.get(server) if server else None
        verdict, reason, evidence = CHECKS[item.check](item, found, probe)
        if verdict == NOT_OBSERVED and server in overlays:
            networks = ", ".join(sorted(overlays[server])[:MAX_EVIDENCE])
            where = "also" if found else "only"
            reason += (
                f"; the address was seen {where} inside overlay networks ({networks}), whose tenants reuse addresses"
            )
        out.append(
            {
                "type": "nessus-verification",
                "schema_version": SCHEMA_VERSION,
                "host": item.host,
                "server": server,
                "port": item.port,
                "protocol": item.protocol,
                "plugin_id": item.plugin_id,
                "plugin_name": item.plugin_name,
                "finding": item.check,
                "verdict": verdict,
                "reason": reason,
                "evidence": evidence,
                "values": _values(item, found),
            }
        )
    totals = Counter(record["verdict"] for record in out)
    return {"records": out, "summary": {verdict: totals.get(verdict, 0) for verdict in VERDICTS}}
