"""The event vocabulary every mail session dissector speaks, passive or active alike.

Each event says which side sent it and carries :class:`Evidence`: the line as seen (bounded), and the frame number
and timestamp the caller supplied with the bytes (None when the bytes came from a socket rather than a capture).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from dissectors import ntlmssp

# Evidence keeps at most this much of a line; findings cite it, they do not need megabytes of it.
MAX_EVIDENCE_TEXT = 512


class Side(enum.StrEnum):
    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True)
class Evidence:
    """Where an event was seen: the frame that completed its line (as tshark shows reassembled PDUs), the frame
    where that line began when it spans several, the capture time, and the line itself (bounded)."""

    frame: int | None
    timestamp: float | None
    line: str
    first_frame: int | None = None
    # The line is the dissector's description of what it saw (an implicit TLS handshake), not bytes from the wire.
    described: bool = False

    @classmethod
    def of(cls, line: str, frame: int | None, timestamp: float | None, first_frame: int | None = None) -> Evidence:
        # Filled as pickle fills it (its fields in order), not by the frozen dataclass's __init__, which sets each
        # field with a call of object.__setattr__: one Evidence per event, 4% of the dissectors' instructions.
        evidence = object.__new__(cls)
        evidence.__dict__.update(
            frame=frame,
            timestamp=timestamp,
            line=line[:MAX_EVIDENCE_TEXT],
            first_frame=first_frame if first_frame != frame else None,
            described=False,
        )
        return evidence

    @classmethod
    def description(cls, text: str, frame: int | None, timestamp: float | None) -> Evidence:
        """Evidence whose line says, in brackets, what the dissector saw instead of quoting it."""
        return cls(frame, timestamp, text, None, described=True)


@dataclass
class Event:
    """What a session dissector saw: which side said it, and where in the capture (its evidence)."""

    side: Side
    evidence: Evidence


@dataclass
class Greeting(Event):
    """The server's banner: SMTP 220, POP3 +OK, IMAP * OK / * PREAUTH / * BYE."""

    banner: str
    accepted: bool = True  # False for SMTP 554 / IMAP BYE greetings


@dataclass
class Hello(Event):
    """SMTP EHLO/HELO/LHLO with the name the client gave."""

    command: str
    name: str


@dataclass
class Capabilities(Event):
    """What the server advertised: EHLO keywords, POP3 CAPA, IMAP CAPABILITY (also from response codes)."""

    source: str  # "ehlo", "capa", "capability", "auth-list"
    items: list[str]
    mechanisms: list[str]
    starttls: bool
    # A password command outside SASL is on offer: POP3 USER, IMAP LOGIN (no LOGINDISABLED); None when unsaid.
    cleartext_login: bool | None = None
    # The name the server gives itself in its EHLO reply.
    server_name: str | None = None


@dataclass
class StartTls(Event):
    """STARTTLS/STLS asked for (``accepted`` None), then answered; once accepted the rest of the stream is TLS.
    ``command``: one of :data:`STARTTLS_COMMANDS`, Exchange's ``X-ANONYMOUSTLS``, or ``implicit`` (TLS from the
    first byte)."""

    command: str
    accepted: bool | None = None


# The commands of RFC 3207 (SMTP), RFC 9051 (IMAP) and RFC 2595 (POP3): a server that accepts one offers STARTTLS,
# whether or not its capability listing was seen.
STARTTLS_COMMANDS = frozenset({"STARTTLS", "STLS"})


@dataclass
class AuthStart(Event):
    """An authentication exchange begins (AUTH / AUTHENTICATE), with or without an initial response."""

    mechanism: str
    initial_response: bool
    attempt: int | None = None  # the exchange's number (see Credentials)


@dataclass
class SaslStep(Event):
    """One base64 step of an exchange; ``ntlm`` is the decoded NTLMSSP message when there is one."""

    mechanism: str
    data: bytes | None
    ntlm: ntlmssp.Message | None = None
    anomalies: list[str] = field(default_factory=list)


@dataclass
class Credentials(Event):
    """Credentials sent in the clear: SASL PLAIN/LOGIN (and what CRAM-MD5/OAuth reveal), POP3 USER/PASS and APOP,
    IMAP LOGIN. ``secret_kind`` tells what ``password`` holds."""

    mechanism: str
    user: str | None
    password: str | None
    authzid: str | None = None
    secret_kind: str = "password"
    # The base64 text that carried the secret as sent (a SASL response, a Basic header's token): as secret as the
    # password, which anyone decodes from it; a server that echoes a client's line in its reply shows it.
    carrier: str | None = None
    # Which login of the session it belongs to (dissectors.sasl_events.OfExchange: 1 for the first started, a SASL
    # exchange or a POP3 PASS/APOP or IMAP LOGIN; 0 for a verdict on one no longer told apart); None for HTTP, SOCKS.
    attempt: int | None = None


