"""Where one process's time goes: instructions executed per stage of ``leakscope analyze --jobs 1``, counted by
valgrind (cachegrind), so the figures are the same from run to run on a loaded machine (this VM exposes no hardware
counters to ``perf``).

    python bench/stages.py                       # the first 40,000 packets of the all-mail bench capture
    python bench/stages.py --capture F.pcap      # a classic pcap of your own (keep it small: valgrind runs ~50x slower)

Four runs of the same command, each stopping the pipeline one stage earlier (by replacing that stage's entry point in
the analyzing process, nothing else): every stage; detectors off (``SessionAnalyzer.feed`` does nothing, so no
finding is made and nothing but the summary is written); dissectors off too (``MailFlow.data`` does nothing: the
scanner, the reassembler and the per-flow handler still run); and start-up alone (a capture of one packet). The
differences are each stage's instructions, printed in total and per packet. Instructions are not time (a cache
miss costs more than an add), but their shares follow the profile's.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_SOURCE = HERE / "out" / "allmail-60M.pcap"
DEFAULT_PACKETS = 40_000
RUNNER = """
import sys
mode = sys.argv.pop(1)
sys.path.insert(0, {repo!r})
from passive.analysis import flow
from passive.analysis.detectors import session
if mode in ("no-detectors", "no-dissectors"):
    session.SessionAnalyzer.feed = lambda self, events: None
if mode == "no-dissectors":
    flow.MailFlow.data = lambda self, side, data, frame, timestamp: None
from passive.cli.main import main
main()
"""
MODES = ("all", "no-detectors", "no-dissectors")


def instructions(runner: Path, mode: str, capture: Path) -> int:
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, str(runner), mode, "analyze", "--jobs", "1", "--format", "jsonl", "-o", "/dev/null",
               str(capture)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    match = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if match is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def packets_of(capture: Path) -> int:
    done = subprocess.run(["capinfos", "-Tmrc", str(capture)], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().split(",")[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, help="a classic pcap (default: a slice of the all-mail capture)")
    parser.add_argument("--packets", type=int, default=DEFAULT_PACKETS, help="packets of the default slice")
    args = parser.parse_args()
    for tool in ("valgrind", "editcap", "capinfos"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt install valgrind wireshark-common)")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        capture = args.capture
        if capture is None:
            if not DEFAULT_SOURCE.exists():
                raise SystemExit(f"{DEFAULT_SOURCE} is missing: python bench/gen_capture.py --size 60M "
                                 f"--mail-fraction 1.0 --out {DEFAULT_SOURCE}")  # fmt: skip
            capture = work / "slice.pcap"
            subprocess.run(["editcap", "-F", "pcap", "-r", str(DEFAULT_SOURCE), str(capture), f"1-{args.packets}"],
                           check=True)  # fmt: skip
        one = work / "one.pcap"
        subprocess.run(["editcap", "-F", "pcap", "-r", str(capture), str(one), "1"], check=True)
        runner = work / "runner.py"
        runner.write_text(RUNNER.format(repo=str(REPO)))
        packets = packets_of(capture)
        counts = {mode: instructions(runner, mode, capture) for mode in MODES}
        start = instructions(runner, "all", one)
    stages = [
        ("start-up (imports, options, output)", start),
        ("scanner, reassembly, flow handler", counts["no-dissectors"] - start),
        ("dissectors", counts["no-detectors"] - counts["no-dissectors"]),
        ("detectors, findings, records, output", counts["all"] - counts["no-detectors"]),
    ]
    work_total = counts["all"] - start
    print(f"capture: {capture if args.capture else f'first {args.packets:,} packets of {DEFAULT_SOURCE.name}'}"
          f" ({packets:,} packets)")  # fmt: skip
    print(f"{'stage':<40} {'instructions':>15} {'per packet':>11} {'share of work':>14}")
    for name, count in stages:
        share = f"{count / work_total:.0%}" if name != stages[0][0] else ""
        print(f"{name:<40} {count:>15,} {count / packets:>11,.0f} {share:>14}")
    print(f"{'total':<40} {counts['all']:>15,} {counts['all'] / packets:>11,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
