"""Names from the wire cannot hide or reorder text: every control, format (bidi, zero-width, tag), separator and
other invisible character is shown as a visible escape in tables, the dashboard, HTML and Markdown, and escaped in
JSON text whose decoded value stays exact."""

from __future__ import annotations

import io
import json
import re
import time
import unicodedata

import pytest
from rich.console import Console

from passive.capture.counters import CaptureCounters
from passive.cli import progress
from passive.cli.dashboard import dashboard
from passive.cli.tables import render_tables
from passive.core.text import printable
from passive.findings.model import EvidenceRecord, FindingSet, FindingType, Severity
from passive.live.monitor import Monitor, WatchOptions
from passive.results.jsonio import dumps, dumps_indented
from passive.results.records import finding_record
from passive.results.report import build_report, render_html, render_markdown
from passive.results.store import FindingStore

# One or more characters per class, and how each must be shown.
CHARACTERS = {
    "bidi-alm": ("\u061c", "\\u061c"),
    "bidi-rlo": ("\u202e", "\\u202e"),
    "bidi-isolate": ("\u2066", "\\u2066"),
    "zero-width-space": ("\u200b", "\\u200b"),
    "zero-width-joiner": ("\u200d", "\\u200d"),
    "word-joiner": ("\u2060", "\\u2060"),
    "mongolian-vowel-separator": ("\u180e", "\\u180e"),
    "combining-grapheme-joiner": ("\u034f", "\\u034f"),
    "soft-hyphen": ("\u00ad", "\\xad"),
    "tag-latin-a": ("\U000e0041", "\\U000e0041"),
    "cancel-tag": ("\U000e007f", "\\U000e007f"),
    "line-separator": ("\u2028", "\\u2028"),
    "paragraph-separator": ("\u2029", "\\u2029"),
    "variation-selector-16": ("\ufe0f", "\\ufe0f"),
    "variation-selector-17": ("\U000e0100", "\\U000e0100"),
    "hangul-filler": ("\u3164", "\\u3164"),
    "c1-csi": ("\x9b", "\\x9b"),
    "byte-order-mark": ("\ufeff", "\\ufeff"),
}
CASES = list(CHARACTERS.values())
IDS = list(CHARACTERS)


def _records(name: str) -> list[dict]:
    findings = FindingSet()
    ntlm = findings.get(FindingType.NTLM_INFO, "smtp", "10.0.0.1:25", Severity.LOW)
    ntlm.fields.update(netbios_computer=name, dns_domain=name, users=[f"CONTOSO\\{name}"], workstations=[name])
    ntlm.seen(1_800_000_000.0, "10.0.0.9:4000")
    ntlm.add_evidence(EvidenceRecord("x.pcap", 4, 1_800_000_000.0, "server", f"334 {name}"))
    service = findings.get(FindingType.MAIL_SERVICE, "smtp", "10.0.0.1:25", Severity.INFO)
    service.fields.update(banner=f"220 {name} ESMTP", software=name)
    service.seen(1_800_000_000.0, "10.0.0.9:4000")
    return [finding_record(finding) for finding in findings]


def _assert_shown_escaped(text: str, character: str, escaped: str) -> None:
    assert character not in text
    assert f"con{escaped}toso" in text


@pytest.mark.parametrize("character,escaped", CASES, ids=IDS)
def test_table_shows_the_character_escaped(character: str, escaped: str) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=400, force_terminal=True, color_system="truecolor")
    render_tables(console, _records(f"con{character}toso"), {"type": "summary"})
    _assert_shown_escaped(re.sub("\x1b\\[[0-9;]*m", "", buffer.getvalue()), character, escaped)


