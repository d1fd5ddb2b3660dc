"""A JSON lines file that rotates by size: whole records, the newest rotated file is FILE.1, the oldest beyond
``keep`` is deleted, every file private, and a size given as people write it."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest

from passive.cli.common import ByteSize
from passive.core.rotation import RotatingAppender


def test_rotation_keeps_whole_records_and_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "findings.jsonl"
    sink = RotatingAppender(str(path), max_bytes=100, keep=2)
    records = [f'{{"n": {n}, "pad": "{"x" * 30}"}}\n' for n in range(20)]
    for record in records:
        sink.write(record)
        sink.flush()
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.jsonl", "findings.jsonl.1", "findings.jsonl.2"]
    kept = [path.with_name("findings.jsonl.2"), path.with_name("findings.jsonl.1"), path]
    text = "".join(p.read_text() for p in kept)
    assert records[-1] in text and text.endswith(records[-1])
    assert text == "".join(records[-len(text.splitlines()) :])  # the newest records, in order, none cut
    for p in kept[:2]:
        assert 100 <= p.stat().st_size < 100 + len(records[0])
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in kept)
    # Records of 50 or 51 bytes: the second one reaches 100 bytes, so each file holds two; 20 records, 10 files.
    assert sink.rotations == 9 and len(path.read_text().splitlines()) == 2


def test_an_existing_file_counts_towards_the_first_rotation(tmp_path: Path) -> None:
    path = tmp_path / "findings.jsonl"
    path.write_text("x" * 200 + "\n")
    os.chmod(path, 0o600)
    sink = RotatingAppender(str(path), max_bytes=100)
    sink.write("{}\n")
    sink.close()
    assert path.read_text() == "{}\n" and path.with_name("findings.jsonl.1").read_text().startswith("x")


def test_without_a_limit_nothing_rotates(tmp_path: Path) -> None:
    path = tmp_path / "findings.jsonl"
    sink = RotatingAppender(str(path))
    for _ in range(1000):
        sink.write("{}\n")
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == ["findings.jsonl"] and len(path.read_text()) == 3000


@pytest.mark.parametrize(("text", "size"), [("4096", 4096), ("500k", 512000), ("100M", 100 * 2**20), ("2GiB", 2**31)])
def test_sizes_as_people_write_them(text: str, size: int) -> None:
    assert ByteSize().convert(text, None, None) == size


@pytest.mark.parametrize("text", ["", "0", "-5M", "ten", "5T"])
def test_bad_sizes_are_usage_errors(text: str) -> None:
    with pytest.raises(click.BadParameter):
        ByteSize().convert(text, None, None)
