"""The vocabulary of finding declarations: severities, and what a kind and each of its fields declare.

The kinds themselves are declared in :mod:`passive.findings.kinds`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


class Severity(enum.StrEnum):
    """In increasing order of risk; :func:`rank` compares them."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


SEVERITY_ORDER: tuple[Severity, ...] = tuple(Severity)
_RANKS = {str(severity): number for number, severity in enumerate(SEVERITY_ORDER)}


def rank(severity: str) -> int:
    """0 for info up to 3 for high; an unknown value (or no text at all, from a findings file) ranks as info."""
    return _RANKS.get(severity, 0) if isinstance(severity, str) else 0


@dataclass(frozen=True)
class Field:
    """One field of a kind's record, as ``docs/schema.md`` documents it."""

    name: str
    doc: str
    column: bool = False  # shown in the terminal table's card for this kind
    compared: bool = False  # set beside the probe's and nmap's value by ``compare``
    union: bool = False  # a list of names gathered over time: unioned, not replaced, when the store merges
    active: bool = False  # only ``leakscope probe`` can know it
    secret: bool = False  # holds a secret: masked in every output unless secrets are asked for
    many: bool = False  # the value is a list


@dataclass(frozen=True)
class Kind:
    """One finding kind, declared once: what it is, how severe, its fields, and how to show and fix it."""

    type: str  # a FindingType member
    title: str
    description: str
    severity_rules: tuple[tuple[Severity, str], ...]
    fields: tuple[Field, ...]
    summary: Callable[[Mapping[str, Any]], str]
    remediation: str
    verification: str
    references: Mapping[str, str]  # protocol -> equivalent check elsewhere; "*" for any protocol
    key_doc: str = "per server"
    # Fields that, with the kind and the server, identify a finding (its key): the stable ``id`` is derived from them.
    identity: tuple[str, ...] = ()
    details_doc: str = ""  # what each entry of ``details`` holds
    # Fields every record has that this kind's table card shows after its own columns.
    common_columns: tuple[str, ...] = ()
    # A title for one record when it says something other than the kind's title (a refused relay).
    variant_title: Callable[[Mapping[str, Any]], str | None] = field(default=lambda record: None)

    def reference(self, protocol: str) -> str | None:
        return self.references.get(protocol) or self.references.get("*")

    def title_of(self, record: Mapping[str, Any]) -> str:
        return self.variant_title(record) or self.title

    @cached_property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.column) + self.common_columns

    @cached_property
    def compared(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.compared)

    @cached_property
    def secret_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.secret)

    @cached_property
    def union_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.union)


# Fields every record has, whatever its kind.
COMMON_FIELDS: tuple[Field, ...] = (
    Field(
        "id",
        "a stable fingerprint of the finding (`ls-` and 16 hex digits): the same for the same kind, server and "
        "identifying fields in every run, on every machine, whatever the capture's name, passive or active",
    ),
    Field("type", "the kind of finding (one of the kinds below)"),
    Field("schema_version", "the version of this schema"),
    Field("source", "`passive` (from captures) or `active` (from `leakscope probe`)"),
    Field(
        "protocol",
        "`smtp`, `pop3`, `imap`; `http` for NTLM and Basic authentication carried by HTTP (only `ntlm-info` and "
        "`cleartext-credentials` findings: a web server is no mail service); `socks` for a SOCKS5 proxy's "
        "username and password (only `cleartext-credentials`)",
    ),
    Field("server", "`ip:port` (`[v6]:port` for IPv6)"),
    Field(
        "network",
        "only for a server seen inside an overlay: its virtual network, `vxlan-vni:ID` or `geneve-vni:ID`; tenants "
        "reusing one server address have findings apart (a GRE key, NVGRE's included, names none: mirrors and "
        "tunnel ends key each direction apart)",
    ),
    Field("severity", "`info`, `low`, `medium`, `high`: the kind's severity rules below"),
    Field("reference", "the equivalent check in Nessus / nmap / Wireshark, where one exists"),
    Field("client", "`ip:port` of the client of the latest occurrence"),
    Field("clients", "`ip:port` of clients seen (first 50)"),
    Field("count", "occurrences merged into this finding"),
    Field("first_seen", "capture time of the first occurrence"),
    Field("last_seen", "capture time of the last occurrence"),
    Field(
        "details",
        "per-occurrence facts (first 50; `time` ISO 8601 UTC, `file` the capture the occurrence was seen in); "
        "`details_dropped` counts the rest",
    ),
    Field("details_dropped", "details not kept"),
    Field(
        "evidence",
        "`{file, frame, time, side, line}`: the capture file holding the frame (for a ring buffer read as one "
        "stream, the piece it is in), the tshark-compatible 1-based number of the frame in that file that "
        "completed the line (where tshark shows a reassembled PDU), its time, `client`/`server`, and the line as sent "
        "(first 512 characters, secrets masked); `first_frame` is added when the line began in an earlier frame of "
        "the same file; first 8. For `leakscope watch` the `file` is `live:IFACE` and frames count packets in the "
        "order received",
    ),
    Field("evidence_dropped", "evidence lines not kept"),
    Field("remediation", "what to do"),
    Field("verification", "how to check it is done"),
)
