"""Live benchmark for ``leakscope watch``: an all-mail capture replayed onto a veth at rising rates, 1 and 2 processes.

    sudo python bench/live.py                                  # 50, 100, 200, 400 Mbit/s; --jobs 1 and 2
    sudo python bench/live.py --rates 150,200,250 --jobs 2 --buffer-size 64

Needs root, tcpreplay and ip. It generates (once, cached in ``bench/out/``) an all-mail capture with
``bench/gen_capture.py --mail-fraction 1.0`` (``--size``, default 60M; ``--servers N``: the sessions share N
server addresses, as on one site's span port, instead of a new server each), analyzes it once with ``leakscope
analyze`` for the NTLM servers a complete view finds, and creates the network namespace ``lslive`` holding one
veth pair (``lslive-r`` -> ``lslive-w``, MTU 9000; nothing there has an address, so the replayed packets go
nowhere else).
For each process count and rate it starts ``leakscope watch -i lslive-w --jobs N --db ... --quiet`` in the
namespace, replays the capture once with ``tcpreplay --mbps RATE``, waits until the watch has read or dropped
every packet sent (its run row, written as the run goes, says so), stops it with SIGTERM and reads its summary
from the store. Meanwhile it samples the RSS and PSS of every watch process (the parent and its capture
processes, summed) every 0.2 s.

It prints, per run: the rate asked and reached, packets sent, read by the watch, dropped (kernel and interface,
and their share of those sent), flows with gaps, NTLM servers found against the complete view, findings lost (the
summary's ``findings_dropped``: made but never stored, because the finding set was full), CPU seconds of the
parent and of each capture process, peak RSS and PSS of the whole watch (summed RSS counts a page shared after
fork once per process that maps it, PSS once in all), and the load average before the run (the machine may be
shared). Everything also goes to ``bench/out/live-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import veth  # bench/veth.py, beside this script

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
NAMESPACE = "lslive"
REPLAY_IF, WATCH_IF = "lslive-r", "lslive-w"
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
SETTLED = 3.0  # seconds the run row must stay unchanged before the watch is taken to have read everything
MTU = 9000  # of the veth pair: every frame of the generated capture fits
CATCH_UP_LIMIT = 300.0  # seconds at most to wait for that after the replay


def run(argv: list[str], check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def delete_namespace() -> None:
    veth.delete_namespace(NAMESPACE)


def create_namespace() -> None:
    veth.create_namespace(NAMESPACE, REPLAY_IF, WATCH_IF, mtu=MTU)


def capture_file(size: str, servers: int) -> Path:
    path = OUT / (f"allmail-{size}.pcap" if not servers else f"allmail-{size}-{servers}servers.pcap")
    if not path.exists():
        OUT.mkdir(exist_ok=True)
        generate = [sys.executable, str(HERE / "gen_capture.py"), "--size", size, "--mail-fraction", "1.0"]
        run([*generate, "--servers", str(servers), "--out", str(path)])
    return path


def ntlm_servers_in_file(capture: Path) -> set[str]:
    """The NTLM servers a complete view of the capture finds."""
    result = run([*LEAKSCOPE, "analyze", str(capture), "--format", "jsonl", "-o", "-"])
    records = (json.loads(line) for line in result.stdout.splitlines() if line.strip())
    return {r["server"] for r in records if r.get("type") == "ntlm-info"}


def process_tree(pid: int) -> dict[int, tuple[int, float, int]]:
    """``pid`` and every descendant: VmRSS (KiB), CPU seconds (user + system) and PSS (KiB: the process's share of
    each page it maps, so that pages shared after fork count once over the tree) of each."""
    found, pending = {}, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            rss = pss = 0
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            found[current] = (rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), pss)
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
    return found


class Sampler(threading.Thread):
    """Every 0.2 s: the summed RSS and PSS of the watch's processes (their peaks), and each process's CPU time (its
    last)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kib, self.peak_pss_kib, self.stopped = pid, 0, 0, threading.Event()
        self.cpu: dict[int, float] = {}

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            tree = process_tree(self.pid)
            self.peak_kib = max(self.peak_kib, sum(rss for rss, _cpu, _pss in tree.values()))
            self.peak_pss_kib = max(self.peak_pss_kib, sum(pss for _rss, _cpu, pss in tree.values()))
            self.cpu.update({pid: cpu for pid, (_rss, cpu, _pss) in tree.items()})

    def cpu_seconds(self) -> tuple[float, list[float]]:
        """The watch process's CPU seconds, and each capture process's."""
        return self.cpu.get(self.pid, 0.0), [round(v, 1) for k, v in sorted(self.cpu.items()) if k != self.pid]


