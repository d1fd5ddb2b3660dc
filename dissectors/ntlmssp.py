"""NTLMSSP message decoder and NEGOTIATE builder, after [MS-NLMP] section 2.2.

Traffic is attacker-controlled, so every offset and length is checked against the message. A message that carries
the NTLMSSP signature always decodes: whatever could be read is returned together with a list of named
:class:`Anomaly` entries. Only input that is not NTLMSSP at all raises :class:`DecodeError`.
"""

from __future__ import annotations

import enum
import itertools
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dissectors.windows_builds import windows_release

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


class DecodeError(ValueError):
    """Raised when the input is not an NTLMSSP message (no ``NTLMSSP\\0`` signature)."""


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


def flag_names(flags: int) -> list[str]:
    """Names of the set bits, most significant first (as Wireshark and pyspnego list them)."""
    return [member.name or "" for member in sorted(NegotiateFlags, key=int, reverse=True) if flags & member]


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


_STRING_AV_IDS = {
    AvId.MsvAvNbComputerName,
    AvId.MsvAvNbDomainName,
    AvId.MsvAvDnsComputerName,
    AvId.MsvAvDnsDomainName,
    AvId.MsvAvDnsTreeName,
    AvId.MsvAvTargetName,
}
_KNOWN_AV_IDS = frozenset(int(member) for member in AvId)
_FIXED_AV_LENGTHS = {AvId.MsvAvFlags: 4, AvId.MsvAvTimestamp: 8, AvId.MsvAvChannelBindings: 16}


@dataclass(frozen=True)
class Anomaly:
    """A named irregularity found while decoding; ``code`` is stable, ``detail`` is for people."""

    code: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


@dataclass(frozen=True)
class Version:
    """VERSION structure (2.2.2.10)."""

    major: int
    minor: int
    build: int
    revision: int = 15  # NTLMSSP_REVISION_W2K3

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.build}"

    @property
    def release(self) -> str:
        return windows_release(self.major, self.minor, self.build)

    def pack(self) -> bytes:
        return struct.pack("<BBH3xB", self.major, self.minor, self.build, self.revision)

    @classmethod
    def unpack(cls, data: bytes) -> Version:
        major, minor, build, revision = struct.unpack("<BBH3xB", data)
        return cls(major, minor, build, revision)


