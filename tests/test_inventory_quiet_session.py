"""A mail session that makes no event still counts in the server's ``mail-service`` entry.

A public capture of a POP3 download picked up mid-stream (only ``RETR`` commands and their messages, no greeting,
no login, no ``QUIT``) gave a ``mail-service`` entry seen 0 times, with no client and no time: the inventory counted
a session at its first event, and the POP3 dissector makes none for ``RETR``. The session now counts once, from its
first bytes to its last, when it ends.
"""

from __future__ import annotations

from typing import Any

from dissectors import events as ev
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.results.records import finding_record

START = 1_700_000_000.0


def inventory(chunks: list[tuple[ev.Side, bytes]], partial: bool = True) -> list[dict[str, Any]]:
    analysis = Analysis(AnalysisOptions())
    flow = analysis.flow("192.0.2.110", 110, "198.51.100.7", 50000, partial=partial)
    for frame, (side, data) in enumerate(chunks, 1):
        flow.data(side, data, frame, START + frame)
    flow.close()
    return [finding_record(f) for f in analysis.findings if f.type == "mail-service"]


def test_a_session_of_retr_commands_alone_is_seen_once_with_its_client_and_times() -> None:
    chunks = [
        (ev.Side.CLIENT, b"RETR 20\r\n"),
        (ev.Side.SERVER, b"+OK 12 octets\r\nhello world\r\n.\r\n"),
        (ev.Side.CLIENT, b"RETR 22\r\n"),
        (ev.Side.SERVER, b"+OK 12 octets\r\nhello again\r\n.\r\n"),
    ]
    [service] = inventory(chunks)
    assert (service["count"], service["client"], service["clients"]) == (
        1,
        "198.51.100.7:50000",
        ["198.51.100.7:50000"],
    )
    assert (service["first_seen"], service["last_seen"]) == (
        "2023-11-14T22:13:21.000000Z",
        "2023-11-14T22:13:24.000000Z",
    )


def test_a_session_with_events_is_still_counted_once() -> None:
    chunks = [
        (ev.Side.SERVER, b"+OK POP3 ready\r\n"),
        (ev.Side.CLIENT, b"STAT\r\n"),
        (ev.Side.SERVER, b"+OK 0 0\r\n"),
        (ev.Side.CLIENT, b"QUIT\r\n"),
    ]
    [service] = inventory(chunks, partial=False)
    assert (service["count"], service["banner"]) == (1, "POP3 ready")
    assert [e["frame"] for e in service["evidence"]] == [1]
