"""Live capture from a network interface through libpcap, with the port filter run by the kernel.

libpcap hands packets over in batches (``next_batch``: one buffer, packed lengths and times); the packet scanner
(:mod:`passive.capture.scanner`, compiled when built) decides, without a Python object per packet, which of them
reach reassembly, by the same rules as for files. In every-port mode the kernel filter passes every TCP packet
(and the tunnels): the head of a new flow on any port is what tells whether it is mail, and no BPF program can
tell a flow's first packets from its later ones. The scanner then keeps the flows found to be mail and the
endpoints of the servers found (every later flow to one of them is read whole, from its first packet, whatever its
head says), and drops the rest of every other flow after its head. Re-setting the kernel filter with the servers
found would narrow nothing: the filter already passes every TCP packet, which it must for new flows to be seen.
``ports`` alone (``all_ports`` off): the kernel passes only those ports.
"""

from __future__ import annotations

import ctypes
import select
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from passive.capture.bpf import build_bpf_filter
from passive.capture.counters import CaptureCounters
from passive.capture.engine import Engine
from passive.capture.fanout_bpf import flow_hash_program
from passive.capture.flow import HandlerFactory
from passive.capture.libpcap import META, binding, libpcap_available
from passive.capture.options import CaptureOptions
from passive.capture.reassembly import Reassembler
from passive.capture.scanread import ScanTally, buffer_scanner
from passive.core.errors import CaptureError, one_line

SNAPLEN = 262144  # bytes kept of each packet: whole packets
# The longest packet the kernel hands a fanout group's member once it joined IPv4 fragments (the group's DEFRAG flag):
# an IPv4 datagram's largest total length after an Ethernet header and two VLAN tags. A shorter --snaplen cuts what a
# single capture process, joining the pieces itself (passive.capture.defrag), would read whole.
JOINED_MAX = 65535 + 14 + 2 * 4
LIVE_BATCH = 256  # packets asked of libpcap per next_batch call, at most...
LIVE_BATCH_BYTES = 16 * 1024 * 1024  # ...and at most this many bytes of snapshot length (next_batch counts packets)
BUFFER_MIB = 32
"""The kernel ring buffer of each capture process, in MiB (libpcap's own default is 2 MiB). It holds what arrives
while the process is busy elsewhere: 32 MiB is 1.3 s of 200 Mbit/s (25 MB/s), longer than a store commit or a
garbage collection pause, and with ``--jobs N`` each of the N rings sees a share of the traffic. The ring is mapped
into the process and counts in its RSS from the start, so it is not made larger by default."""
MAX_BUFFER_MIB = 4096  # what --buffer-size accepts: beyond, a mistyped value would pin gigabytes of kernel memory


class PcapStats(NamedTuple):
    received: int
    dropped: int  # dropped by the kernel: buffer full
    if_dropped: int  # dropped by the interface/driver


