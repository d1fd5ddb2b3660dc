"""Every port by default: mail servers are found on any TCP port by what they say, and a flow that is not mail
costs the head of its packets, never the rest (the scanner drops them, counted)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from passive.capture.pcapfile import PacketReader
from passive.capture.scanner import FLOW_HEAD
from tests.helpers_capture import (
    conversation_segments,
    ethernet_frames,
    interleaved,
    pcap_bytes,
    reached_segments,
    write,
)

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"


def with_server_port(source: Path, old: int, new: int, target: Path) -> Path:
    """``source`` with every TCP port ``old`` (Ethernet/IPv4) rewritten to ``new``."""
    records = []
    for packet in PacketReader(source):
        data = bytearray(packet.data)
        if packet.linktype == 1 and data[12:14] == b"\x08\x00" and data[23] == 6:
            tcp = 14 + (data[14] & 0x0F) * 4
            for at in (tcp, tcp + 2):
                if struct.unpack_from("!H", data, at)[0] == old:
                    struct.pack_into("!H", data, at, new)
        sec, usec = int(packet.ts), round((packet.ts % 1) * 1e6) % 1_000_000
        records.append(struct.pack("<IIII", sec, usec, len(data), len(data)) + bytes(data))
    target.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1) + b"".join(records))
    return target


@pytest.mark.parametrize(
    ("capture", "old", "new", "protocol"),
    [
        ("smtp-ntlm-success-curl.pcap", 25, 2525, "smtp"),
        ("smtp-ntlm-success-curl.pcap", 25, 2626, "smtp"),
        ("imap-ntlm-success-curl.pcap", 143, 1143, "imap"),
        ("pop3-ntlm-success-curl.pcap", 110, 10110, "pop3"),
    ],
)
@pytest.mark.parametrize("backend", ["auto", "python"])
def test_mail_on_other_ports_is_found_by_default(
    tmp_path: Path, capture: str, old: int, new: int, protocol: str, backend: str
) -> None:
    moved = with_server_port(PCAPS / capture, old, new, tmp_path / f"moved-{new}.pcap")
    found = analyze_captures([str(moved)], AnalysisOptions(backend=backend)).findings
    services = {(f.type.value, f.protocol, f.server.rsplit(":", 1)[1]) for f in found}
    assert ("mail-service", protocol, str(new)) in services
    assert any(f.type.value == "ntlm-info" and f.server.endswith(f":{new}") for f in found)
    if new not in (2525,):  # 2525 is a named submission port: --ports-only reads it as well
        only = analyze_captures([str(moved)], AnalysisOptions(all_ports=False, backend=backend)).findings
        assert not any(f.server.endswith(f":{new}") for f in only)


def _capture(tmp_path: Path) -> Path:
    """An SSH flow on 2222 (200 data packets), a client on 7000 that never says a line (150 one-byte packets of
    binary), and an SMTP session on 2626, interleaved."""
    ssh = [(True, b"SSH-2.0-OpenSSH_9.2\r\n"), (False, b"SSH-2.0-PuTTY_0.78\r\n")]
    ssh += [(index % 2 == 0, bytes(range(200))) for index in range(200)]
    silent = [(False, b"\x00")] * 150
    smtp = [
        (True, b"220 mx.example.org ESMTP\r\n"),
        (False, b"EHLO me\r\n"),
        (True, b"250-mx.example.org\r\n250 AUTH PLAIN\r\n"),
        (False, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        (True, b"235 ok\r\n"),
        (False, b"QUIT\r\n"),
        (True, b"221 bye\r\n"),
    ]
    flows = [
        conversation_segments(ssh, ("10.1.0.1", 40000), ("10.1.0.2", 2222)),
        conversation_segments(silent, ("10.1.0.3", 40001), ("10.1.0.4", 7000)),
        conversation_segments(smtp, ("10.1.0.5", 40002), ("10.1.0.6", 2626)),
    ]
    segments = interleaved(flows)
    return write(tmp_path / "mixed.pcap", pcap_bytes(ethernet_frames(segments)))


@pytest.mark.parametrize("backend", ["auto", "python"])
def test_a_flow_that_is_not_mail_costs_its_head_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    path = _capture(tmp_path)
    reached = reached_segments(monkeypatch)
    results = analyze_captures([str(path)], AnalysisOptions(backend=backend))
    counters = results.counters
    ssh = [frame for frame, sport, dport in reached if 2222 in (sport, dport)]
    silent = [frame for frame, sport, dport in reached if 7000 in (sport, dport)]
    smtp = [frame for frame, sport, dport in reached if 2626 in (sport, dport)]
    # SSH speaks first: not mail after the banner (SYN, SYN+ACK, ACK, banner), the other 200 + 3 packets dropped.
    assert len(ssh) == 4
    # The silent client never says a line: undecided, so its head is read (the handshake does not eat it), and the
    # rest dropped.
    assert len(silent) == 3 + FLOW_HEAD
    assert len(smtp) == 3 + 7 + 3  # every packet of the mail session
    assert counters.not_mail_packets == 3 + 202 + 3 - 4
    assert counters.undecided_packets == 3 + 150 + 3 - len(silent)
    assert counters.segments == len(reached) and counters.flows_not_mail == 2
    assert {f.type.value for f in results.findings} >= {"mail-service", "cleartext-credentials"}
