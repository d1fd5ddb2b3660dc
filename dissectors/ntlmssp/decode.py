"""Decoding of one NTLMSSP message (2.2.1), whatever its form: the oldest short headers, the modern ones with
Version and MIC, and anything an attacker may put on the wire behind the signature.
"""

from __future__ import annotations

from dissectors.ntlmssp.messages import (
    AuthenticateMessage,
    ChallengeMessage,
    Message,
    NegotiateMessage,
    NtlmV2Response,
    UnknownMessage,
)
from dissectors.ntlmssp.reader import (
    FieldReader,
    decode_av_pairs,
    decode_oem,
    decode_string,
    decode_version,
    payload_start,
)
from dissectors.ntlmssp.spec import (
    AUTHENTICATE_FIELDS,
    AUTHENTICATE_FLAGS_OFFSET,
    AUTHENTICATE_HEADER,
    AUTHENTICATE_LEGACY_HEADER,
    AUTHENTICATE_VERSION_OFFSET,
    CHALLENGE_FLAGS_OFFSET,
    CHALLENGE_HEADER,
    CHALLENGE_RESERVED_OFFSET,
    CHALLENGE_SERVER_CHALLENGE_OFFSET,
    CHALLENGE_TARGET_INFO_OFFSET,
    CHALLENGE_TARGET_NAME_OFFSET,
    CHALLENGE_VERSION_OFFSET,
    CLIENT_CHALLENGE_AV_PAIRS_OFFSET,
    MESSAGE_TYPE_OFFSET,
    MIC_LENGTH,
    NEGOTIATE_FIELDS,
    NEGOTIATE_FLAGS_OFFSET,
    NEGOTIATE_HEADER,
    NEGOTIATE_VERSION_OFFSET,
    NT_PROOF_STR_LENGTH,
    NTLMV1_RESPONSE_LENGTH,
    SIGNATURE,
    VERSION_LENGTH,
    MessageType,
    NegotiateFlags,
    NtlmVersion,
)
from dissectors.ntlmssp.values import Anomaly, FileTime

# What may be decoded (a tuple made once: ``bytes | bytearray | memoryview`` builds a union at every call).
_BYTES_TYPES = (bytes, bytearray, memoryview)


