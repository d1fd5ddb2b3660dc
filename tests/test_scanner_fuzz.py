"""A short, seeded run of the scanners' differential fuzzer (fuzz/scanners.py): damaged, nested, fragmented tunnel
packets of a few flows each, with random virtual network ids and verdicts between batches; the compiled scanner and
its Python twin admit the same packets as the same segments, with the same counters, and neither fails, whether
they read libpcap's buffers or a pcap file (cut short at times). The long
run (minutes, under AddressSanitizer) is ``python fuzz/scanners.py --seconds N``."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from fuzz import scanners
from passive.capture import scanread
from passive.capture.defrag import Defragmenter
from passive.capture.linklayer import INFO_VNET_SHIFT, decode_tcp

pytestmark = pytest.mark.skipif(not scanread.native_available(), reason="the compiled scanner is not built")


@pytest.mark.parametrize("block", range(4))
def test_both_scanners_agree_on_damaged_nested_and_fragmented_tunnels(block: int, tmp_path: Path) -> None:
    totals: Counter[str] = Counter()
    for seed in range(block * 25, block * 25 + 25):
        totals.update(scanners.compare(seed, 300, directory=tmp_path))  # some from pcap files
    # The rounds reach what they are meant to: joined and tunnelled segments admitted, damage and fragments counted.
    assert totals["admitted"] > 0 and totals["malformed"] > 0 and totals["fragments"] > 0
    assert all(totals[kind] > 0 for kind in ("gre", "vxlan", "geneve", "mpls", "ip-in-ip"))


def test_the_frames_made_include_joined_tunnel_packets_with_virtual_networks() -> None:
    """The fuzzer's pieces make whole tunnel packets, and its segments carry virtual network ids (what it sets out
    to test)."""
    joined = vnets = 0
    for seed in range(20):
        made = scanners.frames(random.Random(seed), 300)
        defrag = Defragmenter()
        joined += sum(defrag.add(1, frame, ts) is not None for ts, frame in made)
        for _ts, frame in made:
            segment = decode_tcp(1, frame)
            vnets += isinstance(segment, tuple) and segment[9] >> INFO_VNET_SHIFT != 0
    assert joined > 0 and vnets > 0


def test_both_scanners_agree_over_long_rounds() -> None:
    """Rounds long enough for the defragmenter to fill (MAX_DATAGRAMS open at once) and flow tables to grow."""
    for seed in range(4):
        scanners.compare(seed, 5000)
