"""Reports a process's own peak RSS when it exits: ``fuzz/floods.py`` puts this directory first on PYTHONPATH of the
command it measures, with LEAKSCOPE_PEAK_FILE naming where to write the figure (MiB).

wait4's ru_maxrss would do, but on Linux a child inherits its parent's peak across fork and exec (the memory map is
copied with its high-water mark), so a flood run from a large process (pytest, or the flood writer itself) would
report that process's peak. VmHWM is the child's own memory map's.
"""

import atexit
import os

_PEAK_FILE = os.environ.get("LEAKSCOPE_PEAK_FILE")


def _write_peak() -> None:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                with open(_PEAK_FILE, "w") as out:  # type: ignore[arg-type]
                    out.write(str(int(line.split()[1]) / 1024))
                return


if _PEAK_FILE and os.path.exists("/proc/self/status"):
    atexit.register(_write_peak)