_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FileTime:
    """FILETIME (MS-DTYP 2.3.3): 100 ns ticks since 1601-01-01 UTC, kept exact."""

    ticks: int

    @property
    def as_datetime(self) -> datetime | None:
        """The moment as an aware datetime (microsecond precision); None beyond datetime's range."""
        try:
            return _FILETIME_EPOCH + timedelta(microseconds=self.ticks // 10)
        except OverflowError:
            return None

    def isoformat(self) -> str | None:
        """ISO 8601 UTC with the full 100 ns precision, e.g. ``2020-04-30T02:46:22.4140792Z``."""
        moment = self.as_datetime
        if moment is None:
            return None
        text = moment.replace(microsecond=0, tzinfo=None).isoformat()
        fraction = f"{self.ticks % 10_000_000:07d}".rstrip("0")
        return f"{text}.{fraction}Z" if fraction else f"{text}Z"


@dataclass
class AvPair:
    """One AV_PAIR; ``value`` is decoded by type, ``raw`` always keeps the bytes."""

    av_id: int
    raw: bytes
    value: Any = None

    @property
    def name(self) -> str:
        try:
            return AvId(self.av_id).name
        except ValueError:
            return f"unknown_0x{self.av_id:04x}"

    def to_dict(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, FileTime):
            value = value.isoformat()
        elif isinstance(value, bytes):
            value = value.hex()
        elif isinstance(value, AvFlags):
            value = _av_flag_names(int(value))
        return {"id": self.av_id, "name": self.name, "value": value, "raw": self.raw.hex()}


def _av_flag_names(value: int) -> list[str]:
    names = [m.name or "" for m in AvFlags if value & m]
    unknown = value & ~sum(AvFlags)
    if unknown:
        names.append(f"0x{unknown:08x}")
    return names


class _Reader:
    """Bounds-checked access to one message; records anomalies instead of raising."""

    def __init__(self, data: bytes, anomalies: list[Anomaly]) -> None:
        self.data = data
        self.anomalies = anomalies
        self.fields: list[tuple[str, int, int]] = []

    def note(self, code: str, detail: str) -> None:
        self.anomalies.append(Anomaly(code, detail))

    def u32(self, offset: int) -> int | None:
        if offset + 4 > len(self.data):
            return None
        return int.from_bytes(self.data[offset : offset + 4], "little")

    def field_header(self, offset: int) -> tuple[int, int, int] | None:
        """A (Len, MaxLen, BufferOffset) triple at ``offset``, or None when the header ends first."""
        if offset + 8 > len(self.data):
            return None
        return struct.unpack_from("<HHI", self.data, offset)

    def payload(self, name: str, header_offset: int, header_size: int) -> bytes | None:
        """Bytes a field header points at; out-of-range parts are cut and reported, never read past the end."""
        triple = self.field_header(header_offset)
        if triple is None:
            return None
        length, max_length, offset = triple
        if length == 0:
            return b""
        if max_length != length and max_length != 0:
            self.note("length_mismatch", f"{name}: Len {length} != MaxLen {max_length}")
        if offset < header_size:
            self.note("field_in_header", f"{name}: offset {offset} points inside the {header_size}-byte header")
        end = offset + length
        if end > len(self.data):
            self.note(
                "field_beyond_end", f"{name}: offset {offset} + length {length} > message length {len(self.data)}"
            )
            end = len(self.data)
        self.fields.append((name, offset, end))
        return self.data[offset:end] if offset < end else b""

    def check_overlaps(self) -> None:
        spans = sorted((start, end, name) for name, start, end in self.fields if end > start)
        for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
            if s2 < e1:
                self.note("overlapping_fields", f"{n1} and {n2} share bytes {s2}..{min(e1, _e2)}")


def _payload_start(data: bytes, header_offsets: list[int], header_size: int) -> int:
    """Where the payload begins: the lowest offset of a non-empty field (MS-NLMP puts Version/MIC before it)."""
    offsets = []
    for header_offset in header_offsets:
        if header_offset + 8 <= len(data):
            length, _max, offset = struct.unpack_from("<HHI", data, header_offset)
            if length:
                offsets.append(offset)
    if offsets:
        return min(offsets)
    return len(data)


def _decode_unicode(raw: bytes, name: str, reader: _Reader) -> str:
    if len(raw) % 2:
        reader.note("bad_utf16", f"{name}: odd length {len(raw)} for a UTF-16 string")
    try:
        return raw.decode("utf-16-le")
    except UnicodeDecodeError:
        if len(raw) % 2 == 0:
            reader.note("bad_utf16", f"{name}: invalid UTF-16 (unpaired surrogate)")
        return raw.decode("utf-16-le", errors="replace")


def _decode_oem(raw: bytes) -> str:
    # The OEM code page is the sender's; modern non-Windows clients send UTF-8, older ones a single-byte page.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _decode_string(raw: bytes, unicode: bool, name: str, reader: _Reader) -> str:
    return _decode_unicode(raw, name, reader) if unicode else _decode_oem(raw)


def _decode_version(data: bytes, offset: int, reader: _Reader) -> Version | None:
    if offset + 8 > len(data):
        reader.note("truncated_version", f"Version at {offset} runs past the message end")
        return None
    version = Version.unpack(data[offset : offset + 8])
    if version.revision not in (0x0A, 0x0F):
        reader.note("unusual_ntlm_revision", f"NTLMRevisionCurrent is {version.revision}, expected 15")
    return version


def decode_av_pairs(data: bytes, where: str, anomalies: list[Anomaly]) -> list[AvPair]:
    """Decode an AV_PAIR list (2.2.2.1), stopping at MsvAvEOL; problems become anomalies."""
    reader = _Reader(data, anomalies)
    pairs: list[AvPair] = []
    seen: set[int] = set()
    duplicated: set[int] = set()
    offset = 0
    skipped = 0
    terminated = False
    while offset + 4 <= len(data):
        av_id, av_len = struct.unpack_from("<HH", data, offset)
        value_start = offset + 4
        offset = value_start + av_len
        if av_id == AvId.MsvAvEOL:
            if av_len:
                reader.note("bad_av_length", f"{where}: MsvAvEOL with length {av_len}")
            terminated = True
            break
        raw = data[value_start : min(offset, len(data))]
        if offset > len(data):
            reader.note(
                "av_pair_beyond_end",
                f"{where}: AV pair 0x{av_id:04x} length {av_len} runs {offset - len(data)} bytes past the end",
            )
        if av_id in seen and av_id in _KNOWN_AV_IDS and av_id not in duplicated:
            # Once per id: a hostile list of thousands of repeats must not become thousands of anomalies.
            duplicated.add(av_id)
            reader.note("duplicate_av_pair", f"{where}: {AvPair(av_id, b'').name} appears more than once")
        seen.add(av_id)
        if len(pairs) >= MAX_AV_PAIRS:
            skipped += 1
            continue
        pairs.append(AvPair(av_id, raw, _decode_av_value(av_id, raw, where, reader)))
    if skipped:
        reader.note("too_many_av_pairs", f"{where}: {skipped} AV pairs beyond the first {MAX_AV_PAIRS} not kept")
    if not terminated:
        reader.note("unterminated_av_list", f"{where}: no MsvAvEOL before the end of the list")
    elif any(data[offset:]):
        reader.note("data_after_eol", f"{where}: {len(data) - offset} non-zero bytes follow MsvAvEOL")
    return pairs


def _decode_av_value(av_id: int, raw: bytes, where: str, reader: _Reader) -> Any:
    if av_id in _STRING_AV_IDS:
        return _decode_unicode(raw, f"{where} {AvId(av_id).name}", reader)
    expected = _FIXED_AV_LENGTHS.get(av_id)  # type: ignore[call-overload]
    if expected is not None and len(raw) != expected:
        reader.note("bad_av_length", f"{where}: {AvId(av_id).name} has {len(raw)} bytes, expected {expected}")
        return raw
    if av_id == AvId.MsvAvFlags:
        return AvFlags(int.from_bytes(raw, "little"))
    if av_id == AvId.MsvAvTimestamp:
        stamp = FileTime(int.from_bytes(raw, "little"))
        if stamp.as_datetime is None:
            reader.note("timestamp_out_of_range", f"{where}: MsvAvTimestamp {raw.hex()} is not a valid date")
        return stamp
    if av_id == AvId.MsvAvSingleHost:
        # Single_Host_Data (2.2.2.2): Size, Z4, CustomData[8], MachineID[32]
        if len(raw) < 48:
            reader.note("bad_av_length", f"{where}: MsvAvSingleHost has {len(raw)} bytes, expected >= 48")
            return raw
        return {
            "size": int.from_bytes(raw[0:4], "little"),
            "custom_data": raw[8:16].hex(),
            "machine_id": raw[16:48].hex(),
        }
    return raw


def _av_lookup(pairs: list[AvPair] | None, av_id: AvId) -> Any:
    for pair in pairs or ():
        if pair.av_id == av_id:
            return pair.value
    return None


def _av_string(pairs: list[AvPair] | None, av_id: AvId) -> str | None:
    value = _av_lookup(pairs, av_id)
    return value if isinstance(value, str) else None


@dataclass
class NtlmMessage:
    """Fields common to all messages."""

    flags: NegotiateFlags = field(default_factory=lambda: NegotiateFlags(0))
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
        return _av_string(self.target_info, AvId.MsvAvNbComputerName)

    @property
    def netbios_domain(self) -> str | None:
        return _av_string(self.target_info, AvId.MsvAvNbDomainName)

    @property
    def dns_computer(self) -> str | None:
        return _av_string(self.target_info, AvId.MsvAvDnsComputerName)

    @property
    def dns_domain(self) -> str | None:
        return _av_string(self.target_info, AvId.MsvAvDnsDomainName)

    @property
    def dns_tree(self) -> str | None:
        return _av_string(self.target_info, AvId.MsvAvDnsTreeName)

    @property
    def server_time(self) -> FileTime | None:
        value = _av_lookup(self.target_info, AvId.MsvAvTimestamp)
        return value if isinstance(value, FileTime) else None

    def to_dict(self) -> dict[str, Any]:
        result = super().to_dict()
        result.update(
            target_name=self.target_name,
            netbios_computer=self.netbios_computer,
            netbios_domain=self.netbios_domain,
            dns_computer=self.dns_computer,
            dns_domain=self.dns_domain,
            dns_tree=self.dns_tree,
            server_time=self.server_time.isoformat() if self.server_time else None,
            os_version=str(self.version) if self.version else None,
            os_release=self.version.release if self.version else None,
            server_challenge=self.server_challenge.hex(),
            av_pairs=[p.to_dict() for p in self.target_info] if self.target_info is not None else None,
        )
        return result


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
        return _av_string(self.av_pairs, AvId.MsvAvTargetName)

    @property
    def av_flags(self) -> AvFlags | None:
        value = _av_lookup(self.av_pairs, AvId.MsvAvFlags)
        return value if isinstance(value, AvFlags) else None

    @property
    def channel_bindings(self) -> bytes | None:
        value = _av_lookup(self.av_pairs, AvId.MsvAvChannelBindings)
        return value if isinstance(value, bytes) else None


class NtlmVersion(enum.StrEnum):
    NTLMV1 = "NTLMv1"
    NTLMV1_ESS = "NTLMv1-ESS"
    NTLMV2 = "NTLMv2"
    ANONYMOUS = "anonymous"


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
            av_flags=_av_flag_names(int(av_flags)) if av_flags is not None else None,
            av_pairs=[p.to_dict() for p in v2.av_pairs] if v2 else None,
        )
        return result


