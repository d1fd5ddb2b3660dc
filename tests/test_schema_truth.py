"""Schema truth on a run over several captures (issue 14, item 7): every time is ISO 8601 UTC, every detail and
evidence item names the capture it came from, and no finding lists the same evidence twice."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
# Two logins by the same client software against the same lab server, one per file: the same finding gathers
# evidence from both, so a frame number is only meaningful with its file.
CAPTURES = ("smtp-auth-login-swaks.pcap", "smtp-auth-plain-swaks.pcap", "pop3-user-pass-fetchmail.pcap")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z$")


def test_times_files_and_evidence_of_a_multi_file_run(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    paths = [str(PCAPS / name) for name in CAPTURES]
    argv = [sys.executable, "-m", "passive", "analyze", "--format", "json", "--events", "-o", str(out), *paths]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    findings = document["findings"]
    assert {f["type"] for f in findings} >= {"cleartext-credentials", "mail-service", "auth-methods"}
    for finding in findings:
        assert ISO_UTC.match(finding["first_seen"]) and ISO_UTC.match(finding["last_seen"]), finding
        for detail in finding["details"]:
            assert detail["file"] in paths and ISO_UTC.match(detail["time"]), detail
        cited = [(e["file"], e["frame"], e["side"], e["line"]) for e in finding["evidence"]]
        assert len(cited) == len(set(cited)), finding["evidence"]
        assert all(e["file"] in paths and ISO_UTC.match(e["time"]) for e in finding["evidence"])
    events = [event for session in document["sessions"] for event in session["events"]]
    assert events and all(ISO_UTC.match(event["time"]) for event in events)
    assert {session["file"] for session in document["sessions"]} == set(paths)
