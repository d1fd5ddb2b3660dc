"""Long lines built from a few repeated fragments: the inputs that make a parser super-linear.

A coverage-guided fuzzer with a 4 KiB input never builds a 64 KiB line of spaces, nor a line of ``[CAPABILITY ``
openings, which is what it takes to see a regular expression backtrack quadratically. A :class:`Shape` says how to
build one: a protocol, a state to put the session in first (``setup``), which side speaks, a prefix (a command or
reply), a unit repeated up to the wanted size, and a suffix. :func:`feed_shape` runs it through the session
dissector and the detectors, as the passive analysis does; :func:`per_byte_seconds` times it.

The ``amplify`` fuzz harness (:mod:`fuzz.harnesses`) draws shapes from its input; ``tests/test_linear_time.py``
runs :data:`KNOWN_SHAPES` (every pathological shape found so far) from 1 KB to 1 MB lines.
"""

from __future__ import annotations

import enum
import gc
import sys
import time
import types
from dataclasses import dataclass

from dissectors import events as ev
from dissectors.registry import SESSION_TYPES
from dissectors.session import MailSession
from passive.analysis.detectors import SessionAnalyzer, SessionContext
from passive.analysis.stats import RunStats
from passive.findings.model import FindingSet

C, S = ev.Side.CLIENT, ev.Side.SERVER

# What lines are made of: protocol words, separators, brackets, literal markers, quoting, digits.
FRAGMENTS = (
    " ", "\t", "a", "1", ".", "=", ":", "@", "<", ">", "[", "]", "{", "}", "(", ")", '"', "\\", "*", "+", "-", "/",
    "\x00", "\xff", "[CAPABILITY ", "{1}", "{1+}", "AUTH ", "AUTH=", "FROM:", "250-", "LAST", "Exim ", "AGFh",
    "x", "b", "!", "PLAIN ",
)  # fmt: skip
PREFIXES = {
    "smtp": (
        "AUTH PLAIN a", "AUTH ", "MAIL FROM:<", "RCPT TO:", "BDAT 1", "EHLO ", "", "250-", "250 ", "220 ", "334 ",
    ),
    "pop3": ("AUTH PLAIN a", "USER ", "PASS ", "APOP ", "", "+OK ", "-ERR ", "SASL ", "+ "),
    "imap": (
        "a AUTHENTICATE PLAIN a", "a LOGIN ", 'a LOGIN "', "a ", "", "* OK ", "* CAPABILITY ", "a OK ", "+ ", "* ",
    ),
}  # fmt: skip
# Conversations that put a session where a line means the most: greeted, waiting for a multi-line reply, inside SASL.
SETUPS: dict[str, dict[str, list[tuple[ev.Side, bytes]]]] = {
    "smtp": {
        "greeted": [(S, b"220 mx.example.com ESMTP\r\n")],
        "ehlo": [(S, b"220 mx.example.com ESMTP\r\n"), (C, b"EHLO c\r\n")],
        "auth": [(S, b"220 mx.example.com ESMTP\r\n"), (C, b"AUTH PLAIN\r\n"), (S, b"334 \r\n")],
        "rcpt": [(S, b"220 mx.example.com ESMTP\r\n"), (C, b"MAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z>\r\n")],
    },
    "pop3": {
        "greeted": [(S, b"+OK ready\r\n")],
        "capa": [(S, b"+OK ready\r\n"), (C, b"CAPA\r\n"), (S, b"+OK\r\n")],
        "auth": [(S, b"+OK ready\r\n"), (C, b"AUTH PLAIN\r\n"), (S, b"+ \r\n")],
        "user": [(S, b"+OK ready\r\n"), (C, b"USER alice\r\n"), (S, b"+OK\r\n")],
    },
    "imap": {
        "greeted": [(S, b"* OK ready\r\n")],
        "fresh": [],
        "auth": [(S, b"* OK ready\r\n"), (C, b"a AUTHENTICATE PLAIN\r\n"), (S, b"+ \r\n")],
        "login": [(S, b"* OK ready\r\n"), (C, b"a LOGIN {5}\r\n"), (S, b"+ go\r\n")],
    },
}


@dataclass(frozen=True)
class Shape:
    protocol: str
    setup: str
    side: ev.Side
    prefix: str
    unit: str
    suffix: str = ""

    def line(self, size: int) -> bytes:
        """The line at ``size`` bytes (give or take a unit), with its CR LF."""
        head, tail = self.prefix.encode("utf-8", "surrogateescape"), self.suffix.encode("utf-8", "surrogateescape")
        unit = self.unit.encode("utf-8", "surrogateescape") or b" "
        count = max(1, (size - len(head) - len(tail)) // len(unit))
        return head + unit * count + tail + b"\r\n"


def feed_shape(shape: Shape, size: int, max_line: int) -> tuple[MailSession, FindingSet]:
    """A fresh session and its detectors, the setup, then the line (cut into 64 KiB chunks, as a capture is)."""
    session = SESSION_TYPES[shape.protocol](max_line=max_line)
    findings = FindingSet()
    context = SessionContext(shape.protocol, "192.0.2.1:25", "198.51.100.2:40000")
    analyzer = SessionAnalyzer(context, findings, RunStats())
    for side, data in SETUPS[shape.protocol][shape.setup]:
        analyzer.feed(session.receive(side, data, 1, 1.0))
    data = shape.line(size)
    for start in range(0, len(data), 65536):
        analyzer.feed(session.receive(shape.side, data[start : start + 65536], 2, 2.0))
    analyzer.close()
    return session, findings


_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, enum.Enum)


