"""Which request an HTTP response answers after bytes were lost (a gap) or a flow was picked up mid-stream, sans-I/O.

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

Those rules hold for responses; whether a status line found after a gap is one is decided first (:class:`Doubt`).
A gap inside a body whose length says where it ends (``Content-Length``, a chunk, a body read to the close), no
further than that end, lost only body bytes: the parser reads on where it was, and nothing is in doubt
(``HttpSession._gap``). Any other gap of the server's, and a flow picked up mid-stream, leave the server's bytes read
from a place not known (:attr:`Doubt.adrift`): a status line found there may be a body's text (a page that shows an
HTTP exchange), and is taken for a response only by :meth:`Doubt.trusts`. Requests lost in the client's bytes are
not counted: the responses past those to the requests sent before the gap answer them or later ones, unknown which
(:meth:`Doubt.past_kept`), until a response ends with no request awaiting one (:meth:`Doubt.response_ended`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass
class Doubt:
    """What a connection's lost bytes leave unknown. The server's side: whether its bytes are read from a known place
    (``adrift`` when not), and of its latest chunk (a TCP segment, as the capture hands them on) the frame and the
    frame of the one before (None: lost bytes came between, whose time is not known) and whether it began at a
    line's start (``head``, until a line of it is read). The client's: ``lost`` after a gap of the client's, with
    ``kept`` the requests sent before the gap still awaiting responses; ``unknown`` while the response being read is
    one past those (:meth:`past_kept`)."""

    adrift: bool = False
    head: bool = False
    before: int | None = None
    latest: int | None = None
    lost: bool = False
    kept: int = 0
    unknown: bool = False

    def server_chunk(self, frame: int | None, at_line_start: bool) -> None:
        """The server's bytes of ``frame`` come next (or were dropped unread: then ``at_line_start`` is False)."""
        self.before, self.latest, self.head = self.latest, frame, at_line_start

    def server_gap(self, where_known: bool) -> None:
        """Bytes of the server's were lost; ``where_known``: inside a body that says where it ends."""
        self.adrift = self.adrift or not where_known
        self.latest = None

    def trusts(self, after: int | None, pending: Sequence[Sent], frame: int | None) -> bool:
        """While adrift, is the status line that came in ``frame`` a response? Yes when it began a segment of the
        server's whose segment before came in frame ``after`` (None: it began no segment, or lost bytes came
        between), and that was captured before the latest of ``pending`` captured before the status line: the
        server wrote nothing between that request and this line, and began a write with it. A server begins a
        response in a new write, and only a body cut by the server right before a status line of its text, and
        held back until the request came, would pass for one. A status line found in the middle of the server's
        bytes, or after lost bytes whose time is not known, may be a body's text."""
        if after is None or frame is None:
            return False
        sent = [request.frame for request in pending if request.frame is not None and request.frame < frame]
        return bool(sent) and after < max(sent)

    def client_gap(self, awaiting: int) -> None:
        """Bytes of the client's were lost, ``awaiting`` requests awaiting responses: those (or, after an earlier
        client gap, those still kept from before it) are answered first, in order; how many requests follow is not
        known."""
        self.kept = min(self.kept, awaiting) if self.lost else awaiting
        self.lost = True

    def answered(self, count: int = 1) -> None:
        """``count`` of the oldest requests were answered (or forgotten): fewer of those kept are left."""
        self.kept -= min(self.kept, count)

    def past_kept(self, owed: int) -> bool:
        """Does the response being read answer a request lost in the client's bytes or one after them, unknown which
        (no request kept, nor a response owed to a forgotten one, left before them)?"""
        self.unknown = self.lost and not self.kept and not owed
        return self.unknown

    def response_ended(self, awaiting: int) -> None:
        """A response ended: one past the kept requests, with no request captured awaiting one, ends the doubt: the
        next request's response is taken for its own. That takes the lost requests for answered by then, as a server
        does unless it holds one back past the end of a response while the client waits."""
        if self.unknown and not awaiting:
            self.lost = False
        self.unknown = False
