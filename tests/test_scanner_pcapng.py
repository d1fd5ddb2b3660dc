"""pcapng read by the compiled scanner gives what the pure-Python reader gives (``pcapfile.PacketReader._pcapng``):
the same frames reaching reassembly, scanner counters, run counters, warnings and findings (tests/test_scanner.py's
comparison), on

- every pcapng capture of the shared corpus, whole, gzip-compressed (read through the pipe) and damaged
  (fuzz/corrupt.py's editcap errors and cuts);
- the grouping look of ring buffers' files (``rings.describe``), read through by the compiled scanner;
- crafted files: sections of both byte orders, interfaces of several link types, if_tsresol in powers of 2 and 10
  and if_tsoffset, simple and obsolete packet blocks, unknown blocks, a block larger than the read buffer, packets
  cut to MAX_RECORD, and each damage the reader names (impossible or mismatched lengths, cut blocks, a bad section
  header, an undeclared interface, a captured length past its block, options running past their block).
"""

from __future__ import annotations

import gzip
import random
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from fuzz.corrupt import make_variants
from passive.capture import scanread
from passive.capture.pcapfile import MAX_RECORD, sniff_kind
from passive.capture.rings import describe
from tests.corpus import CORPUS, require_corpus
from tests.helpers_capture import ethernet_frames, smtp_session_segments
from tests.test_scanner import _compiled_scanner, assert_same, run  # noqa: F401 - the fixture skips without it

PCAPNG = sorted((CORPUS / "pcaps").glob("*/*.pcapng"))


