"""Compressed captures that are hostile or broken: a decoder never takes more memory than MAX_WINDOW whatever the
header asks, a stream that breaks gives what it decoded before the break with the reason as a warning, and no
decoder error escapes as a traceback."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import zstandard

from passive.capture.compressed import MAX_WINDOW
from passive.capture.pcapfile import PacketReader

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
NTLM = PCAPS / "smtp-ntlm-success-curl.pcap"
OTHER = PCAPS / "imap-login-fetchmail.pcap"  # the same link type: its records may follow NTLM's in one file
HUGE_WINDOW = 256 << 20  # twice MAX_WINDOW
MIB = 1 << 20


def run(*paths: Path) -> tuple[int, str, str, int]:
    """``leakscope analyze --format jsonl`` on ``paths``: exit status, stdout, stderr and peak RSS in bytes (GNU
    time's: the peak of a process forked from this one would start at this test process's)."""
    executable = shutil.which("leakscope")
    assert executable, "the leakscope console script is not installed (pip install -e .)"
    with tempfile.TemporaryDirectory() as scratch:
        rss = Path(scratch) / "rss"
        command = ["/usr/bin/time", "-o", str(rss), "-f", "%M", executable, "analyze", "--jobs", "1"]
        done = subprocess.run([*command, "--format", "jsonl", *map(str, paths)], capture_output=True, timeout=120)
        return done.returncode, done.stdout.decode(), done.stderr.decode(), int(rss.read_text().split()[-1]) * 1024


def findings(output: str, path: Path) -> list[str]:
    return sorted(line.replace(str(path), "CAPTURE") for line in output.splitlines() if '"summary"' not in line)


def zero_records(total: int) -> bytes:
    """A classic pcap of ``total`` bytes of 64 KB records of zeros (what a decoder fills its window with)."""
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    record = struct.pack("<IIII", 0, 0, 65000, 65000) + bytes(65000)
    return header + record * (total // len(record))


def ntlm_then_more() -> bytes:
    """The NTLM session's capture followed by another session's records (about 400 KB in all)."""
    more = OTHER.read_bytes()[24:]
    return NTLM.read_bytes() + more * max(1, (400_000 // len(more)))


def test_an_xz_stream_asking_for_a_huge_dictionary_is_refused_before_it_takes_the_memory(tmp_path: Path) -> None:
    """A 30 KB xz file asking for a 256 MiB dictionary and filling it took analyze to 295 MiB; it is now refused in
    one line, and the run goes on with the next capture."""
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": HUGE_WINDOW, "preset": 0}]
    bomb = tmp_path / "bomb.pcap.xz"
    bomb.write_bytes(lzma.compress(zero_records(200 * MIB), format=lzma.FORMAT_XZ, filters=filters))
    assert bomb.stat().st_size < 100_000
    status, out, err, rss = run(bomb, NTLM)
    assert status == 1 and "Traceback" not in err, err
    assert f"damaged xz stream: it needs more than {MAX_WINDOW >> 20} MiB of memory to decode" in err
    assert '"type": "ntlm-info"' in out  # the next capture was read
    assert rss < 150 * MIB, rss


def test_a_zstd_frame_asking_for_a_huge_window_is_refused_in_one_line(tmp_path: Path) -> None:
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=HUGE_WINDOW.bit_length() - 1)
    writer = zstandard.ZstdCompressor(compression_params=params).compressobj()
    bomb = tmp_path / "bomb.pcap.zst"
    bomb.write_bytes(writer.compress(zero_records(8 * MIB)) + writer.flush())
    assert zstandard.get_frame_parameters(bomb.read_bytes()).window_size == HUGE_WINDOW
    status, out, err, _rss = run(bomb, NTLM)
    assert status == 1 and "Traceback" not in err, err
    assert "damaged zstd stream" in err and "too much memory" in err
    assert '"type": "ntlm-info"' in out


def test_a_zstd_checksum_that_does_not_match_keeps_what_was_decoded(tmp_path: Path) -> None:
    """``zstd`` writes a checksum by default; a mismatch raised zstandard's own error, which no reader caught."""
    packed = bytearray(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(ntlm_then_more()))
    packed[-1] ^= 0xFF
    path = tmp_path / "checksum.pcap.zst"
    path.write_bytes(bytes(packed))
    status, out, err, _rss = run(path)
    assert status == 0 and "Traceback" not in err, err
    assert "truncated capture: zstd stream ends after frame" in err and "checksum" in err
    assert '"type": "ntlm-info"' in out


