"""The receiver lab's crafted client (tests/helpers_receiver.py): runs in the sender namespace, plays each case's
steps on a connection of its own through a packet socket (scapy builds the TCP segments).

Besides the steps listed in tests/helpers_receiver.py, a case whose first step is ``("timestamps",)`` offers the
Timestamps option (RFC 7323) in its SYN; every later segment of that connection then carries one (NOP, NOP, then the
option, as Linux lays it out), its TSval the connection's clock (:data:`TS_CLOCK` until a step moves it) and its
TSecr the latest TSval the server sent; ``("timestamps0",)`` does the same with a SYN whose TSval is 0 and a clock
from :data:`ZERO_THEN` on; either with ``-bare3`` appended sends the handshake's last ACK without the option.
``("raw", offset, bytes, flags, tsval, urgent[, ack delta[, window[, NOPs]]])`` sends a segment of any flags (scapy's
letters), with the TSval given (None: the clock's), urgent pointer, acknowledgement moved by the delta, window field,
and NOPs after the Timestamps option (off Linux's fast path).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers_frames import ipv6_packets, with_ipv4_options
from tests.helpers_receiver import CLIENT_IP, FAMILIES, IPV4, IPV6, PORT, SERVER_IP, Family

STEP_PAUSE = 0.03  # seconds between two steps: the receiver has handled one segment before the next arrives
WRONG_CHECKSUM = 0xBEEF  # the TCP checksum of "badsum" and "badrst" steps: none of theirs is right with it
PIECE = 8  # bytes of IP payload in each fragment of "frag" and "fragbad" steps
UNSENT = 100_000  # how far past what the receiver sent a "badack" step's acknowledgement number is
PIECE6 = 8  # bytes of each IPv6 fragment's payload after the first (which holds the whole TCP header)
TS_CLOCK = 1_000_000  # a timestamped connection's first TSval: far from 0 (a ts_recent of 0 disables PAWS in Linux)
WINDOW = 64240  # the window field of the client's segments (a "raw" step may give another)
ZERO_THEN = 0x90000000  # the clock after a SYN whose TSval is 0: more than half the TSval space past it
TIMESTAMP_KIND = 8  # the Timestamps option's kind (RFC 7323)
SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("WScale", 7), ("NOP", None)]


class _Link:
    """A packet socket on the sender's veth: sends frames, and keeps what the receiver said, per client port."""

    def __init__(self, dev: str, server_mac: str, family: Family) -> None:
        self.family = family
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(family.ethertype))
        self.sock.bind((dev, 0))
        self.sock.settimeout(0.2)
        self.mac = self.sock.getsockname()[4]
        self.server_mac = bytes.fromhex(server_mac.replace(":", ""))
        self.synack: dict[int, tuple[int, int, int]] = {}  # port -> (server ISN, window, wscale)
        self.edge: dict[int, int] = {}  # port -> right edge of the receiver's window (ack + scaled window)
        self.tsval: dict[int, int] = {}  # port -> the latest TSval the server sent
        self.lock = threading.Lock()
        self.sent = 0  # frames sent
        self.stop = False
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _server_tcp(self, ip: bytes) -> bytes | None:
        """The TCP header of a packet from the server (it sends no options or extension headers), else None."""
        if self.family is IPV6:
            server = ipaddress.IPv6Address(self.family.server).packed
            return ip[40:] if len(ip) >= 60 and ip[6] == 6 and ip[8:24] == server else None
        if len(ip) < 40 or ip[9] != 6 or socket.inet_ntoa(ip[12:16]) != SERVER_IP:
            return None
        return ip[(ip[0] & 15) * 4 :]

    def _listen(self) -> None:
        while not self.stop:
            try:
                frame = self.sock.recv(65536)
            except TimeoutError:
                continue
            tcp = self._server_tcp(frame[14:])
            if tcp is None:
                continue
            _sport, dport, seq, ack, offset, flags, window = struct.unpack_from("!HHIIBBH", tcp)
            options = _options_of(tcp[20 : (offset >> 4) * 4])
            with self.lock:
                if TIMESTAMP_KIND in options:
                    self.tsval[dport] = struct.unpack_from("!I", options[TIMESTAMP_KIND])[0]
                if flags & 0x12 == 0x12:
                    self.synack[dport] = (seq, window, options[3][0] if 3 in options else 0)
                elif flags & 0x10 and dport in self.synack:
                    self.edge[dport] = ack + (window << self.synack[dport][2])

    def send(
        self,
        port: int,
        seq: int,
        ack: int,
        flags: str,
        payload: bytes = b"",
        options: list | None = None,
        checksum: int | None = None,
        cut: bool = False,
        spoil: int | None = None,
        ip_options: bytes = b"",
        headers: list | None = None,
        urgent: int = 0,
        window: int = WINDOW,
    ) -> None:
        """One segment; with ``cut``, in IP fragments, piece ``spoil``'s IPv4 header checksum wrong; IPv4 header
        ``ip_options``, or IPv6 extension ``headers`` before the TCP header (and before the Fragment header)."""
        from scapy.layers.inet import IP, TCP, fragment  # imported in the sender's process only
        from scapy.layers.inet6 import IPv6

        segment = TCP(
            sport=port, dport=PORT, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, flags=flags, window=window,
            options=options or [], chksum=checksum, urgptr=urgent,
        )  # fmt: skip
        ident = port * 31 + seq
        if self.family is IPV6:
            tcp = bytes(IPv6(src=IPV6.client, dst=IPV6.server) / segment / payload)[40:]
            frames = ipv6_packets(IPV6.client, IPV6.server, tcp, headers or [], PIECE6 if cut else None, ident)
        else:
            packet = IP(src=CLIENT_IP, dst=SERVER_IP, ttl=64, id=ident & 0xFFFF) / segment / payload
            pieces = fragment(packet, PIECE) if cut else [packet]
            frames = [with_ipv4_options(bytes(piece), ip_options) if ip_options else bytes(piece) for piece in pieces]
        for index, frame in enumerate(frames):
            if index == spoil:
                frame = frame[:10] + struct.pack("!H", WRONG_CHECKSUM) + frame[12:]
            self.sock.send(self.server_mac + self.mac + struct.pack("!H", self.family.ethertype) + frame)
            self.sent += 1


