"""Hostile input, in short: every fuzz harness on its seeds and mutations of them, crashes found by the long
campaign as regressions, corrupted captures through the command line, scaled-down resource floods, and output
(terminal, JSON, HTML) that keeps hostile strings inert. The long runs are fuzz/run.py, fuzz/corrupt.py and
fuzz/floods.py (docs/hardening.md)."""

from __future__ import annotations

import base64
import gzip
import html.parser
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from dissectors import events as ev
from dissectors import ntlmssp
from dissectors.registry import MAIL_PORTS
from fuzz import corrupt, floods, seeds
from fuzz.harnesses import HARNESSES, Harness, run_measured
from passive.analysis.classify import mail_capture_options
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.detectors.credentials import MAX_PENDING_CREDENTIALS
from passive.analysis.stats import RunStats
from passive.capture import CaptureCounters, CaptureError, Reassembler, analyze_file
from passive.cli.tables import render_tables
from passive.core.text import printable
from passive.core.times import iso_time
from passive.findings.model import EvidenceRecord, FindingSet, FindingType, Severity
from passive.results.jsonio import dumps, write_json, write_jsonl
from passive.results.records import finding_record, summary_record
from tests.corpus import require_corpus
from tests.helpers_capture import Recorder, conversation_segments, ethernet_frames, pcap_bytes, write

REPO = Path(__file__).resolve().parents[1]
REGRESSIONS = Path(__file__).parent / "regressions"
MUTATIONS_PER_HARNESS = 500
SEEDS_PER_HARNESS = 60


# ---- fuzz harnesses, briefly ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("seeds")
    seeds.build(directory, {"capture": max(h.max_len for h in HARNESSES.values())})
    return directory