def test_gzip_and_xz_cut_short_give_what_they_decoded_before_the_cut(tmp_path: Path) -> None:
    """A read that met the end of a cut stream used to lose everything it had decoded (up to 1 MiB): a capture cut
    after its NTLM exchange showed nothing."""
    content = ntlm_then_more()
    for suffix, pack in (("gz", gzip.compress), ("xz", lzma.compress)):
        packed = pack(content)
        path = tmp_path / f"cut.pcap.{suffix}"
        path.write_bytes(packed[: len(packed) * 3 // 4])
        status, out, err, _rss = run(path)
        name = "gzip" if suffix == "gz" else suffix
        assert status == 0 and f"truncated capture: {name} stream ends after frame" in err, (suffix, err)
        assert '"type": "ntlm-info"' in out, suffix


def test_an_xz_file_of_several_streams_reads_them_all(tmp_path: Path) -> None:
    """xz files may hold several streams one after another (``cat a.xz b.xz``): each is read in turn, as ``xz -d``
    and the standard library's LZMAFile read them."""
    records = OTHER.read_bytes()[24:]
    path = tmp_path / "two.pcap.xz"
    path.write_bytes(lzma.compress(NTLM.read_bytes()) + lzma.compress(records))
    plain = tmp_path / "two.pcap"
    plain.write_bytes(NTLM.read_bytes() + records)
    status, out, err, _rss = run(path)
    assert status == 0, err
    assert findings(out, path) == findings(run(plain)[1], plain)
    assert any('"ntlm-info"' in line for line in findings(out, path))


def test_a_damaged_xz_pcapng_among_others_is_a_warning_not_a_traceback(tmp_path: Path) -> None:
    """Grouping reads a compressed pcapng's first 64 KiB for its interfaces: xz data damaged there raised
    ``LZMAError`` out of the run. It is a warning now, the other capture read."""
    from tests.helpers_capture import ethernet_frames, pcapng_bytes, smtp_session_segments

    frames = []
    for n in range(300):
        frames += ethernet_frames(smtp_session_segments(client=(f"10.0.{n // 250}.{n % 250 + 1}", 40000 + n)), 1000 + n)
    packed = bytearray(lzma.compress(pcapng_bytes(frames)))
    start = len(packed) // 10
    packed[start : start + 8] = bytes(b ^ 0xA5 for b in packed[start : start + 8])
    (tmp_path / "ring1.pcapng.xz").write_bytes(packed)
    (tmp_path / "ring2.pcapng.xz").write_bytes(lzma.compress(pcapng_bytes(frames)))
    status, _out, err, _rss = run(tmp_path)
    assert status == 0 and "Traceback" not in err, err
    assert f"{tmp_path / 'ring1.pcapng.xz'}: truncated capture: xz stream ends after frame" in err, err


def test_an_xz_stream_after_the_first_that_breaks_part_way_is_reported(tmp_path: Path) -> None:
    """Only what does not begin a stream is trailing data, ignored; a further stream that begins and then breaks
    past the first read of it was taken for trailing data and the file ended silently (LZMAFile raises there)."""
    from tests.helpers_capture import ether, ipv4, pcap_bytes, tcp

    frames = [
        (
            2000 + n / 1000,
            ether(ipv4("10.0.0.1", "10.0.0.2", tcp(40000, 25, 1000 + n * 200, 1, payload=os.urandom(200)))),
        )
        for n in range(2000)
    ]
    second = bytearray(lzma.compress(pcap_bytes(frames)[24:]))  # more than one read of the file: ~500 KB
    second[len(second) * 3 // 4 : len(second) * 3 // 4 + 8] = bytes(8)
    path = tmp_path / "two.pcap.xz"
    path.write_bytes(lzma.compress(NTLM.read_bytes()) + bytes(second))
    status, out, err, _rss = run(path)
    assert status == 0 and "truncated capture: xz stream ends after frame" in err, err
    assert '"type": "ntlm-info"' in out


ZSTD_BLOCK = 128 << 10  # the content of one zstd block as the zstd command writes them (ZSTD_BLOCKSIZE_MAX)


def records_to_a_block_end() -> tuple[bytes, int]:
    """The NTLM session's capture, then records of another flow, one of them ending exactly at
    :data:`ZSTD_BLOCK` bytes, then more (about 400 KB in all); and the number of records in the first
    :data:`ZSTD_BLOCK` bytes."""
    from tests.helpers_capture import ether, ipv4, pcap_bytes, tcp

    def frame(size: int, seq: int) -> bytes:
        body = (b"0123456789abcdef" * (size // 16 + 1))[:size]
        return bytes(ether(ipv4("10.9.0.1", "10.9.0.2", tcp(40001, 80, seq, payload=body))))

    head = NTLM.read_bytes()
    frames: list[tuple[float, bytes]] = []
    total, seq = len(head), 1
    while total < ZSTD_BLOCK:
        room = ZSTD_BLOCK - total - 16 - 54  # payload room left: a record header, Ethernet, IPv4 and TCP headers
        size = 1000 if room >= 1000 + 16 + 54 + 100 else room
        frames.append((2_000_000_000 + len(frames) / 1000, frame(size, seq)))
        total, seq = total + 16 + len(frames[-1][1]), seq + size
    assert total == ZSTD_BLOCK
    before = len(frames)
    for _ in range(300):
        frames.append((2_000_000_000 + len(frames) / 1000, frame(900, seq)))
        seq += 900
    return head + pcap_bytes(frames)[24:], packets(NTLM) + before


def packets(path: Path) -> int:
    """The records a plain capture holds (all read, none damaged)."""
    reader = PacketReader(path)
    count = sum(1 for _ in reader)
    assert reader.error is None, reader.error
    return count


def zstd_cli(content: bytes, tmp_path: Path, *options: str) -> bytes:
    plain = tmp_path / "plain.pcap"
    plain.write_bytes(content)
    return subprocess.run(["zstd", "-q", "-c", *options, str(plain)], capture_output=True, check=True).stdout


def decoded(packed: bytes) -> int:
    """How many bytes the zstandard library decodes of ``packed`` (at a cut frame: every whole block's)."""
    import io

    return len(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(packed), read_across_frames=True).read())


def test_a_zstd_file_cut_anywhere_is_reported_as_cut(tmp_path: Path) -> None:
    """The zstandard reader ends a frame cut short as if it had ended: only a record the cut split was noticed
    (``frame N cut short``), and a cut at a record boundary, or in the checksum, was not noticed at all. Cuts of
    the ``zstd`` command's output: at the end of a block that ends a record, part way, in the checksum, and in a
    second frame."""
    content, packets_in_block = records_to_a_block_end()
    packed = zstd_cli(content, tmp_path)
    total = packets(tmp_path / "plain.pcap")
    at_block = next(cut for cut in range(len(packed)) if decoded(packed[:cut]) >= ZSTD_BLOCK)
    assert decoded(packed[:at_block]) == ZSTD_BLOCK  # the cut ends a block, and the block ends a record
    first, second = zstd_cli(NTLM.read_bytes(), tmp_path), zstd_cli(content[24:], tmp_path)  # two frames
    cases = [
        ("at-block.pcap.zst", packed[:at_block], packets_in_block, 1),
        ("part-way.pcap.zst", packed[: len(packed) * 2 // 3], None, 1),
        ("checksum.pcap.zst", packed[:-2], total, 1),
        ("second.pcap.zst", first + second[:10], packets(NTLM), 2),
    ]
    for name, cut, read, frame in cases:
        path = tmp_path / name
        path.write_bytes(cut)
        status, out, err, _rss = run(path)
        after = "" if read is None else f" {read}"
        expected = f"truncated capture: zstd stream ends after frame{after}"
        assert status == 0 and expected in err and f"zstd frame {frame} is cut short" in err, (name, err)
        assert '"type": "ntlm-info"' in out, name
    whole = tmp_path / "whole.pcap.zst"
    whole.write_bytes(first + second)
    status, out, err, _rss = run(whole)
    assert status == 0 and "truncated" not in err and '"type": "ntlm-info"' in out, err


def xz_cli(content: bytes, tmp_path: Path) -> bytes:
    plain = tmp_path / "plain.pcap"
    plain.write_bytes(content)
    return subprocess.run(["xz", "-q", "-c", str(plain)], capture_output=True, check=True).stdout


def test_xz_stream_padding_between_streams_is_skipped_and_other_bytes_are_damage(tmp_path: Path) -> None:
    """Null bytes in multiples of four may follow an xz stream (the xz format's stream padding): ``lzma.LZMAFile``
    stopped there, losing the next stream. Padding of another length, or other bytes, are damage, as ``xz -d``
    finds them."""
    records = OTHER.read_bytes()[24:]
    first, second = xz_cli(NTLM.read_bytes(), tmp_path), xz_cli(records, tmp_path)
    plain = tmp_path / "two.pcap"
    plain.write_bytes(NTLM.read_bytes() + records)
    expected = findings(run(plain)[1], plain)
    assert any('"ntlm-info"' in line for line in expected) and any('"protocol": "imap"' in line for line in expected)
    padded = tmp_path / "padded.pcap.xz"
    padded.write_bytes(first + bytes(8) + second + bytes(4))
    assert subprocess.run(["xz", "-t", str(padded)]).returncode == 0
    status, out, err, _rss = run(padded)
    assert status == 0 and "Warning" not in err and "warning" not in err, err
    assert findings(out, padded) == expected
    for name, content, reason in (
        ("three.pcap.xz", first + bytes(3) + second, "3 null bytes of padding after xz stream 1, not a multiple of 4"),
        ("junk.pcap.xz", first + bytes(4) + b"junk\n", "what follows xz stream 1 is neither padding nor a stream"),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        assert subprocess.run(["xz", "-t", str(path)], capture_output=True).returncode != 0
        status, out, err, _rss = run(path)
        assert status == 0 and f"truncated capture: xz stream ends after frame {packets(NTLM)}: {reason}" in err, err
        assert '"type": "ntlm-info"' in out
