"""Builders of NTLMSSP messages (2.2.1.1-3), of AV_PAIR lists (2.2.2.1) and of the NTLMv2 client challenge (2.2.2.7).

The builders pack what they are given, with every Len, MaxLen and BufferOffset right; they compute no cryptography.
Responses, session keys and MICs are passed in as bytes, so the caller decides whether they are real.

Payload fields follow the fixed header in the order of their field headers, as pyspnego lays them out. An empty
field has Len 0 and points where its bytes would have been (as in the examples of [MS-NLMP] 4.2), except in
NEGOTIATE, whose empty fields have offset 0 as nmap's probe sends them.

Flags are written as given, adjusted only where the packed fields require it: NEGOTIATE_VERSION is set with a
Version and cleared without one, and the flag of each field that is present is set (REQUEST_TARGET for a
TargetName, NEGOTIATE_TARGET_INFO for a TargetInfo, NEGOTIATE_KEY_EXCH for an EncryptedRandomSessionKey, the
*_SUPPLIED flags of NEGOTIATE). ``unicode`` sets or clears NEGOTIATE_UNICODE, which says how strings are encoded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from datetime import datetime

from dissectors.ntlmssp.spec import (
    AUTHENTICATE_HEADER,
    AV_NAMES,
    AV_PAIR_HEADER,
    CHALLENGE_HEADER,
    CLIENT_CHALLENGE_LENGTH,
    CLIENT_CHALLENGE_RESPONSE_VERSION,
    FIELD_HEADER,
    MAX_FIELD_LENGTH,
    MIC_LENGTH,
    NEGOTIATE_HEADER,
    SERVER_CHALLENGE_LENGTH,
    SIGNATURE,
    STRING_AV_IDS,
    VERSION_LENGTH,
    AvId,
    MessageType,
    NegotiateFlags,
)
from dissectors.ntlmssp.values import FileTime, Version

F = NegotiateFlags
_U32 = struct.Struct("<I")

# nmap's *-ntlm-info scripts send 0xa2088207: UNICODE, OEM, REQUEST_TARGET, NTLM, ALWAYS_SIGN, ESS, VERSION, 128, 56.
PROBE_FLAGS = (
    F.NTLMSSP_NEGOTIATE_UNICODE
    | F.NTLMSSP_NEGOTIATE_OEM
    | F.NTLMSSP_REQUEST_TARGET
    | F.NTLMSSP_NEGOTIATE_NTLM
    | F.NTLMSSP_NEGOTIATE_ALWAYS_SIGN
    | F.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY
    | F.NTLMSSP_NEGOTIATE_TARGET_INFO
    | F.NTLMSSP_NEGOTIATE_VERSION
    | F.NTLMSSP_NEGOTIATE_128
    | F.NTLMSSP_NEGOTIATE_56
)
PROBE_VERSION = Version(10, 0, 17763, 15)

# What a Windows server answers a Windows client with (0xe2898215), and what that client then sends (0xe2888215).
CHALLENGE_FLAGS = (
    F.NTLMSSP_NEGOTIATE_UNICODE
    | F.NTLMSSP_REQUEST_TARGET
    | F.NTLMSSP_NEGOTIATE_SIGN
    | F.NTLMSSP_NEGOTIATE_NTLM
    | F.NTLMSSP_NEGOTIATE_ALWAYS_SIGN
    | F.NTLMSSP_TARGET_TYPE_DOMAIN
    | F.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY
    | F.NTLMSSP_NEGOTIATE_TARGET_INFO
    | F.NTLMSSP_NEGOTIATE_VERSION
    | F.NTLMSSP_NEGOTIATE_128
    | F.NTLMSSP_NEGOTIATE_KEY_EXCH
    | F.NTLMSSP_NEGOTIATE_56
)
AUTHENTICATE_FLAGS = CHALLENGE_FLAGS & ~F.NTLMSSP_TARGET_TYPE_DOMAIN

# An AV pair is named by its AvId, its number, the AvId's name ("MsvAvDnsComputerName") or the schema's name
# ("dns_computer", see spec.AV_NAMES). Its value is text for the string AvIds, an int for MsvAvFlags, a FileTime, an
# aware datetime or a tick count for MsvAvTimestamp, and raw bytes for any AvId (sent as they are).
AvKey = AvId | int | str
AvValue = str | bytes | int | FileTime | datetime
AvPairs = Mapping[AvKey, AvValue] | Iterable[tuple[AvKey, AvValue]]
# A field header as written: Len, MaxLen, BufferOffset; None stands for the value the builder lays out.
FieldHeader = tuple[int | None, int | None, int | None]


def av_id_of(key: AvKey) -> int:
    """The AvId number an AV pair key names."""
    if isinstance(key, str):
        if key in AV_NAMES:
            return int(AV_NAMES[key])
        try:
            return int(AvId[key])
        except KeyError:
            raise ValueError(f"unknown AV pair name {key!r}") from None
    if not 0 <= key <= 0xFFFF:
        raise ValueError(f"AvId {key} does not fit in 16 bits")
    return int(key)


def _filetime(value: FileTime | datetime | int) -> FileTime:
    stamp = FileTime.from_datetime(value) if isinstance(value, datetime) else value
    stamp = stamp if isinstance(stamp, FileTime) else FileTime(stamp)
    if not 0 <= stamp.ticks < 1 << 64:
        raise ValueError(f"FILETIME {stamp.ticks} does not fit in 64 bits")
    return stamp


def encode_av_value(av_id: int, value: AvValue) -> bytes:
    """The wire bytes of one AV pair's value (2.2.2.1)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and av_id in STRING_AV_IDS:
        return value.encode("utf-16-le")
    if av_id == AvId.MsvAvFlags and isinstance(value, int):
        return _U32.pack(value)
    if av_id == AvId.MsvAvTimestamp and isinstance(value, FileTime | datetime | int):
        return _filetime(value).pack()
    raise TypeError(f"{type(value).__name__} is not a value for AV pair 0x{av_id:04x}")


