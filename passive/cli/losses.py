"""What a run did not read: the summary counters that mean some traffic was not analyzed, in the words the
terminal uses, for the tables of a run and of a store's findings (no rich here: ``findings --format jsonl`` needs
these without drawing anything)."""

from __future__ import annotations

from collections import Counter
from typing import Any

# Counters that mean some traffic was not analyzed: shown without -v whenever they are not zero, so that a clean
# table never hides what the engine could not read.
LOSSES = (
    ("captures_failed", "capture(s) could not be read"),
    ("decode_errors", "packet(s) could not be decoded"),
    ("truncated_packets", "packet(s) cut short by the snap length"),
    ("ip_fragments", "IP fragment(s) not reassembled"),
    ("gap_bytes", "byte(s) missing from the streams (packet loss)"),
    ("flows_one_sided", "session(s) captured in one direction only (what the other side sent is not in the capture)"),
    ("flows_midstream", "session(s) picked up mid-stream (what they said before the capture began is not in it)"),
    ("flows_evicted", "flow(s) evicted from a full flow table"),
    ("buffer_cap_hits", "out-of-order buffer(s) full"),
    ("oversized_records", "record(s) over the size cap"),
    ("findings_dropped", "finding(s) past the findings cap"),
    ("tls_sessions", "session(s) inside TLS, unreadable"),
    ("kernel_dropped", "packet(s) dropped by the kernel before analysis (live capture)"),
    ("interface_dropped", "packet(s) dropped by the interface before analysis (live capture)"),
)


# The summary of a store's findings (``leakscope findings``) holds, under this key, each of LOSSES summed over the
# store's runs, where not zero.
RUNS_NOT_READ = "runs_not_read"


def runs_not_read(runs: list[dict[str, Any]]) -> dict[str, int]:
    """Each counter that means traffic was not analyzed (:data:`LOSSES`), summed over the store's runs, where not
    zero: a store whose findings hold no leak says so only of what its runs read."""
    totals: Counter[str] = Counter()
    summaries = [run["summary"] for run in runs if isinstance(run.get("summary"), dict)]
    for summary in summaries:
        for name, _ in LOSSES:
            value = summary.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                totals[name] += value
    return dict(totals)
