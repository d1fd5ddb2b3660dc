"""The shortcuts that make records cheap write what the plain way writes: times as datetime formats them, strings
masked as :meth:`Redactor.text` masks each one, ids as :func:`fingerprint` derives them from the written record."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from passive.core.times import iso_time
from passive.results.fingerprint import fingerprint
from passive.results.redaction import SECRET_KEYS, Redactor, keep_name, mask_name

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"


def _by_datetime(timestamp: float) -> str | None:
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return None


def test_iso_time_is_datetimes_text_at_every_rounding_edge() -> None:
    rng = random.Random(7)
    stamps: list[float] = [rng.uniform(-7e10, 2.6e11) for _ in range(20_000)]
    stamps += [1.7e9 + rng.random() * 86_400 for _ in range(20_000)]
    # Half a microsecond either side of a carry into the next second, the epoch, year 1 and year 9999's last second.
    for whole in (-62_135_596_800, -2, -1, 0, 1, 1_700_000_000, 253_402_300_799):
        for offset in (0.0, 5e-7, 1.5e-7, 2.5e-6, 0.4999995, 0.5000005, 0.9999994, 0.9999995, -5e-7):
            stamps.append(whole + offset)
    stamps += [float("inf"), float("-inf"), float("nan"), 1e20, -1e20, 1.45e15, -0.0, 5e-324]
    assert [s for s in stamps if iso_time(s) != _by_datetime(s)] == []
    assert iso_time(None) is None
    assert iso_time(10**12) == _by_datetime(10**12) and iso_time(0) == _by_datetime(0)


class _Label(str):
    """A string of a subclass (an enum's value, say): walked as text, like any string."""


def _reference(redactor: Redactor, value: Any) -> Any:
    """What :meth:`Redactor.value` is: every string through :meth:`Redactor.text`, secret keys masked whole."""
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, list):
        return [_reference(redactor, item) for item in value]
    if isinstance(value, dict):
        return {
            key: "********" if key in SECRET_KEYS and item else _reference(redactor, item)
            for key, item in value.items()
        }
    return value


def _values(secret: str, name: str) -> list[Any]:
    return [
        secret,
        f"before {secret} after",
        {"banner": f"hello {name}", "count": 3, "tls": True, "none": None, "ratio": 0.5, "password": "x"},
        {"attempts": [{"user": name, "password": secret}, {"user": "other", "password": ""}], "n": [1, 2]},
        [f"{name.upper()} said {secret}", ["nested", {"deep": secret[:3]}], (secret, "a tuple stays")],
        {"label": _Label(f"{secret}!"), "labels": [_Label(name)]},
        "nothing to see",
        42,
    ]


@pytest.mark.parametrize("name_mask", [keep_name, mask_name])
@pytest.mark.parametrize("count", [0, 1, 3, 40])
def test_redactor_value_masks_each_string_as_text_does(count: int, name_mask: Any) -> None:
    secrets = {f"Secret-{number:02d}-{'z' * number}" for number in range(count)}
    redactor = Redactor(secrets=secrets, name_mask=name_mask)
    redactor.learn_name("jdoe.smith")
    secret = sorted(secrets)[-1] if secrets else "not-a-known-secret"
    for value in _values(secret, "jdoe.smith"):
        assert redactor.value(value) == _reference(redactor, value)
    secrets.add("grown-later-secret")  # the run's set, held by reference, grows while records are written
    for value in _values("grown-later-secret", "jdoe.smith"):
        assert redactor.value(value) == _reference(redactor, value)
    redactor.learn_name("carol.late")
    for value in _values(secret, "carol.late"):
        assert redactor.value(value) == _reference(redactor, value)


def test_redactor_value_copies_what_it_walks() -> None:
    """A record's lists and objects are its own: the finding's are never handed out (with or without secrets)."""
    for redactor in (Redactor(), Redactor(secrets={"Secret-1"})):
        detail = {"time": 1.0, "clients": ["a"], "attempts": [{"user": "u"}]}
        shown = redactor.value(detail)
        assert shown == detail and shown is not detail
        assert shown["clients"] is not detail["clients"] and shown["attempts"][0] is not detail["attempts"][0]


@pytest.mark.parametrize("capture", sorted(path.name for path in PCAPS.glob("*.pcap")))
def test_written_ids_are_the_fingerprints_of_the_written_records(capture: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "passive", "analyze", "--format", "jsonl", str(PCAPS / capture)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    findings = [record for record in records if record.get("type") != "summary"]
    assert records[-1]["type"] == "summary"
    assert all(record["id"] == fingerprint(record) for record in findings)
    for record in findings:
        for moment in [record["first_seen"], record["last_seen"], *(e["time"] for e in record["evidence"])]:
            assert moment is None or moment == _by_datetime(datetime.fromisoformat(moment).timestamp())
