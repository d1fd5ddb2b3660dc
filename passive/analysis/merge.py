"""What several workers found in one run, merged into exactly what one process finds.

Findings are not a sum of parts: a finding keeps its first evidence and details in the order they came, its last
client, fields the latest session wrote; the relay ledger rebuilds a server's verdicts from all of its attempts in
order; the finding set is ordered by first sighting. So the run's findings, statistics and relay ledger live in the
main process only. Each worker reads its share of a capture's flows; reassembly, the dissectors and the detectors run
there, and each session's analyzer (:class:`RecordingAnalyzer`) records the **effects** its detectors have on that
shared state (:mod:`passive.analysis.detectors.base`: module-level functions and plain arguments) instead of
applying them, gathered into one operation per call: ``OPEN`` (a session's analyzer made), ``FEED`` (events fed),
``CLOSE``. Each operation is recorded under a key saying where one process would have made it: the capture's index
in the run, then the engine's :class:`~passive.capture.options.Cursor` (frame, phase: sweep or packet), the first
frame of the flow closing when the phase is a sweep (one process closes idle flows in the order they opened), and
the order of recording within the worker. The main process replays every worker's operations in key order
(:class:`Replayer`): each effect is applied to the finding its session named, so the findings, statistics and
relay ledger go through what one process's would have, in the same order. The one exception is a finding's later
sightings of an occurrence already counted (:meth:`~passive.analysis.detectors.session.SessionAnalyzer.seen_later`,
every event of a session after its first): they only move first and last sighting, which commutes with every other
change, so a session gathers them: before each chunk of operations is sent, those of every session still open are
recorded as one operation (``SIGHT``), and a closing session's go with its last effects.

That order is one process's as long as what happens to a flow depends on that flow's packets alone, which the
scanner guarantees (:mod:`passive.capture.scanner`: same admission whatever the batches; sweeps timed on every
packet read, which every worker reads). Limits shared by all flows are per process, so a run that hits them may
differ: the reassembler's flow table (``max_flows``, evictions) and out-of-order total (``max_total_buffer``), the
scanner's flow table (``MAX_SCAN_FLOWS``) and its flow heads extended at once and in all
(:mod:`passive.capture.flowhead`: ``MAX_EXTENDING``, ``HEAD_SHARE``), which only many flows of text in tiny pieces
reach, the dissectors' budget (:mod:`passive.analysis.budget`: which sessions give up their partial state, and
when), and what flows not yet named may hold (:mod:`passive.capture.held`: which are dropped, or read by their port,
before their first lines tell). Capture counters are summed per flow, and so are what a worker's budgets made flows
and sessions give up (:data:`ANALYSIS_STATS`); per-file ones (packets read, damage warnings) are the first worker's.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable
from typing import Any

from dissectors import events as ev
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.detectors.base import Effect, Shared
from passive.analysis.detectors.session import find
from passive.analysis.flow import Analysis, EngineHandler, SessionRecord
from passive.capture.counters import CaptureCounters
from passive.capture.flow import Flow
from passive.capture.joined import FileMap
from passive.capture.options import Cursor
from passive.findings.model import Finding, FindingType, Severity

OPEN, FEED, CLOSE, SIGHT, EVENTS = 0, 1, 2, 3, 4
Key = tuple[int, int, int, int, int]  # (capture index, frame, phase, first frame if sweeping, recording order)
# An operation: (key, session id, kind, payload); the payload of OPEN is (the session's protocol, server, client,
# file, partial, network; its effects), of FEED and CLOSE the session's effects, of EVENTS (a FEED with --events)
# (the events kept; effects), of SIGHT (session id 0) a list of Sighting.
Op = tuple[Key, int, int, Any]
Sighting = tuple[int, int, float, float]  # (session id, number of a held finding, first sighting, last)
# An effect as recorded: (its name, target, arguments); the name is :func:`effect_name`'s; the target is None (no
# finding), the number of a finding looked up before (negative: held for the session's life; else within the same
# operation), or (number, kind's value, severity's value, key): the finding to look up now and name by that number.
Recorded = tuple[str, Any, tuple[Any, ...]]
WATERMARK_PHASE = 9  # above both cursor phases: a worker's watermark (index, frame, 9, 0, 0) follows its ops there

ANALYSIS_STATS = ("dissector_bytes_evicted", "dissector_evictions", "port_check_evictions")
"""Counters of :class:`~passive.analysis.stats.RunStats` that an analysis counts itself, not through its sessions'
effects (which are recorded and replayed): each process sends them, after ``flows_ignored``, as
:func:`analysis_counts`, and the main process adds them up (:func:`add_analysis_counts`)."""

# Counters a capture has once, whichever worker counts them: every worker reads the whole file.
_PER_FILE = frozenset({"packets_read", "bytes_read", "anomalies", "oversized_records", "warnings"})


class OpLog:
    """A worker's recorded operations, handed to ``send`` in chunks."""

    def __init__(self, cursor: Cursor, send: Callable[[list[Op]], None], chunk: int) -> None:
        self.cursor, self.send, self.chunk = cursor, send, chunk
        self.file = 0
        self.ops: list[Op] = []
        self._order = 0
        self.gathering: dict[RecordingAnalyzer, None] = {}  # sessions holding sightings to record before a send

    def key(self, first_frame: int) -> Any:
        """The key of the next operation (see the module docstring)."""
        cursor = self.cursor
        sweeping = cursor.phase == 0
        self._order += 1
        return (self.file, cursor.frame, cursor.phase, first_frame if sweeping else 0, self._order)

    def record(self, first_frame: int, session: int, kind: int, payload: Any) -> None:
        self.ops.append((self.key(first_frame), session, kind, payload))
        if len(self.ops) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.gathering:  # every session's sightings in one operation, keyed where the worker is now
            gathering, self.gathering = self.gathering, {}
            sightings = [sighting for analyzer in gathering for sighting in analyzer.sightings()]
            self.ops.append((self.key(0), 0, SIGHT, sightings))
        ops, self.ops = self.ops, []
        self.send(ops)


