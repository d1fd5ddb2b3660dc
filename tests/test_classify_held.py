"""What flows not yet named hold, all together: the reassembler's flows being classified (every-port mode) and the
analysis's flows whose port check goes on (:mod:`passive.capture.held`).

Each such flow held one object per chunk, bounded per flow in bytes only: sent a byte per segment, 1 000 flows being
classified held 4 million chunks (850 MiB), 1 000 port checks 2 million (260 MiB), and the flow table admits
10 000 flows. Now past a bound across flows the flows holding the most give up, counted in the summary; flows named
by their first lines are read exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dissectors.registry import CARRIER_PORTS
from passive.analysis.classify import MAX_PORT_CHECK_HELD, classify_mail
from passive.analysis.pipeline import Analysis, AnalysisOptions, analyze_captures
from passive.capture.classifying import MAX_CLASSIFY_HELD
from passive.capture.flow import Direction, Flow
from passive.capture.held import held_cost
from passive.capture.linklayer import ACK, SYN
from passive.capture.reassembly import Reassembler
from tests.helpers_capture import (
    Recorder,
    conversation_segments,
    ethernet_frames,
    interleaved,
    pcap_bytes,
    smtp_session_segments,
    write,
)

SERVER = b"\x0a\x00\x00\x02"
GREETING = b"220 mx.example.com ESMTP Postfix\r\n"


def _client(number: int) -> bytes:
    return (0x0B000000 + number).to_bytes(4, "big")


def _segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes) -> tuple:
    return (src, dst, sport, dport, seq, ack, flags, data, len(data), 0, 65535, 0)


def _open(reassembler: Reassembler, client: bytes, port: int, frame: int) -> None:
    """The handshake of a flow from ``client``:40000 to the server's ``port`` (client ISN 1000, server 5000)."""
    reassembler.process(_segment(client, SERVER, 40000, port, 1000, 0, SYN, b""), frame, 0.0)
    reassembler.process(_segment(SERVER, client, port, 40000, 5000, 1001, SYN | ACK, b""), frame, 0.0)


def _classifying_held(reassembler: Reassembler) -> int:
    """What the flows being classified hold, from their held events (not from the budget's own accounting)."""
    total = 0
    for flow in reassembler._flows.values():
        for event in flow._events or ():
            total += held_cost(len(event[2].data) if event[0] == "data" else 0)
    return total


def test_flows_being_classified_hold_within_the_bound_and_the_largest_give_up() -> None:
    """160 flows on a port that says nothing, each sending 900 one-byte segments that never name it, and one SMTP
    server whose greeting comes in two pieces around the flood: the flood's flows holding the most are dropped as
    no mail (``classify_evictions``); the SMTP flow, holding little, is named and replayed with its frames."""
    verdicts: list[tuple[int, bool]] = []
    recorder = Recorder()
    reassembler = Reassembler(
        recorder,
        classifier=classify_mail,
        server_ports=frozenset({25}),
        on_verdict=lambda f, k: verdicts.append((f.id, k)),
    )
    mail = _client(999)
    _open(reassembler, mail, 2525, 1)
    reassembler.process(_segment(SERVER, mail, 2525, 40000, 5001, 1001, ACK, GREETING[:20]), 2, 0.1)
    flows = 160
    for number in range(flows):
        _open(reassembler, _client(number), 2526, 3)
    most, frame = _flood(reassembler, flows, 900, 2526, 1001, 5001, lambda: _classifying_held(reassembler))
    assert most <= MAX_CLASSIFY_HELD, f"{most} held while classifying"
    assert reassembler.held.total == _classifying_held(reassembler) and reassembler.held.peak <= MAX_CLASSIFY_HELD
    counters = reassembler.counters
    dropped = [flow for flow in reassembler._flows.values() if flow.state == Flow.IGNORED]
    assert counters.classify_evictions == len(dropped) == counters.flows_not_mail > 0
    assert [keep for _id, keep in verdicts] == [False] * len(dropped)
    reassembler.process(_segment(SERVER, mail, 2525, 40000, 5021, 1001, ACK, GREETING[20:]), frame + 1, 2.0)
    [record] = [r for r in recorder.flows if r.flow.server_port == 2525]
    assert record.flow.label == "smtp" and record.server_data == GREETING
    assert [chunk.frame for chunk in record.chunks[Direction.SERVER_TO_CLIENT]] == [2, frame + 1]


