"""Counters of one run's mail analysis, across sessions, for the summary line; and the secrets the run saw, so that
outputs can scrub them wherever they appear."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

NTLM_MESSAGE_TYPES = ("negotiate", "challenge", "authenticate")
# NetNTLM hash lines kept per run for --hashes: a hostile capture must not make this list grow without bound.
MAX_HASHES = 10_000
# Distinct secrets remembered per run for scrubbing outputs (passwords, tokens); the rest are still masked by field
# and by line, only not searched for in free text.
MAX_SECRETS = 4096


@dataclass
class RunStats:
    sessions: Counter[str] = field(default_factory=Counter)
    ntlm_messages: Counter[str] = field(default_factory=Counter)
    anomalies: Counter[str] = field(default_factory=Counter)
    tls_sessions: int = 0
    hashes: list[str] = field(default_factory=list)
    hashes_dropped: int = 0
    hashes_skipped: int = 0  # responses whose user or domain a hashcat line cannot hold (``:``, control characters)
    findings_dropped: int = 0  # occurrences of new findings past FindingSet.MAX_FINDINGS
    secrets: set[str] = field(default_factory=set)

    def add_hash(self, line: str) -> None:
        if len(self.hashes) < MAX_HASHES:
            self.hashes.append(line)
        else:
            self.hashes_dropped += 1

    def add_secret(self, secret: str | None) -> None:
        if secret and len(self.secrets) < MAX_SECRETS:
            self.secrets.add(secret)

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
            "findings_dropped": self.findings_dropped,
        }
