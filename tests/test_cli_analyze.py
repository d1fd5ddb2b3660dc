"""`leakscope analyze` as users run it: the installed console script on shipped captures."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from spnego._ntlm_raw.crypto import desl, hmac_md5, ntowfv1, ntowfv2

from passive.findings.model import SCHEMA_VERSION

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"


def leakscope(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("leakscope")
    if executable is None:
        pytest.fail("the leakscope console script is not installed (pip install -e .)")
    return subprocess.run([executable, *args], capture_output=True, text=True, env=env, timeout=120)


def test_jsonl_output_ends_with_summary() -> None:
    result = leakscope("analyze", "--format", "jsonl", str(PCAPS / "smtp-ntlm-success-curl.pcap"))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[-1]["type"] == "summary"
    assert records[-1]["ntlm_messages"] == {"negotiate": 1, "challenge": 1, "authenticate": 1}
    assert all(r["schema_version"] == SCHEMA_VERSION == "1.1" for r in records)
    ntlm = [r for r in records if r["type"] == "ntlm-info"]
    assert ntlm and ntlm[0]["source"] == "passive" and ntlm[0]["server"] == "10.99.0.1:25"
    assert ntlm[0]["client"].startswith("10.99.0.10:")


def test_json_output_with_events_and_output_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    result = leakscope(
        "analyze", "--format", "json", "--events", "-o", str(target), str(PCAPS / "imap-login-fetchmail.pcap")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    document = json.loads(target.read_text())
    assert document["schema_version"] == SCHEMA_VERSION
    assert {f["type"] for f in document["findings"]} >= {"mail-service", "cleartext-credentials"}
    events = document["sessions"][0]["events"]
    assert events[0]["event"] == "Greeting" and events[0]["frame"] is not None


def test_secrets_are_masked_unless_asked() -> None:
    capture = str(PCAPS / "pop3-user-pass-fetchmail.pcap")
    masked = leakscope("analyze", "--format", "jsonl", capture).stdout
    shown = leakscope("analyze", "--format", "jsonl", "--show-secrets", capture).stdout
    assert "B0b-Secret!" not in masked and "********" in masked
    assert "B0b-Secret!" in shown


@pytest.mark.parametrize(
    ("capture", "version"), [("smtp-ntlm-success-swaks", "NTLMv1"), ("smtp-win2019-ntlm-success-curl", "NTLMv2")]
)
def test_hashcat_lines_verify_against_the_password(tmp_path: Path, capture: str, version: str) -> None:
    """The --hashes lines are right if recomputing the response from the known password reproduces them."""
    facts = json.loads((PCAPS / f"{capture}.expected.json").read_text())["ntlm_client"]
    hashes = tmp_path / "hashes.txt"
    assert (
        leakscope("analyze", "--hashes", str(hashes), "--format", "jsonl", str(PCAPS / f"{capture}.pcap")).returncode
        == 0
    )
    [line] = hashes.read_text().splitlines()
    user, empty, domain, *rest = line.split(":")
    assert (user, empty, domain) == (facts["user"], "", facts["domain"])
    nt_hash = ntowfv1(facts["password"])
    if version == "NTLMv1":  # hashcat 5500: user::domain:lm:nt:server_challenge
        _lm, nt, server_challenge = (bytes.fromhex(x) for x in rest)
        key = nt_hash + b"\x00" * 5
        assert desl(key[:16], server_challenge) == nt
    else:  # hashcat 5600: user::domain:server_challenge:nt_proof:blob
        server_challenge, proof, blob = (bytes.fromhex(x) for x in rest)
        assert hmac_md5(ntowfv2(user, nt_hash, domain), server_challenge + blob) == proof


def test_hostile_names_print_inert_and_json_stays_valid() -> None:
    capture = str(PCAPS / "smtp-hostile-names-ntlm-curl.pcap")
    table = leakscope("analyze", capture, env={"FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "160"})
    assert table.returncode == 0, table.stderr
    assert "\x1b]8" not in table.stdout and "\x07" not in table.stdout and "\x1b[31mred" not in table.stdout
    assert "\\x1b[31mred" in table.stdout and "<script>alert(1)</script>" in table.stdout
    assert "[bold red]x[/]" in table.stdout
    jsonl = leakscope("analyze", "--format", "jsonl", capture)
    assert "\x1b" not in jsonl.stdout
    [ntlm] = [r for r in map(json.loads, jsonl.stdout.splitlines()) if r["type"] == "ntlm-info"]
    assert ntlm["netbios_computer"] == "<script>alert(1)</script>"
    assert ntlm["dns_computer"].startswith("\x1b[31mred")


def test_missing_capture_is_a_one_line_error(tmp_path: Path) -> None:
    result = leakscope("analyze", str(tmp_path / "nope.pcap"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no such file" in result.stderr and "Traceback" not in result.stderr


def test_unreadable_capture_among_good_ones_keeps_the_good_results(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture")
    result = leakscope("analyze", "--format", "jsonl", str(junk), str(PCAPS / "smtp-auth-plain-swaks.pcap"))
    assert result.returncode == 1
    assert "not a pcap or pcapng file" in result.stderr and "Traceback" not in result.stderr
    types = [json.loads(line)["type"] for line in result.stdout.splitlines()]
    assert "cleartext-credentials" in types and types[-1] == "summary"


def test_usage_error_exits_2() -> None:
    result = leakscope("analyze", "--format", "xml", str(PCAPS / "smtp-auth-plain-swaks.pcap"))
    assert result.returncode == 2


def test_non_standard_port_needs_all_ports() -> None:
    capture = str(PCAPS / "pop3-1110-ntlm-success-curl.pcap")
    plain = [
        json.loads(line)
        for line in leakscope("analyze", "--ports-only", "--format", "jsonl", capture).stdout.splitlines()
    ]
    assert [r["type"] for r in plain] == ["summary"]
    everywhere = leakscope("analyze", "--all-ports", "--format", "jsonl", capture).stdout
    servers = {json.loads(line).get("server") for line in everywhere.splitlines()}
    assert "10.99.0.1:1110" in servers


def test_evidence_and_events_do_not_leak_masked_secrets() -> None:
    """The password is also in the evidence lines (PASS, base64 PLAIN/LOGIN): those are masked too."""
    for capture in (
        "pop3-user-pass-fetchmail",
        "smtp-auth-plain-swaks",
        "smtp-auth-login-swaks",
        "imap-login-fetchmail",
    ):
        path = str(PCAPS / f"{capture}.pcap")
        masked = leakscope("analyze", "--format", "json", "--events", path).stdout
        assert "B0b-Secret!" not in masked, capture
        assert base64.b64encode(b"B0b-Secret!").decode() not in masked, capture
        assert base64.b64encode(b"\0bob\0B0b-Secret!").decode() not in masked, capture  # a PLAIN message
        assert b"B0b-Secret!".hex() not in masked, capture  # decoded SASL data
        assert "********" in masked
        assert "B0b-Secret!" in leakscope("analyze", "--format", "json", "--events", "--show-secrets", path).stdout


def test_reassembly_policy_decides_whether_a_decoy_hides_the_credentials(tmp_path: Path) -> None:
    """An out-of-order decoy, then the real AUTH PLAIN line in order over it: a Linux server reads the real line."""
    from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes, write

    auth = b"AUTH PLAIN " + base64.b64encode(b"\x00alice\x00decoy-secret") + b"\r\n"
    turns = [(True, b"220 mx ESMTP\r\n"), (False, b"EHLO c\r\n"), (True, b"250 AUTH PLAIN\r\n"), (False, auth)]
    turns += [(True, b"235 2.7.0 ok\r\n"), (False, b"QUIT\r\n"), (True, b"221 bye\r\n")]
    segments = conversation_segments(turns)
    at = next(i for i, s in enumerate(segments) if s[5] == auth)
    src, dst, seq, ack, flags, _payload = segments[at]
    segments.insert(at, (src, dst, seq + 12, ack, flags, b"x" * 20))  # over the base64, out of order
    capture = write(tmp_path / "decoy.pcap", pcap_bytes(ethernet_frames(segments)))

    def found(*options: str) -> tuple[list[str], dict]:
        result = leakscope("analyze", "--format", "jsonl", "--show-secrets", *options, str(capture))
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in result.stdout.splitlines()]
        users = [r["user"] for r in records if r["type"] == "cleartext-credentials"]
        return users, records[-1]

    users, summary = found()
    assert users == ["alice"] and summary["overlaps_new_won"] == 1
    assert found("--reassembly", "linux")[0] == ["alice"]
    users, summary = found("--reassembly", "first")
    assert users == [] and summary["overlaps_old_won"] == 1
    help_text = leakscope("analyze", "--help").stdout
    assert "--reassembly [linux|bsd|windows|solaris|first|last]" in help_text


def test_analyze_loads_only_its_own_command() -> None:
    """A run imports what analyzing needs: not the probe, the live capture, the report templates or the store's
    comparison (start-up is a fixed cost of every run; the other commands are loaded when they run). Nor, for JSON
    lines with standard error no terminal, rich (nothing is drawn), libpcap (no filter: the compiled scanner reads
    the file), the SQLite store (no --db) or multiprocessing (a small capture is read in one process)."""
    code = (
        "import sys\n"
        "from passive.cli.main import main\n"
        "try:\n"
        "    main(['analyze', '--format', 'jsonl', '-o', '/dev/null', sys.argv[1]])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(PCAPS / "smtp-ntlm-success-curl.pcap")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "passive.cli.analyze" in loaded and "passive.analysis.detectors.ntlm" in loaded
    unneeded = ("passive.probe", "passive.live", "passive.cli.watch", "passive.cli.report", "jinja2")
    for module in (*unneeded, "rich", "pcapy", "sqlite3", "passive.results.store", "multiprocessing"):
        assert module not in loaded, module


def test_every_command_is_listed_and_loads() -> None:
    from passive.cli.main import COMMANDS, main

    listed = leakscope("--help")
    assert listed.returncode == 0, listed.stderr
    for name in COMMANDS:
        assert f"  {name} " in listed.stdout
        result = leakscope(name, "--help")
        assert result.returncode == 0 and "Exit status: 0" in result.stdout, (name, result.stderr)
    assert main.get_command(None, "no-such-command") is None  # type: ignore[arg-type]


def test_a_mistyped_command_gets_the_suggestion() -> None:
    result = leakscope("anlyze")
    assert result.returncode == 2
    assert "No such command 'anlyze'. Did you mean 'analyze'?" in result.stderr


@pytest.mark.parametrize("value", ["", "a b", "-", "mail..example", "[192.0.2.1]", "*.example.com", ".example.com"])
def test_a_local_domain_that_is_no_domain_name_is_a_usage_error(value: str) -> None:
    """--local-domain decides which relaying is high: a typo must not pass silently."""
    result = leakscope("analyze", "--local-domain", value, str(PCAPS / "smtp-auth-plain-swaks.pcap"))
    assert result.returncode == 2 and result.stdout == ""
    assert "--local-domain" in result.stderr.splitlines()[-1]
    if value.startswith(("*.", ".")):
        assert "'example.com', which covers its subdomains" in result.stderr


@pytest.mark.parametrize(
    ("value", "said"),
    [("192.0.2.25", "an address"), ("10.1", "an address"), ("com", "public suffix"), ("co.uk", "public suffix"),
     ("contoso", "public suffix")],
)  # fmt: skip
def test_a_local_domain_that_is_an_address_or_a_public_suffix_is_a_usage_error(value: str, said: str) -> None:
    """An address matches no recipient domain, and every domain under a public suffix would be local (``contoso`` for
    ``contoso.com``): either would silently change which relaying is high, as ``[192.0.2.1]`` would."""
    result = leakscope("analyze", "--local-domain", value, str(PCAPS / "smtp-auth-plain-swaks.pcap"))
    assert result.returncode == 2 and result.stdout == ""
    assert "--local-domain" in result.stderr and said in result.stderr


def test_local_domains_in_unicode_or_with_a_final_dot_are_taken() -> None:
    result = leakscope("analyze", "--local-domain", "Bücher.DE.", "--local-domain", "_dmarc.example.com",
                       str(PCAPS / "smtp-auth-plain-swaks.pcap"))  # fmt: skip
    assert result.returncode == 0, result.stderr
