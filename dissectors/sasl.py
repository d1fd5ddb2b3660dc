"""SASL exchanges as they appear on the mail wire, sans-I/O.

Covers the carriers of RFC 4954 (SMTP ``AUTH``, ``334`` continuations), RFC 5034 (POP3 ``AUTH``, ``+`` continuations)
and RFC 3501/4959 (IMAP ``AUTHENTICATE`` with SASL-IR), plus Microsoft's variants ([MS-SMTPNTLM] ``334 NTLM
supported``, [MS-POP3] ``+OK`` before the first blob). An :class:`AuthTracker` is fed the lines of one session, each
with its direction, and returns typed events: the exchange start, every blob (NTLMSSP decoded), clear-text credentials
(PLAIN, LOGIN, and what CRAM-MD5, XOAUTH2 and OAUTHBEARER reveal), cancellation and the server's verdict.

The client's steps follow the server: a client line is a SASL response only when it answers a server prompt
(``334`` for SMTP, ``+`` for POP3 and IMAP) not yet answered. Only while the server has said nothing since the
exchange began (a capture of the client's side only, asymmetric routing, a slow server) is a line taken without a
prompt, and then only a base64 line that is no command of the protocol, up to the responses the mechanism has (one
for PLAIN, two for LOGIN). Any other line is the client's next command (:meth:`AuthTracker.claims` says which): it
ends an exchange whose prompts and replies the capture showed (the verdict was lost), unless the server answers in
order (SMTP), and leaves one the server never spoke in waiting for a verdict that may still come.
"""

from __future__ import annotations

import binascii
import enum
import re
import sys
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from dissectors import ntlmssp
from dissectors.linebuffer import wire_text
from dissectors.sasl_ntlm import ntlm_message
from dissectors.sasl_steps import AUTH_VERBS, CLIENT_STEPS, looks_like_response

# A SASL line longer than this is not decoded (a real NTLM blob is a few hundred bytes of base64).
MAX_BLOB_TEXT = 64 * 1024
# An exchange that goes on for more steps than any real mechanism needs is abandoned.
MAX_STEPS = 32


class Protocol(enum.StrEnum):
    SMTP = "smtp"
    POP3 = "pop3"
    IMAP = "imap"
    # HTTP carries NTLM, Negotiate and Basic in headers (RFC 4559, RFC 7617), not in SASL lines: its session drives
    # the exchanges itself and never feeds the tracker.
    HTTP = "http"
    SOCKS = "socks"  # a SOCKS handshake (dissectors.socks): its username/password is read, nothing of SASL


class Direction(enum.StrEnum):
    CLIENT = "client"
    SERVER = "server"


class Base64Result(NamedTuple):
    data: bytes | None
    anomalies: tuple[str, ...] = ()


_B64_ALPHABET = re.compile(rb"^[A-Za-z0-9+/]*={0,3}$")


def decode_base64(text: str | bytes) -> Base64Result:
    """Decode SASL base64 leniently: whitespace is dropped, wrong padding is repaired and reported.

    Returns ``data=None`` (with an anomaly) when the text is not base64 at all.
    """
    raw = text.encode("latin-1", errors="replace") if isinstance(text, str) else bytes(text)
    if len(raw) > MAX_BLOB_TEXT:
        return Base64Result(None, ("blob_too_long",))
    compact = b"".join(raw.split())
    anomalies: list[str] = []
    if compact != raw.strip():
        anomalies.append("whitespace_in_base64")
    if not _B64_ALPHABET.match(compact):
        return Base64Result(None, ("bad_base64",))
    body = compact.rstrip(b"=")
    padded = body + b"=" * (-len(body) % 4)
    if len(body) % 4 == 1:
        return Base64Result(None, ("bad_base64",))
    if padded != compact:
        anomalies.append("bad_base64_padding")
    try:
        return Base64Result(binascii.a2b_base64(padded), tuple(anomalies))
    except binascii.Error:
        return Base64Result(None, ("bad_base64",))


class AuthCommand(NamedTuple):
    """A client's request to start SASL: ``AUTH <mech> [ir]`` or ``<tag> AUTHENTICATE <mech> [ir]``."""

    mechanism: str
    initial_response: str | None = None
    tag: str | None = None


# A SASL mechanism name (RFC 4422 section 3.1: up to 20 characters; some servers list longer private names).
_MECHANISM = re.compile(r"[A-Za-z0-9_-]{1,40}")


