"""`leakscope report`: HTML rendered in headless Chromium (facts, no script, no request, hostile names inert) and
Markdown with the same facts, escaped."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from passive.cli.main import main
from passive.results.report import build_report, render_html, render_markdown
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

NTLM_CAPTURES = [
    "smtp-win2019-ntlm-success-curl.pcap",  # Windows-like: EXCH19, corp.contoso.com, forest contoso.com
    "imap-ntlm-success-curl.pcap",  # Samba AD DC through Dovecot/winbind
    "pop3-win2022-ntlm-success-curl.pcap",
]
CLEARTEXT_CAPTURES = ["smtp-auth-plain-swaks.pcap", "pop3-user-pass-fetchmail.pcap", "imap-login-fetchmail.pcap"]
RELAY_CAPTURES = ["smtp-open-relay-swaks.pcap", "smtp-relay-denied-swaks.pcap"]
HOSTILE_CAPTURES = sorted(p.name for p in PCAPS.glob("*-hostile-names-ntlm-curl.pcap"))
# The secret every clear-text capture carries (pcaps/*.expected.json), and its base64 forms as sent.
PASSWORD = "B0b-Secret!"
PLAIN_RESPONSE = base64.b64encode(b"\0bob\0" + PASSWORD.encode()).decode()
# What the hostile captures put in NTLM names and the banner.
HOSTILE_TEXTS = ["<script>alert(1)</script>", "\"'><img src=x onerror=alert(1)>", "[bold red]x[/]"]
HOSTILE_SHOWN = [*HOSTILE_TEXTS, "\\x1b[31mred\\x1b[0m", "\\x1b]8;;http://x\\x07link"]


def run_report(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", *args], catch_exceptions=False)
    return result.exit_code, result.output


def write_report(tmp_path: Path, name: str, *args: str) -> Path:
    target = tmp_path / name
    code, output = run_report(*args, "-o", str(target))
    assert code == 0, output
    return target


def pcaps(*names: str) -> list[str]:
    return [str(PCAPS / name) for name in names]


# ---- the browser ------------------------------------------------------------------------------------------------


@dataclass
class PageLoad:
    console: list[dict[str, Any]]  # browser log entries
    requests: list[str]  # URLs the page asked for, other than itself
    alert: str | None  # text of an alert the page raised, if any


class Browser:
    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def load(self, path: Path) -> PageLoad:
        from selenium.common.exceptions import NoAlertPresentException

        self.driver.get_log("performance")  # drop what earlier pages logged
        self.driver.get_log("browser")
        url = path.resolve().as_uri()
        self.driver.get(url)
        try:
            alert = self.driver.switch_to.alert
            text = alert.text
            alert.dismiss()
        except NoAlertPresentException:
            text = None
        requests = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] != "Network.requestWillBeSent":
                continue
            params = message["params"]
            target = params["request"]["url"]
            # Anything this page caused (its own load aside), and any request to the network whoever made it.
            if (params.get("documentURL") == url and target != url) or re.match(r"(?i)(https?|wss?|ftp):", target):
                requests.append(target)
        return PageLoad(self.driver.get_log("browser"), requests, text)

    def script(self, source: str) -> Any:
        return self.driver.execute_script(source)

    def screenshot(self, target: Path) -> Path:
        height = self.script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1200, min(int(height) + 40, 12000))
        self.driver.save_screenshot(str(target))
        self.driver.set_window_size(1200, 1000)
        return target


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        reason = "Debian's chromium and chromium-driver are not installed (tests/setup-and-run.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="leakscope-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def assert_clean_load(load: PageLoad) -> None:
    assert load.alert is None
    assert load.requests == []
    assert [entry for entry in load.console if entry["level"] in ("SEVERE", "WARNING")] == []


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


# ---- HTML in the browser ----------------------------------------------------------------------------------------


def test_html_report_shows_the_leaks_of_real_captures(tmp_path: Path, browser: Browser) -> None:
    page = write_report(
        tmp_path,
        "report.html",
        *pcaps(*NTLM_CAPTURES, *CLEARTEXT_CAPTURES, *RELAY_CAPTURES),
        "--title",
        "Mail exposure: lab network",
    )
    load = browser.load(page)
    assert_clean_load(load)
    assert_png(browser.screenshot(tmp_path / "report.png"))
    assert browser.script("return document.title") == "Mail exposure: lab network"
    assert browser.script("return document.scripts.length") == 0
    assert browser.script("return document.querySelectorAll('svg.chart').length") == 2
    assert browser.script("return document.querySelectorAll('svg circle').length") >= 6
    text = browser.script("return document.body.innerText")
    verdict = browser.script("return document.getElementById('verdict').innerText")
    assert verdict.startswith("6 of 6 mail server(s) expose")
    for fact in [
        # Windows-like server: host, domain, forest, build and release, clock, masked user
        "EXCH19 / exch19.corp.contoso.com",
        "CONTOSO / corp.contoso.com",
        "contoso.com",
        "10.0.17763 (Windows Server 2019 / Windows 10 1809)",
        "10.0.20348 (Windows Server 2022)",
        "2026-11-21 20:06:44.277838 UTC",
        "CONTOSO\\j***e",
        # Samba AD DC
        "DC1 / dc1.leakscope.test",
        "LEAKSCOPE / leakscope.test",
        "LEAKSCOPE\\a***e",
        # clear text, masked
        "PASS ********",
        "AUTH PLAIN ********",
        "b***b",
        # mechanisms offered in clear, relay verdicts
        "LOGIN, NTLM, PLAIN",
        # the lab relay is Postfix with mynetworks = its own private network: it relays for internal clients;
        # relay addresses are mailboxes, masked like user names
        "Relays for internal clients: accepted mail from a***e@leakscope.test to v***m@example.net",
        "Refused to relay to v***m@example.net",
        # remediation and verification in the report
        "prefer Kerberos",
        "smtpd_tls_auth_only = yes",
        "leakscope probe",
        # evidence: capture and frame
        "pcaps/smtp-win2019-ntlm-success-curl.pcap",
    ]:
        assert fact in text, fact
    source = page.read_text()
    assert PASSWORD not in source and PLAIN_RESPONSE not in source
    assert "jdoe" not in text and "alice\n" not in text
    assert "Content-Security-Policy" in source and "default-src 'none'" in source


def test_hostile_names_do_not_execute_or_alter_the_page(tmp_path: Path, browser: Browser) -> None:
    assert len(HOSTILE_CAPTURES) == 3
    page = write_report(tmp_path, "hostile.html", *pcaps(*HOSTILE_CAPTURES))
    # The same page without its Content-Security-Policy: escaping alone must hold.
    bare = tmp_path / "hostile-no-csp.html"
    source = page.read_text()
    bare.write_text(re.sub(r"<meta http-equiv=\"Content-Security-Policy\"[^>]*>", "", source))
    assert "Content-Security-Policy" not in bare.read_text()
    for target in (page, bare):
        load = browser.load(target)
        assert_clean_load(load)
        counts = browser.script(
            "return ['script', 'img', 'a', 'iframe', 'object', 'link', 'style', 'svg']"
            ".map(tag => document.getElementsByTagName(tag).length)"
        )
        assert counts == [0, 0, 0, 0, 0, 0, 1, 2]
        assert browser.script("return document.querySelectorAll('[onerror], [onload], [href], [src]').length") == 0
        text = browser.script("return document.body.innerText")
        for hostile in HOSTILE_SHOWN:
            assert hostile in text, hostile
        assert "\x1b" not in text and "\x07" not in text
        # The banner cell holds one text node: nothing in it became markup.
        assert browser.script("return [...document.querySelectorAll('.banner')].every(e => e.children.length === 0)")
        assert browser.script("return document.querySelectorAll('article.card').length") == 3
    assert_png(browser.screenshot(tmp_path / "hostile.png"))


def hostile_records() -> list[dict[str, Any]]:
    """Records as a hostile findings file could hold them: markup that would set a marker if it ever ran."""
    marker = "<script>window.leakMarker=1</script>"
    breaker = '"\'><img src=x onerror="window.leakMarker=2"><svg onload=window.leakMarker=3>'
    style = "</style><style>body{display:none}</style></title><title>owned"
    return [
        {
            "type": "ntlm-info",
            "source": "passive",
            "protocol": "smtp",
            "server": f"10.9.9.9:25{breaker}",
            "severity": "medium",
            "netbios_computer": marker,
            "dns_computer": breaker,
            "dns_domain": style,
            "dns_tree": "[link=http://x]click[/link] \x1b]8;;http://x\x07x\x1b]8;;\x07",
            "os_version": "10.0.17763",
            "os_release": "</td></tr></table>" + marker,
            "users": [f"{marker}\\{breaker}"],
            "workstations": [style],
            "first_seen": "2026-01-01T00:00:00Z",
            "evidence": [
                {"file": marker, "frame": 7, "time": "2026-01-01T00:00:00Z", "side": "server", "line": breaker}
            ],
            "remediation": marker,
            "verification": breaker,
        },
        {
            "type": "mail-service",
            "source": "active",
            "protocol": "smtp",
            "server": f"10.9.9.9:25{breaker}",
            "severity": "info",
            "banner": marker + style,
        },
    ]


def test_hostile_findings_file_sets_no_marker(tmp_path: Path, browser: Browser) -> None:
    findings = tmp_path / "hostile.jsonl"
    findings.write_text("".join(json.dumps(r) + "\n" for r in hostile_records()))
    page = write_report(tmp_path, "hostile-file.html", str(findings))
    bare = tmp_path / "hostile-file-no-csp.html"
    bare.write_text(re.sub(r"<meta http-equiv=\"Content-Security-Policy\"[^>]*>", "", page.read_text()))
    for target in (page, bare):
        assert_clean_load(browser.load(target))
        assert browser.script("return typeof window.leakMarker") == "undefined"
        assert browser.script("return document.title") == "Mail traffic exposure report"
        assert browser.script("return getComputedStyle(document.body).display") == "block"
        assert browser.script("return document.querySelectorAll('script, img, a, [onload], [onerror]').length") == 0
        text = browser.script("return document.body.innerText")
        assert "<script>window.leakMarker=1</script>" in text
        assert "[link=http://x]click[/link]" in text


def empty_captures(tmp_path: Path) -> list[str]:
    header_only = tmp_path / "empty.pcap"
    header_only.write_bytes(pcap_bytes([]))
    web = tmp_path / "web-only.pcap"
    page = [(False, b"GET / HTTP/1.1\r\nHost: www\r\n\r\n"), (True, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")]
    web.write_bytes(pcap_bytes(ethernet_frames(conversation_segments(page, server=("10.0.0.2", 80)))))
    return [str(header_only), str(web)]


def test_empty_capture_says_nothing_leaked(tmp_path: Path, browser: Browser) -> None:
    for index, capture in enumerate(empty_captures(tmp_path)):
        page = write_report(tmp_path, f"empty-{index}.html", capture)
        assert_clean_load(browser.load(page))
        verdict = browser.script("return document.getElementById('verdict').innerText")
        assert verdict == "Nothing leaked. No mail traffic was found in what was analyzed."
        assert browser.script("return document.querySelectorAll('article.card').length") == 0
        assert "No leak was seen, so there is no timeline." in browser.script("return document.body.innerText")
    assert_png(browser.screenshot(tmp_path / "empty.png"))
    markdown = tmp_path / "empty.md"
    code, output = run_report(empty_captures(tmp_path)[0], "-o", str(markdown))
    assert code == 0, output
    assert "**Nothing leaked.** No mail traffic was found" in markdown.read_text()


def test_services_without_leaks_say_nothing_leaked(tmp_path: Path, browser: Browser) -> None:
    page = write_report(tmp_path, "tls.html", *pcaps("smtp-relay-denied-swaks.pcap"), "--format", "html")
    assert_clean_load(browser.load(page))
    verdict = browser.script("return document.getElementById('verdict').innerText")
    # Postfix offered PLAIN and LOGIN before TLS there: that is a leak, so this report must not say otherwise.
    assert verdict.startswith("1 of 1 mail server(s) expose")
    quiet = tmp_path / "quiet.jsonl"
    record = {"type": "mail-service", "server": "10.0.0.2:25", "severity": "info", "protocol": "smtp", "tls": True}
    quiet.write_text(json.dumps(record) + "\n")
    page = write_report(tmp_path, "quiet.html", str(quiet))
    assert_clean_load(browser.load(page))
    assert browser.script("return document.getElementById('verdict').innerText").startswith(
        "Nothing leaked. 1 mail server(s) were seen"
    )


def test_passive_and_active_comparison(tmp_path: Path, browser: Browser) -> None:
    result = CliRunner().invoke(main, ["analyze", "--format", "jsonl", *pcaps("smtp-win2019-ntlm-success-curl.pcap")])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    active = [dict(r, source="active") for r in records if r["type"] in ("auth-methods", "ntlm-info")]
    for record in active:
        if record["type"] == "auth-methods":
            record["mechanisms_after_tls"] = ["GSSAPI"]
        else:
            record["os_version"] = "10.0.20348"
    findings = tmp_path / "both.jsonl"
    findings.write_text("".join(json.dumps(r) + "\n" for r in records + active))
    page = write_report(tmp_path, "both.html", str(findings))
    assert_clean_load(browser.load(page))
    rows = browser.script(
        "return [...document.querySelectorAll('#comparison tr')].map(r => [...r.cells].map(c => c.innerText))"
    )
    assert ["Windows build", "10.0.17763", "10.0.20348", "differs"] in rows
    assert ["Mechanisms after TLS", "—", "GSSAPI", "only probe"] in rows
    assert ["AD forest", "contoso.com", "contoso.com", "same"] in rows


# ---- Markdown, redaction, inputs --------------------------------------------------------------------------------


def test_markdown_has_the_facts_and_escapes_hostile_strings(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    code, output = run_report(*pcaps(*NTLM_CAPTURES, *RELAY_CAPTURES, *HOSTILE_CAPTURES), "-o", str(target))
    assert code == 0, output
    markdown = target.read_text()
    assert markdown.startswith("# Mail traffic exposure report\n")
    for fact in ["EXCH19 / exch19.corp.contoso.com", "CONTOSO\\j\\*\\*\\*e", "10.0.17763 (Windows Server 2019"]:
        assert fact in markdown, fact
    assert "<script>" not in markdown and "<img" not in markdown and "[bold red]" not in markdown
    assert "\x1b" not in markdown and "\x07" not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    # Rendered as CommonMark with GFM tables: no tag, no link, no extra table cell comes out of traffic strings.
    html = MarkdownIt("commonmark").enable("table").render(markdown)
    assert "<script" not in html and "<img" not in html and "<a " not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "[bold red]x[/]" in html
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.DOTALL):
        assert row.count("<td") in (0, 2, 4, 5, 6), row


def test_redaction_masks_secrets_from_a_findings_file_that_shows_them(tmp_path: Path) -> None:
    findings = tmp_path / "secrets.jsonl"
    result = CliRunner().invoke(
        main, ["analyze", "--show-secrets", "--format", "jsonl", "-o", str(findings), *pcaps(*CLEARTEXT_CAPTURES)]
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD in findings.read_text()
    redacted = write_report(tmp_path, "redacted.md", str(findings)).read_text()
    assert PASSWORD not in redacted and PLAIN_RESPONSE not in redacted
    assert "b\\*\\*\\*b" in redacted and "PASS \\*\\*\\*\\*\\*\\*\\*\\*" in redacted
    assert "| bob |" not in redacted
    shown = write_report(tmp_path, "shown.md", str(findings), "--no-redact").read_text()
    assert "B0b-Secret!" in shown and "| bob |" in shown and "Not redacted" in shown


def test_json_document_and_jsonl_give_the_same_report(tmp_path: Path) -> None:
    capture = pcaps("smtp-win2019-ntlm-success-curl.pcap")
    reports = []
    for form in ("json", "jsonl"):
        findings = tmp_path / f"findings.{form}"
        result = CliRunner().invoke(main, ["analyze", "--format", form, "-o", str(findings), *capture])
        assert result.exit_code == 0, result.output
        reports.append(write_report(tmp_path, f"from-{form}.md", str(findings)).read_text())
    direct = write_report(tmp_path, "direct.md", *capture).read_text()
    # The same findings, whatever their form: only the time and the inputs (listed with their SHA-256) differ.
    without_time = [
        re.sub(r"Generated .* UTC|\n\| [^\n]* \((?:findings|capture)\) \| [0-9a-f]{64} \|", "", text)
        for text in (*reports, direct)
    ]
    assert without_time[0] == without_time[1] == without_time[2]
    assert "exch19.corp.contoso.com" in without_time[0]


def test_report_from_a_findings_store(tmp_path: Path) -> None:
    from passive.analysis.classify import mail_capture_options
    from passive.analysis.pipeline import Analysis
    from passive.capture import analyze_file
    from passive.results.store import save_run

    analysis = Analysis()
    for capture in pcaps("smtp-win2019-ntlm-success-curl.pcap", "smtp-open-relay-swaks.pcap"):
        analysis.file = capture
        analyze_file(capture, analysis.handler_factory, mail_capture_options())
    store = tmp_path / "findings.db"
    save_run(store, list(analysis.findings), "analyze", {"type": "summary", "captures": 2, "packets_read": 40})
    markdown = write_report(tmp_path, "store.md", "--db", str(store)).read_text()
    assert "EXCH19 / exch19.corp.contoso.com" in markdown and "Relays for internal clients: accepted mail" in markdown
    assert "| Captures analyzed | 2 |" in markdown
    code, output = run_report("--db", str(tmp_path / "missing.db"))
    assert code == 1 and output.startswith("leakscope: error:") and "no such findings store" in output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"type": "ntlm-info"}\nnot json\n', "line 2: not JSON"),
        (b"[1, 2]\n", "not a pcap or pcapng file"),
        (b'{\n  "no": "findings"\n}\n', "without a findings list"),
        (b'{"type": "ntlm-info"}\n[1]\n', "line 2: not a finding record"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path: Path, content: bytes, message: str) -> None:
    source = tmp_path / "input.jsonl"
    source.write_bytes(content)
    result = CliRunner().invoke(main, ["report", str(source), "-o", str(tmp_path / "out.html")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("leakscope: error:") and message in lines[0], result.output
    assert not (tmp_path / "out.html").exists()


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_FIELDS = [
    "type", "server", "severity", "source", "protocol", "evidence", "details", "users", "workstations", "user",
    "password", "mechanisms", "cleartext_exposed", "mechanisms_after_tls", "accepted", "first_seen", "last_seen",
    "time", "clock_skew_seconds", "server_time", "count", "banner", "remediation", "dns_computer", "sessions",
]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(_FIELDS),
            _JSON_VALUES | st.sampled_from(["ntlm-info", "open-relay", "auth-methods", "summary", "high", "1.2.3.4:2"]),
            max_size=12,
        ),
        max_size=6,
    )
)
def test_any_record_shape_renders(records: list[dict[str, Any]]) -> None:
    report = build_report(records)
    html = render_html(report)
    markdown = render_markdown(report)
    assert html.startswith("<!DOCTYPE html>") and markdown.startswith("# ")


def test_the_browser_checks_see_requests_scripts_and_errors(tmp_path: Path, browser: Browser) -> None:
    """The checks above can fail: a page that asks loopback for an image and logs an error is caught."""
    page = tmp_path / "noisy.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>noisy</title></head><body>"
        '<img src="http://127.0.0.1:9/pixel.png"><script>console.error("noisy page")</script></body></html>'
    )
    load = browser.load(page)
    assert "http://127.0.0.1:9/pixel.png" in load.requests
    assert any("noisy page" in entry["message"] for entry in load.console if entry["level"] == "SEVERE")


def test_report_reads_a_directory_and_a_pattern_as_analyze_does(tmp_path: Path) -> None:
    """``report DIR`` was refused (a directory is no file): it walks what ``analyze`` walks, ring pieces read as one
    stream, and takes the findings files it finds too; a file that is neither is named and skipped."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    leakscope = [sys.executable, "-c", "from passive.cli.main import main; main()"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*leakscope, *args], capture_output=True, text=True, cwd=root, timeout=300)

    capture = PCAPS / "smtp-ntlm-success-swaks.pcap"
    archive = tmp_path / "archive"
    (archive / "findings").mkdir(parents=True)
    subprocess.run(["editcap", "-F", "pcap", "-c", "10", str(capture), str(archive / "ring.pcap")], check=True)
    pieces = sorted(str(p) for p in archive.glob("ring*.pcap"))
    assert len(pieces) == 3
    jsonl = archive / "findings" / "pop3.jsonl"
    done = run("analyze", "--format", "jsonl", "-o", str(jsonl), *pcaps("pop3-user-pass-fetchmail.pcap"))
    assert done.returncode == 0, done.stderr
    (archive / "notes.txt").write_text("not a capture\n")
    os.mkfifo(archive / "live.fifo")  # never opened: it would block the walk

    reports = {}
    for name, sources in (
        ("walked", [str(archive)]),
        ("pattern", [str(archive / "*")]),
        ("named", [str(jsonl), *pieces]),
        ("whole", [str(capture)]),
    ):
        done = run("report", *sources, "-o", str(tmp_path / f"{name}.md"))
        assert done.returncode == 0, (name, done.stderr)
        if name in ("walked", "pattern"):
            for skipped in ("notes.txt", "live.fifo"):
                assert f"leakscope: note: {archive / skipped} is neither a capture nor findings; skipped" in done.stderr
        reports[name] = re.sub(r"Generated .* UTC", "", (tmp_path / f"{name}.md").read_text())
    assert reports["walked"] == reports["pattern"] == reports["named"]
    listed = re.findall(r"\n\| ([^\n|]*) \((capture|findings)\) \|", reports["walked"])
    assert listed == [(str(jsonl), "findings"), *((piece, "capture") for piece in pieces)]
    # The session the pieces split is read whole: its server's line is the unsplit capture's.
    server = re.findall(r"\n\| 10\.99\.0\.1:25 \|[^\n]*", reports["whole"])
    assert server and server[0] in reports["walked"]
    assert "| 10.99.0.1:110 |" in reports["walked"]  # and the findings file's server


