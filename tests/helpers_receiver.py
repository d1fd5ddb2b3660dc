"""A real Linux TCP receiver for reassembly tests: crafted segments in, the bytes its application read out.

Two network namespaces joined by a veth pair. In the receiver namespace a small Python server (this file, ``serve``)
accepts connections and writes, per connection, exactly the bytes its application read; tcpdump records the link.
In the sender namespace this file (``send``) plays the client with hand-made segments (scapy builds them, a packet
socket sends and receives them): it does the handshake itself, then follows a plan of data, RST and FIN segments.

The sender's kernel must not answer the receiver with RSTs of its own (it knows no such connection). Instead of a
firewall rule, the crafted segments come from :data:`CLIENT_IP`, an address no interface holds: the receiver reaches
it through a permanent neighbour entry pointing at the sender's veth, where the sender's kernel drops the frames as
not addressed to it, and the packet socket still reads them.

Use (as root, with ``ip`` and ``tcpdump``)::

    with ReceiverLab(tmp_path) as lab:
        results = lab.run(cases)        # {name: bytes the application read}; lab.pcap holds the capture

A case is a list of steps, offsets counted in the client's stream (0 is the first byte after the SYN):
``("data", offset, bytes)``, ``("rst", offset)``, ``("fin", offset)``, ``("beyond", extra, bytes)`` (data starting
``extra`` bytes past the right edge of the receiver's window, as its latest ACK advertised), ``("badsum", offset,
bytes)`` and ``("badrst", offset)`` (data, or a RST, with a wrong TCP checksum), ``("frag", offset, bytes)`` (data
cut into IPv4 fragments of 8 bytes, as a router on the way cuts it) and ``("fragbad", offset, bytes)`` (the same,
the second piece's IPv4 header checksum wrong), ``("noack", offset, bytes)`` (data without the ACK flag) and
``("badack", offset, bytes)`` (data acknowledging bytes the receiver never sent), ``("ipopt", offset, bytes,
options)`` (data whose IPv4 header carries ``options``, raw bytes, EOL-padded to a word).

``ReceiverLab(work, IPV6)`` plays the cases over IPv6 instead (addresses without duplicate address detection, the
client's again held by no interface and reached through a permanent neighbour entry). There ``("ext", offset, bytes,
headers)`` sends data behind IPv6 extension headers, each ``(type, bytes after its Next Header byte)`` (the Next
Header bytes are filled in, in the order given), ``("extfrag", offset, bytes, headers)`` the same followed by a
Fragment header, the segment in pieces, and ``("frag", offset, bytes)`` is ``extfrag`` without other headers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers_frames import frames_from, ipv6_packets, with_ipv4_options

REPO = Path(__file__).resolve().parents[1]
SERVER_IP = "10.98.0.2"
SENDER_IP = "10.98.0.1"  # the sender namespace's own address: its kernel answers for this one, not CLIENT_IP
CLIENT_IP = "10.98.0.9"  # held by no interface: what the crafted segments come from
PORT = 2525
FIRST_CLIENT_PORT = 41000
STEP_PAUSE = 0.03  # seconds between two steps: the receiver has handled one segment before the next arrives
TOOLS = ("ip", "tcpdump")

Step = tuple  # ("data", offset, bytes) | ("rst", offset) | ("fin", offset) | ("beyond", extra, bytes) | badsum...
WRONG_CHECKSUM = 0xBEEF  # the TCP checksum of "badsum" and "badrst" steps: none of theirs is right with it
PIECE = 8  # bytes of IP payload in each fragment of "frag" and "fragbad" steps
UNSENT = 100_000  # how far past what the receiver sent a "badack" step's acknowledgement number is
PIECE6 = 8  # bytes of each IPv6 fragment's payload after the first (which holds the whole TCP header)


@dataclass(frozen=True)
class Family:
    """One IP version's addresses in the lab: the server's, the sender namespace's own, the crafted client's."""

    name: str
    server: str
    sender: str
    client: str
    prefix: int
    ethertype: int
    capture: str  # tcpdump's filter: the lab's TCP, and the IP fragments a port filter would miss


IPV4 = Family(
    "ipv4", SERVER_IP, SENDER_IP, CLIENT_IP, 24, 0x0800,
    f"tcp port {PORT} or (ip proto 6 and ip[6:2] & 0x1fff != 0)",  # a fragment past the first has no ports
)  # fmt: skip
IPV6 = Family(
    "ipv6", "fd98::2", "fd98::1", "fd98::9", 64, 0x86DD,
    "ip6",  # all of it: a port filter reads TCP right after the IPv6 header, not behind extension headers
)  # fmt: skip
FAMILIES = {family.name: family for family in (IPV4, IPV6)}


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc


class ReceiverLab:
    """The two namespaces, the recording server and tcpdump; :meth:`run` plays the cases through them."""

    def __init__(self, work: Path, family: Family = IPV4) -> None:
        self.work = work
        self.family = family
        prefix = f"lr{os.getpid()}{family.name[-1]}"
        self.ns_rcv, self.ns_snd = f"{prefix}-rcv", f"{prefix}-snd"
        self.dev_rcv, self.dev_snd = f"{prefix}-r", f"{prefix}-s"
        self.pcap = work / "receiver.pcap"
        self.out = work / "read"
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> ReceiverLab:
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._create()
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _create(self) -> None:
        self._delete()
        _run(["ip", "netns", "add", self.ns_rcv])
        _run(["ip", "netns", "add", self.ns_snd])
        _run(["ip", "link", "add", self.dev_rcv, "netns", self.ns_rcv, "type", "veth", "peer", "name", self.dev_snd,
              "netns", self.ns_snd])  # fmt: skip
        family, v6 = self.family, self.family is IPV6
        for ns, dev, ip in ((self.ns_rcv, self.dev_rcv, family.server), (self.ns_snd, self.dev_snd, family.sender)):
            sysctl = f"net.ipv6.conf.{dev}.disable_ipv6={0 if v6 else 1}"
            _run(["ip", "netns", "exec", ns, "sysctl", "-qw", sysctl], check=v6)
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/{family.prefix}", "dev", dev, *(["nodad"] if v6 else [])])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        _run(["ip", "-n", self.ns_rcv, "neigh", "add", family.client, "lladdr", self.mac(self.ns_snd, self.dev_snd),
              "dev", self.dev_rcv, "nud", "permanent"])  # fmt: skip

    @staticmethod
    def mac(ns: str, dev: str) -> str:
        info = json.loads(_run(["ip", "-n", ns, "-j", "link", "show", dev]).stdout)
        return info[0]["address"]

    def _spawn(self, ns: str, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with (self.work / log).open("wb") as logf:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv], stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                start_new_session=True,
            )  # fmt: skip
        self._procs.append(proc)
        return proc

    def _start(self) -> None:
        tcpdump = ["tcpdump", "-Z", "root", "--immediate-mode", "-U", "-n", "-i", self.dev_rcv, "-w", str(self.pcap)]
        self._spawn(self.ns_rcv, [*tcpdump, self.family.capture], "tcpdump.log")
        serve_argv = [sys.executable, "-m", "tests.helpers_receiver", "serve", str(self.out), self.family.name]
        self._spawn(self.ns_rcv, serve_argv, "srv.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listening = "listening on" in (self.work / "tcpdump.log").read_text(errors="replace")
            if listening and (self.out / "ready").exists():
                return
            time.sleep(0.05)
        raise RuntimeError("the receiver or tcpdump did not start: " + (self.work / "srv.log").read_text())

    def run(self, cases: dict[str, list[Step]], timeout: float = 20) -> dict[str, bytes]:
        """Play every case on a connection of its own; return what the application read, per case."""
        plan = []
        for number, (name, steps) in enumerate(cases.items()):
            encoded = [_encoded(step) for step in steps]
            plan.append({"name": name, "port": FIRST_CLIENT_PORT + number, "steps": encoded})
        plan_file = self.work / "plan.json"
        plan_file.write_text(json.dumps(plan))
        mac = self.mac(self.ns_rcv, self.dev_rcv)
        argv = [sys.executable, "-m", "tests.helpers_receiver", "send", str(plan_file), self.dev_snd, mac]
        argv.append(self.family.name)
        sender = self._spawn(self.ns_snd, argv, "sender.log")
        if sender.wait(timeout=timeout) != 0:
            raise RuntimeError("the sender failed: " + (self.work / "sender.log").read_text())
        results = {}
        deadline = time.monotonic() + timeout
        for case in plan:
            done = self.out / f"{case['port']}.end"
            while not done.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not done.exists():
                raise RuntimeError(f"the receiver never finished case {case['name']}")
            results[case["name"]] = (self.out / f"{case['port']}.bin").read_bytes()
        self._settle(int((self.work / "sent").read_text()))
        return results

    def _settle(self, sent: int, limit: float = 5.0) -> None:
        """Wait until tcpdump's file holds every frame the sender sent (it writes each packet as it comes). Not
        until it stops growing: the server retransmits its FINs, which the crafted client never acknowledges."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.pcap.exists() and frames_from(self.pcap.read_bytes(), self.family.client) >= sent:
                return
            time.sleep(0.05)
        raise RuntimeError(f"tcpdump did not record the {sent} frames the sender sent")

    def close(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)  # tcpdump flushes and exits
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
        self._procs.clear()
        self._delete()

    def _delete(self) -> None:
        existing = _run(["ip", "netns", "list"], check=False).stdout.decode().split()
        for ns in (self.ns_rcv, self.ns_snd):
            if ns in existing:
                for pid in _run(["ip", "netns", "pids", ns], check=False).stdout.decode().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                _run(["ip", "netns", "delete", ns], check=False)


