"""Fuzz harnesses: each takes one input (bytes) and raises only when leakscope misbehaves.

The only exceptions a harness swallows are the documented ones: :class:`~dissectors.ntlmssp.DecodeError` from the
NTLMSSP decoder and :class:`~passive.core.errors.CaptureError` from the capture readers. Anything else, including a
failed invariant (an ``AssertionError``), is a finding. The same functions serve atheris (``fuzz/worker.py``) and the
short CI runs (``tests/test_hardening.py``).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import atheris
from rich.console import Console

from dissectors import events as ev
from dissectors import ntlmssp, sasl
from dissectors.imap import ImapSession
from dissectors.linebuffer import MAX_LINE
from dissectors.pop3 import Pop3Session
from dissectors.registry import MAIL_PORTS
from dissectors.session import MAX_SESSION_BYTES, MailSession
from dissectors.smtp import SmtpSession
from fuzz import canary
from fuzz.amplify import deep_size, feed_shape, shape_from_bytes
from fuzz.conversation import CLIENT, parse
from fuzz.results import findings_file, store_record
from passive.analysis.classify import classify_mail
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.pipeline import Analysis, AnalysisOptions, analyze_captures
from passive.analysis.stats import RunStats
from passive.capture import (
    CaptureCounters,
    Chunk,
    CloseReason,
    Direction,
    Flow,
    Reassembler,
    linklayer,
)
from passive.capture.policy import POLICIES
from passive.cli.tables import cell as _cell
from passive.cli.tables import render_tables
from passive.core.text import UNSAFE_BEYOND_C0
from passive.findings.model import EvidenceRecord, FindingSet, FindingType, Severity
from passive.results.jsonio import dumps, write_jsonl
from passive.results.records import event_record, finding_record, summary_record
from passive.results.redaction import Redactor

# Anomaly codes the NTLMSSP decoder documents (README); any other code is a finding.
NTLM_ANOMALY_CODES = frozenset(
    [
        "truncated_header",
        "truncated_version",
        "unknown_message_type",
        "field_beyond_end",
        "field_in_header",
        "overlapping_fields",
        "length_mismatch",
        "bad_utf16",
        "unterminated_av_list",
        "av_pair_beyond_end",
        "bad_av_length",
        "duplicate_av_pair",
        "data_after_eol",
        "too_many_av_pairs",
        "timestamp_out_of_range",
        "unusual_ntlm_revision",
        "bad_nt_response",
        "lm_only_response",
        "truncated_ntlmv2_blob",
        "bad_ntlmv2_blob",
    ]
)
SESSION_TYPES: dict[str, type[MailSession]] = {"smtp": SmtpSession, "pop3": Pop3Session, "imap": ImapSession}
# What may reach a terminal besides text: rich's own colour (SGR) sequences, nothing else.
_SGR = re.compile("\x1b\\[[0-9;]*m")
# Every character printable() escapes (controls; bidi, zero-width, tag and other format characters; separators;
# variation selectors and fillers), but the newline of the tables' own layout.
_UNSAFE_ON_TERMINAL = re.compile(f"[\x00-\x09\x0b-\x1f{UNSAFE_BEYOND_C0}]")
# Raw characters that must never appear in JSON text: every control character is escaped (docs/schema.md).
_UNESCAPED_IN_JSON = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# A session's own objects (buffers, trackers, dicts) besides what buffered_bytes counts: about 2 KiB measured.
HELD_SLACK = 64 * 1024
# An amplified line may take this long, plus this much per byte: linear dissectors take under 100 ns a byte (a
# hundred times less, even instrumented); the quadratic expressions they replaced took 300 us a byte at 64 KiB.
AMPLIFY_SECONDS = 0.5
AMPLIFY_SECONDS_PER_BYTE = 10e-6
_SCRATCH = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())


def _json_round_trip(record: dict) -> None:
    """A record as the command line writes it: valid UTF-8, parseable, no raw control characters."""
    text = dumps(record)
    assert not _UNESCAPED_IN_JSON.search(text), f"raw control character in JSON: {text[:200]!r}"
    json.loads(text.encode("utf-8").decode("utf-8"))


# ---- NTLMSSP ------------------------------------------------------------------------------------------------------


def ntlmssp_decoder(data: bytes) -> None:
    try:
        message = ntlmssp.decode(data)
    except ntlmssp.DecodeError:
        assert not data.startswith(ntlmssp.SIGNATURE), "DecodeError for a message that carries the signature"
        return
    fields = message.to_dict()
    for anomaly in fields["anomalies"]:
        assert anomaly["code"] in NTLM_ANOMALY_CODES, f"undocumented anomaly code {anomaly['code']}"
    assert len(fields.get("av_pairs") or ()) <= ntlmssp.MAX_AV_PAIRS
    _json_round_trip(fields)


# ---- SASL ---------------------------------------------------------------------------------------------------------


def sasl_tracker(data: bytes) -> None:
    protocol, records = parse(data)
    tracker = sasl.AuthTracker(protocol)
    for record in records:
        if record.gap:
            continue
        sasl.decode_base64(record.data)
        for line in record.data.decode("utf-8", errors="replace").split("\n"):
            results = tracker.client_line(line) if record.side == CLIENT else tracker.server_line(line)
            for result in results:
                if isinstance(result, sasl.SaslBlob) and result.ntlm is not None:
                    result.ntlm.to_dict()


def base64_decoder(data: bytes) -> None:
    result = sasl.decode_base64(data)
    text_result = sasl.decode_base64(data.decode("latin-1"))
    assert result == text_result, "str and bytes forms decode differently"
    if result.data is not None:
        assert len(data) <= sasl.MAX_BLOB_TEXT


# ---- mail sessions --------------------------------------------------------------------------------------------------


def _session_harness(protocol: str) -> Callable[[bytes], None]:
    def harness(data: bytes) -> None:
        _protocol, records = parse(data)
        run_session(protocol, records)

    harness.__name__ = f"{protocol}_session"
    return harness


def run_session(protocol: str, records: list) -> list[dict]:
    """Feed a conversation to a session dissector and the detectors; return the finding records."""
    session = SESSION_TYPES[protocol](partial=bool(records) and records[0].side == CLIENT and len(records) % 2 == 1)
    findings, stats = FindingSet(), RunStats()
    analyzer = SessionAnalyzer(SessionContext(protocol, "192.0.2.1:25", "198.51.100.2:40000", "fuzz"), findings, stats)
    for frame, record in enumerate(records, start=1):
        timestamp = 1_700_000_000.0 + frame / 4
        side = ev.Side.CLIENT if record.side == CLIENT else ev.Side.SERVER
        if record.gap:
            events = session.gap(side, record.gap, frame, timestamp)
        else:
            events = session.receive(side, record.data, frame, timestamp)
        for event in events:
            assert len(event.evidence.line) <= ev.MAX_EVIDENCE_TEXT
            _json_round_trip(event_record(event, Redactor()))
        analyzer.feed(events)
        _check_held(session)
    analyzer.feed(session.close())
    analyzer.close()
    records_out = [finding_record(finding) for finding in findings]
    for record in records_out:
        _json_round_trip(record)
    _json_round_trip(summary_record(stats.to_dict(), findings))
    return records_out


def _check_held(session: MailSession) -> None:
    """What a session says it holds is bounded, and is what it really holds (give or take its own objects)."""
    held = session.buffered_bytes()
    assert held <= MAX_SESSION_BYTES, f"session holds {held} bytes"
    real = deep_size(session)
    assert real <= held + HELD_SLACK, f"session holds {real} bytes but counts {held}"


def amplified_line(data: bytes) -> None:
    """A line of up to 64 KiB built from a few repeated fragments (fuzz/amplify.py) through a session dissector
    and its detectors: besides exceptions, time per byte and the bytes the session holds are bounded."""
    shape, size = shape_from_bytes(data)
    started = time.perf_counter()
    session, findings = feed_shape(shape, size, MAX_LINE)
    elapsed = time.perf_counter() - started
    assert elapsed < AMPLIFY_SECONDS + size * AMPLIFY_SECONDS_PER_BYTE, f"{elapsed:.2f} s for {shape} at {size} B"
    _check_held(session)
    for finding in findings:
        _json_round_trip(finding_record(finding))


def canary_login(data: bytes) -> None:
    """Whatever a client sends first, refused by the server, does not hide the login that follows (fuzz/canary.py)."""
    protocol, _script = canary.conversation(data)
    assert canary.canary_seen(data), f"{protocol}: the login after the refused bytes was not seen"


smtp_session = _session_harness("smtp")
pop3_session = _session_harness("pop3")
imap_session = _session_harness("imap")


# ---- capture readers and reassembly ---------------------------------------------------------------------------------


def capture_file(data: bytes) -> None:
    """The bytes as a capture file, through the pipeline's entry point: a capture reader (libpcap or built-in) and
    the whole analysis."""
    # One reader per input, picked by its length, so each run costs one analysis: libpcap for a quarter of them.
    backend = "auto" if len(data) % 4 == 0 else "python"
    options = AnalysisOptions(all_ports=len(data) % 8 >= 4, keep_events=True, backend=backend, max_flows=8)
    with tempfile.NamedTemporaryFile(dir=_SCRATCH, suffix=".pcap") as handle:
        handle.write(data)
        handle.flush()
        results = analyze_captures([handle.name], options)
    for _path, reason in results.failed:
        assert "\n" not in reason, "CaptureError message spans several lines"
    counters = results.counters
    assert counters.packets_matched == (
        counters.segments + counters.ignored + counters.decode_errors + counters.ip_fragments
    ), "a matched frame was neither reassembled, ignored, a decode error nor a fragment"
    redactor = Redactor(secrets=results.stats.secrets)
    for finding in results.findings:
        _json_round_trip(finding_record(finding, redactor=redactor))
    for session in results.analysis.sessions:
        for event in session.events:
            _json_round_trip(event_record(event, redactor))


@dataclass
class _StreamCheck:
    """Handler that checks what reassembly promises: per direction, pieces in order, never overlapping."""

    analysis_handler: object
    ends: list[int]
    closed: bool = False

    def on_open(self, flow: Flow) -> None:
        self.analysis_handler.on_open(flow)  # type: ignore[attr-defined]

    def on_data(self, flow: Flow, direction: Direction, chunk: Chunk) -> None:
        assert not self.closed, "data after close"
        assert chunk.data, "empty chunk delivered"
        end = self.ends[direction]
        assert chunk.offset >= end, f"chunk at {chunk.offset} overlaps data up to {end}"
        self.ends[direction] = chunk.offset + len(chunk.data)
        self.analysis_handler.on_data(flow, direction, chunk)  # type: ignore[attr-defined]

    def on_gap(self, flow: Flow, direction: Direction, missing: int, frame: int, ts: float) -> None:
        assert not self.closed, "gap after close"
        assert missing > 0, f"gap of {missing} bytes"
        self.analysis_handler.on_gap(flow, direction, missing, frame, ts)  # type: ignore[attr-defined]

    def on_close(self, flow: Flow, reason: CloseReason) -> None:
        assert not self.closed, "closed twice"
        self.closed = True
        self.analysis_handler.on_close(flow, reason)  # type: ignore[attr-defined]


_POLICIES = sorted(POLICIES)


def _check_buffers(reassembler: Reassembler) -> None:
    """Out-of-order buffers as the policies need them: sorted, disjoint, counted, their origins' counts exact."""
    total = 0
    for flow in reassembler._flows.values():
        for half in flow._halves or ():
            pieces, counts = half.pending, {}
            assert all(a[0] + len(a[1]) <= b[0] for a, b in itertools.pairwise(pieces)), "buffered pieces overlap"
            assert all(piece[1] and piece[0] > half.next_rel for piece in pieces), "empty or deliverable piece held"
            assert half.pending_bytes == sum(len(piece[1]) for piece in pieces), "buffered bytes miscounted"
            for piece in pieces:
                counts[id(piece[4])] = counts.get(id(piece[4]), 0) + 1
                assert piece[4][0] <= piece[0] and piece[0] + len(piece[1]) <= piece[4][1], "piece outside its origin"
            assert all(piece[4][2] == counts[id(piece[4])] for piece in pieces), "origin piece count wrong"
            assert all(origin[2] and origin[1] == end for end, origin in half.by_end.items()), "stale coalescing entry"
            total += half.pending_bytes
    assert total == reassembler._pending_total, "buffered bytes over all flows miscounted"


