"""What the README's install section promises: ``python -m passive`` is the command line, shell completion comes out
of the console script, Python 3.11 is what pyproject requires, and the ``decode`` example pastes and decodes to what
the README shows."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "pcaps" / "smtp-ntlm-success-curl.pcap"
TIMEOUT = 120


def leakscope(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("leakscope")
    assert executable, "the leakscope console script is not installed (pip install -e .)"
    return subprocess.run(
        [executable, *args], capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, **(env or {})}
    )


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(f"## {title}") :]
    return section[: section.index("\n## ", 3)]


def test_python_dash_m_passive_is_the_command_line() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "passive", "analyze", str(SHIPPED), "--format", "jsonl"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert records[-1]["type"] == "summary"
    assert [r["dns_domain"] for r in records if r["type"] == "ntlm-info"] == ["leakscope.test"]
    usage = subprocess.run([sys.executable, "-m", "passive", "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and usage.stdout.startswith("Usage: leakscope ")


def test_bash_completion_is_a_function_that_completes_commands_and_options(tmp_path: Path) -> None:
    source = leakscope(env={"_LEAKSCOPE_COMPLETE": "bash_source"})
    assert source.returncode == 0
    assert "_leakscope_completion() {" in source.stdout
    assert "complete -o nosort -F _leakscope_completion leakscope" in source.stdout
    # What the README tells bash users to put in ~/.bashrc, then two completions asked of it.
    script = tmp_path / "complete.sh"
    script.write_text(
        'eval "$(_LEAKSCOPE_COMPLETE=bash_source leakscope)"\n'
        'COMP_WORDS=(leakscope an); COMP_CWORD=1; _leakscope_completion leakscope; echo "${COMPREPLY[@]}"\n'
        "COMP_WORDS=(leakscope analyze --fo); COMP_CWORD=2; COMPREPLY=(); _leakscope_completion leakscope\n"
        'echo "${COMPREPLY[@]}"\n'
    )
    assert 'eval "$(_LEAKSCOPE_COMPLETE=bash_source leakscope)"' in readme_section("Install")
    completed = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["analyze", "--format"]


def test_zsh_and_fish_completion_scripts_are_printed() -> None:
    zsh = leakscope(env={"_LEAKSCOPE_COMPLETE": "zsh_source"})
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef leakscope")
    fish = leakscope(env={"_LEAKSCOPE_COMPLETE": "fish_source"})
    assert fish.returncode == 0 and "complete --no-files --command leakscope" in fish.stdout
    install = readme_section("Install")
    assert "_LEAKSCOPE_COMPLETE=zsh_source" in install and "_LEAKSCOPE_COMPLETE=fish_source" in install


def test_python_3_11_is_what_pyproject_requires_and_the_readme_says() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    install = readme_section("Install")
    assert "Python 3.11 or later" in install
    assert "python3 -m venv .venv && .venv/bin/pip install ." in install and "pipx install ." in install


def _example(text: str) -> str:
    """The shell lines of a ``leakscope decode '...'`` example (continued with backslashes)."""
    match = re.search(r"^ *leakscope decode '[^'\n]*'(?:\\\n *'[^'\n]*')*", text, re.M)
    assert match, text
    return "\n".join(line.strip() for line in match.group(0).splitlines())


def test_the_decode_example_pastes_and_decodes_to_what_the_readme_shows(tmp_path: Path) -> None:
    help_example = _example(leakscope("decode", "--help").stdout)
    section = readme_section("`leakscope decode`")
    assert _example(section) == help_example
    script = tmp_path / "example.sh"
    script.write_text(help_example + "\n")
    pasted = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, "COLUMNS": "120"}
    )
    assert pasted.returncode == 0, pasted.stderr
    shown = section[section.index("```\nNTLMSSP CHALLENGE") + 4 :]
    shown_lines = [line for line in shown[: shown.index("```")].splitlines() if line != "..."]
    assert pasted.stdout.splitlines()[: len(shown_lines)] == shown_lines
    # The blob is the challenge of the shipped capture: analyze finds the same server.
    analyzed = leakscope("analyze", str(SHIPPED), "--format", "jsonl")
    ntlm = next(json.loads(line) for line in analyzed.stdout.splitlines() if '"ntlm-info"' in line)
    assert f"├── dns_computer: {ntlm['dns_computer']}" in shown_lines
