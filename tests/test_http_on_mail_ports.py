"""HTTP on a mail port: a flow on port 25, 110 or 143 whose first lines are HTTP's is read as HTTP, so NTLM over
HTTP there is found as on port 80 (the port check names HTTP instead of refusing the flow), in every-port and
port-only mode alike; a mail session on the same port is still read as mail."""

from __future__ import annotations

from pathlib import Path

import pytest

from dissectors import events as ev
from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from passive.results.records import finding_record
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes, write
from tests.test_http import WINDOWS_NAMES, exchange_conversation

SMTP = [
    (True, b"220 mx.example.org ESMTP\r\n"),
    (False, b"EHLO me\r\n"),
    (True, b"250-mx.example.org\r\n250 AUTH PLAIN\r\n"),
    (False, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
    (True, b"235 ok\r\n"),
]


def _capture(tmp_path: Path, port: int) -> Path:
    http = [(side is ev.Side.SERVER, data) for side, data in exchange_conversation()]
    segments = conversation_segments(http, ("10.4.0.1", 40000), ("10.4.0.2", port))
    segments += conversation_segments(SMTP, ("10.4.0.1", 40001), ("10.4.0.3", port))
    return write(tmp_path / f"http-{port}.pcap", pcap_bytes(ethernet_frames(segments)))


@pytest.mark.parametrize("port", [25, 110, 143])
@pytest.mark.parametrize("all_ports", [True, False], ids=["every-port", "ports-only"])
@pytest.mark.parametrize("backend", ["auto", "python"])
def test_ntlm_over_http_on_a_mail_port_is_found(tmp_path: Path, port: int, all_ports: bool, backend: str) -> None:
    results = analyze_captures([str(_capture(tmp_path, port))], AnalysisOptions(all_ports=all_ports, backend=backend))
    ntlm = [f for f in results.findings if f.type.value == "ntlm-info"]
    assert [(f.protocol, f.server) for f in ntlm] == [("http", f"10.4.0.2:{port}")]
    assert finding_record(ntlm[0])["dns_computer"] == WINDOWS_NAMES["dns_computer"]
    assert results.stats.sessions.get("http") == 1
    # The mail session beside it on the same port is read by the port's protocol.
    if port == 25:
        assert ("cleartext-credentials", "smtp") in {(f.type.value, f.protocol) for f in results.findings}
