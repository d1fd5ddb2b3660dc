"""Reassembly policies: whose bytes win where segments overlap, and what the receiver refuses.

A passive analyzer sees every segment the sender put on the wire; the receiver's application sees only what its
TCP stack accepted. Where the two differ (overlapping segments with different bytes, a RST the receiver ignores,
data beyond the receiver's window) a sender can show the analyzer a decoy while the server reads the real thing.
The reassembler therefore follows a receiver's rules, named by a policy. The overlap rules are those of Suricata's
target-based reassembly (``stream-tcp-list.c``, after Novak's "Target-Based TCP Stream Reassembly"), applied per
buffered segment by comparing the new segment's bounds with the original bounds of the segment that brought the
buffered bytes:

``linux`` (default)
    The new segment wins if it starts before the buffered one, or starts at the same place and ends after it;
    otherwise the buffered bytes stay. A segment starting exactly where a buffered one ends joins it (Linux
    ``tcp_data_queue_ofo`` coalesces them), so later segments are compared with the joined bounds. Checked against
    a Linux receiver by ``tests/test_receiver.py``.
``bsd``, ``windows``
    The new segment wins if it starts before the buffered one (FreeBSD ``tcp_reass``: a preceding segment keeps
    its bytes, following ones are trimmed). Suricata applies this rule to BSD, Windows, macOS, HP-UX 10 and IRIX.
``solaris``
    The new segment wins if it ends after the buffered one, or ends at the same place and starts no later
    (Suricata's Solaris and HP-UX 11 rule).
``first``
    The bytes seen first always stay, and nothing is refused: no RST, window or FIN check. This is how leakscope
    reassembled before policies existed; it suits captures that miss much of one direction, where the receiver's
    window and sequence numbers cannot be followed.
``last``
    The bytes seen last win (over buffered bytes).

Under every policy:

* bytes already handed on (the receiver's application has them too) are never replaced: a segment overlapping
  them is trimmed to what is new;
* in-order data is one more segment compared with the buffered ones: it starts before all of them, so it wins
  under ``linux``, ``bsd``, ``windows`` and ``last``.

Except under ``first`` (``validates`` false), the reassembler also refuses what an RFC 5961 receiver refuses:

* a RST whose sequence number is not exactly the next expected one (or, after the sender's FIN, the one before;
  or the end of the highest buffered data when SACK was negotiated; or what the receiver acknowledged beyond a
  hole in the capture). Linux answers an in-window RST with a challenge ACK and ignores others; BSD and Windows
  (per Suricata) accept only the exact sequence number too;
* data starting at or beyond the right edge of the receiver's window (its latest acknowledgement plus its
  advertised window, scaled by the window scale option of both SYNs; followed only when both SYNs were seen);
* a FIN that comes before data already delivered, or that data went past.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from passive.core.errors import CaptureError

OverlapRule = Callable[[int, int, int, int], bool]
"""(new start, new end, buffered segment's start, its end) -> whether the new segment's bytes win."""


def _linux(new_start: int, new_end: int, old_start: int, old_end: int) -> bool:
    return new_start < old_start or (new_start == old_start and new_end > old_end)


def _bsd(new_start: int, new_end: int, old_start: int, old_end: int) -> bool:
    return new_start < old_start


def _solaris(new_start: int, new_end: int, old_start: int, old_end: int) -> bool:
    return new_end > old_end or (new_end == old_end and new_start <= old_start)


def _first(new_start: int, new_end: int, old_start: int, old_end: int) -> bool:
    return False


def _last(new_start: int, new_end: int, old_start: int, old_end: int) -> bool:
    return True


@dataclass(frozen=True)
class ReassemblyPolicy:
    """How one kind of receiver reassembles TCP: who wins an overlap, what it refuses."""

    name: str
    new_wins: OverlapRule
    validates: bool  # refuse what the receiver refuses: inexact RSTs, data beyond the window, stale FINs
    coalesces: bool  # a segment starting where a buffered one ends joins it (Linux)
    summary: str


POLICIES = {
    policy.name: policy
    for policy in (
        ReassemblyPolicy("linux", _linux, True, True, "Linux receivers (tcp_data_queue_ofo, RFC 5961 RSTs)"),
        ReassemblyPolicy("bsd", _bsd, True, False, "FreeBSD, macOS: earlier start wins"),
        ReassemblyPolicy("windows", _bsd, True, False, "Windows: earlier start wins (Suricata's rule for Windows)"),
        ReassemblyPolicy("solaris", _solaris, True, False, "Solaris, HP-UX 11: later end wins"),
        ReassemblyPolicy("first", _first, False, False, "first bytes seen win; no RST, window or FIN checks"),
        ReassemblyPolicy("last", _last, True, False, "last bytes seen win over buffered ones"),
    )
}

DEFAULT_POLICY = "linux"
"""Most mail servers run Linux; a policy that does not match the receiver lets a sender show the analyzer a decoy."""


def policy_named(name: str) -> ReassemblyPolicy:
    """The policy called ``name``; :class:`CaptureError` naming the choices otherwise."""
    policy = POLICIES.get(name)
    if policy is None:
        raise CaptureError(f"unknown reassembly policy {name!r} (use {', '.join(POLICIES)})")
    return policy
