"""Kernel drops as facts: libpcap's counts of every capture process, sampled once per tick.

Each capture process's handle reports, since it opened, the packets the kernel queued for it (``received``, drops
included: Linux adds them), those it dropped because the ring buffer was full (``dropped``) and those the
interface dropped (``if_dropped``). The interface figure is the interface's own, seen by every handle on it, so it
is not summed over processes: the largest is the run's. The meter keeps the latest sample of each process, the
drop rate over the last sample period and its peak; the dashboard shows them, the summary record and the store's
run row hold them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from passive.capture import PcapStats


@dataclass
class DropMeter:
    processes: list[PcapStats] = field(default_factory=list)  # the latest sample of each capture process
    rate: float = 0.0  # packets dropped (kernel and interface) per second over the last sample period
    peak_rate: float = 0.0
    _last: tuple[float, int] | None = None  # (when, dropped) of the previous sample

    def sample(self, processes: list[PcapStats], now: float) -> None:
        """A new sample of every process's counts, taken at ``now`` (a monotonic time)."""
        if not processes:
            return
        self.processes = list(processes)
        lost = self.lost
        if self._last is not None and now > self._last[0]:
            self.rate = max(0, lost - self._last[1]) / (now - self._last[0])
            self.peak_rate = max(self.peak_rate, self.rate)
        self._last = (now, lost)

    @property
    def total(self) -> PcapStats | None:
        if not self.processes:
            return None
        return PcapStats(
            sum(p.received for p in self.processes),
            sum(p.dropped for p in self.processes),
            max(p.if_dropped for p in self.processes),
        )

    @property
    def lost(self) -> int:
        total = self.total
        return total.dropped + total.if_dropped if total is not None else 0

    def summary(self) -> dict[str, Any]:
        """The summary record's drop fields (None before the first sample: nothing was read)."""
        total = self.total
        if total is None:
            return dict.fromkeys(_FIELDS)
        return {
            "kernel_received": total.received,
            "kernel_dropped": total.dropped,
            "interface_dropped": total.if_dropped,
            # Of what reached the interface's capture: the kernel's drops count in received, the interface's not.
            "dropped_percent": round(100 * self.lost / max(1, total.received + total.if_dropped), 3),
            "drops_per_second_peak": round(self.peak_rate, 1),
            "capture_processes": [
                {"received": p.received, "dropped": p.dropped, "interface_dropped": p.if_dropped}
                for p in self.processes
            ],
        }


_FIELDS = (
    "kernel_received",
    "kernel_dropped",
    "interface_dropped",
    "dropped_percent",
    "drops_per_second_peak",
    "capture_processes",
)
