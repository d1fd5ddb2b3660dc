"""End-to-end benchmark of ``leakscope analyze`` against tshark and tcpdump, side by side in one run.

    python bench/run.py            # 100 MB all-mail capture, two 1 GB captures with 2% mail (a few minutes)
    python bench/run.py --quick    # 10 MB and 50 MB captures: a smoke test of the harness

Every figure is the median of ``--runs`` (default 3) runs, each in its own process, the captures in the page cache
(a first untimed read warms it). leakscope runs as a user runs it: the CLI, every port (the default), every
detector, JSON lines to /dev/null. Peak RSS is ``wait4``'s ``ru_maxrss``: the largest resident set of the command's
process and of the worker processes it waited for, so it is a per-process figure.

Captures (generated once by gen_capture.py, cached under bench/out/):

* all mail (``--mail-fraction 1.0``): leakscope against
  ``tshark -q -Y ntlmssp -o smtp.decryption:TRUE -z conv,tcp -r F``, and mail packets per second on one core
  (``--jobs 1``);
* 2% mail: leakscope against ``tcpdump -r F -w /dev/null <mail-port filter>``, also on a variant with 1%
  reordering, 1% retransmission, VLAN tags, 10% of flows in GRE/VXLAN/ERSPAN tunnels and 10% of mail servers on
  ports no filter names; ``--jobs 2`` against ``--jobs 1``;
* the same 2% capture as pcapng (``editcap -F pcapng``) and compressed with ``gzip -1`` (no target): leakscope on
  each file against ``tcpdump -r F`` and ``zcat F | tcpdump -r -`` with the mail-port filter; and the 2% capture
  on standard input (no target): ``cat F | leakscope analyze -`` against ``cat F | tcpdump -r -``.

Every NTLM exchange the generator wrote must be found: the summary's NTLM challenge count (an untimed run writing
JSON lines to a file) against the generator's. Each target is printed with its figure, the anchor beside it and
MET or NOT MET.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
TSHARK = ["tshark", "-q", "-Y", "ntlmssp", "-o", "smtp.decryption:TRUE", "-z", "conv,tcp", "-r"]
# The targets (docs: bench/README.md).
TSHARK_FACTOR = 3.0  # leakscope at least this many times faster than tshark on the all-mail capture
PACKETS_PER_CORE = 250_000  # mail packets per second on one core, end to end
TCPDUMP_FACTOR = 2.0  # at most this many times tcpdump's time on the 2% capture
JOBS_SPEEDUP = 1.8  # two workers against one on the same capture
RSS_MIB = 150  # peak resident set per process


@dataclass
class Run:
    wall: float
    cpu: float  # user and system seconds of the process and its waited-for children
    rss_mib: float


def timed(cmd: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` with its output discarded; wall seconds and the peak RSS of it and its waited-for children."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{err.decode(errors='replace')}")
    return Run(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


@dataclass
class Timing:
    wall: float  # median
    cpu: float  # median
    rss_mib: float  # the largest
    walls: list[float]


def median_of(runs: int, cmd: list[str], env: dict[str, str] | None = None) -> Timing:
    results = [timed(cmd, env) for _ in range(runs)]
    walls = [r.wall for r in results]
    cpu = statistics.median(r.cpu for r in results)
    return Timing(statistics.median(walls), cpu, max(r.rss_mib for r in results), walls)


def generate(out: Path, name: str, size: str, *extra: str) -> Path:
    path = out / name
    if not path.exists() or not path.with_suffix(path.suffix + ".json").exists():
        cmd = [sys.executable, str(HERE / "gen_capture.py"), "--size", size, "--out", str(path), *extra]
        subprocess.run(cmd, check=True)
    return path


def as_pcapng(path: Path) -> Path:
    """``path`` converted to pcapng by editcap beside it (made once)."""
    converted = path.with_suffix(".pcapng")
    if not converted.exists():
        subprocess.run(["editcap", "-F", "pcapng", str(path), str(converted)], check=True)
    return converted


def gzipped(path: Path) -> Path:
    """``path`` compressed with ``gzip -1`` beside it (made once)."""
    packed = path.with_name(path.name + ".gz")
    if not packed.exists():
        with packed.open("wb") as out:
            subprocess.run(["gzip", "-1", "-c", str(path)], stdout=out, check=True)
    return packed


def meta(path: Path) -> dict:
    return json.loads(path.with_suffix(path.suffix + ".json").read_text())


def warm(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(1 << 24):
            pass


def leakscope(path: Path, *options: str, output: str = "/dev/null") -> list[str]:
    return [sys.executable, "-m", "passive", "analyze", "--format", "jsonl", "-o", output, *options, str(path)]


def summary_of(path: Path, env: dict[str, str], *options: str) -> dict:
    """The summary record of a run writing its JSON lines to a file (untimed: the check of what was found)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "findings.jsonl"
        subprocess.run(leakscope(path, *options, output=str(out)), check=True, env=env, capture_output=True)
        last = out.read_text().splitlines()[-1]
    return json.loads(last)