# Events cross the pipe as flat tuples, ``(class, side, evidence's fields as a tuple, the event's other fields...)``,
# rebuilt as pickle would (the instance's dict filled, no __init__): a quarter less to unpickle than the objects with
# their dicts of field names. An event whose attributes are not its class's fields in order (none is) goes as is.
_EVIDENCE_FIELDS = tuple(f.name for f in dataclasses.fields(ev.Evidence))
_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def pack_events(events: list[ev.Event]) -> list[Any]:
    """Events as they are sent (see :func:`unpack_events`)."""
    packed: list[Any] = []
    for event in events:
        cls = event.__class__
        attributes = event.__dict__
        evidence = attributes.get("evidence")
        names = _FIELDS.get(cls) or _fields(cls)
        if (
            tuple(attributes) != names
            or names[1] != "evidence"
            or evidence.__class__ is not ev.Evidence
            or tuple(evidence.__dict__) != _EVIDENCE_FIELDS
        ):
            packed.append(event)
            continue
        values = [cls, *attributes.values()]
        values[2] = tuple(evidence.__dict__.values())
        packed.append(tuple(values))
    return packed


def unpack_events(packed: list[Any]) -> list[ev.Event]:
    """The events :func:`pack_events` sent, equal to those recorded."""
    events: list[ev.Event] = []
    new = object.__new__
    for item in packed:
        if item.__class__ is not tuple:
            events.append(item)
            continue
        cls = item[0]
        evidence = new(ev.Evidence)
        evidence.__dict__.update(zip(_EVIDENCE_FIELDS, item[2], strict=True))
        event = new(cls)
        attributes = event.__dict__
        names = _FIELDS.get(cls) or _fields(cls)
        attributes[names[0]] = item[1]
        attributes["evidence"] = evidence
        attributes.update(zip(names[2:], item[3:], strict=True))
        events.append(event)
    return events


_NAMES: dict[Effect, str] = {}  # in a worker: the name of each effect recorded
_EFFECTS: dict[str, Effect] = {}  # in the main process: each effect applied, by its name


