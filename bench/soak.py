"""Soak benchmark for ``leakscope watch``: replay mail traffic for a set time, record RSS and kernel drops.

    sudo python bench/soak.py --duration 300            # five minutes, 2000 packets/s
    sudo python bench/soak.py --duration 3600 --pps 5000

Needs root. It creates the network namespace ``lssoak`` holding one veth pair (``lssoak-r`` -> ``lssoak-w``;
nothing in it has an address, so the replayed packets go nowhere else), starts ``leakscope watch -i lssoak-w
--db ... --quiet`` there, and replays every capture in ``pcaps/`` in a loop with ``tcpreplay --unique-ip``:
each loop rewrites the addresses, so every round brings new flows, new servers and new findings, the way days
of traffic on a span port would. Watch runs with a short idle timeout (``--idle-timeout``, default 10 s), so
flows expire and idle findings leave memory within the run.

Every ``--interval`` seconds it samples the watch process's RSS (``VmRSS``). At the end it stops watch with
SIGTERM and reads its summary (kernel drops from libpcap's statistics, flows, expiries, findings written and
forgotten). It reports RSS after warm-up (``--warmup``, default a fifth of the run) against RSS at the end and
the largest RSS after warm-up, and writes everything to ``bench/out/soak-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import veth  # bench/veth.py, beside this script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
NAMESPACE = "lssoak"
REPLAY_IF, WATCH_IF = "lssoak-r", "lssoak-w"
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def delete_namespace() -> None:
    veth.delete_namespace(NAMESPACE)


def create_namespace() -> None:
    veth.create_namespace(NAMESPACE, REPLAY_IF, WATCH_IF)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def watch_started(db: Path) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            return connection.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    captures = sorted(str(p) for p in (ROOT / "pcaps").glob("*.pcap"))
    db = work / "soak.db"
    in_namespace = ["ip", "netns", "exec", NAMESPACE]
    idle = ["--idle-timeout", str(args.idle_timeout)]
    replay_options = ["-q", "-K", "-i", REPLAY_IF, "--pps", str(args.pps), "--loop", "0", "--unique-ip"]
    watch = subprocess.Popen(
        [*in_namespace, *LEAKSCOPE, "watch", "-i", WATCH_IF, "--db", str(db), "--quiet", *idle],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    replay: subprocess.Popen[str] | None = None
    samples: list[dict[str, float]] = []
    try:
        deadline = time.monotonic() + 30
        while not watch_started(db):
            if time.monotonic() > deadline or watch.poll() is not None:
                raise SystemExit(f"watch did not start: {watch.communicate(timeout=5)[1].strip()}")
            time.sleep(0.2)
        replay = subprocess.Popen(
            [*in_namespace, "tcpreplay", *replay_options, "--no-flow-stats", *captures],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < args.duration:
            if replay.poll() is not None:
                raise SystemExit(f"tcpreplay stopped: {replay.communicate()[1].strip()}")
            kib = rss_kib(watch.pid)
            if kib is None:
                raise SystemExit(f"watch exited: {watch.communicate(timeout=5)[1].strip()}")
            cpu = cpu_seconds(watch.pid)
            samples.append({"t": round(elapsed, 1), "rss_mib": round(kib / 1024, 2), "cpu_s": cpu})
            print(f"{elapsed:7.1f} s  RSS {kib / 1024:7.2f} MiB  CPU {cpu:7.1f} s", flush=True)
            time.sleep(args.interval)
    finally:
        if replay is not None and replay.poll() is None:
            replay.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                replay.wait(10)
            if replay.poll() is None:
                replay.kill()
                replay.wait()
        if watch.poll() is None:
            watch.send_signal(signal.SIGTERM)
        try:
            _out, err = watch.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            watch.kill()
            _out, err = watch.communicate()
    summary = read_summary(db)
    return {"samples": samples, "summary": summary, "watch_exit": watch.returncode, "watch_stderr": err.strip()}


def read_summary(db: Path) -> dict[str, Any] | None:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        row = connection.execute("SELECT summary FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        stored = connection.execute("SELECT count(*) FROM findings").fetchone()[0]
    summary = json.loads(row[0]) if row and row[0] else None
    if summary is not None:
        summary["findings_in_store"] = stored
        summary["store_bytes"] = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    return summary


def report(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    samples = result["samples"]
    after = [s["rss_mib"] for s in samples if s["t"] >= args.warmup]
    if not after:
        raise SystemExit("no samples after warm-up: run longer or lower --warmup")
    figures = {
        "rss_at_warmup_mib": after[0],
        "rss_end_mib": after[-1],
        "rss_max_after_warmup_mib": max(after),
        "rss_median_after_warmup_mib": statistics.median(after),
        "rss_growth_after_warmup_mib": round(after[-1] - after[0], 2),
        "watch_cpu_percent": round(100 * samples[-1]["cpu_s"] / samples[-1]["t"], 1) if samples[-1]["t"] else None,
    }
    summary = result["summary"] or {}
    for key in (
        "packets_read",
        "kernel_received",
        "kernel_dropped",
        "interface_dropped",
        "flows",
        "flows_expired",
        "flows_evicted",
        "gaps",
        "findings_written",
        "findings_forgotten",
        "findings_in_memory",
        "findings_in_store",
        "store_bytes",
    ):
        figures[key] = summary.get(key)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300, help="seconds of replay (default 300)")
    parser.add_argument("--pps", type=int, default=2000, help="packets per second replayed (default 2000)")
    parser.add_argument("--interval", type=float, default=5, help="seconds between RSS samples (default 5)")
    parser.add_argument("--warmup", type=float, help="seconds before RSS should be flat (default duration/5)")
    parser.add_argument("--idle-timeout", type=float, default=10, help="watch --idle-timeout (default 10)")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = args.duration / 5
    if os.geteuid() != 0:
        print("soak: needs root (network namespace, live capture)", file=sys.stderr)
        return 2
    missing = [tool for tool in ("ip", "tcpreplay") if shutil.which(tool) is None]
    if missing:
        print(f"soak: missing {' '.join(missing)}", file=sys.stderr)
        return 2
    create_namespace()
    work = Path(tempfile.mkdtemp(prefix="leakscope-soak-"))
    try:
        result = soak(args, work)
    finally:
        delete_namespace()
        shutil.rmtree(work, ignore_errors=True)
    figures = report(args, result)
    OUT.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = OUT / f"soak-{stamp}.json"
    document = {"arguments": vars(args), "figures": figures, **result}
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"soak: wrote {path}")
    return 0 if result["watch_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
