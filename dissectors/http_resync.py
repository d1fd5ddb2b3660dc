"""Which request an HTTP response answers after bytes of the server's were lost (a gap), sans-I/O.

Responses answer requests in order (RFC 9112 section 9.3), but the lost bytes may have held any number of them: the
requests still awaiting responses at the gap may have been answered there. Two facts of the capture still say which
request a later response answers:

* A response answers a request sent before it: at any one capture point a request passes before its response, so
  the requests captured after the response's status line are not its. When just one request awaiting a response was
  captured before it, that request is the one it answers (the others are not sent yet; those before were answered).
* An NTLM AUTHENTICATE ([MS-NLMP]) answers the server's CHALLENGE, which came in the response to the request with the
  NEGOTIATE: when the request right before an AUTHENTICATE's carried the NEGOTIATE, that request and every one before
  it were answered before the AUTHENTICATE was sent, and before any response captured after it.

Otherwise which request a response answers is not known: it gets none (no verdict), and one request (the oldest) is
no longer awaited, for every response still answers one.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import NamedTuple, Protocol

# What an NTLM message a request carried was, for the rule above.
NEGOTIATE, AUTHENTICATE = "negotiate", "authenticate"


class Sent(Protocol):
    """A request awaiting its response: the frame its request line came in, and its NTLM message's kind."""

    @property
    def frame(self) -> int | None: ...

    @property
    def ntlm(self) -> str | None: ...


class Match(NamedTuple):
    """What a response read after a gap answers: ``forgotten`` of the responses owed to requests no longer kept and
    the ``unseen`` oldest requests were answered before it (or, when not ``sure``, one of them by it); when
    ``answers``, the request after those is the one it answers. ``sure``: the requests left are those still to be
    answered, in order (the gap's doubt is over)."""

    forgotten: int
    unseen: int
    answers: bool
    sure: bool


def _sent_before(request: Sent, frame: int | None) -> bool:
    """Was ``request`` captured before the frame ``frame``? Without frame numbers, it may have been."""
    return frame is None or request.frame is None or request.frame < frame


def _past_handshake(pending: Sequence[Sent], frame: int | None) -> int:
    """How many of the oldest requests an NTLM handshake shows answered before the response in ``frame``: those up
    to the NEGOTIATE right before the latest AUTHENTICATE captured before that response."""
    for index in range(len(pending) - 1, 0, -1):
        request = pending[index]
        if request.ntlm == AUTHENTICATE and frame is not None and request.frame is not None and request.frame < frame:
            return index if pending[index - 1].ntlm == NEGOTIATE else 0
    return 0


def match_after_gap(pending: Sequence[Sent], owed: int, frame: int | None) -> Match:
    """Which of ``pending`` (oldest first, after ``owed`` responses to requests no longer kept) the response whose
    status line came in ``frame`` answers, after a gap."""
    unseen = _past_handshake(pending, frame)
    forgotten = owed if unseen else 0  # older than every request kept: answered before those
    owed -= forgotten
    candidates = owed + sum(1 for request in islice(pending, unseen, None) if _sent_before(request, frame))
    if candidates == 0:  # none sent before it: the lost bytes answered none of those left
        return Match(forgotten, unseen, False, True)
    if candidates == 1:
        return Match(forgotten + owed, unseen, not owed, True)
    # Several: which one it answers, and how many were answered among the lost bytes, is unknown. It answered one:
    # the oldest is no longer awaited (the ones left still include every one that is).
    return Match(forgotten + bool(owed), unseen + (not owed), False, False)