def mail_port_filter() -> str:
    sys.path.insert(0, str(REPO))
    from dissectors.registry import MAIL_PORTS
    from passive.capture import build_bpf_filter

    return build_bpf_filter(MAIL_PORTS)


class Report:
    def __init__(self) -> None:
        self.targets: list[tuple[str, str, str, bool]] = []

    def row(self, capture: str, tool: str, t: Timing, extra: str = "") -> None:
        runs = " ".join(f"{w:.2f}" for w in t.walls)
        line = f"{capture:<30} {tool:<38} {t.wall:8.2f} {t.cpu:8.2f} {t.rss_mib:8.1f}  [{runs}] {extra}"
        print(line.rstrip(), flush=True)

    def target(self, name: str, measured: str, anchor: str, met: bool) -> None:
        self.targets.append((name, measured, anchor, met))

    def print_targets(self) -> bool:
        print()
        print(f"{'target':<62} {'measured':<30} {'anchor':<34} verdict")
        for name, measured, anchor, met in self.targets:
            print(f"{name:<62} {measured:<30} {anchor:<34} {'MET' if met else 'NOT MET'}")
        return all(met for *_, met in self.targets)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small captures (10 MB all-mail, 50 MB mixed)")
    parser.add_argument("--runs", type=int, default=3, help="runs per timing (the median is reported)")
    parser.add_argument("--skip-tshark", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT, help="where the captures are generated and cached")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    all_mail_size, mixed_size = ("10M", "50M") if args.quick else ("100M", "1G")
    args.out.mkdir(parents=True, exist_ok=True)
    all_mail = generate(args.out, f"allmail-{all_mail_size}.pcap", all_mail_size, "--mail-fraction", "1.0")
    clean = generate(args.out, f"mixed-{mixed_size}-0.02.pcap", mixed_size, "--mail-fraction", "0.02")
    perturbed = generate(
        args.out,
        f"mixed-{mixed_size}-0.02-perturbed.pcap",
        mixed_size,
        "--mail-fraction", "0.02", "--reorder", "0.01", "--retransmit", "0.01", "--vlan", "0.1",
        "--tunnel", "0.1", "--odd-ports", "0.1", "--seed", "2",
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    os.chdir(REPO)  # python -m passive imports this checkout's code
    report = Report()
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {cores} cores; {args.runs} runs")
    print(f"{'capture':<30} {'tool':<38} {'median s':>8} {'CPU s':>8} {'RSS MiB':>8}  [each run's wall s]")

    # (a) all mail: tshark, leakscope with its default workers, and one core.
    generated = meta(all_mail)
    warm(all_mail)
    mail_packets = generated["mail_packets"]
    tshark_wall = None
    if not args.skip_tshark and shutil.which("tshark"):
        tshark = median_of(args.runs, [*TSHARK, str(all_mail)])
        tshark_wall = tshark.wall
        report.row(all_mail.name, "tshark -Y ntlmssp -z conv,tcp", tshark)
    two = median_of(args.runs, leakscope(all_mail, "--jobs", "2"), env)
    wall2, rss2 = two.wall, two.rss_mib
    report.row(all_mail.name, "leakscope analyze --jobs 2", two)
    one = median_of(args.runs, leakscope(all_mail, "--jobs", "1"), env)
    wall1, rss1 = one.wall, one.rss_mib
    rate = mail_packets / wall1
    per_cpu = mail_packets / one.cpu
    report.row(all_mail.name, "leakscope analyze --jobs 1", one, f"{rate:,.0f} mail packets/s ({per_cpu:,.0f}/CPU s)")
    if tshark_wall is not None:
        report.target(
            f"all-mail {all_mail_size}: >= {TSHARK_FACTOR:g}x faster than tshark",
            f"{wall2:.2f} s ({tshark_wall / wall2:.2f}x, --jobs 2)",
            f"tshark {tshark_wall:.2f} s",
            tshark_wall / wall2 >= TSHARK_FACTOR,
        )
    report.target(
        f"all-mail {all_mail_size}: >= {PACKETS_PER_CORE:,} mail packets/s per core",
        f"{rate:,.0f} /s ({per_cpu:,.0f}/CPU s)",
        f"{mail_packets:,} packets, {wall1:.2f} s",
        rate >= PACKETS_PER_CORE,
    )
    rss_seen = [rss1, rss2]
    checks = [(all_mail, generated)]

    # (b) 2% mail, clean and perturbed: tcpdump with the mail-port filter, leakscope with two workers;
    # (c) one worker on the clean capture.
    expression = mail_port_filter()
    for path in (clean, perturbed):
        generated = meta(path)
        warm(path)
        dump = median_of(args.runs, ["tcpdump", "-r", str(path), "-w", "/dev/null", expression])
        dump_wall = dump.wall
        report.row(path.name, "tcpdump -r F -w /dev/null <mail ports>", dump)
        two = median_of(args.runs, leakscope(path, "--jobs", "2"), env)
        wall2, rss2 = two.wall, two.rss_mib
        report.row(path.name, "leakscope analyze --jobs 2", two, f"{wall2 / dump_wall:.1f}x tcpdump")
        rss_seen.append(rss2)
        report.target(
            f"{path.name}: <= {TCPDUMP_FACTOR:g}x tcpdump -r (mail ports)",
            f"{wall2:.2f} s ({wall2 / dump_wall:.1f}x)",
            f"tcpdump {dump_wall:.2f} s",
            wall2 <= TCPDUMP_FACTOR * dump_wall,
        )
        if path is clean:
            one = median_of(args.runs, leakscope(path, "--jobs", "1"), env)
            wall1, rss1 = one.wall, one.rss_mib
            report.row(path.name, "leakscope analyze --jobs 1", one)
            rss_seen.append(rss1)
            report.target(
                f"{path.name}: --jobs 2 >= {JOBS_SPEEDUP:g}x --jobs 1",
                f"{wall1 / wall2:.2f}x ({wall2:.2f} s)",
                f"--jobs 1 {wall1:.2f} s",
                wall1 / wall2 >= JOBS_SPEEDUP,
            )
        checks.append((path, generated))

    # (d) the 2% capture as pcapng and gzip-compressed (no target): tcpdump on the pcapng file, and reading zcat's
    # output, beside leakscope on each file.
    for other, dump_cmd, anchor in (
        (as_pcapng(clean), "tcpdump -r {f} -w /dev/null '{e}'", "tcpdump -r F <mail ports>"),
        (gzipped(clean), "zcat {f} | tcpdump -r - -w /dev/null '{e}'", "zcat F | tcpdump -r - <mail ports>"),
    ):
        warm(other)
        dump = median_of(args.runs, ["sh", "-c", dump_cmd.format(f=other, e=expression)])
        report.row(other.name, anchor, dump)
        two = median_of(args.runs, leakscope(other, "--jobs", "2"), env)
        report.row(
            other.name, "leakscope analyze --jobs 2", two, f"{two.wall / dump.wall:.1f}x {anchor.split(' <')[0]}"
        )
        rss_seen.append(two.rss_mib)
        checks.append((other, meta(clean)))

    # (e) the 2% capture on standard input (no target), as a capture tool's output reaches it: tcpdump reading the
    # same pipe beside it.
    piped = f"cat {clean} | "
    dump = median_of(args.runs, ["sh", "-c", f"{piped}tcpdump -r - -w /dev/null '{expression}'"])
    report.row(clean.name, "cat F | tcpdump -r - <mail ports>", dump)
    through = median_of(args.runs, ["sh", "-c", piped + " ".join(leakscope(Path("-")))], env)
    report.row(clean.name, "cat F | leakscope analyze -", through, f"{through.wall / dump.wall:.1f}x cat F | tcpdump")
    rss_seen.append(through.rss_mib)

    # Every NTLM exchange found (an untimed run each, JSON lines to a file).
    for path, generated in checks:
        summary = summary_of(path, env)
        found = summary.get("ntlm_messages", {}).get("challenge", 0)
        expected = generated["ntlm_challenges"]
        report.target(
            f"{path.name}: every NTLM exchange found",
            f"{found} challenges",
            f"generated {expected}",
            found == expected,
        )
    report.target(
        f"peak RSS <= {RSS_MIB} MiB per process (every leakscope run)",
        f"{max(rss_seen):.1f} MiB",
        f"{RSS_MIB} MiB",
        max(rss_seen) <= RSS_MIB,
    )
    all_met = report.print_targets()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at end: {load}; benchmark took {time.perf_counter() - started:.0f} s")
    return 0 if all_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
