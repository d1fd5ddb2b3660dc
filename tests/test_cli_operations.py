"""leakscope as a Unix tool and a CI gate, through the installed console script: exit statuses as the README's
table says, standard output as ``-``, ``-oA``, gates, ECS, probe targets like nmap's."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from passive.probe.targets import parse_targets, read_target_list

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
CREDENTIALS = PCAPS / "pop3-user-pass-fetchmail.pcap"  # a high finding
BANNER = PCAPS / "smtp-banner-only-swaks.pcap"  # an inventory entry only


def leakscope(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("leakscope")
    assert executable, "the leakscope console script is not installed (pip install -e .)"
    return subprocess.run(
        [executable, *args], input=stdin.decode() if stdin else None, capture_output=True, text=True, timeout=120
    )


def readme_statuses() -> dict[int, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Exit statuses") :]
    section = section[: section.index("\n## ", 3)]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| (.+) \|$", section, re.M)}


# One case per documented status; 130 (SIGINT mid-file) is tested in test_interrupt.py.
STATUS_CASES = {
    0: ("analyze", str(BANNER)),
    1: ("analyze", "/nonexistent/capture.pcap"),
    2: ("analyze", "--filter", "port potato", str(BANNER)),
    3: ("analyze", "--fail-on", "high", str(CREDENTIALS)),
}


def test_readme_lists_every_exit_status_and_help_says_the_same() -> None:
    documented = readme_statuses()
    assert set(documented) == {0, 1, 2, 3, 130}
    help_text = " ".join(leakscope("analyze", "--help").stdout.split())
    for status in documented:
        assert f"{status} " in help_text.split("Exit status:")[1]


@pytest.mark.parametrize("status", sorted(STATUS_CASES))
def test_each_exit_status_of_the_table(status: int) -> None:
    result = leakscope(*STATUS_CASES[status])
    assert result.returncode == status, result.stderr
    if status in (1, 2):
        assert result.stderr.startswith("leakscope: error:") and len(result.stderr.strip().splitlines()) == 1


def test_bad_probe_target_and_since_are_usage_errors(tmp_path: Path) -> None:
    assert leakscope("probe", "10.0.0.0/99").returncode == 2
    assert leakscope("probe", "smtp://127.0.0.1:0").returncode == 2
    store = tmp_path / "s.db"
    assert leakscope("analyze", "--db", str(store), str(BANNER)).returncode == 0
    assert leakscope("findings", "--db", str(store), "--since", "yesterday").returncode == 2


def test_dash_means_standard_output(tmp_path: Path) -> None:
    jsonl = leakscope("analyze", "--format", "jsonl", "-o", "-", str(CREDENTIALS))
    assert jsonl.returncode == 0 and json.loads(jsonl.stdout.splitlines()[-1])["type"] == "summary"
    assert not (Path.cwd() / "-").exists()
    hashes = leakscope(
        "analyze", "--hashes", "-", "-o", str(tmp_path / "x.txt"), str(PCAPS / "smtp-ntlm-success-swaks.pcap")
    )
    assert hashes.returncode == 0 and hashes.stdout.startswith("alice::LEAKSCOPE:")
    report = leakscope("report", str(CREDENTIALS), "-o", "-", "--format", "md")
    assert report.returncode == 0 and report.stdout.startswith("# ")


def test_output_all_writes_table_jsonl_and_report(tmp_path: Path) -> None:
    base = tmp_path / "run"
    assert leakscope("analyze", "-oA", str(base), str(CREDENTIALS)).returncode == 0
    assert "Clear-text credentials" in (tmp_path / "run.txt").read_text()
    assert json.loads((tmp_path / "run.jsonl").read_text().splitlines()[-1])["type"] == "summary"
    assert (tmp_path / "run.html").read_text().startswith("<!DOCTYPE html>")


def test_closed_pipe_exits_quietly() -> None:
    executable = shutil.which("leakscope")
    assert executable
    result = subprocess.run(
        f"{executable} analyze --format jsonl {CREDENTIALS} {PCAPS / 'smtp-ntlm-success-swaks.pcap'} | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stderr == ""


def test_baseline_and_fail_on_count_only_new_findings(tmp_path: Path) -> None:
    before = tmp_path / "before.jsonl"
    assert leakscope("analyze", "--format", "jsonl", "-o", str(before), str(CREDENTIALS)).returncode == 0
    same = leakscope("analyze", "--baseline", str(before), "--fail-on", "high", "--format", "jsonl", str(CREDENTIALS))
    assert same.returncode == 0
    summary = json.loads(same.stdout.splitlines()[-1])
    assert summary["baseline_new"] == 0 and summary["baseline_resolved"] == 0
    more = leakscope(
        "analyze",
        "--baseline",
        str(before),
        "--fail-on",
        "high",
        str(CREDENTIALS),
        str(PCAPS / "smtp-auth-plain-swaks.pcap"),
    )
    assert more.returncode == 3 and "new since the baseline" in more.stderr


def test_suppressed_findings_do_not_fail_the_gate(tmp_path: Path) -> None:
    records = [
        json.loads(line) for line in leakscope("analyze", "--format", "jsonl", str(CREDENTIALS)).stdout.splitlines()
    ]
    high = [r["id"] for r in records if r.get("severity") == "high"]
    assert high
    suppress = tmp_path / "accepted.txt"
    suppress.write_text("".join(f"{ident} 2099-01-01 legacy mailbox, ticket 7\n" for ident in high))
    result = leakscope(
        "analyze", "--suppress", str(suppress), "--fail-on", "high", "--format", "jsonl", str(CREDENTIALS)
    )
    assert result.returncode == 0
    assert json.loads(result.stdout.splitlines()[-1])["suppressed"] == len(high)


def test_fingerprints_equal_across_names(tmp_path: Path) -> None:
    copy = tmp_path / "renamed-capture.pcap"
    copy.write_bytes(CREDENTIALS.read_bytes())
    ids = [
        sorted(
            json.loads(line).get("id") or ""
            for line in leakscope("analyze", "--format", "jsonl", str(p)).stdout.splitlines()
        )
        for p in (CREDENTIALS, copy)
    ]
    assert ids[0] == ids[1] and any(ids[0])


def test_ecs_output_is_one_document_per_line() -> None:
    result = leakscope("analyze", "--format", "ecs", str(CREDENTIALS))
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert documents[-1]["event"]["kind"] == "metric"
    findings = documents[:-1]
    assert findings and all("@timestamp" in d and d["event"]["dataset"] == "leakscope.findings" for d in findings)
    [credential] = [d for d in findings if d["rule"]["id"] == "cleartext-credentials"]
    assert credential["user"]["name"] and credential["leakscope"]["password"] == "********"


def _paths(value: object, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        return {p for key, inner in value.items() for p in _paths(inner, f"{prefix}{key}.")}
    return {prefix.rstrip(".")}


def test_ecs_mapping_in_the_schema_document_is_what_is_written() -> None:
    """Every ECS field docs/schema.md lists is written for some finding of the shipped captures, and every ECS
    field written is listed (leakscope's own fields are under ``leakscope``)."""
    text = (ROOT / "docs" / "schema.md").read_text()
    section = text[text.index("## Elastic Common Schema") :]
    section = section[: section.index("\n## ", 3)]
    documented = {
        name.strip("` ")
        for row in re.findall(r"^\| (`[^|]+) \|", section, re.M)
        for name in row.split(",")
        if name.strip("` ") != "ECS field"
    }
    captures = sorted(str(p) for p in PCAPS.glob("*.pcap"))
    result = leakscope("analyze", "--format", "ecs", *captures)
    written: set[str] = set()
    for line in result.stdout.splitlines():
        document = json.loads(line)
        written |= {p for p in _paths({k: v for k, v in document.items() if k != "leakscope"})}
    written.add("leakscope.*")
    assert written - documented == set()
    assert documented - written == set()


# -- probe targets like nmap's ------------------------------------------------------------------------------------


def test_targets_cidr_and_lists(tmp_path: Path) -> None:
    services = parse_targets(["192.0.2.0/30"], (25,))
    assert [s.address for s in services] == ["192.0.2.1:25", "192.0.2.2:25"]
    listed = tmp_path / "targets.txt"
    listed.write_text("# mail servers\n192.0.2.7 smtp://192.0.2.8:2525\n\n[2001:db8::1]:143  # imap\n")
    assert read_target_list(str(listed)) == ["192.0.2.7", "smtp://192.0.2.8:2525", "[2001:db8::1]:143"]


@pytest.fixture
def smtp_server() -> Iterator[int]:
    """A tiny SMTP-speaking server on loopback (its port), answering the probe's steps."""
    loop = asyncio.new_event_loop()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mx.test.example ESMTP\r\n")
        while line := await reader.readline():
            verb = line.split(b" ", 1)[0].strip().upper()
            writer.write(b"250-mx.test.example\r\n250 AUTH PLAIN\r\n" if verb == b"EHLO" else b"221 bye\r\n")
            if verb == b"QUIT":
                break
            if verb not in (b"EHLO", b"HELO"):
                writer.write(b"502 no\r\n")
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_probe_reports_each_port_open_or_closed(smtp_server: int, tmp_path: Path) -> None:
    closed = _free_port()
    listed = tmp_path / "targets"
    listed.write_text("127.0.0.1\n")
    result = leakscope(
        "probe",
        "-iL",
        str(listed),
        "-p",
        f"{smtp_server},{closed}",
        "--format",
        "json",
        "--no-ntlm",
        "--read-timeout",
        "5",
    )
    probes = {p["server"]: p for p in json.loads(result.stdout)["summary"]["probes"]}
    assert probes[f"127.0.0.1:{smtp_server}"]["port_state"] == "open"
    assert probes[f"127.0.0.1:{closed}"]["port_state"] == "closed"
    assert result.returncode == 0  # a bare host's closed port is no failure


def test_probe_with_nothing_answering_says_so() -> None:
    result = leakscope("probe", f"smtp://127.0.0.1:{_free_port()}")
    assert result.returncode == 1
    assert "No service answered" in " ".join(result.stdout.split())
