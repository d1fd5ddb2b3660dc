"""Decoded messages: NEGOTIATE (2.2.1.1), CHALLENGE (2.2.1.2), AUTHENTICATE (2.2.1.3) and their JSON form.

``to_dict`` gives the stable schema of README and docs/schema.md; the attributes keep the decoded values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dissectors.ntlmssp.spec import AvFlags, AvId, NegotiateFlags, NtlmVersion, av_flag_names, flag_names
from dissectors.ntlmssp.values import Anomaly, AvPair, FileTime, Version


def av_lookup(pairs: list[AvPair] | None, av_id: AvId) -> Any:
    for pair in pairs or ():
        if pair.av_id == av_id:
            return pair.value
    return None


def av_string(pairs: list[AvPair] | None, av_id: AvId) -> str | None:
    return _text(av_lookup(pairs, av_id))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# A message's flags until it says which (immutable: one object serves every message).
NO_FLAGS = NegotiateFlags(0)


@dataclass
class NtlmMessage:
    """Fields common to all messages."""

    flags: NegotiateFlags = NO_FLAGS
    version: Version | None = None
    anomalies: list[Anomaly] = field(default_factory=list)

    message_type: int | None = None

    @property
    def type_name(self) -> str:
        return "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_type": self.type_name,
            "flags": flag_names(self.flags),
            "flags_raw": int(self.flags),
            "anomalies": [a.to_dict() for a in self.anomalies],
        }


@dataclass
class UnknownMessage(NtlmMessage):
    """Carries the signature but no usable MessageType."""

    def to_dict(self) -> dict[str, Any]:
        result = super().to_dict()
        result["message_type_raw"] = self.message_type
        return result


@dataclass
class NegotiateMessage(NtlmMessage):
    """NEGOTIATE_MESSAGE, Type 1 (2.2.1.1)."""

    domain: str | None = None
    workstation: str | None = None

    @property
    def type_name(self) -> str:
        return "negotiate"

    def to_dict(self) -> dict[str, Any]:
        result = super().to_dict()
        result.update(
            domain=self.domain,
            workstation=self.workstation,
            client_os_version=str(self.version) if self.version else None,
            client_os_release=self.version.release if self.version else None,
        )
        return result

    def client_fields(self) -> dict[str, Any]:
        """What the client says of itself: the :data:`CLIENT_FIELDS` this message has, as :meth:`to_dict` gives
        them, in that order, without building the rest of it."""
        return {
            "domain": self.domain,
            "workstation": self.workstation,
            "client_os_version": str(self.version) if self.version else None,
        }


@dataclass
class ChallengeMessage(NtlmMessage):
    """CHALLENGE_MESSAGE, Type 2 (2.2.1.2): what a server tells anyone who starts NTLM."""

    server_challenge: bytes = b""
    reserved: bytes = b""
    target_name: str | None = None
    target_info: list[AvPair] | None = None

    @property
    def type_name(self) -> str:
        return "challenge"

    @property
    def netbios_computer(self) -> str | None:
        return av_string(self.target_info, AvId.MsvAvNbComputerName)

    @property
    def netbios_domain(self) -> str | None:
        return av_string(self.target_info, AvId.MsvAvNbDomainName)

    @property
    def dns_computer(self) -> str | None:
        return av_string(self.target_info, AvId.MsvAvDnsComputerName)

    @property
    def dns_domain(self) -> str | None:
        return av_string(self.target_info, AvId.MsvAvDnsDomainName)

    @property
    def dns_tree(self) -> str | None:
        return av_string(self.target_info, AvId.MsvAvDnsTreeName)

    @property
    def server_time(self) -> FileTime | None:
        value = av_lookup(self.target_info, AvId.MsvAvTimestamp)
        return value if isinstance(value, FileTime) else None

    def to_dict(self) -> dict[str, Any]:
        result = super().to_dict()
        result.update(self._server_names())
        result.update(
            server_challenge=self.server_challenge.hex(),
            av_pairs=[p.to_dict() for p in self.target_info] if self.target_info is not None else None,
        )
        return result

    def server_fields(self) -> dict[str, Any]:
        """What the message tells of its server: the :data:`SERVER_FIELDS`, as :meth:`to_dict` gives them, in that
        order, without building the rest of it."""
        fields = self._server_names()
        fields["flags"] = flag_names(self.flags)
        return fields

    def _server_names(self) -> dict[str, Any]:
        """The names and time the properties above give, read in one pass over the AV pairs."""
        first: dict[int, Any] = {}
        for pair in self.target_info or ():
            first.setdefault(pair.av_id, pair.value)  # the first pair of an id is the one read, as av_lookup does
        server_time = first.get(AvId.MsvAvTimestamp)
        return {
            "target_name": self.target_name,
            "netbios_computer": _text(first.get(AvId.MsvAvNbComputerName)),
            "netbios_domain": _text(first.get(AvId.MsvAvNbDomainName)),
            "dns_computer": _text(first.get(AvId.MsvAvDnsComputerName)),
            "dns_domain": _text(first.get(AvId.MsvAvDnsDomainName)),
            "dns_tree": _text(first.get(AvId.MsvAvDnsTreeName)),
            "server_time": server_time.isoformat() if isinstance(server_time, FileTime) else None,
            "os_version": str(self.version) if self.version else None,
            "os_release": self.version.release if self.version else None,
        }


@dataclass
class NtlmV2Response:
    """NTLMv2_RESPONSE (2.2.2.8) with its NTLMv2_CLIENT_CHALLENGE (2.2.2.7)."""

    nt_proof_str: bytes
    resp_type: int | None = None
    hi_resp_type: int | None = None
    timestamp: FileTime | None = None
    client_challenge: bytes = b""
    av_pairs: list[AvPair] = field(default_factory=list)

    @property
    def spn(self) -> str | None:
        return av_string(self.av_pairs, AvId.MsvAvTargetName)

    @property
    def av_flags(self) -> AvFlags | None:
        value = av_lookup(self.av_pairs, AvId.MsvAvFlags)
        return value if isinstance(value, AvFlags) else None

    @property
    def channel_bindings(self) -> bytes | None:
        value = av_lookup(self.av_pairs, AvId.MsvAvChannelBindings)
        return value if isinstance(value, bytes) else None


@dataclass
class AuthenticateMessage(NtlmMessage):
    """AUTHENTICATE_MESSAGE, Type 3 (2.2.1.3)."""

    lm_response: bytes = b""
    nt_response: bytes = b""
    domain: str | None = None
    user: str | None = None
    workstation: str | None = None
    session_key: bytes = b""
    mic: bytes | None = None
    ntlm_version: NtlmVersion | None = None
    ntlmv2: NtlmV2Response | None = None

    @property
    def type_name(self) -> str:
        return "authenticate"

    @property
    def spn(self) -> str | None:
        return self.ntlmv2.spn if self.ntlmv2 else None

    def to_dict(self) -> dict[str, Any]:
        result = super().to_dict()
        v2 = self.ntlmv2
        av_flags = v2.av_flags if v2 else None
        bindings = v2.channel_bindings if v2 else None
        result.update(
            user=self.user,
            domain=self.domain,
            workstation=self.workstation,
            ntlm_version=str(self.ntlm_version) if self.ntlm_version else None,
            client_os_version=str(self.version) if self.version else None,
            client_os_release=self.version.release if self.version else None,
            spn=self.spn,
            lm_response=self.lm_response.hex(),
            nt_response=self.nt_response.hex(),
            mic_present=self.mic is not None,
            mic_flagged=bool(av_flags and av_flags & AvFlags.MIC_PROVIDED),
            session_key_present=bool(self.session_key),
            client_time=v2.timestamp.isoformat() if v2 and v2.timestamp else None,
            client_challenge=v2.client_challenge.hex() if v2 else None,
            channel_bindings_present=bool(bindings and any(bindings)),
            av_flags=av_flag_names(int(av_flags)) if av_flags is not None else None,
            av_pairs=[p.to_dict() for p in v2.av_pairs] if v2 else None,
        )
        return result

    def client_fields(self) -> dict[str, Any]:
        """What the client says of itself: the :data:`CLIENT_FIELDS`, as :meth:`to_dict` gives them, in that
        order, without building the rest of it."""
        return {
            "user": self.user,
            "domain": self.domain,
            "workstation": self.workstation,
            "ntlm_version": str(self.ntlm_version) if self.ntlm_version else None,
            "client_os_version": str(self.version) if self.version else None,
            "spn": self.spn,
        }


Message = NegotiateMessage | ChallengeMessage | AuthenticateMessage | UnknownMessage
