"""Value structures of [MS-NLMP] messages: VERSION, FILETIME, AV_PAIR, and the anomalies met while decoding."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dissectors.ntlmssp.spec import AV_ID_NAMES, AvFlags, av_flag_names
from dissectors.ntlmssp.windows_builds import windows_release

# VERSION (2.2.2.10): ProductMajorVersion, ProductMinorVersion, ProductBuild (16 bits), Reserved (3 bytes),
# NTLMRevisionCurrent.
_VERSION = struct.Struct("<BBH3xB")


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
        return _VERSION.pack(self.major, self.minor, self.build, self.revision)

    @classmethod
    def unpack(cls, data: bytes) -> Version:
        major, minor, build, revision = _VERSION.unpack(data)
        return cls(major, minor, build, revision)


_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)
_TICKS_PER_MICROSECOND = 10


@dataclass(frozen=True)
class FileTime:
    """FILETIME (MS-DTYP 2.3.3): 100 ns ticks since 1601-01-01 UTC, kept exact."""

    ticks: int

    @classmethod
    def from_datetime(cls, moment: datetime) -> FileTime:
        """The FILETIME of an aware datetime (exact to its microsecond)."""
        if moment.tzinfo is None:
            raise ValueError("a FILETIME is UTC: give an aware datetime")
        return cls((moment - _FILETIME_EPOCH) // timedelta(microseconds=1) * _TICKS_PER_MICROSECOND)

    @property
    def as_datetime(self) -> datetime | None:
        """The moment as an aware datetime (microsecond precision); None beyond datetime's range."""
        try:
            return _FILETIME_EPOCH + timedelta(microseconds=self.ticks // _TICKS_PER_MICROSECOND)
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

    def pack(self) -> bytes:
        """The 64-bit little-endian wire form."""
        return self.ticks.to_bytes(8, "little")


@dataclass
class AvPair:
    """One AV_PAIR (2.2.2.1); ``value`` is decoded by type, ``raw`` always keeps the bytes."""

    av_id: int
    raw: bytes
    value: Any = None

    @property
    def name(self) -> str:
        name = AV_ID_NAMES.get(self.av_id)
        return f"unknown_0x{self.av_id:04x}" if name is None else name

    def to_dict(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, FileTime):
            value = value.isoformat()
        elif isinstance(value, bytes):
            value = value.hex()
        elif isinstance(value, AvFlags):
            value = av_flag_names(int(value))
        return {"id": self.av_id, "name": self.name, "value": value, "raw": self.raw.hex()}
