"""`leakscope report` for people: one masking rule for every string (in the DOM and the Markdown), a first page that
prints on one page, paper in A4 and Letter, 2,000 servers within the size and time bounds, a timeline that reads,
cards that do not contradict their tables, and Markdown readable as plain text yet inert.

Screenshots and PDFs are written under pytest's tmp dir; their paths are printed (run with -s to see them)."""

from __future__ import annotations

import base64
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from bench.gen_fleet import SECRET, first_of_each_profile, known_users, mailbox_of, user_of, write_fleet
from passive.results.redaction import MASK, Redactor, keep_name, mask_name
from passive.results.report import build_report, render_html, render_markdown
from passive.results.report.charts import timeline
from passive.results.report.render import markdown_text
from tests import test_report
from tests.test_report import Browser, assert_clean_load, assert_png, write_report

browser = test_report.browser  # the same headless Chromium fixture

CORPUS_POP3 = Path("/work/shared/corpus/pcaps/ndpi/pop3.pcap")
# The mailboxes that capture names in clear text (the credentials' users, and the server's "+OK mailbox" replies).
CORPUS_USERS = ["cicciopernacchio@mail.com", "digitalinvestigator@networksims.com"]
# Servers of the small estate: one of each profile of bench/gen_fleet.py, and two more.
SMALL = [*first_of_each_profile(), 3, 4]
LARGE = 2100
# The bounds of the issue: a 2,000-server report under 2 MB, rendered by Chromium in under 2 s.
MAX_BYTES = 2 * 1024 * 1024
MAX_RENDER_SECONDS = 2.0
PAPER = {"A4": (8.27, 11.69), "Letter": (8.5, 11.0)}


@pytest.fixture(scope="module")
def small_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fleet(tmp_path_factory.mktemp("fleet") / "small.pcap", SMALL)


@pytest.fixture(scope="module")
def large_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fleet(tmp_path_factory.mktemp("fleet") / "large.pcap", LARGE)


def print_pdf(browser: Browser, page: Path, paper: str) -> Path:
    """The page printed by Chromium (DevTools Page.printToPDF, as --print-to-pdf does) on that paper."""
    assert_clean_load(browser.load(page))
    width, height = PAPER[paper]
    printed = browser.driver.execute_cdp_cmd(
        "Page.printToPDF", {"paperWidth": width, "paperHeight": height, "printBackground": True}
    )
    target = page.with_suffix(f".{paper}.pdf")
    target.write_bytes(base64.b64decode(printed["data"]))
    print(f"PDF ({paper}): {target}")
    return target


def pdf_pages(path: Path) -> int:
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE).group(1))  # type: ignore[union-attr]


