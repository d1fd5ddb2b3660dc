"""``cleartext-credentials``: user names and secrets sent where the wire can be read, with the server's verdict."""

from __future__ import annotations

from typing import ClassVar

from dissectors import events as ev
from passive.analysis.detectors.base import Detector, Handlers, Session
from passive.findings.model import FindingType, Severity, bounded

# Credentials awaiting the server's verdict, per session; past this they are recorded with no outcome.
MAX_PENDING_CREDENTIALS = 32
# The same past this many characters of user names and secrets (32 PLAIN messages of 48 KiB would be 3 MiB a
# session); real ones are a few dozen characters, an OAuth token a few KiB.
MAX_PENDING_CHARACTERS = 64 * 1024


class CredentialsDetector(Detector):
    KIND = FindingType.CLEARTEXT_CREDENTIALS
    HANDLERS: ClassVar[Handlers] = {
        ev.Credentials: "credentials",
        ev.AuthResult: "result",
        ev.AuthCancelled: "cancelled",
    }

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.pending: list[ev.Credentials] = []
        self.pending_characters = 0

    def credentials(self, event: ev.Credentials) -> None:
        self.session.stats.add_secret(event.password)
        size = len(event.user or "") + len(event.password or "") + len(event.authzid or "")
        if len(self.pending) >= MAX_PENDING_CREDENTIALS or self.pending_characters + size > MAX_PENDING_CHARACTERS:
            # A client that never waits for a verdict: record what is held, without an outcome, to stay bounded.
            self.flush(None)
        self.pending.append(event)
        self.pending_characters += size

    def result(self, event: ev.AuthResult) -> None:
        self.flush("success" if event.success else "failure", event)

    def cancelled(self, event: ev.AuthCancelled) -> None:
        self.flush(None)

    def close(self) -> None:
        self.flush(None)

    def flush(self, outcome: str | None, result: ev.AuthResult | None = None) -> None:
        pending, self.pending = self.pending, []
        self.pending_characters = 0
        for credentials in pending:
            if credentials.user is None and credentials.password is None:
                continue
            key = (credentials.mechanism, bounded(credentials.user))
            finding = self.finding(FindingType.CLEARTEXT_CREDENTIALS, Severity.HIGH, key)
            self.touch(finding, credentials)
            if result is not None:
                self.record(finding, result)
            finding.set_fields(
                mechanism=credentials.mechanism,
                user=credentials.user,
                password=credentials.password,
                authzid=credentials.authzid,
                secret_kind=credentials.secret_kind,
                outcome=outcome,
                tls=self.session.tls,
            )
            finding.add_detail(
                {
                    "client": self.context.client,
                    "outcome": outcome,
                    "time": credentials.evidence.timestamp,
                    "file": self.context.file,
                }
            )
