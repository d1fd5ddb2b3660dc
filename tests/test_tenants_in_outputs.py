"""Tenants of an overlay reusing one server address are servers apart in the table's headline and the HTML report,
as they are in the findings' ids: before, the headline counted addresses (``on 1 server`` for two tenants and the
native server) and the report merged the tenants' findings into one server's card."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from scapy.layers.l2 import Ether

from tests.helpers_capture import pcap_bytes, write
from tests.test_tunnel_tenants import MAC, SERVER, TENANTS, _dialogue, _session, _vxlan

ROOT = Path(__file__).resolve().parents[1]
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]


def test_tenants_and_the_native_server_are_three_servers(tmp_path: Path) -> None:
    frames = []
    for number, packet in enumerate(_session(25, _dialogue("NATIVE", "native.example", 0))):
        frames.append((1_800_000_000 + number * 0.01, Ether(**MAC) / packet))
    for vni, names in TENANTS.items():
        for number, packet in enumerate(_session(25, _dialogue(*names, 0))):
            frames.append((1_800_000_100 + vni + number * 0.01, _vxlan(vni)(packet)))
    capture = write(tmp_path / "tenants.pcap", pcap_bytes(frames))
    base = tmp_path / "out"
    done = subprocess.run([*LEAKSCOPE, "analyze", "-oA", str(base), str(capture)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    headline = Path(f"{base}.txt").read_text().splitlines()[0]
    assert " on 3 servers" in headline, headline
    html = Path(f"{base}.html").read_text()
    for vni in TENANTS:
        assert f"{SERVER}:25 in vxlan-vni:{vni}" in html


def test_the_watch_dashboard_lists_tenants_at_one_address_as_servers_apart(tmp_path: Path) -> None:
    """The live dashboard's servers and findings name each tenant's network: merged by address, one tenant's banner
    and software replaced the other's on one line."""
    from rich.console import Console

    from passive.analysis.classify import mail_capture_options
    from passive.capture import analyze_file
    from passive.cli.dashboard import dashboard, entry_line
    from passive.live.monitor import Monitor, WatchOptions
    from passive.results.store import FindingStore

    frames = []
    for vni, names in TENANTS.items():
        for number, packet in enumerate(_session(25, _dialogue(*names, 0))):
            frames.append((1_800_000_100 + vni + number * 0.01, _vxlan(vni)(packet)))
    capture = write(tmp_path / "tenants.pcap", pcap_bytes(frames))
    monitor = Monitor(WatchOptions("eth-test"), FindingStore(":memory:"))
    monitor.writer = monitor.store.writer("watch")
    analyze_file(capture, monitor.analysis.handler_factory, mail_capture_options())
    monitor._flush()
    assert sorted(monitor.servers) == [f"{SERVER}:25 in vxlan-vni:{vni}" for vni in sorted(TENANTS)]
    banners = sorted(server.banner or "" for server in monitor.servers.values())
    assert [b.split()[0] for b in banners] == [dns for _computer, dns in TENANTS.values()]
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(dashboard(monitor))
    lines = "\n".join(entry_line(entry) for entry in monitor.feed.values())
    for text in (buffer.getvalue(), lines):
        assert all(f"{SERVER}:25 in vxlan-vni:{vni}" in text for vni in TENANTS), text
