"""What flows hold, all together, while it is still being decided what they are; and which give it up past a bound.

A new flow's first bytes are held until its first lines say what it is: by the reassembler while the classifier
has no verdict (every-port mode, :mod:`passive.capture.classifying`), and by the analysis on a carrier's port until
the first lines confirm the port (:class:`passive.analysis.classify.PortCheck`). Each flow is bounded in bytes (4 KiB,
2 KiB), but both hold one object per chunk: sent a byte per segment, 1 000 flows held 4 million chunks, 850 MiB,
and the flow table admits 10 000 flows. The packet scanner's flow head cuts such a flow only where it runs: not on
libpcap's reader nor the pure-Python one, and not for a flow to a server known to be mail, admitted whole.

So each place keeps a :class:`HeldBudget`: what every flow it holds costs (:func:`held_cost` per chunk), and their
total. Past the budget's limit, the flows holding the most give up until no more than :data:`LOW_WATER` of the limit
is held; what giving up means is the holder's owner's to say (the reassembler declares the flow no mail, the port
check lets the port's protocol stand). Only an undecided flow is ever held: one named by its first chunk, as nearly
every flow is, never touches the budget.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

HELD_CHUNK_COST = 256
"""What holding one chunk costs beside its bytes: a one-byte chunk held by the reassembler measured 210 bytes of
objects in CPython 3.11 (its event tuple, the chunk, its frame number and time, the byte string's header), by the
port check 115 (its one-byte strings shared); 256 rounds the larger up, so a budget counts no less than is held."""

LOW_WATER = 0.75
"""Once over its limit, a budget makes flows give up until no more than this share of the limit is held: one pass
frees a quarter of it, so passes (each sorts the flows holding anything) stay rare while floods keep it full."""

Holder = TypeVar("Holder", bound=Hashable)


def held_cost(size: int) -> int:
    """What holding a chunk of ``size`` bytes costs: its objects, and its bytes twice (held to be replayed, and in
    the copy of the flow's first bytes its first lines are read from)."""
    return HELD_CHUNK_COST + 2 * size


class HeldBudget(Generic[Holder]):
    """What each flow being held holds (in :func:`held_cost` units), their total, and who gives up past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.peak = 0  # the most held at once after giving up, for the record
        self.holders: dict[Holder, int] = {}

    def hold(self, holder: Holder, size: int) -> list[Holder]:
        """``holder`` holds one more chunk of ``size`` bytes (0 for a gap). Returns the holders that must give up
        what they hold, the largest first (``holder`` itself among them, when it is one of the largest): they are
        forgotten here, and their owner lets go of what they held."""
        cost = held_cost(size)
        self.holders[holder] = self.holders.get(holder, 0) + cost
        self.total += cost
        victims = self._evict() if self.total > self.limit else []
        self.peak = max(self.peak, self.total)
        return victims

    def forget(self, holder: Holder) -> None:
        """``holder`` holds nothing any more (its flow was named, refused or closed)."""
        self.total -= self.holders.pop(holder, 0)

    def _evict(self) -> list[Holder]:
        target = self.limit * LOW_WATER
        victims: list[Holder] = []
        for holder, held in sorted(self.holders.items(), key=lambda item: item[1], reverse=True):
            if self.total <= target:
                break
            victims.append(holder)
            del self.holders[holder]
            self.total -= held
        return victims
