"""Bounded reading of one message: payload fields, strings, VERSION and AV_PAIR lists.

Nothing here reads past the end of the message or raises on hostile lengths and offsets; what does not fit is cut,
and each irregularity becomes an :class:`~dissectors.ntlmssp.values.Anomaly`.
"""

from __future__ import annotations

import itertools
from typing import Any

from dissectors.ntlmssp.spec import (
    AV_ID_NAMES,
    AV_PAIR_HEADER,
    FIELD_HEADER,
    FIXED_AV_LENGTHS,
    KNOWN_AV_IDS,
    MAX_AV_PAIRS,
    SINGLE_HOST_LENGTH,
    STRING_AV_IDS,
    VERSION_LENGTH,
    AvFlags,
    AvId,
)
from dissectors.ntlmssp.values import Anomaly, AvPair, FileTime, Version


class FieldReader:
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
        if offset + FIELD_HEADER.size > len(self.data):
            return None
        return FIELD_HEADER.unpack_from(self.data, offset)

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


def payload_start(data: bytes, header_offsets: list[int], header_size: int) -> int:
    """Where the payload begins: the lowest offset of a non-empty field (MS-NLMP puts Version/MIC before it)."""
    offsets = []
    for header_offset in header_offsets:
        if header_offset + FIELD_HEADER.size <= len(data):
            length, _max, offset = FIELD_HEADER.unpack_from(data, header_offset)
            if length:
                offsets.append(offset)
    if offsets:
        return min(offsets)
    return len(data)


def decode_unicode(raw: bytes, name: str, reader: FieldReader) -> str:
    if len(raw) % 2:
        reader.note("bad_utf16", f"{name}: odd length {len(raw)} for a UTF-16 string")
    try:
        return raw.decode("utf-16-le")
    except UnicodeDecodeError:
        if len(raw) % 2 == 0:
            reader.note("bad_utf16", f"{name}: invalid UTF-16 (unpaired surrogate)")
        return raw.decode("utf-16-le", errors="replace")


def decode_oem(raw: bytes) -> str:
    # The OEM code page is the sender's; modern non-Windows clients send UTF-8, older ones a single-byte page.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def decode_string(raw: bytes, unicode: bool, name: str, reader: FieldReader) -> str:
    return decode_unicode(raw, name, reader) if unicode else decode_oem(raw)


def decode_version(data: bytes, offset: int, reader: FieldReader) -> Version | None:
    if offset + VERSION_LENGTH > len(data):
        reader.note("truncated_version", f"Version at {offset} runs past the message end")
        return None
    version = Version.unpack(data[offset : offset + VERSION_LENGTH])
    if version.revision not in (0x0A, 0x0F):
        reader.note("unusual_ntlm_revision", f"NTLMRevisionCurrent is {version.revision}, expected 15")
    return version


def decode_av_pairs(data: bytes, where: str, anomalies: list[Anomaly]) -> list[AvPair]:
    """Decode an AV_PAIR list (2.2.2.1), stopping at MsvAvEOL; problems become anomalies."""
    reader = FieldReader(data, anomalies)
    pairs: list[AvPair] = []
    seen: set[int] = set()
    duplicated: set[int] = set()
    offset = 0
    skipped = 0
    terminated = False
    while offset + AV_PAIR_HEADER.size <= len(data):
        av_id, av_len = AV_PAIR_HEADER.unpack_from(data, offset)
        value_start = offset + AV_PAIR_HEADER.size
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
        if av_id in seen and av_id in KNOWN_AV_IDS and av_id not in duplicated:
            # Once per id: a hostile list of thousands of repeats must not become thousands of anomalies.
            duplicated.add(av_id)
            reader.note("duplicate_av_pair", f"{where}: {AvPair(av_id, b'').name} appears more than once")
        seen.add(av_id)
        if len(pairs) >= MAX_AV_PAIRS:
            skipped += 1
            continue
        pairs.append(AvPair(av_id, raw, decode_av_value(av_id, raw, where, reader)))
    if skipped:
        reader.note("too_many_av_pairs", f"{where}: {skipped} AV pairs beyond the first {MAX_AV_PAIRS} not kept")
    if not terminated:
        reader.note("unterminated_av_list", f"{where}: no MsvAvEOL before the end of the list")
    elif any(data[offset:]):
        reader.note("data_after_eol", f"{where}: {len(data) - offset} non-zero bytes follow MsvAvEOL")
    return pairs


def decode_av_value(av_id: int, raw: bytes, where: str, reader: FieldReader) -> Any:
    """An AV pair's value by its AvId: text, MsvAvFlags, FILETIME, Single_Host_Data (2.2.2.2), else the bytes."""
    if av_id in STRING_AV_IDS:
        return decode_unicode(raw, f"{where} {AV_ID_NAMES[av_id]}", reader)
    expected = FIXED_AV_LENGTHS.get(av_id)  # type: ignore[call-overload]
    if expected is not None and len(raw) != expected:
        reader.note("bad_av_length", f"{where}: {AV_ID_NAMES[av_id]} has {len(raw)} bytes, expected {expected}")
        return raw
    if av_id == AvId.MsvAvFlags:
        return AvFlags(int.from_bytes(raw, "little"))
    if av_id == AvId.MsvAvTimestamp:
        stamp = FileTime(int.from_bytes(raw, "little"))
        if stamp.as_datetime is None:
            reader.note("timestamp_out_of_range", f"{where}: MsvAvTimestamp {raw.hex()} is not a valid date")
        return stamp
    if av_id == AvId.MsvAvSingleHost:
        if len(raw) < SINGLE_HOST_LENGTH:
            reader.note(
                "bad_av_length", f"{where}: MsvAvSingleHost has {len(raw)} bytes, expected >= {SINGLE_HOST_LENGTH}"
            )
            return raw
        return {
            "size": int.from_bytes(raw[0:4], "little"),
            "custom_data": raw[8:16].hex(),
            "machine_id": raw[16:48].hex(),
        }
    return raw
