"""The one-line summary and the title of a finding record, per kind: what tables, the dashboard and the report show
of a finding in a line. The kinds' declarations (:mod:`passive.findings.kinds`) name them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def ntlm_summary(record: Mapping[str, Any]) -> str:
    host = record.get("dns_computer") or record.get("netbios_computer") or "?"
    domain = record.get("dns_domain") or record.get("netbios_domain")
    parts = [f"{host} ({domain})" if domain else str(host)]
    if record.get("os_release") or record.get("os_version"):
        parts.append(str(record.get("os_release") or record.get("os_version")))
    if record.get("users"):
        parts.append("users " + ", ".join(map(str, list(record["users"])[:3])))
    return "; ".join(parts)


def methods_summary(record: Mapping[str, Any]) -> str:
    exposed = record.get("cleartext_exposed") or []
    mechanisms = " ".join(map(str, record.get("mechanisms") or [])) or "no mechanism advertised"
    return mechanisms + (f" (without TLS: {' '.join(map(str, exposed))})" if exposed else "")


def credentials_summary(record: Mapping[str, Any]) -> str:
    attempts = [entry for entry in record.get("attempts") or [] if isinstance(entry, Mapping)]
    verdicts = record.get("outcome") or "no verdict"
    if len({entry.get("password_no") for entry in attempts}) > 1:
        verdicts = ", ".join(f"password {a.get('password_no')}: {a.get('outcome') or 'no verdict'}" for a in attempts)
    return f"{record.get('mechanism')} {record.get('user')} ({verdicts})"


def service_summary(record: Mapping[str, Any]) -> str:
    return str(record.get("software") or record.get("banner") or "")


def relay_summary(record: Mapping[str, Any]) -> str:
    verdict = record.get("verdict") or ("relays" if record.get("accepted") else "refused")
    return f"{verdict}: {record.get('mail_from')} -> {record.get('rcpt_to')}"


def methods_title(record: Mapping[str, Any]) -> str | None:
    return None if record.get("cleartext_exposed") else "Authentication mechanisms"


_RELAY_TITLES = {
    "possible-relay": "Possible open relay",
    "relays-for-internal-clients": "Relays for internal clients",
    "relays-for-trusted-network": "Relays for trusted networks",
    "refused": "Relay refused",
}


def relay_title(record: Mapping[str, Any]) -> str | None:
    verdict = record.get("verdict")
    if verdict is None:  # a record written before verdicts existed
        return None if record.get("accepted") is True else "Relay refused"
    return _RELAY_TITLES.get(str(verdict))
