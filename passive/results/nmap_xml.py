"""Read nmap ``-oX`` output of the mail NSE scripts into the fields leakscope's findings use.

Scripts understood: ``smtp-ntlm-info``, ``pop3-ntlm-info``, ``imap-ntlm-info``, ``http-ntlm-info`` (the CHALLENGE's
names and version),
``smtp-commands`` (EHLO keywords, hence the AUTH mechanisms and STARTTLS), ``smtp-open-relay`` (relays or not) and
``pop3-capabilities`` (SASL mechanisms, USER, STLS). Everything else in the file is ignored. The XML is parsed by
defusedxml: no DTD, no entity expansion, no external reference.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defusedxml import DefusedXmlException

from passive.core.endpoints import endpoint
from passive.core.errors import InputError
from passive.findings.model import MAX_FIELD_TEXT
from passive.results.xmlstream import TooDeep, read_elements

# nmap XML of a few thousand hosts is a few megabytes; anything far larger is not what this reads.
MAX_XML_BYTES = 64 * 1024 * 1024
# Mechanisms kept from one script's output, as the passive detector keeps per server: a server offers a handful, and
# a list of 50 000 (330 KB of XML) took 12 s when each name was compared with those kept before it.
MAX_MECHANISMS = 64
# Ports with results of the scripts read, per file: one per mail service scanned, a few thousand in a large scan.
# Each is held until the file is read (about 1 KB); past this the file is refused.
MAX_SERVICES = 100_000
# Longest mechanism name kept: SASL names are at most 20 characters (RFC 4422), as the passive detector bounds them.
MAX_MECHANISM_NAME = 64

NTLM_SCRIPTS = {
    "smtp-ntlm-info": "smtp",
    "pop3-ntlm-info": "pop3",
    "imap-ntlm-info": "imap",
    "http-ntlm-info": "http",
}
NTLM_KEYS = {
    "Target_Name": "target_name",
    "NetBIOS_Domain_Name": "netbios_domain",
    "NetBIOS_Computer_Name": "netbios_computer",
    "DNS_Domain_Name": "dns_domain",
    "DNS_Computer_Name": "dns_computer",
    "DNS_Tree_Name": "dns_tree",
    "Product_Version": "os_version",
}
_RELAY_COUNT = re.compile(r"open relay \((\d+)/(\d+) tests\)")
_POP3_SASL = re.compile(r"SASL\(([^)]*)\)")


class NmapXmlError(InputError):
    """The nmap XML file cannot be read or parsed."""


@dataclass
class NmapService:
    """What nmap's scripts said about one ``ip:port``, as finding fields grouped by finding type."""

    server: str
    protocol: str | None = None
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, kind: str, name: str, value: Any) -> None:
        self.fields.setdefault(kind, {})[name] = value


@dataclass
class _Script:
    """One ``<script>`` being read: its id, its text output and the NTLM names among its ``<elem>`` children."""

    id: str
    output: str
    elems: dict[str, str] = field(default_factory=dict)
    structured: bool = False  # any <elem> child at all: newer nmap lists the names there


def _ntlm(service: NmapService, script: _Script) -> None:
    elems = dict(script.elems)
    if not script.structured:  # older nmap: only the text output
        for line in script.output.splitlines():
            key, _, value = line.strip().partition(": ")
            if key in NTLM_KEYS:
                elems[key] = value
    for key, name in NTLM_KEYS.items():
        # nmap leaves out empty names; a missing key means the server sent none (or an empty one).
        service.put("ntlm-info", name, elems.get(key) or None)


def _mechanisms(words: Iterable[str]) -> list[str]:
    """Mechanism names in upper case, each once, in the order given, within :data:`MAX_MECHANISMS` and
    :data:`MAX_MECHANISM_NAME`."""
    kept: dict[str, None] = {}
    for word in words:
        if len(kept) >= MAX_MECHANISMS:
            break
        if len(word) <= MAX_MECHANISM_NAME:
            kept.setdefault(word.upper())
    return list(kept)


def _auth_words(keywords: list[str]) -> Iterator[str]:
    """The words of every ``AUTH`` (and ``AUTH=``) keyword of an EHLO reply."""
    for keyword in keywords[1:]:  # the first is the server's name from the 250 line
        name, _, value = keyword.partition(" ")
        if name.upper() == "AUTH" or name.upper().startswith("AUTH="):
            yield from value.split() if name.upper() == "AUTH" else [name[5:], *value.split()]


def _smtp_commands(service: NmapService, script: _Script) -> None:
    keywords = [part.strip() for part in script.output.split(",")]
    service.put("auth-methods", "mechanisms", _mechanisms(_auth_words(keywords)))
    starttls = any(keyword.upper() == "STARTTLS" for keyword in keywords[1:])
    service.put("auth-methods", "starttls_offered", starttls)
    service.put("mail-service", "starttls_offered", starttls)


