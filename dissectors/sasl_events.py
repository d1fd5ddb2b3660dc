"""What :class:`dissectors.sasl.AuthTracker` returns: one event per fact of a SASL exchange, each naming the exchange it
belongs to (``attempt``), so that a verdict given to one exchange of several open at once (AUTH commands pipelined,
RFC 2920) is told apart from the others'."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from dissectors import ntlmssp


class Direction(enum.StrEnum):
    CLIENT = "client"
    SERVER = "server"


@dataclass(kw_only=True)
class OfExchange:
    """An event of one exchange. ``attempt`` is its number in the session (1 for the first exchange started, 2 for the
    next...); 0 for the verdict on an exchange the tracker no longer kept (:data:`dissectors.sasl.MAX_AWAITING`)."""

    attempt: int = 0


@dataclass
class SaslStarted(OfExchange):
    """An exchange began: its mechanism, its IMAP tag, whether the command carried an initial response."""

    mechanism: str
    tag: str | None
    initial_response: bool


@dataclass
class SaslBlob(OfExchange):
    """One base64 step of a ``mechanism`` exchange. ``ntlm`` holds the decoded NTLMSSP message when the blob is one."""

    direction: Direction
    text: str
    data: bytes | None
    ntlm: ntlmssp.Message | None = None
    anomalies: list[str] = field(default_factory=list)
    mechanism: str = ""


@dataclass
class SaslCredentials(OfExchange):
    """What a mechanism sent in the clear. ``password`` is a real password only for PLAIN and LOGIN;
    ``secret_kind`` says what ``password`` holds otherwise (a CRAM-MD5 digest, an OAuth bearer token)."""

    mechanism: str
    user: str | None
    password: str | None
    authzid: str | None = None
    secret_kind: str = "password"
    carrier: str | None = None  # the base64 text that carried the secret, as the client sent it


@dataclass
class SaslCancelled(OfExchange):
    """The client cancelled its ``mechanism`` exchange."""

    mechanism: str = ""


@dataclass
class SaslOutcome(OfExchange):
    """The server's verdict on an exchange. ``judged`` is False for a refusal that never checked the credentials
    (:mod:`dissectors.refusals`): the exchange ended unsuccessfully, but the credentials are neither right nor wrong."""

    mechanism: str
    success: bool
    text: str
    judged: bool = True


@dataclass
class SaslAbandoned(OfExchange):
    """The exchange ended without a verdict the capture shows: the client went on to other commands."""

    mechanism: str
    reason: str


@dataclass
class SaslAnomaly:
    code: str
    detail: str


SaslEvent = SaslStarted | SaslBlob | SaslCredentials | SaslCancelled | SaslOutcome | SaslAbandoned | SaslAnomaly