def parse_auth_command(protocol: Protocol, line: str) -> AuthCommand | None:
    """Recognise the command that starts a SASL exchange; None for any other line.

    ``AUTH <mech> [initial response]`` (SMTP, POP3; SMTP's X-EXPS alike) or ``<tag> AUTHENTICATE <mech> [initial
    response]`` (IMAP), split with string methods: one pass over the line whatever it holds (a regular expression
    with a lazy group before trailing blanks backtracked quadratically on a line of spaces).
    """
    imap = protocol is Protocol.IMAP
    words = line.strip().split(None, 3 if imap else 2)
    tag = words.pop(0) if imap and words else None
    if len(words) < 2 or words[0].upper() not in AUTH_VERBS.get(protocol, ()):
        return None
    if tag is not None and ("+" in tag or "*" in tag):
        return None  # not a tag (RFC 9051: none holds "+" or "*"): no server answers it as one
    if not _MECHANISM.fullmatch(words[1]):
        return None
    return AuthCommand(words[1].upper(), words[2] if len(words) > 2 else None, tag)


class ReplyKind(enum.Enum):
    CONTINUE = "continue"
    SUCCESS = "success"
    FAILURE = "failure"
    OTHER = "other"


class ServerReply(NamedTuple):
    kind: ReplyKind
    text: str  # the continuation payload, or the whole status line


_SMTP_REPLY = re.compile(r"^\s*(\d{3})(?:[ -](.*))?$")


def classify_server_line(protocol: Protocol, line: str, tag: str | None = None) -> ServerReply:
    """What a server line means inside an exchange: a continuation (with its payload), success, failure."""
    stripped = line.strip()
    if protocol is Protocol.SMTP:
        match = _SMTP_REPLY.match(stripped)
        if not match:
            return ServerReply(ReplyKind.OTHER, stripped)
        code, rest = match.group(1), (match.group(2) or "").strip()
        if code == "334":
            return ServerReply(ReplyKind.CONTINUE, rest)
        if code.startswith("2"):
            return ServerReply(ReplyKind.SUCCESS, stripped)
        if code[0] in "45":
            return ServerReply(ReplyKind.FAILURE, stripped)
        return ServerReply(ReplyKind.OTHER, stripped)
    if protocol is Protocol.POP3:  # a "+" line but +OK continues, its space after "+" (RFC 5034) or not ("+TlRM")
        upper = stripped.upper()
        if upper.startswith("+OK"):
            return ServerReply(ReplyKind.SUCCESS, stripped)
        if upper.startswith("-ERR"):
            return ServerReply(ReplyKind.FAILURE, stripped)
        if stripped.startswith("+"):
            return ServerReply(ReplyKind.CONTINUE, stripped[1:].strip())
        return ServerReply(ReplyKind.OTHER, stripped)
    # IMAP: continuation "+ ...", tagged completion, untagged data in between.
    if stripped.startswith("+"):
        return ServerReply(ReplyKind.CONTINUE, stripped[1:].strip())
    parts = stripped.split(None, 2)
    if len(parts) >= 2 and parts[0] != "*" and (tag is None or parts[0] == tag):
        status = parts[1].upper()
        if status == "OK":
            return ServerReply(ReplyKind.SUCCESS, stripped)
        if status in ("NO", "BAD"):
            return ServerReply(ReplyKind.FAILURE, stripped)
    return ServerReply(ReplyKind.OTHER, stripped)


# ---- events -------------------------------------------------------------------------------------------------------


@dataclass
class SaslStarted:
    """An exchange began: its mechanism, its IMAP tag, whether the command carried an initial response."""

    mechanism: str
    tag: str | None
    initial_response: bool


@dataclass
class SaslBlob:
    """One base64 step. ``ntlm`` holds the decoded NTLMSSP message when the blob is one."""

    direction: Direction
    text: str
    data: bytes | None
    ntlm: ntlmssp.Message | None = None
    anomalies: list[str] = field(default_factory=list)


@dataclass
class SaslCredentials:
    """What a mechanism sent in the clear. ``password`` is a real password only for PLAIN and LOGIN;
    ``secret_kind`` says what ``password`` holds otherwise (a CRAM-MD5 digest, an OAuth bearer token)."""

    mechanism: str
    user: str | None
    password: str | None
    authzid: str | None = None
    secret_kind: str = "password"
    carrier: str | None = None  # the base64 text that carried the secret, as the client sent it


@dataclass
class SaslCancelled:
    """The client cancelled the exchange."""


@dataclass
class SaslOutcome:
    mechanism: str
    success: bool
    text: str


@dataclass
class SaslAbandoned:
    """The exchange ended without a verdict the capture shows: the client went on to other commands."""

    mechanism: str
    reason: str


@dataclass
class SaslAnomaly:
    code: str
    detail: str


SaslEvent = SaslStarted | SaslBlob | SaslCredentials | SaslCancelled | SaslOutcome | SaslAbandoned | SaslAnomaly

