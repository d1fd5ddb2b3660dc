"""[MS-NLMP] wire constants: the signature, message types, flags, AV pair ids and the fixed header layouts.

Each table names the section of [MS-NLMP] (or [MS-DTYP]) it transcribes, so that the decoder and the builders read
and write offsets from one place.
"""

from __future__ import annotations

import enum
import functools
import struct

SIGNATURE = b"NTLMSSP\x00"

# The stable schema names (README, docs/schema.md): what a CHALLENGE tells of the server, what NEGOTIATE and
# AUTHENTICATE tell of the client.
SERVER_FIELDS = (
    "target_name",
    "netbios_computer",
    "netbios_domain",
    "dns_computer",
    "dns_domain",
    "dns_tree",
    "server_time",
    "os_version",
    "os_release",
    "flags",
)
CLIENT_FIELDS = ("user", "domain", "workstation", "ntlm_version", "client_os_version", "spn")

# Field tables are bounded by the message itself; this caps what one hostile message can make us keep.
MAX_AV_PAIRS = 256

# A payload field's header (2.2.1.1-3 "...Fields"): Len, MaxLen (both 16 bits) and a 32-bit BufferOffset from the
# start of the message.
FIELD_HEADER = struct.Struct("<HHI")
# AV_PAIR (2.2.2.1): AvId and AvLen, 16 bits each, then AvLen bytes of value.
AV_PAIR_HEADER = struct.Struct("<HH")
# Len and MaxLen are 16-bit: no field, AV pair value or AV pair list can be longer.
MAX_FIELD_LENGTH = 0xFFFF


class MessageType(enum.IntEnum):
    """MessageType field (2.2.1)."""

    NEGOTIATE = 1
    CHALLENGE = 2
    AUTHENTICATE = 3


class NegotiateFlags(enum.IntFlag):
    """NEGOTIATE structure (2.2.2.5). Every one of the 32 bits is named, reserved ones included."""

    NTLMSSP_NEGOTIATE_UNICODE = 0x00000001
    NTLMSSP_NEGOTIATE_OEM = 0x00000002
    NTLMSSP_REQUEST_TARGET = 0x00000004
    NTLMSSP_RESERVED_R10 = 0x00000008
    NTLMSSP_NEGOTIATE_SIGN = 0x00000010
    NTLMSSP_NEGOTIATE_SEAL = 0x00000020
    NTLMSSP_NEGOTIATE_DATAGRAM = 0x00000040
    NTLMSSP_NEGOTIATE_LM_KEY = 0x00000080
    NTLMSSP_RESERVED_R9 = 0x00000100
    NTLMSSP_NEGOTIATE_NTLM = 0x00000200
    NTLMSSP_RESERVED_R8 = 0x00000400
    NTLMSSP_ANONYMOUS = 0x00000800
    NTLMSSP_NEGOTIATE_OEM_DOMAIN_SUPPLIED = 0x00001000
    NTLMSSP_NEGOTIATE_OEM_WORKSTATION_SUPPLIED = 0x00002000
    NTLMSSP_RESERVED_R7 = 0x00004000
    NTLMSSP_NEGOTIATE_ALWAYS_SIGN = 0x00008000
    NTLMSSP_TARGET_TYPE_DOMAIN = 0x00010000
    NTLMSSP_TARGET_TYPE_SERVER = 0x00020000
    NTLMSSP_RESERVED_R6 = 0x00040000
    NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000
    NTLMSSP_NEGOTIATE_IDENTIFY = 0x00100000
    NTLMSSP_RESERVED_R5 = 0x00200000
    NTLMSSP_REQUEST_NON_NT_SESSION_KEY = 0x00400000
    NTLMSSP_NEGOTIATE_TARGET_INFO = 0x00800000
    NTLMSSP_RESERVED_R4 = 0x01000000
    NTLMSSP_NEGOTIATE_VERSION = 0x02000000
    NTLMSSP_RESERVED_R3 = 0x04000000
    NTLMSSP_RESERVED_R2 = 0x08000000
    NTLMSSP_RESERVED_R1 = 0x10000000
    NTLMSSP_NEGOTIATE_128 = 0x20000000
    NTLMSSP_NEGOTIATE_KEY_EXCH = 0x40000000
    NTLMSSP_NEGOTIATE_56 = 0x80000000