Message = NegotiateMessage | ChallengeMessage | AuthenticateMessage | UnknownMessage


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one NTLMSSP message.

    Raises :class:`DecodeError` only when ``data`` is not NTLMSSP (wrong type or no signature); every other problem
    is reported in the returned message's ``anomalies``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(SIGNATURE):
        raise DecodeError("not an NTLMSSP message (no NTLMSSP signature)")
    anomalies: list[Anomaly] = []
    reader = _Reader(data, anomalies)
    message_type = reader.u32(8)
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


def _flags_at(reader: _Reader, offset: int, minimum_end: int) -> NegotiateFlags:
    value = reader.u32(offset)
    if value is None:
        reader.note("truncated_header", f"message is {len(reader.data)} bytes, shorter than {minimum_end}")
        return NegotiateFlags(0)
    return NegotiateFlags(value)


def _decode_negotiate(reader: _Reader) -> NegotiateMessage:
    data = reader.data
    flags = _flags_at(reader, 12, 16)
    message = NegotiateMessage(flags=flags, anomalies=reader.anomalies)
    # Domain and workstation headers are optional in the oldest clients' 16-byte form.
    if len(data) < 32:
        if len(data) > 16:
            reader.note("truncated_header", f"NEGOTIATE is {len(data)} bytes: field headers cut short")
        return message
    header_size = 32
    payload_start = _payload_start(data, [16, 24], header_size)
    if payload_start >= 40 and len(data) >= 40:
        message.version = _decode_version(data, 32, reader)
        header_size = 40
    elif flags & NegotiateFlags.NTLMSSP_NEGOTIATE_VERSION and len(data) < 40 and payload_start >= 40:
        reader.note("truncated_version", "NEGOTIATE_VERSION set but the message ends before the Version")
    domain = reader.payload("DomainName", 16, header_size)
    workstation = reader.payload("Workstation", 24, header_size)
    # 2.2.1.1: both are OEM strings regardless of the UNICODE flag.
    if domain:
        message.domain = _decode_oem(domain)
    if workstation:
        message.workstation = _decode_oem(workstation)
    return message


