"""JSON records (docs/schema.md) from the domain objects, built at output time: findings, session events and the
summary line. Every string that comes from the network passes through the run's :class:`Redactor` here."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from typing import Any

from dissectors import events as ev
from dissectors import ntlmssp
from passive.core.times import iso_time as _iso_time
from passive.findings.kinds import KINDS
from passive.findings.model import SCHEMA_VERSION, EvidenceRecord, Finding
from passive.results.fingerprint import kind_fingerprint
from passive.results.redaction import MASK, Redactor

__all__ = ["MASK", "event_record", "evidence_record", "finding_record", "summary_record"]

# Capture times written as ISO 8601 remembered: a finding's first and last seen, its evidence and details repeat
# the same ones (on a 100 MB all-mail capture, 38 k of the 79 k times written were repeats).
ISO_TIMES_REMEMBERED = 1 << 16
iso_time = functools.lru_cache(maxsize=ISO_TIMES_REMEMBERED)(_iso_time)

# Fields of a decoded NTLM AUTHENTICATE that are the crackable response itself.
_NTLM_SECRET_FIELDS = ("lm_response", "nt_response")


def evidence_record(evidence: EvidenceRecord, redactor: Redactor) -> dict[str, Any]:
    record = {
        "file": evidence.file,
        "frame": evidence.frame,
        "time": iso_time(evidence.timestamp),
        "side": evidence.side,
        "line": evidence.line if evidence.described else redactor.line(evidence.line, evidence.side),
    }
    if evidence.first_frame is not None:
        record["first_frame"] = evidence.first_frame
    return record


def finding_record(finding: Finding, show_secrets: bool = False, *, redactor: Redactor | None = None) -> dict[str, Any]:
    """The schema record of a finding; secrets masked unless ``show_secrets`` (or the redactor says otherwise)."""
    redactor = redactor if redactor is not None else Redactor(show_secrets)
    kind = KINDS[finding.type]
    record: dict[str, Any] = {
        "type": str(finding.type),
        "schema_version": SCHEMA_VERSION,
        "source": finding.source,
        "protocol": finding.protocol,
        "server": finding.server,
    }
    if finding.network:
        record["network"] = finding.network
    record["severity"] = str(finding.severity)
    record["reference"] = kind.reference(finding.protocol)
    record.update(redactor.value(finding.fields))
    # Assigned one by one, as ``update`` would: a kind's field of the same name keeps its place.
    record["client"] = finding.last_client
    record["clients"] = list(finding.clients)
    record["count"] = finding.count
    record["first_seen"] = iso_time(finding.first_seen)
    record["last_seen"] = iso_time(finding.last_seen)
    record["details"] = [_detail(detail, redactor) for detail in finding.details]
    record["details_dropped"] = finding.details_dropped
    record["evidence"] = [evidence_record(e, redactor) for e in finding.evidence]
    record["evidence_dropped"] = finding.evidence_dropped
    record["remediation"] = kind.remediation
    record["verification"] = kind.verification
    if not redactor.show_secrets:
        for name in kind.secret_fields:
            if record.get(name):
                record[name] = MASK
    record["id"] = kind_fingerprint(kind, record)
    return record


def _detail(detail: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """A per-occurrence detail: its capture time in ISO 8601 UTC like every other time of the schema."""
    shown = redactor.value(detail)
    if "time" in shown and not isinstance(shown["time"], str):
        shown["time"] = iso_time(shown["time"])
    return shown


def summary_record(counters: dict[str, Any], findings: Iterable[Finding]) -> dict[str, Any]:
    by_type = Counter(str(f.type) for f in findings)
    return {"type": "summary", "schema_version": SCHEMA_VERSION, "findings": dict(by_type), **counters}


def event_record(event: ev.Event, redactor: Redactor) -> dict[str, Any]:
    """A session event as JSON-ready fields (NTLM messages decoded to the schema, bytes as hex), masked."""
    side = str(event.side)
    hide = not redactor.show_secrets
    result: dict[str, Any] = {
        "event": type(event).__name__,
        "side": side,
        "frame": event.evidence.frame,
        "time": iso_time(event.evidence.timestamp),
        "line": event.evidence.line if event.evidence.described else redactor.line(event.evidence.line, side),
    }
    for name, value in vars(event).items():
        if name in ("side", "evidence"):
            continue
        if name == "ntlm" and value is not None:
            value = value.to_dict()
            if hide and isinstance(event.ntlm, ntlmssp.AuthenticateMessage):  # type: ignore[attr-defined]
                value.update({field: MASK for field in _NTLM_SECRET_FIELDS if value.get(field)})
        elif hide and name in ("password", "carrier") and value:
            value = MASK
        elif hide and name == "data" and value and event.side is ev.Side.CLIENT:
            value = MASK  # a client's SASL step: a password, a token, a NetNTLM response
        elif isinstance(value, bytes):
            value = value.hex()
        result[name] = redactor.value(value)
    return result