_ADDRESSES = (b"\xc0\x00\x02\x01", b"\xc6\x33\x64\x02", b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01")
_PORTS = (25, 110, 143, 40000, 40001, 587)


def reassembly(data: bytes) -> None:
    """Segments built from the input (endpoints, flags, sequence jumps, payloads) through the reassembler."""
    provider = atheris.FuzzedDataProvider(data)
    all_ports = provider.ConsumeBool()
    policy = _POLICIES[provider.ConsumeIntInRange(0, len(_POLICIES) - 1)]
    analysis = Analysis(AnalysisOptions(all_ports=all_ports))
    counters = CaptureCounters()
    checks: list[_StreamCheck] = []

    def factory(flow: Flow) -> _StreamCheck | None:
        handler = analysis.handler_factory(flow)
        if handler is None:  # no protocol for this flow: the reassembler drops it
            return None
        check = _StreamCheck(handler, [0, 0])
        checks.append(check)
        return check

    reassembler = Reassembler(
        factory,
        counters=counters,
        server_ports=MAIL_PORTS,
        idle_timeout=60.0,
        max_flows=3,
        max_buffer=2048,
        max_buffer_segments=8,
        max_total_buffer=4096,
        classifier=classify_mail if all_ports else None,
        policy=policy,
    )
    cursors: dict[tuple, int] = {}
    frame, ts = 0, 1_700_000_000.0
    while provider.remaining_bytes():
        source = provider.ConsumeIntInRange(0, len(_ADDRESSES) - 1)
        target = provider.ConsumeIntInRange(0, len(_ADDRESSES) - 1)
        sport = _PORTS[provider.ConsumeIntInRange(0, len(_PORTS) - 1)]
        dport = _PORTS[provider.ConsumeIntInRange(0, len(_PORTS) - 1)]
        flags = provider.ConsumeIntInRange(0, 0x3F)
        key = (source, sport, target, dport)
        seq = (cursors.get(key, 1000) + provider.ConsumeIntInRange(-3000, 3000)) & 0xFFFFFFFF
        ack = provider.ConsumeIntInRange(0, 0xFFFFFFFF)
        payload = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 600))
        wire_len = len(payload) + (provider.ConsumeIntInRange(0, 100) if provider.ConsumeBool() else 0)
        cursors[key] = seq + wire_len
        frame += 1
        ts += provider.ConsumeIntInRange(0, 100) / 2
        window = provider.ConsumeIntInRange(0, 0xFFFF)
        options = provider.ConsumeIntInRange(0, 0x3FF) if flags & linklayer.SYN else 0
        segment = (
            _ADDRESSES[source], _ADDRESSES[target], sport, dport, seq, ack, flags, payload, wire_len, 0, window, options
        )  # fmt: skip
        reassembler.process(segment, frame, ts)
        assert reassembler.open_flows <= 3, "flow table over its cap"
        assert reassembler._pending_total <= 4096, "out-of-order buffers over their cap"
        _check_buffers(reassembler)
    reassembler.flush()
    assert all(check.closed for check in checks), "a flow was never closed"
    assert reassembler.open_flows == 0
    for finding in analysis.findings:
        _json_round_trip(finding_record(finding))