@dataclass
class AuthResult(Event):
    """The server's verdict on an exchange: success or failure, with its reply text. ``judged`` is False for a
    refusal that never checked the credentials (dissectors.refusals: an AUTH out of sequence, a mechanism refused,
    encryption required, the server unable to check now): the session is not authenticated by it, and the
    credentials are neither right nor wrong."""

    mechanism: str
    success: bool
    text: str
    attempt: int | None = None  # the exchange it judges (see Credentials): each verdict is its own exchange's
    judged: bool = True

    @property
    def outcome(self) -> str | None:
        """What the verdict says of the credentials: ``success``, ``failure``, or None when it did not judge them."""
        return "success" if self.success else "failure" if self.judged else None


@dataclass
class AuthCancelled(Event):
    """The client cancelled an exchange (a ``*`` line)."""

    mechanism: str
    attempt: int | None = None  # the exchange's number (see Credentials)


@dataclass
class AuthAbandoned(Event):
    """An exchange ended without a verdict in the capture: the client went on to other commands."""

    mechanism: str
    reason: str
    attempt: int | None = None  # the exchange's number (see Credentials)


# XCLIENT attributes kept from one command (Postfix knows 9: NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT
# REVERSE_NAME); a hostile line may hold thousands.
MAX_OVERRIDE_ATTRIBUTES = 16


@dataclass
class MailFrom(Event):
    """SMTP MAIL FROM, with the server's reply once seen."""

    address: str
    reply_code: int | None = None
    accepted: bool | None = None


@dataclass
class RcptTo(Event):
    """SMTP RCPT TO, with the server's reply once seen."""

    address: str
    reply_code: int | None = None
    reply_text: str = ""
    accepted: bool | None = None


@dataclass
class DataStart(Event):
    """SMTP DATA, and whether the server accepted it (354): the message follows; or a transaction's first BDAT
    chunk, which takes DATA's place (accepted: a 2xx). ``reply_code`` and ``reply_text`` are the server's answer (None
    and empty when it was not seen)."""

    accepted: bool | None = None
    reply_code: int | None = None
    reply_text: str = ""


@dataclass
class MessageEnd(Event):
    """The end of an SMTP message (the ``.`` after DATA, or ``BDAT ... LAST``; a refused ``BDAT`` chunk ends it too)
    with the server's verdict on the transaction: ``accepted`` for a 2xx (queued for delivery), False otherwise."""

    accepted: bool
    reply_code: int
    reply_text: str


@dataclass
class ClientOverride(Event):
    """SMTP ``XCLIENT`` (Postfix): a proxy the server trusts tells who the real client is (``ADDR``, ``LOGIN``...),
    and the server's answer (220, a new greeting, when it took them). ``attributes``: names in upper case, values as
    sent (``[UNAVAILABLE]`` included), the first :data:`MAX_OVERRIDE_ATTRIBUTES` of them."""

    attributes: dict[str, str]
    accepted: bool


@dataclass
class Quit(Event):
    """The client said QUIT (LOGOUT in IMAP)."""


@dataclass
class Unauthenticated(Event):
    """IMAP ``UNAUTHENTICATE`` (RFC 8437), once the server took it (tagged ``OK``): the session is back in the not
    authenticated state, as before its login, and a later LOGIN or AUTHENTICATE is a first login again."""


@dataclass
class Reset(Event):
    """SMTP RSET, once the server accepted it: the transaction so far is dropped."""


@dataclass
class HttpExchange(Event):
    """The HTTP request an authentication step belongs to: emitted before the steps of a request (``status`` None)
    or a response (its status) that carries or answers an ``Authorization`` / ``WWW-Authenticate`` header. ``path``
    is the request target without its query, ``host`` the ``Host`` header (or the absolute URI's authority)."""

    method: str
    path: str
    host: str | None
    status: int | None = None


@dataclass
class Identity(Event):
    """IMAP ID (RFC 2971): what a client or server says it is (``name``, ``version``, ``os``, ``vendor``...), its
    field names in lower case."""

    fields: dict[str, str]


@dataclass
class Anomaly(Event):
    """Something the protocol does not allow, named by ``code``; ``detail`` says what was seen."""

    code: str
    detail: str


@dataclass
class TlsData(Event):
    """Bytes seen after TLS started (or on a port that speaks TLS from the first byte); nothing in them is read."""

    size: int


@dataclass
class Tunnel:
    """A proxy let the client through (an HTTP ``CONNECT`` answered 2xx, a SOCKS request granted): the rest of the
    connection is the client's session with ``target``, not the proxy protocol. ``via`` names the handshake
    (``http-connect``, ``socks4``, ``socks4a``, ``socks5``); ``target`` is the server the client asked for, ``ip:port``
    (``[v6]:port``) or ``host:port`` as it was named; ``rest`` holds the bytes either side sent after the handshake
    that the handshake's reading already took, in the order they came, as (side, data, frame, time)."""

    via: str
    target: str
    rest: list[tuple[Side, bytes, int | None, float | None]] = field(default_factory=list)
