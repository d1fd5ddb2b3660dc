"""NTLMSSP message decoder and builders, after [MS-NLMP] section 2.2.

Traffic is attacker-controlled, so every offset and length is checked against the message. A message that carries
the NTLMSSP signature always decodes: whatever could be read is returned together with a list of named
:class:`Anomaly` entries. Only input that is not NTLMSSP at all raises :class:`DecodeError`.

The builders (:func:`build_negotiate`, :func:`build_challenge`, :func:`build_authenticate`) pack messages that this
decoder and pyspnego read back field for field; they compute no cryptography.

Modules: ``spec`` (the spec's tables and header layouts), ``values`` (VERSION, FILETIME, AV_PAIR), ``reader``
(bounded field and AV pair reading), ``messages`` (decoded messages and their JSON form), ``decode``, ``build``,
``windows_builds`` (Windows releases by VERSION).
"""

from __future__ import annotations

from dissectors.ntlmssp.build import (
    AUTHENTICATE_FLAGS,
    CHALLENGE_FLAGS,
    PROBE_FLAGS,
    PROBE_VERSION,
    AvKey,
    AvPairs,
    AvValue,
    FieldHeader,
    av_id_of,
    build_authenticate,
    build_challenge,
    build_negotiate,
    encode_av_value,
    ntlmv2_client_blob,
    pack_av_pairs,
)
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
    AV_NAMES,
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
    "AUTHENTICATE_FLAGS",
    "AV_NAMES",
    "CHALLENGE_FLAGS",
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
    "AvKey",
    "AvPair",
    "AvPairs",
    "AvValue",
    "ChallengeMessage",
    "DecodeError",
    "FieldHeader",
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
    "av_id_of",
    "build_authenticate",
    "build_challenge",
    "build_negotiate",
    "decode",
    "decode_av_pairs",
    "encode_av_value",
    "flag_names",
    "ntlmv2_client_blob",
    "pack_av_pairs",
    "windows_release",
]
