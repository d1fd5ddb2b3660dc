"""A real Linux TCP receiver for reassembly tests: crafted segments in, the bytes its application read out.

Two network namespaces joined by a veth pair. In the receiver namespace a small Python server (this file, ``serve``)
accepts connections and writes, per connection, exactly the bytes its application read; tcpdump records the link.
In the sender namespace tests/helpers_sender.py plays the client with hand-made segments (scapy builds them, a
packet socket sends and receives them): it does the handshake itself, then follows a plan of data, RST and FIN
segments.

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

TCP header variants: ``("timestamps",)``, first in a case, makes its SYN offer the Timestamps option (RFC 7323;
every later segment then carries one, its TSval the connection's clock, see tests/helpers_sender.py); ``("clock",
tsval)`` sets that clock for the segments after it; ``("ts", offset, bytes, tsval)`` is data whose Timestamps option
carries ``tsval`` (in any connection), or which has none if ``tsval`` is None; ``("opt", offset, bytes, options)`` is
data whose TCP header carries more options, each ``(kind, value bytes)``; ``("urg", offset, bytes, pointer, flag)``
is data with urgent pointer ``pointer``, the URG flag set if ``flag``.

``ReceiverLab(work, IPV6)`` plays the cases over IPv6 instead (addresses without duplicate address detection, the
client's again held by no interface and reached through a permanent neighbour entry). There ``("ext", offset, bytes,
headers)`` sends data behind IPv6 extension headers, each ``(type, bytes after its Next Header byte)`` (the Next
Header bytes are filled in, in the order given), ``("extfrag", offset, bytes, headers)`` the same followed by a
Fragment header, the segment in pieces, and ``("frag", offset, bytes)`` is ``extfrag`` without other headers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers_frames import frames_from

REPO = Path(__file__).resolve().parents[1]
SERVER_IP = "10.98.0.2"
SENDER_IP = "10.98.0.1"  # the sender namespace's own address: its kernel answers for this one, not CLIENT_IP
CLIENT_IP = "10.98.0.9"  # held by no interface: what the crafted segments come from
PORT = 2525
FIRST_CLIENT_PORT = 41000
TOOLS = ("ip", "tcpdump")

Step = tuple  # ("data", offset, bytes) | ("rst", offset) | ("fin", offset) | ("beyond", extra, bytes) | badsum...


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
        argv = [sys.executable, "-m", "tests.helpers_sender", str(plan_file), self.dev_snd, mac]
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


def main(argv: list[str]) -> None:
    if argv[0] == "serve":
        serve(Path(argv[1]), FAMILIES[argv[2]])


if __name__ == "__main__":
    main(sys.argv[1:])
