"""Hostile traffic against the bounds docs/hardening.md names, where the fuzz harnesses do not reach.

- HTTP: a message's header lines were kept whole (128 lines of 64 KiB, twice over: the line and its value) and
  obsolete line folding grew the last header's value without end (a megabyte of folded lines took a megabyte and
  time quadratic in it), none of it counted in ``buffered_bytes``: the session bound (2 MiB) and the run's
  dissector budget did not see it.
- Reassembly in every-port mode: each gap in a flow not yet classified was held, to be replayed once the classifier
  decided; a hole then an acknowledgement beyond it, again and again, with no newline after it (so no byte reached
  the classifier), held a gap per pair of packets for as long as the flow lived. The packet scanner's flow head
  bounds this when it reads a file; libpcap's reader (``backend="libpcap"``) and ``watch``'s flows to a server
  already found to be mail, admitted whole, did not.
- SMTP: the client's bytes after DATA (or after a lax end line) wait for the server's reply, at most
  ``MAX_HELD``; past it one wait was given up per chunk received, but what was then read could start the next wait
  at once (another DATA, another lax end), holding the rest again: a client sending ``DATA`` lines (or messages
  ending in ``\\n.\\n``) and no server answering held all it sent, each chunk copying all of it once more.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from dissectors import events as ev
from dissectors.http import HttpSession
from dissectors.linebuffer import MAX_HELD
from dissectors.session import MAX_SESSION_BYTES, MailSession
from dissectors.smtp import SmtpSession
from fuzz.amplify import deep_size
from passive.analysis.classify import classify_mail
from passive.capture.flow import Flow
from passive.capture.linklayer import ACK
from passive.capture.reassembly import Reassembler
from tests.helpers_capture import Recorder

C, S = ev.Side.CLIENT, ev.Side.SERVER
LINE = b"A" * 65_000  # just under the 64 KiB line limit: kept whole by the line buffer
NTLM_NEGOTIATE = b"TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAF1YAAAADw=="


def _retained(session: MailSession, script: list[tuple[ev.Side, bytes]]) -> tuple[int, list[ev.Event]]:
    """Bytes ``session`` retains once fed ``script`` (tracemalloc, its events dropped), and the anomalies."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        events = [e for side, data in script for e in session.receive(side, data) if isinstance(e, ev.Anomaly)]
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, events
    finally:
        tracemalloc.stop()


def _bounded(session: MailSession, retained: int) -> None:
    held = session.buffered_bytes()
    assert retained < 1024 * 1024, f"{retained} bytes retained"
    assert held <= MAX_SESSION_BYTES
    assert deep_size(session) <= held + 64 * 1024, "the accounting covers what the session reaches"


def test_http_header_lines_kept_are_bounded_in_bytes_and_counted() -> None:
    """128 header lines of 64 KiB held 16 MiB a side, unaccounted; now the message keeps MAX_HEADER_BYTES."""
    session = HttpSession()
    headers = [(C, b"X-H: " + LINE + b"\r\n")] * 128
    retained, _ = _retained(session, [(C, b"GET / HTTP/1.1\r\n"), *headers])
    _bounded(session, retained)
    events = session.receive(C, b"Authorization: NTLM " + NTLM_NEGOTIATE + b"\r\n\r\n")
    assert "too_many_headers" in [e.code for e in events if isinstance(e, ev.Anomaly)]


def test_http_folded_header_lines_do_not_grow_a_value_without_end() -> None:
    """Obsolete line folding (RFC 9112 5.2) appended every continuation to the header's value: a megabyte of them
    was held, and each copied the value so far. Continuations past the bound are dropped and counted."""
    session = HttpSession()
    folded = [(C, b" " + b"a" * 1000 + b"\r\n")] * 1000
    retained, _ = _retained(session, [(C, b"GET / HTTP/1.1\r\nX-Folded: start\r\n"), *folded])
    _bounded(session, retained)
    events = session.receive(C, b"\r\n")
    assert "too_many_headers" in [e.code for e in events if isinstance(e, ev.Anomaly)]