_LINKTYPES = [*sorted(linklayer.SUPPORTED_LINKTYPES), 147]


def link_layer(data: bytes) -> None:
    if not data:
        return
    linktype = _LINKTYPES[data[0] % len(_LINKTYPES)]
    result = linklayer.decode_tcp(linktype, data[1:])
    if isinstance(result, int):
        return
    src, dst, sport, dport, _seq, _ack, flags, payload, wire_len, _info, window, options = result
    assert len(src) == len(dst) and len(src) in (4, 16)
    assert 0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF and 0 <= flags <= 0xFF and 0 <= window <= 0xFFFF
    syn_options = linklayer.OPT_WSCALE | linklayer.OPT_SACK_OK | linklayer.OPT_SHIFT_MASK
    assert not options & syn_options or flags & linklayer.SYN, "SYN options on a segment without SYN"
    assert not options >> linklayer.OPT_URGENT_SHIFT & 0xFFFF or flags & linklayer.URG, "urgent pointer without URG"
    assert not options >> linklayer.OPT_TSVAL_SHIFT or options & linklayer.OPT_TIMESTAMP, "TSval without the option"
    assert options >> linklayer.OPT_TSVAL_SHIFT <= 0xFFFFFFFF, "TSval over 32 bits"
    assert options & linklayer.OPT_SHIFT_MASK <= linklayer.MAX_WSCALE, "window scale above 14"
    assert len(payload) <= wire_len, "more payload bytes than the IP header allows"
    linklayer.format_endpoint(src, sport)