def deep_size(root: object) -> int:
    """Bytes of memory of ``root`` and everything it reaches, but classes, modules, functions and enum members
    (shared by every session): what a session really holds, to check what it says it holds."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, _SHARED):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        stack.extend(gc.get_referents(item))
    return total


def per_byte_seconds(
    shape: Shape, size: int, budget: int = 1 << 20, tries: int = 3, give_up: float = float("inf")
) -> float:
    """Seconds per byte of line, the best of ``tries`` runs of enough repetitions to cover ``budget`` bytes; a
    single line that takes more than ``give_up`` seconds ends the measure at once (its cost per byte is returned)."""
    repeat = max(1, budget // size)
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        for _ in range(repeat):
            before = time.perf_counter()
            feed_shape(shape, size, max_line=2 * size + 1024)
            if time.perf_counter() - before > give_up:
                return (time.perf_counter() - before) / size
        best = min(best, time.perf_counter() - started)
    return best / (repeat * size)


def shape_from_bytes(data: bytes) -> tuple[Shape, int]:
    """The shape and line size a fuzz input stands for (any input gives one; 64 KiB lines at most)."""
    padded = data.ljust(8, b"\x00")
    protocol = ("smtp", "pop3", "imap")[padded[0] % 3]
    setups = sorted(SETUPS[protocol])
    prefixes = PREFIXES[protocol]
    unit = "".join(FRAGMENTS[b % len(FRAGMENTS)] for b in padded[3 : 3 + 1 + padded[6] % 3])
    shape = Shape(
        protocol,
        setups[(padded[1] & 0x7F) % len(setups)],
        C if padded[1] & 0x80 else S,
        prefixes[padded[2] % len(prefixes)],
        unit,
        FRAGMENTS[(padded[7] & 0x7F) % len(FRAGMENTS)] if padded[7] & 0x80 else "",
    )
    size = 1024 + int.from_bytes(padded[8:10] or b"\xff\xff", "little") % (64 * 1024 - 1024)
    return shape, size


def shape_to_bytes(shape: Shape, size: int) -> bytes:
    """The fuzz input that stands for ``shape`` at ``size`` (its unit must be one to three fragments): a seed."""
    units = _split_fragments(shape.unit)
    setups = sorted(SETUPS[shape.protocol])
    head = [
        ("smtp", "pop3", "imap").index(shape.protocol),
        setups.index(shape.setup) | (0x80 if shape.side is C else 0),
        PREFIXES[shape.protocol].index(shape.prefix),
        *(units + units[:1] * (3 - len(units))),
        len(units) - 1,
        (0x80 | FRAGMENTS.index(shape.suffix)) if shape.suffix else 0,
    ]
    return bytes(head) + (size - 1024).to_bytes(2, "little")


def _split_fragments(text: str) -> list[int]:
    """``text`` as one to three fragments (their indices), longest match first."""
    found: list[int] = []
    while text:
        index = max((i for i, f in enumerate(FRAGMENTS) if text.startswith(f)), key=lambda i: len(FRAGMENTS[i]))
        found.append(index)
        text = text[len(FRAGMENTS[index]) :]
    if not 1 <= len(found) <= 3:
        raise ValueError(f"{text!r} is not one to three fragments")
    return found


# Every shape that was super-linear once, and their neighbours: the red team's and the audit's.
KNOWN_SHAPES = {
    "smtp-auth-spaces": Shape("smtp", "greeted", C, "AUTH PLAIN a", " ", "b"),
    "smtp-auth-tabs-in-exchange": Shape("smtp", "auth", C, "AUTH PLAIN a", "\t", "b"),
    "smtp-ehlo-auth-keywords": Shape("smtp", "ehlo", S, "250-", "AUTH "),
    "smtp-greeting-exim": Shape("smtp", "greeted", S, "220 ", "Exim ", "x"),
    "smtp-mail-from": Shape("smtp", "greeted", C, "MAIL FROM:<", "a"),
    "smtp-rcpt-at": Shape("smtp", "greeted", C, "RCPT TO:", "@a", "!"),
    "smtp-rcpt-reply": Shape("smtp", "rcpt", S, "250 ", " ", "x"),
    "smtp-bdat-spaces": Shape("smtp", "greeted", C, "BDAT 1", " ", "x"),
    "smtp-base64-whitespace": Shape("smtp", "auth", C, "", "AGFh "),
    "pop3-auth-spaces": Shape("pop3", "greeted", C, "AUTH PLAIN a", " ", "b"),
    "pop3-capa-sasl": Shape("pop3", "capa", S, "SASL ", "PLAIN "),
    "pop3-apop": Shape("pop3", "greeted", C, "APOP ", "a "),
    "pop3-pass": Shape("pop3", "user", C, "PASS ", " ", "x"),
    "imap-authenticate-spaces": Shape("imap", "greeted", C, "a AUTHENTICATE PLAIN a", " ", "b"),
    "imap-capability-openings": Shape("imap", "greeted", S, "* OK ", "[CAPABILITY "),
    "imap-capability-greeting": Shape("imap", "fresh", S, "* OK ", "[CAPABILITY "),
    "imap-capability-list": Shape("imap", "greeted", S, "* CAPABILITY ", "AUTH=a "),
    "imap-login-escapes": Shape("imap", "greeted", C, 'a LOGIN "', '\\"'),
    "imap-literal-markers": Shape("imap", "greeted", C, "a LOGIN ", "{1} "),
    "imap-literal-braces": Shape("imap", "greeted", C, "a LOGIN ", "{", "}"),
    "imap-login-literal-line": Shape("imap", "login", C, "", "a "),
}
