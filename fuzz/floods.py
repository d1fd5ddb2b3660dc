"""Resource floods: captures built to exhaust memory or time, run through ``leakscope analyze``.

Each flood is written as a capture (frames from bench/gen_capture.py's writer), analyzed by the installed command in
its own process (its own peak RSS, VmHWM, reported at exit through fuzz/peakrss; ``wait4``'s where /proc is
missing), and checked against the counters that must show the limit was hit: nothing may be dropped without a
number going up, and the time per frame is printed.

* ``half-open``: SYNs to port 25 from distinct sources, never answered (flow table cap: evictions counted).
* ``long-line``: one SMTP client line of 100 MB without a newline (line cap: ``line_too_long``).
* ``av-pairs``: NTLM CHALLENGEs with thousands of AV pairs (``too_many_av_pairs``, decoding time per message).
* ``base64-line``: a 10 MB base64 SASL response from the client and a 10 MB challenge from the server.
* ``sasl-loop``: SASL exchanges that never end: LOGIN prompts forever, and AUTH PLAIN pipelined without a verdict
  (the exchanges awaiting one: ``sasl_too_many_awaiting``).
* ``syn-flood``: one SMTP session with AUTH PLAIN, 10 200 spoofed SYNs between its handshake and its AUTH (a full
  flow table must evict the SYNs, not the session: its credentials are found).
* ``huge-record``: a gzip pcap whose header allows 4 GiB records, holding one record of 1 GB of zeros after a
  session (1 MB compressed; the record cap must stop the reader before it buffers the record).
* ``jumbo-records``: 2 048 records of 256 KiB each, SYNs to port 25 padded to the largest record libpcap accepts
  (libpcap's batches must be sized in bytes, not packets).
* ``jumbo-pcapng``: a pcapng whose enhanced packet blocks hold 16 MiB packets (packets cut to the record cap).
* ``dissector-state``: 128 flows open at once, each making its dissector hold all it can (an SMTP reply of 256
  lines near 64 KiB, 128 pipelined commands, a CAPA list of 256 such lines, 128 IMAP tags of 64 KiB, a command of
  64 lines and literals, partial lines), gzip-compressed (per-session byte caps, then the run's dissector budget).
* ``long-banners``: 10 000 servers greeting with 60 KB and offering one mechanism named with 60 KB, gzip-compressed
  (what findings keep of a banner and of mechanism names: ``mechanism_name_too_long``).
* ``long-passwords``: 20 000 AUTH PLAIN attempts, each with a new user and a 48 KB password, gzip-compressed (what
  a finding keeps of one text value: ``MAX_FIELD_TEXT``).
* ``fake-servers``: 25 000 one-packet fake SMTP servers, then one real AUTH PLAIN: the credentials finding is kept
  (inventory findings make room for it), the fake servers are kept or counted in ``findings_dropped``.

    python fuzz/floods.py                         # full size (1 M connections, 100 MB line, ...)
    python fuzz/floods.py --scale 0.05 --flood half-open
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.gen_capture import (  # noqa: E402
    ACK,
    FIN,
    MSS,
    PCAP_GLOBAL_HEADER,
    PSH,
    SYN,
    Endpoints,
    Segment,
    _l2,
    build_frame,
)
from dissectors import ntlmssp  # noqa: E402

PEAK_RSS_LIMIT_MIB = 300


MAX_RECORD = 262144  # passive/capture/pcapfile.py: the largest record a reader accepts
CREDENTIALS = b"AUTH PLAIN " + base64.b64encode(b"\x00alice\x00flood-secret") + b"\r\n"


class PcapWriter:
    """Frames to a classic pcap, one microsecond apart unless told otherwise."""

    def __init__(self, stream: BinaryIO, start: float = 1_700_000_000.0, snaplen: int = 262144) -> None:
        self.stream = stream
        self.ts = start
        self.frames = 0
        stream.write(PCAP_GLOBAL_HEADER[:16] + struct.pack("<I", snaplen) + PCAP_GLOBAL_HEADER[20:])

    def write(self, frame: bytes, step: float = 1e-6) -> None:
        self.ts += step
        sec = int(self.ts)
        self.stream.write(struct.pack("<IIII", sec, int((self.ts - sec) * 1e6), len(frame), len(frame)) + frame)
        self.frames += 1

    def write_record(self, length: int, chunks: Iterator[bytes], step: float = 1e-6) -> None:
        """A record of ``length`` bytes written piece by piece (records bigger than memory)."""
        self.ts += step
        sec = int(self.ts)
        self.stream.write(struct.pack("<IIII", sec, int((self.ts - sec) * 1e6), length, length))
        for chunk in chunks:
            self.stream.write(chunk)
        self.frames += 1


def _endpoints(number: int, server_port: int = 25) -> Endpoints:
    client = struct.pack("!I", 0x0A000000 | (number + 1) & 0xFFFFFF)
    return Endpoints(client, b"\xc0\x00\x02\x19", 1024 + number % 60000, server_port, False, ())


class Connection:
    """One TCP connection written frame by frame: opened, fed turns in any order with others, closed."""

    def __init__(self, writer: PcapWriter, number: int, port: int = 25, server: bytes = b"\xc0\x00\x02\x19") -> None:
        self.writer = writer
        self.ep = Endpoints(_endpoints(number, port).client_ip, server, 1024 + number % 60000, port, False, ())
        self.l2 = _l2(self.ep)
        cseq, sseq = 1000 + number, 500000 + number
        writer.write(build_frame(self.ep, Segment(False, cseq, 0, SYN), self.l2))
        writer.write(build_frame(self.ep, Segment(True, sseq, cseq + 1, SYN | ACK), self.l2))
        self.cseq, self.sseq = cseq + 1, sseq + 1
        writer.write(build_frame(self.ep, Segment(False, self.cseq, self.sseq, ACK), self.l2))

    def send(self, from_server: bool, data: bytes) -> None:
        """``data`` of any size, in MSS-sized frames."""
        for start in range(0, len(data), MSS):
            piece = data[start : start + MSS]
            if from_server:
                self.writer.write(build_frame(self.ep, Segment(True, self.sseq, self.cseq, PSH | ACK, piece), self.l2))
                self.sseq += len(piece)
            else:
                self.writer.write(build_frame(self.ep, Segment(False, self.cseq, self.sseq, PSH | ACK, piece), self.l2))
                self.cseq += len(piece)

    def close(self) -> None:
        ep, l2, cseq, sseq = self.ep, self.l2, self.cseq, self.sseq
        self.writer.write(build_frame(ep, Segment(False, cseq, sseq, FIN | ACK), l2))
        self.writer.write(build_frame(ep, Segment(True, sseq, cseq + 1, FIN | ACK), l2))
        self.writer.write(build_frame(ep, Segment(False, cseq + 1, sseq + 1, ACK), l2))


def write_conversation(writer: PcapWriter, number: int, turns: Iterator[tuple[bool, bytes]], port: int = 25) -> None:
    """One TCP connection carrying ``turns`` (from_server, bytes), streamed: data of any size, MSS-sized frames."""
    connection = Connection(writer, number, port)
    for from_server, data in turns:
        connection.send(from_server, data)
    connection.close()


# ---- the floods -----------------------------------------------------------------------------------------------------


def half_open(writer: PcapWriter, scale: float) -> dict[str, int]:
    count = max(1, int(1_000_000 * scale))
    for number in range(count):
        ep = Endpoints(
            struct.pack("!I", 0x0A000000 + number), b"\xc0\x00\x02\x19", 1024 + number % 60000, 25, False, ()
        )
        writer.write(build_frame(ep, Segment(False, number * 7919, 0, SYN), _l2(ep)))
    return {"connections": count}


def long_line(writer: PcapWriter, scale: float) -> dict[str, int]:
    size = max(MSS, int(100_000_000 * scale))
    block = b"A" * MSS * 64

    def turns() -> Iterator[tuple[bool, bytes]]:
        yield True, b"220 mx.example.com ESMTP\r\n"
        yield False, b"EHLO client.example.org\r\n"
        yield True, b"250-mx.example.com\r\n250 AUTH PLAIN LOGIN\r\n"
        for start in range(0, size, len(block)):
            yield False, block[: min(len(block), size - start)]
        yield False, b"\r\nQUIT\r\n"
        yield True, b"221 bye\r\n"

    write_conversation(writer, 1, turns())
    return {"line_bytes": size}


def _syn_frame(number: int) -> bytes:
    ep = Endpoints(struct.pack("!I", 0x0A000000 + number), b"\xc0\x00\x02\x19", 1024 + number % 60000, 25, False, ())
    return build_frame(ep, Segment(False, number * 7919, 0, SYN), _l2(ep))


def _smtp_auth_turns(before_auth: Callable[[], None]) -> Iterator[tuple[bool, bytes]]:
    """An SMTP session with AUTH PLAIN; ``before_auth`` runs once the handshake and greeting are written."""
    yield True, b"220 mx.example.com ESMTP\r\n"
    yield False, b"EHLO client.example.org\r\n"
    yield True, b"250-mx.example.com\r\n250 AUTH PLAIN LOGIN\r\n"
    before_auth()
    yield False, CREDENTIALS
    yield True, b"235 2.7.0 Authentication successful\r\n"
    yield False, b"QUIT\r\n"
    yield True, b"221 bye\r\n"


def syn_flood(writer: PcapWriter, scale: float) -> dict[str, int]:
    count = max(1, int(10_200 * max(scale, 1.0)))  # the flood must overflow the 10 000-flow table at any scale

    def flood() -> None:
        for number in range(count):
            writer.write(_syn_frame(number + 100))

    write_conversation(writer, 1, _smtp_auth_turns(flood))
    return {"syns": count}


def huge_record(writer: PcapWriter, scale: float) -> dict[str, int]:
    size = max(MAX_RECORD + 1, int(1_000_000_000 * scale))
    write_conversation(writer, 1, _smtp_auth_turns(lambda: None))
    block = bytes(1 << 20)
    first = _syn_frame(7)
    chunks = (block[: min(len(block), size - start)] for start in range(len(first), size, len(block)))
    writer.write_record(size, iter([first, *chunks]))
    return {"record_bytes": size}


def jumbo_records(writer: PcapWriter, scale: float) -> dict[str, int]:
    count = max(1, int(2048 * scale))
    for number in range(count):
        frame = _syn_frame(number)
        writer.write(frame + bytes(MAX_RECORD - len(frame)))
    return {"records": count}


def ntlm_challenge_with_pairs(pairs: int) -> bytes:
    """A CHALLENGE whose TargetInfo holds ``pairs`` AV pairs (names, repeated ids, unknown ids), then MsvAvEOL."""
    target_info = [((1, 2, 3, 4, 5, 0x7F00)[index % 6], b"") for index in range(pairs)]
    return ntlmssp.build_challenge(b"\x01" * 8, target_info=target_info, version=ntlmssp.Version(10, 0, 20348))


def av_pairs(writer: PcapWriter, scale: float) -> dict[str, int]:
    sessions = max(1, int(500 * scale))
    pairs = 10_000  # 40 KB of TargetInfo: its base64 (53 KB) stays under the 64 KiB SASL line limit
    challenge = base64.b64encode(ntlm_challenge_with_pairs(pairs))
    negotiate = base64.b64encode(b"NTLMSSP\x00\x01\x00\x00\x00\x07\x82\x08\xa2" + bytes(16))
    for number in range(sessions):
        turns = [
            (True, b"220 mx.example.com ESMTP\r\n"),
            (False, b"EHLO c\r\n"),
            (True, b"250-mx.example.com\r\n250 AUTH NTLM\r\n"),
            (False, b"AUTH NTLM " + negotiate + b"\r\n"),
            (True, b"334 " + challenge + b"\r\n"),
            (False, b"*\r\n"),
            (True, b"501 cancelled\r\n"),
        ]
        write_conversation(writer, number, iter(turns))
    return {"sessions": sessions, "pairs_per_challenge": pairs}


def base64_line(writer: PcapWriter, scale: float) -> dict[str, int]:
    size = max(MSS, int(10_000_000 * scale))
    chunk = base64.b64encode(os.urandom(MSS * 48))

    def big() -> Iterator[bytes]:
        for start in range(0, size, len(chunk)):
            yield chunk[: min(len(chunk), size - start)]

    client = [
        (True, b"220 mx.example.com ESMTP\r\n"),
        (False, b"EHLO c\r\n"),
        (True, b"250-mx.example.com\r\n250 AUTH PLAIN NTLM\r\n"),
        (False, b"AUTH PLAIN\r\n"),
        (True, b"334 \r\n"),
        *((False, piece) for piece in big()),
        (False, b"\r\n"),
        (True, b"535 5.7.8 failed\r\n"),
    ]
    write_conversation(writer, 1, iter(client))
    server = [
        (True, b"220 mx.example.com ESMTP\r\n"),
        (False, b"AUTH NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAA=\r\n"),
        (True, b"334 TlRMTVNTUAAC"),
        *((True, piece) for piece in big()),
        (True, b"\r\n"),
        (False, b"*\r\n"),
        (True, b"501 cancelled\r\n"),
    ]
    write_conversation(writer, 2, iter(server))
    return {"line_bytes": size}


def sasl_loop(writer: PcapWriter, scale: float) -> dict[str, int]:
    steps = max(100, int(200_000 * scale))
    prompt, answer = b"334 " + base64.b64encode(b"Password:") + b"\r\n", base64.b64encode(b"guess") + b"\r\n"

    def login_forever() -> Iterator[tuple[bool, bytes]]:
        yield True, b"220 mx.example.com ESMTP\r\n"
        yield False, b"AUTH LOGIN\r\n"
        for _ in range(steps // 64):
            yield True, prompt * 64
            yield False, answer * 64

    def plain_restarted() -> Iterator[tuple[bool, bytes]]:
        yield True, b"220 mx.example.com ESMTP\r\n"
        batch = 64
        for first in range(0, steps, batch):
            lines = b"".join(
                b"AUTH PLAIN " + base64.b64encode(b"\x00user%d\x00secret%d" % (n, n)) + b"\r\n"
                for n in range(first, first + batch)
            )
            yield False, lines
            yield True, b"334 \r\n" * batch

    write_conversation(writer, 1, login_forever())
    write_conversation(writer, 2, plain_restarted())
    return {"steps_per_session": steps}


# Just under the 64 KiB line limit: every line below is kept whole by the line buffer.
_NEAR_MAX_LINE = 65_000


def _smtp_state(line: bytes) -> Iterator[tuple[bool, bytes]]:
    """An EHLO reply of 256 lines that never ends, 128 pipelined MAIL commands, partial lines on both sides."""
    yield True, b"220 mx.example.com ESMTP\r\n"
    yield False, b"EHLO c\r\n"
    for _ in range(255):
        yield True, b"250-" + line + b"\r\n"
    for _ in range(128):
        yield False, b"MAIL FROM:<" + line + b">\r\n"
    yield False, line
    yield True, b"250-" + line


def _pop3_state(line: bytes) -> Iterator[tuple[bool, bytes]]:
    """A CAPA list of 256 lines without its ".", 128 pipelined commands, partial lines."""
    yield True, b"+OK ready\r\n"
    yield False, b"CAPA\r\n"
    yield True, b"+OK\r\n"
    for _ in range(256):
        yield True, b"X-" + line + b"\r\n"
    for _ in range(128):
        yield False, b"TOP " + line + b"\r\n"
    yield False, line
    yield True, line


def _imap_state(line: bytes) -> Iterator[tuple[bool, bytes]]:
    """128 unanswered commands with 64 KiB tags, then a command of 64 parts (lines and LITERAL+ literals) that
    never ends, partial lines."""
    yield True, b"* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n"
    for number in range(128):
        yield False, b"%d" % number + line + b" NOOP\r\n"
    for _ in range(64):
        yield False, b"a APPEND " + line + b" {4096+}\r\n" + b"L" * 4096
    yield True, b"* OK " + line


def dissector_state(writer: PcapWriter, scale: float) -> dict[str, int]:
    """Flows that each make their dissector hold as much as it can, all open at once (turns interleaved)."""
    flows = max(3, int(128 * scale))
    line = b"A" * _NEAR_MAX_LINE
    kinds = ((25, _smtp_state), (110, _pop3_state), (143, _imap_state))
    connections = [Connection(writer, number, kinds[number % 3][0]) for number in range(flows)]
    talking = [(connection, kinds[number % 3][1](line)) for number, connection in enumerate(connections)]
    while talking:
        talking = [(connection, turns) for connection, turns in talking if _send_next(connection, turns)]
    # Closed only once every flow has said everything: until then all of them hold their state at once.
    for connection in connections:
        connection.close()
    return {"flows": flows}


def _send_next(connection: Connection, turns: Iterator[tuple[bool, bytes]]) -> bool:
    turn = next(turns, None)
    if turn is not None:
        connection.send(*turn)
    return turn is not None


@dataclass(frozen=True)
class Flood:
    name: str
    write: Callable[[PcapWriter, float], dict[str, int]]
    check: Callable[[dict[str, Any], dict[str, int]], list[str]]  # problems found in the summary
    step: float = 1e-6
    snaplen: int = 262144  # in the pcap header
    compress: bool = False  # gzip the capture
    pcapng: Callable[[BinaryIO, float], dict[str, int]] | None = None  # writes a pcapng instead of using the writer


def _check_half_open(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    count = made["connections"]
    problems = []
    if summary["flows"] != count:
        problems.append(f"flows {summary['flows']} != {count}")
    closed = summary["flows_evicted"] + summary["flows_flushed"] + summary["flows_expired"]
    if closed != count:
        problems.append(f"evicted + flushed + expired = {closed}, not {count}")
    if count > 10_000 and summary["flows_evicted"] < count - 10_000:
        problems.append(f"only {summary['flows_evicted']} evictions for {count} flows over a 10000-flow table")
    return problems


def _anomaly(code: str, at_least: int = 1) -> Callable[[dict[str, Any], dict[str, int]], list[str]]:
    def check(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
        seen = summary.get("dissector_anomalies", {}).get(code, 0)
        return [] if seen >= at_least else [f"dissector anomaly {code} counted {seen} times, expected >= {at_least}"]

    return check


def _check_av_pairs(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    challenges = summary.get("ntlm_messages", {}).get("challenge", 0)
    return [] if challenges == made["sessions"] else [f"{challenges} challenges decoded of {made['sessions']}"]


def _check_sasl_loop(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    problems = _anomaly("sasl_too_many_steps")(summary, made)
    problems += _anomaly("sasl_too_many_awaiting", made["steps_per_session"] // 2)(summary, made)
    # Every PLAIN attempt names another user: each one is a finding, kept or counted as dropped.
    accounted = summary["findings"].get("cleartext-credentials", 0) + summary.get("findings_dropped", 0)
    if accounted < made["steps_per_session"]:
        problems.append(f"{accounted} credentials accounted for of {made['steps_per_session']}")
    return problems


def _check_credentials(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    found = summary["findings"].get("cleartext-credentials", 0)
    return [] if found >= 1 else ["the session's AUTH PLAIN credentials were not found"]


def _check_syn_flood(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    problems = _check_credentials(summary, made)
    if summary["flows_evicted"] < made["syns"] + 1 - 10_000:
        problems.append(f"only {summary['flows_evicted']} evictions: the table never filled")
    if summary["flows_partial"]:
        problems.append(f"{summary['flows_partial']} flows picked up mid-stream: the session was evicted")
    return problems


def _check_huge_record(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    problems = _check_credentials(summary, made)
    if summary.get("oversized_records") != 1 or summary["anomalies"] < 1:
        problems.append(f"oversized_records {summary.get('oversized_records')}, anomalies {summary['anomalies']}")
    return problems


def _check_jumbo(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    count = made.get("records", made.get("packets", 0))
    return [] if summary["flows"] == count else [f"flows {summary['flows']} != {count} records"]


def _check_jumbo_pcapng(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    problems = _check_jumbo(summary, made)
    if summary.get("oversized_records") != made["packets"]:
        problems.append(f"oversized_records {summary.get('oversized_records')} != {made['packets']}")
    return problems


def jumbo_pcapng(stream: BinaryIO, scale: float) -> dict[str, int]:
    """pcapng with enhanced packet blocks of 16 MiB (the block cap) each holding one padded SYN."""
    def block(block_type: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", block_type, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    stream.write(block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
    stream.write(block(1, struct.pack("<HHI", 1, 0, 0)))
    count = max(1, int(16 * scale))
    size = 16 * 1024 * 1024 - 64
    for number in range(count):
        frame = _syn_frame(number)
        head = struct.pack("<IIIII", 0, 0, 1_000_000 + number, size, size) + frame
        stream.write(struct.pack("<II", 6, 12 + 20 + size) + head + bytes(size - len(frame)))
        stream.write(struct.pack("<I", 12 + 20 + size))
    return {"packets": count}


# What one flow of the dissector-state flood holds once its caps are hit (measured: 380 to 560 KiB), and the
# run's default dissector budget (passive/analysis/budget.py): past budget / per-flow flows, evictions must show.
_STATE_PER_FLOW = 380 * 1024
_DISSECTOR_BUDGET = 64 * 1024 * 1024


def fake_servers(writer: PcapWriter, scale: float) -> dict[str, int]:
    """Fake servers, one packet each (a greeting from its own address), then one real login in clear text."""
    count = max(1, int(25_000 * scale))
    for number in range(count):
        server = struct.pack("!I", 0xC6120000 + number)  # 198.18.0.0/15, one address per fake server
        ep = Endpoints(b"\x0a\x01\x00\x01", server, 1024 + number % 60000, 25, False, ())
        # Picked up mid-stream, a direction is read from its first newline on: the greeting follows one.
        greeting = b"\r\n220 fake ESMTP\r\n"
        writer.write(build_frame(ep, Segment(True, number * 7919, 1, PSH | ACK, greeting), _l2(ep)))
    plain = base64.b64encode(b"\x00alice@corp.example\x00Summer2024!")
    turns = [
        (True, b"220 mx.corp.example ESMTP\r\n"),
        (False, b"EHLO ws01\r\n"),
        (True, b"250-mx.corp.example\r\n250 AUTH PLAIN LOGIN\r\n"),
        (False, b"AUTH PLAIN " + plain + b"\r\n"),
        (True, b"235 2.7.0 Authentication successful\r\n"),
        (False, b"QUIT\r\n"),
        (True, b"221 bye\r\n"),
    ]
    write_conversation(writer, 1, iter(turns))
    return {"fake_servers": count}


def long_banners(writer: PcapWriter, scale: float) -> dict[str, int]:
    """Servers that greet with 60 KB and list one 60 KB mechanism: text every finding of theirs would keep."""
    count = max(1, int(10_000 * scale))
    for number in range(count):
        connection = Connection(writer, number, 25, server=struct.pack("!I", 0xC6120000 + number))
        connection.send(True, b"220 " + b"B" * 60_000 + b" %d ESMTP\r\n" % number)
        connection.send(False, b"EHLO c\r\n")
        connection.send(True, b"250-mx\r\n250 AUTH PLAIN " + b"M" * 60_000 + b"\r\n")
        connection.close()
    return {"servers": count}


def relays(writer: PcapWriter, scale: float) -> dict[str, int]:
    """Unauthenticated mail to foreign domains, accepted: 300 sessions from as many clients to one server, 40
    recipients each with 2 KB addresses (past the relay ledger's 10,000 kept attempts), then one session each to
    2,000 servers (past its 1,024 kept servers): every attempt must still be judged, in bounded memory and time."""
    servers, sessions, recipients = max(1, int(2_000 * scale)), max(1, int(300 * scale)), 40
    long = b"r" * 2_000

    def session(number: int, count: int, local: bytes) -> Iterator[tuple[bool, bytes]]:
        yield True, b"220 relay ESMTP\r\n"
        yield False, b"EHLO c%d\r\n" % number
        yield True, b"250 relay\r\n"
        yield False, b"MAIL FROM:<s%d@sender%d.example>\r\n" % (number, number % 7)
        yield True, b"250 ok\r\n"
        for rcpt in range(count):
            yield False, b"RCPT TO:<%s%d@d%d.example.org>\r\n" % (local, rcpt, (number * count + rcpt) % 5_000)
            yield True, b"250 ok\r\n"
        yield False, b"QUIT\r\n"
        yield True, b"221 bye\r\n"

    for number in range(sessions):
        connection = Connection(writer, servers + number, 25)
        for from_server, data in session(number, recipients, long):
            connection.send(from_server, data)
        connection.close()
    for number in range(servers):
        connection = Connection(writer, number, 25, server=struct.pack("!I", 0xC6120000 + number))
        for from_server, data in session(number, 2, b"x"):
            connection.send(from_server, data)
        connection.close()
    return {"servers": servers + 1, "attempts": servers * 2 + sessions * recipients}


def _check_relays(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    problems = []
    if made["servers"] > 1_024:
        problems += _anomaly("relay_servers_untracked", 2 * (made["servers"] - 1_024))(summary, made)
    if made["attempts"] > 10_000:
        problems += _anomaly("relay_attempts_judged_alone")(summary, made)
    if not summary.get("findings", {}).get("open-relay"):
        problems.append("no open-relay finding")
    return problems


def long_passwords(writer: PcapWriter, scale: float) -> dict[str, int]:
    """AUTH PLAIN with a new user name and a 48 KB password each time, refused: a finding per user."""
    count = max(1, int(20_000 * scale))
    password = b"P" * 48_000

    def turns() -> Iterator[tuple[bool, bytes]]:
        yield True, b"220 mx.example.com ESMTP\r\n"
        for number in range(count):
            yield False, b"AUTH PLAIN " + base64.b64encode(b"\x00user%d\x00" % number + password) + b"\r\n"
            yield True, b"535 5.7.8 Authentication failed\r\n"

    write_conversation(writer, 1, turns())
    return {"users": count}


def _check_long_passwords(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    accounted = summary["findings"].get("cleartext-credentials", 0) + summary.get("findings_dropped", 0)
    return [] if accounted >= made["users"] else [f"{accounted} credentials accounted for of {made['users']}"]


def _check_long_banners(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    problems = _anomaly("mechanism_name_too_long", made["servers"])(summary, made)
    if summary["findings"].get("mail-service", 0) != made["servers"]:
        problems.append(f"{summary['findings']} for {made['servers']} servers")
    return problems


def _check_fake_servers(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    problems = []
    if summary["findings"].get("cleartext-credentials", 0) != 1:
        problems.append(f"the real login is not among the findings: {summary['findings']}")
    inventory = summary["findings"].get("mail-service", 0) + summary["findings"].get("auth-methods", 0)
    # Every inventory finding is kept or counted: one per fake server, two for the real one (service, methods).
    if made["fake_servers"] + 2 != inventory + summary.get("findings_dropped", 0):
        dropped = summary.get("findings_dropped")
        problems.append(f"{made['fake_servers']} fake servers: {inventory} kept, {dropped} dropped")
    return problems


def _check_dissector_state(summary: dict[str, Any], made: dict[str, int]) -> list[str]:
    flows = made["flows"]
    problems = []
    if sum(summary.get("sessions", {}).values()) != flows:
        problems.append(f"sessions {summary.get('sessions')} for {flows} flows")
    # Every flow hits its protocol's caps: a third of them each (SMTP, POP3, IMAP), in the order they were opened.
    for code, first in (("reply_too_long", 0), ("list_too_long", 1), ("command_too_long", 2)):
        problems += _anomaly(code, len(range(first, flows, 3)))(summary, made)
    if flows * _STATE_PER_FLOW > _DISSECTOR_BUDGET and not summary.get("dissector_evictions"):
        problems.append(f"{flows} flows hold more than the dissector budget, yet no session was evicted")
    return problems


FLOODS = {
    f.name: f
    for f in (
        Flood("half-open", half_open, _check_half_open, step=1e-5),
        Flood("long-line", long_line, _anomaly("line_too_long")),
        Flood("av-pairs", av_pairs, _check_av_pairs),
        Flood("base64-line", base64_line, _anomaly("line_too_long", 2)),
        Flood("sasl-loop", sasl_loop, _check_sasl_loop),
        Flood("syn-flood", syn_flood, _check_syn_flood),
        Flood("huge-record", huge_record, _check_huge_record, snaplen=0xFFFFFFFF, compress=True),
        Flood("jumbo-records", jumbo_records, _check_jumbo),
        Flood("jumbo-pcapng", lambda writer, scale: {}, _check_jumbo_pcapng, pcapng=jumbo_pcapng),
        Flood("dissector-state", dissector_state, _check_dissector_state, compress=True),
        Flood("fake-servers", fake_servers, _check_fake_servers),
        Flood("long-banners", long_banners, _check_long_banners, compress=True),
        Flood("long-passwords", long_passwords, _check_long_passwords, compress=True),
        Flood("relays", relays, _check_relays, compress=True),
    )
}


@dataclass
class FloodResult:
    name: str
    made: dict[str, int]
    capture_mb: float
    frames: int
    exit_status: int
    seconds: float
    peak_rss_mib: float
    counters: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# Summary fields worth showing for a flood.
_SHOWN = ("flows", "flows_evicted", "flows_flushed", "sessions", "ntlm_messages", "dissector_anomalies")
_SHOWN += ("anomalies", "findings", "findings_dropped", "oversized_records")


def write_flood(flood: Flood, scale: float, directory: Path) -> tuple[Path, dict[str, int], int]:
    """Write the flood's capture; return its path, what was made and the number of frames."""
    suffix = ".pcapng" if flood.pcapng else ".pcap.gz" if flood.compress else ".pcap"
    path = directory / f"flood-{flood.name}{suffix}"
    raw = path.open("wb", buffering=1 << 22)
    stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) if flood.compress else raw  # type: ignore[assignment]
    with raw, stream:
        if flood.pcapng:
            made = flood.pcapng(stream, scale)
            return path, made, made["packets"]
        writer = PcapWriter(stream, snaplen=flood.snaplen)
        original = writer.write
        writer.write = lambda frame, step=flood.step: original(frame, step)  # type: ignore[method-assign]
        made = flood.write(writer, scale)
    return path, made, writer.frames