def _decode_challenge(reader: _Reader) -> ChallengeMessage:
    data = reader.data
    message = ChallengeMessage(anomalies=reader.anomalies)
    message.flags = _flags_at(reader, 20, 24)
    if len(data) < 32:
        reader.note("truncated_header", f"CHALLENGE is {len(data)} bytes, ServerChallenge incomplete")
        message.server_challenge = data[24:32]
        return message
    message.server_challenge = data[24:32]
    message.reserved = data[32:40]
    # The 32- and 40-byte forms predate TargetInfo; 48 is the modern header, 56 with Version.
    header_size = 48 if len(data) >= 48 else len(data)
    payload_start = _payload_start(data, [12, 40] if len(data) >= 48 else [12], header_size)
    if payload_start >= 56 and len(data) >= 56:
        message.version = _decode_version(data, 48, reader)
        header_size = 56
    elif payload_start >= 56 and len(data) > 48:
        reader.note("truncated_version", f"CHALLENGE is {len(data)} bytes: Version cut short")
    unicode = bool(message.flags & NegotiateFlags.NTLMSSP_NEGOTIATE_UNICODE)
    target_name = reader.payload("TargetName", 12, header_size)
    if target_name:
        message.target_name = _decode_string(target_name, unicode, "TargetName", reader)
    if len(data) >= 48:
        target_info = reader.payload("TargetInfo", 40, header_size)
        if target_info:
            message.target_info = decode_av_pairs(target_info, "TargetInfo", reader.anomalies)
        elif target_info == b"" and message.flags & NegotiateFlags.NTLMSSP_NEGOTIATE_TARGET_INFO:
            message.target_info = []
    return message


