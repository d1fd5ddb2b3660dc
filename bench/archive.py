"""Benchmark an archive: many captures analyzed with ``--jobs 1``, ``--jobs 2`` and a two-worker Dask cluster.

    python bench/archive.py                      # 20 captures of 100 MB (generated once, cached in bench/out/)
    python bench/archive.py --count 8 --size 20M # smaller
    python bench/archive.py --skip-dask

Generates ``--count`` captures with bench/gen_capture.py (other seeds, the same start time: overlapping captures,
so each is a group of its own, as an archive of several sensors' files would be), then times ``leakscope analyze
--format jsonl`` on the directory, each run in its own process tree (best of ``--runs``; every capture is read
once before each run, so that runs time the analysis and not the disk), sampling every process
of the tree for its peak RSS (``VmHWM``): the main process, and each worker. The Dask cluster (a LocalCluster of
two worker processes, one thread each, on 127.0.0.1) is started before its runs are timed. The outputs of every
mode must be the same lines (sorted): the bench fails otherwise. ``uptime`` is printed, since the machine may be
shared. Two clusters are timed: one with Dask's defaults, and one started as docs/scaling.md recommends for
throughput (:data:`TUNED_CONFIG`, :data:`TUNED_PRELOAD`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
SAMPLE_EVERY = 0.05  # seconds between two looks at the process tree's memory
TUNED_CONFIG = {"distributed.worker.profile.enabled": False}
"""Dask's statistical profiler off: by default each worker samples its task's stack every 10 ms (docs/scaling.md)."""
TUNED_PRELOAD = ["passive.analysis.cluster"]
"""Imported by each worker as it starts (``dask worker --preload``), not by its first task."""


def generate(directory: Path, count: int, size: str, mail_fraction: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        path = directory / f"capture-{seed:03d}.pcap"
        if not path.exists():
            command = [sys.executable, str(HERE / "gen_capture.py"), "--size", size, "--seed", str(seed + 1),
                       "--mail-fraction", mail_fraction, "--out", str(path)]  # fmt: skip
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        sidecar = path.with_name(path.name + ".json")
        if sidecar.exists():
            sidecar.rename(directory.parent / f"{directory.name}-{sidecar.name}")  # keep the directory captures only
        paths.append(path)
    return paths


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _peak(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu(pid: int) -> float:
    """CPU seconds (user and system) ``pid`` has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


Timing = tuple[float, float, bytes, int, dict[int, int]]  # wall s, CPU s, output, main peak RSS, worker peaks


def timed(command: list[str], watch: list[int] | None = None) -> Timing:
    """Wall and CPU seconds (the command's process tree, and ``watch``: processes outside it, the Dask workers),
    standard output, the main process's peak RSS and each other process's."""
    watch = watch or []
    cpu_before = sum(_cpu(pid) for pid in watch)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as output:  # a file, not a pipe: the run never waits for this loop to read it
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.DEVNULL)
        peaks: dict[int, int] = {}
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            for pid in _tree(process.pid) + watch:
                peak = _peak(pid)
                if peak is not None:
                    peaks[pid] = max(peaks.get(pid, 0), peak)
            time.sleep(SAMPLE_EVERY)
        elapsed = time.perf_counter() - start
        output.seek(0)
        text = output.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[3:])}: exit status {process.returncode}")
    cpu = usage.ru_utime + usage.ru_stime + sum(_cpu(pid) for pid in watch) - cpu_before
    main = peaks.pop(process.pid, 0)
    return elapsed, cpu, text, main, peaks


def warm(paths: list[Path]) -> None:
    """Read every capture once, so that each timed run starts with the archive in the page cache (the machine may
    page out files it has not read for a few seconds: a run would otherwise time the disk)."""
    for path in paths:
        with open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass


def best(runs: int, command: list[str], paths: list[Path], watch: list[int] | None = None) -> Timing:
    results = []
    for _ in range(runs):
        warm(paths)
        results.append(timed(command, watch))
    return min(results, key=lambda r: r[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--size", default="100M")
    parser.add_argument("--mail-fraction", default="0.02")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--skip-dask", action="store_true")
    args = parser.parse_args()
    directory = OUT / f"archive-{args.count}x{args.size}-{args.mail_fraction}"
    paths = generate(directory, args.count, args.size, args.mail_fraction)
    total = sum(p.stat().st_size for p in paths)
    print(f"archive: {len(paths)} captures, {total / 1e6:,.0f} MB in {directory}")
    print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    base = [*LEAKSCOPE, "analyze", "--format", "jsonl"]
    rows = []
    outputs = {}
    for label, extra in (("--jobs 1", ["--jobs", "1"]), ("--jobs 2", ["--jobs", "2"])):
        elapsed, cpu, out, main_rss, workers = best(args.runs, [*base, *extra, str(directory)], paths)
        rows.append((label, elapsed, cpu, main_rss, workers))
        outputs[label] = sorted(out.splitlines())
    if not args.skip_dask:
        sys.path.insert(0, str(ROOT))  # the scheduler, in this process, unpickles the tasks: it imports passive
        for label, config, preload in (("dask, 2 workers", {}, []), ("dask, tuned", TUNED_CONFIG, TUNED_PRELOAD)):
            elapsed, cpu, out, main_rss, workers = _dask(args.runs, base, directory, paths, config, preload)
            rows.append((label, elapsed, cpu, main_rss, workers))
            outputs[label] = sorted(out.splitlines())
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    _report(rows, total)
    reference = [line for line in outputs["--jobs 1"] if b'"summary"' not in line]
    for label, lines in outputs.items():
        if [line for line in lines if b'"summary"' not in line] != reference:
            print(f"FAIL: {label} gave other findings than --jobs 1")
            return 1
    print(f"same findings in every mode ({len(reference)} records)")
    return 0


def _dask(runs: int, base: list[str], directory: Path, paths: list[Path], config: dict, preload: list[str]) -> Timing:
    """The best of ``runs`` on a LocalCluster of two worker processes started with ``config`` and ``preload``; the
    worker peaks are those of the workers' processes."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(config), LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                               dashboard_address=None, preload=preload) as cluster:  # fmt: skip
        pids = [w.process.pid for w in cluster.workers.values()]  # each nanny's worker process
        watch = [pid for worker in pids for pid in _tree(worker)]
        command = [*base, "--scheduler", cluster.scheduler_address, str(directory)]
        elapsed, cpu, out, main_rss, workers = best(runs, command, paths, watch)
    return elapsed, cpu, out, main_rss, {p: workers[p] for p in watch if p in workers}


def _report(rows: list[tuple[str, float, float, int, dict[int, int]]], total: int) -> None:
    one = rows[0][1]
    print(f"{'mode':<16} {'wall s':>7} {'speed-up':>8} {'MB/s':>6} {'CPU s':>7} {'MB/CPU s':>8} {'main RSS':>8}  "
          "worker peak RSS (MiB)")  # fmt: skip
    for label, elapsed, cpu, main_rss, workers in rows:
        peaks = " ".join(f"{rss / 2**20:.0f}" for rss in sorted(workers.values(), reverse=True)) or "-"
        print(f"{label:<16} {elapsed:7.2f} {one / elapsed:7.2f}x {total / 1e6 / elapsed:6.0f} {cpu:7.2f} "
              f"{total / 1e6 / cpu:8.0f} {main_rss / 2**20:8.0f}  {peaks}")  # fmt: skip
    for label, elapsed, *_rest in rows[2:]:
        print(f"{label} / --jobs 2 wall time: {elapsed / rows[1][1]:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
