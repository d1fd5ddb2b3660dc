"""Bytes dropped unread below Python (passive/capture/skipping.py): message bodies, literals nobody reads and TLS
ciphertext never reach the dissectors, and nothing any output says changes.

Sessions are cut into many segments and read with batches of two packets, so that the scanner drops most of each
body; every run is compared with skipping off (the same findings, the same counters but for those of the skipped
bytes) and between the compiled scanner and its pure-Python twin (the same notices at the same frames). Bodies are
perturbed where a careless skipper would lose the end of one: dot-stuffed lines, the end line split from its CR LF,
a retransmitted, reordered or lost segment, a FIN inside the body. The scanners are also compared on random
segments of an armed flow, notice by notice.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import passive.capture.scanner as scanning
from dissectors import linebuffer
from passive.capture import skipping
from passive.capture.delivery import TAIL_KEEP
from passive.capture.linklayer import ACK, FIN, INFO_SKIPPED, PSH
from passive.capture.pcapfile import PacketReader, sniff_kind
from passive.capture.scanner import PyScanner
from passive.capture.scanread import _cscan
from tests.helpers_capture import conversation_segments, ethernet_frames, ip4, pcap_bytes
from tests.test_scanner import assert_same, run

CLIENT, SMTP, POP3, IMAP = ("10.1.0.1", 40000), ("10.1.0.2", 25), ("10.1.0.2", 110), ("10.1.0.2", 143)
PIECE = 97  # bytes per segment: bodies become dozens of segments, cut anywhere (mid-line, mid-CRLF)
LINE = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n"
TRICKY = b"..a dot-stuffed line\r\n..\r\n. \r\n.\r.\r\n" + LINE * 3 + b".x\r\n"
BODY = (LINE * 20 + TRICKY) * 4


def plain(user: bytes, password: bytes) -> bytes:
    return base64.b64encode(b"\x00" + user + b"\x00" + password)


def smtp_turns(body: bytes = BODY) -> list[tuple[bool, bytes]]:
    return [
        (True, b"220 mx.example.com ESMTP\r\n"),
        (False, b"EHLO c\r\n"),
        (True, b"250-mx.example.com\r\n250 AUTH PLAIN LOGIN\r\n"),
        (False, b"MAIL FROM:<a@example.org>\r\n"),
        (True, b"250 ok\r\n"),
        (False, b"RCPT TO:<b@elsewhere.test>\r\n"),
        (True, b"250 ok\r\n"),
        (False, b"DATA\r\n"),
        (True, b"354 go on\r\n"),
        (False, body + b".\r\n"),
        (True, b"250 queued\r\n"),
        (False, b"AUTH PLAIN " + plain(b"alice", b"after-the-body") + b"\r\n"),
        (True, b"235 ok\r\n"),
        (False, b"QUIT\r\n"),
        (True, b"221 bye\r\n"),
    ]


def pop3_turns() -> list[tuple[bool, bytes]]:
    return [
        (True, b"+OK ready\r\n"),
        (False, b"RETR 1\r\n"),
        (True, b"+OK follows\r\n" + BODY + b".\r\n"),
        (False, b"USER bob\r\n"),
        (True, b"+OK\r\n"),
        (False, b"PASS after-the-body\r\n"),
        (True, b"+OK\r\n"),
        (False, b"QUIT\r\n"),
        (True, b"+OK bye\r\n"),
    ]


def imap_turns(size: int) -> list[tuple[bool, bytes]]:
    literal = (BODY * 2)[:size]
    return [
        (True, b"* OK ready\r\n"),
        (False, b"a1 FETCH 1 BODY[]\r\n"),
        (True, b"* 1 FETCH (BODY[] {%d}\r\n" % size + literal + b")\r\na1 OK done\r\n"),
        (False, b'a2 LOGIN carol "after-the-body"\r\n'),
        (True, b"a2 OK\r\n"),
        (False, b"a3 LOGOUT\r\n"),
        (True, b"* BYE\r\na3 OK\r\n"),
    ]


def tls_turns() -> list[tuple[bool, bytes]]:
    noise = random.Random(7).randbytes(6000)
    return [
        (True, b"220 mx ESMTP\r\n"),
        (False, b"EHLO c\r\n"),
        (True, b"250-mx\r\n250 STARTTLS\r\n"),
        (False, b"STARTTLS\r\n"),
        (True, b"220 go ahead\r\n"),
        (False, b"\x16\x03\x01" + noise[:3000]),
        (True, b"\x16\x03\x03" + noise[3000:]),
        (False, b"\x17\x03\x03" + noise[:4000]),
    ]


Seg = tuple[tuple[str, int], tuple[str, int], int, int, int, bytes]


def segments(turns: list[tuple[bool, bytes]], server: tuple[str, int], piece: int = PIECE) -> list[Seg]:
    """One connection: handshake, each turn cut into ``piece``-byte segments with a bare ACK from the peer after
    every second one and after the turn, then FINs."""
    return conversation_segments(turns, CLIENT, server, piece=piece, acks=True)


def body_index(segs: list[Seg], marker: bytes) -> int:
    return next(i for i, seg in enumerate(segs) if marker in seg[5])


def write(path: Path, segs: list[Seg]) -> Path:
    path.write_bytes(pcap_bytes(ethernet_frames(segs)))
    return path


def compare(path: Path, monkeypatch: pytest.MonkeyPatch, batch: int = 2, **options: Any) -> dict[str, Any]:
    """Skipping on and off, compiled and twin: the same findings and counters; the run with skipping on."""
    monkeypatch.setattr(scanning, "BATCH_PACKETS", batch)
    off = run(path, "auto", monkeypatch, skip_unread=False, **options)
    monkeypatch.setattr(scanning, "BATCH_PACKETS", batch)
    on = run(path, "auto", monkeypatch, **options)
    monkeypatch.setattr(scanning, "BATCH_PACKETS", batch)
    twin = run(path, "python", monkeypatch, **options)
    if _cscan is not None:
        assert_same(on, twin)
    assert on["findings"] == off["findings"]
    assert on["counts"] == off["counts"]
    assert off["skipped"] == (0, 0)
    return on


def passwords(result: dict[str, Any]) -> set[str]:
    """Every password value in the findings (secrets shown)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "password" and isinstance(item, str):
                    found.add(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(result["findings"])
    return found


def perturbed(segs: list[Seg], how: str, start: int) -> list[Seg]:
    segs = list(segs)
    i = start + 6
    if how == "retransmitted":
        segs.insert(i + 3, segs[i])
    elif how == "reordered":
        segs[i], segs[i + 1] = segs[i + 1], segs[i]
    elif how == "lost":
        del segs[i]
    return segs


@pytest.mark.parametrize("how", ["clean", "retransmitted", "reordered", "lost"])
def test_smtp_bodies_are_dropped_and_what_follows_is_read(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    segs = segments(smtp_turns(), SMTP)
    segs = perturbed(segs, how, body_index(segs, LINE))
    on = compare(write(tmp_path / "s.pcap", segs), monkeypatch)
    assert on["skipped"][0] > (0 if how == "lost" else 10)
    if how != "lost":  # a hole in the body: the rest of the session is read from the next line, as without skipping
        assert "after-the-body" in passwords(on)


@pytest.mark.parametrize("cut", [0, 1, 2, 3])
def test_the_end_line_cut_anywhere_ends_the_body(cut: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The end line's bytes (CR LF . CR LF) split between two segments at every place: the body still ends there."""
    body = LINE * 30
    turns = smtp_turns(body)
    data = turns[9][1]
    end = len(data) - 5 + cut + 1  # somewhere inside the final "\r\n.\r\n"
    pieces = [data[i : i + PIECE] for i in range(0, end - (end % PIECE or PIECE), PIECE)]
    pieces += [data[len(b"".join(pieces)) : end], data[end:]]
    segs = segments(turns[:9], SMTP)[:-3]
    client_next, s = segs[-1][2], segs[-1][3]  # the client's ACK of the 354: its next byte, the server's
    for part in pieces:
        segs.append((CLIENT, SMTP, client_next, s, PSH | ACK, part))
        client_next += len(part)
        segs.append((SMTP, CLIENT, s, client_next, ACK, b""))
    rest = segments(turns[10:], SMTP)
    shift_c, shift_s = client_next - rest[2][2], s - rest[2][3]
    for src, dst, seq, ack, flags, payload in rest[3:]:
        if src == CLIENT:
            segs.append((src, dst, seq + shift_c, ack + shift_s, flags, payload))
        else:
            segs.append((src, dst, seq + shift_s, ack + shift_c, flags, payload))
    on = compare(write(tmp_path / "cut.pcap", segs), monkeypatch)
    assert "after-the-body" in passwords(on)
    assert on["skipped"][0] > 10


def test_a_fin_inside_a_body_ends_the_dropping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    segs = segments(smtp_turns(), SMTP)
    start = body_index(segs, LINE)
    src, dst, seq, ack, _flags, payload = segs[start + 8]
    segs[start + 8] = (src, dst, seq, ack, FIN | ACK | PSH, payload)
    on = compare(write(tmp_path / "fin.pcap", segs), monkeypatch)
    assert on["skipped"][0] > 0


def test_pop3_answers_are_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on = compare(write(tmp_path / "p.pcap", segments(pop3_turns(), POP3)), monkeypatch)
    assert on["skipped"][0] > 20
    assert "after-the-body" in passwords(on)


@pytest.mark.parametrize("size", [PIECE * 30 - 13, PIECE * 30 - 13 + PIECE - 1, 4000])
def test_imap_literals_are_dropped_to_their_last_byte(
    size: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Literal sizes ending mid-segment and exactly at a segment's end."""
    on = compare(write(tmp_path / "i.pcap", segments(imap_turns(size), IMAP)), monkeypatch)
    assert on["skipped"][0] > 10
    assert "after-the-body" in passwords(on)


def test_tls_ciphertext_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on = compare(write(tmp_path / "t.pcap", segments(tls_turns(), SMTP)), monkeypatch)
    assert on["skipped"][0] > 20
    assert on["counts"]["tls_sessions"] == 1


def test_rules_are_the_dissectors() -> None:
    assert (skipping.SKIP_DOT, skipping.SKIP_RAW, skipping.SKIP_ALL) == (
        linebuffer.SKIP_DOT,
        linebuffer.SKIP_RAW,
        linebuffer.SKIP_ALL,
    )
    if _cscan is not None:
        assert _cscan.MAX_ARMED == skipping.MAX_ARMED
        assert _cscan.TAIL_KEEP == TAIL_KEEP


@pytest.mark.parametrize("differ", [False, True])
def test_a_retransmission_of_the_last_dropped_segment_is_checked_against_it(
    differ: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notice carries the last segment dropped: a retransmission of it with other bytes is an overlap conflict,
    as when it was read."""
    segs = segments(smtp_turns(), SMTP)
    i = body_index(segs, LINE) + 12
    src, dst, seq, ack, flags, payload = segs[i]
    assert src == CLIENT
    again = bytes(b ^ 1 if b not in b"\r\n." else b for b in payload) if differ else payload
    segs.insert(i + 1, (src, dst, seq, ack, flags, again))
    on = compare(write(tmp_path / "r.pcap", segs), monkeypatch)
    assert on["counts"]["overlap_conflicts"] == differ
    assert on["counts"]["retransmissions"] == 1
    assert on["skipped"][0] > 10


def _other_client(segs: list[Seg], port: int) -> list[Seg]:
    swap = {CLIENT: ("10.1.0.9", port)}
    return [(swap.get(src, src), swap.get(dst, dst), seq, ack, flags, data) for src, dst, seq, ack, flags, data in segs]


@pytest.mark.parametrize("max_flows", [1, 2, 3, 8])
def test_a_full_flow_table_evicts_as_without_skipping(
    max_flows: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another session, then a third, start while a body is dropped: the table's eviction picks the same victims
    (a flow whose packets are being dropped must not look idle to it)."""
    body = segments(smtp_turns(), SMTP)
    start = body_index(body, LINE) + 4
    mixed, rest = body[:start], body[start:]
    others = segments(smtp_turns(LINE * 3), SMTP)
    for n, seg in enumerate(_other_client(others, 40001) + _other_client(others, 40002)):
        mixed.append(seg)
        if n < len(rest):
            mixed.append(rest[n])
    mixed += rest[len(others) * 2 :]
    on = compare(write(tmp_path / "e.pcap", mixed), monkeypatch, max_flows=max_flows)
    assert on["counts"]["flows_evicted"] > 0 or max_flows > 1
    assert on["skipped"][0] > 0 or max_flows < 8


def test_a_flow_swept_idle_stays_closed_when_time_goes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A packet of another flow far later sweeps the body's flow out; its next packets carry earlier times (a
    merged capture): they are read as without skipping (a flow picked up mid-stream), not dropped as strays."""
    segs = segments(smtp_turns(), SMTP)
    i = body_index(segs, LINE) + 6
    frames = ethernet_frames(segs)
    later = ethernet_frames([(("10.9.9.9", 5555), ("10.1.0.3", 25), 1, 0, 2, b"")], start=2000.0)
    path = tmp_path / "back.pcap"
    path.write_bytes(pcap_bytes(frames[:i] + later + frames[i:]))
    for batch in (2, 5):
        on = compare(path, monkeypatch, batch)
        assert on["counts"]["flows_expired"] == 1
        assert on["counts"]["flows_partial"] == 1


# -- the two scanners on random segments of an armed flow ----------------------------------------------------------

payloads = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=40),
    st.sampled_from([b"abc\r\n", b"\r\n.", b".\r\n", b"x\n.y", b"\n", b"..\r\n", b"a" * 30, b"x\r.\ry", b"ab\r"]),
)
packets = st.lists(
    st.tuples(st.booleans(), st.integers(-3, 3), st.sampled_from([ACK | PSH, ACK, ACK | FIN, PSH, 4 | ACK]), payloads),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    script=packets,
    client_rule=st.sampled_from([0, 1, 2, 3]),
    server_rule=st.sampled_from([0, 1, 3]),
    left=st.integers(1, 120),
    line_start=st.booleans(),
    batch=st.integers(1, 5),
)
def test_both_scanners_drop_and_notice_alike(
    script: list, client_rule: int, server_rule: int, left: int, line_start: bool, batch: int, tmp_path_factory: Any
) -> None:
    if _cscan is None:
        pytest.skip("the compiled scanner is not built")
    server = ("10.1.0.2", 25)
    c, s = 1000, 5000
    segs: list[Seg] = []
    for from_server, jitter, flags, payload in script:
        seq = (s if from_server else c) + (jitter if jitter < -1 or jitter > 1 else 0)
        if from_server:
            segs.append((server, CLIENT, seq & 0xFFFFFFFF, c, flags, payload))
            s += len(payload)
        else:
            segs.append((CLIENT, server, seq & 0xFFFFFFFF, s, flags, payload))
            c += len(payload)
    path = tmp_path_factory.mktemp("armed") / "a.pcap"
    write(path, segs)
    rules = (client_rule, 1000, left, line_start, server_rule, 5000, left, not line_start)
    outputs = []
    for scanner in (
        _cscan.Scanner(str(path), ports=[25], batch_packets=batch),
        PyScanner(_packets(path), ports=[25], batch_packets=batch),
    ):
        scanner.skip_flow(ip4(CLIENT[0]), CLIENT[1], ip4(server[0]), server[1], 1000.0, *rules)
        items = []
        while (batch_items := scanner.next_batch()) is not None:
            items += batch_items
        outputs.append(items)
    assert outputs[0] == outputs[1]
    notices = [item for item in outputs[0] if item[2] is not None and item[2][9] & INFO_SKIPPED]
    dropped = sum(notice[2][11][0] for notice in notices)
    assert dropped + len(outputs[0]) - len(notices) == len(segs)


def _packets(path: Path) -> Any:
    return PacketReader(path, sniff_kind(path))


@settings(max_examples=100, deadline=None)
@given(
    script=st.lists(st.tuples(st.booleans(), st.sampled_from([0.0, 0.5, 2.0, 4.0, -3.0]), payloads), max_size=30),
    forget_after=st.integers(0, 8),
    batch=st.integers(1, 4),
)
def test_both_scanners_forget_alike_at_sweeps_and_when_told(
    script: list, forget_after: int, batch: int, tmp_path_factory: Any
) -> None:
    """Sweep ticks (capture time jumping on and back) and ``skip_none`` between batches: the same notices."""
    if _cscan is None:
        pytest.skip("the compiled scanner is not built")
    c, s, now = 1000, 5000, 1000.0
    frames = []
    for from_server, step, payload in script:
        now += step
        seg = (SMTP, CLIENT, s, c, ACK, payload) if from_server else (CLIENT, SMTP, c, s, ACK, payload)
        frames += ethernet_frames([seg], start=now)
        s, c = (s + len(payload), c) if from_server else (s, c + len(payload))
    path = tmp_path_factory.mktemp("swept") / "s.pcap"
    path.write_bytes(pcap_bytes(frames))
    rules = (skipping.SKIP_ALL, 1000, 0, False, skipping.SKIP_ALL, 5000, 0, False)
    settings = {"ports": [25], "batch_packets": batch, "sweep_every": 1.0, "idle_timeout": 3.0}
    outputs = []
    for scanner in (_cscan.Scanner(str(path), **settings), PyScanner(_packets(path), **settings)):
        scanner.skip_flow(ip4(CLIENT[0]), CLIENT[1], ip4(SMTP[0]), SMTP[1], 1000.0, *rules)
        items, batches = [], 0
        while (batch_items := scanner.next_batch()) is not None:
            items += batch_items
            batches += 1
            if batches == forget_after:
                scanner.skip_none()
        outputs.append(items)
    assert outputs[0] == outputs[1]


def _literal_turns(size: int) -> list[tuple[bool, bytes]]:
    literal = (BODY * 2)[:size]
    return [(True, b"* 1 FETCH (BODY[] {%d}\r\n" % size), (True, literal + b")\r\n")]


@pytest.mark.parametrize("cut", [2, 3])
def test_what_is_read_last_is_dated_by_data_not_by_a_bare_ack(
    cut: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server sends bare ACKs of its own amid a literal, and the capture ends inside it: the client's literal
    that never got its verdict is read at the end, dated by the last bytes the session had (not by an ACK)."""
    turns = [(True, b"* OK ready\r\n"), (False, b"a1 LOGIN {5}\r\n"), (False, b"alice {6}\r\n"), *_literal_turns(4000)]
    segs: list[Seg] = []
    for seg in segments(turns, IMAP):
        segs.append(seg)
        src, dst, seq, ack, _flags, payload = seg
        if src == IMAP and LINE[:10] in payload:
            segs.append((src, dst, (seq + len(payload)) & 0xFFFFFFFF, ack, ACK, b""))
    on = compare(write(tmp_path / "a.pcap", segs[: body_index(segs, LINE) + 7 + cut]), monkeypatch)
    assert on["skipped"][0] > 2


def test_a_session_the_budget_may_shed_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another session's bytes run the dissector budget out while a literal is dropped: the session that gives up
    its state (commands awaiting replies) dates that by its latest bytes, so it is never one being dropped."""
    commands = b"".join(b"a%d NOOP\r\n" % n for n in range(2, 12))
    turns = [(True, b"* OK ready\r\n"), (False, b"a1 FETCH 1 BODY[]\r\n" + commands), *_literal_turns(4000)]
    first = segments(turns, IMAP)
    other = _other_client(segments([(True, b"* OK ready\r\n"), (False, b"x" * 97), (False, b"y" * 97)], IMAP), 40001)
    start = body_index(first, LINE) + 6
    mixed, rest = first[:start], first[start:]
    for n, seg in enumerate(other):
        mixed += [seg, *rest[2 * n : 2 * n + 2]]
    mixed += rest[2 * len(other) :]
    for max_flows in (4, 10_000):
        on = compare(write(tmp_path / "b.pcap", mixed), monkeypatch, max_dissector_bytes=500, max_flows=max_flows)
        assert on["counts"]["dissector_evictions"] >= 2


def test_a_flow_is_as_idle_as_its_last_packet_whichever_direction_sent_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ciphertext both ways, the server's last packet before the client's, then ten seconds short of the idle
    timeout after the client's last another flow's packet makes the sweep: the flow is not idle (its latest time is
    the client's packet, not the server's), as when both were read. No sweep between the two."""
    segs = segments(tls_turns(), SMTP)[:-3]
    s, c = segs[-1][2], segs[-1][3]  # the server's bare ACK: its next sequence number, the client's
    record = b"\x17\x03\x03" + bytes(200)
    tail = [(SMTP, CLIENT, s, c, PSH | ACK, record), (CLIENT, SMTP, c, s + len(record), PSH | ACK, record)]
    sweeper = [(("10.9.9.9", 5555), ("10.1.0.3", 25), 1, 0, 2, b"")]
    frames = ethernet_frames(segs)
    start = frames[-1][0]
    frames += ethernet_frames(tail[:1], start + 1) + ethernet_frames(tail[1:], start + 20)
    frames += ethernet_frames(sweeper, start + 20 + 300 - 10)
    path = tmp_path / "idle.pcap"
    path.write_bytes(pcap_bytes(frames))
    on = compare(path, monkeypatch)
    assert on["counts"]["flows_expired"] == 0
    assert on["skipped"][1] >= 2 * len(record)