def effect_name(effect: Effect) -> str:
    """What an effect (a module-level function) is sent as: where it is defined, as pickle names a function. The
    main process looks the name up once per run (:func:`named_effect`), where pickle looks a function up again in
    every message that holds it (with a finding's kind and severity sent as values, unpickling the messages of the
    all-mail bench capture took 14% fewer instructions)."""
    name = _NAMES.get(effect)
    if name is None:
        name = _NAMES[effect] = f"{effect.__module__}:{effect.__qualname__}"
    return name


def named_effect(name: str) -> Effect:
    """The effect :func:`effect_name` named."""
    effect = _EFFECTS.get(name)
    if effect is None:
        module, _, path = name.partition(":")
        found: Any = importlib.import_module(module)
        for part in path.split("."):
            found = getattr(found, part)
        effect = _EFFECTS[name] = found
    return effect


# A finding's kind and severity are sent as their values: pickle rebuilds an enum member with a call of its class in
# every message that holds it.
_KINDS = {kind.value: kind for kind in FindingType}
_SEVERITIES = {severity.value: severity for severity in Severity}


class _Handle:
    """A finding a recording session named (:meth:`RecordingAnalyzer.finding`): what to look it up by, and its
    number once a held one has been looked up."""

    __slots__ = ("held", "number", "spec")

    def __init__(self, spec: tuple[str, str, tuple[Any, ...]], held: bool) -> None:
        self.spec, self.held = spec, held
        self.number: int | None = None


class RecordingAnalyzer(SessionAnalyzer):
    """A session's analyzer in a worker: the detectors run here, and their effects are recorded for the main
    process (one operation per call: ``OPEN`` when made, ``FEED``, ``CLOSE``), with the session's events when the
    run keeps them (``--events``): ``keep_events`` is how many a session keeps (the first ones; the others are
    counted), None when none are kept."""

    def __init__(
        self, context: SessionContext, log: OpLog, session: int, first_frame: int, keep_events: int | None
    ) -> None:
        self.log, self.session, self.first_frame = log, session, first_frame
        self.room = keep_events  # events the session may still keep (--events); None: no event is kept
        self.effects: list[Recorded] = []
        self._held: list[_Handle] = []  # the findings held for the session's life, numbered -1, -2, ...
        self._resolved: dict[_Handle, int] = {}  # the other findings of the operation being recorded, numbered 0, ...
        self._later: dict[_Handle, list[float]] = {}  # finding -> [first, last] sightings gathered
        super().__init__(context, None, None)
        opened = (context.protocol, context.server, context.client, context.file, context.partial, context.network,
                  context.proxy)  # fmt: skip
        log.record(first_frame, session, OPEN, (opened, self._take()))

    def finding(self, kind: FindingType, severity: Severity, key: tuple[Any, ...] = (), held: bool = False) -> Finding:
        # Sent by value (_KINDS): ``_value_`` is the member's attribute, where ``value`` is a property (a call).
        return _Handle((kind._value_, severity._value_, key), held)  # type: ignore[return-value]

    def apply(self, effect: Effect, finding: Any, *args: Any) -> None:
        target: Any = None
        if finding is not None:
            if finding.held:  # numbered -1, -2, ... for the session's life
                target = finding.number
                if target is None:
                    target = finding.number = -1 - len(self._held)
                    self._held.append(finding)
                    target = (target, *finding.spec)
            else:  # numbered 0, 1, ... within the operation being recorded, looked up again in the next
                target = self._resolved.get(finding)
                if target is None:
                    target = self._resolved[finding] = len(self._resolved)
                    target = (target, *finding.spec)
        self.effects.append((_NAMES.get(effect) or effect_name(effect), target, args))

    def seen_later(self, finding: Any, timestamp: float | None) -> None:
        if timestamp is None:
            return
        if not finding.held or finding.number is None:  # gathered only for a finding the main process holds
            self.apply(_sighted, finding, timestamp, timestamp)
            return
        gathered = self._later.get(finding)
        if gathered is None:
            self._later[finding] = [timestamp, timestamp]
            self.log.gathering[self] = None
        elif timestamp < gathered[0]:
            gathered[0] = timestamp
        elif timestamp > gathered[1]:
            gathered[1] = timestamp

    def sightings(self) -> list[Sighting]:
        """The sightings gathered since the last were taken."""
        session = self.session
        taken = [(session, handle.number, first, last) for handle, (first, last) in self._later.items()]
        self._later.clear()
        return taken  # type: ignore[return-value]

    def feed(self, events: list[ev.Event]) -> None:
        super().feed(events)
        room = self.room
        if room is not None:  # (events kept, packed; the number of the others)
            taken = events if len(events) <= room else events[:room]
            self.room = room - len(taken)
            kept = (pack_events(taken) if taken else [], len(events) - len(taken))
            self.log.record(self.first_frame, self.session, EVENTS, (kept, self._take()))
        elif self.effects:
            self.log.record(self.first_frame, self.session, FEED, self._take())

    def close(self) -> None:
        super().close()
        effects = self._take()
        if self._later:  # applied with the session's last effects: sightings commute with every change
            self.log.gathering.pop(self, None)
            name = effect_name(_sighted)
            effects[:0] = [(name, number, (first, last)) for _session, number, first, last in self.sightings()]
        self.log.record(self.first_frame, self.session, CLOSE, effects)

    def _take(self) -> list[Recorded]:
        effects, self.effects = self.effects, []
        self._resolved.clear()
        return effects