_LOGIN_PROMPTS = {"username:": "user", "user name": "user", "password:": "password"}


class _Exchange:
    """One SASL exchange from the AUTH command to the server's verdict."""

    def __init__(self, protocol: Protocol, command: AuthCommand) -> None:
        self.protocol = protocol
        self.mechanism = command.mechanism
        self.tag = command.tag
        self.client_steps = 0
        self.server_steps = 0
        self.last_prompt: str | None = None
        self.login_user: str | None = None
        self.server_challenge: bytes | None = None
        self.saw_authenticate = False
        self.owed = 0  # server prompts the client has not answered yet
        self.server_heard = False  # a server line came since the exchange began
        self.client_moved_on = False  # the client sent a command while the server was silent

    def wants_response(self) -> bool:
        """Without a prompt, may another client line still be a response of this mechanism?"""
        if self.client_moved_on:
            return False
        expected = CLIENT_STEPS.get(self.mechanism)
        return expected is None or self.client_steps < expected

    # -- client --------------------------------------------------------------------------------------------------

    def client_text(self, text: str) -> list[SaslEvent]:
        self.client_steps += 1
        self.owed = max(0, self.owed - 1)
        if text.strip() == "*":
            return [SaslCancelled()]
        blob = _blob(Direction.CLIENT, text, self.mechanism)
        events: list[SaslEvent] = [blob]
        if blob.ntlm is not None and isinstance(blob.ntlm, ntlmssp.AuthenticateMessage):
            self.saw_authenticate = True
        if blob.data is not None:
            for event in self._client_credentials(blob.data):
                events.append(replace(event, carrier=text.strip()) if isinstance(event, SaslCredentials) else event)
        return events

    def _client_credentials(self, data: bytes) -> list[SaslEvent]:
        mechanism = self.mechanism
        if mechanism == "PLAIN":
            return _plain_credentials(data)
        if mechanism == "LOGIN":
            value = _text(data)
            role = self.last_prompt or ("user" if self.login_user is None else "password")
            if role == "user":
                self.login_user = value
                self.last_prompt = None
                return []
            self.last_prompt = None
            return [SaslCredentials("LOGIN", self.login_user, value)]
        if mechanism == "CRAM-MD5":
            user, _, digest = _text(data).rpartition(" ")
            return [SaslCredentials("CRAM-MD5", user or None, digest or None, secret_kind="cram-md5-digest")]
        if mechanism == "XOAUTH2":
            fields = dict(part.split("=", 1) for part in _text(data).split("\x01") if "=" in part)
            token = fields.get("auth", "").removeprefix("Bearer ").strip() or None
            return [SaslCredentials("XOAUTH2", fields.get("user"), token, secret_kind="oauth-bearer-token")]
        if mechanism == "OAUTHBEARER":
            text = _text(data)
            gs2, _, rest = text.partition("\x01")
            user = next((p[2:] for p in gs2.split(",") if p.startswith("a=")), None)
            fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
            token = fields.get("auth", "").removeprefix("Bearer ").strip() or None
            return [SaslCredentials("OAUTHBEARER", user, token, secret_kind="oauth-bearer-token")]
        return []

    # -- server --------------------------------------------------------------------------------------------------

    def server_continuation(self, text: str) -> list[SaslEvent]:
        self.server_steps += 1
        self.owed += 1
        if self.mechanism == "NTLM" and text.lower().startswith("ntlm supported"):
            return []  # [MS-SMTPNTLM] 2.2.1.2: not base64, just "go on"
        if not text:
            return []
        blob = _blob(Direction.SERVER, text, self.mechanism)
        if self.mechanism == "LOGIN" and blob.data is not None:
            self.last_prompt = _LOGIN_PROMPTS.get(_text(blob.data).strip().lower())
        return [blob]


def _text(data: bytes) -> str:
    return wire_text(data)


def _plain_credentials(data: bytes) -> list[SaslEvent]:
    """RFC 4616: [authzid] NUL authcid NUL passwd. With more NULs, the password is all after the second (what a
    server reading to the message's end takes), so that it is the client's secret wherever it shows."""
    parts = data.split(b"\x00", 2)
    anomaly = SaslAnomaly("bad_plain_message", f"PLAIN message has {data.count(0)} NUL separators, expected 2")
    if len(parts) == 1:
        return [anomaly]
    authzid, user, password = parts if len(parts) == 3 else [b"", *parts]
    credentials = SaslCredentials("PLAIN", _text(user), _text(password), _text(authzid) or None)
    return [credentials] if len(parts) == 3 and b"\x00" not in password else [anomaly, credentials]