def _open_relay(service: NmapService, script: _Script) -> None:
    output = script.output
    match = _RELAY_COUNT.search(output)
    if match:
        service.put("open-relay", "accepted", True)
        service.put("open-relay", "variants_accepted", int(match.group(1)))
    elif "all tests failed" in output:
        service.put("open-relay", "accepted", False)
        service.put("open-relay", "variants_accepted", 0)


def _pop3_capabilities(service: NmapService, script: _Script) -> None:
    output = script.output
    match = _POP3_SASL.search(output)
    mechanisms = _mechanisms(match.group(1).split()) if match else []
    words = _POP3_SASL.sub("", output).split()
    if "USER" in words and "USER" not in mechanisms:
        mechanisms.append("USER")
    service.put("auth-methods", "mechanisms", mechanisms)
    service.put("auth-methods", "cleartext_login", "USER" in words)
    service.put("auth-methods", "starttls_offered", "STLS" in words)
    service.put("mail-service", "starttls_offered", "STLS" in words)


_READERS = {
    "smtp-commands": _smtp_commands,
    "smtp-open-relay": _open_relay,
    "pop3-capabilities": _pop3_capabilities,
}


def _apply(service: NmapService, script: _Script) -> None:
    if script.id in NTLM_SCRIPTS:
        service.protocol = NTLM_SCRIPTS[script.id]
        _ntlm(service, script)
    elif script.id in _READERS:
        service.protocol = service.protocol or ("pop3" if script.id.startswith("pop3") else "smtp")
        _READERS[script.id](service, script)


# The elements the reader looks at; the others pass unseen.
_TAGS = frozenset({"host", "address", "port", "script", "elem"})


@dataclass
class _Reader:
    """What one streaming read has open (host, port, script) and what it has found: a host's ports wait for its
    end, where its address is known whatever their order."""

    services: list[NmapService] = field(default_factory=list)
    address: str | None = None  # of the open <host>: its first IPv4 or IPv6 <address>
    ports: list[tuple[str, NmapService]] | None = None  # of the open <host>: (portid, what its scripts said)
    port: tuple[str, NmapService] | None = None
    script: _Script | None = None

    def start(self, tag: str, attributes: dict[str, str], parent: str | None) -> None:
        if parent is None and tag != "nmaprun":
            raise NmapXmlError("not nmap XML output (no <nmaprun>)")
        if tag == "host":
            self.address, self.ports = None, []
        elif tag == "address" and self.ports is not None and self.address is None:
            if attributes.get("addrtype") in ("ipv4", "ipv6"):
                self.address = attributes.get("addr") or ""
        elif tag == "port" and self.ports is not None:
            self.port = (attributes.get("portid") or "?", NmapService(""))
        elif tag == "script" and self.port is not None:
            self.script = _Script(attributes.get("id") or "", attributes.get("output") or "")

    def end(self, tag: str, attributes: dict[str, str], text: str, parent: str | None) -> None:
        if tag == "elem" and self.script is not None:
            self.script.structured = True
            key = attributes.get("key")
            if key in NTLM_KEYS:
                self.script.elems[key] = text
        elif tag == "script" and self.script is not None and self.port is not None:
            _apply(self.port[1], self.script)
            self.script = None
        elif tag == "port" and self.port is not None and self.ports is not None:
            if self.port[1].fields:
                if len(self.services) + len(self.ports) >= MAX_SERVICES:
                    raise NmapXmlError(f"more than {MAX_SERVICES} ports with results of the scripts read")
                self.ports.append(self.port)
            self.port = None
        elif tag == "host" and self.ports is not None:
            for portid, service in self.ports if self.address else ():
                service.server = endpoint(self.address, portid)
                self.services.append(service)
            self.address, self.ports = None, None


def parse_nmap_xml(data: bytes) -> list[NmapService]:
    """Every open port with at least one understood script; raises :class:`NmapXmlError` for what is not nmap XML."""
    if len(data) > MAX_XML_BYTES:
        raise NmapXmlError(f"larger than {MAX_XML_BYTES} bytes")
    reader = _Reader()
    try:  # nmap writes a DOCTYPE line but never declares entities
        read_elements(data, reader, _TAGS, max_text=MAX_FIELD_TEXT, forbid_dtd=False)
    except DefusedXmlException as error:
        raise NmapXmlError(f"refused: {type(error).__name__} (XML entity declarations are not accepted)") from None
    except (ET.ParseError, TooDeep) as error:
        raise NmapXmlError(f"not XML: {error}") from None
    return reader.services


def read_nmap_xml(path: str | Path) -> list[NmapService]:
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_XML_BYTES + 1)
    except OSError as error:
        raise NmapXmlError(f"cannot read {path}: {error.strerror or error}") from None
    return parse_nmap_xml(data)