_AUTH_FIELDS = [
    ("LmChallengeResponse", 12),
    ("NtChallengeResponse", 20),
    ("DomainName", 28),
    ("UserName", 36),
    ("Workstation", 44),
    ("EncryptedRandomSessionKey", 52),
]


def _decode_authenticate(reader: _Reader) -> AuthenticateMessage:
    data = reader.data
    message = AuthenticateMessage(anomalies=reader.anomalies)
    if len(data) < 52:
        reader.note("truncated_header", f"AUTHENTICATE is {len(data)} bytes, field headers cut short")
    # The oldest form ends its header at 52 (no session key, no flags); the payload start tells which form it is.
    payload_start = _payload_start(data, [offset for _, offset in _AUTH_FIELDS], 64)
    header_size = 64 if payload_start >= 64 and len(data) >= 64 else 52
    if header_size == 64:
        message.flags = NegotiateFlags(reader.u32(60) or 0)
    # Room between the header and the payload says which optional fields exist (as pyspnego and Windows read it):
    # >= 88: Version + MIC, 80..87: MIC only, 72..79: Version only.
    if payload_start >= 88 and len(data) >= 88:
        message.version = _decode_version(data, 64, reader)
        message.mic = data[72:88]
        header_size = 88
    elif payload_start >= 80 and len(data) >= 80:
        message.mic = data[64:80]
        header_size = 80
    elif payload_start >= 72 and len(data) >= 72:
        message.version = _decode_version(data, 64, reader)
        header_size = 72
    values = {name: reader.payload(name, offset, header_size) for name, offset in _AUTH_FIELDS}
    if header_size == 52:
        unicode = _looks_unicode(values)
    else:
        unicode = bool(message.flags & NegotiateFlags.NTLMSSP_NEGOTIATE_UNICODE)
    for name, attribute in (("DomainName", "domain"), ("UserName", "user"), ("Workstation", "workstation")):
        raw = values[name]
        if raw:
            setattr(message, attribute, _decode_string(raw, unicode, name, reader))
    message.lm_response = values["LmChallengeResponse"] or b""
    message.nt_response = values["NtChallengeResponse"] or b""
    message.session_key = values["EncryptedRandomSessionKey"] or b""
    _classify_responses(message, reader)
    return message


def _looks_unicode(values: dict[str, bytes | None]) -> bool:
    # Without flags, UTF-16LE ASCII text shows as every other byte zero.
    sample = b"".join(values[name] or b"" for name in ("DomainName", "UserName", "Workstation"))
    return len(sample) >= 2 and len(sample) % 2 == 0 and sample[1::2].count(0) == len(sample) // 2