# ---- output ---------------------------------------------------------------------------------------------------------


def _hostile_text(provider: atheris.FuzzedDataProvider) -> str:
    kind = provider.ConsumeIntInRange(0, 3)
    size = provider.ConsumeIntInRange(0, 80)
    if kind == 0:
        return provider.ConsumeUnicode(size)  # may hold lone surrogates
    if kind == 1:
        return provider.ConsumeBytes(size).decode("utf-8", errors="surrogateescape")  # a file name from argv
    if kind == 2:
        return provider.ConsumeBytes(size).decode("latin-1")  # C0 and C1 controls
    markup = ("[bold red]", "[/]", "[link=https://198.51.100.9]", "\x1b]8;;https://x\x1b\\", "\x1b[2J", "\u202e")
    markup += ("con\u200btoso", "\u061c", "\u2066", "\U000e0041\U000e007f", "\u2028", "\ufe0f", "\u3164", "\u034f")
    return provider.PickValueInList(list(markup)) + provider.ConsumeUnicodeNoSurrogates(size)


def output_layer(data: bytes) -> None:
    """Hostile strings in every kind of finding, through JSON lines and terminal tables."""
    provider = atheris.FuzzedDataProvider(data)
    findings = FindingSet()
    for kind in FindingType:
        server = _hostile_text(provider)
        finding = findings.get(kind, "smtp", server, Severity.HIGH, (_hostile_text(provider),))
        finding.seen(1_700_000_000.0, _hostile_text(provider))
        for name in ("banner", "user", "password", "netbios_computer", "dns_domain", "mail_from", "reply"):
            finding.fields[name] = _hostile_text(provider)
        finding.fields["mechanisms"] = [_hostile_text(provider), _hostile_text(provider)]
        finding.fields["users"] = [_hostile_text(provider)]
        finding.add_detail({"user": _hostile_text(provider)})
        finding.add_evidence(EvidenceRecord(_hostile_text(provider), 1, 1.0, "server", _hostile_text(provider)))
    records = [finding_record(f, show_secrets=provider.ConsumeBool()) for f in findings]
    summary = summary_record({"warnings_text": _hostile_text(provider)}, findings)
    stream = io.StringIO()
    write_jsonl(stream, [*records, summary])
    for line in stream.getvalue().splitlines():
        assert not _UNESCAPED_IN_JSON.search(line), f"raw control character in JSON: {line[:200]!r}"
        json.loads(line.encode("utf-8").decode("utf-8"))
    # Every cell goes through the same escaping; the full rich rendering costs ~15 ms, so one input in 16 gets it.
    shown = "\n".join(_cell(value).plain for record in records for value in record.values())
    if data[:1] and data[0] % 16 == 0:
        terminal = io.StringIO()
        console = Console(file=terminal, force_terminal=True, color_system="truecolor", width=100)
        render_tables(console, records, summary)
        shown = _SGR.sub("", terminal.getvalue())
    bad = _UNSAFE_ON_TERMINAL.search(shown)
    assert bad is None, f"unescaped {bad.group()!r} reached the terminal"
    shown.encode("utf-8")  # a terminal's stdout is strict UTF-8: a lone surrogate would raise here


