"""The compiled scanner reads a capture file into one reused buffer (``READ_BUFFER`` bytes): what it hands Python
does not depend on where the buffer is refilled.

Records as long as a record may be straddle the buffer's refills; the dropped bytes of an armed flow are noticed
with the tail of the last segment dropped, which was read several refills before the notice is made (copied out of
the buffer, then from one copy to the next); both are compared with the pure-Python twin, item by item. A file
cut short after it was opened is read up to where it now ends, with the damage said, and a file growing after it
was opened is read up to where it ended then.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from passive.capture import skipping
from passive.capture.linklayer import ACK, INFO_SKIPPED
from passive.capture.pcapfile import MAX_RECORD, PacketReader, sniff_kind
from passive.capture.scanner import PyScanner
from passive.capture.scanread import _cscan
from tests.helpers_capture import ether, ethernet_frames, ip4, ipv4, pcap_bytes, tcp

CLIENT, SERVER, OTHER = ("10.1.0.1", 40000), ("10.1.0.2", 25), ("10.9.0.1", 5555)


@pytest.fixture(autouse=True, scope="module")
def _compiled() -> None:
    if _cscan is None:
        pytest.skip("the compiled scanner is not built")


def items_of(scanner: object) -> list:
    items: list = []
    while (batch := scanner.next_batch()) is not None:  # type: ignore[attr-defined]
        items += batch
    return items


def both(path: Path, armed: tuple | None = None, **settings: object) -> tuple[list, list, object]:
    """Every item each scanner hands over for ``path`` (``armed``: skip_flow's arguments, given first)."""
    outputs = []
    compiled = _cscan.Scanner(str(path), **settings)
    for scanner in (compiled, PyScanner(PacketReader(path, sniff_kind(path)), **settings)):
        if armed is not None:
            assert scanner.skip_flow(*armed)
        outputs.append(items_of(scanner))
    return outputs[0], outputs[1], compiled


def other_port(count: int, size: int, start: float) -> list:
    """Bulk of a flow on no named port: read, decoded and dropped (``other_port``), a refill's worth of bytes."""
    return [
        (start + i * 1e-4, ether(ipv4(OTHER[0], "10.9.0.2", tcp(OTHER[1], 80, 1 + i * size, 1, ACK, bytes(size)))))
        for i in range(count)
    ]


def offloaded(seq: int, payload: bytes) -> bytes:
    """A client-to-server frame longer than IPv4 can say: total length 0, as a host capturing its own segmentation
    offload writes it (the decoder then takes the frame's length)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 1, 0, 64, 6, 0, ip4(CLIENT[0]), ip4(SERVER[0]))
    segment = struct.pack("!HHIIBBHHH", CLIENT[1], SERVER[1], seq, 1, 5 << 4, ACK, 65535, 0, 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + segment + payload


def test_the_longest_records_across_refills_are_read_as_by_the_twin(tmp_path: Path) -> None:
    """Frames of MAX_RECORD bytes and small ones in turn: each refill leaves a long record part read."""
    frames: list = []
    seq = 1000
    for i in range(7):
        long = offloaded(seq, bytes([48 + i]) * (MAX_RECORD - 54))
        assert len(long) == MAX_RECORD
        seq += MAX_RECORD - 54
        short = ether(ipv4(SERVER[0], CLIENT[0], tcp(SERVER[1], CLIENT[1], 1, seq, ACK, b"250 ok\r\n" * (i + 1))))
        frames += [(1000.0 + i, long), (1000.5 + i, short)]
    path = tmp_path / "long.pcap"
    path.write_bytes(pcap_bytes(frames))
    assert path.stat().st_size > 3 * _cscan.READ_BUFFER
    compiled, twin, scanner = both(path, ports=[25])
    assert compiled == twin
    assert [len(item[2][7]) for item in compiled] == [n for i in range(7) for n in (MAX_RECORD - 54, 8 * (i + 1))]
    assert scanner.error is None and scanner.frames == 14


def test_tails_of_dropped_bytes_outlive_the_refills_that_follow_them(tmp_path: Path) -> None:
    """An armed flow drops bytes each way, then a refill's worth of other traffic; the client drops more, then
    another refill's worth: one batch ends after all of it, its notices carry the true tails."""
    bulk = _cscan.READ_BUFFER // 1400 + 50
    c, s = 1000, 5000
    segs = []
    for i in range(6):
        payload = bytes([65 + i]) * 1300 + b"client%d" % i
        segs.append((CLIENT, SERVER, c, s, ACK, payload))
        c += len(payload)
        answer = bytes([97 + i]) * 700 + b"server%d" % i
        segs.append((SERVER, CLIENT, s, c, ACK, answer))
        s += len(answer)
    frames = ethernet_frames(segs, start=1000.0)
    frames += other_port(bulk, 1400, 1001.0)
    last = b"Z" * 900 + b"the client's last"
    frames += ethernet_frames([(CLIENT, SERVER, c, s, ACK, last)], start=1002.0)
    frames += other_port(bulk, 1400, 1003.0)
    path = tmp_path / "armed.pcap"
    path.write_bytes(pcap_bytes(frames))
    assert path.stat().st_size > 2 * _cscan.READ_BUFFER
    rules = (skipping.SKIP_ALL, 1000, 0, False, skipping.SKIP_ALL, 5000, 0, False)
    armed = (ip4(CLIENT[0]), CLIENT[1], ip4(SERVER[0]), SERVER[1], 1000.0, *rules)
    compiled, twin, scanner = both(path, armed, ports=[25], batch_packets=256)
    assert compiled == twin
    notices = {item[2][0]: item[2] for item in compiled if item[2] is not None and item[2][9] & INFO_SKIPPED}
    assert len(notices) == len(compiled) == 2  # everything of the flow was dropped into the two notices
    assert notices[ip4(CLIENT[0])][7] == last
    assert notices[ip4(SERVER[0])][7].endswith(b"server5") and len(notices[ip4(SERVER[0])][7]) == 707
    assert notices[ip4(CLIENT[0])][8] == c + len(last) - 1000
    assert scanner.counters()["other_port"] == 2 * bulk


def test_many_pending_notices_cost_a_refill_no_more_than_the_bytes_it_replaces(tmp_path: Path) -> None:
    """600 armed flows drop a segment each in turn, round after round, and no packet is admitted: one batch spans the
    whole file, every flow's notice pending all along. Each refill copies only the tails that came in since the one
    before, not every pending tail again (which would copy 600 tails per refill: hundreds of times the file)."""
    flows, rounds, size = 600, 12, 1400
    segs, armed = [], []
    for i in range(flows):
        client = (f"10.3.{i >> 8}.{i & 255}", 40000 + i)
        segs += [(client, SERVER, 1000 + r * size, 1, ACK, bytes([65 + r % 26]) * (size - 4) + b"%04d" % i)
                 for r in range(rounds)]  # fmt: skip
        armed.append((ip4(client[0]), client[1], ip4(SERVER[0]), SERVER[1], 1000.0, skipping.SKIP_ALL, 1000, 0,
                      False, skipping.SKIP_ALL, 1, 0, False))  # fmt: skip
    order = sorted(range(len(segs)), key=lambda k: (k % rounds, k // rounds))  # round by round, flow by flow
    path = tmp_path / "pending.pcap"
    path.write_bytes(pcap_bytes(ethernet_frames([segs[k] for k in order], start=1000.0)))
    assert path.stat().st_size > 20 * _cscan.READ_BUFFER
    outputs = []
    compiled = _cscan.Scanner(str(path), ports=[25], batch_packets=256)
    for scanner in (compiled, PyScanner(PacketReader(path, sniff_kind(path)), ports=[25], batch_packets=256)):
        for rule in armed:
            assert scanner.skip_flow(*rule)
        outputs.append(items_of(scanner))
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) == flows  # one notice per flow, each with its last segment's tail
    assert {item[2][7][-4:] for item in outputs[0]} == {b"%04d" % i for i in range(flows)}
    assert 0 < compiled.tail_bytes_copied <= path.stat().st_size


def test_a_file_cut_short_while_read_ends_where_it_now_ends(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_bytes(other_port(2000, 1400, 1000.0)))
    scanner = _cscan.Scanner(str(path), ports=[80], batch_packets=10)
    first = scanner.next_batch()  # ten of the first buffer's records: the rest of the file is not read yet
    with path.open("r+b") as fh:
        fh.truncate(_cscan.READ_BUFFER + 700)  # past what was read, mid-record
    whole = (_cscan.READ_BUFFER + 700 - 24) // (16 + 1454)  # the records left whole
    assert first is not None and len(first) == 10
    assert len(items_of(scanner)) == whole - 10
    assert scanner.error is not None and "cut short" in scanner.error
    assert scanner.frames == whole and scanner.position == _cscan.READ_BUFFER + 700


def test_a_file_growing_while_read_is_read_as_it_was_opened(tmp_path: Path) -> None:
    frames = other_port(1000, 1400, 1000.0)
    frames += ethernet_frames([(CLIENT, SERVER, 1, 1, ACK, b"EHLO x\r\n")], 1001.0)
    path = tmp_path / "grow.pcap"
    content = pcap_bytes(frames)
    path.write_bytes(content)
    scanner = _cscan.Scanner(str(path), ports=[25])
    with path.open("ab") as fh:
        fh.write(pcap_bytes(ethernet_frames([(CLIENT, SERVER, 9, 1, ACK, b"QUIT\r\n")], 1002.0))[24:])
    items = items_of(scanner)
    assert [item[2][7] for item in items] == [b"EHLO x\r\n"]
    assert scanner.error is None and scanner.frames == 1001 and scanner.position == len(content)


def test_reading_stopped_by_an_oversized_record_stays_stopped(tmp_path: Path) -> None:
    """A record claiming more than MAX_RECORD bytes, short of the buffer's end, ends the file there: later calls
    find nothing more, whatever lies past it."""
    frames = other_port(100, 1400, 1000.0)
    content = pcap_bytes(frames)
    record = struct.pack("<IIII", 2000, 0, MAX_RECORD + 1, MAX_RECORD + 1)
    path = tmp_path / "oversized.pcap"
    path.write_bytes(content + record + bytes(4 * _cscan.READ_BUFFER))
    scanner = _cscan.Scanner(str(path), ports=[80], batch_packets=30)
    assert len(items_of(scanner)) == 100
    assert scanner.next_batch() is None and scanner.next_batch() is None
    assert scanner.oversized == 1 and "limit 262144" in scanner.error
    assert scanner.frames == 100 and scanner.position == path.stat().st_size


@pytest.mark.parametrize("seed", range(6))
def test_armed_flows_through_refills_sweeps_and_disarms_as_the_twin(tmp_path: Path, seed: int) -> None:
    """Armed flows drop bytes both ways among long frames of other traffic (a refill every few frames), while some are
    disarmed (a FIN, a gap in the sequence, a line starting with a dot, a raw run's end), the clock jumps past sweep
    ticks and idle timeouts, and flows are armed again between batches (their slots reused): item for item what the
    twin hands over, at small and large batches."""
    rng = random.Random(seed)
    flows = [((f"10.4.{i >> 8}.{i & 255}", 41000 + i), SERVER) for i in range(48)]
    seqs = {i: [1000 + i * 7, 90000 + i * 13] for i in range(len(flows))}
    rules = [skipping.SKIP_ALL, skipping.SKIP_DOT, skipping.SKIP_RAW]

    def arm(i: int, when: float) -> tuple:
        client, _ = flows[i]
        first, second = rules[i % 3], rules[(i // 3) % 3]
        return (ip4(client[0]), client[1], ip4(SERVER[0]), SERVER[1], when,
                first, seqs[i][0], 50_000, True, second, seqs[i][1], 20_000, True)  # fmt: skip

    armed = [arm(i, 1000.0) for i in range(len(flows))]
    frames: list = []
    now = 1000.0
    for _ in range(1500):
        jump = rng.random()  # now and then past a sweep tick (5 s), rarely past the idle timeout (30 s)
        now += 45.0 if jump < 0.002 else 7.0 if jump < 0.01 else 1e-4
        roll = rng.random()
        if roll < 0.15:  # a long frame of no named port: the buffer fills and is refilled
            size = rng.randint(20_000, 60_000)
            frames.append((now, ether(ipv4(OTHER[0], "10.9.0.2", tcp(OTHER[1], 80, 1, 1, ACK, bytes(size))))))
            continue
        i = rng.randrange(len(flows))
        client, server = flows[i]
        side = rng.randrange(2)
        src, dst = (client, server) if side == 0 else (server, client)
        flags, payload = ACK, b""
        if roll < 0.16:
            flags = ACK | 0x01  # FIN: the flow is disarmed
        elif roll < 0.17:
            seqs[i][side] += 5  # a gap: disarmed
        elif roll < 0.22:
            payload = b""  # a bare acknowledgement
        else:
            body = bytes([rng.randrange(65, 91)]) * rng.randint(1, 1500)
            payload = body + (b"\r\n." if roll < 0.23 else b"\r\n") + b"%02d%d" % (i, side)
        frames.append((now, ether(ipv4(src[0], dst[0], tcp(src[1], dst[1], seqs[i][side], seqs[i][1 - side],
                                                         flags, payload)))))  # fmt: skip
        seqs[i][side] += len(payload)
    path = tmp_path / "armed-random.pcap"
    path.write_bytes(pcap_bytes(frames))
    assert path.stat().st_size > 3 * _cscan.READ_BUFFER
    settings = {"ports": [25], "batch_packets": rng.choice([5, 64, 100_000]), "sweep_every": 5.0, "idle_timeout": 30.0}
    outputs = []
    compiled = _cscan.Scanner(str(path), **settings)
    for scanner in (compiled, PyScanner(PacketReader(path, sniff_kind(path)), **settings)):
        for rule in armed:
            assert scanner.skip_flow(*rule)
        items: list = []
        batches = 0
        while (batch := scanner.next_batch()) is not None:
            items += batch
            batches += 1
            if batches % 3 == 0 and batch:  # armed again: a forgotten flow's slot is reused
                for i in range(batches % 7, len(flows), 5):
                    scanner.skip_flow(*arm(i, batch[-1][1]))
        outputs.append(items)
    assert outputs[0] == outputs[1]
    notices = [item for item in outputs[0] if item[2] is not None and item[2][9] & INFO_SKIPPED]
    assert notices and compiled.error is None
    assert compiled.tail_bytes_copied > 0  # tails were pending when the buffer was refilled
