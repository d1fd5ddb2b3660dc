"""Counters of one run's mail analysis, across sessions, for the summary line; and the secrets the run saw, so that
outputs can scrub them wherever they appear."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

NTLM_MESSAGE_TYPES = ("negotiate", "challenge", "authenticate")
# NetNTLM hash lines kept per run for --hashes: a hostile capture must not make this list grow without bound.
MAX_HASHES = 10_000
# Nor their bytes: a real NetNTLMv2 line is a few hundred characters, a hostile AUTHENTICATE carries up to 48 KiB of
# response (10 000 of those would be a gigabyte). 32 MiB holds 10 000 lines of 3 KiB.
MAX_HASH_BYTES = 32 * 1024 * 1024
# Distinct secrets remembered per run for scrubbing outputs (passwords, tokens); the rest are still masked by field
# and by line, only not searched for in free text.
MAX_SECRETS = 4096
# And their characters in all (4096 passwords of 48 KiB would be 200 MiB): 4 MiB is 4096 secrets of 1 KiB.
MAX_SECRET_CHARACTERS = 4 * 1024 * 1024


@dataclass
class RunStats:
    """What a run counted beside its findings: sessions, NTLM messages, anomalies, hashes, what limits dropped."""

    sessions: Counter[str] = field(default_factory=Counter)
    ntlm_messages: Counter[str] = field(default_factory=Counter)
    anomalies: Counter[str] = field(default_factory=Counter)
    tls_sessions: int = 0
    hashes: list[str] = field(default_factory=list)
    hashes_dropped: int = 0
    hashes_skipped: int = 0  # responses whose user or domain a hashcat line cannot hold (``:``, control characters)
    hash_bytes: int = 0
    secret_characters: int = 0
    findings_dropped: int = 0  # occurrences of new findings past FindingSet.MAX_FINDINGS, and findings evicted
    findings_evicted: int = 0  # inventory findings that made room for a more valuable kind (FindingSet)
    dissector_bytes_evicted: int = 0  # partial state given up to keep within the dissector budget
    dissector_evictions: int = 0  # sessions that gave it up
    port_check_evictions: int = 0  # flows whose port check ended early to keep within MAX_PORT_CHECK_HELD
    secrets: set[str] = field(default_factory=set)

    def add_hash(self, line: str) -> None:
        if not self.hashes:
            self.hash_bytes = 0  # emptied by its reader (watch lets the list go as it counts it)
        if len(self.hashes) < MAX_HASHES and self.hash_bytes + len(line) <= MAX_HASH_BYTES:
            self.hashes.append(line)
            self.hash_bytes += len(line)
        else:
            self.hashes_dropped += 1

    def add_secret(self, secret: str | None) -> None:
        if not secret or secret in self.secrets:
            return
        if len(self.secrets) < MAX_SECRETS and self.secret_characters + len(secret) <= MAX_SECRET_CHARACTERS:
            self.secrets.add(secret)
            self.secret_characters += len(secret)

    def to_dict(self) -> dict[str, Any]:
        ntlm = {kind: self.ntlm_messages.get(kind, 0) for kind in NTLM_MESSAGE_TYPES}
        ntlm.update({k: v for k, v in self.ntlm_messages.items() if k not in NTLM_MESSAGE_TYPES})
        return {
            "sessions": dict(self.sessions),
            "ntlm_messages": ntlm,
            "tls_sessions": self.tls_sessions,
            "dissector_anomalies": dict(self.anomalies),
            "hashes": len(self.hashes),
            "hashes_skipped": self.hashes_skipped,
            "hashes_dropped": self.hashes_dropped,
            "findings_dropped": self.findings_dropped,
            "findings_evicted": self.findings_evicted,
            "dissector_bytes_evicted": self.dissector_bytes_evicted,
            "dissector_evictions": self.dissector_evictions,
            "port_check_evictions": self.port_check_evictions,
        }
