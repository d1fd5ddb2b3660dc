"""No default output, store or report contains a secret: a capture puts one known secret in every place a secret
can appear on the wire (tests/secret_capture.py), and every byte of every default output is scanned for it in each
form it may take (as sent, base64, hex, the NetNTLM response)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from passive.analysis.classify import mail_capture_options
from passive.capture import analyze_file
from passive.live.monitor import Monitor, WatchOptions
from passive.results.store import FindingStore
from tests import secret_capture

LEAKSCOPE = shutil.which("leakscope")


def run(*args: str) -> str:
    assert LEAKSCOPE, "the leakscope console script is not installed (pip install -e .)"
    result = subprocess.run([LEAKSCOPE, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def leaks(data: str | bytes) -> list[str]:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return [name for name, form in secret_capture.forms().items() if form in text]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return secret_capture.write_capture(tmp_path_factory.mktemp("secrets") / "everywhere.pcap")


def test_the_capture_carries_the_secret_everywhere(capture: Path) -> None:
    """The test means something only if the secret is really there, and found with --show-secrets."""
    assert set(leaks(capture.read_bytes())) >= {"secret", "plain message", "base64", "authenticate", "basic"}
    shown = run("analyze", "--format", "json", "--events", "--show-secrets", str(capture))
    assert {"secret", "nt response"} <= set(leaks(shown))
    records = run("analyze", "--format", "jsonl", str(capture))
    for kind in ("cleartext-credentials", "ntlm-info", "mail-service", "auth-methods"):
        assert f'"type": "{kind}"' in records
    for protocol in ("smtp", "pop3", "imap", "http"):
        assert f'"protocol": "{protocol}"' in records
    assert '"mechanism": "HTTP-BASIC"' in records and '"http_path": "/EWS/Exchange.asmx"' in records
    assert "GET /EWS/Exchange.asmx?******** HTTP/1.1" in run("analyze", "--format", "json", "--events", str(capture))


@pytest.mark.parametrize(
    "arguments",
    [
        ("analyze",),
        ("analyze", "--format", "json"),
        ("analyze", "--format", "jsonl"),
        ("analyze", "--format", "json", "--events"),
        ("analyze", "--all-ports", "--format", "json", "--events"),
    ],
    ids=lambda a: " ".join(a),
)
def test_no_secret_on_standard_output(capture: Path, arguments: tuple[str, ...]) -> None:
    assert leaks(run(*arguments, str(capture))) == []


def test_no_secret_in_output_files_store_and_reports(capture: Path, tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    written = {
        "json": tmp_path / "out.json",
        "jsonl": tmp_path / "out.jsonl",
        "table": tmp_path / "out.txt",
    }
    for output_format, path in written.items():
        run("analyze", "--format", output_format, "-o", str(path), "--events", "--db", str(store), str(capture))
    outputs = {name: path.read_bytes() for name, path in written.items()}
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{store}{suffix}").exists():
            outputs[f"store{suffix}"] = Path(f"{store}{suffix}").read_bytes()
    for output_format in ("table", "json", "jsonl"):
        outputs[f"findings {output_format}"] = run("findings", "--db", str(store), "--format", output_format).encode()
    for name in ("report.html", "report.md"):
        run("report", str(capture), "-o", str(tmp_path / name))
        outputs[name] = (tmp_path / name).read_bytes()
        run("report", "--db", str(store), "-o", str(tmp_path / f"db-{name}"))
        outputs[f"db {name}"] = (tmp_path / f"db-{name}").read_bytes()
    found = {name: leaks(data) for name, data in outputs.items() if leaks(data)}
    assert found == {}


def test_no_secret_in_the_watch_store(capture: Path, tmp_path: Path) -> None:
    path = tmp_path / "watch.db"
    jsonl = tmp_path / "watch.jsonl"
    with FindingStore(path) as store, open(jsonl, "w", encoding="utf-8") as stream:
        monitor = Monitor(WatchOptions("eth-test"), store, jsonl=stream)
        monitor.writer = store.writer("watch")
        analyze_file(capture, monitor.analysis.handler_factory, mail_capture_options())
        monitor._flush()
        monitor.writer.finish(monitor.summary())
    for name in os.listdir(tmp_path):
        assert leaks((tmp_path / name).read_bytes()) == [], name
