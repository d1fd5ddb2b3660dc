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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defusedxml import DefusedXmlException

from passive.core.errors import InputError
from passive.results.xmlstream import TooDeep, read_elements

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


def _address(name: str) -> str | None:
    """A ReportHost name that is an address (the export names hosts by address or by host name)."""
    return name if re.fullmatch(r"[0-9.]+|[0-9A-Fa-f:]+", name) and any(c in name for c in ".:") else None


# The elements the reader looks at; the others pass unseen.
_TAGS = frozenset({"ReportHost", "ReportItem", "tag", "plugin_output"})


@dataclass
class _Host:
    """The ``ReportHost`` being read: its name, its ``host-ip`` tag once seen, its recognised items so far."""

    name: str
    ip: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)


class _Reader:
    """One streaming read: a host's items wait for its end, where its ``host-ip`` is known whatever the order."""

    def __init__(self) -> None:
        self.items: list[NessusItem] = []
        self.host: _Host | None = None
        self.item: dict[str, Any] | None = None  # the open recognised ReportItem's fields

    def start(self, tag: str, attributes: dict[str, str], parent: str | None) -> None:
        if parent is None and tag != "NessusClientData_v2":
            raise NessusError("not a Nessus v2 export (no <NessusClientData_v2>)")
        if tag == "ReportHost":
            self.host = _Host((attributes.get("name") or "").strip())
        elif tag == "ReportItem" and self.host is not None:
            self.item = _item(attributes)

    def end(self, tag: str, attributes: dict[str, str], text: str, parent: str | None) -> None:
        host = self.host
        if host is None:
            return
        if tag == "tag" and host.ip is None and attributes.get("name") == "host-ip" and text:
            host.ip = text.strip()
        elif tag == "plugin_output" and self.item is not None and parent == "ReportItem":
            self.item.setdefault("output", text[:MAX_OUTPUT])  # the first, as findtext reads
        elif tag == "ReportItem" and self.item is not None:
            if len(self.items) + len(host.items) >= MAX_ITEMS:
                raise NessusError(f"more than {MAX_ITEMS} recognised plugin results")
            host.items.append(self.item)
            self.item = None
        elif tag == "ReportHost":
            ip = host.ip or _address(host.name)
            self.items += [NessusItem(host.name, ip, **{"output": "", **fields}) for fields in host.items]
            self.host = None


def _item(attributes: dict[str, str]) -> dict[str, Any] | None:
    """A ReportItem's fields (all but its output), or None when its plugin is not one of those read."""
    try:
        plugin_id, port = int(attributes.get("pluginID") or ""), int(attributes.get("port") or "0")
    except ValueError:
        return None
    plugin_name = (attributes.get("pluginName") or "")[:300]
    recognised = _plugin(plugin_id, plugin_name)
    if recognised is None:
        return None
    check, protocol = recognised
    svc = (attributes.get("svc_name") or "").strip().lower()
    protocol = protocol or SERVICE_PROTOCOLS.get(svc.rstrip("?")) or PORT_PROTOCOLS.get(port)
    return {"port": port, "svc_name": svc, "plugin_id": plugin_id, "plugin_name": plugin_name, "check": check,
            "protocol": protocol}  # fmt: skip


def parse_nessus(data: bytes) -> list[NessusItem]:
    """The recognised plugins of a Nessus v2 export; :class:`NessusError` for anything else."""
    if len(data) > MAX_NESSUS_BYTES:
        raise NessusError(f"larger than {MAX_NESSUS_BYTES} bytes")
    reader = _Reader()
    try:
        read_elements(data, reader, _TAGS, max_text=MAX_OUTPUT, forbid_dtd=True)
    except DefusedXmlException as error:
        raise NessusError(f"refused: {type(error).__name__} (a Nessus export has no DTD or entities)") from None
    except (ET.ParseError, TooDeep) as error:
        raise NessusError(f"not XML: {error}") from None
    return reader.items


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