def _ntlm_capture(path: Path, challenge: bytes, authenticate: bytes | None) -> Path:
    """One SMTP session offering NTLM before STARTTLS: the client asks for a CHALLENGE, then answers it or cancels."""
    from dissectors import ntlmssp

    answer = base64.b64encode(authenticate) if authenticate else b"*"
    turns = [
        (True, b"220 mx ESMTP\r\n"),
        (False, b"EHLO c\r\n"),
        (True, b"250-mx\r\n250-AUTH NTLM\r\n250 STARTTLS\r\n"),
        (False, b"AUTH NTLM " + base64.b64encode(ntlmssp.build_negotiate()) + b"\r\n"),
        (True, b"334 " + base64.b64encode(challenge) + b"\r\n"),
        (False, answer + b"\r\n"),
        (True, b"535 5.7.3 failed\r\n" if authenticate else b"501 cancelled\r\n"),
    ]
    path.write_bytes(pcap_bytes(ethernet_frames(conversation_segments(turns))))
    return path


def test_what_leaks_says_only_what_ntlm_gave(tmp_path: Path) -> None:
    """A CHALLENGE without names or version, cancelled by the client: the card said "AD names and Windows build over
    NTLM, user names with crackable responses" (from the client's own version and an exchange without a user)."""
    from dissectors import ntlmssp

    empty = ntlmssp.build_challenge(b"\x01" * 8)
    named = ntlmssp.build_challenge(b"\x01" * 8, "CORP", {"netbios_domain": "CORP", "netbios_computer": "MX1"})
    answered = ntlmssp.build_authenticate("alice", "CORP", "WS1", lm_response=bytes(24), nt_response=bytes(24))
    cases = [
        (empty, None, "offers NTLM before TLS"),
        (named, None, "AD names over NTLM"),
        (empty, answered, "user names with crackable responses over NTLM"),
        (named, answered, "AD names over NTLM, user names with crackable responses"),
    ]
    for number, (challenge, authenticate, leak) in enumerate(cases):
        pcap = _ntlm_capture(tmp_path / f"ntlm{number}.pcap", challenge, authenticate)
        markdown = write_report(tmp_path, f"ntlm{number}.md", str(pcap)).read_text()
        row = re.search(r"\n\| 10\.0\.0\.2:25 \|[^|]*\|[^|]*\| ([^|]*) \|", markdown)
        assert row is not None and row.group(1) == leak, (number, row and row.group(1))
        # What an outsider learns: the names the CHALLENGE gave, and no sentence without them ("with its .").
        learned = "10.0.0.2:25 answers AUTH NTLM with its internal host name MX1, AD domain CORP."
        assert (learned in markdown) == (challenge is named) and "with its ." not in markdown
        # The verdict: a server is said to give its AD names only when it was seen giving them.
        gave = "1 give their Active Directory names and Windows build to anyone who asks"
        offered = "1 offer NTLM before TLS"
        assert (gave in markdown) == (challenge is named) and (offered in markdown) != (gave in markdown)