def pdf_text(path: Path, page: int) -> str:
    command = ["pdftotext", "-layout", "-f", str(page), "-l", str(page), str(path), "-"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def screenshot(browser: Browser, target: Path, full: bool = False) -> Path:
    if full:
        browser.screenshot(target)
    else:
        browser.driver.save_screenshot(str(target))
    assert_png(target)
    print(f"screenshot: {target}")
    return target


@pytest.fixture(scope="module")
def poppler() -> Iterator[None]:
    if not shutil.which("pdfinfo") or not shutil.which("pdftotext"):
        pytest.skip("poppler-utils (pdfinfo, pdftotext) is not installed (tests/setup-and-run.sh installs it)")
    yield


# ---- one masking rule ---------------------------------------------------------------------------------------


def test_known_users_and_secrets_appear_nowhere_unless_no_redact(
    small_capture: Path, tmp_path: Path, browser: Browser
) -> None:
    sources = [str(small_capture), str(CORPUS_POP3)] if CORPUS_POP3.exists() else [str(small_capture)]
    known = [*(user_of(i) for i in SMALL), *(mailbox_of(i) for i in SMALL)]
    known += CORPUS_USERS if CORPUS_POP3.exists() else []
    page = write_report(tmp_path, "redacted.html", *sources)
    assert_clean_load(browser.load(page))
    dom = browser.script("return document.documentElement.outerHTML")
    text = browser.script("return document.body.innerText")
    markdown = write_report(tmp_path, "redacted.md", *sources).read_text()
    for shown in (dom, text, markdown):
        assert [name for name in known if name.lower() in shown.lower()] == []
        assert SECRET not in shown
    # Masked, the same names are there: in the credentials, the NTLM users, the evidence lines and the replies.
    for masked in ("e***1", "m***0@staff.example.org", 'mailbox "m***0@staff.example.org" has 2 messages'):
        assert masked in text, masked
    if CORPUS_POP3.exists():
        assert '+OK mailbox "c***o@mail.com" has 2 messages' in text
        assert '+OK mailbox "`c***o@mail.com`" has 2 messages' in markdown
    screenshot(browser, tmp_path / "redacted-first-page.png")

    shown_page = write_report(tmp_path, "shown.html", *sources, "--no-redact")
    assert_clean_load(browser.load(shown_page))
    text = browser.script("return document.body.innerText")
    shown = [user_of(1), mailbox_of(0), *(CORPUS_USERS if CORPUS_POP3.exists() else [])]
    assert [name for name in shown if name not in text] == [] and "Not redacted" in text


def test_one_redactor_masks_learned_names_wherever_they_appear() -> None:
    redactor = Redactor(name_mask=mask_name)
    redactor.learn_record(
        {
            "type": "cleartext-credentials",
            "user": "CORP\\jdoe",
            "password": "Sup3r-Secret",
            "evidence": [
                {"side": "client", "line": "USER alice.smith"},
                {"side": "server", "line": "+OK Password required for carol."},
                {"side": "server", "line": "+OK dave has 3 visible messages (0 hidden) in 420 octets."},
            ],
            "details": [{"mail_from": "<erin@corp.example>"}],
        },
        ("password",),
    )
    said = redactor.text("JDOE logged in; corp\\jdoe, alice.smith, carol, dave and erin@corp.example; Sup3r-Secret")
    assert said == "J***E logged in; corp\\j***e, a***h, c***l, d***e and e***n@corp.example; ********"
    # Whole words only, so a name inside another word stays; too short a name is not masked in free text.
    assert redactor.text("jdoes carolina") == "jdoes carolina"
    redactor.learn_name("al")
    assert redactor.text("al") == "al"
    # Machine output keeps names (keep_name): the same learning masks nothing there, secrets aside.
    machine = Redactor(name_mask=keep_name)
    machine.learn_name("jdoe")
    assert machine.text("jdoe") == "jdoe"
    assert Redactor(show_secrets=True, name_mask=mask_name).text("jdoe") == "jdoe"


def test_many_known_secrets_are_each_scrubbed_wherever_they_appear() -> None:
    """Past a few secrets a string is first searched for where any may start (their first characters): every
    secret is still scrubbed, wherever it stands, and text that only shares a secret's start is kept."""
    secrets = {f"pw{number:03d}-{'x' * number}" for number in range(40)}
    long_ones = {"S" * 40 + str(number) for number in range(3)}  # one start, longer than the searched prefix
    secrets |= long_ones | {"ab"}  # too short to scrub from free text
    redactor = Redactor(secrets=secrets)
    for secret in sorted(secrets - {"ab"}):
        assert redactor.text(f"said {secret}, twice:{secret}") == f"said {MASK}, twice:{MASK}"
    assert redactor.text("S" * 40 + " ab pw000") == "S" * 40 + " ab pw000"
    assert redactor.value({"note": ["x", {"deep": "pw002-xx!"}], "password": "anything"}) == {
        "note": ["x", {"deep": f"{MASK}!"}],
        "password": MASK,
    }
    secrets.add("late-secret")  # the run's set, held by reference, grows as traffic comes
    assert redactor.text("a late-secret here") == f"a {MASK} here"


# ---- paper --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("paper", ["A4", "Letter"])
def test_first_page_prints_on_one_page_and_the_rest_about_two_servers_a_page(
    small_capture: Path, tmp_path: Path, browser: Browser, poppler: None, paper: str
) -> None:
    page = write_report(tmp_path, "paper.html", str(small_capture), "--title", "Mail exposure: estate")
    pdf = print_pdf(browser, page, paper)
    pages = pdf_pages(pdf)
    servers = browser.script("return document.querySelectorAll('article.card').length")
    first, second = pdf_text(pdf, 1), pdf_text(pdf, 2)
    # The whole first page is on page 1 (its last line, the inputs' digest, included); the cards start on page 2.
    digest = browser.script("return document.querySelector('#inputs td:nth-child(3)').innerText")
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and digest[:20] in first.replace(" ", "")
    verdict = browser.script("return document.querySelector('#verdict strong').innerText")
    assert " ".join(verdict.split()) in " ".join(first.split())
    assert "Servers" in second.split("\n", 3)[-1] and "Inputs" not in second
    # Every page carries the title and the capture window in its header, and its number.
    window = browser.script("return document.getElementById('window').innerText")
    start = re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", window).group(0)  # type: ignore[union-attr]
    for number in range(1, pages + 1):
        text = pdf_text(pdf, number)
        assert "Mail exposure: estate" in text and start in text and f"Page {number} of {pages}" in text
    # After the first page: a page per two servers at most (cards of NTLM servers are the longest; cards without
    # NTLM take about a third of a page), and two or three for remediation, timeline and scope.
    assert pages - 1 <= math.ceil(servers / 2) + 3, pages
    print(f"{paper}: {pages} pages for {servers} servers")


# ---- scale --------------------------------------------------------------------------------------------------


def test_two_thousand_servers_within_size_and_time(
    large_capture: Path, tmp_path: Path, browser: Browser, poppler: None
) -> None:
    started = time.perf_counter()
    page = write_report(tmp_path, "estate.html", str(large_capture))
    built = time.perf_counter() - started
    size = page.stat().st_size
    assert size < MAX_BYTES, size
    load_started = time.perf_counter()
    assert_clean_load(browser.load(page))
    height = browser.script("return document.documentElement.scrollHeight")  # forces layout
    rendered = time.perf_counter() - load_started
    assert rendered < MAX_RENDER_SECONDS, rendered
    assert browser.script("return document.querySelectorAll('article.card').length") == 0
    assert browser.script("return document.querySelectorAll('#all-servers tr').length") == LARGE + 1
    headings = browser.script("return [...document.querySelectorAll('#servers h3')].map(h => h.innerText)")
    assert headings == ["By AD domain", "By Subnet", "By Software", "Every server"]
    # The first page groups the servers by AD domain (14 domains, and the servers without NTLM).
    rows = browser.script("return [...document.querySelectorAll('#server-table tr')].map(r => r.cells[0].innerText)")
    assert rows[0] == "Servers by AD domain" and "corp.contoso.com" in rows and len(rows) <= 16
    assert len(browser.script("return document.querySelectorAll('#actions li')")) == 5
    text = browser.script("return document.body.innerText")
    assert [u for u in known_users(LARGE) if u in text] == [] and SECRET not in text
    screenshot(browser, tmp_path / "estate-first-page.png")
    pdf = print_pdf(browser, page, "A4")
    markdown = write_report(tmp_path, "estate.md", str(large_capture))
    assert markdown.stat().st_size < MAX_BYTES
    print(
        f"{LARGE} servers: HTML {size} bytes built in {built:.2f} s, rendered in {rendered:.2f} s "
        f"({height} px), Markdown {markdown.stat().st_size} bytes, A4 PDF {pdf_pages(pdf)} pages"
    )


# ---- timeline -----------------------------------------------------------------------------------------------


def test_timeline_ticks_dates_past_a_day_and_merges_overlapping_dots() -> None:
    start = datetime(2009, 3, 1, tzinfo=UTC)
    points = [("10.0.0.1:25", start + timedelta(seconds=s), "high", "Clear-text credentials") for s in range(40)]
    points += [("10.0.0.2:25", start + timedelta(days=6000), "medium", "NTLM host information")]
    chart = timeline(points)
    assert chart is not None
    assert chart.ticks[0].label == "2009-03-01" and all(":" not in t.label for t in chart.ticks)
    merged = [p for p in chart.points if p.count > 1]
    assert len(merged) == 1 and merged[0].count == 40 and merged[0].radius > chart.points[-1].radius
    assert merged[0].time.startswith("40 leaks, 2009-03-01 00:00:00 UTC to")
    day = timeline([("s", start, "low", "x"), ("s", start + timedelta(hours=3), "low", "x")])
    assert day is not None and day.ticks[1].label == "00:45:00"


# ---- cards agree with their tables ------------------------------------------------------------------------


def test_cards_do_not_contradict_their_tables() -> None:
    records = [
        {"type": "cleartext-credentials", "server": "10.0.0.9:110", "protocol": "pop3", "severity": "high",
         "mechanism": "USER-PASS", "user": "jdoe", "password": "********", "count": 1},
        {"type": "mail-service", "server": "10.0.0.9:110", "protocol": "pop3", "severity": "info",
         "banner": "Dovecot ready.", "software": "Dovecot", "starttls_offered": False},
    ]  # fmt: skip
    report = build_report(records)
    [card] = report.cards
    assert card.users == ["j***e"]
    assert card.authentication == ["Used without TLS: USER; the credentials below crossed in clear text."]
    assert [(f.owner, f.setting) for f in card.fixes] == [
        ("Identity", "reset the passwords of the accounts seen in clear text (listed per server)"),
        ("Dovecot", "auth_allow_cleartext = no"),
    ]
    assert [name for name, _ in card.verification] == ["Clear-text credentials"]
    html, markdown = render_html(report), render_markdown(report)
    for said in (html, markdown):
        assert "No mechanism offered in clear text" not in said and "Users</th><td class=\"traffic\">none" not in said
    assert "| Users | j\\*\\*\\*e |" in markdown
    assert report.actions[0].owner == "Identity" and report.actions[1].owner == "Dovecot"


# ---- Markdown -------------------------------------------------------------------------------------------------

_RENDERER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


@pytest.mark.parametrize(
    "hostile",
    [
        "[click](http://evil.example/x)",
        "![img](http://evil.example/p.png)",
        "<http://evil.example>",
        "<img src=x onerror=alert(1)>",
        "www.evil.example/path",
        "https://evil.example/a_(b)",
        "alice@evil.example",
        "*strong* **more** _em_ ~~del~~",
        "# heading",
        "- item",
        "1. item",
        "> quote",
        "| cell | break |",
        "[ref]: http://evil.example",
        "&lt;script&gt; &#60;b&#62;",
        "`code` ``two``",
        "\\*not escaped\\*",
        "x\\",
    ],
)
def test_markdown_values_stay_inert(hostile: str) -> None:
    for document in (f"- {markdown_text(hostile)}\n", f"| a | b |\n| --- | --- |\n| {markdown_text(hostile)} | x |\n"):
        html = _RENDERER.render(document)
        assert not re.search(r"<(?:a|img|em|strong|del|h\d|blockquote|ol|script)\b", html), (hostile, html)
        assert html.count("<li>") <= 1 and html.count("<td>") in (0, 2)
        # The value reads back as itself.
        shown = re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
        assert hostile in shown.replace("&amp;", "&"), (hostile, html)


def test_markdown_needs_no_backslash_for_ordinary_text() -> None:
    for plain in [
        "10.0.17763 (Windows Server 2019 / Windows 10 1809)",
        "smtpd_tls_auth_only = yes",
        "+OK POP server ready H migmxus005",
        "-ERR authentication failed",
        "B0b-Secret! {x} = y",
        "CONTOSO\\jdoe",
    ]:
        assert markdown_text(plain) == plain
    assert markdown_text("c***o@mail.com has mail") == "`c***o@mail.com` has mail"
