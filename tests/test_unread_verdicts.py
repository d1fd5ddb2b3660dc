"""A "no leak" is said only of what was read: a run whose mail went inside TLS, or lost bytes, says so in the
terminal headline, the closing statement and the report's verdict (the CLI, a real subprocess, on built captures).
"""

from __future__ import annotations

import re
from pathlib import Path

from passive.cli.losses import LOSSES
from passive.results.report.summary import UNREAD, verdict
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_relay_transactions import run_cli

CLIENT, SERVER = ("203.0.113.9", 40000), ("192.0.2.25", 25)
# A TLS ClientHello's record header, a ServerHello's, and application data (the bytes after them are not read).
HELLO = bytes.fromhex("160301004c0100004803031111") + bytes(66)
SERVER_HELLO = bytes.fromhex("160303004a020000460303") + bytes(71)
RECORD = bytes.fromhex("1703030020") + bytes(32)
TLS = [(False, HELLO), (True, SERVER_HELLO), (False, RECORD), (True, RECORD)]
STARTTLS = [
    (True, b"220 mx.contoso.com ESMTP\r\n"),
    (False, b"EHLO client.example\r\n"),
    (True, b"250-mx.contoso.com\r\n250 STARTTLS\r\n"),
    (False, b"STARTTLS\r\n"),
    (True, b"220 2.0.0 Ready to start TLS\r\n"),
    *TLS,
]
PLAIN = [*STARTTLS[:3], (False, b"QUIT\r\n"), (True, b"221 2.0.0 Bye\r\n")]


def capture(path: Path, turns: list[tuple[bool, bytes]], server: tuple[str, int] = SERVER, lost: int = -1) -> Path:
    segments = conversation_segments(turns, CLIENT, server)
    kept = [s for n, s in enumerate(segments) if n - 3 != lost]
    path.write_bytes(pcap_bytes(ethernet_frames(kept)))
    return path


def tables(pcap: Path, tmp_path: Path) -> tuple[str, str]:
    """The terminal tables (one line per paragraph) and the HTML report's verdict of one ``analyze -oA`` run."""
    base = tmp_path / pcap.stem
    run_cli("analyze", "-oA", str(base), str(pcap), columns=200)
    text = " ".join(base.with_suffix(".txt").read_text().split())
    verdict = re.search(r'id="verdict"><strong>(.*?)</p>', base.with_suffix(".html").read_text(), re.S)
    assert verdict is not None
    return text, re.sub(r"<[^>]+>", "", verdict.group(1))


def test_mail_inside_tls_is_not_an_all_clear(tmp_path: Path) -> None:
    for name, turns, server in (("implicit", TLS, ("192.0.2.25", 465)), ("starttls", STARTTLS, SERVER)):
        text, verdict = tables(capture(tmp_path / f"{name}.pcap", turns, server), tmp_path)
        assert text.startswith("No leak found in what could be read;"), text
        assert "Every session (smtp 1) went inside TLS" in text and "not the same as nothing leaking" in text
        assert verdict.startswith("No leak seen in what could be read.") and "1 session(s) inside TLS" in verdict
        assert "Nothing leaked" not in verdict


def test_lost_bytes_qualify_the_all_clear_and_a_whole_capture_does_not(tmp_path: Path) -> None:
    text, verdict = tables(capture(tmp_path / "lossy.pcap", PLAIN, lost=1), tmp_path)  # the EHLO lost
    assert text.startswith("No leak found in what could be read;"), text
    assert "not everything was read" in text and "missing from the streams" in text
    assert verdict.startswith("No leak seen in what could be read.") and "lost from the streams" in verdict

    text, verdict = tables(capture(tmp_path / "whole.pcap", PLAIN), tmp_path)
    assert text.startswith("No leak found; "), text
    assert "No leak found in 1 session(s) (smtp 1)." in text
    assert verdict.startswith("Nothing leaked.")


def cut_capture(path: Path) -> Path:
    """A pcap whose record over the size cap stops the reading, as libpcap stops: the login after it is never
    seen."""
    login = [*PLAIN[:3], (False, b"AUTH PLAIN AGJvYgBzZWNyZXQtcHc=\r\n"), (True, b"235 2.7.0 ok\r\n")]
    frames = ethernet_frames(conversation_segments(PLAIN, CLIENT, SERVER))
    frames.append((1100.0, bytes(1 << 20)))
    frames += ethernet_frames(conversation_segments(login, ("203.0.113.9", 40001), SERVER), start=1200.0)
    path.write_bytes(pcap_bytes(frames, snaplen=0xFFFFFFFF))
    return path


def test_a_capture_cut_by_an_oversized_record_is_not_an_all_clear(tmp_path: Path) -> None:
    """The terminal said so; the report said "Nothing leaked."."""
    text, verdict = tables(cut_capture(tmp_path / "cut.pcap"), tmp_path)
    assert "not everything was read" in text and "over the size cap" in text
    assert verdict.startswith("No leak seen in what could be read.") and "1 record(s) over the size cap" in verdict
    assert "Nothing leaked" not in verdict


def test_the_report_names_every_counter_the_terminal_names_as_not_read() -> None:
    assert {name for name, _ in LOSSES} <= {name for name, _ in UNREAD}


def test_a_store_of_such_runs_is_not_an_all_clear_either(tmp_path: Path) -> None:
    """``findings --db`` said "No leak found" and then "No mail seen (0 packets read ...): nothing was analyzed" of a
    store holding a mail server's findings, whatever its runs did not read."""
    store = tmp_path / "store.db"
    run_cli("analyze", "--db", str(store), "-o", str(tmp_path / "run.txt"), str(cut_capture(tmp_path / "cut.pcap")))
    text = " ".join(run_cli("findings", "--db", str(store), columns=200).stdout.split())
    assert text.startswith("No leak found in what could be read;"), text
    assert "No mail seen" not in text and "nothing was analyzed" not in text
    assert "No leak among the findings kept in the store (1 run(s)). Its runs did not read everything" in text
    assert text.endswith("run(s). Not analyzed by its runs: 1 record(s) over the size cap."), text


def test_packets_a_live_capture_dropped_are_not_an_all_clear() -> None:
    """A live capture that could not keep up lost whole sessions (a login among them) before any was read; the
    terminal, a store's summary and the report's verdict said "No leak found" / "Nothing leaked." all the same."""
    from passive.cli.losses import runs_not_read
    from passive.cli.tables import scope_text

    for name in ("kernel_dropped", "interface_dropped"):
        summary = {"packets_read": 10, "flows": 1, "sessions": {"smtp": 1}, name: 4096}
        assert "Not analyzed:" in scope_text(summary) and "4,096 packet(s) dropped" in scope_text(summary)
        assert runs_not_read([{"summary": summary}]) == {name: 4096}
        headline, rest = verdict([], [summary])
        assert headline == "No leak seen in what could be read." and "4,096 packet(s) dropped" in rest