def _sighted(finding: Finding, shared: Shared, first: float, last: float) -> None:
    """Sightings a session gathered (:meth:`RecordingAnalyzer.seen_later`), from the first to the last."""
    finding.seen(first, None, count=False)
    finding.seen(last, None, count=False)


class RecordingHandler(EngineHandler):
    """The engine handler of a worker: tells the recording which flow a new session belongs to."""

    def _mail(self, flow: Flow) -> Any:
        recording = self.analysis.recording  # type: ignore[attr-defined]
        recording.flow = flow
        return super()._mail(flow)


class Recording:
    """Set as ``analysis.recording`` in a worker: sessions get :class:`RecordingAnalyzer` analyzers."""

    def __init__(self, log: OpLog, worker: int, workers: int) -> None:
        self.log, self.worker, self.workers = log, worker, workers
        self.flow: Flow | None = None
        self._sessions = 0

    def handler(self, analysis: Analysis, protocol: str, by_port: bool = False) -> EngineHandler:
        return RecordingHandler(analysis, protocol, by_port)

    def session(self, context: SessionContext, keep_events: int | None) -> RecordingAnalyzer:
        """A new session's analyzer (the flow it belongs to was named by :class:`RecordingHandler` just before)."""
        session = self._sessions * self.workers + self.worker  # unique across workers
        self._sessions += 1
        first_frame = self.flow.first_frame if self.flow is not None else 0
        return RecordingAnalyzer(context, self.log, session, first_frame, keep_events)


class _Replayed:
    """A session being replayed: who it is, the findings it holds for its life, its events kept (``--events``)."""

    __slots__ = ("context", "held", "record")

    def __init__(self, context: SessionContext, record: SessionRecord | None) -> None:
        self.context, self.record = context, record
        self.held: dict[int, Finding] = {}


