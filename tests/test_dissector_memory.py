"""What dissectors hold between chunks is bounded in bytes, per session and for all sessions of a run together.

The per-session checks measure memory with tracemalloc (what a live session retains after being fed), so they do
not depend on the dissectors' own accounting; that accounting (``buffered_bytes``) is checked against what the
session really reaches (fuzz.amplify.deep_size). The run-wide budget is checked on a flood capture
(fuzz/floods.py ``dissector-state``) with a small budget.
"""

from __future__ import annotations

import base64
import gc
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from dissectors import events as ev
from dissectors import ntlmssp
from dissectors.imap import ImapSession
from dissectors.pop3 import Pop3Session
from dissectors.session import MAX_SESSION_BYTES, MailSession
from dissectors.smtp import SmtpSession
from fuzz import floods
from fuzz.amplify import deep_size
from passive.analysis.budget import DissectorBudget
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.detectors.credentials import MAX_PENDING_CHARACTERS
from passive.analysis.detectors.ntlm import MAX_EXCHANGE_STEPS
from passive.analysis.detectors.service import MAX_BANNER
from passive.analysis.detectors.session import MAX_SERVER_NAMES
from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from passive.analysis.software import BANNERS_REMEMBERED, guess_software, remembered_software
from passive.analysis.stats import MAX_HASH_BYTES, MAX_SECRET_CHARACTERS, RunStats
from passive.findings.model import MAX_FIELD_TEXT, FindingSet, FindingType

C, S = ev.Side.CLIENT, ev.Side.SERVER
LINE = b"A" * 65_000  # just under the 64 KiB line limit: kept whole by the line buffer
Script = list[tuple[ev.Side, bytes]]

SCENARIOS: dict[str, tuple[Callable[[], MailSession], Script, str]] = {
    "smtp 256-line reply": (
        SmtpSession,
        [(S, b"220 mx ESMTP\r\n"), (C, b"EHLO c\r\n"), *[(S, b"250-" + LINE + b"\r\n")] * 256],
        "reply_too_long",
    ),
    "smtp 128 pipelined commands": (
        SmtpSession,
        [(S, b"220 mx ESMTP\r\n"), *[(C, b"MAIL FROM:<" + LINE + b">\r\n")] * 128],
        "too_many_pending_commands",
    ),
    "pop3 256-line CAPA list": (
        Pop3Session,
        [(S, b"+OK ready\r\n"), (C, b"CAPA\r\n"), (S, b"+OK\r\n"), *[(S, b"X-" + LINE + b"\r\n")] * 256],
        "list_too_long",
    ),
    "imap 64 parts with literals": (
        ImapSession,
        [(S, b"* OK ready\r\n"), *[(C, b"a APPEND " + LINE + b" {4096+}\r\n" + b"L" * 4096)] * 64],
        "command_too_long",
    ),
    "imap 128 tags": (
        ImapSession,
        [(S, b"* OK ready\r\n"), *[(C, b"%d" % n + LINE + b" NOOP\r\n") for n in range(128)]],
        "too_many_pending_commands",
    ),
}


def _feed(session: MailSession, script: Script) -> list[ev.Event]:
    events: list[ev.Event] = []
    for frame, (side, data) in enumerate(script, start=1):
        events += session.receive(side, data, frame, float(frame))
    return events