def pack_av_pairs(pairs: AvPairs, *, terminate: bool = True) -> bytes:
    """An AV_PAIR list (2.2.2.1) in the given order, closed by MsvAvEOL unless ``terminate`` is false.

    Pairs are packed as given: an MsvAvEOL among them, or an AvId twice, goes on the wire too.
    """
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out = bytearray()
    for key, value in items:
        av_id = av_id_of(key)
        raw = encode_av_value(av_id, value)
        if len(raw) > MAX_FIELD_LENGTH:
            raise ValueError(f"AV pair 0x{av_id:04x}: {len(raw)} bytes do not fit in AvLen")
        out += AV_PAIR_HEADER.pack(av_id, len(raw)) + raw
    if terminate:
        out += AV_PAIR_HEADER.pack(AvId.MsvAvEOL, 0)
    return bytes(out)


def ntlmv2_client_blob(
    timestamp: FileTime | datetime | int,
    client_challenge: bytes,
    av_pairs: AvPairs | bytes = (),
    *,
    resp_type: int = CLIENT_CHALLENGE_RESPONSE_VERSION,
    hi_resp_type: int = CLIENT_CHALLENGE_RESPONSE_VERSION,
) -> bytes:
    """NTLMv2_CLIENT_CHALLENGE (2.2.2.7) followed by Z(4): the ``temp`` of 3.3.2.

    An NTLMv2 NtChallengeResponse (2.2.2.8) is NTProofStr (16 bytes) followed by these bytes, where NTProofStr is
    HMAC_MD5(ResponseKeyNT, ServerChallenge + temp). ``av_pairs`` are the client's (usually the server's TargetInfo
    plus MsvAvFlags, MsvAvTargetName, MsvAvChannelBindings); given as pairs they are closed by MsvAvEOL, given as
    bytes they are sent as they are.
    """
    if len(client_challenge) != CLIENT_CHALLENGE_LENGTH:
        raise ValueError(f"ChallengeFromClient is {CLIENT_CHALLENGE_LENGTH} bytes, not {len(client_challenge)}")
    pairs = av_pairs if isinstance(av_pairs, bytes | bytearray) else pack_av_pairs(av_pairs)
    return (
        bytes([resp_type, hi_resp_type])
        + bytes(6)  # Reserved1, Reserved2
        + _filetime(timestamp).pack()
        + client_challenge
        + bytes(4)  # Reserved3
        + pairs
        + bytes(4)
    )


