"""The report masks user names partly ("alice" as "a***e"); two names that mask alike ("alice", "annie") are still
two accounts in what it counts and lists (the real command line, on a built capture)."""

from __future__ import annotations

import base64
from pathlib import Path

from passive.results.report.build import redacted
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes
from tests.test_relay_transactions import run_cli

SERVER = ("192.0.2.25", 25)
ACCOUNTS = (("alice", "Winter-2026-a"), ("annie", "Spring-2026-b"), ("alice", "Winter-2026-c"))


def logins(path: Path) -> Path:
    """Three clear-text logins to one server: alice twice, annie once."""
    frames = []
    for number, (user, password) in enumerate(ACCOUNTS):
        plain = base64.b64encode(f"\0{user}\0{password}".encode())
        turns = [(True, b"220 mx.contoso.com ESMTP\r\n"), (False, b"EHLO c\r\n"),
                 (True, b"250-mx.contoso.com\r\n250 AUTH PLAIN\r\n"), (False, b"AUTH PLAIN " + plain + b"\r\n"),
                 (True, b"235 2.7.0 ok\r\n"), (False, b"QUIT\r\n"), (True, b"221 bye\r\n")]  # fmt: skip
        client = ("203.0.113.9", 40000 + number)
        frames += ethernet_frames(conversation_segments(turns, client, SERVER), start=100.0 * (number + 1))
    path.write_bytes(pcap_bytes(frames))
    return path


def test_accounts_whose_names_mask_alike_are_counted_apart(tmp_path: Path) -> None:
    """The report said "passwords of 1 account(s)" of alice's and annie's."""
    report = tmp_path / "report.md"
    run_cli("report", str(logins(tmp_path / "two.pcap")), "-o", str(report), "--format", "md")
    text = report.read_text()
    assert "passwords of 2 account(s) in clear text" in text
    assert "alice" not in text and "annie" not in text
    assert all(password not in text for _, password in ACCOUNTS)


def test_the_echo_of_a_six_or_seven_character_password_is_masked_from_a_file_that_shows_it() -> None:
    """A findings file written with --show-secrets holds the password, not the base64 a server echoed it in: the
    report learns its base64 forms, but kept none shorter than 8 characters, and those of 6 and 7 byte passwords at
    two alignments are 4: "501 cannot decode AGJvYgBYcTcjcHo=" (bob's "Xq7#pz") was shown whole."""
    for password in ("Xq7#pz", "Wv9!kq2", "Zt4$mn8r"):
        for before in ("\0bob\0", "\0bo\0", "\0b\0"):
            token = base64.b64encode(f"{before}{password}".encode()).decode()
            line = f"501 5.5.2 cannot decode response {token}"
            record = {"type": "cleartext-credentials", "user": "bob", "password": password,
                      "evidence": [{"side": "server", "line": line}]}  # fmt: skip
            [shown] = redacted([record], redact=True)
            assert shown["evidence"][0]["line"] == "501 5.5.2 cannot decode response ********", (password, before)
