"""Files the operator names for the run to read beside the captures (``--baseline``, ``--suppress``, findings given
to ``report`` and ``compare``) are read up to their bound whatever size they claim: a device or a FIFO says 0, and a
file without a line end was read whole (``--baseline /dev/zero`` and ``--suppress /dev/zero`` ended in a
MemoryError traceback). Real command lines, each under a 1.5 GiB address-space limit so that a regression fails
fast instead of taking the machine's memory."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "pcaps" / "smtp-auth-plain-swaks.pcap"
ADDRESS_SPACE = 1536 * 1024 * 1024


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "passive", *map(str, args)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_limited,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("analyze", "--baseline", "/dev/zero", CAPTURE), "/dev/zero: JSON document larger than 256 MiB"),
        (("analyze", "--suppress", "/dev/zero", CAPTURE), "/dev/zero: larger than 64 MiB: not a suppressions file"),
        (("compare", "--passive", CAPTURE, "--active", "/dev/zero"), "/dev/zero"),
    ],
    ids=["--baseline", "--suppress", "compare --active"],
)
def test_an_endless_file_is_a_one_line_error(arguments: tuple[str | Path, ...], message: str) -> None:
    result = run(*arguments)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("leakscope: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]


def test_a_large_binary_file_given_as_suppressions_is_refused(tmp_path: Path) -> None:
    """A capture given to --suppress by mistake: refused by its size, read no further than the bound."""
    mistaken = tmp_path / "day.pcap"
    with mistaken.open("wb") as stream:
        stream.write(CAPTURE.read_bytes())
        stream.truncate(65 * 1024 * 1024)  # past the bound, without a line end
    result = run("analyze", "--suppress", mistaken, CAPTURE)
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"leakscope: error: {mistaken}: larger than 64 MiB: not a suppressions file"
    )
