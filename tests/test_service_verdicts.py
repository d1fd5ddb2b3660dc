"""The inventory's software guess is a statement about the server: an SMTP greeting's host name holds no product's
name, however it is spelled (the CLI, a real subprocess, on built captures); the text after it still names one."""

from __future__ import annotations

from pathlib import Path

from tests.helpers_capture import conversation_segments, ethernet_frames, interleaved, pcap_bytes
from tests.test_relay_transactions import analyze

BANNERS = {
    "192.0.2.1": ("220 haraka.example.com ESMTP ready", None),
    "192.0.2.2": ("220 qmail.corp.example ESMTP", None),
    "192.0.2.3": ("220 dovecot.example.net ESMTP service ready", None),
    "192.0.2.4": ("220 mx.example.com ESMTP Haraka/2.8.28 ready", "Haraka 2.8.28"),
    "192.0.2.5": ("220 ESMTP Postfix", "Postfix"),
    "192.0.2.6": ("220 [192.0.2.6] ESMTP Exim 4.96 Mon, 30 Nov 2026", "Exim 4.96"),
}


def test_the_host_name_of_an_smtp_greeting_names_no_software(tmp_path: Path) -> None:
    flows = []
    for port, (server, (banner, _)) in enumerate(BANNERS.items(), start=40000):
        turns = [(True, banner.encode() + b"\r\n"), (False, b"QUIT\r\n"), (True, b"221 2.0.0 Bye\r\n")]
        flows.append(ethernet_frames(conversation_segments(turns, ("203.0.113.9", port), (server, 25))))
    pcap = tmp_path / "banners.pcap"
    pcap.write_bytes(pcap_bytes(sorted(interleaved(flows), key=lambda frame: frame[0])))
    services = [f for f in analyze(pcap) if f["type"] == "mail-service"]
    guessed = {f["server"].rpartition(":")[0]: (f["banner"], f["software"]) for f in services}
    assert guessed == {server: (banner[4:], software) for server, (banner, software) in BANNERS.items()}