def run_flood(flood: Flood, scale: float, directory: Path) -> FloodResult:
    path, made, frames = write_flood(flood, scale, directory)
    peak_file = directory / f"flood-{flood.name}.peak"
    paths = [str(REPO / "fuzz" / "peakrss"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "LEAKSCOPE_PEAK_FILE": str(peak_file)}
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        argv = ["leakscope", "analyze", "--format", "jsonl", str(path)]
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _pid, status, usage = os.wait4(process.pid, 0)  # reaped here, so its own peak RSS is at hand
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    # The command's own peak (fuzz/peakrss); ru_maxrss also holds whatever this process had reached when it forked.
    rss = float(peak_file.read_text()) if peak_file.exists() else usage.ru_maxrss / 1024
    peak_file.unlink(missing_ok=True)
    result = FloodResult(
        flood.name, made, round(path.stat().st_size / 1e6, 1), frames, process.returncode, round(seconds, 1), rss
    )
    if process.returncode != 0 or b"Traceback" in stderr:
        result.problems.append(f"exit {process.returncode}: {stderr.decode(errors='replace')[-500:]}")
        return result
    summary = json.loads(stdout.decode().strip().split("\n")[-1])
    result.counters = {k: summary[k] for k in _SHOWN if k in summary}
    result.problems += flood.check(summary, made)
    if rss > PEAK_RSS_LIMIT_MIB:
        result.problems.append(f"peak RSS {rss:.0f} MiB > {PEAK_RSS_LIMIT_MIB} MiB")
    path.unlink()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood", action="append", choices=sorted(FLOODS), help="run only these (repeatable)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full size (1 M connections...)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the captures are written (default: tmp)")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="leakscope-floods-", dir=args.workdir) as directory:
        for name in args.flood or list(FLOODS):
            result = run_flood(FLOODS[name], args.scale, Path(directory))
            results.append(result)
            verdict = "ok" if not result.problems else "FAILED: " + "; ".join(result.problems)
            print(
                f"{result.name:<12} {json.dumps(result.made)}  {result.capture_mb} MB, {result.frames} frames: "
                f"{result.seconds} s ({result.seconds / max(1, result.frames) * 1e6:.1f} us/frame), peak RSS "
                f"{result.peak_rss_mib:.0f} MiB  {json.dumps(result.counters)}  {verdict}",
                flush=True,
            )
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
