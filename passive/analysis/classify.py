"""Which flows are mail, and which protocol each speaks: decided once, from the first lines of each side.

In port-independent mode the capture layer holds a new flow's first bytes and asks :func:`classify_mail`; its
verdict is the flow's label, which the handler factory turns into the protocol's dissector. On the mail ports the
port says the protocol. :class:`FirstLines` applies the same rule to a flow fed directly (the probe on an unknown
port, tests), without a capture layer.
"""

from __future__ import annotations

from typing import Any

from dissectors.identify import first_line, http_lines, port_refuted
from dissectors.line_kinds import line_start
from dissectors.registry import CARRIER_PORTS, NOT_MAIL, identify
from passive.capture.options import CaptureOptions

# Bytes of a flow's first data (both sides together) looked at before giving up on recognising it.
CLASSIFY_LIMIT = 4096
# Bytes held of a flow on a mail port while its first lines may still show another protocol (a greeting and the
# client's first commands fit); past this, or at a gap or the end, the port's protocol stands.
PORT_CHECK_LIMIT = 2048
MAX_PORT_CHECK_HELD = 16 * 1024 * 1024
"""What all flows whose port check goes on may hold together, in :func:`~passive.capture.held.held_cost` units (a
chunk's objects and its bytes twice): past it the flows holding the most end their check as at a gap or the end of
the flow (``port_check_evictions``): on a carrier's port, the port's protocol stands, as it does at
:data:`PORT_CHECK_LIMIT`; inside a tunnel, which has no port to stand, the flow is not read. On a mail port that
loses least: a real mail flow is read with its credentials, while a Redis or FTP server the check would have found
is read as mail, its lines anomalies. A normal check ends on the server's first line, so only flows that keep it
waiting (bytes without a newline, shared commands) are cut. 16 MiB is 65 000 one-byte chunks, or 3 500 flows
holding nearly all of their 2 KiB."""


def classify_mail(server: bytes, client: bytes) -> str | None:
    """``"smtp"``, ``"pop3"``, ``"imap"``, ``"http"``; ``""`` (none of them); None while the first lines are
    incomplete."""
    return identify(server, client)


def mail_capture_options(**settings: Any) -> CaptureOptions:
    """:class:`CaptureOptions` for mail: the mail ports and HTTP's (every carrier of the registry), and
    :func:`classify_mail` for ``all_ports``.

    ``settings`` are further :class:`CaptureOptions` fields (``all_ports``, ``bpf``, ``backend``...).
    """
    return CaptureOptions(ports=CARRIER_PORTS, classifier=classify_mail, line_start=line_start, **settings)


class FirstLines:
    """The first bytes of each side of one flow, until :func:`classify_mail` names the protocol (or gives up)."""

    def __init__(self) -> None:
        self.held: list[tuple[bool, bytes, int | None, float | None]] = []  # (from server, data, frame, time)
        self._seen = [b"", b""]  # server, client

    def add(self, from_server: bool, data: bytes, frame: int | None, timestamp: float | None) -> str | None:
        """Hold the bytes; the verdict once there is one (``""``: not mail, or undecided past the limit)."""
        self.held.append((from_server, data, frame, timestamp))
        side = 0 if from_server else 1
        self._seen[side] += data[: max(0, CLASSIFY_LIMIT - len(self._seen[side]))]
        verdict = classify_mail(self._seen[0], self._seen[1])
        if verdict is None and len(self._seen[0]) + len(self._seen[1]) >= CLASSIFY_LIMIT:
            return NOT_MAIL
        return verdict


class PortCheck:
    """The first bytes of a flow on a carrier's port, held until they confirm the port's protocol or show another
    one (:func:`~dissectors.identify.port_refuted`): Redis and FTP servers on mail ports are no mail services.
    Another carried protocol the first lines show, from the flow's start, is named: ``shown`` is then that protocol,
    which the flow is read as (NTLM over HTTP on port 25 is still NTLM over HTTP; SMTP on the IMAP port or on port 80
    is SMTP). On an HTTP port, whose clients speak first, a server that speaks first is held until its lines tell."""

    refuted_at_end = False  # at a gap or the end of the flow, the port's protocol stands

    def __init__(self, protocol: str, partial: bool) -> None:
        self.protocol, self.partial = protocol, partial
        self.shown: str | None = None  # the protocol the first lines show instead, when one that is read
        self.held: list[tuple[bool, bytes, int | None, float | None]] = []  # (from server, data, frame, time)
        self._seen = [b"", b""]  # server, client
        self._client_first: bool | None = None

    def add(self, from_server: bool, data: bytes, frame: int | None, timestamp: float | None) -> bool | None:
        """Hold the bytes; True (another protocol), False (the port's), None (undecided yet)."""
        self.held.append((from_server, data, frame, timestamp))
        if self._client_first is None and data:
            self._client_first = not from_server
        side = 0 if from_server else 1
        self._seen[side] += data[: max(0, PORT_CHECK_LIMIT - len(self._seen[side]))]
        server, client = self._seen
        lines = (first_line(server) if server else None, first_line(client) if client else None)
        shown = None if self.partial else "http" if http_lines(*lines) else identify(server, client)
        if shown and shown != self.protocol:
            self.shown = shown
            return True
        verdict = port_refuted(self.protocol, server, client, bool(self._client_first), self.partial)
        if self.protocol == "http" and self._client_first is False and shown is None and not self.partial:
            verdict = None  # a server greeting first on an HTTP port: mail, once its lines say so
        if verdict is None and len(server) + len(client) >= PORT_CHECK_LIMIT:
            return False
        return verdict
