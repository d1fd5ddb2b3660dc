"""NTLMSSP message decoder and builders, after [MS-NLMP] section 2.2.

Traffic is attacker-controlled, so every offset and length is checked against the message. A message that carries
the NTLMSSP signature always decodes: whatever could be read is returned together with a list of named
:class:`Anomaly` entries. Only input that is not NTLMSSP at all raises :class:`DecodeError`.

:func:`build_negotiate` packs the NEGOTIATE an active probe sends.

Modules: ``spec`` (the spec's tables and header layouts), ``values`` (VERSION, FILETIME, AV_PAIR), ``reader``
(bounded field and AV pair reading), ``messages`` (decoded messages and their JSON form), ``decode``, ``build``,
``windows_builds`` (Windows releases by VERSION).
"""

from __future__ import annotations

from dissectors.ntlmssp.build import PROBE_FLAGS, PROBE_VERSION, build_negotiate
from dissectors.ntlmssp.decode import DecodeError, decode
from dissectors.ntlmssp.messages import (
    AuthenticateMessage,
    ChallengeMessage,
    Message,
    NegotiateMessage,
    NtlmMessage,
    NtlmV2Response,
    UnknownMessage,
)
from dissectors.ntlmssp.reader import decode_av_pairs
from dissectors.ntlmssp.spec import (
    CLIENT_FIELDS,
    MAX_AV_PAIRS,
    SERVER_FIELDS,
    SIGNATURE,
    AvFlags,
    AvId,
    MessageType,
    NegotiateFlags,
    NtlmVersion,
    av_flag_names,
    flag_names,
)
from dissectors.ntlmssp.values import Anomaly, AvPair, FileTime, Version
from dissectors.ntlmssp.windows_builds import windows_release

__all__ = [
    "CLIENT_FIELDS",
    "MAX_AV_PAIRS",
    "PROBE_FLAGS",
    "PROBE_VERSION",
    "SERVER_FIELDS",
    "SIGNATURE",
    "Anomaly",
    "AuthenticateMessage",
    "AvFlags",
    "AvId",
    "AvPair",
    "ChallengeMessage",
    "DecodeError",
    "FileTime",
    "Message",
    "MessageType",
    "NegotiateFlags",
    "NegotiateMessage",
    "NtlmMessage",
    "NtlmV2Response",
    "NtlmVersion",
    "UnknownMessage",
    "Version",
    "av_flag_names",
    "build_negotiate",
    "decode",
    "decode_av_pairs",
    "flag_names",
    "windows_release",
]
