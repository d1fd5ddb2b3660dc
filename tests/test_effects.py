"""A worker's sessions record their detectors' effects (passive.analysis.merge.RecordingAnalyzer); the main process
applies them (Replayer). Applied, they make what the same sessions make when their effects are applied at once: the
same finding records, statistics and relay verdicts, whatever the size of the chunks they are sent in. And what the
main process keeps of a session while it applies them does not grow with what the session sends."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from dissectors import events as ev
from passive.analysis import merge
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.pipeline import Analysis, AnalysisOptions, analyze_captures
from passive.capture.options import Cursor
from passive.results.records import finding_record
from passive.results.redaction import Redactor

ROOT = Path(__file__).resolve().parents[1]
LAB = sorted((ROOT / "pcaps").glob("*.pcap"))


def _sessions() -> list[tuple[SessionContext, list[list[ev.Event]]]]:
    """Every session of the project's captures, with its events as the dissector handed them over (one list per
    packet would be finer; one per event is the finest a session is fed)."""
    results = analyze_captures([str(p) for p in LAB], AnalysisOptions(keep_events=True))
    return [
        (SessionContext(s.protocol, s.server, s.client, s.file), [[event] for event in s.events])
        for s in results.analysis.sessions
    ]


def _outcome(analysis: Analysis) -> dict[str, Any]:
    redactor = Redactor(show_secrets=True)
    return {
        "findings": [finding_record(f, redactor=redactor) for f in analysis.findings],
        "stats": analysis.stats.to_dict(),
        "hashes": analysis.stats.hashes,
        "secrets": sorted(analysis.stats.secrets),
    }


def _at_once(sessions: list[tuple[SessionContext, list[list[ev.Event]]]]) -> dict[str, Any]:
    analysis = Analysis(AnalysisOptions())
    for context, fed in sessions:
        analyzer = SessionAnalyzer(context, analysis.findings, analysis.stats, analysis.relays)
        for events in fed:
            analyzer.feed(events)
        analyzer.close()
    return _outcome(analysis)


def _recorded(sessions: list[tuple[SessionContext, list[list[ev.Event]]]], chunk: int) -> tuple[dict[str, Any], list]:
    ops: list[merge.Op] = []
    log = merge.OpLog(Cursor(), ops.extend, chunk)
    for number, (context, fed) in enumerate(sessions):
        analyzer = merge.RecordingAnalyzer(context, log, number, 0, keep_events=None)
        for events in fed:
            analyzer.feed(events)
        analyzer.close()
    log.flush()
    analysis = Analysis(AnalysisOptions())
    replayer = merge.Replayer(analysis)
    for op in sorted(ops, key=lambda op: op[0]):
        replayer.apply(op)
    assert not replayer.sessions  # every session closed
    return _outcome(analysis), ops


@pytest.mark.parametrize("chunk", [1, 3, 512])
def test_effects_recorded_and_applied_make_what_sessions_make_at_once(chunk: int) -> None:
    sessions = _sessions()
    assert len(sessions) > 30
    one = _at_once(sessions)
    assert {f["type"] for f in one["findings"]} >= {"mail-service", "ntlm-info", "cleartext-credentials"}
    recorded, ops = _recorded(sessions, chunk)
    assert recorded == one
    events = [op for op in ops if op[2] == merge.EVENTS]
    assert not events  # without --events no event crosses


def test_the_main_process_holds_one_finding_per_session_whatever_it_sends() -> None:
    """A session sending 5,000 user names: each credential's finding is looked up by the operation that changes it,
    and only the finding the session's inventory detector keeps is held for the session's life."""
    sessions = _sessions()
    context, fed = next(
        (c, f) for c, f in sessions if any(isinstance(e, ev.Credentials) for events in f for e in events)
    )
    credentials = next(e for events in fed for e in events if isinstance(e, ev.Credentials))
    flood = [[dataclasses.replace(credentials, user=f"user{n}")] for n in range(5000)]
    held: list[int] = []
    real_effects = merge.Replayer._effects

    def watch(self: merge.Replayer, replayed: Any, effects: Any) -> None:
        real_effects(self, replayed, effects)
        held.append(len(replayed.held))

    replayer_class = merge.Replayer
    try:
        replayer_class._effects = watch  # type: ignore[method-assign]
        recorded, ops = _recorded([(context, [*fed[:3], *flood])], 512)
    finally:
        replayer_class._effects = real_effects  # type: ignore[method-assign]
    assert max(held) == 1
    numbers = [t if t.__class__ is int else t[0] for op in ops for _f, t, _a in _effects_of(op) if t is not None]
    assert max(numbers) < 40  # transient numbers restart with every operation
    users = {f["user"] for f in recorded["findings"] if f["type"] == "cleartext-credentials"}
    assert {f"user{n}" for n in range(5000)} <= users


def _effects_of(op: merge.Op) -> list[merge.Recorded]:
    _key, _session, kind, payload = op
    if kind == merge.OPEN:
        return payload[1]
    if kind == merge.EVENTS:
        return payload[1]
    if kind == merge.SIGHT:
        return [("_sighted", number, (first, last)) for _session, number, first, last in payload]
    return payload


def test_an_event_counted_and_read_is_cited_by_one_record() -> None:
    """The inventory cites a session's first event when it counts it (``touched``) and again when it reads it as the
    greeting (``_greeting``): one record for both, which a worker's message carries once."""
    sessions = _sessions()
    _recorded_outcome, ops = _recorded(sessions, 512)
    pairs = 0
    for op in ops:
        cited = {name.rpartition(":")[2]: args[-1] for name, _target, args in _effects_of(op) if args}
        if "touched" in cited and "_greeting" in cited:
            assert cited["touched"] is cited["_greeting"]
            pairs += 1
    assert pairs > 10


def test_the_sightings_of_every_open_session_are_sent_as_one_operation() -> None:
    """Later sightings only move first and last seen: before a chunk is sent, a worker records those its open
    sessions gathered as one operation, not one per session."""
    sessions = [(c, fed) for c, fed in _sessions() if len(fed) >= 3][:2]
    assert len(sessions) == 2
    ops: list[merge.Op] = []
    log = merge.OpLog(Cursor(), ops.extend, 512)
    analyzers = [merge.RecordingAnalyzer(c, log, n, 0, keep_events=None) for n, (c, _fed) in enumerate(sessions)]
    for step in range(3):
        for analyzer, (_context, fed) in zip(analyzers, sessions, strict=True):
            analyzer.feed(fed[step])
    log.flush()
    sightings = [op for op in ops if any(name.rpartition(":")[2] == "_sighted" for name, _t, _a in _effects_of(op))]
    assert len(sightings) == 1 and {session for session, *_ in sightings[0][3]} == {0, 1}
