"""Run a fuzzing campaign: every harness (or the ones named) for N iterations, then report iterations and findings.

    python fuzz/run.py --iterations 1000000            # the long campaign, all harnesses, one after another
    python fuzz/run.py --iterations 20000 --jobs 2     # two harnesses at a time
    python fuzz/run.py --harness ntlmssp --harness smtp --iterations 100000

Each harness runs in its own process under libFuzzer (atheris), seeded from pcaps/ and ../shared/corpus/ (built
into WORKDIR/seeds/). An input that raises anything but the documented exceptions is saved once per distinct
signature in WORKDIR/findings/ with its traceback; libFuzzer's own crash, timeout and out-of-memory artifacts land
there too. The report (also written to WORKDIR/report.json) gives, per harness, iterations run, seconds, coverage
and findings. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fuzz import seeds  # noqa: E402
from fuzz.harnesses import HARNESSES, finding_stem  # noqa: E402

_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_COVERAGE = re.compile(r"\bcov: (\d+) ft: (\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_FINDING = re.compile(r"^FINDING (\S+)$", re.MULTILINE)


@dataclass
class HarnessResult:
    harness: str
    iterations: int = 0
    seconds: float = 0.0
    coverage: int = 0
    features: int = 0
    exit_status: int | None = None
    findings: list[str] = field(default_factory=list)
    stopped_early: bool = False


def run_harness(name: str, iterations: int, workdir: Path, max_total_time: int, rss_limit_mb: int) -> HarnessResult:
    harness = HARNESSES[name]
    corpus = workdir / "corpus" / name  # libFuzzer adds the inputs it finds interesting here
    findings = workdir / "findings" / name
    corpus.mkdir(parents=True, exist_ok=True)
    findings.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in findings.iterdir()}
    command = [
        sys.executable,
        "-m",
        "fuzz.worker",
        name,
        str(findings),
        f"-runs={iterations}",
        f"-max_len={harness.max_len}",
        f"-rss_limit_mb={max(rss_limit_mb, harness.rss_limit_mb)}",
        "-timeout=20",
        "-print_final_stats=1",
        f"-artifact_prefix={findings}/",
        str(corpus),
        str(workdir / "seeds" / harness.seeds),
    ]
    if max_total_time:
        command.insert(6, f"-max_total_time={max_total_time}")
    log = workdir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with log.open("w") as out:
        status = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    result = HarnessResult(name, seconds=round(time.monotonic() - started, 1), exit_status=status)
    text = log.read_text(errors="replace")
    executed = _EXECUTED.findall(text) or [m[0] for m in _DONE.findall(text)]
    if executed:
        result.iterations = int(executed[-1])
    coverage = _COVERAGE.findall(text)
    if coverage:
        result.coverage, result.features = int(coverage[-1][0]), int(coverage[-1][1])
    # What this run found: signatures the worker reported (their files may predate the run, being overwritten
    # for a bug found again), libFuzzer's own artifacts, and any other new file.
    found = {str(findings / f"{finding_stem(name, key)}.bin") for key in _FINDING.findall(text)}
    found.update(_ARTIFACT.findall(text))
    found.update(str(findings / p.name) for p in findings.iterdir() if p.name not in before and p.suffix != ".txt")
    result.findings = sorted(found)
    result.stopped_early = result.iterations < iterations and not max_total_time
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10_000, help="inputs run per harness")
    parser.add_argument("--harness", action="append", choices=sorted(HARNESSES), help="run only these (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="harnesses run at the same time")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/leakscope-fuzz"), help="seeds, corpus, findings")
    parser.add_argument("--max-time", type=int, default=0, help="seconds per harness at most (0: no limit)")
    parser.add_argument("--rss-limit-mb", type=int, default=1024, help="memory per harness process")
    parser.add_argument("--fresh", action="store_true", help="forget the corpus grown by earlier campaigns")
    args = parser.parse_args(argv)
    names = args.harness or list(HARNESSES)
    if args.fresh and (args.workdir / "corpus").exists():
        shutil.rmtree(args.workdir / "corpus")
    counts = seeds.build(args.workdir / "seeds", {"capture": max(h.max_len for h in HARNESSES.values())})
    print(f"seeds: {counts}", file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(run_harness, n, args.iterations, args.workdir, args.max_time, args.rss_limit_mb) for n in names
        ]
        results = []
        for future in futures:
            result = future.result()
            results.append(result)
            print(
                f"{result.harness:<11} {result.iterations:>9} iterations  {result.seconds:>8.1f} s  "
                f"cov {result.coverage:>5}  findings {len(result.findings)}"
                + ("  (stopped early: see logs)" if result.stopped_early else ""),
                flush=True,
            )
    total_findings = sum(len(r.findings) for r in results)
    report = {
        "iterations_requested": args.iterations,
        "harnesses": [asdict(r) for r in results],
        "total_iterations": sum(r.iterations for r in results),
        "total_findings": total_findings,
    }
    (args.workdir / "report.json").write_text(json.dumps(report, indent=2))
    print(f"total: {report['total_iterations']} iterations, {total_findings} findings ({args.workdir / 'report.json'})")
    return 1 if total_findings or any(r.stopped_early for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
