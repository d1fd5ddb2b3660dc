"""Captures that hold one direction of a connection (asymmetric routing, a one-way span port or tap): what the other
side sent is not in them, so a run over such sessions says so instead of "no leak found"."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import TCP
from scapy.utils import rdpcap

from passive.capture import CaptureCounters, Reassembler
from passive.results.report.build import build_report
from tests.corpus import require_corpus
from tests.helpers_capture import ACK, FIN, PSH, SYN, Recorder, pcap_bytes, write
from tests.test_reassembly import CLIENT, SERVER, seg

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
CAVEAT = "captured in one direction only"


def _leakscope(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("leakscope")
    if executable is None:
        pytest.fail("the leakscope console script is not installed (pip install -e .)")
    return subprocess.run([executable, *args], capture_output=True, text=True, timeout=120)


def _one_way(capture: Path, to_server: bool, port: int, out: Path) -> Path:
    """The frames of ``capture`` that went towards the server (``to_server``) or came from it."""
    kept = [
        (float(p.time), p)
        for p in rdpcap(str(capture))
        if TCP in p and (p[TCP].dport == port if to_server else p[TCP].sport == port)
    ]
    assert kept
    return write(out, pcap_bytes(kept))


def _summary(capture: Path) -> dict:
    result = _leakscope("analyze", "--format", "jsonl", str(capture))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    ("capture", "port"),
    [("smtp-auth-plain-swaks.pcap", 25), ("imap-ntlm-success-curl.pcap", 143), ("pop3-user-pass-fetchmail.pcap", 110)],
)
@pytest.mark.parametrize("to_server", [True, False], ids=["client-side-only", "server-side-only"])
def test_a_session_seen_one_way_is_said_unread(tmp_path: Path, capture: str, port: int, to_server: bool) -> None:
    whole = PCAPS / capture
    assert _summary(whole)["flows_one_sided"] == 0
    half = _one_way(whole, to_server, port, tmp_path / "half.pcap")
    summary = _summary(half)
    assert summary["flows_one_sided"] == 1 and sum(summary["sessions"].values()) == 1
    table = " ".join(_leakscope("analyze", str(half)).stdout.split())
    assert f"1 session(s) {CAVEAT}" in table
    # The server's side alone shows no credentials: what it says must not read as a clean bill.
    if not to_server:
        assert "No leak found in 1 session(s)" not in table or "not everything was read" in table


def test_zeeks_one_sided_smtp_capture_is_not_a_clean_bill() -> None:
    """A public capture of an SMTP session of which only the client's packets were kept."""
    capture = require_corpus("pcaps", "zeek", "smtp-one-side-only.pcap")
    assert _summary(capture)["flows_one_sided"] == 1
    table = " ".join(_leakscope("analyze", str(capture)).stdout.split())
    assert CAVEAT in table and "not everything was read" in table


def _counted(*segments: tuple) -> int:
    counters = CaptureCounters()
    reassembler = Reassembler(Recorder(), counters=counters, server_ports={25})
    for frame, segment in enumerate(segments, 1):
        reassembler.process(segment, frame, 1000.0 + frame)
    reassembler.flush()
    return counters.flows_one_sided


def test_a_silent_client_is_not_a_missing_direction() -> None:
    """A client that reads the greeting and leaves sends no byte, but its SYN and ACKs are in the capture."""
    greeting = b"220 mx ESMTP\r\n"
    assert (
        _counted(
            seg(CLIENT, SERVER, 100, 0, SYN),
            seg(SERVER, CLIENT, 700, 101, SYN | ACK),
            seg(CLIENT, SERVER, 101, 701, ACK),
            seg(SERVER, CLIENT, 701, 101, payload=greeting),
            seg(CLIENT, SERVER, 101, 701 + len(greeting), FIN | ACK),
        )
        == 0
    )


def test_data_one_way_and_no_packet_back_is_one_sided() -> None:
    assert _counted(seg(SERVER, CLIENT, 701, 101, payload=b"220 mx ESMTP\r\n"), seg(SERVER, CLIENT, 715, 101)) == 1
    assert _counted(seg(CLIENT, SERVER, 101, 701, PSH | ACK, payload=b"EHLO a\r\n")) == 1
    assert _counted(seg(CLIENT, SERVER, 100, 0, SYN)) == 0  # no byte either way: nothing was missed


def test_a_server_whose_listing_was_not_seen_is_not_said_to_refuse_starttls(tmp_path: Path) -> None:
    """The client's side alone holds no EHLO reply: whether the server offers STARTTLS is unknown (null), not
    "no"; the whole capture says what the server listed."""

    def service(capture: Path) -> dict:
        result = _leakscope("analyze", "--format", "jsonl", str(capture))
        return next(r for r in map(json.loads, result.stdout.splitlines()) if r["type"] == "mail-service")

    whole = PCAPS / "smtp-auth-plain-swaks.pcap"
    assert service(whole)["starttls_offered"] is True
    assert service(_one_way(whole, True, 25, tmp_path / "client.pcap"))["starttls_offered"] is None


def test_the_report_names_sessions_captured_in_one_direction() -> None:
    summary = {"type": "summary", "captures": 1, "packets_read": 10, "flows": 1, "sessions": {"smtp": 1}}
    assert ("Sessions captured in one direction only", "1") in build_report([{**summary, "flows_one_sided": 1}]).scope
    assert all("one direction" not in label for label, _ in build_report([summary]).scope)