def _mutate(data: bytes, rng: random.Random, other: bytes) -> bytes:
    """One of libFuzzer's basic mutations: bit flip, byte set, insert, erase, duplicate, truncate, splice."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        position = rng.randrange(len(buffer) + 1)
        if choice == 0 and buffer:
            buffer[min(position, len(buffer) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1 and buffer:
            buffer[min(position, len(buffer) - 1)] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x0A, 0x0D, rng.randrange(256)))
        elif choice == 2:
            buffer[position:position] = rng.randbytes(rng.randint(1, 16))
        elif choice == 3:
            del buffer[position : position + rng.randint(1, 64)]
        elif choice == 4:
            buffer[position:position] = buffer[position : position + rng.randint(1, 64)]
        elif choice == 5:
            del buffer[position:]
        else:
            cut = rng.randrange(len(other) + 1)
            buffer[position:] = other[cut:]
    return bytes(buffer)


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_harness_survives_seeds_and_mutations(name: str, seed_sets: Path) -> None:
    harness = HARNESSES[name]
    rng = random.Random(f"leakscope-{name}")
    files = sorted((seed_sets / harness.seeds).iterdir())
    pool = [f.read_bytes()[: harness.max_len] for f in files]
    rng.shuffle(pool)
    pool = pool[:SEEDS_PER_HARNESS] or [b""]
    for data in pool:
        assert not run_measured(harness, data)
    for _ in range(MUTATIONS_PER_HARNESS):
        data = _mutate(rng.choice(pool), rng, rng.choice(pool))[: harness.max_len]
        assert not run_measured(harness, data)
    assert len(pool) >= 1


def test_crafted_captures_cost_what_the_caps_allow() -> None:
    """Small gzip captures expanding to a 48 MiB record and a 16 MiB pcapng packet (fuzz/seeds.py): neither costs
    MAX_RSS_GROWTH_MIB at its peak. Before the record cap held whatever the header claimed, the first cost about
    110 MiB. And the check itself: an input that keeps 96 MiB is reported."""
    for data in seeds.crafted_captures():
        assert run_measured(HARNESSES["capture"], data) == []
    held: list[bytes] = []
    greedy = Harness("greedy", lambda data: held.append(b"\x01" * (96 << 20)), 16, "none")
    problems = run_measured(greedy, b"x")
    assert problems and problems[0].startswith("MemoryGrowth: peak RSS grew by")


def test_a_pcapng_block_of_the_largest_size_costs_what_the_caps_allow() -> None:
    """A fuzzed gzip pcapng whose second block is just under MAX_BLOCK: the built-in reader read it whole into a
    buffer it then grew by it, 66 MiB at the peak; read in pieces joined once, it stays under MAX_RSS_GROWTH_MIB
    (the run before settles what the first run of a process allocates)."""
    data = (REGRESSIONS / "capture-pcapng-block-read-whole.pcapng.gz").read_bytes()
    run_measured(HARNESSES["capture"], data)
    assert run_measured(HARNESSES["capture"], data) == []


def test_campaign_runner_reports_iterations_and_findings(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "fuzz/run.py", "--harness", "ntlmssp", "--iterations", "3000", "--workdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["harnesses"][0]["iterations"] >= 3000
    assert report["total_findings"] == 0


@pytest.mark.parametrize("path", sorted(REGRESSIONS.iterdir()), ids=lambda p: p.name)
def test_regression_input(path: Path) -> None:
    """Inputs the campaign found crashing, named after their harness; each must now run clean."""
    harness = HARNESSES[path.name.split("-", 1)[0]]
    harness.run(path.read_bytes())


# ---- what those findings were, pinned down --------------------------------------------------------------------------


def test_damaged_record_with_negative_time_is_salvaged_by_libpcap_path() -> None:
    counters = CaptureCounters()
    path = REGRESSIONS / "capture-negative-timestamp-salvage.pcap"
    analyze_file(path, lambda flow: None, mail_capture_options(backend="auto"), counters=counters)
    assert counters.anomalies >= 1
    assert any("corrupt capture" in w for w in counters.warnings)


def test_frame_cut_after_tcp_header_delivers_a_gap_not_an_empty_chunk() -> None:
    recorder = Recorder()
    reassembler = Reassembler(recorder, server_ports=MAIL_PORTS)
    client, server = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
    reassembler.process((client, server, 40000, 25, 100, 0, 0x02, b"", 0, 0, 65535, 0), 1, 1.0)
    # 60 bytes, none captured:
    reassembler.process((client, server, 40000, 25, 101, 0, 0x18, b"", 60, 0, 65535, 0), 2, 1.1)
    reassembler.process((client, server, 40000, 25, 161, 0, 0x18, b"QUIT\r\n", 6, 0, 65535, 0), 3, 1.2)
    reassembler.flush()
    record = recorder.flows[0]
    assert all(chunk.data for chunk in record.chunks[0])
    assert record.gaps and record.gaps[0][1] == 60


def test_capture_clock_past_year_9999_gives_null_times(tmp_path: Path) -> None:
    """A pcapng interface with if_tsresol 10^0 and a 64-bit stamp: a year no datetime holds, so times are null."""
    path = REGRESSIONS / "capture-timestamp-year-45995525.pcapng"
    assert iso_time(1.45e15) is None and iso_time(-1e12) is None and iso_time(0.0) == "1970-01-01T00:00:00.000000Z"
    for output_format in ("table", "jsonl", "json"):
        done = subprocess.run(["leakscope", "analyze", "--format", output_format, path], capture_output=True)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
    findings = json.loads(done.stdout)["findings"]  # the last run's, --format json
    assert findings and all(f["first_seen"] is None and f["evidence"][0]["time"] is None for f in findings)
    report = subprocess.run(["leakscope", "report", path, "-o", tmp_path / "r.html"], capture_output=True)
    assert report.returncode == 0 and b"Traceback" not in report.stderr, report.stderr


def test_damaged_deflate_stream_is_a_capture_error_or_a_truncation(tmp_path: Path) -> None:
    """zlib.error is no OSError: a gzip capture whose deflate stream breaks in its first bytes raised it from the
    sniffer (found by the campaign once crafted gzip seeds were added), and one breaking later from the reader."""
    with pytest.raises(CaptureError, match="damaged gzip stream"):
        analyze_file(REGRESSIONS / "capture-damaged-deflate-block-at-sniff.pcap.gz", lambda flow: None)
    session = pcap_bytes(ethernet_frames(conversation_segments([(False, b"x" * 1400)] * 1500)))
    stored = bytearray(gzip.compress(session, compresslevel=0, mtime=0))  # stored blocks of 65 535 bytes
    stored[10 + 20 * (5 + 65535) + 3] ^= 0xFF  # the length check (NLEN) of the block past the reader's first 1 MiB
    path = write(tmp_path / "damaged.pcap.gz", bytes(stored))
    counters = analyze_file(path, lambda flow: None, mail_capture_options())
    assert counters.packets_read > 0 and any(w.startswith("truncated capture") for w in counters.warnings)


def test_capture_name_that_is_not_utf8(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/mail-\xff\x1b[31m.pcap"
    shutil.copy(REPO / "pcaps" / "smtp-auth-plain-swaks.pcap", name)
    for output_format in ("table", "jsonl"):
        done = subprocess.run(["leakscope", "analyze", "--format", output_format, name], capture_output=True)
        assert done.returncode == 0, done.stderr
        assert b"Traceback" not in done.stderr
        assert b"\x1b[31m" not in done.stdout
        done.stdout.decode("utf-8")
    record = json.loads(done.stdout.splitlines()[0])
    assert record["evidence"][0]["file"].endswith("mail-\udcff\x1b[31m.pcap")


def test_repeated_av_pairs_are_one_anomaly_per_id() -> None:
    message = ntlmssp.decode(floods.ntlm_challenge_with_pairs(10_000))
    codes = Counter(a.code for a in message.anomalies)
    assert codes["duplicate_av_pair"] == 5  # ids 1 to 5 repeat; unknown ids are not duplicates
    assert codes["too_many_av_pairs"] == 1
    assert len(message.target_info or []) == ntlmssp.MAX_AV_PAIRS


def test_credentials_without_verdict_are_recorded_not_hoarded() -> None:
    findings, stats = FindingSet(), RunStats()
    analyzer = SessionAnalyzer(SessionContext("smtp", "192.0.2.25:25", "198.51.100.7:4000"), findings, stats)
    for number in range(100):
        evidence = ev.Evidence.of("AUTH PLAIN ...", number, 1.0 + number)
        analyzer.feed([ev.Credentials(ev.Side.CLIENT, evidence, "PLAIN", f"user{number}", "pw")])
    assert len(analyzer.detectors[FindingType.CLEARTEXT_CREDENTIALS].pending) <= MAX_PENDING_CREDENTIALS
    analyzer.close()
    users = {f.fields["user"] for f in findings if f.type == FindingType.CLEARTEXT_CREDENTIALS}
    assert users == {f"user{n}" for n in range(100)}


def test_finding_set_is_capped_and_counts_what_it_drops() -> None:
    findings, stats = FindingSet(max_findings=5), RunStats()
    analyzer = SessionAnalyzer(SessionContext("smtp", "192.0.2.25:25", "198.51.100.7:4000"), findings, stats)
    for number in range(20):
        evidence = ev.Evidence.of("AUTH PLAIN ...", number, 1.0)
        analyzer.feed([ev.Credentials(ev.Side.CLIENT, evidence, "PLAIN", f"user{number}", "pw")])
    analyzer.close()
    assert len(findings) == 5
    assert stats.to_dict()["findings_dropped"] == findings.dropped == 16  # 20 users + mail-service, 5 kept


# ---- corrupted captures through the command line --------------------------------------------------------------------

CORRUPTED = [
    "pcaps/smtp-ntlm-success-curl.pcap",
    "pcaps/imap-hostile-names-ntlm-curl.pcap",
    "pcaps/pop3-ntlm-success-fetchmail.pcap",
    "corpus:zeek/smtp.pcap",
    "corpus:chrissanders/mail_sender_client_1.pcapng",
    "corpus:ndpi/imap-starttls.pcap",
]


@pytest.mark.parametrize("capture", CORRUPTED)
def test_corrupted_variants_end_cleanly(capture: str, tmp_path: Path) -> None:
    if shutil.which("editcap") is None:
        pytest.skip("editcap (wireshark-common) is not installed")
    corpus_name = capture.removeprefix("corpus:")
    path = require_corpus("pcaps", corpus_name) if corpus_name != capture else REPO / capture
    variants = corrupt.make_variants(path, 6, tmp_path, random.Random(capture))
    for all_ports in (False, True):
        clean, outcome, stderr = corrupt.analyze(variants, all_ports)
        assert clean, stderr
        assert outcome.variants == 6


# ---- floods, scaled down --------------------------------------------------------------------------------------------

FLOOD_SCALES = {
    "long-line": 0.05,
    "av-pairs": 0.02,
    "base64-line": 0.1,
    "sasl-loop": 0.12,
    "syn-flood": 1.0,  # 10 200 SYNs at any scale
    "huge-record": 0.2,  # a 200 MB record: 400 MiB before the record cap
    "jumbo-records": 0.4,  # 819 records of 256 KiB: 440 MiB before batches were sized in bytes
    "jumbo-pcapng": 0.25,  # 4 blocks of 16 MiB
    "dissector-state": 0.1,
    "long-banners": 0.1,
    "long-passwords": 0.05,
    "relays": 1.0,  # 16 000 relay attempts: past the ledger's kept servers and attempts (4 s; hours when quadratic)
}


@pytest.mark.parametrize("name", sorted(FLOOD_SCALES))
def test_flood_stays_bounded_and_counted(name: str, tmp_path: Path) -> None:
    result = floods.run_flood(floods.FLOODS[name], FLOOD_SCALES[name], tmp_path)
    assert result.exit_status == 0
    assert not result.problems, result.problems
    assert result.peak_rss_mib <= floods.PEAK_RSS_LIMIT_MIB


def test_half_open_flood_counts_every_eviction(tmp_path: Path) -> None:
    result = floods.run_flood(floods.FLOODS["half-open"], 0.05, tmp_path)
    assert not result.problems, result.problems
    assert result.peak_rss_mib <= floods.PEAK_RSS_LIMIT_MIB
    assert result.counters["flows"] == 50_000
    assert result.counters["flows_evicted"] + result.counters["flows_flushed"] == 50_000
    assert result.counters["flows_evicted"] >= 40_000


# ---- output safety --------------------------------------------------------------------------------------------------

HOSTILE = [
    "[bold red]MARKUP[/bold red]",
    "[link=https://198.51.100.66/]click[/link]",
    "\x1b[2J\x1b[31mred\x1b[0m",
    "\x1b]8;;https://198.51.100.66/\x1b\\link\x1b]8;;\x1b\\",
    "\x1b]52;c;Y3VybCBldmlsfHNo\x07",
    "\x9b31mC1-CSI",
    "admin\u202egnp.exe",
    "\u2066isolate\u2069",
    "line\u2028separator\x85next",
    "lone\udcffsurrogate",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "</style><style>*{display:none}",
    "{{ 7*7 }}{% raw %}",
]


def _hostile_findings(strings: list[str]) -> list[dict]:
    findings = FindingSet()
    for number, text in enumerate(strings):
        server = f"192.0.2.{number + 1}:25"
        for kind in FindingType:
            finding = findings.get(kind, "smtp", server, Severity.HIGH, (text,) if kind.value.startswith("c") else ())
            finding.seen(1_700_000_000.0 + number, f"198.51.100.1:{40000 + number}")
            for name in ("banner", "software", "user", "password", "netbios_computer", "dns_domain", "dns_tree"):
                finding.fields[name] = text
            finding.fields.update(mechanism="PLAIN", mail_from=text, rcpt_to=text, reply=f"250 {text}")
            finding.fields.update(mechanisms=[text, "PLAIN"], users=[text], workstations=[text], accepted=True)
            finding.add_detail({"client": "198.51.100.1:40000", "user": text, "outcome": "success"})
            finding.add_evidence(EvidenceRecord(f"/captures/{text}.pcap", 7, 1_700_000_000.0, "server", text))
    return [finding_record(f, show_secrets=True) for f in findings]


def test_terminal_tables_keep_hostile_strings_inert() -> None:
    records = _hostile_findings(HOSTILE)
    stream = io.StringIO()
    render_tables(Console(file=stream, force_terminal=True, color_system="truecolor", width=160), records, {})
    shown = stream.getvalue()
    text = re.sub("\x1b\\[[0-9;]*m", "", shown)  # rich's own colours are the only escapes allowed
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]", text)
    assert "[bold red]MARKUP[/bold red]" in text  # markup is shown, not interpreted
    assert "\\x1b]8;;" in text and "\\u202e" in text and "\\udcff" in text
    shown.encode("utf-8")


def test_json_lines_and_document_are_valid_utf8_with_controls_escaped() -> None:
    records = _hostile_findings(HOSTILE)
    summary = summary_record({"note": "\x1b[31m\x85\udcff"}, [])
    lines, document = io.StringIO(), io.StringIO()
    write_jsonl(lines, [*records, summary])
    write_json(document, records, summary)
    raw_unsafe = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
    for text in (lines.getvalue(), document.getvalue()):
        assert not raw_unsafe.search(text)
        text.encode("utf-8")
    parsed = [json.loads(line) for line in lines.getvalue().split("\n") if line]
    assert parsed[:-1] == records  # escaping changes how strings are written, never what they say
    assert json.loads(document.getvalue())["findings"] == records
    assert dumps({"s": "\x7f\u2029"}) == '{"s": "\\u007f\\u2029"}'
    assert printable("a\udcffb") == "a\\udcffb"


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.handlers: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append(name)
            if name in ("href", "src") and value and value.strip().lower().startswith("javascript:"):
                self.links.append(value)


def _html_structure(strings: list[str]) -> _Tags:
    from passive.results.report import build_report, render_html

    page = render_html(build_report(_hostile_findings(strings), redact=False))
    parser = _Tags()
    parser.feed(page)
    return parser


def test_html_report_keeps_hostile_strings_inert() -> None:
    pytest.importorskip("passive.results.report")
    hostile = _html_structure(HOSTILE)
    benign = _html_structure([f"benign-{n}" for n in range(len(HOSTILE))])
    assert hostile.tags == benign.tags  # the same elements as for plain names: nothing injected
    assert not hostile.handlers
    assert not hostile.links


def test_hostile_ntlm_names_in_a_capture_reach_json_escaped(tmp_path: Path) -> None:
    """An end-to-end check: a CHALLENGE naming itself with escapes and C1 controls, through analyze."""
    challenge = ntlmssp.build_challenge(
        b"\x01" * 8,
        target_info=[("netbios_computer", "EVIL\x1b]0;pwned\x07\x9b2J\u202e")],
        version=ntlmssp.Version(10, 0, 20348),
    )
    turns = [
        (True, b"220 mx.example.com ESMTP\r\n"),
        (False, b"AUTH NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAA=\r\n"),
        (True, b"334 " + base64.b64encode(challenge) + b"\r\n"),
        (False, b"*\r\n"),
        (True, b"501 cancelled\r\n"),
    ]
    path = write(tmp_path / "hostile.pcap", pcap_bytes(ethernet_frames(conversation_segments(turns))))
    done = subprocess.run(["leakscope", "analyze", "--format", "jsonl", str(path)], capture_output=True)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode("utf-8")
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text
    ntlm = next(json.loads(line) for line in text.splitlines() if '"ntlm-info"' in line)
    assert ntlm["netbios_computer"] == "EVIL\x1b]0;pwned\x07\x9b2J\u202e"
    table = subprocess.run(["leakscope", "analyze", str(path)], capture_output=True)
    assert b"\x1b]0;" not in table.stdout and b"\xc2\x9b" not in table.stdout
