"""Live monitoring of a span port: capture, analyze, persist findings as they appear, keep memory flat.

:class:`Monitor` runs a :class:`~passive.capture.live.LiveCapture` (kernel BPF filter for mail) into an
:class:`~passive.analysis.pipeline.Analysis`. Once a second (on capture time carried forward while traffic is idle) it:

* expires idle flows (the capture loop does this before calling back),
* writes every finding that changed since the last tick into the :class:`~passive.results.store.FindingStore` and
  commits, and appends the merged record to the ``--jsonl`` file,
* forgets findings untouched for ``retention`` seconds of capture time (the store keeps them; a later
  occurrence starts a fresh in-memory finding whose counts add to the stored row), and caps how many stay,
* refreshes what the dashboard shows: servers seen, findings by most recent change, counters, kernel drops.

Everything held in memory is bounded, so a run of days stays flat.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from passive.analysis.pipeline import Analysis
from passive.capture import CaptureCounters, LiveCapture, PcapStats
from passive.core.endpoints import server_name
from passive.core.errors import StoreError
from passive.core.rotation import TextSink
from passive.findings.kinds import KINDS
from passive.findings.model import Finding, FindingType
from passive.live.drops import DropMeter
from passive.live.fanout import FanoutCapture
from passive.live.interface import open_capture
from passive.live.options import WatchError, WatchOptions
from passive.results.jsonio import dumps
from passive.results.redaction import Redactor
from passive.results.store import FindingStore, Identity, StoreWriter, identity_of

# Dashboard lists are capped: the store holds the full picture.
MAX_SERVERS = 1000
MAX_FEED = 200
FLUSH_SHARE = 0.1
"""At most this share of the time goes to writing the store: a busy run's flush (thousands of changed findings,
about half a millisecond each) may take half a second, and the next one then waits ten times as long, so capture
and analysis keep the rest, and a finding that changes every second is written once per flush, not once per
second. Findings reach the store a few seconds later instead of being lost to a full ring buffer."""
CROWDED = 1.5
"""Findings in memory past this multiple of ``max_live_findings`` make a tick flush whatever FLUSH_SHARE says, so
that the least recently seen can leave memory: a busy server's new sessions (thousands of findings a second) would
otherwise fill the run's finding set (``FindingSet.MAX_FINDINGS``) between two flushes, and what it cannot keep
never reaches the store. The margin of half the cap keeps a steady set of busy findings from forcing a flush
every tick."""


@dataclass
class ServerSeen:
    server: str
    protocol: str
    software: str | None
    banner: str | None
    sessions: int
    first_seen: float | None
    last_seen: float | None
    kinds: set[str] = field(default_factory=set)


@dataclass
class FeedEntry:
    """One finding as the dashboard lists it (latest change first)."""

    type: str
    server: str
    protocol: str
    severity: str
    summary: str
    count: int  # merged across runs
    changed_at: float | None  # capture time
    new: bool  # first time the store saw it


class Monitor:
    """One watch run. Call :meth:`run`; :meth:`stop` (from a signal handler) ends it at the next check."""

    def __init__(
        self,
        options: WatchOptions,
        store: FindingStore,
        *,
        jsonl: TextSink | None = None,
        on_tick: Callable[[Monitor], None] | None = None,
    ) -> None:
        self.options = options
        self.store = store
        self.jsonl = jsonl
        self.on_tick = on_tick
        self.retention = options.retention if options.retention is not None else 2 * options.idle_timeout
        self.analysis = Analysis(options.analysis_options())
        self.analysis.file = f"live:{options.interface}"
        self.counters = CaptureCounters()
        self.writer: StoreWriter | None = None
        self.capture: LiveCapture | FanoutCapture | None = None
        self.pcap_stats: PcapStats | None = None  # every capture process's together (DropMeter.total)
        self.drops = DropMeter()
        self.servers: OrderedDict[str, ServerSeen] = OrderedDict()
        self.feed: OrderedDict[Identity, FeedEntry] = OrderedDict()
        self.findings_new = 0  # first seen by the store
        self.findings_changed = 0  # writes of new or changed findings
        self.findings_forgotten = 0  # left memory (kept in the store)
        self.hashes_seen = 0
        self.commits = 0
        self.warnings: list[str] = []
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.stopped_by: str | None = None
        self.capture_now: float | None = None
        self.appeared: list[FeedEntry] = []  # findings that appeared (in this run) during the last tick
        self._signatures: dict[Identity, tuple[Any, ...]] = {}
        self._identities: dict[int, tuple[Finding, Identity]] = {}  # by id(): a finding's identity never changes
        self._next_flush = 0.0  # monotonic time of the next flush (FLUSH_SHARE)
        self._evicted = 0  # the finding set's evictions already accounted for (_forget_evicted)
        self._recorded: tuple[int, int, int] | None = None  # (packets lost, flows with gaps, read) in the run row
        self._stop = False

    # -- control -------------------------------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        if self.stopped_by is None:
            self.stopped_by = reason
        self._stop = True

    def _should_stop(self) -> bool:
        duration = self.options.duration
        if duration is not None and time.monotonic() - self.started >= duration:
            self.stop("duration")
        return self._stop

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def run(self, capture: LiveCapture | FanoutCapture | None = None) -> None:
        """Capture until stopped, the duration ends, or the capture fails; then flush everything."""
        self.capture = capture if capture is not None else open_capture(self.options)
        # Stored records are masked, and scrubbed of every secret this run has seen so far.
        self.writer = self.store.writer("watch", Redactor(show_secrets=False, secrets=self.analysis.stats.secrets))
        try:
            if isinstance(self.capture, FanoutCapture):
                self.capture.run_into(
                    self.analysis, should_stop=self._should_stop, counters=self.counters, on_tick=self._tick
                )
            else:
                self.capture.run(
                    self.analysis.handler_factory,
                    should_stop=self._should_stop,
                    counters=self.counters,
                    on_tick=self._tick,
                    tick_interval=self.options.tick_interval,
                )
            if self.stopped_by is None:
                self.stopped_by = "capture error"
            self._refresh_stats()
            self._flush()  # the flows the capture loop closed at the end
            self.writer.finish(self.summary())
        finally:
            self.capture.close()

    # -- per tick ------------------------------------------------------------------------------------------------

    def _tick(self, capture_now: float) -> None:
        self.capture_now = capture_now
        self._refresh_stats()
        started = time.monotonic()
        if started >= self._next_flush or len(self.analysis.findings) > CROWDED * self.options.max_live_findings:
            self._flush()
            self._forget_idle(capture_now)  # only once flushed: what leaves memory must be in the store
            self._next_flush = started + (time.monotonic() - started) / FLUSH_SHARE
        else:
            self.appeared = []
        stats = self.analysis.stats
        if stats.hashes:  # watch does not write hash lines: count them and let the list go
            self.hashes_seen += len(stats.hashes)
            stats.hashes.clear()
        if self.on_tick is not None:
            self.on_tick(self)

    def _refresh_stats(self) -> None:
        capture = self.capture
        if capture is None:
            return
        try:
            processes = capture.process_stats() if isinstance(capture, FanoutCapture) else [capture.stats()]
        except Exception as error:  # stats are informative: never stop the capture for them
            self._warn(f"kernel statistics unavailable: {error}")
            return
        self.drops.sample(processes, time.monotonic())
        self.pcap_stats = self.drops.total

    def _flush(self) -> None:
        """Write every finding that changed since the last flush, then commit."""
        assert self.writer is not None
        if self.analysis.findings.evicted != self._evicted:
            self._forget_evicted()
        self.appeared = []
        written: list[dict[str, Any]] = []
        for finding in list(self.analysis.findings):
            ident = self._identity(finding)
            signature = _signature(finding)
            previous = self._signatures.get(ident)
            if previous == signature:
                continue
            self._signatures[ident] = signature
            try:
                record, new = self.writer.write(finding, ident)
            except StoreError as error:
                raise WatchError(str(error)) from None
            self.findings_changed += 1
            self.findings_new += new
            entry = self._show(ident, finding, record, new)
            if previous is None:
                self.appeared.append(entry)
            written.append(record)
        progress = (self.drops.lost, self.counters.flows_with_gaps, self.counters.packets_read)
        try:
            if written or progress != self._recorded:  # the run row says how complete the view is, killed or not
                self._recorded = progress
                self.writer.progress(self.summary())
            self.store.commit()
        except StoreError as error:
            raise WatchError(str(error)) from None
        self.commits += 1
        self._append_jsonl(written)  # after the commit: a line in the file is a finding in the store

    def _append_jsonl(self, records: list[dict[str, Any]]) -> None:
        if self.jsonl is None or not records:
            return
        try:
            self.jsonl.write("".join(dumps(record) + "\n" for record in records))
            self.jsonl.flush()
        except OSError as error:
            self._jsonl_failed(error)

    def _forget_idle(self, capture_now: float) -> None:
        """Drop findings idle past ``retention`` (and the oldest beyond the cap); they are all flushed by now."""
        findings = self.analysis.findings
        limit = capture_now - self.retention
        # A finding not yet seen (a session whose first line is still incomplete) is kept: its session holds it.
        idle = [f for f in findings if f.last_seen is not None and f.last_seen < limit]
        excess = len(findings) - len(idle) - self.options.max_live_findings
        if excess > 0:  # a flood of distinct findings: the least recently seen go, even if still in use
            busy = sorted((f for f in findings if f.last_seen is not None and f.last_seen >= limit), key=_last_seen)
            idle.extend(busy[:excess])
        for finding in idle:
            findings.discard(finding)
            self._let_go(finding, self._identity(finding))
            self._identities.pop(id(finding), None)
            self.findings_forgotten += 1
        if len(self._identities) > 2 * len(findings) + 100:  # findings the set evicted: their entries go
            self._identities = {id(f): self._identities[id(f)] for f in findings if id(f) in self._identities}

    def _forget_evicted(self) -> None:
        """Findings the set evicted to make room left memory as if forgotten."""
        findings = self.analysis.findings
        self._evicted = findings.evicted
        for key, (finding, ident) in list(self._identities.items()):
            if (
                finding.type != FindingType.OPEN_RELAY
                and findings.find(finding.type, finding.server, finding.key) is not finding
            ):
                self._let_go(finding, ident)
                del self._identities[key]

    def _let_go(self, finding: Finding, ident: Identity) -> None:
        """The finding left memory: a later one with the same identity adds to the stored row afresh. Except an
        open-relay finding: the relay ledger puts it back with the whole run's counts, so the writer keeps what the
        run already wrote of it."""
        if finding.type != FindingType.OPEN_RELAY:
            self.writer.forget(finding, ident)  # type: ignore[union-attr]
        self._signatures.pop(ident, None)

    def _identity(self, finding: Finding) -> Identity:
        cached = self._identities.get(id(finding))
        if cached is not None and cached[0] is finding:
            return cached[1]
        ident = identity_of(finding)
        self._identities[id(finding)] = (finding, ident)
        return ident

    # -- what the dashboard shows ----------------------------------------------------------------------------------

    def _show(self, ident: Identity, finding: Finding, record: dict[str, Any], new: bool) -> FeedEntry:
        previous = self.feed.pop(ident, None)
        # A tenant's server in an overlay is named with its network: tenants reuse addresses (docs/schema.md).
        name = server_name(record["server"], record.get("network"))
        entry = self.feed[ident] = FeedEntry(
            type=record["type"],
            server=name,
            protocol=record["protocol"],
            severity=record["severity"],
            summary=finding_summary(record),
            count=record["count"],
            changed_at=finding.last_seen,
            new=new or (previous is not None and previous.new),
        )
        if len(self.feed) > MAX_FEED:
            self.feed.popitem(last=False)
        server = self.servers.pop(name, None)
        if server is None:
            server = ServerSeen(name, record["protocol"], None, None, 0, None, None)
        server.kinds.add(record["type"])
        if finding.type == FindingType.MAIL_SERVICE:
            server.software = record.get("software")
            server.banner = record.get("banner")
            server.sessions = record["count"]
            server.first_seen = finding.first_seen if server.first_seen is None else server.first_seen
        server.last_seen = finding.last_seen
        self.servers[name] = server
        if len(self.servers) > MAX_SERVERS:
            self.servers.popitem(last=False)
        return entry

    def _jsonl_failed(self, error: OSError) -> None:
        self._warn(f"--jsonl file no longer written: {error.strerror or error}")
        self.jsonl = None

    def _warn(self, message: str) -> None:
        if message not in self.warnings and len(self.warnings) < 20:
            self.warnings.append(message)

    def summary(self) -> dict[str, Any]:
        counters = self.counters.as_dict()
        counters.pop("warnings", None)
        return {
            "type": "summary",
            "interface": self.options.interface,
            "duration_seconds": round(self.elapsed, 1),
            "stopped_by": self.stopped_by,
            "jobs": self.options.jobs,
            "buffer_size_mib": self.options.buffer_size,
            **self.drops.summary(),
            **counters,
            **self.analysis.stats.to_dict(),
            "hashes": self.hashes_seen + len(self.analysis.stats.hashes),
            "flows_ignored": self.analysis.flows_ignored,
            "findings_new": self.findings_new,
            "findings_written": self.findings_changed,
            "findings_in_memory": len(self.analysis.findings),
            "findings_forgotten": self.findings_forgotten,
            "servers": len(self.servers),
            "store": self.store.path,
            "warnings": [*self.warnings, *self.counters.warnings],
        }


def _signature(finding: Finding) -> tuple[Any, ...]:
    """Changes whenever anything in the finding's record would."""
    return (
        finding.count,
        finding.first_seen,
        finding.last_seen,
        finding.severity,
        len(finding.evidence),
        finding.evidence_dropped,
        len(finding.details),
        finding.details_dropped,
        len(finding.clients),
        finding.last_client,
        repr(finding.fields),
    )


def _last_seen(finding: Finding) -> float:
    return finding.last_seen or 0.0


def finding_summary(record: dict[str, Any]) -> str:
    """A short line saying what the finding is about (raw values: the caller makes them printable)."""
    kind = KINDS.get(record["type"])
    return kind.summary(record) if kind is not None else ""