def test_only_ntlm_users_are_counted_as_sent_in_ntlm(tmp_path: Path) -> None:
    """A POP3 USER/PASS login made the report say "Clients sent 1 user name(s) and 0 workstation name(s) in NTLM,
    with a NetNTLM response that can be cracked offline" of a capture without NTLM."""
    clear = write_report(tmp_path, "clear.md", *pcaps("pop3-user-pass-fetchmail.pcap")).read_text()
    assert "in NTLM" not in clear and "NetNTLM" not in clear
    both = pcaps("smtp-win2019-ntlm-success-curl.pcap", "pop3-user-pass-fetchmail.pcap")
    mixed = write_report(tmp_path, "mixed.md", *both).read_text()
    assert "Clients sent 1 user name(s) and 1 workstation name(s) in NTLM" in mixed


def test_user_names_cannot_change_what_the_report_counts(tmp_path: Path) -> None:
    """The report masks user names wherever they appear; it masked them in the record's kind, severity, server,
    mechanisms and software too. Clients logging in as "high", "cleartext-credentials", "NTLM" and "Postfix" (or
    as the server's address) made the report say "Nothing leaked" of four clear-text passwords."""
    users = ["high", "cleartext-credentials", "NTLM", "Postfix", "10.0.0.2"]
    frames = []
    for number, user in enumerate(users):
        login = base64.b64encode(f"\0{user}\0pw-{number}-Secret".encode())
        turns = [
            (True, b"220 mx ESMTP Postfix\r\n"),
            (False, b"EHLO c\r\n"),
            (True, b"250-mx\r\n250 AUTH PLAIN LOGIN NTLM\r\n"),
            (False, b"AUTH PLAIN " + login + b"\r\n"),
            (True, b"235 2.7.0 ok\r\n"),
        ]
        segments = conversation_segments(turns, ("10.0.0.1", 40000 + number), (f"10.0.0.{2 + number}", 25))
        frames += ethernet_frames(segments, start=1000.0 + number)
    pcap = tmp_path / "names.pcap"
    pcap.write_bytes(pcap_bytes(frames))
    markdown = write_report(tmp_path, "names.md", str(pcap)).read_text()
    assert "5 of 5 mail server(s) expose information:** 5 let passwords cross the network in clear text" in markdown
    assert "Servers by their worst finding: high 5," in markdown and "Findings: high 5, medium 5," in markdown
    leaks = "passwords of 1 account(s) in clear text (PLAIN); offers LOGIN before TLS"
    assert f"| 10.0.0.2:25 | — | — | {leaks}" in markdown
    assert markdown.count("| Software | Postfix |") == 5 and "Offered before TLS: LOGIN, NTLM, PLAIN." in markdown
    assert "| Users | h\\*\\*\\*h |" in markdown  # the names themselves are still masked
