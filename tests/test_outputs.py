"""Every file leakscope writes: created 0600, replaced whole or not at all, never written through a symbolic link,
and a full disk or a closed standard output ends in one line, never a traceback. Plus what the hashes file holds."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dissectors import events as ev
from dissectors import ntlmssp
from passive.analysis.classify import mail_capture_options
from passive.analysis.detectors import hashcat_line
from passive.capture import analyze_file, libpcap_available
from passive.live.monitor import Monitor, WatchOptions
from passive.results.store import FindingStore
from tests.test_detectors import NAMES, _authenticate_v1, _challenge, b64, run

ROOT = Path(__file__).resolve().parents[1]
PCAPS = ROOT / "pcaps"
NTLM = str(PCAPS / "smtp-ntlm-success-curl.pcap")  # a NetNTLMv2 response: one hash line
PLAIN = str(PCAPS / "smtp-auth-plain-swaks.pcap")  # AUTH PLAIN of bob / B0b-Secret!
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
ENVIRONMENT = {**os.environ, "PYTHONPATH": str(ROOT)}
ENOSPC = "No space left on device"


def leakscope(*argv: str, stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LEAKSCOPE, *argv], stdout=stdout, stderr=subprocess.PIPE, text=True, env=ENVIRONMENT, timeout=300
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _one_error_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("leakscope: error:")]
    assert len(errors) == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]


# -- created 0600 --------------------------------------------------------------------------------------------------


def test_files_that_can_hold_secrets_are_created_owner_only(tmp_path: Path) -> None:
    findings = tmp_path / "findings.jsonl"
    outputs = {
        "hashes": (["analyze", NTLM, "--hashes", str(tmp_path / "hashes.txt"), "-o", os.devnull], "hashes.txt"),
        "secrets": (["analyze", PLAIN, "--show-secrets", "--format", "jsonl", "-o", str(findings)], "findings.jsonl"),
        "report": (["report", "--no-redact", PLAIN, "-o", str(tmp_path / "report.html")], "report.html"),
        "store": (["analyze", PLAIN, "--db", str(tmp_path / "f.db"), "-o", os.devnull], "f.db"),
    }
    previous = os.umask(0o022)
    try:
        for name, (argv, produced) in outputs.items():
            result = leakscope(*argv)
            assert result.returncode == 0, (name, result.stderr)
            assert _mode(tmp_path / produced) == 0o600, name
        assert "B0b-Secret!" in findings.read_text()
        assert (tmp_path / "hashes.txt").read_text().count("\n") == 1
    finally:
        os.umask(previous)


@pytest.mark.skipif(os.geteuid() != 0 or not libpcap_available(), reason="watch needs root and libpcap")
def test_watch_jsonl_file_is_created_owner_only(tmp_path: Path) -> None:
    jsonl = tmp_path / "live.jsonl"
    previous = os.umask(0o022)
    try:
        result = leakscope("watch", "-i", "lo", "--duration", "0.5", "--quiet", "--jsonl", str(jsonl))
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    assert _mode(jsonl) == 0o600


# -- replaced whole, never through a link ----------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0 or not libpcap_available(), reason="watch needs root and libpcap")
def test_watch_jsonl_appends_but_never_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "live.jsonl").symlink_to(victim)
    result = leakscope("watch", "-i", "lo", "--duration", "0.5", "--quiet", "--jsonl", str(tmp_path / "live.jsonl"))
    _one_error_line(result, "live.jsonl", "symbolic link")
    assert victim.read_text() == "precious\n"


def test_output_replaces_a_symbolic_link_and_leaves_its_target_alone(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "out.txt"
    link.symlink_to(victim)
    result = leakscope("analyze", NTLM, "--format", "jsonl", "-o", str(link))
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious\n"
    assert not link.is_symlink() and '"type": "ntlm-info"' in link.read_text()
    assert _mode(link) == 0o600


def test_devices_and_open_descriptors_are_written_in_place(tmp_path: Path) -> None:
    result = leakscope("analyze", NTLM, "--format", "jsonl", "-o", "/dev/stdout")
    assert result.returncode == 0 and '"type": "ntlm-info"' in result.stdout
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    result = leakscope("analyze", NTLM, "--hashes", os.devnull, "-o", os.devnull)
    assert result.returncode == 0 and stat.S_ISCHR(os.stat(os.devnull).st_mode)
    with open(tmp_path / "log.txt", "w") as log:  # -o /dev/stdout appends where the shell said to (>>)
        log.write("before\n")
        log.flush()
        with open(tmp_path / "log.txt", "a") as appended:
            result = leakscope("analyze", NTLM, "--format", "jsonl", "-o", "/dev/stdout", stdout=appended)
    assert result.returncode == 0
    assert (tmp_path / "log.txt").read_text().startswith("before\n{")


@contextlib.contextmanager
def _full_filesystem(directory: Path) -> Iterator[Path]:
    """A tiny tmpfs mounted on ``directory``, filled up once the test has put its files there."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "leakscope-full", str(directory)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def _fill(directory: Path) -> None:
    with contextlib.suppress(OSError), open(directory / "filler", "wb") as filler:
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()