class Replayer:
    """Applies recorded operations, in key order, to the main process's analysis."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.shared = Shared(analysis.findings, analysis.stats, analysis.relays)
        self.sessions: dict[int, _Replayed] = {}
        self.files: FileMap | None = None  # the files of the group being replayed, as its workers read them

    def apply(self, op: Op) -> None:
        _key, session, kind, payload = op
        if kind == FEED:
            self._effects(self.sessions[session], payload)
        elif kind == OPEN:
            (protocol, server, client, file, partial, network, proxy), effects = payload
            context = SessionContext(
                protocol, server, client, file, files=self.files, partial=partial, network=network, proxy=proxy
            )
            record = None
            if self.analysis.options.keep_events:
                record = SessionRecord(protocol, server, client, file, files=self.files)
                self.analysis.sessions.append(record)
            replayed = self.sessions[session] = _Replayed(context, record)
            self._effects(replayed, effects)
        elif kind == CLOSE:
            self._effects(self.sessions.pop(session), payload)
        elif kind == SIGHT:
            sessions = self.sessions
            for session, number, first, last in payload:
                _sighted(sessions[session].held[number], self.shared, first, last)
        else:
            self._events(self.sessions[session], *payload)

    def _events(self, replayed: _Replayed, kept: tuple[list[Any], int], effects: list[Recorded]) -> None:
        """A FEED with the events the session keeps (--events): the events kept, packed, and how many others."""
        self._effects(replayed, effects)
        record = replayed.record
        if record is not None:
            packed, dropped = kept
            events = unpack_events(packed) if packed else []
            room = max(self.analysis.options.max_events_per_session - len(record.events), 0)
            record.events.extend(events[:room])
            record.events_dropped += dropped + max(0, len(events) - room)

    def _effects(self, replayed: _Replayed, effects: list[Recorded]) -> None:
        shared, held, table = self.shared, replayed.held, _EFFECTS
        named: list[Finding] = []  # the findings looked up for this operation alone, numbered in order from 0
        for name, target, args in effects:
            if target is None:
                finding = None
            elif target.__class__ is int:
                finding = held[target] if target < 0 else named[target]
            else:
                number, kind, severity, key = target
                finding = find(shared, replayed.context, _KINDS[kind], _SEVERITIES[severity], key)
                if number < 0:
                    held[number] = finding
                else:
                    named.append(finding)
            (table.get(name) or named_effect(name))(finding, shared, *args)


def merge_file_counters(shards: list[CaptureCounters]) -> CaptureCounters:
    """One capture's counters from its workers' (the first worker's first): per-flow counters are summed, per-file
    ones (:data:`_PER_FILE`) are the first worker's."""
    merged = CaptureCounters()
    for index, counters in enumerate(shards):
        for field in dataclasses.fields(CaptureCounters):
            name = field.name
            if name == "tunnelled":
                for kind, count in counters.tunnelled.items():
                    merged.tunnelled[kind] = merged.tunnelled.get(kind, 0) + count
            elif name not in _PER_FILE:
                setattr(merged, name, getattr(merged, name) + getattr(counters, name))
            elif index == 0:
                setattr(merged, name, list(counters.warnings) if name == "warnings" else getattr(counters, name))
    return merged


def add_counters(total: CaptureCounters, more: CaptureCounters) -> None:
    """Add one capture's counters to the run's, as one process counting into the same object would have."""
    for field in dataclasses.fields(CaptureCounters):
        name = field.name
        if name == "tunnelled":
            for kind, count in more.tunnelled.items():
                total.tunnelled[kind] = total.tunnelled.get(kind, 0) + count
        elif name != "warnings":
            setattr(total, name, getattr(total, name) + getattr(more, name))
    # A capture's list past MAX_WARNINGS ends with the note that more were suppressed; by then the run's list holds
    # MAX_WARNINGS messages too, so warn() drops the note or adds its own, as one process's would have.
    for message in more.warnings:
        total.warn(message, anomaly=False)


def analysis_counts(analysis: Any) -> tuple[int, ...]:
    """What ``analysis`` counts itself: flows ignored, then :data:`ANALYSIS_STATS`."""
    return (analysis.flows_ignored, *(getattr(analysis.stats, name) for name in ANALYSIS_STATS))


def add_analysis_counts(analysis: Any, counts: Iterable[tuple[int, ...]], *, replace: bool = False) -> None:
    """Add what processes counted (each an :func:`analysis_counts`, or what it grew by) to ``analysis``'s counts;
    with ``replace``, ``counts`` are every process's totals, which replace them."""
    totals = [sum(column) for column in zip(*counts, strict=True)]
    if not totals:
        return
    base = (0,) * len(totals) if replace else analysis_counts(analysis)
    ignored, *stats = (then + more for then, more in zip(base, totals, strict=True))
    analysis.flows_ignored = ignored
    for name, value in zip(ANALYSIS_STATS, stats, strict=True):
        setattr(analysis.stats, name, value)