def _options_of(options: bytes) -> dict[int, bytes]:
    """The TCP options' values by kind (the last of a kind wins); stops at EOL or at an option running past the
    end."""
    found: dict[int, bytes] = {}
    pos = 0
    while pos < len(options) and options[pos] != 0:
        if options[pos] == 1:
            pos += 1
            continue
        if pos + 1 >= len(options) or options[pos + 1] < 2 or pos + options[pos + 1] > len(options):
            break
        found[options[pos]] = options[pos + 2 : pos + options[pos + 1]]
        pos += options[pos + 1]
    return found


@dataclass
class _Connection:
    """One case's connection as the crafted client holds it."""

    port: int
    base: int  # the sequence number of the client's first data byte
    ack: int  # what the client acknowledges: the server's ISN + 1
    timestamps: bool  # the SYN offered the Timestamps option
    clock: int = TS_CLOCK  # the TSval of the connection's segments

    def options(self, link: _Link, tsval: int | None = None, extra: list | None = None) -> list:
        """TCP options for a segment: the Timestamps option (TSval ``tsval``, else the clock; none in a connection
        without timestamps unless ``tsval`` is given), then ``extra``."""
        if tsval is None and not self.timestamps:
            return list(extra or [])
        with link.lock:
            echo = link.tsval.get(self.port, 0)
        value = self.clock if tsval is None else tsval
        return [("NOP", None), ("NOP", None), ("Timestamp", (value & 0xFFFFFFFF, echo)), *(extra or [])]


def send(plan_file: Path, dev: str, server_mac: str, family: Family) -> None:
    link = _Link(dev, server_mac, family)
    for case in json.loads(plan_file.read_text()):
        _play(link, case["port"], case["steps"])
    time.sleep(0.2)
    link.stop = True
    (plan_file.parent / "sent").write_text(str(link.sent))


def _play(link: _Link, port: int, steps: list[list]) -> None:
    isn = 1_000_000 + port * 7919
    bare_third = bool(steps) and steps[0][0].endswith("-bare3")  # the handshake's last ACK without a timestamp
    if bare_third:
        steps = [[steps[0][0].removesuffix("-bare3")], *steps[1:]]
    zero = bool(steps) and steps[0] == ["timestamps0"]  # the SYN's TSval 0, the clock then far from it
    timestamps = bool(steps) and steps[0] in (["timestamps"], ["timestamps0"])
    syn_ts = 0 if zero else TS_CLOCK
    syn_options = [*SYN_OPTIONS[:2], ("Timestamp", (syn_ts, 0)), *SYN_OPTIONS[2:]] if timestamps else SYN_OPTIONS
    link.send(port, isn, 0, "S", options=syn_options)
    deadline = time.monotonic() + 5
    while port not in link.synack:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no SYN-ACK for port {port}")
        time.sleep(0.005)
    conn = _Connection(port, isn + 1, link.synack[port][0] + 1, timestamps)
    if zero:
        conn.clock = ZERO_THEN
    link.send(port, conn.base, conn.ack, "A", options=[] if bare_third else conn.options(link))
    time.sleep(STEP_PAUSE)
    for step in steps[1:] if timestamps else steps:
        _step(link, conn, step)
        time.sleep(STEP_PAUSE)