def test_port_checks_hold_within_the_bound_and_the_largest_read_the_port() -> None:
    """80 flows on port 25 whose check keeps waiting (a greeting naming no mail server, a shared command, then a
    line in one-byte pieces), and one whose greeting is still coming: the checks holding the most end as at a gap,
    the port's protocol standing (``port_check_evictions``, read as SMTP); the small one goes on, then is confirmed."""
    analysis = Analysis()
    reassembler = Reassembler(analysis.handler_factory, classifier=classify_mail, server_ports=CARRIER_PORTS)
    small = _client(999)
    _open(reassembler, small, 25, 1)
    reassembler.process(_segment(SERVER, small, 25, 40000, 5001, 1001, ACK, b"220 mx.exa"), 2, 0.1)
    flows = 80
    for number in range(flows):
        client = _client(number)
        _open(reassembler, client, 25, 3)
        reassembler.process(_segment(SERVER, client, 25, 40000, 5001, 1001, ACK, b"220 x\r\n"), 4, 0.5)
        reassembler.process(_segment(client, SERVER, 40000, 25, 1001, 5008, ACK, b"NOOP\r\n"), 5, 0.5)
    most, frame = _flood(reassembler, flows, 1000, 25, 1007, 5008, lambda: _checks_held(reassembler))
    assert most <= MAX_PORT_CHECK_HELD, f"{most} held by port checks"
    assert analysis.held.total == _checks_held(reassembler) and analysis.held.peak <= MAX_PORT_CHECK_HELD
    given_up = [h for h in _handlers(reassembler) if h.mail is not None]
    assert analysis.stats.port_check_evictions == len(given_up) > 0 and analysis.flows_ignored == 0
    assert all(h.protocol == "smtp" for h in given_up)
    [waiting] = [f.handler for f in reassembler._flows.values() if f.client_addr == small]
    assert waiting is not None and waiting.check is not None and waiting.mail is None
    reassembler.process(_segment(SERVER, small, 25, 40000, 5011, 1001, ACK, b"mple.com ESMTP\r\n"), frame + 1, 2.0)
    assert waiting.check is None and waiting.mail is not None and waiting.protocol == "smtp"
    assert analysis.stats.to_dict()["port_check_evictions"] == len(given_up)


def _handlers(reassembler: Reassembler) -> list:
    return [flow.handler for flow in reassembler._flows.values() if flow.handler is not None]


def _checks_held(reassembler: Reassembler) -> int:
    """What the flows' port checks hold, from the chunks they hold (not from the budget's own accounting)."""
    checks = [handler.check for handler in _handlers(reassembler) if handler.check is not None]
    return sum(held_cost(len(data)) for check in checks for _side, data, _frame, _time in check.held)


def test_flows_named_by_their_first_lines_never_touch_the_budgets() -> None:
    """Normal classification is unchanged: SMTP on an unusual port named by its greeting, and an SMTP session on
    port 25 whose greeting confirms the port, are read whole with their frames; neither budget ever held a byte."""
    analysis = Analysis()
    reassembler = Reassembler(analysis.handler_factory, classifier=classify_mail, server_ports=CARRIER_PORTS)
    recorder = Recorder()
    named = Reassembler(recorder, classifier=classify_mail, server_ports=CARRIER_PORTS)
    for target, port in ((named, 2600), (reassembler, 25)):
        _open(target, _client(1), port, 1)
        target.process(_segment(SERVER, _client(1), port, 40000, 5001, 1001, ACK, GREETING), 2, 0.1)
        target.process(_segment(_client(1), SERVER, 40000, port, 1001, 5035, ACK, b"EHLO a\r\n"), 3, 0.2)
    [record] = recorder.flows
    assert record.flow.label == "smtp" and record.server_data == GREETING and record.client_data == b"EHLO a\r\n"
    assert [(chunk.frame, chunk.offset) for chunk in record.chunks[0]] == [(3, 0)]
    assert [(chunk.frame, chunk.offset) for chunk in record.chunks[1]] == [(2, 0)]
    [handler] = _handlers(reassembler)
    assert handler.check is None and handler.mail is not None and handler.protocol == "smtp"
    assert named.held.peak == 0 and analysis.held.peak == 0


