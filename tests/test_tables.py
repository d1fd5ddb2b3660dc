"""Tables for people, through the installed console script: a headline that counts by severity, findings by
severity then kind, engine counters only with -v, no trailing blanks, 80 columns (compare included), and evidence
under the file it came from."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from passive.findings.kinds import KINDS
from passive.findings.schema import rank

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
# Captures with findings of every severity: clear-text credentials (high), NTLM and mechanisms (medium), an open
# relay, the inventory (info).
MIXED = [
    PCAPS / "pop3-user-pass-fetchmail.pcap",
    PCAPS / "imap-ntlm-success-curl.pcap",
    PCAPS / "smtp-open-relay-swaks.pcap",
    PCAPS / "smtp-banner-only-swaks.pcap",
    PCAPS / "smtp-auth-plain-swaks.pcap",
]
SEVERITY_LINE = re.compile(r"^(HIGH|MEDIUM|LOW|INFO)  (\S+)  ")


def leakscope(*args: str, cwd: Path | None = None) -> str:
    executable = shutil.which("leakscope")
    assert executable, "the leakscope console script is not installed (pip install -e .)"
    environment = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    result = subprocess.run([executable, *args], capture_output=True, text=True, timeout=120, env=environment, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _records(*captures: Path) -> list[dict]:
    lines = leakscope("analyze", "--format", "jsonl", *map(str, captures)).splitlines()
    return [r for r in map(json.loads, lines) if r["type"] != "summary"]


def _read_like_a_person(text: str) -> None:
    lines = text.splitlines()
    assert lines, "no output"
    assert [line for line in lines if line != line.rstrip()] == []
    assert max(map(len, lines)) <= 80, max(lines, key=len)


def test_headline_counts_by_severity_and_servers() -> None:
    records = _records(*MIXED)
    risky = [r for r in records if r["severity"] != "info"]
    counts = {s: sum(r["severity"] == s for r in risky) for s in ("high", "medium", "low")}
    servers = len({r["server"] for r in risky})
    expected = ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" on {servers} servers"
    text = leakscope("analyze", *map(str, MIXED))
    assert text.splitlines()[0].startswith(expected), text.splitlines()[0]
    assert counts["high"] >= 2 and counts["medium"] >= 2  # the fixture holds what the test means to order


def test_findings_by_severity_then_kind() -> None:
    text = leakscope("analyze", *map(str, MIXED))
    order = list(KINDS)
    cards: list[tuple[int, int]] = []  # (severity rank, kind's place) of each card, as printed
    kind = None
    for line in text.splitlines():
        heading = re.fullmatch(r".+ \(([a-z-]+)\)", line)
        if heading:
            kind = heading.group(1)
        card = SEVERITY_LINE.match(line)
        if card:
            cards.append((-rank(card.group(1).lower()), order.index(kind)))
    assert len({severity for severity, _ in cards}) >= 3, text  # high, medium and info at least
    assert cards == sorted(cards)


def test_engine_counters_only_with_verbose() -> None:
    plain = leakscope("analyze", str(MIXED[1]))
    verbose = leakscope("analyze", "-v", str(MIXED[1]))
    assert "bytes_delivered" not in plain and "stray_segments" not in plain
    assert "bytes_delivered:" in verbose
    assert re.search(r"Read 1 capture\(s\): \d+ packets, \d+ TCP flows; imap 1\.", plain)


def test_no_trailing_blanks_and_80_columns_analyze_and_compare(tmp_path: Path) -> None:
    _read_like_a_person(leakscope("analyze", *map(str, MIXED)))
    _read_like_a_person(leakscope("analyze", "-v", *map(str, MIXED)))
    passive = tmp_path / "passive.jsonl"
    passive.write_text(leakscope("analyze", "--format", "jsonl", str(PCAPS / "smtp-win2019-ntlm-success-curl.pcap")))
    active = tmp_path / "active.jsonl"
    changed = [json.loads(line) for line in passive.read_text().splitlines()]
    for record in changed:
        if record["type"] == "ntlm-info":
            record["os_version"] = "10.0.20348"
    active.write_text("\n".join(json.dumps(r) for r in changed) + "\n")
    text = leakscope("compare", "--passive", str(passive), "--active", str(active))
    _read_like_a_person(text)
    assert re.search(r"os_version +differ +passive: 10\.0\.17763\n +active: +10\.0\.20348", text), text
    assert re.search(r"dns_computer +agree +\S+", text)


def test_evidence_is_listed_under_its_own_file(tmp_path: Path) -> None:
    first, second = tmp_path / "monday.pcap", tmp_path / "tuesday.pcap"
    shutil.copy(PCAPS / "imap-ntlm-success-curl.pcap", first)
    shutil.copy(PCAPS / "pop3-auth-plain-curl.pcap", second)
    # A finding from one file names only that file; one seen in both names each with its own frames.
    shutil.copy(PCAPS / "imap-ntlm-success-curl.pcap", tmp_path / "again.pcap")
    names = ("monday.pcap", "tuesday.pcap", "again.pcap")
    text = leakscope("analyze", *names, cwd=tmp_path)  # short names: a folded line splits no path
    records = _records(first, second, tmp_path / "again.pcap")
    ntlm = next(r for r in records if r["type"] == "ntlm-info")
    frames = sorted({e["frame"] for e in ntlm["evidence"]})
    listed = ", ".join(map(str, frames))
    joined = " ".join(text.split())
    assert f"monday.pcap frames {listed}; again.pcap frames {listed}" in joined
    pop3 = next(r for r in records if r["type"] == "cleartext-credentials")
    assert {e["file"] for e in pop3["evidence"]} == {str(second)}
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HIGH  10.99.0.1:110"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    card = " ".join(lines[start:end])
    assert "tuesday.pcap frame" in card and "monday.pcap" not in card and "again.pcap" not in card


def test_a_kind_with_many_findings_shows_its_first_cards_and_counts_the_rest() -> None:
    """Past MAX_CARDS findings of one kind and severity, one line says how many are not shown; the headline still
    counts them all."""
    from rich.console import Console

    from passive.cli.common import strip_trailing
    from passive.cli.tables import MAX_CARDS, render_tables

    [service] = [r for r in _records(PCAPS / "smtp-banner-only-swaks.pcap") if r["type"] == "mail-service"]
    records = [{**service, "server": f"10.9.{n // 250}.{n % 250}:25"} for n in range(MAX_CARDS + 57)]
    buffer = io.StringIO()
    render_tables(Console(file=buffer, width=80, color_system=None), records, {"type": "summary"})
    text = strip_trailing(buffer.getvalue())  # as the command line writes it
    _read_like_a_person(text)
    assert len([line for line in text.splitlines() if SEVERITY_LINE.match(line)]) == MAX_CARDS
    assert "... and 57 more, not shown: -o FILE or --format jsonl writes them all" in text
    assert f"{MAX_CARDS + 57} informational findings" in text.splitlines()[0]
