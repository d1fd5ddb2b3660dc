"""`leakscope decode`: base64, hex or stdin in; a tree or the JSON schema out; inert on hostile names."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from dissectors import ntlmssp
from passive.cli.main import main

HOSTILE = "[bold red]x[/]\x1b[31m<script>alert(1)</script>\x1b]8;;http://x\x07'\"\u202e"


def _hostile_challenge() -> bytes:
    return ntlmssp.build_challenge(
        target_name=HOSTILE,
        target_info=[("netbios_computer", HOSTILE), ("dns_computer", HOSTILE)],
        version=ntlmssp.Version(10, 0, 20348),
    )


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_decode_base64_tree() -> None:
    code, out, _ = invoke("decode", base64.b64encode(_hostile_challenge()).decode())
    assert code == 0
    assert "NTLMSSP CHALLENGE" in out and "Windows Server 2022" in out


@pytest.mark.parametrize("form", ["base64", "hex", "stdin", "smtp-line", "imap-line"])
def test_decode_input_forms(form: str) -> None:
    data = ntlmssp.build_negotiate(domain="CORP", workstation="WS01")
    text = {"base64": base64.b64encode(data).decode(), "hex": data.hex()}.get(form, base64.b64encode(data).decode())
    args, stdin = ["decode", "--json", text], None
    if form == "stdin":
        args, stdin = ["decode", "--json", "-"], text + "\n"
    elif form == "smtp-line":
        args[2] = "AUTH NTLM " + text
    elif form == "imap-line":
        args[2] = "A1 AUTHENTICATE NTLM " + text
    code, out, _ = invoke(*args, stdin=stdin)
    assert code == 0
    fields = json.loads(out)
    assert (fields["message_type"], fields["domain"], fields["workstation"]) == ("negotiate", "CORP", "WS01")


def test_decode_json_schema_names() -> None:
    code, out, _ = invoke("decode", "--json", base64.b64encode(_hostile_challenge()).decode())
    assert code == 0
    fields = json.loads(out)
    for name in (
        "target_name",
        "netbios_computer",
        "netbios_domain",
        "dns_computer",
        "dns_domain",
        "dns_tree",
        "server_time",
        "os_version",
        "os_release",
        "flags",
    ):
        assert name in fields
    assert fields["os_version"] == "10.0.20348"
    assert fields["netbios_computer"] == HOSTILE  # JSON keeps the exact value, escaped
    assert "\x1b" not in out


@pytest.mark.parametrize(
    ("blob", "message"),
    [("", "empty input"), ("%%%", "neither base64 nor hex"), ("aGVsbG8=", "not an NTLMSSP message")],
)
def test_decode_errors_are_one_line(blob: str, message: str) -> None:
    code, out, err = invoke("decode", blob)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_hostile_names_print_inert_in_a_real_terminal_process() -> None:
    """Run the installed console script with colour forced on, as a terminal would see it."""
    executable = shutil.which("leakscope")
    if executable is None:
        pytest.fail("the leakscope console script is not installed (pip install -e .)")
    result = subprocess.run(
        [executable, "decode", base64.b64encode(_hostile_challenge()).decode()],
        capture_output=True,
        text=True,
        env={"FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "200"},
        check=True,
    )
    out = result.stdout
    # Our own styling uses CSI sequences; the hostile ESC characters must appear only as visible text.
    assert "\x1b]8" not in out and "\x07" not in out and "\u202e" not in out
    assert "\x1b[31m<script>" not in out
    assert "\\x1b[31m<script>alert(1)</script>" in out
    assert "[bold red]x[/]" in out  # printed literally, not interpreted as markup


def test_decode_json_escapes_c1_controls() -> None:
    """U+009B is CSI on 8-bit terminals: JSON output escapes it like the C0 controls."""
    challenge = ntlmssp.build_challenge(
        target_info=[("netbios_computer", "x\u009b31my")], version=ntlmssp.Version(10, 0, 1)
    )
    code, out, _ = invoke("decode", "--json", base64.b64encode(challenge).decode())
    assert code == 0
    assert "\u009b" not in out and "\\u009b" in out
    assert json.loads(out)["netbios_computer"] == "x\u009b31my"
