"""What several workers found in one run, merged into exactly what one process finds.

Findings are not a sum of parts: a finding keeps its first evidence and details in the order they came, its last
client, fields the latest session wrote; the relay ledger rebuilds a server's verdicts from all of its attempts in
order; the finding set is ordered by first sighting. So workers (:mod:`passive.analysis.parallel`) do not run the
detectors. Each worker reads its share of a capture's flows (reassembly and the dissectors run there) and records,
per session, the operations one process would have made on its detectors (``OPEN`` a session's analyzer, ``FEED``
it events, ``CLOSE`` it), each under a key saying where one process would have made it: the capture's index in
the run, then the engine's :class:`~passive.capture.options.Cursor` (frame, phase: sweep or packet), the first frame
of the flow closing when the phase is a sweep (one process closes idle flows in the order they opened), and the
order of recording within the worker. The main process replays every worker's operations in key order into one
:class:`~passive.analysis.pipeline.Analysis`, whose detectors, finding set, statistics and relay ledger then see
what one process's would have seen, in the same order.

That order is one process's as long as what happens to a flow depends on that flow's packets alone, which the
scanner guarantees (:mod:`passive.capture.scanner`: same admission whatever the batches; sweeps timed on every
packet read, which every worker reads). Limits shared by all flows are per process, so a run that hits them may
differ: the reassembler's flow table (``max_flows``, evictions) and out-of-order total (``max_total_buffer``), the
scanner's flow table (``MAX_SCAN_FLOWS``) and its flow heads extended at once and in all
(:mod:`passive.capture.flowhead`: ``MAX_EXTENDING``, ``HEAD_SHARE``), which only many flows of text in tiny pieces
reach. Capture counters are summed per flow; per-file ones (packets read,
damage warnings) are the first worker's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from dissectors import events as ev
from passive.analysis.detectors import SessionContext
from passive.analysis.flow import Analysis, EngineHandler, SessionRecord
from passive.capture.counters import CaptureCounters
from passive.capture.flow import Flow
from passive.capture.joined import FileMap
from passive.capture.options import Cursor

OPEN, FEED, CLOSE = 0, 1, 2
Key = tuple[int, int, int, int, int]  # (capture index, frame, phase, first frame if sweeping, recording order)
Op = tuple[Key, int, int, Any]  # (key, session id, OPEN | FEED | CLOSE, payload)
WATERMARK_PHASE = 9  # above both cursor phases: a worker's watermark (index, frame, 9, 0, 0) follows its ops there

# Counters a capture has once, whichever worker counts them: every worker reads the whole file.
_PER_FILE = frozenset({"packets_read", "bytes_read", "anomalies", "oversized_records", "warnings"})


class OpLog:
    """A worker's recorded operations, handed to ``send`` in chunks."""

    def __init__(self, cursor: Cursor, send: Callable[[list[Op]], None], chunk: int) -> None:
        self.cursor, self.send, self.chunk = cursor, send, chunk
        self.file = 0
        self.ops: list[Op] = []
        self._order = 0

    def record(self, first_frame: int, session: int, kind: int, payload: Any) -> None:
        cursor = self.cursor
        sweeping = cursor.phase == 0
        self._order += 1
        self.ops.append(((self.file, cursor.frame, cursor.phase, first_frame if sweeping else 0, self._order),
                         session, kind, payload))  # fmt: skip
        if len(self.ops) >= self.chunk:
            self.flush()

    def flush(self) -> None:
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


class Recorder:
    """A session's analyzer in a worker: what the detectors would be given is recorded instead."""

    __slots__ = ("first_frame", "log", "session")

    def __init__(self, log: OpLog, session: int, first_frame: int) -> None:
        self.log, self.session, self.first_frame = log, session, first_frame

    def feed(self, events: list[ev.Event]) -> None:
        self.log.record(self.first_frame, self.session, FEED, pack_events(events))

    def close(self) -> None:
        self.log.record(self.first_frame, self.session, CLOSE, None)


class RecordingHandler(EngineHandler):
    """The engine handler of a worker: tells the recording which flow a new session belongs to."""

    def _mail(self, flow: Flow) -> Any:
        recording = self.analysis.recording  # type: ignore[attr-defined]
        recording.flow = flow
        return super()._mail(flow)


class Recording:
    """Set as ``analysis.recording`` in a worker: sessions get :class:`Recorder` analyzers."""

    def __init__(self, log: OpLog, worker: int, workers: int) -> None:
        self.log, self.worker, self.workers = log, worker, workers
        self.flow: Flow | None = None
        self._sessions = 0

    def handler(self, analysis: Analysis, protocol: str, by_port: bool = False) -> EngineHandler:
        return RecordingHandler(analysis, protocol, by_port)

    def session(self, context: SessionContext) -> Recorder:
        """A new session's analyzer (the flow it belongs to was named by :class:`RecordingHandler` just before)."""
        session = self._sessions * self.workers + self.worker  # unique across workers
        self._sessions += 1
        first_frame = self.flow.first_frame if self.flow is not None else 0
        payload = (context.protocol, context.server, context.client, context.file, context.partial, context.network)
        self.log.record(first_frame, session, OPEN, payload)
        return Recorder(self.log, session, first_frame)


class Replayer:
    """Applies recorded operations, in key order, to the main process's analysis."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.sessions: dict[int, tuple[Any, SessionRecord | None]] = {}
        self.files: FileMap | None = None  # the files of the group being replayed, as its workers read them

    def apply(self, op: Op) -> None:
        _key, session, kind, payload = op
        if kind == FEED:
            analyzer, record = self.sessions[session]
            payload = unpack_events(payload)
            analyzer.feed(payload)
            if record is not None:
                room = max(self.analysis.options.max_events_per_session - len(record.events), 0)
                record.events.extend(payload[:room])
                record.events_dropped += max(0, len(payload) - room)
        elif kind == OPEN:
            protocol, server, client, file, partial, network = payload
            context = SessionContext(protocol, server, client, file, files=self.files, partial=partial, network=network)
            analyzer = self.analysis.session_analyzer(context)
            record = None
            if self.analysis.options.keep_events:
                record = SessionRecord(protocol, server, client, file, files=self.files)
                self.analysis.sessions.append(record)
            self.sessions[session] = (analyzer, record)
        else:
            analyzer, _record = self.sessions.pop(session)
            analyzer.close()


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