def compare(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    compiled = run(path, "auto", monkeypatch)
    python = run(path, "python", monkeypatch)
    assert_same(compiled, python)
    assert compiled["scanner"] == {"Scanner"} or not compiled["items"], "the compiled scanner did not read it"
    return compiled


@pytest.mark.parametrize("path", PCAPNG, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_pcapng_whole_compressed_and_damaged(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_corpus("pcaps")
    assert compare(path, monkeypatch)["counts"]["packets_read"] > 0
    packed = tmp_path / (path.name + ".gz")
    packed.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    compare(packed, monkeypatch)
    if shutil.which("editcap") is None:
        pytest.skip("needs editcap for the damaged variants")
    for variant in make_variants(path, 3, tmp_path, random.Random(path.name)):
        compare(variant, monkeypatch)


# -- crafted files ------------------------------------------------------------------------------------------------


def block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack(order + "II", block_type, total) + body + struct.pack(order + "I", total)


def section(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def interface(order: str, linktype: int, options: bytes = b"", snaplen: int = 262144) -> bytes:
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + options)


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def epb(order: str, iface: int, stamp: int, data: bytes, caplen: int | None = None) -> bytes:
    length = len(data) if caplen is None else caplen
    return block(
        order, 6, struct.pack(order + "IIIII", iface, stamp >> 32, stamp & 0xFFFFFFFF, length, len(data)) + data
    )


def frames() -> list[bytes]:
    return [bytes(frame) for _, frame in ethernet_frames(smtp_session_segments())]


def session_file(order: str, tsresol: bytes, units: float, offset: int = 0) -> bytes:
    options = option(order, 9, tsresol) + (option(order, 14, struct.pack(order + "q", offset)) if offset else b"")
    out = section(order) + interface(order, 1, options + option(order, 0, b"")) + interface(order, 101)
    for index, data in enumerate(frames()):
        out += epb(order, 0, round((1_700_000_000 + index * 0.001 - offset) * units), data)
    return out


CRAFTED: dict[str, Callable[[], bytes]] = {
    "little-endian nanoseconds": lambda: session_file("<", b"\x09", 1e9),
    "big-endian microseconds": lambda: session_file(">", b"\x06", 1e6),
    "powers of two and an offset": lambda: session_file("<", b"\x94", 2.0**20, offset=1_600_000_000),
    "two sections of both orders": lambda: session_file(">", b"\x06", 1e6)[:-0] + session_file("<", b"\x03", 1e3),
    "simple, obsolete and unknown blocks": lambda: (
        section("<")
        + interface("<", 1, snaplen=70)
        + b"".join(block("<", 3, struct.pack("<I", len(d)) + d) for d in frames())
        + block("<", 0x0BAD, b"x" * 40)
        + b"".join(block("<", 2, struct.pack("<HHIIII", 0, 0, 0, 5, len(d), len(d)) + d) for d in frames())
    ),
    "a block larger than the read buffer": lambda: (
        section("<")
        + interface("<", 1)
        + block("<", 0x0BAD, b"y" * (3 << 20))
        + b"".join(epb("<", 0, i, d) for i, d in enumerate(frames()))
    ),
    "packets cut to MAX_RECORD": lambda: (
        section("<")
        + interface("<", 1)
        + b"".join(epb("<", 0, i, d + b"\x00" * MAX_RECORD) for i, d in enumerate(frames()))
    ),
    "an interface too short and an unknown link type": lambda: (
        section("<") + block("<", 1, b"\x01\x00") + interface("<", 147) + epb("<", 1, 5, frames()[0])
    ),
    "options running past their block": lambda: (
        section("<")
        + interface("<", 1, struct.pack("<HH", 9, 1))
        + interface("<", 1, struct.pack("<HHI", 14, 8, 7))
        + epb("<", 1, 9, frames()[0])
    ),
}


def damaged(name: str) -> bytes:
    good = section("<") + interface("<", 1) + b"".join(epb("<", 0, i, d) for i, d in enumerate(frames()))
    bad = {
        "impossible length": good + struct.pack("<II", 6, 13) + b"\x00" * 20,
        "mismatched trailing length": good + epb("<", 0, 1, frames()[0])[:-4] + struct.pack("<I", 999),
        "block cut short": good + epb("<", 0, 1, frames()[0])[:-9],
        "header cut short": good + b"\x06\x00\x00",
        "bad section header": good + struct.pack("<II", 0x0A0D0D0A, 28) + b"\x00" * 20,
        "undeclared interface": good + epb("<", 7, 1, frames()[0]),
        "captured length past its block": good + epb("<", 0, 1, frames()[0], caplen=5000),
        "enhanced packet block too short": good + block("<", 6, b"\x00" * 8),
        "simple packet block too short": good + block("<", 3, b""),
        "too many interfaces": section("<") + interface("<", 1) * 65537,
    }
    return bad[name]


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_pcapng(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "crafted.pcapng"
    path.write_bytes(CRAFTED[name]())
    result = compare(path, monkeypatch)
    assert result["counts"]["packets_read"] > 0


@pytest.mark.parametrize(
    "name",
    [
        "impossible length", "mismatched trailing length", "block cut short", "header cut short",
        "bad section header", "undeclared interface", "captured length past its block",
        "enhanced packet block too short", "simple packet block too short", "too many interfaces",
    ],
)  # fmt: skip
def test_damaged_pcapng_worded_alike(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "damaged.pcapng"
    path.write_bytes(damaged(name))
    result = compare(path, monkeypatch)
    assert result["warnings"], "the damage was not reported"


@pytest.mark.parametrize("path", PCAPNG, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_grouping_look_reads_through_with_the_compiled_scanner(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pcapng or compressed file's last packet time and link types (rings.describe, which groups ring buffers'
    files) come from the compiled scanner reading it through, as the pure-Python reader gives them."""
    require_corpus("pcaps")
    packed = tmp_path / (path.name + ".gz")
    packed.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    for capture in (path, packed):
        kind = sniff_kind(capture)
        compiled = scanread.read_through(capture, kind)
        with monkeypatch.context() as patched:
            patched.setattr(scanread, "_cscan", None)
            assert scanread.read_through(capture, kind) == compiled
            twin_span = describe(str(capture))
        assert describe(str(capture)) == twin_span and compiled[0] is not None