@pytest.mark.parametrize("character,escaped", CASES, ids=IDS)
def test_dashboard_shows_the_character_escaped(character: str, escaped: str) -> None:
    monitor = Monitor(WatchOptions(f"eth{character}0"), FindingStore(":memory:"))
    monitor.writer = monitor.store.writer("watch")
    finding = monitor.analysis.findings.get(FindingType.MAIL_SERVICE, "smtp", "10.0.0.1:25", Severity.INFO)
    finding.fields.update(banner=f"220 con{character}toso ESMTP", software=f"con{character}toso")
    finding.seen(1_800_000_000.0, "10.0.0.9:4000")
    monitor._flush()
    buffer = io.StringIO()
    Console(file=buffer, width=400, force_terminal=True, color_system="truecolor").print(dashboard(monitor))
    shown = re.sub("\x1b\\[[0-9;]*m", "", buffer.getvalue())
    _assert_shown_escaped(shown, character, escaped)
    assert f"eth{escaped}0" in shown


@pytest.mark.parametrize("character,escaped", CASES, ids=IDS)
def test_html_and_markdown_reports_show_the_character_escaped(character: str, escaped: str) -> None:
    model = build_report(_records(f"con{character}toso"), redact=False, title=f"con{character}toso")
    _assert_shown_escaped(render_html(model), character, escaped)
    markdown = render_markdown(model)
    assert character not in markdown
    # CommonMark reads a backslash as an escape only before ASCII punctuation: "\u061c" shows as written.
    assert f"con{escaped}toso" in markdown


@pytest.mark.parametrize("character,escaped", CASES, ids=IDS)
def test_json_text_is_inert_and_its_value_exact(character: str, escaped: str) -> None:
    records = _records(f"con{character}toso")
    for text in (dumps(records[0]), dumps_indented({"findings": records})):
        assert character not in text
        assert json.loads(text) in (records[0], {"findings": records})
    code = ord(character)
    if code > 0xFFFF:  # JSON escapes beyond the BMP as a UTF-16 surrogate pair
        code -= 0x10000
        expected = f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    else:
        expected = f"\\u{ord(character):04x}"
    assert f"con{expected}toso" in dumps(records[0])


def test_every_control_format_separator_and_surrogate_code_point_is_escaped() -> None:
    """Checked against the running Python's Unicode database, so a newer Unicode cannot add one silently."""
    missed = []
    for code in range(0x110000):
        character = chr(code)
        if unicodedata.category(character) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            if printable(character) == character:
                missed.append(f"U+{code:04X}")
            if code >= 0x20 and character in dumps(character):
                missed.append(f"U+{code:04X} (JSON)")
    assert missed == []


def test_ordinary_names_are_shown_as_they_are() -> None:
    for name in ("contoso", "Müller", "北京", "José", "ümlaut-ß", "emoji ❤", "Ελλάδα", "עברית", "العربية"):
        assert printable(name) == name
        assert json.loads(dumps(name)) == name and dumps(name) == json.dumps(name, ensure_ascii=False)


@pytest.mark.parametrize(
    "name",
    ["/data/[link=mailto:it@evil.test]day.pcap", "/data/[conceal]day.pcap", "/data/drop[/]day.pcap"],
    ids=["link", "style", "closing-tag"],
)
def test_progress_shows_a_file_name_as_written_never_as_markup(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture's name is chosen by whoever dropped the file: read as rich markup it made a hyperlink (OSC 8) to
    where it chose, hid or restyled the line, or stopped the display with a MarkupError."""
    monkeypatch.setattr(progress, "DELAY_SECONDS", 0.0)
    buffer = io.StringIO()
    display = progress.RunProgress([name])
    display.console = Console(file=buffer, width=400, force_terminal=True, color_system="truecolor")
    display.enabled = True
    with display, display.file(name, CaptureCounters()):
        deadline = time.monotonic() + 10
        while "packets" not in buffer.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    shown = buffer.getvalue()
    assert "\x1b]8;" not in shown and "\x1b[8m" not in shown  # no hyperlink, no concealed text
    assert name in re.sub("\x1b\\[[0-9;?]*[A-Za-z]", "", shown)
