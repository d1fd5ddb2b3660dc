"""``cleartext-credentials``: user names and secrets sent where the wire can be read, with the server's verdict."""

from __future__ import annotations

from typing import Any, ClassVar

from dissectors import events as ev
from passive.analysis.detectors.base import Detector, Handlers, Session, Shared
from passive.findings.model import Finding, FindingType, Severity, bounded

# Credentials awaiting the server's verdict, per session; past this they are recorded with no outcome.
MAX_PENDING_CREDENTIALS = 32
# The same past this many characters of user names, secrets and the base64 text that carried them (32 PLAIN
# messages of 48 KiB would be 3 MiB a session; an XOAUTH2 message padded with fields that are no secret, 64 KiB of
# base64 around a one-character token, held 2 MiB a session when only its secret was counted); real ones are a few
# dozen characters, an OAuth token a few KiB.
MAX_PENDING_CHARACTERS = 64 * 1024
# Distinct (secret, outcome) pairs kept per finding in ``attempts``: a user trying a few passwords fits; a client
# guessing thousands keeps its first ones here and is counted in ``count`` and ``details``.
MAX_ATTEMPTS = 16
# Secrets that are a challenge's digest, not the password (CRAM-MD5, APOP): cracked offline, as a NetNTLMv2
# response is, and rated as one (medium); every other secret works as sent (high).
DIGESTS = frozenset({"cram-md5-digest", "apop-digest"})


class CredentialsDetector(Detector):
    KIND = FindingType.CLEARTEXT_CREDENTIALS
    HANDLERS: ClassVar[Handlers] = {
        ev.Credentials: "credentials",
        ev.AuthResult: "result",
        ev.AuthCancelled: "cancelled",
        ev.AuthAbandoned: "cancelled",
    }

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        # By the exchange each belongs to (its ``attempt``; None outside SASL), oldest first, each with whether the
        # session was in TLS when it was sent (never: nothing is read inside TLS), not when its verdict came: a LOGIN
        # pipelined behind STARTTLS crossed in clear, whatever followed. Each verdict goes to its own exchange's:
        # AUTH commands pipelined get theirs in turn, not the first one's for all.
        self.pending: dict[int | None, list[tuple[ev.Credentials, bool]]] = {}
        self.pending_count = 0
        self.pending_characters = 0

    def credentials(self, event: ev.Credentials) -> None:
        if event.password is None:
            return  # no secret crossed (``a1 LOGIN alice``, XOAUTH2 without a token): a user name is no credential
        if event.password:
            self.session.apply(_secret, None, event.password)
            if event.carrier and event.carrier != event.password:
                self.session.apply(_secret, None, event.carrier)
        size = _characters(event)
        while self.pending and (
            self.pending_count >= MAX_PENDING_CREDENTIALS or self.pending_characters + size > MAX_PENDING_CHARACTERS
        ):
            # A client that never waits for a verdict: the oldest held are recorded without an outcome, to stay bounded.
            self.flush(None, attempt=next(iter(self.pending)))
        self.pending.setdefault(event.attempt, []).append((event, self.session.tls))
        self.pending_count += 1
        self.pending_characters += size

    def result(self, event: ev.AuthResult) -> None:
        self.flush(event.outcome, event, event.attempt)

    def cancelled(self, event: ev.AuthCancelled | ev.AuthAbandoned) -> None:
        self.flush(None, attempt=event.attempt)

    def close(self) -> None:
        while self.pending:
            self.flush(None, attempt=next(iter(self.pending)))

    def flush(self, outcome: str | None, result: ev.AuthResult | None = None, attempt: int | None = None) -> None:
        """Record the credentials of exchange ``attempt`` (None: those sent outside SASL) with ``outcome``."""
        pending = self.pending.pop(attempt, [])
        self.pending_count -= len(pending)
        for credentials, tls in pending:
            self.pending_characters -= _characters(credentials)
            key = (credentials.mechanism, bounded(credentials.user))
            severity = Severity.MEDIUM if credentials.secret_kind in DIGESTS else Severity.HIGH
            finding = self.finding(FindingType.CLEARTEXT_CREDENTIALS, severity, key)
            self.touch(finding, credentials)
            if result is not None:
                self.record(finding, result)
            detail = {
                "client": self.context.client,
                "outcome": outcome,
                "password_no": None,
                "time": credentials.evidence.timestamp,
                "file": self.evidence(credentials).file,  # the file holding it (a ring's piece)
            }
            self.session.apply(_attempted, finding, credentials.mechanism, credentials.user, credentials.authzid,
                               credentials.secret_kind, bounded(credentials.password), outcome, tls,
                               detail)  # fmt: skip


def _characters(credentials: ev.Credentials) -> int:
    """The text a credential awaiting its verdict holds: its user, secret and authorization identity, and the base64
    that carried them when it is more than the secret (a SASL message holds fields that are no secret: XOAUTH2's
    ``host=``, any other ``key=value`` a client adds)."""
    carrier = credentials.carrier if credentials.carrier != credentials.password else None
    return sum(len(text or "") for text in (credentials.user, credentials.password, credentials.authzid, carrier))


# -- effects (passive.analysis.detectors.base) ------------------------------------------------------------------


def _secret(_finding: None, shared: Shared, secret: str) -> None:
    shared.stats.add_secret(secret)


def _attempted(
    finding: Finding,
    shared: Shared,
    mechanism: str,
    user: str | None,
    authzid: str | None,
    secret_kind: str | None,
    password: str | None,
    outcome: str | None,
    tls: bool,
    detail: dict[str, Any],
) -> None:
    """One credential sent: its fields, the attempt counted among the finding's, and the detail of who sent it."""
    finding.set_fields(mechanism=mechanism, user=user)
    finding.fields.setdefault("password", None)
    finding.set_fields(authzid=authzid, secret_kind=secret_kind)
    finding.fields.setdefault("outcome", None)
    number = _attempt(finding.fields.setdefault("attempts", []), password, outcome)
    finding.set_fields(tls=tls)
    _summarise(finding.fields)
    detail["password_no"] = number
    finding.add_detail(detail)


def _attempt(attempts: list[dict[str, Any]], password: str | None, outcome: str | None) -> int | None:
    """Count one attempt under its (secret, outcome) pair; the number of its secret among the finding's (1 for the
    first secret seen), the same whatever the outcome; None past MAX_ATTEMPTS pairs."""
    numbers = {entry["password"]: entry["password_no"] for entry in attempts}
    number = numbers.get(password, len(numbers) + 1)
    for entry in attempts:
        if entry["password"] == password and entry["outcome"] == outcome:
            entry["count"] += 1
            return number
    if len(attempts) >= MAX_ATTEMPTS:
        return None
    attempts.append({"password_no": number, "password": password, "outcome": outcome, "count": 1})
    return number


def _summarise(fields: dict[str, Any]) -> None:
    """``password`` and ``outcome`` for the whole finding: the secret that worked (else the latest tried) and
    ``success`` when an attempt succeeded, else ``failure`` when one failed, else no verdict."""
    attempts = fields["attempts"]
    worked = [entry for entry in attempts if entry["outcome"] == "success"]
    fields["password"] = (worked or attempts)[-1]["password"]
    outcomes = {entry["outcome"] for entry in attempts}
    fields["outcome"] = "success" if "success" in outcomes else "failure" if "failure" in outcomes else None
