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

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from passive.core.endpoints import endpoint
from passive.core.errors import InputError

# nmap XML of a few thousand hosts is a few megabytes; anything far larger is not what this reads.
MAX_XML_BYTES = 64 * 1024 * 1024
# Mechanisms kept from one script's output, as the passive detector keeps per server: a server offers a handful, and
# a list of 50 000 (330 KB of XML) took 12 s when each name was compared with those kept before it.
MAX_MECHANISMS = 64
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


def _script_output(script: ET.Element) -> str:
    return script.get("output") or ""


def _ntlm(service: NmapService, script: ET.Element) -> None:
    elems = {elem.get("key"): (elem.text or "") for elem in script.iter("elem")}
    if not elems:  # older nmap: only the text output
        for line in _script_output(script).splitlines():
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


def _smtp_commands(service: NmapService, script: ET.Element) -> None:
    keywords = [part.strip() for part in _script_output(script).split(",")]
    service.put("auth-methods", "mechanisms", _mechanisms(_auth_words(keywords)))
    starttls = any(keyword.upper() == "STARTTLS" for keyword in keywords[1:])
    service.put("auth-methods", "starttls_offered", starttls)
    service.put("mail-service", "starttls_offered", starttls)


def _open_relay(service: NmapService, script: ET.Element) -> None:
    output = _script_output(script)
    match = _RELAY_COUNT.search(output)
    if match:
        service.put("open-relay", "accepted", True)
        service.put("open-relay", "variants_accepted", int(match.group(1)))
    elif "all tests failed" in output:
        service.put("open-relay", "accepted", False)
        service.put("open-relay", "variants_accepted", 0)


def _pop3_capabilities(service: NmapService, script: ET.Element) -> None:
    output = _script_output(script)
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


def parse_nmap_xml(data: bytes) -> list[NmapService]:
    """Every open port with at least one understood script; raises :class:`NmapXmlError` for what is not nmap XML."""
    if len(data) > MAX_XML_BYTES:
        raise NmapXmlError(f"larger than {MAX_XML_BYTES} bytes")
    try:
        root = SafeET.fromstring(data)  # nmap writes a DOCTYPE line but never declares entities
    except DefusedXmlException as error:
        raise NmapXmlError(f"refused: {type(error).__name__} (XML entity declarations are not accepted)") from None
    except ET.ParseError as error:
        raise NmapXmlError(f"not XML: {error}") from None
    if root.tag != "nmaprun":
        raise NmapXmlError("not nmap XML output (no <nmaprun>)")
    services: list[NmapService] = []
    for host in root.iter("host"):
        address = next(
            (a.get("addr") for a in host.iter("address") if a.get("addrtype") in ("ipv4", "ipv6")),
            None,
        )
        if not address:
            continue
        for port in host.iter("port"):
            service = NmapService(endpoint(address, port.get("portid") or "?"))
            for script in port.iter("script"):
                script_id = script.get("id") or ""
                if script_id in NTLM_SCRIPTS:
                    service.protocol = NTLM_SCRIPTS[script_id]
                    _ntlm(service, script)
                elif script_id in _READERS:
                    service.protocol = service.protocol or ("pop3" if script_id.startswith("pop3") else "smtp")
                    _READERS[script_id](service, script)
            if service.fields:
                services.append(service)
    return services


def read_nmap_xml(path: str | Path) -> list[NmapService]:
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_XML_BYTES + 1)
    except OSError as error:
        raise NmapXmlError(f"cannot read {path}: {error.strerror or error}") from None
    return parse_nmap_xml(data)