class DecodeError(ValueError):
    """Raised when the input is not an NTLMSSP message (no ``NTLMSSP\\0`` signature)."""


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one NTLMSSP message.

    Raises :class:`DecodeError` only when ``data`` is not NTLMSSP (wrong type or no signature); every other problem
    is reported in the returned message's ``anomalies``.
    """
    if not isinstance(data, _BYTES_TYPES):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(SIGNATURE):
        raise DecodeError("not an NTLMSSP message (no NTLMSSP signature)")
    anomalies: list[Anomaly] = []
    reader = FieldReader(data, anomalies)
    message_type = reader.u32(MESSAGE_TYPE_OFFSET)
    if message_type is None:
        reader.note("truncated_header", f"message ends after {len(data)} bytes, before MessageType")
        return UnknownMessage(anomalies=anomalies)
    if message_type == MessageType.NEGOTIATE:
        message: Message = _decode_negotiate(reader)
    elif message_type == MessageType.CHALLENGE:
        message = _decode_challenge(reader)
    elif message_type == MessageType.AUTHENTICATE:
        message = _decode_authenticate(reader)
    else:
        reader.note("unknown_message_type", f"MessageType {message_type} is not 1, 2 or 3")
        message = UnknownMessage(anomalies=anomalies)
    message.message_type = message_type
    reader.check_overlaps()
    return message


def _has(flags: NegotiateFlags, flag: NegotiateFlags) -> bool:
    """Whether ``flag`` is set, in int arithmetic (IntFlag's operators build a flag object each time)."""
    return bool(int(flags) & int(flag))


def _flags_at(reader: FieldReader, offset: int) -> NegotiateFlags:
    value = reader.u32(offset)
    if value is None:
        reader.note("truncated_header", f"message is {len(reader.data)} bytes, shorter than {offset + 4}")
        return NegotiateFlags(0)
    return NegotiateFlags(value)


def _decode_negotiate(reader: FieldReader) -> NegotiateMessage:
    data = reader.data
    flags = _flags_at(reader, NEGOTIATE_FLAGS_OFFSET)
    message = NegotiateMessage(flags=flags, anomalies=reader.anomalies)
    # Domain and workstation headers are optional in the oldest clients' 16-byte form.
    if len(data) < NEGOTIATE_HEADER:
        if len(data) > NEGOTIATE_FLAGS_OFFSET + 4:
            reader.note("truncated_header", f"NEGOTIATE is {len(data)} bytes: field headers cut short")
        return message
    header_size = NEGOTIATE_HEADER
    with_version = NEGOTIATE_VERSION_OFFSET + VERSION_LENGTH
    start = payload_start(data, [offset for _, offset in NEGOTIATE_FIELDS], header_size)
    if start >= with_version and len(data) >= with_version:
        message.version = decode_version(data, NEGOTIATE_VERSION_OFFSET, reader)
        header_size = with_version
    elif _has(flags, NegotiateFlags.NTLMSSP_NEGOTIATE_VERSION) and len(data) < with_version and start >= with_version:
        reader.note("truncated_version", "NEGOTIATE_VERSION set but the message ends before the Version")
    domain, workstation = (reader.payload(name, offset, header_size) for name, offset in NEGOTIATE_FIELDS)
    # 2.2.1.1: both are OEM strings regardless of the UNICODE flag.
    if domain:
        message.domain = decode_oem(domain)
    if workstation:
        message.workstation = decode_oem(workstation)
    return message


def _decode_challenge(reader: FieldReader) -> ChallengeMessage:
    data = reader.data
    message = ChallengeMessage(anomalies=reader.anomalies)
    message.flags = _flags_at(reader, CHALLENGE_FLAGS_OFFSET)
    message.server_challenge = data[CHALLENGE_SERVER_CHALLENGE_OFFSET:CHALLENGE_RESERVED_OFFSET]
    if len(data) < CHALLENGE_RESERVED_OFFSET:
        reader.note("truncated_header", f"CHALLENGE is {len(data)} bytes, ServerChallenge incomplete")
        return message
    message.reserved = data[CHALLENGE_RESERVED_OFFSET:CHALLENGE_TARGET_INFO_OFFSET]
    # The 32- and 40-byte forms predate TargetInfo; 48 is the modern header, 56 with Version.
    modern = len(data) >= CHALLENGE_HEADER
    header_size = CHALLENGE_HEADER if modern else len(data)
    field_offsets = [CHALLENGE_TARGET_NAME_OFFSET]
    if modern:
        field_offsets.append(CHALLENGE_TARGET_INFO_OFFSET)
    start = payload_start(data, field_offsets, header_size)
    with_version = CHALLENGE_VERSION_OFFSET + VERSION_LENGTH
    if start >= with_version and len(data) >= with_version:
        message.version = decode_version(data, CHALLENGE_VERSION_OFFSET, reader)
        header_size = with_version
    elif start >= with_version and len(data) > CHALLENGE_HEADER:
        reader.note("truncated_version", f"CHALLENGE is {len(data)} bytes: Version cut short")
    unicode = _has(message.flags, NegotiateFlags.NTLMSSP_NEGOTIATE_UNICODE)
    target_name = reader.payload("TargetName", CHALLENGE_TARGET_NAME_OFFSET, header_size)
    if target_name:
        message.target_name = decode_string(target_name, unicode, "TargetName", reader)
    if modern:
        target_info = reader.payload("TargetInfo", CHALLENGE_TARGET_INFO_OFFSET, header_size)
        if target_info:
            message.target_info = decode_av_pairs(target_info, "TargetInfo", reader.anomalies)
        elif target_info == b"" and _has(message.flags, NegotiateFlags.NTLMSSP_NEGOTIATE_TARGET_INFO):
            message.target_info = []
    return message


def _authenticate_header(reader: FieldReader, message: AuthenticateMessage) -> int:
    """Read NegotiateFlags, Version and MIC as far as the header has them; returns the header's size."""
    data = reader.data
    # The oldest form ends its header at 52 (no session key, no flags); the payload start tells which form it is.
    start = payload_start(data, [offset for _, offset in AUTHENTICATE_FIELDS], AUTHENTICATE_HEADER)
    if not (start >= AUTHENTICATE_HEADER and len(data) >= AUTHENTICATE_HEADER):
        return AUTHENTICATE_LEGACY_HEADER
    message.flags = NegotiateFlags(reader.u32(AUTHENTICATE_FLAGS_OFFSET) or 0)
    # Room between the header and the payload says which optional fields exist (as pyspnego and Windows read it):
    # >= 88: Version + MIC, 80..87: MIC only, 72..79: Version only.
    with_version = AUTHENTICATE_VERSION_OFFSET + VERSION_LENGTH
    with_mic = AUTHENTICATE_HEADER + MIC_LENGTH
    with_both = with_version + MIC_LENGTH
    if start >= with_both and len(data) >= with_both:
        message.version = decode_version(data, AUTHENTICATE_VERSION_OFFSET, reader)
        message.mic = data[with_version:with_both]
        return with_both
    if start >= with_mic and len(data) >= with_mic:
        message.mic = data[AUTHENTICATE_HEADER:with_mic]
        return with_mic
    if start >= with_version and len(data) >= with_version:
        message.version = decode_version(data, AUTHENTICATE_VERSION_OFFSET, reader)
        return with_version
    return AUTHENTICATE_HEADER


def _decode_authenticate(reader: FieldReader) -> AuthenticateMessage:
    data = reader.data
    message = AuthenticateMessage(anomalies=reader.anomalies)
    if len(data) < AUTHENTICATE_LEGACY_HEADER:
        reader.note("truncated_header", f"AUTHENTICATE is {len(data)} bytes, field headers cut short")
    header_size = _authenticate_header(reader, message)
    values = {name: reader.payload(name, offset, header_size) for name, offset in AUTHENTICATE_FIELDS}
    if header_size == AUTHENTICATE_LEGACY_HEADER:
        unicode = _looks_unicode(values)
    else:
        unicode = _has(message.flags, NegotiateFlags.NTLMSSP_NEGOTIATE_UNICODE)
    for name, attribute in (("DomainName", "domain"), ("UserName", "user"), ("Workstation", "workstation")):
        raw = values[name]
        if raw:
            setattr(message, attribute, decode_string(raw, unicode, name, reader))
    message.lm_response = values["LmChallengeResponse"] or b""
    message.nt_response = values["NtChallengeResponse"] or b""
    message.session_key = values["EncryptedRandomSessionKey"] or b""
    _classify_responses(message, reader)
    return message


def _looks_unicode(values: dict[str, bytes | None]) -> bool:
    # Without flags, UTF-16LE ASCII text shows as every other byte zero.
    sample = b"".join(values[name] or b"" for name in ("DomainName", "UserName", "Workstation"))
    return len(sample) >= 2 and len(sample) % 2 == 0 and sample[1::2].count(0) == len(sample) // 2


def _classify_responses(message: AuthenticateMessage, reader: FieldReader) -> None:
    """Name the NTLM variant from response lengths (3.3.1, 3.3.2) and decode the NTLMv2 blob."""
    nt, lm = message.nt_response, message.lm_response
    if not nt and (not lm or lm == b"\x00"):
        message.ntlm_version = NtlmVersion.ANONYMOUS
    elif len(nt) == NTLMV1_RESPONSE_LENGTH:
        ess_flag = _has(message.flags, NegotiateFlags.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY)
        # 3.3.1 with extended session security: LM response is the 8-byte client challenge padded with zeros.
        ess_shape = len(lm) == NTLMV1_RESPONSE_LENGTH and not any(lm[8:])
        message.ntlm_version = NtlmVersion.NTLMV1_ESS if ess_flag or ess_shape else NtlmVersion.NTLMV1
    elif len(nt) > NTLMV1_RESPONSE_LENGTH:
        message.ntlm_version = NtlmVersion.NTLMV2
        message.ntlmv2 = _decode_ntlmv2_response(nt, reader)
    elif not nt:
        reader.note("lm_only_response", f"no NT response, LM response of {len(lm)} bytes")
    else:
        reader.note("bad_nt_response", f"NtChallengeResponse of {len(nt)} bytes is neither NTLMv1 nor NTLMv2")


def _decode_ntlmv2_response(nt: bytes, reader: FieldReader) -> NtlmV2Response:
    """NTLMv2_RESPONSE (2.2.2.8): NTProofStr, then the NTLMv2_CLIENT_CHALLENGE (2.2.2.7)."""
    response = NtlmV2Response(nt_proof_str=nt[:NT_PROOF_STR_LENGTH])
    blob = nt[NT_PROOF_STR_LENGTH:]
    if len(blob) < CLIENT_CHALLENGE_AV_PAIRS_OFFSET:
        reader.note(
            "truncated_ntlmv2_blob",
            f"NTLMv2 client challenge is {len(blob)} bytes, expected >= {CLIENT_CHALLENGE_AV_PAIRS_OFFSET}",
        )
        return response
    response.resp_type, response.hi_resp_type = blob[0], blob[1]
    if (response.resp_type, response.hi_resp_type) != (1, 1):
        reader.note("bad_ntlmv2_blob", f"RespType/HiRespType are {blob[0]}/{blob[1]}, expected 1/1")
    response.timestamp = FileTime(int.from_bytes(blob[8:16], "little"))
    if response.timestamp.as_datetime is None:
        reader.note("timestamp_out_of_range", f"NTLMv2 TimeStamp {blob[8:16].hex()} is not a valid date")
    response.client_challenge = blob[16:24]
    response.av_pairs = decode_av_pairs(blob[CLIENT_CHALLENGE_AV_PAIRS_OFFSET:], "NTLMv2 AvPairs", reader.anomalies)
    return response
