"""Read a Nessus v2 export (``.nessus``, ``NessusClientData_v2``): the mail- and NTLM-related plugins reported per
host and port, for ``compare --nessus`` and ``report --nessus`` to verify against packet and probe evidence.

The file is parsed with defusedxml (no DTD, no entity expansion, no external references); only ``ReportHost``
(its ``name`` and the ``host-ip`` of its ``HostProperties``) and ``ReportItem`` (``pluginID``, ``pluginName``,
``port``, ``svc_name``, ``protocol``, ``plugin_output``) are read. A plugin is recognised by its ID (:data:`PLUGINS`)
or, for IDs not listed, by its name (:data:`NAME_PATTERNS`); every other item is ignored.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from passive.core.errors import InputError

# A Nessus export of a large network runs to a few hundred megabytes; past this it is refused, not read.
MAX_NESSUS_BYTES = 512 * 1024 * 1024
# plugin_output kept per item (it is parsed for names and mechanisms, and cited); a real one is a few KiB.
MAX_OUTPUT = 16 * 1024
# Items kept per file: recognised plugins only, so even a huge scan yields a few per mail host.
MAX_ITEMS = 100_000


@dataclass(frozen=True)
class Plugin:
    """What a Nessus plugin claims, in leakscope's terms: the finding kind that verifies it and its protocol."""

    name: str
    check: str  # "ntlm-info", "auth-methods", "mail-service", "open-relay"
    protocol: str | None  # None: the item's service (svc_name, port) says
    id_source: str  # how the ID is known (docs/schema.md lists them)


PLUGINS: dict[int, Plugin] = {
    13926: Plugin("SMTP Host Information in NTLM SSP", "ntlm-info", "smtp", "tenable remediation KB page; issue"),
    16859: Plugin("POP3 Host Information in NTLM SSP", "ntlm-info", "pop3", "issue (not verified)"),
    36804: Plugin("SMTP Authentication Methods", "auth-methods", "smtp", "issue (not verified)"),
    34861: Plugin("SMTP Server Connection Check", "mail-service", "smtp", "issue (not verified)"),
    10874: Plugin("NTMail3 Open Mail Relaying", "open-relay", "smtp", "issue (not verified)"),
    10262: Plugin("MTA Open Mail Relaying Allowed", "open-relay", "smtp", "Nessus plugin 10262 (long standing)"),
}
# Plugins recognised by name when their ID is not in PLUGINS (IDs that could not be verified, newer plugins).
NAME_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:SMTP|POP3|IMAP|HTTP|Web)\b.*\bNTLM\b|\bNTLM\b.*\b(?:SMTP|POP3|IMAP|HTTP)\b", re.I), "ntlm-info"),
    (re.compile(r"\bopen (?:mail )?relay", re.I), "open-relay"),
    (re.compile(r"\bSMTP\b.*\bAuthentication Methods\b", re.I), "auth-methods"),
)
SERVICE_PROTOCOLS = {"smtp": "smtp", "pop3": "pop3", "pop": "pop3", "imap": "imap", "www": "http", "http": "http"}
PORT_PROTOCOLS = {25: "smtp", 465: "smtp", 587: "smtp", 2525: "smtp", 110: "pop3", 995: "pop3", 143: "imap",
                  993: "imap", 80: "http", 443: "http", 8080: "http"}  # fmt: skip


class NessusError(InputError):
    """The .nessus file cannot be read or is not a Nessus v2 export."""


@dataclass(frozen=True)
class NessusItem:
    """One recognised ReportItem of one ReportHost."""

    host: str  # ReportHost name (an address or a host name)
    ip: str | None  # HostProperties host-ip, or the name when it is an address
    port: int
    svc_name: str
    plugin_id: int
    plugin_name: str
    check: str
    protocol: str | None
    output: str


def _plugin(plugin_id: int, name: str) -> tuple[str, str | None] | None:
    known = PLUGINS.get(plugin_id)
    if known is not None:
        return known.check, known.protocol
    for pattern, check in NAME_PATTERNS:
        if pattern.search(name):
            words = {w.upper() for w in re.findall(r"[A-Za-z0-9]+", name)}
            named = next((p.lower() for p in ("SMTP", "POP3", "IMAP", "HTTP") if p in words), None)
            return check, named
    return None


def _host_ip(host: ET.Element) -> str | None:
    for tag in host.iter("tag"):
        if tag.get("name") == "host-ip" and tag.text:
            return tag.text.strip()
    name = (host.get("name") or "").strip()
    return name if re.fullmatch(r"[0-9.]+|[0-9A-Fa-f:]+", name) and any(c in name for c in ".:") else None


def _items(host: ET.Element) -> list[NessusItem]:
    name, ip = (host.get("name") or "").strip(), _host_ip(host)
    out = []
    for item in host.iter("ReportItem"):
        try:
            plugin_id, port = int(item.get("pluginID") or ""), int(item.get("port") or "0")
        except ValueError:
            continue
        plugin_name = (item.get("pluginName") or "")[:300]
        recognised = _plugin(plugin_id, plugin_name)
        if recognised is None:
            continue
        check, protocol = recognised
        svc = (item.get("svc_name") or "").strip().lower()
        protocol = protocol or SERVICE_PROTOCOLS.get(svc.rstrip("?")) or PORT_PROTOCOLS.get(port)
        output = (item.findtext("plugin_output") or "")[:MAX_OUTPUT]
        out.append(NessusItem(name, ip, port, svc, plugin_id, plugin_name, check, protocol, output))
    return out


def parse_nessus(data: bytes) -> list[NessusItem]:
    """The recognised plugins of a Nessus v2 export; :class:`NessusError` for anything else."""
    if len(data) > MAX_NESSUS_BYTES:
        raise NessusError(f"larger than {MAX_NESSUS_BYTES} bytes")
    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as error:
        raise NessusError(f"refused: {type(error).__name__} (a Nessus export has no DTD or entities)") from None
    except ET.ParseError as error:
        raise NessusError(f"not XML: {error}") from None
    if root.tag != "NessusClientData_v2":
        raise NessusError("not a Nessus v2 export (no <NessusClientData_v2>)")
    items: list[NessusItem] = []
    for host in root.iter("ReportHost"):
        for item in _items(host):
            if len(items) >= MAX_ITEMS:
                raise NessusError(f"more than {MAX_ITEMS} recognised plugin results")
            items.append(item)
    return items


def read_nessus(path: str | Path) -> list[NessusItem]:
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_NESSUS_BYTES + 1)
    except OSError as error:
        raise NessusError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return parse_nessus(data)
    except NessusError as error:
        raise NessusError(f"{path}: {error}") from None
