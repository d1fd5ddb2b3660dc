"""Record and batch size caps of the capture readers: what a crafted file may make them hold in memory."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from passive.capture import CaptureCounters, CaptureOptions, analyze_file, libpcap
from passive.capture.libpcap import BATCH_BYTES, libpcap_available
from passive.capture.pcapfile import MAX_INTERFACES, MAX_RECORD, PacketReader
from tests.helpers_capture import (
    Recorder,
    ether,
    ethernet_frames,
    ipv4,
    pcap_bytes,
    pcapng_bytes_tsresol,
    smtp_session_segments,
    tcp,
)

SYN = 0x02


def _record(data: bytes, length: int | None = None, ts: int = 2000) -> bytes:
    length = len(data) if length is None else length
    return struct.pack("<IIII", ts, 0, length, length) + data


def _header(snaplen: int, linktype: int = 1) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)


def _session_records() -> bytes:
    """An SMTP session's records (without the pcap header)."""
    return pcap_bytes(ethernet_frames(smtp_session_segments()))[24:]


@pytest.mark.parametrize(
    ("compress", "backend"),
    [(True, "auto"), (False, "python"), pytest.param(False, "auto", marks=pytest.mark.skipif(
        not libpcap_available(), reason="needs libpcap (pcapy-ng)"))],
    ids=["gzip", "plain-builtin", "plain-libpcap"],
)  # fmt: skip
def test_record_cap_holds_whatever_snaplen_the_header_claims(tmp_path: Path, compress: bool, backend: str) -> None:
    """A header allowing 4 GiB records does not let a 4 MiB record through: the reader stops there, as libpcap."""
    size = 4 << 20
    content = _header(0xFFFFFFFF) + _session_records() + _record(bytes(size)) + _session_records()
    path = tmp_path / "huge.pcap"
    path.write_bytes(gzip.compress(content, compresslevel=1) if compress else content)
    recorder, counters = Recorder(), CaptureCounters()
    analyze_file(path, recorder, CaptureOptions(ports=frozenset({25}), backend=backend), counters=counters)
    assert counters.oversized_records == 1 and counters.anomalies == 1
    assert any(str(size) in warning and "262144" in warning for warning in counters.warnings)
    assert len(recorder.flows) == 1 and recorder.flows[0].client_data  # the session before it was read


def test_pcapng_packet_over_the_cap_is_cut_and_counted(tmp_path: Path) -> None:
    syn = bytes(ether(ipv4("10.0.0.1", "10.0.0.2", tcp(40000, 25, 1, flags=SYN))))
    big = syn + bytes((1 << 20) - len(syn))
    path = tmp_path / "big.pcapng"
    path.write_bytes(pcapng_bytes_tsresol([1], [(0, 1.0, big), (0, 2.0, syn)]))
    packets = list(PacketReader(path))
    assert [len(p.data) for p in packets] == [MAX_RECORD, len(syn)] and packets[0].wire_len == len(big)
    counters = CaptureCounters()
    analyze_file(path, Recorder(), CaptureOptions(ports=frozenset({25})), counters=counters)
    assert counters.oversized_records == 1 and counters.packets_read == 2
    assert "1 packets longer than 262144 bytes were cut to that length" in counters.warnings


@pytest.mark.skipif(not libpcap_available(), reason="needs libpcap (pcapy-ng)")
def test_link_type_libpcap_reads_without_a_cap_goes_to_the_builtin_reader(tmp_path: Path) -> None:
    """libpcap accepts 128 MiB records for D-Bus captures (231) and cannot compile the mail filter for them: link
    types leakscope does not decode go to the built-in reader, which caps records (it stopped with an error before)."""
    path = tmp_path / "dbus.pcap"
    path.write_bytes(_header(0xFFFFFFFF, 231) + _record(bytes(100)) + _record(bytes(1 << 20)))
    counters = CaptureCounters()
    analyze_file(path, Recorder(), CaptureOptions(ports=frozenset({25}), backend="libpcap"), counters=counters)
    assert counters.packets_read == 1 and counters.oversized_records == 1


@pytest.mark.skipif(not libpcap_available(), reason="needs libpcap (pcapy-ng)")
def test_libpcap_batches_are_sized_in_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records as big as libpcap accepts, all passing the mail filter: no batch holds more than BATCH_BYTES."""
    syn = bytes(ether(ipv4("10.0.0.1", "10.0.0.2", tcp(40000, 25, 1, flags=SYN))))
    records = b"".join(_record(syn + bytes(MAX_RECORD - len(syn)), ts=2000 + n) for n in range(100))
    path = tmp_path / "jumbo.pcap"
    path.write_bytes(_header(MAX_RECORD) + records)
    sizes: list[int] = []
    open_offline = libpcap.binding().open_offline

    class Recording:
        def __init__(self, reader: object) -> None:
            self.reader = reader

        def next_batch(self, count: int) -> tuple[bytes, bytes]:
            buf, meta = self.reader.next_batch(count)  # type: ignore[attr-defined]
            sizes.append(len(buf))
            return buf, meta

        def __getattr__(self, name: str) -> object:
            return getattr(self.reader, name)

    monkeypatch.setattr(libpcap.binding(), "open_offline", lambda name: Recording(open_offline(name)))
    counters = CaptureCounters()
    analyze_file(path, Recorder(), CaptureOptions(ports=frozenset({25}), backend="libpcap"), counters=counters)
    assert counters.packets_read == 100 and counters.flows == 1
    assert sum(sizes) == 100 * MAX_RECORD and max(sizes) <= BATCH_BYTES


def test_a_pcapng_section_declaring_endless_interfaces_stops_reading(tmp_path: Path) -> None:
    """Each declared interface is held (2 million 20-byte declarations took 267 MiB): past MAX_INTERFACES in one
    section reading stops, with a warning, after the packets read so far."""
    frames = ethernet_frames(smtp_session_segments())
    head = pcapng_bytes_tsresol([1], [(0, ts, frame) for ts, frame in frames])
    declaration = struct.pack("<II", 1, 20) + struct.pack("<HHI", 1, 0, 65535) + struct.pack("<I", 20)
    path = tmp_path / "interfaces.pcapng"
    path.write_bytes(head + declaration * MAX_INTERFACES + head[28:])  # the session's packets again after them
    reader = PacketReader(path)
    packets = list(reader)
    assert len(packets) == len(frames)  # the second copy, after the flood, is not read
    assert reader.error == f"corrupt capture: more than {MAX_INTERFACES} interfaces in one section"
