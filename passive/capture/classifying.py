"""A new flow's first events, held while the classifier decides what the flow is (every-port mode).

:class:`Classification` is the part of :class:`~passive.capture.reassembly.Reassembler` that holds a flow being
classified: its data and gaps are kept, in order, as events to replay, and the first bytes of each side are shown to
the classifier after every chunk. Its verdict names the flow (the label; the held events go to the handler the
factory makes for it) or drops it. What a flow may hold is bounded per flow (:data:`CLASSIFY_LIMIT` bytes seen,
:data:`MAX_CLASSIFY_GAPS` gaps) and across flows (:data:`MAX_CLASSIFY_HELD`, :mod:`passive.capture.held`): past
either, the flow is no mail.
"""

from __future__ import annotations

from collections.abc import Callable

from passive.capture.delivery import DIRECTIONS, Delivery
from passive.capture.flow import Chunk, Classifier, Direction, Flow, HandlerFactory
from passive.capture.held import HeldBudget

CLASSIFY_LIMIT = 4096
"""Bytes of a flow's first data (both sides) shown to the classifier; a flow still undecided then is dropped."""

MAX_CLASSIFY_GAPS = 16
"""Gaps held, to be replayed, while a flow is being classified; past them it is not mail. Each gap skips to the next
newline, so a flow that loses bytes this often before its first lines say what it is shows the classifier nothing:
a hole acknowledged past, again and again with no newline after it, held a gap per two packets for as long as the
flow lived (the scanner's flow head bounds it in a file, not on libpcap's reader nor for ``watch``'s flows of a
server known to be mail, which are admitted whole)."""

MAX_CLASSIFY_HELD = 32 * 1024 * 1024
"""What all flows being classified may hold together, in :func:`~passive.capture.held.held_cost` units (a chunk's
objects and its bytes twice): past it the flows holding the most are no mail (counted in ``classify_evictions``
and ``flows_not_mail``), as a flow still undecided at :data:`CLASSIFY_LIMIT` is. Dropping them loses least: a flow
is named by its first line (a mail greeting or command, an HTTP request: a few hundred bytes), so one holding the
most, many small chunks or kilobytes, is the least likely to be named at all, and is the one a flood makes. 32 MiB
is 130 000 one-byte chunks, or 3 700 flows holding nearly all of the 4 KiB they are shown; 10 000 flows each held
for a first packet of a hundred bytes hold 4.5 MiB."""


class Classification(Delivery):
    """Holding flows being classified, and the verdicts (see the module docstring)."""

    factory: HandlerFactory
    classifier: Classifier | None
    on_verdict: Callable[[Flow, bool], None] | None
    held: HeldBudget[Flow]

    def _activate(self, flow: Flow) -> None:
        raise NotImplementedError  # the reassembler's

    def _ignore(self, flow: Flow) -> None:
        raise NotImplementedError  # the reassembler's

    def _classify_gap(self, flow: Flow, event: tuple) -> None:
        """A gap in a flow being classified: held with its data, up to :data:`MAX_CLASSIFY_GAPS` of them."""
        events = flow._events
        assert events is not None
        events.append(event)
        if sum(1 for held in events if held[0] == "gap") > MAX_CLASSIFY_GAPS:
            self._not_mail(flow)
        else:
            self._hold(flow, 0)

    def _not_mail(self, flow: Flow) -> None:
        """The classifier's verdict, or the bounds', on a flow being classified: no mail, ignored from here on."""
        self.counters.flows_not_mail += 1
        self._ignore(flow)
        if self.on_verdict is not None:
            self.on_verdict(flow, False)

    def _hold(self, flow: Flow, size: int) -> None:
        """``flow`` holds one more event (``size`` bytes of data, 0 for a gap) while undecided: past the run's
        :data:`MAX_CLASSIFY_HELD`, the flows holding the most are no mail (``flow`` among them, perhaps)."""
        for victim in self.held.hold(flow, size):
            self.counters.classify_evictions += 1
            self._not_mail(victim)

    def _classify(self, flow: Flow, direction: int, chunk: Chunk) -> None:
        events = flow._events
        assert events is not None and self.classifier is not None
        events.append(("data", direction, chunk))
        seen = flow._seen
        if len(seen[direction]) < CLASSIFY_LIMIT:
            seen[direction] += chunk.data[: CLASSIFY_LIMIT - len(seen[direction])]
        verdict = self.classifier(seen[Direction.SERVER_TO_CLIENT], seen[Direction.CLIENT_TO_SERVER])
        if verdict is None and len(seen[0]) + len(seen[1]) >= CLASSIFY_LIMIT:
            verdict = ""
        if verdict is None:
            self._hold(flow, len(chunk.data))
            return
        if not verdict:
            self._not_mail(flow)
            return
        self.held.forget(flow)
        flow.label = verdict
        flow._events = None
        flow._seen = [b"", b""]
        self._replay(flow, events)

    def _replay(self, flow: Flow, events: list[tuple]) -> None:
        """A flow named: its handler is made and hears the events held, in order."""
        self._activate(flow)
        handler = flow.handler
        if self.on_verdict is not None:
            self.on_verdict(flow, handler is not None)
        if handler is None:
            return
        for event in events:
            if event[0] == "data":
                handler.on_data(flow, DIRECTIONS[event[1]], event[2])
            else:
                handler.on_gap(flow, DIRECTIONS[event[1]], event[2], event[3], event[4])
