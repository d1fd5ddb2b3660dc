"""Generate a capture of a large mail estate, for measuring the report at scale.

Each of ``--servers`` mail servers keeps one identity for the whole capture (address, software, AD domain, host
name), and each is seen in one session from a client:

- Exchange (SMTP, POP3 or IMAP) answering AUTH NTLM with its host name, AD domain (one of 14, in 3 forests) and
  Windows build, a client authenticating with a domain user;
- Postfix offering PLAIN and LOGIN before TLS, some clients sending AUTH PLAIN in clear;
- Dovecot (POP3, IMAP) taking USER/PASS or LOGIN in clear, its reply naming the mailbox;
- Exim accepting mail for a foreign domain from an outside client (an open relay).

The sessions spread over ``--days`` days. ``known_users()`` and ``SECRET`` say what a redacted report must never
show.

    python bench/gen_fleet.py --servers 2100 --out bench/out/fleet.pcap
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.gen_capture import PCAP_GLOBAL_HEADER, Endpoints, _l2, b64, build_frame, tcp_segments  # noqa: E402
from dissectors import ntlmssp  # noqa: E402

SECRET = "Fl33t-Passw0rd!"
FORESTS = {
    "contoso.com": ["CORP", "EMEA", "APAC", "AMER", "LAB"],
    "fabrikam.org": ["FAB", "FABHQ", "FABDEV", "FABOPS"],
    "northwind.net": ["NW", "NWSALES", "NWPLANT", "NWIT", "NWDMZ"],
}
DOMAINS = [(netbios, f"{netbios.lower()}.{forest}", forest) for forest, names in FORESTS.items() for netbios in names]
BUILDS = [14393, 17763, 20348, 9600]
PROFILES = ["exchange-smtp", "exchange-pop3", "exchange-imap", "postfix", "dovecot-imap", "dovecot-pop3", "exim"]
# A profile by server number: NTLM (Exchange) on most servers, the rest spread over the others.
WEIGHTS = [30, 12, 12, 18, 12, 10, 6]


def user_of(index: int) -> str:
    return f"employee{index:05d}"


def mailbox_of(index: int) -> str:
    return f"mailbox{index:05d}@staff.example.org"


def known_users(servers: int) -> list[str]:
    """Every user name and mailbox the capture carries (what a redacted report must not show in full)."""
    return [user_of(i) for i in range(servers)] + [mailbox_of(i) for i in range(servers)]


def profile_of(index: int) -> str:
    return random.Random(index).choices(PROFILES, WEIGHTS)[0]


def _challenge(index: int, rng: random.Random) -> bytes:
    netbios, dns_domain, forest = DOMAINS[index % len(DOMAINS)]
    host = f"EXCH{index:04d}"
    target_info = [
        ("netbios_domain", netbios),
        ("netbios_computer", host),
        ("dns_domain", dns_domain),
        ("dns_computer", f"{host.lower()}.{dns_domain}"),
        ("dns_tree", forest),
        ("timestamp", 133_000_000_000_000_000 + index * 10_000_000),
    ]
    version = ntlmssp.Version(10 if index % 4 else 6, 0 if index % 4 else 3, BUILDS[index % len(BUILDS)])
    return ntlmssp.build_challenge(rng.randbytes(8), netbios, target_info, version=version)


def _authenticate(index: int, rng: random.Random) -> bytes:
    netbios = DOMAINS[index % len(DOMAINS)][0]
    nt = rng.randbytes(16) + b"\x01\x01\x00\x00\x00\x00\x00\x00" + rng.randbytes(16) + rng.randbytes(40)
    return ntlmssp.build_authenticate(
        user_of(index), netbios, f"WS{index:05d}", lm_response=bytes(24), nt_response=nt, session_key=rng.randbytes(16)
    )


def _negotiate() -> bytes:
    return ntlmssp.build_negotiate(0xE208B297, "", "", ntlmssp.Version(10, 0, 19041))


def _ntlm_turns(index: int, rng: random.Random, start: bytes, prompt: bytes, done: bytes) -> list[tuple[bool, bytes]]:
    return [
        (False, start),
        (True, prompt),
        (False, b64(_negotiate()) + b"\r\n"),
        (True, prompt.strip() + b" " + b64(_challenge(index, rng)) + b"\r\n"),
        (False, b64(_authenticate(index, rng)) + b"\r\n"),
        (True, done),
    ]


def dialogue(index: int, rng: random.Random) -> list[tuple[bool, bytes]]:
    """What server ``index`` and its client say, by the server's profile."""
    profile = profile_of(index)
    host = f"EXCH{index:04d}.{DOMAINS[index % len(DOMAINS)][1]}".encode()
    if profile == "exchange-smtp":
        return [
            (True, b"220 " + host + b" Microsoft ESMTP MAIL Service ready\r\n"),
            (False, b"EHLO ws.example.org\r\n"),
            (True, b"250-" + host + b" Hello\r\n250-AUTH NTLM LOGIN\r\n250 STARTTLS\r\n"),
            (False, b"AUTH NTLM " + b64(_negotiate()) + b"\r\n"),
            (True, b"334 " + b64(_challenge(index, rng)) + b"\r\n"),
            (False, b64(_authenticate(index, rng)) + b"\r\n"),
            (True, b"235 2.7.0 Authentication successful\r\n"),
            (False, b"QUIT\r\n"),
            (True, b"221 2.0.0 Bye\r\n"),
        ]
    if profile == "exchange-pop3":
        greeting = [(True, b"+OK The Microsoft Exchange POP3 service is ready.\r\n")]
        ntlm = _ntlm_turns(index, rng, b"AUTH NTLM\r\n", b"+ \r\n", b"+OK User successfully logged on.\r\n")
        bye = b"+OK Microsoft Exchange Server POP3 server signing off.\r\n"
        return [*greeting, *ntlm, (False, b"QUIT\r\n"), (True, bye)]
    if profile == "exchange-imap":
        greeting = [(True, b"* OK The Microsoft Exchange IMAP4 service is ready.\r\n")]
        ntlm = _ntlm_turns(index, rng, b"a1 AUTHENTICATE NTLM\r\n", b"+ \r\n", b"a1 OK AUTHENTICATE completed.\r\n")
        return greeting + ntlm + [(False, b"a2 LOGOUT\r\n"), (True, b"* BYE\r\na2 OK LOGOUT completed.\r\n")]
    return _cleartext_dialogue(index, profile)


