"""Time this tree against another, run after run in turn: what a change did, on a machine whose speed varies.

    python bench/alternate.py --before ../leakscope-before            # a checkout of the tree before the change
    python bench/alternate.py --before DIR --rounds 7 --captures bench/out/allmail-100M.pcap

A single timing on a shared or virtual machine says as much about the minute it ran in as about the code (this VM
has given 5.3 and 7.3 s for the same command). Here each command runs once per round on each tree, the order of the
trees swapped every round, and the medians are compared: both trees meet the same minutes. Every run is
``python -m passive analyze --format jsonl -o /dev/null`` from the tree's directory with ``--jobs 1`` and
``--jobs 2``, on the captures bench/run.py and bench/archive.py make (generate them first); wall time and CPU time
(user + system of the run and the workers it waited for, from ``wait4``). Build the other tree's scanner and
compile both trees (``python3 -m compileall -q passive dissectors``) first: with PYTHONDONTWRITEBYTECODE set, a
stale module is compiled again on every run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
CAPTURES = ("allmail-100M.pcap", "mixed-1G-0.02.pcap", "archive-20x100M-0.02")


def timed(tree: Path, arguments: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run from ``tree``'s directory."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.chdir(tree)
            command = [sys.executable, "-m", "passive", "analyze", "--format", "jsonl", "-o", os.devnull, *arguments]
            os.execv(sys.executable, command)
        finally:
            os._exit(127)
    _pid, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{tree}: analyze {' '.join(arguments)} failed")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, type=Path, help="the other tree (a checkout with its scanner built)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--captures", nargs="+", type=Path, default=[OUT / name for name in CAPTURES])
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "this": HERE.parent}
    cases = [(f"{capture.name} --jobs {jobs}", ["--jobs", str(jobs), str(capture.resolve())])
             for capture in args.captures for jobs in (1, 2)]  # fmt: skip
    print("load average at start:", " ".join(f"{x:.2f}" for x in os.getloadavg()), f"; {args.rounds} rounds")
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for round_ in range(args.rounds):
        for name, arguments in cases:
            order = list(trees.items()) if round_ % 2 == 0 else list(reversed(trees.items()))
            for label, tree in order:
                runs.setdefault((name, label), []).append(timed(tree, arguments))
    print(f"{'command':<40} {'before: wall s':>14} {'CPU s':>6} {'this: wall s':>13} {'CPU s':>6} {'wall':>7}")
    for name, _arguments in cases:
        medians = []
        for label in trees:
            walls, cpus = zip(*runs[(name, label)], strict=True)
            medians.append((statistics.median(walls), statistics.median(cpus)))
        (wall_before, cpu_before), (wall_now, cpu_now) = medians
        change = (wall_now - wall_before) / wall_before
        print(f"{name:<40} {wall_before:14.2f} {cpu_before:6.2f} {wall_now:13.2f} {cpu_now:6.2f} {change:+7.1%}")
    print("load average at end:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
