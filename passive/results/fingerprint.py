"""A finding's stable fingerprint: derived from its kind, its server (and overlay network, if any) and the fields that
identify it (its key), so that the same fact has the same ``id`` across runs, machines, capture names, and
``analyze`` and ``probe``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from passive.findings.kinds import kind_of
from passive.findings.schema import Kind

PREFIX = "ls-"
DIGITS = 16  # hex digits of SHA-256 kept: 64 bits, no collision in any realistic set of findings


def fingerprint(record: Mapping[str, Any]) -> str | None:
    """``ls-`` and 16 hex digits, or None for a record that is not a finding of a known kind."""
    kind = kind_of(record.get("type"))
    if kind is None:
        return None
    return kind_fingerprint(kind, record)


def kind_fingerprint(kind: Kind, record: Mapping[str, Any]) -> str | None:
    """:func:`fingerprint` of a record whose kind is known (None when it has no server)."""
    server = record.get("server")
    if not isinstance(server, str):
        return None
    identity = [str(kind.type), str(server).lower()]
    if record.get("network"):  # an overlay's tenant: absent elsewhere, so other ids stay as they were
        identity.append(f"network={record['network']}")
    identity += [f"{name}={_canonical(record.get(name))}" for name in kind.identity]
    digest = hashlib.sha256("\x1f".join(identity).encode("utf-8", "surrogatepass")).hexdigest()
    return PREFIX + digest[:DIGITS]


# json.dumps(value, ensure_ascii=False, sort_keys=True, default=str), its encoder built once rather than per call.
_canonical = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str).encode