class _Payload:
    """Payload fields laid out one after the other from the end of the fixed header.

    ``overrides`` replaces parts of named field headers (Len, MaxLen, BufferOffset; None keeps the laid-out value)
    without moving any payload byte: the way to write the inconsistent headers hostile input is made of.
    """

    def __init__(self, start: int, names: tuple[str, ...], overrides: Mapping[str, FieldHeader] | None) -> None:
        self.offset = start
        self.data = bytearray()
        self.overrides = dict(overrides or {})
        unknown = sorted(set(self.overrides) - set(names))
        if unknown:
            raise ValueError(f"no such field: {', '.join(unknown)} (fields: {', '.join(names)})")

    def field(self, name: str, value: bytes) -> bytes:
        """Append ``value``; returns its field header."""
        if len(value) > MAX_FIELD_LENGTH:
            raise ValueError(f"{name}: {len(value)} bytes do not fit in a 16-bit Len")
        laid_out = (len(value), len(value), self.offset)
        override = self.overrides.get(name, (None, None, None))
        header = FIELD_HEADER.pack(
            *(given if given is not None else own for given, own in zip(override, laid_out, strict=True))
        )
        self.data += value
        self.offset += len(value)
        return header


def _text(value: str | bytes | None, unicode: bool) -> bytes:
    """A string field: UTF-16LE when NEGOTIATE_UNICODE is set, else OEM (sent as UTF-8); bytes go as they are."""
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value.encode("utf-16-le" if unicode else "utf-8")


def _encoding_flags(flags: int, unicode: bool | None, version: Version | None) -> NegotiateFlags:
    flags = NegotiateFlags(flags)
    if unicode is True:
        flags |= F.NTLMSSP_NEGOTIATE_UNICODE
    elif unicode is False:
        flags &= ~F.NTLMSSP_NEGOTIATE_UNICODE
    if version is not None:
        return flags | F.NTLMSSP_NEGOTIATE_VERSION
    return flags & ~F.NTLMSSP_NEGOTIATE_VERSION


def _exact(name: str, value: bytes, length: int) -> bytes:
    if len(value) != length:
        raise ValueError(f"{name} is {length} bytes, not {len(value)}")
    return bytes(value)


def build_negotiate(
    flags: int = PROBE_FLAGS,
    domain: str | None = None,
    workstation: str | None = None,
    version: Version | None = PROBE_VERSION,
) -> bytes:
    """Build a NEGOTIATE_MESSAGE (2.2.1.1) such as an active probe sends to elicit a CHALLENGE.

    Domain and workstation are OEM strings (the spec's only encoding for Type 1); supplying them sets the
    matching *_SUPPLIED flag, and a version sets NEGOTIATE_VERSION.
    """
    flags = _encoding_flags(flags, None, version)
    domain_bytes = domain.encode("utf-8") if domain else b""
    workstation_bytes = workstation.encode("utf-8") if workstation else b""
    if domain_bytes:
        flags |= F.NTLMSSP_NEGOTIATE_OEM_DOMAIN_SUPPLIED
    if workstation_bytes:
        flags |= F.NTLMSSP_NEGOTIATE_OEM_WORKSTATION_SUPPLIED
    if len(domain_bytes) > MAX_FIELD_LENGTH or len(workstation_bytes) > MAX_FIELD_LENGTH:
        raise ValueError("domain and workstation must each fit in 65535 bytes")
    header_size = NEGOTIATE_HEADER + (VERSION_LENGTH if version is not None else 0)
    domain_offset = header_size if domain_bytes else 0
    workstation_offset = header_size + len(domain_bytes) if workstation_bytes else 0
    header = SIGNATURE + _U32.pack(MessageType.NEGOTIATE) + _U32.pack(flags)
    header += FIELD_HEADER.pack(len(domain_bytes), len(domain_bytes), domain_offset)
    header += FIELD_HEADER.pack(len(workstation_bytes), len(workstation_bytes), workstation_offset)
    if version is not None:
        header += version.pack()
    return header + domain_bytes + workstation_bytes


