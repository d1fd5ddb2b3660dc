"""A line cut at the evidence limit has a known secret's start at its end masked (``PARTIAL_SECRET``): the search
for that start stays within a bound whatever secrets were learned, and still finds it."""

from __future__ import annotations

import time

from dissectors.events import MAX_EVIDENCE_TEXT
from passive.results.redaction import MASK, MAX_KNOWN_SECRETS, Redactor


def test_many_secrets_sharing_a_start_cost_no_search_per_secret() -> None:
    """Secrets sharing their first characters were each compared with every tail of the line that began with them:
    4 096 of them and a cut line of their first character took 0.16 s a line (3 s for 20, and a report shows
    thousands of lines)."""
    redactor = Redactor()
    for number in range(MAX_KNOWN_SECRETS):
        redactor.learn("A" * 600 + f"{number:04d}")
    line = "A" * (MAX_EVIDENCE_TEXT - 1) + "B"
    started = time.process_time()
    shown = [redactor.line(line, "server") for _ in range(20)]
    assert time.process_time() - started < 0.5
    assert shown == [line] * 20
    cut = "535 rejected " + ("A" * 700 + "0042")[: MAX_EVIDENCE_TEXT - 13]
    assert redactor.line(cut, "server") == "535 rejected " + MASK


def test_the_start_of_any_of_several_secrets_sharing_it_is_masked() -> None:
    redactor = Redactor()
    for secret in ("Summer2026-first", "Summer2026-second", "Summer2026-third"):
        redactor.learn(secret)
    head = "x" * (MAX_EVIDENCE_TEXT - 14)
    for tail, masked in (("Summer2026-sec", True), ("Summer2026-th", True), ("Summer2026-zz", False)):
        line = (head + " " + tail)[-MAX_EVIDENCE_TEXT:]
        assert redactor.line(line, "server").endswith(MASK) is masked, tail