def _cleartext_dialogue(index: int, profile: str) -> list[tuple[bool, bytes]]:
    user, mailbox, secret = user_of(index).encode(), mailbox_of(index).encode(), SECRET.encode()
    if profile == "postfix":
        turns = [
            (True, f"220 mx{index}.example.org ESMTP Postfix\r\n".encode()),
            (False, b"EHLO client.example.org\r\n"),
            (True, f"250-mx{index}.example.org\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n".encode()),
        ]
        if index % 2:
            plain = b64(b"\0" + user + b"\0" + secret)
            turns += [(False, b"AUTH PLAIN " + plain + b"\r\n"), (True, b"235 2.7.0 OK\r\n")]
        return [*turns, (False, b"QUIT\r\n"), (True, b"221 2.0.0 Bye\r\n")]
    if profile == "dovecot-imap":
        return [
            (True, b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Dovecot ready.\r\n"),
            (False, b"a1 LOGIN " + user + b' "' + secret + b'"\r\n'),
            (True, b"a1 OK [CAPABILITY IMAP4rev1] User " + user + b" authenticated\r\n"),
            (False, b"a2 LOGOUT\r\n"),
            (True, b"* BYE Logging out\r\na2 OK Logout completed.\r\n"),
        ]
    if profile == "dovecot-pop3":
        return [
            (True, b"+OK Dovecot ready.\r\n"),
            (False, b"USER " + mailbox + b"\r\n"),
            (True, b"+OK\r\n"),
            (False, b"PASS " + secret + b"\r\n"),
            (True, b'+OK mailbox "' + mailbox + b'" has 2 messages (4096 octets)\r\n'),
            (False, b"QUIT\r\n"),
            (True, b"+OK Logging out.\r\n"),
        ]
    return [
        (True, f"220 relay{index}.example.org ESMTP Exim 4.96 ready\r\n".encode()),
        (False, b"EHLO outside.example.net\r\n"),
        (True, f"250-relay{index}.example.org Hello\r\n250 HELP\r\n".encode()),
        (False, b"MAIL FROM:<" + mailbox + b">\r\n"),
        (True, b"250 OK\r\n"),
        (False, b"RCPT TO:<someone@elsewhere.example.com>\r\n"),
        (True, b"250 Accepted\r\n"),
        (False, b"QUIT\r\n"),
        (True, b"221 closing connection\r\n"),
    ]


def _address(index: int) -> bytes:
    """Servers sit 60 to a /24, in 10.20.0.0/16 onwards."""
    block = index // 60
    return bytes([10, 20 + block // 250, block % 250, 10 + index % 60])


def frames(indices: list[int], days: float, seed: int) -> Iterator[tuple[float, bytes]]:
    rng = random.Random(seed)
    start = 1_760_000_000.0
    servers = max(indices, default=0) + 1
    for index in indices:
        outside = profile_of(index) == "exim"
        client = bytes([198, 51, 100, 7]) if outside else bytes([10, 200, index // 250 % 250, 1 + index % 250])
        port = {"exchange-pop3": 110, "dovecot-pop3": 110, "exchange-imap": 143, "dovecot-imap": 143}.get(
            profile_of(index), 25
        )
        ends = Endpoints(client, _address(index), 40_000 + index % 20_000, port, False, ())
        moment = start + days * 86_400 * index / max(servers, 1)
        head = _l2(ends)
        for step, segment in enumerate(tcp_segments(dialogue(index, rng), rng)):
            yield moment + step * 0.001, build_frame(ends, segment, head)


def first_of_each_profile() -> list[int]:
    """The first server of each profile: a small estate that shows every kind of leak."""
    found: dict[str, int] = {}
    for index in range(1000):
        found.setdefault(profile_of(index), index)
    return sorted(found.values())


def write_fleet(path: Path, servers: int | list[int], days: float = 30.0, seed: int = 7) -> Path:
    """Servers 0 to ``servers`` - 1 (or the servers listed) in a capture at ``path``."""
    indices = list(range(servers)) if isinstance(servers, int) else servers
    with path.open("wb", buffering=1 << 20) as stream:
        stream.write(PCAP_GLOBAL_HEADER)
        for moment, frame in frames(indices, days, seed):
            seconds = int(moment)
            stream.write(struct.pack("<IIII", seconds, int((moment - seconds) * 1e6), len(frame), len(frame)))
            stream.write(frame)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=2100)
    parser.add_argument("--days", type=float, default=30.0, help="the sessions spread over this many days")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_fleet(args.out, args.servers, args.days, args.seed)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, {args.servers} servers)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
