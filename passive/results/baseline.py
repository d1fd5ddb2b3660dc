"""Findings set against an earlier run (``--baseline``) and against accepted risks (``--suppress``), for CI gates.

Each finding is marked ``"baseline": "new"``, ``"worse"`` (its fingerprint ``id`` was in the earlier run at a lower
severity: a server that offered logins only after STARTTLS and now offers them before keeps its fingerprint) or
``"unchanged"``; the fingerprints of the earlier run that are not found again are ``resolved``. A suppression names
a fingerprint with a reason and an expiry date; a suppressed finding is marked ``"suppressed": {"reason",
"expires"}`` and counted, never hidden, and does not count for ``--fail-on``. An expired suppression no longer
applies, and says so.

Suppression file: JSON lines ``{"id": "ls-...", "reason": "...", "expires": "2027-03-31"}``, or text lines
``ls-... 2027-03-31 reason words`` (``#`` starts a comment).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from passive.core.errors import InputError
from passive.findings.kinds import rank
from passive.results.findings_file import read_records
from passive.results.fingerprint import PREFIX

# Suppression entries read from one file; a suppression list is written by people.
MAX_SUPPRESSIONS = 10_000
# And its characters: 10 000 entries with their reasons fit in far less. Read up to this, whatever the file says of
# its size: a line without end (``--suppress /dev/zero``, a capture given by mistake) was read whole.
MAX_SUPPRESSIONS_TEXT = 64 * 1024 * 1024
# Fingerprints listed as resolved in the summary; the count is exact.
MAX_RESOLVED_LISTED = 200


@dataclass(frozen=True)
class Suppression:
    """One accepted finding (by id) in a suppression file: why, and until when."""

    id: str
    reason: str
    expires: date


@dataclass
class Gate:
    """What ``--baseline``, ``--suppress`` and ``--fail-on`` decided about one run's records."""

    baseline: dict[str, int] | None = None  # fingerprint -> the highest severity rank it had in the earlier run
    suppressions: dict[str, Suppression] = field(default_factory=dict)
    today: date = field(default_factory=lambda: datetime.now(UTC).date())
    new: int = 0
    worse: int = 0
    unchanged: int = 0
    suppressed: int = 0
    expired: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)

    def mark(self, records: list[dict[str, Any]]) -> None:
        """Mark every record in place, and work out what the baseline had that is gone."""
        current = {r.get("id") for r in records}
        for record in records:
            ident = record.get("id")
            if self.baseline is not None:
                state = self._state(ident, record.get("severity"))
                record["baseline"] = state
                self.new += state == "new"
                self.worse += state == "worse"
                self.unchanged += state == "unchanged"
            suppression = self.suppressions.get(str(ident))
            if suppression is None:
                continue
            if suppression.expires < self.today:
                self.expired.append(suppression.id)
                continue
            record["suppressed"] = {"reason": suppression.reason, "expires": suppression.expires.isoformat()}
            self.suppressed += 1
        if self.baseline is not None:
            self.resolved = sorted(self.baseline.keys() - current)

    def _state(self, ident: object, severity: object) -> str:
        before = self.baseline.get(ident) if self.baseline is not None and isinstance(ident, str) else None
        if before is None:
            return "new"
        return "worse" if rank(str(severity)) > before else "unchanged"

    def failing(self, records: Iterable[dict[str, Any]], level: str) -> list[dict[str, Any]]:
        """The records that make ``--fail-on level`` fail: at or above the level, not suppressed, and new or more
        severe than before when a baseline was given."""
        threshold = rank(level)
        return [
            r
            for r in records
            if rank(str(r.get("severity"))) >= threshold
            and "suppressed" not in r
            and (self.baseline is None or r.get("baseline") in ("new", "worse"))
        ]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.baseline is not None:
            out.update(
                baseline_new=self.new,
                baseline_worse=self.worse,
                baseline_unchanged=self.unchanged,
                baseline_resolved=len(self.resolved),
                resolved=self.resolved[:MAX_RESOLVED_LISTED],
            )
        if self.suppressions:
            out.update(suppressed=self.suppressed, suppressions_expired=sorted(set(self.expired)))
        return out


def read_baseline(path: str) -> dict[str, int]:
    """The fingerprints of an earlier run's findings file (JSON lines or JSON), each with the rank of the highest
    severity it had there."""
    ranks: dict[str, int] = {}
    for record in read_records(path):
        ident = record.get("id")
        if isinstance(ident, str):
            ranks[ident] = max(ranks.get(ident, 0), rank(str(record.get("severity"))))
    return ranks


def read_suppressions(path: str) -> dict[str, Suppression]:
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_SUPPRESSIONS_TEXT + 1)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_SUPPRESSIONS_TEXT:
        raise InputError(f"{path}: larger than {MAX_SUPPRESSIONS_TEXT // 2**20} MiB: not a suppressions file")
    lines = data.decode("utf-8", "replace").splitlines()
    found: dict[str, Suppression] = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip() if not line.lstrip().startswith("{") else line.strip()
        if not text:
            continue
        if len(found) >= MAX_SUPPRESSIONS:
            raise InputError(f"{path}: more than {MAX_SUPPRESSIONS} suppressions")
        entry = _suppression(text, f"{path} line {number}")
        found[entry.id] = entry
    return found


def _suppression(text: str, where: str) -> Suppression:
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            raise InputError(f"{where}: not JSON") from None
        if not isinstance(value, dict):
            raise InputError(f"{where}: not an object")
        ident, expires, reason = value.get("id"), value.get("expires"), value.get("reason")
    else:
        parts = text.split(None, 2)
        ident, expires, reason = [*parts, "", "", ""][:3]
    if not isinstance(ident, str) or not ident.startswith(PREFIX):
        raise InputError(f"{where}: the fingerprint must start with {PREFIX!r} (the id of a finding)")
    if not isinstance(reason, str) or not reason.strip():
        raise InputError(f"{where}: a suppression needs a reason")
    try:
        day = date.fromisoformat(str(expires))
    except ValueError:
        raise InputError(f"{where}: the expiry must be a date (YYYY-MM-DD), not {expires!r}") from None
    return Suppression(ident, reason.strip(), day)