def _blob(direction: Direction, text: str, mechanism: str) -> SaslBlob:
    result = decode_base64(text)
    blob = SaslBlob(direction, text[:256], result.data, anomalies=list(result.anomalies))
    blob.ntlm, anomaly = ntlm_message(result.data, mechanism)
    if anomaly is not None:
        blob.anomalies.append(anomaly)
    return blob


def _too_many_steps(exchange: _Exchange) -> SaslAnomaly:
    return SaslAnomaly("sasl_too_many_steps", f"{exchange.mechanism} exchange abandoned after {MAX_STEPS} steps")


class AuthTracker:
    """Follows SASL exchanges in one session's lines, in the order they were seen.

    Feed every client line with :meth:`client_line` and every server line with :meth:`server_line`; lines outside an
    exchange are ignored except the AUTH command that starts one.
    """

    def __init__(self, protocol: Protocol | str) -> None:
        self.protocol = protocol if isinstance(protocol, Protocol) else Protocol(protocol)
        self.exchange: _Exchange | None = None

    @property
    def active(self) -> bool:
        return self.exchange is not None

    def held_bytes(self) -> int:
        """Bytes kept between lines: the user name a LOGIN exchange waits to pair with its password."""
        exchange = self.exchange
        return 0 if exchange is None or exchange.login_user is None else sys.getsizeof(exchange.login_user)

    def claims(self, line: str) -> bool:
        """Is this client line part of the open exchange (a response, a cancellation, or a new AUTH that ends it)?
        A line not claimed is the client's next command: pass it to :meth:`unclaimed`, then read it as one."""
        exchange = self.exchange
        if exchange is None:
            return False
        if parse_auth_command(self.protocol, line) is not None or exchange.owed > 0:
            return True
        if exchange.server_heard:
            return False  # every prompt the server sent is answered: this is no response
        return exchange.wants_response() and looks_like_response(str(self.protocol), line)

    def unclaimed(self, in_order: bool = False) -> list[SaslEvent]:
        """The client sent a command while the exchange is open. If the server never spoke in it, or answers in order
        (``in_order``: an SMTP verdict comes before the reply to a command pipelined after it), the verdict may still
        come: the exchange waits, taking no more lines. Otherwise it was lost: the exchange ends without one."""
        exchange = self.exchange
        if exchange is None:
            return []
        if in_order or not exchange.server_heard:
            exchange.client_moved_on = True
            return []
        self.exchange = None
        return [SaslAbandoned(exchange.mechanism, "the client sent a command before the server's verdict was seen")]

    def client_line(self, line: str) -> list[SaslEvent]:
        exchange = self.exchange
        if exchange is None:
            command = parse_auth_command(self.protocol, line)
            if command is None:
                return []
            return self._start(command)
        if exchange.client_steps >= MAX_STEPS:
            self.exchange = None
            return [_too_many_steps(exchange)]
        command = parse_auth_command(self.protocol, line)
        if command is not None:
            # A new AUTH while one is open: the server's verdict on the old one was never seen.
            restarted = SaslAnomaly("sasl_restarted", "AUTH sent again before the previous exchange ended")
            abandoned = SaslAbandoned(exchange.mechanism, "the client started another exchange")
            return [restarted, abandoned, *self._start(command)]
        return exchange.client_text(line)

    def _start(self, command: AuthCommand) -> list[SaslEvent]:
        exchange = _Exchange(self.protocol, command)
        self.exchange = exchange
        events: list[SaslEvent] = [SaslStarted(command.mechanism, command.tag, command.initial_response is not None)]
        if command.initial_response is not None:
            initial = command.initial_response.strip()
            if initial == "=":  # RFC 4954: an empty initial response
                exchange.client_steps += 1
                return events
            events.extend(exchange.client_text(initial))
        return events

    def server_line(self, line: str) -> list[SaslEvent]:
        exchange = self.exchange
        if exchange is None:
            return []
        reply = classify_server_line(self.protocol, line, exchange.tag)
        exchange.server_heard = True
        if reply.kind is ReplyKind.CONTINUE:
            if exchange.server_steps >= MAX_STEPS:
                self.exchange = None
                return [_too_many_steps(exchange)]
            return exchange.server_continuation(reply.text)
        if reply.kind is ReplyKind.SUCCESS:
            if (
                self.protocol is Protocol.POP3
                and exchange.mechanism == "NTLM"
                and not exchange.saw_authenticate
                and exchange.client_steps == 0
            ):
                exchange.owed += 1  # [MS-POP3] 2.2.1.2: "+OK" means NTLM is supported, the blobs follow
                return []
            self.exchange = None
            return [SaslOutcome(exchange.mechanism, True, reply.text)]
        if reply.kind is ReplyKind.FAILURE:
            self.exchange = None
            return [SaslOutcome(exchange.mechanism, False, reply.text)]
        return []
