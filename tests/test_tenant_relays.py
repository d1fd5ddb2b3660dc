"""Open-relay verdicts per tenant: two tenants of an overlay run SMTP servers at the same address. What one tenant's
server says of itself (its names) must not decide the other's verdict, and each verdict says its tenant's network.

Tenant 100's server names itself ``mx.alpha.example`` and refuses a foreign recipient; tenant 200's server gives no
domain name and accepts mail for ``beta.example`` from a public client. Apart, tenant 200's acceptance is a
``possible-relay`` (medium: ``beta.example`` may be its own domain); with tenant 100's names mixed in it read as a
high ``open-relay``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from tests.helpers_capture import pcap_bytes, write
from tests.test_tunnel_tenants import MAC, OUTER, _session

ROOT = Path(__file__).resolve().parents[1]
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
CLIENT, SERVER = "198.51.100.7", "10.0.0.25"  # a public client: no private-range assumption decides


def _dialogue(banner: bytes, ehlo: bytes, rcpt: bytes, answer: bytes) -> list[tuple[str, bytes]]:
    return [
        ("s", b"220 " + banner + b"\r\n"),
        ("c", b"EHLO client.example.net\r\n"),
        ("s", ehlo),
        ("c", b"MAIL FROM:<mallory@sender.example.net>\r\n"),
        ("s", b"250 2.1.0 Ok\r\n"),
        ("c", b"RCPT TO:<" + rcpt + b">\r\n"),
        ("s", answer + b"\r\n"),
        ("c", b"QUIT\r\n"),
        ("s", b"221 2.0.0 Bye\r\n"),
    ]


TENANT_100 = _dialogue(
    b"mx.alpha.example ESMTP", b"250-mx.alpha.example\r\n250 8BITMIME\r\n", b"bob@gamma.example",
    b"554 5.7.1 <bob@gamma.example>: Relay access denied",
)  # fmt: skip
TENANT_200 = _dialogue(b"ESMTP ready", b"250-Hello\r\n250 8BITMIME\r\n", b"carol@beta.example", b"250 2.1.5 Ok")


def _capture(tmp_path: Path, order: tuple[int, int]) -> Path:
    dialogues = {100: TENANT_100, 200: TENANT_200}
    frames = []
    for start, vni in enumerate(order):
        for number, packet in enumerate(_session(25, dialogues[vni], CLIENT, SERVER, 41000 + vni)):
            frame = Ether(**MAC) / IP(**OUTER) / UDP(sport=50000, dport=4789) / VXLAN(vni=vni) / Ether(**MAC) / packet
            frames.append((1_800_000_000 + start * 10 + number * 0.01, frame))
    return write(tmp_path / f"tenants-{order[0]}-{order[1]}.pcap", pcap_bytes(frames))


def _relay_records(capture: Path, *args: str) -> list[dict]:
    done = subprocess.run([*LEAKSCOPE, "analyze", "--format", "jsonl", *args, str(capture)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    return sorted(
        ((r.get("network"), r["verdict"], r["severity"], r["rcpt_to"]) for r in records if r["type"] == "open-relay"),
        key=str,
    )


EXPECTED = [
    ("vxlan-vni:100", "refused", "info", "bob@gamma.example"),
    ("vxlan-vni:200", "possible-relay", "medium", "carol@beta.example"),
]


def test_one_tenants_names_do_not_decide_anothers_verdict(tmp_path: Path) -> None:
    for order in ((100, 200), (200, 100)):
        assert _relay_records(_capture(tmp_path, order)) == EXPECTED, order


def test_tenants_verdicts_are_apart_with_two_workers(tmp_path: Path) -> None:
    assert _relay_records(_capture(tmp_path, (100, 200)), "--jobs", "2") == EXPECTED