def build_challenge(
    server_challenge: bytes = bytes(SERVER_CHALLENGE_LENGTH),
    target_name: str | bytes | None = None,
    target_info: AvPairs | bytes | None = None,
    *,
    flags: int = CHALLENGE_FLAGS,
    version: Version | None = None,
    unicode: bool | None = None,
    reserved: bytes = bytes(8),
    field_headers: Mapping[str, FieldHeader] | None = None,
) -> bytes:
    """Build a CHALLENGE_MESSAGE (2.2.1.2).

    ``target_name`` is text (encoded per NEGOTIATE_UNICODE) or raw bytes. ``target_info`` is an AV pair list given
    as pairs (see :func:`pack_av_pairs`, closed by MsvAvEOL) or as the raw bytes of the whole field. A ``version``
    adds the 8-byte Version after the 48-byte header. ``field_headers`` overrides the "TargetName" or "TargetInfo"
    field header as written (see ``FieldHeader``).
    """
    flags = _encoding_flags(flags, unicode, version)
    name = _text(target_name, bool(flags & F.NTLMSSP_NEGOTIATE_UNICODE))
    if target_info is None or isinstance(target_info, bytes | bytearray):
        info = bytes(target_info or b"")
    else:
        info = pack_av_pairs(target_info)
    if name:
        flags |= F.NTLMSSP_REQUEST_TARGET
    if info:
        flags |= F.NTLMSSP_NEGOTIATE_TARGET_INFO
    start = CHALLENGE_HEADER + (VERSION_LENGTH if version is not None else 0)
    payload = _Payload(start, ("TargetName", "TargetInfo"), field_headers)
    name_field = payload.field("TargetName", name)
    info_field = payload.field("TargetInfo", info)
    message = SIGNATURE + _U32.pack(MessageType.CHALLENGE) + name_field
    message += _U32.pack(flags)
    message += _exact("ServerChallenge", server_challenge, SERVER_CHALLENGE_LENGTH)
    message += _exact("Reserved", reserved, 8) + info_field
    if version is not None:
        message += version.pack()
    return message + payload.data


def build_authenticate(
    user: str | bytes | None = None,
    domain: str | bytes | None = None,
    workstation: str | bytes | None = None,
    *,
    lm_response: bytes = b"",
    nt_response: bytes = b"",
    session_key: bytes = b"",
    mic: bytes | None = None,
    version: Version | None = None,
    flags: int = AUTHENTICATE_FLAGS,
    unicode: bool | None = None,
    field_headers: Mapping[str, FieldHeader] | None = None,
) -> bytes:
    """Build an AUTHENTICATE_MESSAGE (2.2.1.3).

    Strings are text (UTF-16LE with NEGOTIATE_UNICODE, else OEM) or raw bytes. ``lm_response`` and ``nt_response``
    are the responses as computed elsewhere: 24 bytes each for NTLMv1, and for NTLMv2 an NTProofStr followed by
    :func:`ntlmv2_client_blob`. A ``version`` and a 16-byte ``mic`` each add their field after the 64-byte header
    (Version first), which is how a reader tells they are there. ``field_headers`` overrides field headers by
    their spec names ("LmChallengeResponse" ... "EncryptedRandomSessionKey", see ``FieldHeader``).
    """
    flags = _encoding_flags(flags, unicode, version)
    if session_key:
        flags |= F.NTLMSSP_NEGOTIATE_KEY_EXCH
    wide = bool(flags & F.NTLMSSP_NEGOTIATE_UNICODE)
    fields = (
        ("LmChallengeResponse", bytes(lm_response)),
        ("NtChallengeResponse", bytes(nt_response)),
        ("DomainName", _text(domain, wide)),
        ("UserName", _text(user, wide)),
        ("Workstation", _text(workstation, wide)),
        ("EncryptedRandomSessionKey", bytes(session_key)),
    )
    trailer = version.pack() if version is not None else b""
    if mic is not None:
        trailer += _exact("MIC", mic, MIC_LENGTH)
    payload = _Payload(AUTHENTICATE_HEADER + len(trailer), tuple(name for name, _ in fields), field_headers)
    headers = b"".join(payload.field(name, value) for name, value in fields)
    message = SIGNATURE + _U32.pack(MessageType.AUTHENTICATE) + headers
    return message + _U32.pack(flags) + trailer + payload.data