def run_row(db: Path) -> dict[str, Any] | None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            row = connection.execute("SELECT summary FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    if row is None:
        return None
    return json.loads(row[0]) if row[0] else {}


def ntlm_servers_in_store(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = connection.execute("SELECT server FROM findings WHERE type = 'ntlm-info'").fetchall()
    return {row[0] for row in rows}


def replay(capture: Path, mbps: float) -> dict[str, Any]:
    argv = ["ip", "netns", "exec", NAMESPACE, "tcpreplay", "-q", "-i", REPLAY_IF, "--mbps", str(mbps), str(capture)]
    output = run(argv).stdout
    sent = re.search(r"Actual: (\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds", output)
    rated = re.search(r"Rated: [\d.]+ Bps, ([\d.]+) Mbps, ([\d.]+) pps", output)
    if not sent or not rated:
        raise SystemExit(f"cannot read tcpreplay's figures: {output}")
    return {"sent": int(sent[1]), "seconds": float(sent[3]), "mbps": float(rated[1]), "pps": float(rated[2])}


def wait_settled(db: Path, watch: subprocess.Popen[str], sent: int) -> None:
    """Until the watch has read or dropped every packet sent (its run row says so as it goes) and its run row stops
    changing, at most CATCH_UP_LIMIT s: what is still in a ring buffer at the stop would be neither."""
    deadline = time.monotonic() + CATCH_UP_LIMIT
    last, since = None, time.monotonic()
    while time.monotonic() < deadline and watch.poll() is None:
        row = run_row(db) or {}
        current = {k: v for k, v in row.items() if k != "duration_seconds"}
        if current != last:
            last, since = current, time.monotonic()
        accounted = (row.get("packets_read") or 0) + (row.get("kernel_dropped") or 0)
        if accounted >= sent and time.monotonic() - since >= SETTLED:
            return
        time.sleep(0.5)


def one_run(args: argparse.Namespace, capture: Path, jobs: int, mbps: float, work: Path) -> dict[str, Any]:
    db = work / f"live-{jobs}-{mbps}.db"
    load = os.getloadavg()
    argv = [*LEAKSCOPE, "watch", "-i", WATCH_IF, "--jobs", str(jobs), "--db", str(db), "--quiet"]
    if args.buffer_size:
        argv += ["--buffer-size", str(args.buffer_size)]
    watch = subprocess.Popen(
        ["ip", "netns", "exec", NAMESPACE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    sampler = Sampler(watch.pid)
    try:
        deadline = time.monotonic() + 60
        while run_row(db) is None:
            if time.monotonic() > deadline or watch.poll() is not None:
                raise SystemExit(f"watch did not start: {watch.communicate(timeout=5)[1].strip()}")
            time.sleep(0.2)
        sampler.start()
        sent = replay(capture, mbps)
        wait_settled(db, watch, sent["sent"])
    finally:
        sampler.stopped.set()
        if watch.poll() is None:
            watch.send_signal(signal.SIGTERM)
        try:
            _out, err = watch.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            watch.kill()
            _out, err = watch.communicate()
    summary = run_row(db) or {}
    received = summary.get("kernel_received") or 0
    lost = (summary.get("kernel_dropped") or 0) + (summary.get("interface_dropped") or 0)
    return {
        "jobs": jobs,
        "mbps_asked": mbps,
        "mbps": sent["mbps"],
        "pps": round(sent["pps"]),
        "sent": sent["sent"],
        "received": received,
        "dropped": lost,
        "dropped_percent": round(100 * lost / max(1, sent["sent"]), 2),
        "read": summary.get("packets_read"),
        "flows_with_gaps": summary.get("flows_with_gaps"),
        "ntlm_servers": len(ntlm_servers_in_store(db)),
        "findings_lost": summary.get("findings_dropped"),  # not kept in memory long enough to reach the store
        "peak_rss_mib": round(sampler.peak_kib / 1024, 1),
        "peak_pss_mib": round(sampler.peak_pss_kib / 1024, 1),
        "cpu_parent_s": round(sampler.cpu_seconds()[0], 1),
        "cpu_capture_s": sampler.cpu_seconds()[1],
        "load_before": [round(x, 2) for x in load],
        "watch_exit": watch.returncode,
        "watch_stderr": err.strip()[-2000:],
        "summary": summary,
    }


ROW = "{jobs:>4} {mbps_asked:>6g} {mbps:>7.1f} {pps:>7} {sent:>8} {read:>8} {dropped:>8} {dropped_percent:>6.2f}% "
ROW += "{flows_with_gaps:>6} {ntlm:>11} {findings_lost:>6} {peak_rss_mib:>7.1f} {peak_pss_mib:>7.1f} {cpu:>14} {load}"
HEADER = "jobs   Mbps reached   pkt/s     sent     read  dropped    drop%   gaps   NTLM srv   lost RSS MiB PSS MiB"
HEADER += "    CPU s    load"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="60M", help="size of the generated all-mail capture (default 60M)")
    parser.add_argument("--rates", default="50,100,200,400", help="Mbit/s, comma-separated (default 50,100,200,400)")
    parser.add_argument("--jobs", default="1,2", help="watch --jobs values, comma-separated (default 1,2)")
    parser.add_argument(
        "--servers", type=int, default=0, help="mail server addresses the sessions share (default: one per session)"
    )
    parser.add_argument("--buffer-size", type=int, help="watch --buffer-size (MiB; default: watch's own)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: a network namespace and live capture")
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}")
    capture = capture_file(args.size, args.servers)
    expected = ntlm_servers_in_file(capture)
    print(f"capture {capture.name}: {capture.stat().st_size / 1e6:.1f} MB, {len(expected)} NTLM servers", flush=True)
    print(HEADER, flush=True)
    results = []
    create_namespace()
    try:
        with tempfile.TemporaryDirectory(prefix="lslive-") as work:
            for jobs in (int(j) for j in args.jobs.split(",")):
                for mbps in (float(r) for r in args.rates.split(",")):
                    result = one_run(args, capture, jobs, mbps, Path(work))
                    results.append(result)
                    ntlm = f"{result['ntlm_servers']}/{len(expected)}"
                    load = " ".join(f"{x:.2f}" for x in result["load_before"])
                    cpu = "+".join(f"{c:g}" for c in [result["cpu_parent_s"], *result["cpu_capture_s"]])
                    print(ROW.format(**result, ntlm=ntlm, load=load, cpu=cpu), flush=True)
    finally:
        delete_namespace()
    OUT.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = OUT / f"live-{stamp}.json"
    path.write_text(json.dumps({"capture": str(capture), "ntlm_servers": len(expected), "runs": results}, indent=1))
    print(f"written {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