# (bit, name), most significant first: plain ints, so that naming a message's flags costs no enum arithmetic.
_FLAG_BITS = tuple((int(m), m.name or "") for m in sorted(NegotiateFlags, key=int, reverse=True))


# Flag words whose names are remembered: one client or server software sends the same word each time, so a capture
# holds a handful (a test of 32 bits per message, 3% of the detectors' work, otherwise); hostile words only
# churn the cache.
FLAG_WORDS_REMEMBERED = 1024


def flag_names(flags: int) -> list[str]:
    """Names of the set bits, most significant first (as Wireshark and pyspnego list them)."""
    return list(_flag_names(int(flags)))


@functools.lru_cache(maxsize=FLAG_WORDS_REMEMBERED)
def _flag_names(flags: int) -> tuple[str, ...]:
    return tuple(name for bit, name in _FLAG_BITS if flags & bit)


class AvId(enum.IntEnum):
    """AV_PAIR AvId values (2.2.2.1)."""

    MsvAvEOL = 0x0000
    MsvAvNbComputerName = 0x0001
    MsvAvNbDomainName = 0x0002
    MsvAvDnsComputerName = 0x0003
    MsvAvDnsDomainName = 0x0004
    MsvAvDnsTreeName = 0x0005
    MsvAvFlags = 0x0006
    MsvAvTimestamp = 0x0007
    MsvAvSingleHost = 0x0008
    MsvAvTargetName = 0x0009
    MsvAvChannelBindings = 0x000A


class AvFlags(enum.IntFlag):
    """MsvAvFlags value (2.2.2.1)."""

    ACCOUNT_AUTHENTICATION_CONSTRAINED = 0x00000001
    MIC_PROVIDED = 0x00000002
    UNTRUSTED_SPN_SOURCE = 0x00000004


def av_flag_names(value: int) -> list[str]:
    """Names of the set MsvAvFlags bits; bits the spec does not define are kept as one hex number."""
    names = [m.name or "" for m in AvFlags if value & m]
    unknown = value & ~sum(AvFlags)
    if unknown:
        names.append(f"0x{unknown:08x}")
    return names


# AV pairs whose value is a UTF-16LE string without terminator (2.2.2.1), and those of a fixed size: MsvAvFlags is
# 32 bits, MsvAvTimestamp a FILETIME, MsvAvChannelBindings an MD5 hash.
STRING_AV_IDS = frozenset(
    {
        AvId.MsvAvNbComputerName,
        AvId.MsvAvNbDomainName,
        AvId.MsvAvDnsComputerName,
        AvId.MsvAvDnsDomainName,
        AvId.MsvAvDnsTreeName,
        AvId.MsvAvTargetName,
    }
)
KNOWN_AV_IDS = frozenset(int(member) for member in AvId)
# Their names, looked up without an enum call (one per AV pair decoded).
AV_ID_NAMES = {int(member): member.name for member in AvId}
FIXED_AV_LENGTHS = {AvId.MsvAvFlags: 4, AvId.MsvAvTimestamp: 8, AvId.MsvAvChannelBindings: 16}
# Single_Host_Data (2.2.2.2): Size, Z4, CustomData[8], MachineID[32].
SINGLE_HOST_LENGTH = 48

# The schema's names for AV pairs (the decoded messages' attribute names), accepted by the builders beside the
# AvId names.
AV_NAMES: dict[str, AvId] = {
    "netbios_computer": AvId.MsvAvNbComputerName,
    "netbios_domain": AvId.MsvAvNbDomainName,
    "dns_computer": AvId.MsvAvDnsComputerName,
    "dns_domain": AvId.MsvAvDnsDomainName,
    "dns_tree": AvId.MsvAvDnsTreeName,
    "av_flags": AvId.MsvAvFlags,
    "timestamp": AvId.MsvAvTimestamp,
    "single_host": AvId.MsvAvSingleHost,
    "spn": AvId.MsvAvTargetName,
    "channel_bindings": AvId.MsvAvChannelBindings,
}


