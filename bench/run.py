"""Benchmark the capture engine against tcpdump and tshark on generated captures.

    python bench/run.py --size 1G            # full run (about a minute plus generation)
    python bench/run.py --size 200M --skip-tshark

Generates (once, cached under bench/out/) a mixed capture with the given mail fraction,
the same capture with 1% reordering and 1% retransmission of mail segments plus VLAN
tags, and an all-mail capture; then times, each in its own process (peak RSS from
wait4):

* ``tcpdump -r FILE -w /dev/null <mail filter>`` (the baseline),
* the engine with a no-op-like handler that counts NTLM challenges (``TlRMTVNTUAAC``,
  the base64 of an NTLMSSP Type 2 header) in server streams: libpcap reader with exact
  frame numbers, with ordinal frame numbers, the pure-Python reader, and port-independent
  mode (every TCP flow, greeting classifier),
* ``tshark -r FILE -Y <mail ports>`` on a smaller capture (``--tshark-size``).

It checks that the engine finds every generated NTLM challenge with and without
reordering, and prints ratios, throughput and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
CHALLENGE = b"TlRMTVNTUAAC"
sys.path.insert(0, str(HERE.parent))


# -- worker: runs inside a child process ----------------------------------------------------


class ChallengeCounter:
    """Per-flow handler counting NTLM Type 2 challenges in the server's stream (split-safe)."""

    total = 0

    def __init__(self) -> None:
        self.carry = b""

    def on_open(self, flow: object) -> None:
        pass

    def on_data(self, flow: object, direction: int, chunk: object) -> None:
        if direction == 1:
            data = self.carry + chunk.data  # type: ignore[attr-defined]
            if CHALLENGE[:1] in data:
                ChallengeCounter.total += data.count(CHALLENGE)
            self.carry = data[-(len(CHALLENGE) - 1) :]

    def on_gap(self, flow: object, direction: int, missing: int, frame: int, ts: float) -> None:
        if direction == 1:
            self.carry = b""

    def on_close(self, flow: object, reason: object) -> None:
        pass


def worker(path: str, mode: str) -> None:
    from passive.analysis.classify import mail_capture_options
    from passive.capture import analyze_file

    options = {
        "exact": mail_capture_options(),
        "ordinal": mail_capture_options(exact_frames=False),
        "python": mail_capture_options(backend="python"),
        "all-ports": mail_capture_options(all_ports=True),
    }[mode]
    started = time.perf_counter()
    counters = analyze_file(path, lambda flow: ChallengeCounter(), options)
    elapsed = time.perf_counter() - started
    print(json.dumps({"elapsed": elapsed, "challenges": ChallengeCounter.total, "counters": counters.as_dict()}))


# -- driver ------------------------------------------------------------------------------------