class LiveCapture:
    """Capture from a live interface (needs libpcap and capture privileges).

    Frames are numbered in the order they are received (only packets the BPF filter
    passes reach us, so these are not positions in any file). Call :meth:`stats` for
    libpcap's receive/drop counts; ``run`` stops when ``should_stop()`` returns true (after
    reading what the kernel had queued, for at most ``drain_seconds``), after ``max_packets``
    packets, or on an error.
    """

    def __init__(
        self,
        interface: str,
        options: CaptureOptions | None = None,
        *,
        snaplen: int = SNAPLEN,
        promisc: bool = True,
        timeout_ms: int = 250,
        buffer_size: int | None = BUFFER_MIB << 20,
        fanout: int | None = None,
    ) -> None:
        if not libpcap_available():
            raise CaptureError("live capture needs libpcap (pcapy-ng), which is not installed")
        self.options = options = options or CaptureOptions()
        self.interface = interface
        handle = _activate(interface, snaplen, promisc, timeout_ms, buffer_size)
        self._handle = handle
        self.fanout_warnings: list[str] = []
        if fanout is not None:
            refused, joins = _join_fanout(handle, interface, fanout)
            self.fanout_warnings = [refused] if refused else []
            if joins and snaplen < JOINED_MAX:
                self.fanout_warnings.append(
                    f"the kernel joins IPv4 fragments before the capture processes (--jobs): a packet joined past "
                    f"--snaplen {snaplen} is cut, and a tunnel packet fragmented outside loses its end, which one "
                    f"process joining the pieces itself reads whole (--snaplen {JOINED_MAX} keeps every joined packet)"
                )
        self._timeout = max(timeout_ms, 1) / 1000
        self._batch = max(1, min(LIVE_BATCH, LIVE_BATCH_BYTES // max(1, snaplen)))
        # After should_stop(): how long at most to keep reading what was captured before the stop.
        self.drain_seconds = max(1.0, 4 * self._timeout)
        # Non-blocking reads plus select(): with TPACKET_V3 a blocking read may wait past its timeout
        # while no packet arrives, and `should_stop` would not be looked at.
        handle.setnonblock(1)
        self.linktype = handle.datalink()
        # Loop-free, so the kernel runs the filter and only the wanted ports reach user space.
        expr = build_bpf_filter(
            options.ports,
            all_ports=options.all_ports,
            user_filter=options.bpf,
            linktype=self.linktype,
            protochain=False,
        )
        try:
            handle.setfilter(expr)
        except binding().PcapError as exc:
            raise CaptureError(f"invalid BPF filter: {one_line(exc)}") from None
        self.filter = expr

    def run(
        self,
        handler_factory: HandlerFactory,
        *,
        max_packets: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        counters: CaptureCounters | None = None,
        on_tick: Callable[[float], None] | None = None,
        tick_interval: float = 1.0,
    ) -> CaptureCounters:
        """Capture until stopped; ``on_tick(capture_now)`` runs every ``tick_interval`` s, traffic or not.

        Idle flows expire on capture time even when no packet arrives: capture time is carried
        forward from the last packet's timestamp by the wall-clock time elapsed since it arrived.
        """
        counters = counters if counters is not None else CaptureCounters()
        for warning in self.fanout_warnings:
            counters.warn(warning, anomaly=False)
        engine = Engine(handler_factory, self.options, counters, scanning=True, keep_servers=True)
        engine.scanner = buffer_scanner(self.options)
        tally = ScanTally(counters)
        frame = 0
        last_ts: float | None = None
        last_arrival = next_tick = time.monotonic()
        drain_until: float | None = None  # set once stopping: until then, read what the kernel already queued
        idle_waits = 0  # read timeouts waited in a row, while stopping, with nothing read
        try:
            while max_packets is None or frame < max_packets:
                if drain_until is None and should_stop():
                    # Bounded: on a busy span port the queue may never run dry.
                    drain_until = time.monotonic() + self.drain_seconds
                try:
                    buf, meta = self._handle.next_batch(self._batch)
                except binding().PcapError as exc:
                    counters.warn(f"capture on {self.interface} failed: {one_line(exc)}")
                    break
                if not meta:
                    # Two whole read timeouts: TPACKET_V3 retires a partly filled block on a timer, not at once.
                    if drain_until is not None and (idle_waits >= 2 or time.monotonic() >= drain_until):
                        break  # the kernel's queue is empty
                    select.select([self._handle.getfd()], [], [], self._timeout)
                    idle_waits += drain_until is not None
                else:
                    idle_waits = 0
                    frame, last_ts = self._feed(engine, buf, meta, frame, max_packets)
                    tally.update(engine.scanner.counters())
                    last_arrival = time.monotonic()
                now = time.monotonic()
                if drain_until is not None and now >= drain_until:
                    break
                if now >= next_tick:
                    next_tick = now + tick_interval
                    _tick(engine.reassembler, last_ts, now - last_arrival, on_tick)
                    engine.arm()  # flows the sweep closed: the scanner forgets them before the next batch
        finally:
            engine.finish()
        return counters

    def _feed(self, engine: Engine, buf: bytes, meta: bytes, frame: int, max_packets: int | None) -> tuple[int, float]:
        """Feed one batch (up to ``max_packets`` frames in all); return the last frame number and timestamp."""
        records = len(meta) // META.size
        if max_packets is not None:
            records = min(records, max(0, max_packets - frame))
            meta = meta[: records * META.size]
        scanner, start = engine.scanner, 0
        while start < records:  # the scanner stops early when a flow's verdict may be pending: feed, go on
            items, start, frame = scanner.scan(buf, meta, self.linktype, frame, start)
            engine.feed_items(items)
        sec, usec, _offset, _caplen = META.unpack_from(meta, (records - 1) * META.size) if records else (0, 0, 0, 0)
        return frame, sec + usec * 1e-6

    def stats(self) -> PcapStats:
        received, dropped, if_dropped = self._handle.stats()
        return PcapStats(received, dropped, if_dropped)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _activate(interface: str, snaplen: int, promisc: bool, timeout_ms: int, buffer_size: int | None) -> Any:
    """An active libpcap handle on ``interface``, or :class:`CaptureError` with libpcap's reason."""
    pcapy = binding()
    try:
        handle = pcapy.create(interface)
        handle.set_snaplen(snaplen)
        handle.set_promisc(bool(promisc))
        handle.set_timeout(timeout_ms)
        if buffer_size:
            handle.set_buffer_size(buffer_size)
        status = handle.activate()
    except pcapy.PcapError as exc:
        raise CaptureError(f"cannot capture on {interface}: {one_line(exc)}") from None
    if status is not None and status < 0:
        # activate() reports failures as a libpcap status; open_live gives the readable message.
        try:
            pcapy.open_live(interface, snaplen, int(bool(promisc)), timeout_ms).close()
        except pcapy.PcapError as exc:
            raise CaptureError(f"cannot capture on {interface}: {one_line(exc)}") from None
        raise CaptureError(f"cannot capture on {interface}: libpcap status {status}")
    return handle


def _join_fanout(handle: Any, interface: str, group: int) -> tuple[str | None, bool]:
    """Join the fanout group ``group``, whose program (:mod:`passive.capture.fanout_bpf`) hands both directions of
    each TCP flow, tunnelled or not, to one of the group's sockets. Where the kernel takes no program, the group is
    a ``PACKET_FANOUT_HASH`` one (its hash of the outermost headers splits flows inside VXLAN or Geneve): a warning,
    returned, and whether the kernel joins IPv4 fragments before handing packets over (``PACKET_FANOUT_FLAG_DEFRAG``:
    not in that fallback)."""
    try:
        fd = handle.getfd()
        _join_with_program(fd, group & 0xFFFF)
        return None, True
    except _ProgramRefused as exc:  # in the group, without a program: every packet goes to its first member
        return f"the kernel refused the fanout program ({exc}): the first capture process reads every packet", True
    except (AttributeError, OSError) as exc:
        refused = one_line(exc)
    pcapy = binding()
    try:
        handle.set_fanout(group & 0xFFFF, pcapy.PACKET_FANOUT_HASH)
    except (AttributeError, pcapy.PcapError, OSError) as exc:
        handle.close()
        raise CaptureError(
            f"cannot share {interface} between capture processes (PACKET_FANOUT): {one_line(exc)}"
        ) from None
    return (
        f"the kernel refused the fanout program ({refused}): flows are spread by their outermost headers, which "
        "may split a tunnelled session (VXLAN, Geneve) between capture processes",
        False,
    )


SOL_PACKET, PACKET_FANOUT, PACKET_FANOUT_DATA = 263, 18, 22  # linux/if_packet.h
PACKET_FANOUT_CBPF, PACKET_FANOUT_FLAG_DEFRAG = 6, 0x8000


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _join_with_program(fd: int, group: int) -> None:
    """Join ``group`` as a ``PACKET_FANOUT_CBPF`` group (IPv4 fragments joined first) and give it the flow program;
    the socket stays libpcap's."""
    rows = flow_hash_program()
    program = (_SockFilter * len(rows))(*(_SockFilter(*row) for row in rows))
    fprog = _SockFprog(len(rows), ctypes.cast(program, ctypes.POINTER(_SockFilter)))
    sock = socket.socket(fileno=fd)
    try:
        mode = PACKET_FANOUT_CBPF | PACKET_FANOUT_FLAG_DEFRAG
        sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (group | mode << 16).to_bytes(4, sys.byteorder))  # unsigned
        try:
            sock.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, bytes(fprog))
        except OSError as exc:
            raise _ProgramRefused(one_line(exc)) from None
    finally:
        sock.detach()


class _ProgramRefused(Exception):
    """The socket joined the group, whose program the kernel then refused."""


def _tick(
    reassembler: Reassembler, last_ts: float | None, since_arrival: float, on_tick: Callable[[float], None] | None
) -> None:
    """Expire idle flows on capture time (the last packet's, carried forward), then call ``on_tick``."""
    capture_now = time.time() if last_ts is None else last_ts + since_arrival
    reassembler.expire(capture_now)
    if on_tick is not None:
        on_tick(capture_now)
