"""libFuzzer entry point for one harness: ``python -m fuzz.worker HARNESS FINDINGS_DIR [libFuzzer flags...]``.

The leakscope modules are imported under atheris instrumentation, so the fuzzer is guided by their coverage.
An unexpected exception does not stop the campaign: its input and traceback are saved once per distinct
signature (exception type and the innermost leakscope frame) under FINDINGS_DIR, and fuzzing goes on.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["dissectors", "passive", "fuzz"]):
    from fuzz.harnesses import HARNESSES, finding_stem


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

    def test_one_input(data: bytes) -> None:
        try:
            harness.run(data)
        except Exception as error:  # every exception reaching here is a finding
            key = signature(error)
            if key in seen:
                return
            seen.add(key)
            stem = finding_stem(name, key)
            (findings / f"{stem}.bin").write_bytes(data)
            (findings / f"{stem}.txt").write_text(f"{key}\n\n{traceback.format_exc()}")
            print(f"FINDING {key}", file=sys.stderr, flush=True)

    atheris.Setup([sys.argv[0], *sys.argv[3:]], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
