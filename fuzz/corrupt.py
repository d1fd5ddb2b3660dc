"""Corrupted captures, in Wireshark's manner: ``leakscope analyze`` must never answer damage with a traceback.

For every capture in pcaps/ and ../shared/corpus/pcaps/, K variants: half from ``editcap -E <p>`` (random byte
errors in the packets, a different seed and probability each), half cut at a random offset (headers included).
The installed ``leakscope analyze`` runs on them, a batch of variants per process (every other batch with
``--all-ports``, the others with ``--ports-only``). A run passes when it exits 0, or 1 with one-line
``leakscope: error:`` messages, and everything it writes on stderr is a ``leakscope:`` line; a batch that fails is
rerun one variant at a time, and each culprit is kept under WORKDIR/failures/. The summary counts variants, clean
errors, warnings and the anomalies the analysis counted.

    python fuzz/corrupt.py --variants 50                  # the full run
    python fuzz/corrupt.py --variants 4 --limit 6         # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fuzz.seeds import capture_paths  # noqa: E402

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
# Counters of the summary line that say the analysis noticed damage.
DAMAGE_COUNTERS = ("anomalies", "decode_errors", "truncated_packets", "gaps")


@dataclass
class Outcome:
    variants: int = 0
    runs: int = 0
    exit_ok: int = 0
    exit_error: int = 0
    clean_errors: int = 0
    warnings: int = 0
    damage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DAMAGE_COUNTERS, 0))
    dissector_anomalies: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        for name in ("variants", "runs", "exit_ok", "exit_error", "clean_errors", "warnings", "dissector_anomalies"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, value in other.damage.items():
            self.damage[name] += value
        self.failures += other.failures


def make_variants(capture: Path, count: int, directory: Path, rng: random.Random) -> list[Path]:
    """``count`` damaged copies of ``capture``: editcap byte errors and truncations, alternately."""
    data = capture.read_bytes()
    output_format = "pcapng" if data[:4] == PCAPNG_MAGIC or capture.suffix != ".pcap" else "pcap"
    variants = []
    for index in range(count):
        target = directory / f"{capture.stem}.v{index:03d}.{output_format}"
        if index % 2 == 0:
            probability = rng.choice((0.001, 0.005, 0.02, 0.05, 0.2))
            seed = rng.randrange(1 << 31)
            command = ["editcap", "-E", str(probability), "--seed", str(seed), "-F", output_format]
            done = subprocess.run([*command, str(capture), str(target)], capture_output=True)
            if done.returncode != 0 or not target.exists():
                target.write_bytes(data[: rng.randrange(len(data) + 1)])  # editcap refused the file: cut it instead
        else:
            target.write_bytes(data[: rng.randrange(len(data) + 1)])
        variants.append(target)
    return variants


def analyze(variants: list[Path], all_ports: bool) -> tuple[bool, Outcome, str]:
    """Run ``leakscope analyze`` once on ``variants``; (clean, outcome, stderr)."""
    command = ["leakscope", "analyze", "--format", "jsonl", "--all-ports" if all_ports else "--ports-only", "--"]
    done = subprocess.run([*command, *map(str, variants)], capture_output=True, timeout=600)
    stderr = done.stderr.decode("utf-8", errors="replace")
    outcome = Outcome(variants=len(variants), runs=1)
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("leakscope: error:")]
    outcome.clean_errors = len(errors)
    outcome.warnings = sum(line.startswith("leakscope: warning:") for line in lines)
    clean = (
        "Traceback" not in stderr
        and all(line.startswith("leakscope: ") for line in lines)
        and (done.returncode == 0 or (done.returncode == 1 and bool(errors)))
    )
    if done.returncode == 0:
        outcome.exit_ok = 1
    elif done.returncode == 1:
        outcome.exit_error = 1
    try:
        stdout = [line for line in done.stdout.decode("utf-8").split("\n") if line.strip()]
    except UnicodeDecodeError:
        return False, outcome, stderr + "\nstdout is not valid UTF-8"
    if stdout:
        try:
            summary = json.loads(stdout[-1])
        except ValueError:
            return False, outcome, stderr + "\nlast stdout line is not JSON"
        for name in DAMAGE_COUNTERS:
            outcome.damage[name] += int(summary.get(name, 0))
        outcome.dissector_anomalies += sum(summary.get("dissector_anomalies", {}).values())
    elif done.returncode == 0:
        return False, outcome, stderr + "\nexit 0 without a summary line"
    return clean, outcome, stderr


def check_batch(variants: list[Path], all_ports: bool, failures: Path) -> Outcome:
    clean, outcome, _stderr = analyze(variants, all_ports)
    if clean:
        return outcome
    # Find the culprit(s): one variant per run.
    outcome = Outcome()
    for variant in variants:
        single_clean, single, stderr = analyze([variant], all_ports)
        outcome.add(single)
        if not single_clean:
            failures.mkdir(parents=True, exist_ok=True)
            kept = failures / variant.name
            shutil.copy(variant, kept)
            kept.with_suffix(kept.suffix + ".stderr").write_text(stderr)
            outcome.failures.append(str(kept))
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=int, default=50, help="damaged variants per capture")
    parser.add_argument("--batch", type=int, default=10, help="variants per leakscope process (1: one each)")
    parser.add_argument("--jobs", type=int, default=1, help="leakscope processes at a time")
    parser.add_argument("--limit", type=int, default=0, help="only the first N captures (0: all)")
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/leakscope-corrupt"))
    args = parser.parse_args(argv)
    if shutil.which("editcap") is None or shutil.which("leakscope") is None:
        print("corrupt.py: needs editcap (wireshark-common) and the installed leakscope command", file=sys.stderr)
        return 2
    captures = capture_paths()[: args.limit or None]
    rng = random.Random(args.seed)
    total = Outcome()
    started = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="variants-", dir=args.workdir) as scratch:
        jobs = []
        for number, capture in enumerate(captures):
            directory = Path(scratch) / f"{number:03d}"
            directory.mkdir()
            variants = make_variants(capture, args.variants, directory, random.Random(rng.randrange(1 << 62)))
            for start in range(0, len(variants), max(1, args.batch)):
                jobs.append((variants[start : start + args.batch], len(jobs) % 2 == 1))
        failures = args.workdir / "failures"
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for outcome in pool.map(lambda job: check_batch(job[0], job[1], failures), jobs):
                total.add(outcome)
    report = {"captures": len(captures), "variants_per_capture": args.variants, **asdict(total)}
    report["seconds"] = round(time.monotonic() - started, 1)
    (args.workdir / "report.json").write_text(json.dumps(report, indent=2))
    print(
        f"{len(captures)} captures x {args.variants} variants = {total.variants} variants in {total.runs} runs "
        f"({report['seconds']} s): exit 0: {total.exit_ok} runs, exit 1: {total.exit_error} runs "
        f"({total.clean_errors} clean one-line errors), {total.warnings} warnings; "
        f"damage counted: {total.damage}, dissector anomalies: {total.dissector_anomalies}; "
        f"tracebacks or unclean exits: {len(total.failures)}"
    )
    for failure in total.failures:
        print(f"  FAILED: {failure}")
    return 1 if total.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