# ---- registry -------------------------------------------------------------------------------------------------------


# What one input may cost. An input of at most a few KiB that takes seconds, or raises the process's peak memory by
# tens of MiB, has found something unbounded (a gzip capture expanding into one buffered 12 MiB record does).
MAX_SECONDS_PER_INPUT = 5.0
MAX_RSS_GROWTH_MIB = 64


@dataclass(frozen=True)
class Harness:
    name: str
    run: Callable[[bytes], None]
    max_len: int  # libFuzzer -max_len
    seeds: str  # which seed set (fuzz/seeds.py)
    rss_limit_mb: int = 1024  # libFuzzer -rss_limit_mb at least
    max_seconds: float = MAX_SECONDS_PER_INPUT
    max_rss_growth_mib: int = MAX_RSS_GROWTH_MIB


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise OSError(f"no {field!r} in /proc/self/status")


def _start_measuring() -> tuple[str, float]:
    """How peak memory is read, and the baseline: on Linux the peak RSS (VmHWM) is reset (clear_refs 5) and the input
    is charged its peak over the resident size before it; elsewhere the process's lifetime peak is compared (which a
    process inherits from its parent across fork and exec, so it only sees growth beyond the parent's peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return "VmHWM:", _status_mib("VmRSS:")
    except OSError:
        return "", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_mib(field: str) -> float:
    return _status_mib(field) if field else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_measured(harness: Harness, data: bytes) -> list[str]:
    """Run one input; return what it cost beyond the harness's limits (time, memory held at its peak).

    Exceptions propagate. A slow input is run again and reported only if slow twice (the machine may be busy).
    """
    field, before = _start_measuring()
    started = time.perf_counter()
    harness.run(data)
    seconds = time.perf_counter() - started
    problems = []
    grown = _peak_mib(field) - before
    if grown > harness.max_rss_growth_mib:
        problems.append(f"MemoryGrowth: peak RSS grew by {grown:.0f} MiB on one input of {len(data)} bytes")
    if seconds > harness.max_seconds:
        started = time.perf_counter()
        harness.run(data)
        again = time.perf_counter() - started
        if again > harness.max_seconds:
            problems.append(f"SlowInput: {min(seconds, again):.1f} s for one input of {len(data)} bytes")
    return problems


HARNESSES: dict[str, Harness] = {
    h.name: h
    for h in (
        Harness("ntlmssp", ntlmssp_decoder, 4096, "ntlmssp"),
        Harness("base64", base64_decoder, 4096, "base64"),
        Harness("linklayer", link_layer, 2048, "frames"),
        Harness("reassembly", reassembly, 8192, "none"),
        Harness("sasl", sasl_tracker, 8192, "conversation"),
        Harness("output", output_layer, 4096, "none"),
        Harness("pop3", pop3_session, 4096, "pop3"),
        Harness("smtp", smtp_session, 4096, "smtp"),
        Harness("imap", imap_session, 4096, "imap"),
        Harness("amplify", amplified_line, 16, "amplify"),
        Harness("canary", canary_login, 1024, "canary"),
        # pcapy-ng's setfilter never frees the compiled BPF program (~14 KB per capture opened with libpcap),
        # so a long campaign grows by that much per libpcap run without leakscope leaking anything.
        # 64 KiB: room for a gzip capture that expands to 48 MiB (fuzz/seeds.py crafted_captures).
        Harness("capture", capture_file, 65536, "capture", rss_limit_mb=8192),
        Harness("findings", findings_file, 16384, "findings"),
        Harness("store", store_record, 4096, "findings"),
    )
}


def finding_stem(harness: str, signature: str) -> str:
    """File name (without suffix) under which a finding with this signature is saved: one per distinct bug."""
    return f"{harness}-{hashlib.sha1(signature.encode()).hexdigest()[:12]}"
