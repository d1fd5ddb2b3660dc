"""``analyze`` run inside a program that goes on afterwards (click's runner here, as any embedding caller) leaves that
program's cyclic garbage collector as it found it: only a process that ends with the command may keep what it holds
out of the collector's sight (passive.core.collector.leave_to_exit)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from click.testing import CliRunner

from passive.cli.main import main

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"


class _Node:
    """An object in a cycle with itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_in_process_analyze_leaves_the_callers_cycles_collectable() -> None:
    gc.unfreeze()  # whatever an earlier test in this process left
    node = _Node()
    gone = weakref.ref(node)
    capture = str(PCAPS / "smtp-ntlm-success-curl.pcap")
    result = CliRunner().invoke(main, ["analyze", "--format", "jsonl", capture])
    assert result.exit_code == 0, result.output
    assert '"type": "summary"' in result.output or '"type":"summary"' in result.output
    del node
    gc.collect()
    assert gone() is None, "a cycle the caller dropped after the run was never collected"
    assert gc.get_freeze_count() == 0
