"""Time per byte stays flat from 1 KB to 1 MB lines: no parser in the dissectors or the detectors is super-linear.

Each known pathological shape (fuzz/amplify.py) runs through a session dissector and its detectors at growing line
sizes, with the line limit raised so the parsers see the whole line. Timings are the best of three runs of enough
repetitions to cover 1 MiB each, and the bounds generous: a quadratic parser costs 16 times more per byte at 1 MB
than at 64 KB, a linear one about the same.
"""

from __future__ import annotations

import time

import pytest

from dissectors import sasl
from dissectors.imap import capability_code, literal_at_end, tokens, without_capability_codes
from dissectors.imap_syntax import id_parameters
from dissectors.sasl_ntlm import ntlm_message
from fuzz.amplify import KNOWN_SHAPES, per_byte_seconds
from passive.analysis.domains import destination_domain, normalize_domain
from passive.analysis.software import search_software

SIZES = (1024, 16 * 1024, 64 * 1024, 1024 * 1024)
GROWTH = 4  # per-byte cost at a size may be at most this many times the cost at 64 KB (or at 1 KB, below that)
SANE_SECONDS_PER_BYTE = 2e-6  # 2 µs a byte: twenty times what the slowest shape costs on a loaded 2-core VM
SLOWEST_RUN = 2.0  # one call slower than this already says the parser is not linear: stop there
# Below this a byte costs what copying it costs (allocation, page faults of a 1 MB string vary more than 4x between
# runs); a quadratic parser is far above it at 1 MB (the old AUTH expression: 300 us a byte at 64 KB already).
NOISE_FLOOR = 20e-9


def _flat(costs: dict[int, float]) -> None:
    reference = costs[SIZES[0]]
    for size, cost in costs.items():
        if size > 64 * 1024:
            reference = max(costs[16 * 1024], costs[64 * 1024])
        shown = f"{cost * 1e9:.1f} ns/B at {size} B vs {reference * 1e9:.1f} at reference ({costs})"
        assert cost < max(GROWTH * reference, NOISE_FLOOR), shown
        assert cost < SANE_SECONDS_PER_BYTE, shown


@pytest.mark.parametrize("name", sorted(KNOWN_SHAPES))
def test_session_time_per_byte_is_flat(name: str) -> None:
    shape = KNOWN_SHAPES[name]
    costs: dict[int, float] = {}
    for size in SIZES:
        costs[size] = per_byte_seconds(shape, size, give_up=SLOWEST_RUN)
        assert costs[size] * size < SLOWEST_RUN, f"{name}: one {size} B line took {costs[size] * size:.1f} s"
    _flat(costs)


def _time_per_byte(function, make, size: int) -> float:  # type: ignore[no-untyped-def]
    text = make(size)
    repeat = max(1, (1 << 20) // size)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeat):
            before = time.perf_counter()
            function(text)
            assert time.perf_counter() - before < SLOWEST_RUN, f"one call on {size} B took over {SLOWEST_RUN} s"
        best = min(best, time.perf_counter() - started)
    return best / (repeat * size)


PARSERS = {
    "parse_auth_command smtp": (
        lambda t: sasl.parse_auth_command(sasl.Protocol.SMTP, t),
        lambda n: "AUTH PLAIN a" + " " * n + "b",
    ),
    "parse_auth_command imap": (
        lambda t: sasl.parse_auth_command(sasl.Protocol.IMAP, t),
        lambda n: "a AUTHENTICATE PLAIN a" + "\t" * n + "b",
    ),
    "capability_code": (capability_code, lambda n: "* OK " + "[CAPABILITY " * (n // 12)),
    "without_capability_codes": (without_capability_codes, lambda n: "[CAPABILITY a]" + "[CAPABILITY " * (n // 12)),
    "literal_at_end": (literal_at_end, lambda n: "{" * n + "}"),
    "tokens": (lambda t: tokens([t]), lambda n: 'a LOGIN "' + '\\"' * (n // 2)),
    "decode_base64": (sasl.decode_base64, lambda n: "AGFh " * (n // 5)),
    "classify_server_line": (
        lambda t: sasl.classify_server_line(sasl.Protocol.SMTP, t),
        lambda n: "334" + " " * n + "x",
    ),
    "id_parameters escapes": (lambda t: id_parameters([t]), lambda n: '("' + '\\"' * (n // 2)),
    "id_parameters unterminated quotes": (lambda t: id_parameters([t]), lambda n: ' "' * (n // 2)),
    "id_parameters parentheses": (lambda t: id_parameters([t]), lambda n: "(" * n + "a"),
    "ntlm_message in a GSS-API token": (
        lambda t: ntlm_message(sasl.decode_base64(t).data, "GSSAPI"),
        lambda n: "oYI" + "A" * n,
    ),
    "destination_domain": (destination_domain, lambda n: "@a:" * (n // 3) + "%!"),
    # One label of distinct non-ASCII characters (as a RCPT's domain, a banner's name): Punycode is quadratic in it.
    "normalize_domain": (normalize_domain, lambda n: "".join(chr(0x4E00 + i % 20_000) for i in range(n)) + ".test"),
    "normalize_domain with a sharp s": (normalize_domain, lambda n: "ß" + "ü" * n + ".test"),
    # The search itself, not the cache of banners in front of it (which would answer every repeat at once).
    "guess_software": (search_software, lambda n: "Microsoft Exchange " * (n // 19)),
}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_parser_time_per_byte_is_flat(name: str) -> None:
    function, make = PARSERS[name]
    _flat({size: _time_per_byte(function, make, size) for size in SIZES})
