"""What a receiver refuses, or reads otherwise, for a segment's TCP options and urgent pointer
(passive.capture.tcpoptions): a decoy with an old timestamp or an unexpected signature is no bytes the server read,
and an urgent byte is not among the bytes it read. tests/test_receiver.py shows a Linux receiver doing each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

import passive.capture.scanner as scanning
from passive.capture.linklayer import (
    LINKTYPE_ETHERNET,
    OPT_BAD_SIGNATURE,
    OPT_SHIFT_MASK,
    OPT_SIGNED,
    OPT_TIMESTAMP,
    OPT_TSVAL_SHIFT,
    OPT_WSCALE,
    decode_tcp,
)
from passive.capture.scanread import _cscan
from tests.helpers_capture import conversation_segments, pcap_bytes
from tests.test_checksums import DECOY, REAL, _summary
from tests.test_relay_transactions import CLIENT, SERVER, analyze, relays, transaction, turns
from tests.test_scanner import assert_same, run

MD5 = ("MD5", b"\x00" * 16)  # scapy's name for option kind 19: a TCP MD5 signature (RFC 2385), any digest
Plant = Callable[[int], tuple[list, bytes]]  # the sender's clock -> (the decoy's options, its bytes)


def _capture(
    path: Path,
    script: str,
    plant: Plant | None = None,
    timestamps: bool = True,
    syn_options: list | None = None,
    real: bytes | None = REAL,
    real_options: Callable[[int], list] | None = None,
    at: bytes = b"RCPT",
) -> Path:
    """``script`` as one connection whose segments carry timestamps (each side's clock one tick a segment) unless
    ``timestamps`` is false; right before the client's first segment starting with ``at``, the segment ``plant``
    makes (same sequence number), and that segment carries ``real`` (its own bytes for None; with ``real_options``
    in place of its timestamp, when given)."""
    segments = conversation_segments(turns(script), CLIENT, SERVER)
    clocks = {CLIENT: 1_000, SERVER: 70_000}
    out: list[tuple[float, bytes]] = []
    planted = False
    for index, (src, dst, seq, ack, flags, payload) in enumerate(segments):
        clocks[src] += 1
        stamp = [("Timestamp", (clocks[src], clocks[dst] if ack else 0))] if timestamps else []
        options = stamp + (syn_options or []) if flags & 0x02 else stamp
        header = Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb") / IP(src=src[0], dst=dst[0])
        ts = 1000.0 + index * 0.001
        if payload.startswith(at) and src == CLIENT and not planted:
            planted = True
            if plant is not None:
                extra, decoy = plant(clocks[src])
                tcp = TCP(sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=flags, window=65535, options=extra)
                out.append((ts - 0.0005, bytes(header / tcp / Raw(decoy))))
            payload = payload if real is None else real
            options = real_options(clocks[src]) if real_options is not None else options
        tcp = TCP(sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=flags, window=65535, options=options)
        out.append((ts, bytes(header / tcp / Raw(payload)) if payload else bytes(header / tcp)))
    path.write_bytes(pcap_bytes(out))
    return path


def _old_timestamp(clock: int) -> tuple[list, bytes]:
    return [("Timestamp", (clock - 500, 0))], DECOY


def _signed(clock: int) -> tuple[list, bytes]:
    return [("Timestamp", (clock, 0)), MD5], DECOY


LOCAL = transaction(rcpts=("a@contoso.com",))


def test_the_decoders_read_timestamps_signatures_and_urgent_pointers() -> None:
    tcp = TCP(sport=1, dport=25, flags="PAU", urgptr=7, options=[("Timestamp", (123456, 0)), MD5])
    frame = bytes(
        Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb")
        / IP(src="192.0.2.1", dst="192.0.2.2")
        / tcp
        / Raw(b"x" * 10)
    )
    segment = decode_tcp(LINKTYPE_ETHERNET, frame)
    assert isinstance(segment, tuple)
    options = segment[11]
    assert options & OPT_TIMESTAMP and options & OPT_SIGNED
    assert options >> OPT_TSVAL_SHIFT == 123456 and options >> 16 & 0xFFFF == 7


def test_a_foreign_rcpt_with_an_old_timestamp_is_no_open_relay(tmp_path: Path) -> None:
    """Both SYNs carried timestamps: the decoy's TSval is older than what the server kept, so it discards it."""
    pcap = _capture(tmp_path / "paws.pcap", LOCAL, _old_timestamp)
    assert relays(analyze(pcap)) == []
    assert _summary(pcap)["option_drops"] == 1
    assert relays(analyze(pcap, "--reassembly", "first")) == [("open-relay", "high", True)]


def test_real_bytes_with_an_old_timestamp_are_what_the_server_discards(tmp_path: Path) -> None:
    """The other way round: the foreign RCPT comes first with a right timestamp, the local one with an old one is
    discarded. The server read the foreign RCPT and accepted it: an open relay, found."""
    pcap = _capture(
        tmp_path / "paws-real.pcap",
        LOCAL,
        lambda clock: ([("Timestamp", (clock, 0))], DECOY),
        real_options=lambda clock: [("Timestamp", (clock - 500, 0))],
    )
    assert relays(analyze(pcap)) == [("open-relay", "high", True)]


def test_timestamps_are_not_judged_where_the_handshake_did_not_agree_on_them(tmp_path: Path) -> None:
    """No timestamps in the SYNs: the receiver takes the decoy whatever its TSval (Linux ignores the option)."""
    pcap = _capture(tmp_path / "no-paws.pcap", LOCAL, _old_timestamp, timestamps=False)
    assert relays(analyze(pcap)) == [("open-relay", "high", True)]


def test_a_foreign_rcpt_with_a_signature_the_server_expects_none_of_is_no_open_relay(tmp_path: Path) -> None:
    pcap = _capture(tmp_path / "md5.pcap", LOCAL, _signed)
    assert relays(analyze(pcap)) == []
    assert _summary(pcap)["option_drops"] == 1
    signed = _capture(tmp_path / "md5-syn.pcap", LOCAL, _signed, syn_options=[MD5])
    assert relays(analyze(signed)) == [("open-relay", "high", True)]  # a signed connection: not checked, read


def _urgent_capture(path: Path, pointer: int) -> Path:
    """The RCPT ``a@contoso.comm`` sent with the URG flag and ``pointer``."""
    real = b"RCPT TO:<a@contoso.comm>\r\n"
    segments = conversation_segments(turns(LOCAL), CLIENT, SERVER)
    out: list[tuple[float, bytes]] = []
    for index, (src, dst, seq, ack, flags, payload) in enumerate(segments):
        urgent = payload.startswith(b"RCPT")
        tcp = TCP(
            sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=flags | (0x20 if urgent else 0), window=65535,
            urgptr=pointer if urgent else 0,
        )  # fmt: skip
        body = real if urgent else payload
        frame = Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb") / IP(src=src[0], dst=dst[0]) / tcp
        out.append((1000.0 + index * 0.001, bytes(frame / Raw(body)) if body else bytes(frame)))
    path.write_bytes(pcap_bytes(out))
    return path


def test_the_urgent_byte_is_not_what_the_server_read(tmp_path: Path) -> None:
    """The urgent pointer names the second ``m`` (the byte before where it points): the server read
    ``a@contoso.com``, its own domain; the monitor that keeps the byte sees a foreign one."""
    pointer = b"RCPT TO:<a@contoso.comm>\r\n".index(b"m>") + 1
    pcap = _urgent_capture(tmp_path / "urgent.pcap", pointer)
    assert relays(analyze(pcap)) == []
    assert _summary(pcap)["urgent_bytes"] == 1
    assert relays(analyze(pcap, "--reassembly", "first")) == [("open-relay", "high", True)]


def test_an_urgent_pointer_of_one_names_the_first_byte(tmp_path: Path) -> None:
    """A pointer of 1 names the segment's first byte: one urgent byte, taken out wherever it is."""
    pcap = _urgent_capture(tmp_path / "urgent-first.pcap", 1)
    assert _summary(pcap)["urgent_bytes"] == 1


@pytest.mark.parametrize("every_port", [True, False], ids=["every-port", "ports-only"])
def test_both_scanners_judge_options_alike(every_port: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also inside a message body, whose bytes the compiled scanner drops unread: a decoy ending it with an old
    timestamp or a signature is handed over to be judged (and dropped), not taken for the body's end."""
    body = ["C: DATA", "S: 354 go", *[f"C: line {i} of the body" for i in range(40)], "C: .", "S: 250 ok"]
    script = transaction(*body, rcpts=("a@contoso.com",))

    def end(old: bool) -> Plant:  # a decoy ending the body: an old timestamp, or a signature
        stamp = [("Timestamp", (0, 0))]
        return lambda clock: (
            [("Timestamp", (clock - 500, 0))] if old else [*stamp[:0], ("Timestamp", (clock, 0)), MD5],
            b".\r\n",
        )

    captures = {
        "paws": _capture(tmp_path / "paws.pcap", script, _old_timestamp),
        "md5": _capture(tmp_path / "md5.pcap", script, _signed),
        "paws in a body": _capture(tmp_path / "body-paws.pcap", script, end(True), real=None, at=b"line 20"),
        "md5 in a body": _capture(tmp_path / "body-md5.pcap", script, end(False), real=None, at=b"line 20"),
        "urgent": _urgent_capture(tmp_path / "urgent.pcap", 3),
    }
    for name, path in captures.items():
        monkeypatch.setattr(scanning, "BATCH_PACKETS", 2)  # flows armed from their second batch on
        compiled = run(path, "auto", monkeypatch, all_ports=every_port)
        monkeypatch.setattr(scanning, "BATCH_PACKETS", 2)
        python = run(path, "python", monkeypatch, all_ports=every_port)
        assert_same(compiled, python)
        if name.endswith("body"):
            assert compiled["skipped"][0] > 0, name
        assert compiled["counts"]["option_drops"] == (0 if name == "urgent" else 1), name
        assert compiled["counts"]["urgent_bytes"] == (1 if name == "urgent" else 0), name


def _options_of(raw: bytes) -> int:
    """The OPT_* bits the decoder reads from a data segment whose TCP options are ``raw`` (padded with EOL)."""
    raw += bytes(-len(raw) % 4)
    tcp = bytearray(bytes(TCP(sport=1, dport=25, flags="PA")))
    tcp[12] = (20 + len(raw)) // 4 << 4
    ip = IP(src="192.0.2.1", dst="192.0.2.2", proto=6) / Raw(bytes(tcp) + raw + b"data")
    segment = decode_tcp(LINKTYPE_ETHERNET, bytes(Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb") / ip))
    assert isinstance(segment, tuple)
    return segment[11]


def _stamp(tsval: int) -> bytes:
    return bytes([1, 1, 8, 10]) + tsval.to_bytes(4, "big") + bytes(4)


@pytest.mark.parametrize(
    ("raw", "bits"),
    [(bytes([19, 18]) + bytes(16), OPT_SIGNED), (bytes([19, 4, 0, 0]), 0),
     (bytes([1, 1, 19, 18]) + bytes(16) + bytes([19, 18]) + bytes(16), OPT_BAD_SIGNATURE),
     (bytes([19, 20]) + bytes(18), OPT_BAD_SIGNATURE), (bytes([253, 0]) + bytes(18), OPT_BAD_SIGNATURE),
     (bytes([253, 30]) + bytes(18), OPT_BAD_SIGNATURE), (bytes([253, 0, 0, 0]), 0), (bytes([29, 16]) + bytes(14), 0)],
    ids=["MD5", "MD5 option too short to be looked for", "two MD5 options", "MD5 of 20 bytes",
         "option of length 0 among 20 bytes", "option past the list among 20 bytes", "damaged list of 4 bytes",
         "TCP-AO (the receiver's kernel has none)"],
)  # fmt: skip
def test_signatures_are_looked_for_as_linux_looks_for_them(raw: bytes, bits: int) -> None:
    assert _options_of(raw) & (OPT_SIGNED | OPT_BAD_SIGNATURE) == bits


def test_of_two_timestamps_the_last_counts() -> None:
    options = _options_of(_stamp(5000) + _stamp(4000))
    assert options & OPT_TIMESTAMP and options >> OPT_TSVAL_SHIFT == 4000


@pytest.mark.parametrize(("first", "second", "shift"), [(3, 22, 14), (22, 3, 3), (7, 2, 2)])
def test_of_two_window_scales_the_last_counts(first: int, second: int, shift: int, tmp_path: Path) -> None:
    """As Linux's ``tcp_parse_options`` keeps it (a shift above 14 taken as 14), in both scanners: not both ORed
    into a shift no receiver uses."""
    syn = TCP(sport=40000, dport=25, flags="S", options=[("WScale", first), ("WScale", second)])
    frame = bytes(Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb") / IP(src="192.0.2.1", dst="192.0.2.2") / syn)
    segment = decode_tcp(LINKTYPE_ETHERNET, frame)
    assert isinstance(segment, tuple) and segment[11] & (OPT_WSCALE | OPT_SHIFT_MASK) == OPT_WSCALE | shift
    if _cscan is None:
        return
    path = tmp_path / "syn.pcap"
    path.write_bytes(pcap_bytes([(1.0, frame)]))
    items = _cscan.Scanner(str(path), ports=[25]).next_batch()
    assert [item[2][11] & (OPT_WSCALE | OPT_SHIFT_MASK) for item in items if item[2]] == [OPT_WSCALE | shift]


def _insert_before_rcpt(path: Path, make: Callable[[int, int, int, dict], list[bytes]], script: str = LOCAL) -> Path:
    """``script`` with timestamps, and the frames ``make(seq, ack, clock, ports)`` returns sent right before the
    client's RCPT (``clock``: the client's TSval for it)."""
    segments = conversation_segments(turns(script), CLIENT, SERVER)
    clocks = {CLIENT: 1_000, SERVER: 70_000}
    out: list[tuple[float, bytes]] = []
    for index, (src, dst, seq, ack, flags, payload) in enumerate(segments):
        clocks[src] += 1
        if payload.startswith(b"RCPT") and src == CLIENT:
            for n, frame in enumerate(make(seq, ack, clocks[src], {"sport": src[1], "dport": dst[1]})):
                out.append((1000.0 + index * 0.001 - 0.0005 + n * 0.00001, frame))
            clocks[src] += 3000
        stamp = [("Timestamp", (clocks[src], clocks[dst] if ack else 0))]
        tcp = TCP(sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=flags, window=65535, options=stamp)
        header = Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb") / IP(src=src[0], dst=dst[0])
        out.append((1000.0 + index * 0.001, bytes(header / tcp / Raw(payload)) if payload else bytes(header / tcp)))
    path.write_bytes(pcap_bytes(out))
    return path


def _client_frame(seq: int, ack: int, flags: str, options: list, payload: bytes = b"", **fields: int) -> bytes:
    header = Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb") / IP(src=CLIENT[0], dst=SERVER[0])
    tcp = TCP(sport=CLIENT[1], dport=SERVER[1], seq=seq, ack=ack, flags=flags, window=65535, options=options, **fields)
    return bytes(header / tcp / Raw(payload)) if payload else bytes(header / tcp)


def test_a_bare_ack_keeps_its_timestamp(tmp_path: Path) -> None:
    """A bare ACK raises what the server kept (Linux keeps a pure ACK's TSval at its latest acknowledgement): a decoy
    behind it by more than 1 is discarded, the real RCPT after it read."""

    def make(seq: int, ack: int, clock: int, ports: dict) -> list[bytes]:
        bare = _client_frame(seq, ack, "A", [("Timestamp", (clock + 1000, 0))])
        return [bare, _client_frame(seq, ack, "PA", [("Timestamp", (clock, 0))], DECOY)]

    pcap = _insert_before_rcpt(tmp_path / "bare.pcap", make)
    assert relays(analyze(pcap)) == []
    assert _summary(pcap)["option_drops"] == 1


def test_an_urgent_pointer_in_a_segment_the_receiver_discards_takes_out_nothing(tmp_path: Path) -> None:
    """A bare URG segment without the ACK flag, and one wholly before what the server acknowledged, each naming the
    second ``m`` of the RCPT that follows: the server read ``contoso.comm`` whole, a foreign domain it accepted."""
    real = b"RCPT TO:<a@contoso.comm>\r\n"
    pointer = real.index(b"m>") + 1

    def make(seq: int, ack: int, clock: int, ports: dict) -> list[bytes]:
        stamp = [("Timestamp", (clock, 0))]
        return [
            _client_frame(seq, ack, "U", stamp, urgptr=pointer),
            _client_frame(seq - 6, ack, "AU", stamp, urgptr=pointer + 6),
        ]

    script = transaction(rcpts=("a@contoso.comm",))
    pcap = _insert_before_rcpt(tmp_path / "urgent-discarded.pcap", make, script)
    assert relays(analyze(pcap)) == [("open-relay", "high", True)]
    assert _summary(pcap)["urgent_bytes"] == 0


BODY = ["C: DATA", "S: 354 go", *[f"C: line {i} of the body" for i in range(60)], "C: .", "S: 250 ok"]
RELAY = ["C: MAIL FROM:<b@sender.example>", "S: 250 ok", "C: RCPT TO:<victim@outside.test>", "S: 250 ok"]
BODY_THEN_RELAY = transaction(*BODY, *RELAY, rcpts=("a@contoso.com",))  # a body, then a transaction that relays


def _every_way(pcap: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """``pcap`` read by both scanners, dropping bodies unread and not, flows armed from their second batch on: the
    same findings every way."""
    results = []
    for backend in ("auto", "python"):
        for skip in (True, False):
            monkeypatch.setattr(scanning, "BATCH_PACKETS", 2)
            results.append(run(pcap, backend, monkeypatch, skip_unread=skip))
    assert all(result["findings"] == results[0]["findings"] for result in results)
    return results


def test_a_sender_clock_leap_inside_a_body_reads_alike_skipped_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body segment far ahead in time, not at the server's latest acknowledgement: the server keeps nothing of it,
    so what follows is read (a relay in a second transaction), whether the scanner drops the body unread or not."""

    def leap(clock: int) -> tuple[list, bytes]:
        return [("Timestamp", (clock + 100_000, 0))], b"line 30 of the body\r\n"

    pcap = _capture(tmp_path / "leap.pcap", BODY_THEN_RELAY, leap, real=None, at=b"line 30")
    results = _every_way(pcap, monkeypatch)
    assert results[0]["skipped"][0] > 0 and results[0]["counts"]["option_drops"] == 0
    assert any(f.get("type") == "open-relay" for f in results[0]["findings"])


FOREIGN = transaction(rcpts=("victim@outside.test",))


@pytest.mark.parametrize(
    ("flags", "shift"),
    [("P", 0), ("A", 100_000), ("A", -30)],
    ids=["no ACK flag", "acknowledging unsent bytes", "acknowledging less than the MAIL before (no fast path)"],
)
def test_a_timestamp_far_ahead_in_a_segment_whose_ack_the_receiver_refuses_keeps_nothing(
    flags: str, shift: int, tmp_path: Path
) -> None:
    """A bare segment with a TSval far ahead, the receiver discarding it (or stopping at ``old_ack``: scapy lays
    the option out so that Linux's fast path does not take it): the foreign RCPT after it is read, an open relay."""

    def make(seq: int, ack: int, clock: int, ports: dict) -> list[bytes]:
        return [_client_frame(seq, ack + shift, flags, [("Timestamp", (clock + 100_000, 0))])]

    pcap = _insert_before_rcpt(tmp_path / "refused.pcap", make, FOREIGN)
    assert relays(analyze(pcap)) == [("open-relay", "high", True)]
    assert _summary(pcap)["option_drops"] == 0


def test_a_kept_timestamp_of_zero_is_replaced_by_any(tmp_path: Path) -> None:
    """The client's SYN carries TSval 0, later segments TSvals more than half the space away: Linux keeps them (0
    kept judges nothing and is replaced by anything), then drops a decoy 1 000 behind."""
    segments = conversation_segments(turns(LOCAL), CLIENT, SERVER)
    clock = {CLIENT: 0x90000000, SERVER: 70_000}
    out: list[tuple[float, bytes]] = []
    for index, (src, dst, seq, ack, flags, payload) in enumerate(segments):
        clock[src] += 1
        tsval = 0 if flags & 0x02 and src == CLIENT else clock[src]
        header = Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb") / IP(src=src[0], dst=dst[0])
        ts = 1000.0 + index * 0.001
        if payload.startswith(b"RCPT") and src == CLIENT:
            stamp = [("Timestamp", (clock[src] - 1000, 1))]
            decoy = TCP(sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=flags, window=65535, options=stamp)
            out.append((ts - 0.0005, bytes(header / decoy / Raw(DECOY))))
        tcp = TCP(
            sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=flags, window=65535, options=[("Timestamp", (tsval, 1))]
        )
        out.append((ts, bytes(header / tcp / Raw(payload)) if payload else bytes(header / tcp)))
    pcap = tmp_path / "zero.pcap"
    pcap.write_bytes(pcap_bytes(out))
    assert relays(analyze(pcap)) == []
    assert _summary(pcap)["option_drops"] == 1


def test_a_stale_acknowledgement_inside_a_body_reads_alike_skipped_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare ACK acknowledging less than before, then a body segment with the same acknowledgement and a TSval far
    ahead: the scanners hand it over for Python to judge, so dropping the body unread changes nothing."""
    segments = conversation_segments(turns(BODY_THEN_RELAY), CLIENT, SERVER, acks=True)
    clocks = {CLIENT: 1_000, SERVER: 70_000}
    out: list[tuple[float, bytes]] = []
    for index, (src, dst, seq, ack, flags, payload) in enumerate(segments):
        clocks[src] += 1
        tsval = clocks[src]
        header = Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb") / IP(src=src[0], dst=dst[0])
        ts = 1000.0 + index * 0.001
        if payload.startswith(b"line 30") and src == CLIENT:
            stale = TCP(
                sport=src[1],
                dport=dst[1],
                seq=seq,
                ack=ack - 5,
                flags="A",
                window=65535,
                options=[("Timestamp", (tsval, 1))],
            )
            out.append((ts - 0.0005, bytes(header / stale)))
            ack, tsval = ack - 5, tsval + 100_000
        tcp = TCP(
            sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=flags, window=65535, options=[("Timestamp", (tsval, 1))]
        )
        out.append((ts, bytes(header / tcp / Raw(payload)) if payload else bytes(header / tcp)))
    pcap = tmp_path / "stale-body.pcap"
    pcap.write_bytes(pcap_bytes(out))
    results = _every_way(pcap, monkeypatch)
    assert results[0]["skipped"][0] > 0 and any(f.get("type") == "open-relay" for f in results[0]["findings"])
