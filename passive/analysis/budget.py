"""The bytes all session dissectors of a run may hold together, and which sessions give theirs up when that is spent.

Each dissector bounds itself (a partial line, a reply or command being assembled, commands awaiting replies: about
1 MiB at most, docs/hardening.md), but a run holds up to 10 000 flows at once: 128 flows holding what they could
drove ``analyze`` to 3.5 GiB. The per-flow handler reports what its session holds after every chunk; past the
budget, the sessions holding the most drop their partial state (``MailSession.shed``: an anomaly, then the session
resynchronises at the next line, as after a gap) until a quarter of the budget is free again. The bytes given up
are counted in the run's ``dissector_bytes_evicted``, the sessions in ``dissector_evictions``.

A session that holds little is never the one to give up its state while others hold more: with the flow table's
10 000 flows and the default budget, only sessions holding more than 4.8 KiB can be evicted at all.
"""

from __future__ import annotations

from typing import Protocol

from passive.analysis.stats import RunStats

# All sessions' partial state together. 64 MiB keeps a run's peak well under the 300 MiB the floods allow, and is
# thousands of times what real sessions hold (a few hundred bytes between lines).
MAX_DISSECTOR_BYTES = 64 * 1024 * 1024
# Once over the budget, sessions give up their state until no more than this share of it is held: one pass frees a
# quarter of the budget, so passes (each sorts the sessions holding anything) stay rare while the budget is full.
LOW_WATER = 0.75


class Holder(Protocol):
    """A session that holds bytes and can give them up."""

    def shed(self) -> int:
        """Drop the partial state; the bytes still held afterwards."""
        ...


class DissectorBudget:
    """Bytes held per session, their total, and eviction past ``limit``."""

    def __init__(self, limit: int, stats: RunStats) -> None:
        self.limit = limit
        self.stats = stats
        self.total = 0
        self.peak = 0  # the most held at once after eviction, for the record
        self.holders: dict[Holder, int] = {}  # the bytes each session holding any holds

    def update(self, holder: Holder, held: int) -> None:
        """What ``holder`` holds now (after a chunk or a gap); evicts when the total goes over the budget."""
        if not held and holder not in self.holders:
            return  # held nothing and holds nothing: most chunks end on a line's end
        previous = self.holders.pop(holder, 0)
        if held:
            self.holders[holder] = held
        self.total += held - previous
        if self.total > self.limit:
            self._evict()
        self.peak = max(self.peak, self.total)

    def never_sheds(self, held: int, holders: int) -> bool:
        """Whether a session holding ``held`` bytes can never be made to give them up while at most ``holders``
        sessions hold anything: sessions give up their state largest first (keeping nothing) until what is held is
        within the low-water mark, so one holding no more than its share of that is never reached."""
        return held * holders <= self.limit * LOW_WATER

    def forget(self, holder: Holder) -> None:
        """The session ended: its bytes are gone with it."""
        self.total -= self.holders.pop(holder, 0)

    def _evict(self) -> None:
        target = self.limit * LOW_WATER
        for holder, held in sorted(self.holders.items(), key=lambda item: item[1], reverse=True):
            if self.total <= target:
                break
            left = holder.shed()
            self.total += left - held
            if left:
                self.holders[holder] = left
            else:
                del self.holders[holder]
            self.stats.dissector_bytes_evicted += held - left
            self.stats.dissector_evictions += 1