def _classify_responses(message: AuthenticateMessage, reader: _Reader) -> None:
    """Name the NTLM variant from response lengths (3.3.1, 3.3.2) and decode the NTLMv2 blob."""
    nt, lm = message.nt_response, message.lm_response
    if not nt and (not lm or lm == b"\x00"):
        message.ntlm_version = NtlmVersion.ANONYMOUS
    elif len(nt) == 24:
        ess_flag = message.flags & NegotiateFlags.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY
        ess_shape = len(lm) == 24 and not any(lm[8:])
        message.ntlm_version = NtlmVersion.NTLMV1_ESS if ess_flag or ess_shape else NtlmVersion.NTLMV1
    elif len(nt) > 24:
        message.ntlm_version = NtlmVersion.NTLMV2
        message.ntlmv2 = _decode_ntlmv2_response(nt, reader)
    elif not nt:
        reader.note("lm_only_response", f"no NT response, LM response of {len(lm)} bytes")
    else:
        reader.note("bad_nt_response", f"NtChallengeResponse of {len(nt)} bytes is neither NTLMv1 nor NTLMv2")


def _decode_ntlmv2_response(nt: bytes, reader: _Reader) -> NtlmV2Response:
    response = NtlmV2Response(nt_proof_str=nt[:16])
    blob = nt[16:]
    if len(blob) < 28:
        reader.note("truncated_ntlmv2_blob", f"NTLMv2 client challenge is {len(blob)} bytes, expected >= 28")
        return response
    response.resp_type, response.hi_resp_type = blob[0], blob[1]
    if (response.resp_type, response.hi_resp_type) != (1, 1):
        reader.note("bad_ntlmv2_blob", f"RespType/HiRespType are {blob[0]}/{blob[1]}, expected 1/1")
    response.timestamp = FileTime(int.from_bytes(blob[8:16], "little"))
    if response.timestamp.as_datetime is None:
        reader.note("timestamp_out_of_range", f"NTLMv2 TimeStamp {blob[8:16].hex()} is not a valid date")
    response.client_challenge = blob[16:24]
    response.av_pairs = decode_av_pairs(blob[28:], "NTLMv2 AvPairs", reader.anomalies)
    return response


# nmap's *-ntlm-info scripts send 0xa2088207: UNICODE, OEM, REQUEST_TARGET, NTLM, ALWAYS_SIGN, ESS, VERSION, 128, 56.
PROBE_FLAGS = (
    NegotiateFlags.NTLMSSP_NEGOTIATE_UNICODE
    | NegotiateFlags.NTLMSSP_NEGOTIATE_OEM
    | NegotiateFlags.NTLMSSP_REQUEST_TARGET
    | NegotiateFlags.NTLMSSP_NEGOTIATE_NTLM
    | NegotiateFlags.NTLMSSP_NEGOTIATE_ALWAYS_SIGN
    | NegotiateFlags.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY
    | NegotiateFlags.NTLMSSP_NEGOTIATE_TARGET_INFO
    | NegotiateFlags.NTLMSSP_NEGOTIATE_VERSION
    | NegotiateFlags.NTLMSSP_NEGOTIATE_128
    | NegotiateFlags.NTLMSSP_NEGOTIATE_56
)
PROBE_VERSION = Version(10, 0, 17763, 15)


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
    flags = NegotiateFlags(flags)
    domain_bytes = domain.encode("utf-8") if domain else b""
    workstation_bytes = workstation.encode("utf-8") if workstation else b""
    if domain_bytes:
        flags |= NegotiateFlags.NTLMSSP_NEGOTIATE_OEM_DOMAIN_SUPPLIED
    if workstation_bytes:
        flags |= NegotiateFlags.NTLMSSP_NEGOTIATE_OEM_WORKSTATION_SUPPLIED
    if version is not None:
        flags |= NegotiateFlags.NTLMSSP_NEGOTIATE_VERSION
    else:
        flags &= ~NegotiateFlags.NTLMSSP_NEGOTIATE_VERSION
    header_size = 40 if version is not None else 32
    domain_offset = header_size
    workstation_offset = domain_offset + len(domain_bytes)
    if len(domain_bytes) > 0xFFFF or len(workstation_bytes) > 0xFFFF:
        raise ValueError("domain and workstation must each fit in 65535 bytes")
    header = SIGNATURE + struct.pack(
        "<II" + "HHI" * 2,
        MessageType.NEGOTIATE,
        int(flags),
        len(domain_bytes),
        len(domain_bytes),
        domain_offset if domain_bytes else 0,
        len(workstation_bytes),
        len(workstation_bytes),
        workstation_offset if workstation_bytes else 0,
    )
    if version is not None:
        header += version.pack()
    return header + domain_bytes + workstation_bytes