def timed(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, int, bytes]:
    """Run ``cmd``; return (wall seconds, peak RSS in KiB, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if stdout is None else stdout, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return elapsed, usage.ru_maxrss, out


def best_of(runs: int, cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, int, bytes]:
    results = [timed(cmd, stdout) for _ in range(runs)]
    return min(results, key=lambda r: r[0])


def generate(name: str, size: str, *extra: str) -> Path:
    path = OUT / name
    if not path.exists() or not path.with_suffix(path.suffix + ".json").exists():
        subprocess.run(
            [sys.executable, str(HERE / "gen_capture.py"), "--size", size, "--out", str(path), *extra], check=True
        )
    return path


def meta(path: Path) -> dict:
    return json.loads(path.with_suffix(path.suffix + ".json").read_text())


def mail_filter() -> str:
    from dissectors.registry import MAIL_PORTS
    from passive.capture import build_bpf_filter

    return build_bpf_filter(MAIL_PORTS)


def run_engine(path: Path, mode: str, runs: int) -> dict:
    elapsed, rss, out = best_of(runs, [sys.executable, __file__, "--worker", str(path), mode], stdout=None)
    result = json.loads(out)
    result["wall"] = elapsed
    result["rss_mib"] = rss / 1024
    return result


def all_mail_run(path: Path, mode: str, runs: int, results: dict) -> None:
    size_mb = path.stat().st_size / 1e6
    result = run_engine(path, mode, runs)
    wall, matched = result["wall"], result["counters"]["packets_matched"]
    row = f"{path.name:<34} {'leakscope ' + mode:<22} {wall:8.2f} {'':>9} {size_mb / wall:8.0f}"
    print(f"{row} {matched / wall:11.0f} {result['rss_mib']:8.1f}")
    if result["challenges"] != meta(path)["ntlm_challenges"]:
        expected = meta(path)["ntlm_challenges"]
        print(f"    NTLM challenges: found {result['challenges']}, generated {expected}  <-- MISMATCH")
    results[f"{path.name}:{mode}"] = result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1G", help="size of the mixed captures")
    parser.add_argument("--mail-fraction", default="0.02")
    parser.add_argument("--all-mail-size", default="200M", help="size of the all-mail capture")
    parser.add_argument("--tshark-size", default="100M", help="size of the capture tshark reads")
    parser.add_argument("--skip-tshark", action="store_true")
    parser.add_argument("--only-tshark", action="store_true", help="run only the tshark comparison")
    parser.add_argument("--runs", type=int, default=2, help="best of N for each timing")
    parser.add_argument("--worker", nargs=2, metavar=("FILE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0

    OUT.mkdir(exist_ok=True)
    frac = args.mail_fraction
    clean = generate(f"mixed-{args.size}-{frac}.pcap", args.size, "--mail-fraction", frac)
    perturbed = generate(
        f"mixed-{args.size}-{frac}-reorder.pcap",
        args.size,
        "--mail-fraction", frac, "--reorder", "0.01", "--retransmit", "0.01", "--vlan", "0.1", "--seed", "2",
    )  # fmt: skip
    all_mail = generate(f"allmail-{args.all_mail_size}.pcap", args.all_mail_size, "--mail-fraction", "1.0")
    expr = mail_filter()
    results: dict[str, object] = {}
    ok = True

    print(f"{'capture':<34} {'tool':<22} {'wall s':>8} {'x tcpdump':>9} {'MB/s':>8} {'mail pkt/s':>11} {'RSS MiB':>8}")
    for path in () if args.only_tshark else (clean, perturbed):
        size_mb = path.stat().st_size / 1e6
        tcpdump_wall, tcpdump_rss, _ = best_of(args.runs, ["tcpdump", "-r", str(path), "-w", "/dev/null", expr])
        row = f"{path.name:<34} {'tcpdump -w /dev/null':<22} {tcpdump_wall:8.2f} {1:9.2f} {size_mb / tcpdump_wall:8.0f}"
        print(f"{row} {'':>11} {tcpdump_rss / 1024:8.1f}")
        generated = meta(path)
        for mode in ("exact", "ordinal", "python", "all-ports"):
            result = run_engine(path, mode, args.runs)
            counters = result["counters"]
            wall = result["wall"]
            matched = counters["packets_matched"]
            row = f"{'':<34} {'leakscope ' + mode:<22} {wall:8.2f} {wall / tcpdump_wall:9.2f} {size_mb / wall:8.0f}"
            print(f"{row} {matched / wall:11.0f} {result['rss_mib']:8.1f}")
            found, expected = result["challenges"], generated["ntlm_challenges"]
            if found != expected:
                ok = False
                print(f"    NTLM challenges: found {found}, generated {expected}  <-- MISMATCH")
            results[f"{path.name}:{mode}"] = {**result, "tcpdump_wall": tcpdump_wall, "expected_challenges": expected}
        print(
            f"    NTLM challenges generated {generated['ntlm_challenges']}; reordered segments "
            f"{generated['reordered_segments']}, retransmitted {generated['retransmitted_segments']}"
        )

    for mode in () if args.only_tshark else ("exact", "ordinal"):
        all_mail_run(all_mail, mode, args.runs, results)
        ok = ok and results[f"{all_mail.name}:{mode}"]["challenges"] == meta(all_mail)["ntlm_challenges"]

    if not args.skip_tshark and shutil.which("tshark"):
        small = generate(f"mixed-{args.tshark_size}-{frac}.pcap", args.tshark_size, "--mail-fraction", frac)
        size_mb = small.stat().st_size / 1e6
        display = "tcp.port in {25,465,587,2525,110,995,143,993}"
        t_wall, t_rss, _ = best_of(1, ["tshark", "-r", str(small), "-Y", display, "-T", "fields", "-e", "frame.number"])
        d_wall, _, _ = best_of(args.runs, ["tcpdump", "-r", str(small), "-w", "/dev/null", expr])
        engine = run_engine(small, "exact", args.runs)
        row = f"{small.name:<34} {'tshark -Y':<22} {t_wall:8.2f} {t_wall / d_wall:9.2f} {size_mb / t_wall:8.0f}"
        print(f"{row} {'':>11} {t_rss / 1024:8.1f}")
        row = f"{'':<34} {'leakscope exact':<22} {engine['wall']:8.2f} {engine['wall'] / d_wall:9.2f}"
        print(f"{row} {size_mb / engine['wall']:8.0f} {'':>11} {engine['rss_mib']:8.1f}")
        results[f"{small.name}:tshark"] = {"wall": t_wall, "rss_mib": t_rss / 1024, "tcpdump_wall": d_wall}

    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print("every NTLM challenge found" if ok else "NTLM CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
