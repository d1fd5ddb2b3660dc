"""libFuzzer entry point for one harness: ``python -m fuzz.worker HARNESS FINDINGS_DIR [libFuzzer flags...]``.

The leakscope modules are imported under atheris instrumentation, so the fuzzer is guided by their coverage.
An unexpected exception does not stop the campaign: its input and traceback are saved once per distinct
signature (exception type and the innermost leakscope frame) under FINDINGS_DIR, and fuzzing goes on. So is an
input that costs more than its harness allows (``max_seconds``, ``max_rss_growth_mib``: a few KiB of input must
not take seconds or tens of MiB), once per harness and kind; libFuzzer's own ``-timeout`` and ``-rss_limit_mb``
only catch what is far worse.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["dissectors", "passive", "fuzz"]):
    from fuzz.harnesses import HARNESSES, finding_stem, run_measured


def signature(error: BaseException) -> str:
    """Exception type plus the innermost frame in leakscope's own code: one per distinct bug, not per input."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "/site-packages/" not in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(error).__name__}@{where}"


def main() -> None:
    name, findings = sys.argv[1], Path(sys.argv[2])
    harness = HARNESSES[name]
    findings.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()

    def report(key: str, data: bytes, text: str) -> None:
        if key in seen:
            return
        seen.add(key)
        stem = finding_stem(name, key)
        (findings / f"{stem}.bin").write_bytes(data)
        (findings / f"{stem}.txt").write_text(f"{key}\n\n{text}")
        print(f"FINDING {key}", file=sys.stderr, flush=True)

    def test_one_input(data: bytes) -> None:
        try:
            problems = run_measured(harness, data)
        except Exception as error:  # every exception reaching here is a finding
            report(signature(error), data, traceback.format_exc())
            return
        for problem in problems:  # one finding per harness and kind: MemoryGrowth, SlowInput
            report(f"{problem.split(':', 1)[0]}@{name}", data, problem)

    atheris.Setup([sys.argv[0], *sys.argv[3:]], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