def test_every_output_on_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path: Path) -> None:
    with _full_filesystem(tmp_path / "full") as full:
        names = ("out.txt", "hashes.txt", "report.html", "compare.json")
        for name in names:
            (full / name).write_text(f"previous {name}\n")
        findings = tmp_path / "findings.jsonl"
        assert leakscope("analyze", NTLM, "--format", "jsonl", "-o", str(findings)).returncode == 0
        _fill(full)
        runs = {
            "out.txt": ["analyze", NTLM, "--format", "json", "-o", str(full / "out.txt")],
            "hashes.txt": ["analyze", NTLM, "--hashes", str(full / "hashes.txt"), "-o", os.devnull],
            "report.html": ["report", str(findings), "-o", str(full / "report.html")],
            "compare.json": [
                "compare", "--passive", str(findings), "--active", str(findings), "--format", "json",
                "-o", str(full / "compare.json"),
            ],
        }  # fmt: skip
        for name, argv in runs.items():
            _one_error_line(leakscope(*argv), f"cannot write {full / name}", ENOSPC)
            assert (full / name).read_text() == f"previous {name}\n"  # not truncated: replaced whole or not at all
        assert sorted(p.name for p in full.iterdir()) == sorted([*names, "filler"])  # no temporary file left


def test_watch_jsonl_on_a_full_disk_is_one_warning_and_the_store_goes_on() -> None:
    from passive.core.files import open_private_append  # here: the module is new with the files it writes

    monitor = Monitor(WatchOptions("eth-test"), FindingStore(":memory:"), jsonl=open_private_append("/dev/full"))
    monitor.writer = monitor.store.writer("watch")
    analyze_file(PCAPS / "smtp-ntlm-success-curl.pcap", monitor.analysis.handler_factory, mail_capture_options())
    monitor._flush()
    analyze_file(PCAPS / "smtp-auth-plain-swaks.pcap", monitor.analysis.handler_factory, mail_capture_options())
    monitor._flush()
    assert monitor.warnings == [f"--jsonl file no longer written: {ENOSPC}"]
    assert len(monitor.store.query()) >= 4


def test_full_standard_output_is_one_line_for_every_command(tmp_path: Path) -> None:
    findings = tmp_path / "findings.jsonl"
    db = tmp_path / "f.db"
    assert leakscope("analyze", NTLM, "--format", "jsonl", "-o", str(findings), "--db", str(db)).returncode == 0
    commands = [
        ["analyze", NTLM],
        ["analyze", NTLM, "--format", "json"],
        ["findings", "--db", str(db)],
        ["findings", "--db", str(db), "--format", "jsonl"],
        ["report", str(findings)],
        ["compare", "--passive", str(findings), "--active", str(findings)],
    ]
    with open("/dev/full", "w") as full:
        for argv in commands:
            _one_error_line(leakscope(*argv, stdout=full), "cannot write standard output", ENOSPC)


# -- the hashes file ---------------------------------------------------------------------------------------------


def _ntlm_session(user: str, domain: str) -> list[tuple[ev.Side, bytes]]:
    server, client = ev.Side.SERVER, ev.Side.CLIENT
    return [
        (server, b"220 exch01.corp.example ESMTP\r\n"),
        (client, b"EHLO ws\r\n"),
        (server, b"250-exch01.corp.example\r\n250 AUTH NTLM\r\n"),
        (client, b"AUTH NTLM " + b64(ntlmssp.build_negotiate()) + b"\r\n"),
        (server, b"334 " + b64(_challenge(NAMES)) + b"\r\n"),
        (client, b64(_authenticate_v1(user, domain, "WS")) + b"\r\n"),
        (server, b"235 2.7.0 Authentication successful\r\n"),
    ]


@pytest.mark.parametrize(
    "user,domain",
    [
        ("jdoe\x1b]52;c;ZWNobyBwd25lZA==\x07", "CORP"),  # OSC 52: writes the clipboard of whoever cats the file
        ("jdoe\r", "CORP"),
        ("jdoe", "CO\x1b[2JRP"),
        ("jdoe\u202e", "CORP"),
        ("j:doe", "CORP"),
        ("jdoe", "CORP\x85"),
    ],
    ids=["osc52", "cr", "csi-in-domain", "rlo", "colon", "c1-nel"],
)
def test_hash_lines_are_not_written_for_names_a_hashcat_line_cannot_hold(user: str, domain: str) -> None:
    challenge = ntlmssp.decode(_challenge(NAMES))
    assert not hashcat_line(challenge, ntlmssp.decode(_authenticate_v1(user, domain, "WS")))
    analysis = run([(("10.0.0.5", 25, "10.0.0.9", 40000), _ntlm_session(user, domain))])
    assert analysis.stats.hashes == []
    assert analysis.stats.to_dict()["hashes_skipped"] == 1
    fine = run([(("10.0.0.5", 25, "10.0.0.9", 40000), _ntlm_session("jdoe", "CORP"))])
    assert len(fine.stats.hashes) == 1 and fine.stats.to_dict()["hashes_skipped"] == 0


def test_hashes_file_of_the_hostile_names_capture_holds_no_control_character(tmp_path: Path) -> None:
    hashes = tmp_path / "hashes.txt"
    for capture in sorted(PCAPS.glob("*hostile-names*.pcap")):
        result = leakscope("analyze", str(capture), "--hashes", str(hashes), "-o", os.devnull)
        assert result.returncode == 0, result.stderr
        data = hashes.read_bytes()
        assert all(byte in b"\n" or 0x20 <= byte < 0x7F for byte in data), data


def test_an_output_in_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "x.txt"
    _one_error_line(leakscope("analyze", NTLM, "-o", str(target)), f"cannot write {target}", "No such file")
    _one_error_line(leakscope("analyze", NTLM, "--hashes", str(target), "-o", os.devnull), f"cannot write {target}")