def test_port_checks_given_up_are_counted_the_same_with_two_workers(tmp_path: Path) -> None:
    """The budget is a worker's, its count the run's: each capture read whole by one worker, the summary says what
    one process's says."""
    flood = [(False, b"NOOP\r\n")] + [(False, b"x")] * 60
    flows = [
        conversation_segments([(True, b"220 x\r\n"), *flood], client=(f"10.0.1.{n}", 40000), server=("10.0.0.2", 25))
        for n in range(1, 11)
    ]
    path = write(tmp_path / "checks.pcap", pcap_bytes(ethernet_frames(interleaved([*flows, smtp_session_segments()]))))
    counts = []
    for jobs in (1, 2):
        options = AnalysisOptions(jobs=jobs, max_port_check_held=20 * held_cost(1))
        results = analyze_captures([str(path), str(path)], options)
        counts.append(results.counts())
    assert counts[0]["port_check_evictions"] > 0
    assert counts[0] == counts[1]


def _flood(
    reassembler: Reassembler, flows: int, rounds: int, port: int, seq: int, ack: int, held: Callable[[], int]
) -> tuple[int, int]:
    """``rounds`` one-byte segments from each of ``flows`` clients (frames from 11 on), the most ``held`` said while
    they came, and the last frame."""
    most, frame = 0, 10
    for k in range(rounds):
        for number in range(flows):
            frame += 1
            reassembler.process(_segment(_client(number), SERVER, 40000, port, seq + k, ack, ACK, b"x"), frame, 1.0)
        if k % 50 == 0:
            most = max(most, held())
    return max(most, held()), frame


def _named_by_greeting(server: bytes, _client: bytes) -> str | None:
    return None if not server else "smtp" if server.startswith(b"220 ") else ""


def test_bytes_of_a_segment_whose_acknowledgement_named_its_flow_no_mail_are_not_held() -> None:
    """A segment's acknowledgement is read before its bytes: where it closes the peer's hole and the bytes after it
    name the flow no mail, the segment's own bytes (out of order) went into the dropped flow's buffer, counted in
    the run's buffered total for good. Left so, flows doing this fill ``max_total_buffer``, and then every other
    flow's segment out of order turns its hole into a gap at once, whatever a retransmission brings next."""
    reassembler = Reassembler(Recorder(), classifier=_named_by_greeting, max_total_buffer=600)
    _open(reassembler, _client(1), 2525, 1)
    reassembler.process(_segment(_client(1), SERVER, 40000, 2525, 1001, 5001, ACK, b""), 2, 0.0)
    reassembler.process(_segment(SERVER, _client(1), 2525, 40000, 5011, 1001, ACK, b"HTTP/1.1 200 OK\r\n"), 3, 0.0)
    reassembler.process(_segment(_client(1), SERVER, 40000, 2525, 1101, 5028, ACK, b"x" * 500), 4, 0.0)
    _open(reassembler, _client(2), 2526, 5)  # a mail flow whose greeting comes after the reply that follows it
    later = _segment(SERVER, _client(2), 2526, 40000, 5001 + len(GREETING), 1001, ACK, b"250 ok\r\n" * 25)
    reassembler.process(later, 6, 0.0)
    reassembler.process(_segment(SERVER, _client(2), 2526, 40000, 5001, 1001, ACK, GREETING), 7, 0.0)
    assert reassembler.counters.buffer_cap_hits == 0  # the greeting's hole was waited for, not made a gap