class NtlmVersion(enum.StrEnum):
    """The response variant an AUTHENTICATE carries: NTLM v1 (3.3.1, with or without extended session security),
    NTLM v2 (3.3.2), or the anonymous response (3.2.5.1.2: empty NT response, LM response empty or one zero byte)."""

    NTLMV1 = "NTLMv1"
    NTLMV1_ESS = "NTLMv1-ESS"
    NTLMV2 = "NTLMv2"
    ANONYMOUS = "anonymous"


# ---- fixed header layouts: offsets from the start of the message ----------------------------------------------------

# Every message: Signature (8 bytes) then MessageType (32 bits).
MESSAGE_TYPE_OFFSET = 8
VERSION_LENGTH = 8  # VERSION (2.2.2.10)
MIC_LENGTH = 16  # MIC of the AUTHENTICATE_MESSAGE (2.2.1.3)

# NEGOTIATE_MESSAGE (2.2.1.1): NegotiateFlags, DomainNameFields, WorkstationFields, then an optional Version.
NEGOTIATE_FLAGS_OFFSET = 12
NEGOTIATE_FIELDS = (("DomainName", 16), ("Workstation", 24))
NEGOTIATE_HEADER = 32
NEGOTIATE_VERSION_OFFSET = 32

# CHALLENGE_MESSAGE (2.2.1.2): TargetNameFields, NegotiateFlags, ServerChallenge, Reserved, TargetInfoFields, then an
# optional Version. The oldest servers end the header at 32 or 40 bytes, before TargetInfoFields.
CHALLENGE_TARGET_NAME_OFFSET = 12
CHALLENGE_FLAGS_OFFSET = 20
CHALLENGE_SERVER_CHALLENGE_OFFSET = 24
CHALLENGE_RESERVED_OFFSET = 32
CHALLENGE_TARGET_INFO_OFFSET = 40
CHALLENGE_HEADER = 48
CHALLENGE_VERSION_OFFSET = 48
SERVER_CHALLENGE_LENGTH = 8

# AUTHENTICATE_MESSAGE (2.2.1.3): six field headers, NegotiateFlags, then Version and MIC when present. The oldest
# clients end the header at 52 bytes, before the session key and the flags.
AUTHENTICATE_FIELDS = (
    ("LmChallengeResponse", 12),
    ("NtChallengeResponse", 20),
    ("DomainName", 28),
    ("UserName", 36),
    ("Workstation", 44),
    ("EncryptedRandomSessionKey", 52),
)
AUTHENTICATE_LEGACY_HEADER = 52
AUTHENTICATE_FLAGS_OFFSET = 60
AUTHENTICATE_HEADER = 64
AUTHENTICATE_VERSION_OFFSET = 64

# NTLMv2_RESPONSE (2.2.2.8): NTProofStr (16 bytes) then NTLMv2_CLIENT_CHALLENGE (2.2.2.7): RespType, HiRespType,
# Reserved1 (2), Reserved2 (4), TimeStamp (8), ChallengeFromClient (8), Reserved3 (4), then the AvPairs.
NT_PROOF_STR_LENGTH = 16
CLIENT_CHALLENGE_RESPONSE_VERSION = 1  # RespType and HiRespType
CLIENT_CHALLENGE_TIMESTAMP_OFFSET = 8
CLIENT_CHALLENGE_CHALLENGE_OFFSET = 16
CLIENT_CHALLENGE_AV_PAIRS_OFFSET = 28
CLIENT_CHALLENGE_LENGTH = 8
NTLMV1_RESPONSE_LENGTH = 24  # 2.2.2.3 LM_RESPONSE and 2.2.2.6 NTLM v1 response