def test_http_credentials_after_many_headers_are_still_read_within_the_bound() -> None:
    """A request whose Authorization header comes after large headers: read while it fits, its evidence kept."""
    session = HttpSession()
    script = [(C, b"GET /ews HTTP/1.1\r\nHost: mail\r\n"), (C, b"Cookie: " + b"c" * 30_000 + b"\r\n")]
    script += [(C, b"Authorization: NTLM " + NTLM_NEGOTIATE + b"\r\n\r\n")]
    events = [e for side, data in script for e in session.receive(side, data)]
    assert [e.mechanism for e in events if isinstance(e, ev.AuthStart)] == ["NTLM"]


def test_http_state_shed_for_the_budget_resynchronises_at_the_next_request() -> None:
    session = HttpSession()
    session.receive(C, b"GET / HTTP/1.1\r\n" + b"X-H: " + LINE + b"\r\n")
    assert session.buffered_bytes() > 65_000
    session.shed()
    assert session.buffered_bytes() == 0
    events = session.receive(C, b"Content-Length: 5\r\n\r\nbody\nGET /x HTTP/1.1\r\nAuthorization: NTLM ")
    events += session.receive(C, NTLM_NEGOTIATE + b"\r\n\r\n")
    assert [e.mechanism for e in events if isinstance(e, ev.AuthStart)] == ["NTLM"]


def _segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, payload: bytes) -> tuple:
    return (src, dst, sport, dport, seq, ack, ACK, payload, len(payload), 0, 65535, 0)


def test_gaps_held_while_a_flow_is_classified_are_bounded() -> None:
    """2 000 holes, each acknowledged past (a gap), on a flow no classifier can name yet: its held events stopped
    at nothing before; now the flow is no mail past MAX_CLASSIFY_GAPS gaps, and holds nothing."""
    verdicts: list[bool] = []
    reassembler = Reassembler(
        Recorder(),
        classifier=classify_mail,
        server_ports=frozenset({25}),
        on_verdict=lambda _flow, keep: verdicts.append(keep),
    )
    client, server = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
    seq, peer = 1000, 5000
    reassembler.process(_segment(client, server, 40000, 2526, seq, peer, b"x"), 1, 0.0)
    [flow] = reassembler._flows.values()
    seq += 1
    most = 0
    for frame in range(2, 4002, 2):
        reassembler.process(_segment(client, server, 40000, 2526, seq + 1, peer, b"x"), frame, 1.0)  # a hole of 1
        reassembler.process(_segment(server, client, 2526, 40000, peer, seq + 2, b""), frame + 1, 1.0)  # acked past
        seq += 2
        most = max(most, len(flow._events or ()))
    assert most <= 64, f"{most} events held for a flow being classified"
    assert flow.state == Flow.IGNORED and verdicts == [False]
    assert reassembler.counters.flows_not_mail == 1


@pytest.mark.parametrize("unit", [b"DATA\r\n", b"DATA\r\nx\n.\n", b"DATA\r\nx\r\n.\r\n"])
@pytest.mark.parametrize("server_spoke", [False, True])
def test_smtp_bytes_held_for_a_reply_stay_within_max_held(unit: bytes, server_spoke: bool) -> None:
    """Chunks of 60 KB with no reply were all held (each chunk copying all of them: 50 chunks of DATA lines took
    0.12 s, 200 chunks 3.2 s); now at most MAX_HELD stays held between chunks, whether the server spoke
    (what waits is read as commands) or not (as messages)."""
    session = SmtpSession()
    if server_spoke:
        session.receive(S, b"220 mx.contoso.com ESMTP\r\n")
    chunk = unit * (60_000 // len(unit))
    most = 0
    for _ in range(5):
        session.receive(C, chunk)
        most = max(most, session.buffers[C].held)
    assert most <= MAX_HELD, f"{most} bytes held for a reply"
    assert session.buffered_bytes() <= MAX_SESSION_BYTES