def _step(link: _Link, conn: _Connection, step: list) -> None:
    """Send one step of a case (its kinds are listed in tests/helpers_receiver.py and at the top of this module)."""
    kind, port, ack = step[0], conn.port, conn.ack
    data = bytes.fromhex(step[2]) if len(step) > 2 else b""
    seq = conn.base + step[1] if len(step) > 1 else 0
    options = conn.options(link)
    if kind == "beyond":
        with link.lock:
            seq = link.edge[port] + step[1]
    if kind == "clock":  # later segments carry this TSval
        conn.clock = step[1]
    elif kind in ("data", "beyond"):
        link.send(port, seq, ack, "PA", data, options)
    elif kind == "ts":  # data whose TSval is the one given, or without the Timestamps option
        tsval = step[3]
        link.send(port, seq, ack, "PA", data, conn.options(link, tsval) if tsval is not None else [])
    elif kind == "opt":  # data with more TCP options after the connection's own
        extra = [(option_kind, bytes.fromhex(value)) for option_kind, value in step[3]]
        link.send(port, seq, ack, "PA", data, conn.options(link, extra=extra))
    elif kind == "urg":  # data with an urgent pointer, the URG flag set or not
        link.send(port, seq, ack, "PAU" if step[4] else "PA", data, options, urgent=step[3])
    elif kind == "raw":  # ("raw", offset, bytes, flags, TSval, urgent pointer[, ack delta[, window[, NOPs after]]])
        ack = (ack + (step[6] if len(step) > 6 else 0)) & 0xFFFFFFFF
        window = step[7] if len(step) > 7 else WINDOW
        options = conn.options(link, step[4], [("NOP", None)] * (step[8] if len(step) > 8 else 0))
        link.send(port, seq, ack, step[3], data, options, urgent=step[5], window=window)
    elif kind == "badsum":  # data whose TCP checksum is wrong: the receiver drops it
        link.send(port, seq, ack, "PA", data, options, checksum=WRONG_CHECKSUM)
    elif kind == "badrst":
        link.send(port, seq, ack, "RA", options=options, checksum=WRONG_CHECKSUM)
    elif kind == "noack":  # data without the ACK flag: a synchronized receiver discards it
        link.send(port, seq, ack, "P", data, options)
    elif kind == "badack":  # data acknowledging bytes the receiver never sent: discarded too
        link.send(port, seq, ack + UNSENT, "PA", data, options)
    else:
        _ip_step(link, conn, step, seq, data)


def _ip_step(link: _Link, conn: _Connection, step: list, seq: int, data: bytes) -> None:
    """Send a step whose variant lies in the IP layer, or a plain RST or FIN."""
    kind, port, ack, options = step[0], conn.port, conn.ack, conn.options(link)
    if kind == "frag" or (kind == "fragbad" and link.family is IPV4):  # cut on the way
        link.send(port, seq, ack, "PA", data, options, cut=True, spoil=1 if kind == "fragbad" else None)
    elif kind == "ipopt" and link.family is IPV4:
        link.send(port, seq, ack, "PA", data, options, ip_options=bytes.fromhex(step[3]))
    elif kind in ("ext", "extfrag") and link.family is IPV6:
        headers = [(header_type, bytes.fromhex(body)) for header_type, body in step[3]]
        link.send(port, seq, ack, "PA", data, options, cut=kind == "extfrag", headers=headers)
    elif kind == "rst":
        link.send(port, seq, ack, "RA", options=options)
    elif kind == "fin":
        link.send(port, seq, ack, "FA", options=options)
    else:
        raise ValueError(f"no step {kind!r} over {link.family.name}")


if __name__ == "__main__":
    send(Path(sys.argv[1]), sys.argv[2], sys.argv[3], FAMILIES[sys.argv[4]])
