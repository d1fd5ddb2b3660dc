"""Generate large synthetic captures for benchmarking the capture engine.

The capture mixes mail sessions (SMTP, POP3, IMAP; many of them authenticating with
NTLM, so they carry base64 Type 1/2/3 messages) with bulk non-mail TCP, each flow speaking
its port's protocol: HTTP downloads on 80 and 8080 (request, response headers with a
Content-Length, body), TLS records on 443, SSH on 22 (both banners, then ciphertext).
Packets are written with a raw struct-based pcap writer.

    python bench/gen_capture.py --size 1G --mail-fraction 0.02 --out bench/out/mixed.pcap

Perturbations (per mail data segment): --reorder swaps a segment with the next one of
the same direction in the same flight (never past the other side's answer to it: no capture
shows an answer before its question), --retransmit emits a segment a second time a few
packets later.
--vlan tags that fraction of flows (a quarter of the tagged ones get QinQ). --tunnel
carries that fraction of flows inside GRE, VXLAN or ERSPAN II (in turn), between two
tunnel endpoints. --odd-ports puts that fraction of mail servers on ports no mail filter
names (SMTP 2626/10025, POP3 10110/1110, IMAP 1143/10143). --servers N gives every mail session
one of N server addresses (a few busy servers, as on one site's span port) instead of a new one
each; the sessions are otherwise those of the same seed without it.
A JSON sidecar (<out>.json) records what was generated, including the number of NTLM
challenges, so bench/run.py can check the engine found every one.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dissectors import ntlmssp  # noqa: E402

MSS = 1448
PCAP_GLOBAL_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

SERVER_NAMES = ["MAILSRV01", "EXCH-02", "MX-EDGE", "POSTFIX1", "IMAPHOST"]
DOMAINS = ["CORP", "EXAMPLE", "CONTOSO", "ACME"]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


# --- NTLM messages (MS-NLMP 2.2.1), packed by dissectors.ntlmssp's builders ----------


def ntlm_negotiate(rng: random.Random) -> bytes:
    domain, host = rng.choice(DOMAINS), f"WS{rng.randrange(1000):03d}"
    # OEM_DOMAIN_SUPPLIED and OEM_WORKSTATION_SUPPLIED come with the two names.
    return ntlmssp.build_negotiate(0xE208B297, domain, host, ntlmssp.Version(10, 0, 19041))


def ntlm_challenge(rng: random.Random) -> bytes:
    server, domain = rng.choice(SERVER_NAMES), rng.choice(DOMAINS)
    dns_domain = domain.lower() + ".example.com"
    dns_host = server.lower() + "." + dns_domain
    filetime = 132_000_000_000_000_000 + rng.randrange(10**15)
    target_info = [
        ("netbios_domain", domain),
        ("netbios_computer", server),
        ("dns_domain", dns_domain),
        ("dns_computer", dns_host),
        ("timestamp", filetime),
    ]
    server_challenge = rng.randbytes(8)
    version = ntlmssp.Version(10, 0, rng.choice([14393, 17763, 20348]))
    return ntlmssp.build_challenge(server_challenge, domain, target_info, version=version)


def ntlm_authenticate(rng: random.Random) -> bytes:
    domain, user = rng.choice(DOMAINS), f"user{rng.randrange(500)}"
    # NTProofStr, then an NTLMv2 client challenge header followed by random bytes (time, nonce, AV pairs).
    nt = rng.randbytes(16) + b"\x01\x01\x00\x00\x00\x00\x00\x00" + rng.randbytes(16) + rng.randbytes(60)
    return ntlmssp.build_authenticate(
        user,
        domain,
        "WS001",
        lm_response=bytes(24),
        nt_response=nt,
        session_key=rng.randbytes(16),
        mic=bytes(16),
        version=ntlmssp.Version(10, 0, 19041),
    )


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# --- mail dialogues: list of (from_server, bytes) ------------------------------------


def _body(rng: random.Random, size: int) -> bytes:
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    return line * max(1, size // len(line))


def smtp_dialogue(rng: random.Random, ntlm: bool) -> tuple[list[tuple[bool, bytes]], int]:
    host = rng.choice(SERVER_NAMES).lower()
    turns: list[tuple[bool, bytes]] = [
        (True, b"220 " + host.encode() + b".example.com ESMTP Postfix\r\n"),
        (False, b"EHLO client.example.org\r\n"),
        (True, b"250-" + host.encode() + b"\r\n250-SIZE 10240000\r\n250-AUTH NTLM LOGIN PLAIN\r\n250 8BITMIME\r\n"),
    ]
    challenges = 0
    if ntlm:
        turns += [
            (False, b"AUTH NTLM " + b64(ntlm_negotiate(rng)) + b"\r\n"),
            (True, b"334 " + b64(ntlm_challenge(rng)) + b"\r\n"),
            (False, b64(ntlm_authenticate(rng)) + b"\r\n"),
            (True, b"235 2.7.0 Authentication successful\r\n"),
        ]
        challenges = 1
    else:
        turns += [(False, b"AUTH PLAIN " + b64(b"\x00alice\x00secret") + b"\r\n"), (True, b"235 2.7.0 OK\r\n")]
    turns += [
        (False, b"MAIL FROM:<alice@example.org>\r\n"),
        (True, b"250 2.1.0 Ok\r\n"),
        (False, b"RCPT TO:<bob@example.com>\r\n"),
        (True, b"250 2.1.5 Ok\r\n"),
        (False, b"DATA\r\n"),
        (True, b"354 End data with <CR><LF>.<CR><LF>\r\n"),
        (False, b"Subject: report\r\n\r\n" + _body(rng, rng.randrange(500, 12000)) + b".\r\n"),
        (True, b"250 2.0.0 Ok: queued\r\n"),
        (False, b"QUIT\r\n"),
        (True, b"221 2.0.0 Bye\r\n"),
    ]
    return turns, challenges


def pop3_dialogue(rng: random.Random, ntlm: bool) -> tuple[list[tuple[bool, bytes]], int]:
    turns: list[tuple[bool, bytes]] = [(True, b"+OK POP3 server ready\r\n")]
    challenges = 0
    if ntlm:
        turns += [
            (False, b"AUTH NTLM\r\n"),
            (True, b"+ \r\n"),
            (False, b64(ntlm_negotiate(rng)) + b"\r\n"),
            (True, b"+ " + b64(ntlm_challenge(rng)) + b"\r\n"),
            (False, b64(ntlm_authenticate(rng)) + b"\r\n"),
            (True, b"+OK User successfully logged on\r\n"),
        ]
        challenges = 1
    else:
        turns += [(False, b"USER alice\r\n"), (True, b"+OK\r\n"), (False, b"PASS secret\r\n"), (True, b"+OK\r\n")]
    turns += [
        (False, b"RETR 1\r\n"),
        (True, b"+OK message follows\r\n" + _body(rng, rng.randrange(500, 20000)) + b".\r\n"),
        (False, b"QUIT\r\n"),
        (True, b"+OK bye\r\n"),
    ]
    return turns, challenges


def imap_dialogue(rng: random.Random, ntlm: bool) -> tuple[list[tuple[bool, bytes]], int]:
    turns: list[tuple[bool, bytes]] = [(True, b"* OK IMAP4rev1 Service Ready\r\n")]
    challenges = 0
    if ntlm:
        turns += [
            (False, b"a1 AUTHENTICATE NTLM\r\n"),
            (True, b"+ \r\n"),
            (False, b64(ntlm_negotiate(rng)) + b"\r\n"),
            (True, b"+ " + b64(ntlm_challenge(rng)) + b"\r\n"),
            (False, b64(ntlm_authenticate(rng)) + b"\r\n"),
            (True, b"a1 OK AUTHENTICATE completed.\r\n"),
        ]
        challenges = 1
    else:
        turns += [(False, b'a1 LOGIN alice "secret"\r\n'), (True, b"a1 OK LOGIN completed\r\n")]
    body = _body(rng, rng.randrange(500, 20000))
    literal = b"{%d}" % len(body)  # the message's own size, as a server announces it
    turns += [
        (False, b"a2 SELECT INBOX\r\n"),
        (True, b"* 3 EXISTS\r\na2 OK [READ-WRITE] SELECT completed\r\n"),
        (False, b"a3 FETCH 1 BODY[]\r\n"),
        (True, b"* 1 FETCH (BODY[] " + literal + b"\r\n" + body + b")\r\na3 OK FETCH\r\n"),
        (False, b"a4 LOGOUT\r\n"),
        (True, b"* BYE\r\na4 OK LOGOUT completed\r\n"),
    ]
    return turns, challenges


# --- packet building -------------------------------------------------------------------


@dataclass
class Endpoints:
    client_ip: bytes
    server_ip: bytes
    client_port: int
    server_port: int
    ipv6: bool
    vlan_tags: tuple[tuple[int, int], ...]  # (tpid, vid) outermost first
    tunnel: str | None = None  # "gre", "vxlan" or "erspan": the frame travels inside that encapsulation


MAC_PAIR = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb"
TUNNEL_ENDPOINTS = socket.inet_aton("192.0.2.1") + socket.inet_aton("192.0.2.2")
TUNNELS = ("gre", "vxlan", "erspan")


def _l2(ep: Endpoints) -> bytes:
    head = MAC_PAIR
    for tpid, vid in ep.vlan_tags:
        head += struct.pack("!HH", tpid, vid)
    return head + (b"\x86\xdd" if ep.ipv6 else b"\x08\x00")


def _outer_ipv4(proto: int, payload: bytes) -> bytes:
    return struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0) + TUNNEL_ENDPOINTS + payload


def encapsulate(ep: Endpoints, l2: bytes, packet: bytes) -> bytes:
    """The inner frame (``l2`` + IP packet) as the tunnel carries it, inside an outer Ethernet/IPv4 frame."""
    outer = MAC_PAIR + b"\x08\x00"
    if ep.tunnel == "gre":  # the IP packet itself, GRE protocol = its ethertype
        return outer + _outer_ipv4(47, struct.pack("!HH", 0, 0x86DD if ep.ipv6 else 0x0800) + packet)
    if ep.tunnel == "vxlan":
        body = struct.pack("!BBHI", 0x08, 0, 0, 42 << 8) + l2 + packet
        return outer + _outer_ipv4(17, struct.pack("!HHHH", 50000, 4789, 8 + len(body), 0) + body)
    # ERSPAN type II: GRE with a sequence number, then the 8-byte ERSPAN header, then the mirrored frame.
    erspan = struct.pack("!HHI", 0x1000 | 7, 0, 0)
    return outer + _outer_ipv4(47, struct.pack("!HHI", 0x1000, 0x88BE, 1) + erspan + l2 + packet)


@dataclass
class Segment:
    from_server: bool
    seq: int
    ack: int
    flags: int
    payload: bytes = b""


def build_frame(ep: Endpoints, seg: Segment, l2: bytes) -> bytes:
    if seg.from_server:
        src, dst, sport, dport = ep.server_ip, ep.client_ip, ep.server_port, ep.client_port
    else:
        src, dst, sport, dport = ep.client_ip, ep.server_ip, ep.client_port, ep.server_port
    tcp = struct.pack(
        "!HHIIBBHHH", sport, dport, seg.seq & 0xFFFFFFFF, seg.ack & 0xFFFFFFFF, 0x50, seg.flags, 64240, 0, 0
    )
    length = 20 + len(seg.payload)
    if ep.ipv6:
        ip = struct.pack("!IHBB", 0x60000000, length, 6, 64) + src + dst
    else:
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + length, 0, 0x4000, 64, 6, 0) + src + dst
    if ep.tunnel is not None:
        return encapsulate(ep, l2, ip + tcp + seg.payload)
    return l2 + ip + tcp + seg.payload


def tcp_segments(turns: list[tuple[bool, bytes]], rng: random.Random, handshake: bool = True) -> list[Segment]:
    """Turn a dialogue into TCP segments with realistic sequence numbers (ISNs anywhere in 2^32)."""
    cseq, sseq = rng.randrange(1 << 32), rng.randrange(1 << 32)
    segs = [
        Segment(False, cseq, 0, SYN),
        Segment(True, sseq, cseq + 1, SYN | ACK),
        Segment(False, cseq + 1, sseq + 1, ACK),
    ]
    cseq += 1
    sseq += 1
    for from_server, data in turns:
        for start in range(0, len(data), MSS):
            piece = data[start : start + MSS]
            if from_server:
                segs.append(Segment(True, sseq, cseq, PSH | ACK, piece))
                sseq += len(piece)
            else:
                segs.append(Segment(False, cseq, sseq, PSH | ACK, piece))
                cseq += len(piece)
        segs.append(Segment(not from_server, cseq if from_server else sseq, sseq if from_server else cseq, ACK))
    segs += [
        Segment(False, cseq, sseq, FIN | ACK),
        Segment(True, sseq, cseq + 1, FIN | ACK),
        Segment(False, cseq + 1, sseq + 1, ACK),
    ]
    return segs if handshake else segs[3:]


def perturb(
    segs: list[Segment], rng: random.Random, reorder: float, retransmit: float
) -> tuple[list[Segment], int, int]:
    out = list(segs)
    swaps = dups = 0
    i = 3
    while i < len(out) - 1:
        seg = out[i]
        if seg.payload and rng.random() < reorder:
            # Within the same flight only: a segment cannot arrive after the other side's answer to it (the
            # server cannot answer bytes it has not received), so no data of the other side lies between.
            j = next((k for k in range(i + 1, len(out)) if out[k].from_server == seg.from_server), None)
            if j is not None and any(out[k].payload for k in range(i + 1, j)):
                j = None
            if j is not None:
                out[i], out[j] = out[j], out[i]
                swaps += 1
                i = j
        elif seg.payload and rng.random() < retransmit:
            out.insert(min(len(out) - 1, i + rng.randrange(1, 4)), Segment(**vars(seg)))
            dups += 1
            i += 1
        i += 1
    return out, swaps, dups


# --- flows ------------------------------------------------------------------------------


@dataclass
class Flow:
    ep: Endpoints
    frames: Iterator[bytes]
    is_mail: bool


@dataclass
class Stats:
    packets: int = 0
    bytes: int = 0
    mail_packets: int = 0
    mail_bytes: int = 0
    mail_sessions: int = 0
    sessions_by_proto: dict[str, int] = field(default_factory=dict)
    ntlm_challenges: int = 0
    reordered_segments: int = 0
    retransmitted_segments: int = 0
    vlan_flows: int = 0
    qinq_flows: int = 0
    tunnel_flows: dict[str, int] = field(default_factory=dict)
    odd_port_sessions: int = 0
    bulk_flows: int = 0


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.stats = Stats()
        self.bulk_block = self.rng.randbytes(1 << 20)
        self.next_port = 20000
        # --servers: addresses drawn by their own generator, so the sessions are the same with or without it.
        pool = random.Random(args.seed + 1)
        self.servers_v4 = [struct.pack("!I", 0xC0A80000 | pool.randrange(1, 1 << 16)) for _ in range(args.servers)]
        self.servers_v6 = [
            socket.inet_pton(socket.AF_INET6, f"2001:db8:1::{pool.randrange(1, 0xFFFF):x}") for _ in range(args.servers)
        ]

    def _endpoints(self, server_port: int, ipv6: bool, mail: bool = False) -> Endpoints:
        rng = self.rng
        self.next_port = 1024 + (self.next_port - 1023) % 64000
        tags: tuple[tuple[int, int], ...] = ()
        if rng.random() < self.args.vlan:
            self.stats.vlan_flows += 1
            if rng.random() < 0.25:
                tags = ((0x88A8, rng.randrange(1, 4095)), (0x8100, rng.randrange(1, 4095)))
                self.stats.qinq_flows += 1
            else:
                tags = ((0x8100, rng.randrange(1, 4095)),)
        if ipv6:
            client = socket.inet_pton(socket.AF_INET6, f"2001:db8::{rng.randrange(1, 0xFFFF):x}")
            server = socket.inet_pton(socket.AF_INET6, f"2001:db8:1::{rng.randrange(1, 0xFFFF):x}")
        else:
            client = struct.pack("!I", 0x0A000000 | rng.randrange(1, 1 << 16))
            server = struct.pack("!I", 0xC0A80000 | rng.randrange(1, 1 << 16))
        if mail and self.args.servers:
            pool = self.servers_v6 if ipv6 else self.servers_v4
            server = pool[int.from_bytes(server[-2:], "big") % len(pool)]
        tunnel = None
        if self.args.tunnel and rng.random() < self.args.tunnel:
            tunnel = TUNNELS[sum(self.stats.tunnel_flows.values()) % len(TUNNELS)]
            self.stats.tunnel_flows[tunnel] = self.stats.tunnel_flows.get(tunnel, 0) + 1
        return Endpoints(client, server, self.next_port, server_port, ipv6, tags, tunnel)

    def mail_flow(self) -> Flow:
        rng, args = self.rng, self.args
        proto = rng.choice(["smtp", "smtp", "pop3", "imap"])
        ntlm = rng.random() < args.ntlm_fraction
        odd = bool(args.odd_ports) and rng.random() < args.odd_ports
        if proto == "smtp":
            turns, challenges = smtp_dialogue(rng, ntlm)
            port = rng.choice([2626, 10025] if odd else [25, 587, 2525])
        elif proto == "pop3":
            turns, challenges = pop3_dialogue(rng, ntlm)
            port = rng.choice([10110, 1110]) if odd else 110
        else:
            turns, challenges = imap_dialogue(rng, ntlm)
            port = rng.choice([1143, 10143]) if odd else 143
        segs, swaps, dups = perturb(tcp_segments(turns, rng), rng, args.reorder, args.retransmit)
        st = self.stats
        st.odd_port_sessions += odd
        st.mail_sessions += 1
        st.sessions_by_proto[proto] = st.sessions_by_proto.get(proto, 0) + 1
        st.ntlm_challenges += challenges
        st.reordered_segments += swaps
        st.retransmitted_segments += dups
        ep = self._endpoints(port, rng.random() < args.ipv6, mail=True)
        l2 = _l2(ep)
        return Flow(ep, (build_frame(ep, s, l2) for s in segs), True)

    def bulk_flow(self) -> Flow:
        rng = self.rng
        port = rng.choice([80, 443, 8080, 22])
        ep = self._endpoints(port, rng.random() < self.args.ipv6 / 4)
        self.stats.bulk_flows += 1
        size = int(rng.expovariate(1 / 400_000)) + 2000
        return Flow(ep, self._bulk_frames(ep, size), False)

    def _bulk_frames(self, ep: Endpoints, size: int) -> Iterator[bytes]:
        rng = self.rng
        l2 = _l2(ep)
        cseq, sseq = rng.randrange(1 << 32), rng.randrange(1 << 32)
        yield build_frame(ep, Segment(False, cseq, 0, SYN), l2)
        yield build_frame(ep, Segment(True, sseq, cseq + 1, SYN | ACK), l2)
        cseq += 1
        sseq += 1
        opening, headers = _bulk_opening(ep.server_port, size, rng)
        for from_server, data in opening:
            if from_server:
                yield build_frame(ep, Segment(True, sseq, cseq, PSH | ACK, data), l2)
                sseq += len(data)
            else:
                yield build_frame(ep, Segment(False, cseq, sseq, PSH | ACK, data), l2)
                cseq += len(data)
        sent = 0
        body = headers + self._bulk_bytes(size)
        while sent < len(body):
            piece = body[sent : sent + MSS]
            yield build_frame(ep, Segment(True, sseq, cseq, ACK, piece), l2)
            sseq += len(piece)
            sent += len(piece)
            if sent % (4 * MSS) < MSS:
                yield build_frame(ep, Segment(False, cseq, sseq, ACK), l2)
        yield build_frame(ep, Segment(True, sseq, cseq, FIN | ACK), l2)
        yield build_frame(ep, Segment(False, cseq, sseq + 1, FIN | ACK), l2)

    def _bulk_bytes(self, size: int) -> bytes:
        block, rng = self.bulk_block, self.rng
        pieces, left = [], size
        while left > 0:
            take = min(left, 1 << 16)
            off = rng.randrange(len(block) - take)
            pieces.append(block[off : off + take])
            left -= take
        return b"".join(pieces)

    def run(self, out: Path) -> Stats:
        args, rng, st = self.args, self.rng, self.stats
        target = args.size
        active: list[Flow] = []
        ts = 1_700_000_000.0
        with out.open("wb", buffering=1 << 22) as fh:
            fh.write(PCAP_GLOBAL_HEADER)
            written = len(PCAP_GLOBAL_HEADER)
            while written < target or active:
                if written < target:
                    while len(active) < args.concurrency:
                        want_mail = st.mail_bytes < args.mail_fraction * max(written, 1)
                        if args.mail_fraction >= 1.0:
                            want_mail = True
                        elif args.mail_fraction <= 0.0:
                            want_mail = False
                        active.append(self.mail_flow() if want_mail else self.bulk_flow())
                else:
                    # Past the target: cut bulk flows short, let mail sessions finish.
                    active = [f for f in active if f.is_mail]
                if not active:
                    break
                idx = rng.randrange(len(active))
                flow = active[idx]
                frame = next(flow.frames, None)
                if frame is None:
                    active[idx] = active[-1]
                    active.pop()
                    continue
                ts += rng.random() * 0.0002
                sec = int(ts)
                usec = int((ts - sec) * 1_000_000)
                fh.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
                fh.write(frame)
                written += 16 + len(frame)
                st.packets += 1
                st.bytes += 16 + len(frame)
                if flow.is_mail:
                    st.mail_packets += 1
                    st.mail_bytes += 16 + len(frame)
        return st


def _bulk_opening(port: int, size: int, rng: random.Random) -> tuple[list[tuple[bool, bytes]], bytes]:
    """A bulk flow's first exchanges (from_server, bytes) and what precedes its body in the server's stream."""
    if port in (80, 8080):
        request = b"GET /download/file.bin HTTP/1.1\r\nHost: files.example.net\r\nUser-Agent: curl/8.0\r\n\r\n"
        headers = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % size
        return [(False, request)], headers
    if port == 22:
        return [(True, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"), (False, b"SSH-2.0-OpenSSH_9.2\r\n")], b""
    hello = rng.randbytes(220)
    client_hello = b"\x16\x03\x01" + struct.pack("!H", len(hello)) + hello
    server_hello = rng.randbytes(90)
    return [(False, client_hello), (True, b"\x16\x03\x03" + struct.pack("!H", len(server_hello)) + server_hello)], b""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("100M"), help="target file size (e.g. 1G)")
    parser.add_argument("--mail-fraction", type=float, default=0.02, help="share of bytes that is mail traffic")
    parser.add_argument("--ntlm-fraction", type=float, default=0.5, help="share of mail sessions using AUTH NTLM")
    parser.add_argument("--reorder", type=float, default=0.0, help="probability a mail segment is reordered")
    parser.add_argument("--retransmit", type=float, default=0.0, help="probability a mail segment is retransmitted")
    parser.add_argument("--vlan", type=float, default=0.0, help="share of flows carrying VLAN tags")
    parser.add_argument("--ipv6", type=float, default=0.1, help="share of mail flows over IPv6")
    parser.add_argument("--tunnel", type=float, default=0.0, help="share of flows inside GRE, VXLAN or ERSPAN")
    parser.add_argument("--odd-ports", type=float, default=0.0, help="share of mail servers on unlisted ports")
    parser.add_argument("--servers", type=int, default=0, help="mail server addresses to share (0: one per session)")
    parser.add_argument("--concurrency", type=int, default=64, help="flows interleaved at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stats = Generator(args).run(args.out)
    meta = {"args": {k: str(v) for k, v in vars(args).items()}, **vars(stats)}
    args.out.with_suffix(args.out.suffix + ".json").write_text(json.dumps(meta, indent=2))
    print(
        f"wrote {args.out} ({stats.bytes / 1e6:.1f} MB, {stats.packets} packets, {stats.mail_packets} mail packets, "
        f"{stats.mail_sessions} mail sessions, {stats.ntlm_challenges} NTLM challenges) "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
