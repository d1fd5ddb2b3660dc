"""What a ``watch`` run is asked to do (:class:`WatchOptions`, its defaults written once), and its one error."""

from __future__ import annotations

from dataclasses import dataclass

from passive.analysis.domains import IpNetwork
from passive.analysis.pipeline import AnalysisOptions
from passive.capture.live import BUFFER_MIB, SNAPLEN
from passive.capture.options import IDLE_TIMEOUT, MAX_FLOWS
from passive.capture.policy import DEFAULT_POLICY
from passive.core.errors import InputError


class WatchError(InputError):
    """Watching cannot start or continue: the interface, privileges, the store."""


@dataclass
class WatchOptions:
    interface: str
    bpf: str | None = None
    all_ports: bool = True  # every TCP flow, mail recognised by what it says (False: the mail ports only)
    duration: float | None = None  # seconds; None runs until stopped
    snaplen: int = SNAPLEN
    promisc: bool = True
    db: str | None = None  # None: an in-memory store (nothing kept after the run)
    jsonl: str | None = None
    local_domains: frozenset[str] = frozenset()
    trusted_networks: tuple[IpNetwork, ...] = ()
    idle_timeout: float = IDLE_TIMEOUT  # seconds of capture time before an idle flow expires
    tick_interval: float = 1.0  # store commit and dashboard refresh period
    retention: float | None = None  # seconds a finding stays in memory once idle; default 2 x idle_timeout
    # Findings held in memory at once (the store has them all): the least recently seen leave first past this.
    max_live_findings: int = 5000
    max_flows: int = MAX_FLOWS
    reassembly_policy: str = DEFAULT_POLICY  # whose bytes win where segments overlap (passive.capture.policy)
    check_checksums: bool = True  # segments with wrong checksums refused as receivers do (passive.capture.checksums)
    buffer_size: int = BUFFER_MIB  # MiB of kernel ring buffer per capture process (see BUFFER_MIB)
    jobs: int = 1  # capture processes in one fanout group (passive.live.fanout, passive.capture.fanout_bpf)

    def analysis_options(self) -> AnalysisOptions:
        return AnalysisOptions(
            all_ports=self.all_ports, local_domains=self.local_domains, trusted_networks=self.trusted_networks
        )