def _retained(factory: Callable[[], MailSession], script: Script) -> tuple[int, MailSession, list[ev.Event]]:
    """Bytes a session retains once fed ``script`` (tracemalloc, the session alive, its events dropped)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        session = factory()
        events = _feed(session, script)
        codes = [e for e in events if isinstance(e, ev.Anomaly)]
        del events
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, session, codes
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_session_state_is_bounded_in_bytes(name: str) -> None:
    """Each held 4 to 16 MiB per session before; now at most a few hundred KiB, and the cap is reported."""
    factory, script, code = SCENARIOS[name]
    retained, session, anomalies = _retained(factory, script)
    assert retained < 1024 * 1024, f"{name}: {retained} bytes retained"
    assert code in {a.code for a in anomalies}
    held = session.buffered_bytes()
    assert held <= MAX_SESSION_BYTES
    assert deep_size(session) <= held + 64 * 1024  # the accounting covers what the session reaches


def test_shed_drops_partial_state_and_the_session_goes_on() -> None:
    session = SmtpSession()
    _feed(session, [(S, b"220 mx ESMTP\r\n"), (C, b"EHLO c\r\n"), *[(S, b"250-" + LINE + b"\r\n")] * 3])
    _feed(session, [(C, b"MAIL FROM:<" + LINE), (S, b"250-partial")])
    assert session.buffered_bytes() > 3 * 65_000
    [anomaly] = session.shed(9, 9.0)
    assert anomaly.code == "dissector_budget" and anomaly.evidence.frame == 9
    assert session.buffered_bytes() == 0
    tail = [(S, b" tail\r\n250 last\r\n"), (C, b">\r\nMAIL FROM:<a@b.example>\r\n"), (S, b"250 ok\r\n")]
    events = _feed(session, tail)
    [mail] = [e for e in events if isinstance(e, ev.MailFrom)]
    assert mail.address == "a@b.example" and mail.accepted  # the partial lines were skipped, not misread


class _Holder:
    def __init__(self, held: int) -> None:
        self.held = held
        self.shed_calls = 0

    def shed(self) -> int:
        self.shed_calls += 1
        self.held = 0
        return 0


def test_budget_evicts_the_largest_holders_first_down_to_three_quarters() -> None:
    stats = RunStats()
    budget = DissectorBudget(1000, stats)
    small, medium, large = _Holder(100), _Holder(300), _Holder(450)
    for holder in (small, medium, large):
        budget.update(holder, holder.held)
    assert budget.total == 850 and not stats.dissector_evictions
    extra = _Holder(200)
    budget.update(extra, 200)  # 1050 > 1000: evict until at most 750 remain
    assert (large.shed_calls, extra.shed_calls, medium.shed_calls, small.shed_calls) == (1, 0, 0, 0)
    assert budget.total == 600 and budget.peak <= 1000
    assert (stats.dissector_evictions, stats.dissector_bytes_evicted) == (1, 450)
    budget.forget(medium)
    assert budget.total == 300


def test_run_budget_caps_all_sessions_together(tmp_path: Path) -> None:
    """Six flows each holding what they can (about 500 KiB each) under a 1 MiB budget: evicted and counted."""
    path = tmp_path / "state.pcap"
    with path.open("wb") as stream:
        made = floods.dissector_state(floods.PcapWriter(stream), 0.05)
    limit = 1024 * 1024
    results = analyze_captures([str(path)], AnalysisOptions(max_dissector_bytes=limit))
    stats, budget = results.stats, results.analysis.budget
    assert sum(stats.sessions.values()) == made["flows"]
    assert stats.dissector_evictions > 0 and stats.dissector_bytes_evicted > 0
    assert stats.anomalies["dissector_budget"] == stats.dissector_evictions
    assert budget.peak <= limit and budget.total == 0  # every flow closed: nothing held
    counts = results.counts()
    assert counts["dissector_evictions"] == stats.dissector_evictions
    assert counts["dissector_bytes_evicted"] == stats.dissector_bytes_evicted


# ---- what the detectors keep ------------------------------------------------------------------------------------


def _analyzer() -> tuple[SessionAnalyzer, RunStats]:
    stats = RunStats()
    return SessionAnalyzer(SessionContext("smtp", "192.0.2.25:25", "198.51.100.7:4000"), FindingSet(), stats), stats


def test_ntlm_steps_of_an_exchange_that_never_ends_are_capped_and_counted() -> None:
    """NTLM blobs inside AUTH PLAIN restarts: no verdict ever closes the exchange the detector follows."""
    analyzer, stats = _analyzer()
    negotiate = ntlmssp.decode(ntlmssp.build_negotiate())
    evidence = ev.Evidence.of("AUTH PLAIN TlRMTVNTUAAB...", 1, 1.0)
    for _ in range(200):
        analyzer.feed([ev.SaslStep(C, evidence, "PLAIN", b"", negotiate, [])])
    exchange = analyzer.detectors[FindingType.NTLM_INFO].exchange  # type: ignore[attr-defined]
    assert len(exchange.evidence) == MAX_EXCHANGE_STEPS
    assert stats.anomalies["too_many_ntlm_steps"] == 200 - MAX_EXCHANGE_STEPS


def test_server_names_are_capped_and_counted() -> None:
    analyzer, stats = _analyzer()
    names = [f"mx{n}.example.com" for n in range(40)] + ["a" * 300 + ".example.com"]
    for name in names:
        analyzer.feed([ev.Capabilities(S, ev.Evidence.of("250-x", 1, 1.0), "ehlo", [], [], False, server_name=name)])
    assert len(analyzer.server_names) == MAX_SERVER_NAMES
    # The last, whose first label is longer than a DNS label can be, is no name at all: neither kept nor counted.
    assert stats.anomalies["too_many_server_names"] == len(names) - 1 - MAX_SERVER_NAMES


def test_credentials_awaiting_a_verdict_are_capped_in_characters() -> None:
    analyzer, _ = _analyzer()
    detector = analyzer.detectors[FindingType.CLEARTEXT_CREDENTIALS]
    for number in range(10):
        event = ev.Credentials(C, ev.Evidence.of("AUTH PLAIN ...", number, 1.0), "PLAIN", f"u{number}", "p" * 40_000)
        analyzer.feed([event])
        assert detector.pending_characters <= MAX_PENDING_CHARACTERS  # type: ignore[attr-defined]
    analyzer.close()
    users = {f.fields["user"] for f in analyzer.shared.findings if f.type == FindingType.CLEARTEXT_CREDENTIALS}
    assert users == {f"u{n}" for n in range(10)}  # recorded, without an outcome, not dropped


def test_credentials_awaiting_a_verdict_are_capped_with_the_base64_that_carried_them() -> None:
    """XOAUTH2 messages padded with a field that is no secret around a one-character token, pipelined with no verdict:
    what the credentials awaiting one hold (each keeps the base64 it came in, to scrub it from outputs) stays within
    the characters counted, not 64 KiB of base64 a credential."""
    analyzer, _ = _analyzer()
    session = SmtpSession()
    analyzer.feed(session.receive(S, b"220 mx.example.com ESMTP\r\n", 1, 1.0))
    for number in range(32):
        message = b"user=u%d\x01auth=Bearer t\x01pad=%s\x01\x01" % (number, b"A" * 48_000)
        analyzer.feed(session.receive(C, b"AUTH XOAUTH2 " + base64.b64encode(message) + b"\r\n", 2 + number, 2.0))
    detector = analyzer.detectors[FindingType.CLEARTEXT_CREDENTIALS]
    assert detector.pending  # type: ignore[attr-defined]
    # One credential of 64 KiB of base64 may be held alone past the bound (it is never dropped before its verdict).
    assert deep_size(detector.pending) < 2 * MAX_PENDING_CHARACTERS + 16 * 1024  # type: ignore[attr-defined]
    analyzer.close()
    users = {f.fields["user"] for f in analyzer.shared.findings if f.type == FindingType.CLEARTEXT_CREDENTIALS}
    assert users == {f"u{n}" for n in range(32)}  # recorded, without an outcome, not dropped


def test_hash_lines_and_secrets_are_capped_in_bytes() -> None:
    stats = RunStats()
    line = "user::DOMAIN:" + "ab" * 24_000
    for _ in range(2000):
        stats.add_hash(line)
        stats.add_secret("s" * 40_000 + str(len(stats.secrets)))
    assert sum(map(len, stats.hashes)) <= MAX_HASH_BYTES and stats.hashes_dropped == 2000 - len(stats.hashes)
    assert sum(map(len, stats.secrets)) <= MAX_SECRET_CHARACTERS
    stats.hashes.clear()  # watch counts the lines and lets them go: the cap applies to what is held
    stats.add_hash(line)
    assert stats.hashes == [line]


def test_findings_keep_a_bounded_banner_and_no_overlong_mechanism_name() -> None:
    analyzer, stats = _analyzer()
    banner = "mx.example.com ESMTP Postfix " + "B" * 60_000
    analyzer.feed([ev.Greeting(S, ev.Evidence.of("220 " + banner, 1, 1.0), banner)])
    mechanisms = ["PLAIN", "M" * 60_000]
    analyzer.feed([ev.Capabilities(S, ev.Evidence.of("250 AUTH", 2, 2.0), "ehlo", [], mechanisms, False)])
    service = analyzer.shared.findings.find(FindingType.MAIL_SERVICE, "192.0.2.25:25")
    methods = analyzer.shared.findings.find(FindingType.AUTH_METHODS, "192.0.2.25:25")
    assert service is not None and methods is not None
    assert len(service.fields["banner"]) == MAX_BANNER and service.fields["software"] == "Postfix"
    assert methods.fields["mechanisms"] == ["PLAIN"] and stats.anomalies["mechanism_name_too_long"] == 1


def test_remembered_banners_hold_under_a_megabyte_whatever_their_characters() -> None:
    """Servers greeting with banners of characters beyond U+FFFF (four bytes each, as many as MAX_BANNER, where the
    service detector cuts them), each a new one: what the cache of banners' software keeps stays under the megabyte
    its limit is set for."""
    remembered_software.cache_clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for server in range(2 * BANNERS_REMEMBERED):
            assert guess_software(f"{server:06d} " + "\U0001f4e8" * (MAX_BANNER - 7)) is None
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        remembered_software.cache_clear()
    assert 0 <= kept < 1024 * 1024
    assert guess_software("220 mx.example.com ESMTP Postfix (Debian/GNU)") == "Postfix"  # remembered or not, named


def test_findings_cut_long_text_values() -> None:
    """Made-up users with 48 KB passwords: each finding used to keep the whole password (1.1 GiB for 20 000)."""
    analyzer, _ = _analyzer()
    long_user, password = "u" * 10_000, "p" * 48_000
    event = ev.Credentials(C, ev.Evidence.of("AUTH PLAIN ...", 1, 1.0), "PLAIN", long_user, password, "z" * 9_000)
    analyzer.feed([event, ev.AuthResult(S, ev.Evidence.of("535 no", 2, 2.0), "PLAIN", False, "535 no")])
    [finding] = [f for f in analyzer.shared.findings if f.type == FindingType.CLEARTEXT_CREDENTIALS]
    assert finding.key == ("PLAIN", long_user[:MAX_FIELD_TEXT])
    assert [len(finding.fields[name]) for name in ("user", "password", "authzid")] == [MAX_FIELD_TEXT] * 3
    assert finding.fields["outcome"] == "failure" and finding.details[0]["outcome"] == "failure"


def test_closed_sessions_leave_no_reference_cycles_to_the_garbage_collector() -> None:
    """Every session of the shipped captures, analyzed with the cyclic collector off: what a closed session and its
    detectors held is freed by reference counting, so the collector finds no session or detector left in a cycle."""
    captures = sorted(str(path) for path in (Path(__file__).resolve().parents[1] / "pcaps").glob("*.pcap"))
    assert captures
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        results = analyze_captures(captures, AnalysisOptions(jobs=1))
        gc.collect()
        cyclic = [type(item).__name__ for item in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert sum(results.stats.sessions.values()) >= len(captures)  # sessions were opened and closed
    assert "SessionAnalyzer" not in cyclic
    assert not [name for name in cyclic if name.endswith("Detector")]
