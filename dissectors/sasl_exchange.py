"""One SASL exchange's steps, for :class:`dissectors.sasl.AuthTracker`: the base64 each carries (decoded leniently),
the client's responses and what they reveal, the server's prompts."""

from __future__ import annotations

import binascii
import re
from dataclasses import replace
from typing import NamedTuple

from dissectors import ntlmssp
from dissectors.linebuffer import wire_text
from dissectors.sasl_events import Direction, SaslBlob, SaslCancelled, SaslCredentials, SaslEvent
from dissectors.sasl_ntlm import ntlm_message
from dissectors.sasl_secrets import message_credentials
from dissectors.sasl_steps import CLIENT_STEPS

# A SASL line longer than this is not decoded (a real NTLM blob is a few hundred bytes of base64).
MAX_BLOB_TEXT = 64 * 1024


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


_LOGIN_PROMPTS = {"username:": "user", "user name": "user", "password:": "password"}


class Exchange:
    """One SASL exchange from the AUTH command to the server's verdict."""

    def __init__(self, mechanism: str, tag: str | None, number: int) -> None:
        self.number = number  # its place among the session's exchanges, from 1: the ``attempt`` of its events
        self.mechanism = mechanism
        self.tag = tag  # IMAP's: only the completion with it is the verdict
        self.client_steps = 0
        self.server_steps = 0
        self.last_prompt: str | None = None
        self.login_user: str | None = None
        self.server_challenge: bytes | None = None
        self.saw_authenticate = False
        self.owed = 0  # server prompts the client has not answered yet
        # Responses the client sent before a prompt asked for them (pipelined, or the server's prompts not seen): the
        # prompts that come later are answered by them, and owe none.
        self.unprompted = 0
        self.server_heard = False  # a server line came since the exchange began
        self.client_moved_on = False  # the client sent a command while the server was silent
        self.prompts_lost = False  # bytes of the server's were lost while it was open: some prompts, perhaps

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
            return [SaslCancelled(self.mechanism)]
        blob = _blob(Direction.CLIENT, text, self.mechanism)
        events: list[SaslEvent] = [blob]
        if blob.ntlm is not None and isinstance(blob.ntlm, ntlmssp.AuthenticateMessage):
            self.saw_authenticate = True
        if blob.data is not None:
            for event in self._client_credentials(blob.data):
                events.append(replace(event, carrier=text.strip()) if isinstance(event, SaslCredentials) else event)
        return events

    def _client_credentials(self, data: bytes) -> list[SaslEvent]:
        if self.mechanism != "LOGIN":
            return message_credentials(self.mechanism, data)
        value = wire_text(data)
        role = self.last_prompt or ("user" if self.login_user is None else "password")
        self.last_prompt = None
        if role == "user":
            self.login_user = value
            return []
        return [SaslCredentials("LOGIN", self.login_user, value)]

    # -- server --------------------------------------------------------------------------------------------------

    def prompted(self) -> None:
        """The server asked for the client's next response: one the client sent ahead answers it, else it is owed."""
        if self.unprompted:
            self.unprompted -= 1
        else:
            self.owed += 1

    def server_continuation(self, text: str) -> list[SaslEvent]:
        self.server_steps += 1
        self.prompted()
        if self.mechanism == "NTLM" and text.lower().startswith("ntlm supported"):
            return []  # [MS-SMTPNTLM] 2.2.1.2: not base64, just "go on"
        if not text:
            return []
        blob = _blob(Direction.SERVER, text, self.mechanism)
        if self.mechanism == "LOGIN" and blob.data is not None:
            self.last_prompt = _LOGIN_PROMPTS.get(wire_text(blob.data).strip().lower())
        return [blob]


def _blob(direction: Direction, text: str, mechanism: str) -> SaslBlob:
    result = decode_base64(text)
    blob = SaslBlob(direction, text[:256], result.data, anomalies=list(result.anomalies), mechanism=mechanism)
    blob.ntlm, anomaly = ntlm_message(result.data, mechanism)
    if anomaly is not None:
        blob.anomalies.append(anomaly)
    return blob