def _encoded(step: Step) -> list:
    """A step as JSON holds it: bytes as hex, tuples as lists."""
    return [
        value.hex() if isinstance(value, bytes) else _encoded(value) if isinstance(value, tuple | list) else value
        for value in step
    ]


# ---- the receiver's application (runs in the receiver namespace) -------------------------------------------------


def serve(out: Path, family: Family) -> None:
    """Accept connections on PORT; per connection write what recv() returned and how the connection ended."""
    listener = socket.socket(socket.AF_INET6 if family is IPV6 else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((family.server, PORT))
    listener.listen(64)
    (out / "ready").touch()
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    while True:
        conn, address = listener.accept()  # (host, port), and for IPv6 flow label and scope
        threading.Thread(target=_record, args=(conn, out / str(address[1])), daemon=True).start()


def _record(conn: socket.socket, base: Path) -> None:
    data = bytearray()
    end = "eof"
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except OSError as exc:
        end = exc.strerror or str(exc)
    finally:
        conn.close()
    base.with_suffix(".bin").write_bytes(bytes(data))
    base.with_suffix(".end").write_text(end)


# ---- the crafted client (runs in the sender namespace) --------------------------------------------------------------


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
            with self.lock:
                if flags & 0x12 == 0x12:
                    self.synack[dport] = (seq, window, _wscale(tcp[20 : (offset >> 4) * 4]))
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
    ) -> None:
        """One segment; with ``cut``, in IP fragments, piece ``spoil``'s IPv4 header checksum wrong; IPv4 header
        ``ip_options``, or IPv6 extension ``headers`` before the TCP header (and before the Fragment header)."""
        from scapy.layers.inet import IP, TCP, fragment  # imported in the sender's process only
        from scapy.layers.inet6 import IPv6

        segment = TCP(
            sport=port, dport=PORT, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, flags=flags, window=64240,
            options=options or [], chksum=checksum,
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


def _wscale(options: bytes) -> int:
    pos = 0
    while pos < len(options):
        kind = options[pos]
        if kind == 0:
            break
        if kind == 1:
            pos += 1
            continue
        if pos + 1 >= len(options):
            break
        if kind == 3 and options[pos + 1] == 3:
            return options[pos + 2]
        pos += max(2, options[pos + 1])
    return 0


def send(plan_file: Path, dev: str, server_mac: str, family: Family) -> None:
    link = _Link(dev, server_mac, family)
    for case in json.loads(plan_file.read_text()):
        _play(link, case["port"], case["steps"])
    time.sleep(0.2)
    link.stop = True
    (plan_file.parent / "sent").write_text(str(link.sent))


def _play(link: _Link, port: int, steps: list[list]) -> None:
    isn = 1_000_000 + port * 7919
    syn_options = [("MSS", 1460), ("SAckOK", b""), ("WScale", 7), ("NOP", None)]
    link.send(port, isn, 0, "S", options=syn_options)
    deadline = time.monotonic() + 5
    while port not in link.synack:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no SYN-ACK for port {port}")
        time.sleep(0.005)
    base, ack = isn + 1, link.synack[port][0] + 1
    link.send(port, base, ack, "A")
    time.sleep(STEP_PAUSE)
    for step in steps:
        _step(link, port, base, ack, step)
        time.sleep(STEP_PAUSE)


def _step(link: _Link, port: int, base: int, ack: int, step: list) -> None:
    """Send one step of a case (its kinds are listed at the top of this module)."""
    kind = step[0]
    data = bytes.fromhex(step[2]) if len(step) > 2 else b""
    seq = base + step[1]
    if kind == "beyond":
        with link.lock:
            seq = link.edge[port] + step[1]
    if kind in ("data", "beyond"):
        link.send(port, seq, ack, "PA", data)
    elif kind == "badsum":  # data whose TCP checksum is wrong: the receiver drops it
        link.send(port, seq, ack, "PA", data, checksum=WRONG_CHECKSUM)
    elif kind == "badrst":
        link.send(port, seq, ack, "RA", checksum=WRONG_CHECKSUM)
    elif kind == "noack":  # data without the ACK flag: a synchronized receiver discards it
        link.send(port, seq, ack, "P", data)
    elif kind == "badack":  # data acknowledging bytes the receiver never sent: discarded too
        link.send(port, seq, ack + UNSENT, "PA", data)
    elif kind == "frag" or (kind == "fragbad" and link.family is IPV4):  # cut on the way
        link.send(port, seq, ack, "PA", data, cut=True, spoil=1 if kind == "fragbad" else None)
    elif kind == "ipopt" and link.family is IPV4:
        link.send(port, seq, ack, "PA", data, ip_options=bytes.fromhex(step[3]))
    elif kind in ("ext", "extfrag") and link.family is IPV6:
        headers = [(header_type, bytes.fromhex(body)) for header_type, body in step[3]]
        link.send(port, seq, ack, "PA", data, cut=kind == "extfrag", headers=headers)
    elif kind == "rst":
        link.send(port, seq, ack, "RA")
    elif kind == "fin":
        link.send(port, seq, ack, "FA")
    else:
        raise ValueError(f"no step {kind!r} over {link.family.name}")


def main(argv: list[str]) -> None:
    if argv[0] == "serve":
        serve(Path(argv[1]), FAMILIES[argv[2]])
    elif argv[0] == "send":
        send(Path(argv[1]), argv[2], argv[3], FAMILIES[argv[4]])


if __name__ == "__main__":
    main(sys.argv[1:])
