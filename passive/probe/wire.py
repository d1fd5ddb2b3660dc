"""One probe connection: bounded, timed reads and writes, every byte handed to the same sans-I/O dissector and
detectors the passive analysis uses.

:class:`Wire` owns the dissector side: the bytes each side sent go to the session dissector in wire order, its events
to the :class:`~passive.analysis.detectors.SessionAnalyzer`. Once TLS starts the outer dissector stops reading (as it
does on a capture) and a second one reads the decrypted conversation; what that one sees is what only a probe can
see.
:class:`Connection` owns the socket side: line reads bounded in length, in total bytes and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from dissectors import events as ev
from dissectors.linebuffer import MAX_LINE
from dissectors.registry import SESSION_TYPES
from dissectors.session import MailSession
from passive.analysis.detectors import SessionAnalyzer
from passive.core.errors import ProbeError
from passive.findings.kinds import FindingType

__all__ = ["READ_SIZE", "SERVICE_TIMEOUT", "Connection", "ProbeError", "Wire"]

# Bytes taken from the socket at a time, and so the most one step hands the dissector between two looks at the
# deadline: the dissector's work is linear, so 4 KiB costs it well under a millisecond.
READ_SIZE = 4096
# The reason given when the service's deadline, not one answer's silence, ended the probe.
SERVICE_TIMEOUT = "the service did not finish within the service timeout"


class Wire:
    """Feeds the dissector and the detectors; remembers what the probe logic needs from the events."""

    def __init__(self, protocol: str, analyzer: SessionAnalyzer, max_line: int = MAX_LINE) -> None:
        self.protocol = protocol
        self.analyzer = analyzer
        # The dissector stops buffering a line where the probe gives up on it (plus its CR LF), not at 64 KiB.
        self.max_line = max_line + 2
        self.session: MailSession = SESSION_TYPES[protocol](max_line=self.max_line)
        self.inside_tls = False
        self.capabilities: ev.Capabilities | None = None  # the latest listing
        self.capabilities_after_tls: ev.Capabilities | None = None
        self.greeting: ev.Greeting | None = None
        self.challenge_seen = False
        self.last_events: list[ev.Event] = []

    def client(self, data: bytes) -> None:
        self._route(self.session.receive(ev.Side.CLIENT, data, None, time.time()))

    def server(self, data: bytes) -> None:
        self._route(self.session.receive(ev.Side.SERVER, data, None, time.time()))

    def tls_started(self, implicit: bool) -> None:
        """TLS is up: from here on a fresh dissector reads the decrypted stream.

        With implicit TLS (465, 993, 995) the detectors are told what a capture would have shown them, the start of
        TLS, and the greeting comes inside it; after STARTTLS the new dissector starts mid-conversation.
        """
        if implicit:
            evidence = ev.Evidence.description(
                "[TLS handshake completed before any line: implicit TLS]", None, time.time()
            )
            self.analyzer.feed([ev.StartTls(ev.Side.CLIENT, evidence, "implicit", True)])
        else:  # the server's acceptance of STARTTLS, which a capture confirms by the client's TLS record
            self._route(self.session.tls_began())
        self.session = SESSION_TYPES[self.protocol](partial=not implicit, max_line=self.max_line)
        self.inside_tls = True

    def _route(self, events: list[ev.Event]) -> None:
        self.last_events = events
        for event in events:
            if isinstance(event, ev.Greeting):
                self.greeting = event
            elif isinstance(event, ev.SaslStep) and event.ntlm is not None and event.side is ev.Side.SERVER:
                self.challenge_seen = True
            if isinstance(event, ev.Capabilities):
                self.capabilities = event
                if self.inside_tls:
                    self._after_tls(event)
                    continue
            self.analyzer.feed([event])

    def _after_tls(self, event: ev.Capabilities) -> None:
        """A listing inside TLS is not what the wire shows: it becomes ``mechanisms_after_tls``."""
        self.capabilities_after_tls = event
        self.analyzer.detectors[FindingType.AUTH_METHODS].after_tls(event)  # type: ignore[attr-defined]


def _unread(reader: asyncio.StreamReader) -> int:
    """Bytes the stream reader has received and not handed out (it offers no public count; 0 if it changes)."""
    return len(getattr(reader, "_buffer", b""))


class Connection:
    """Reads lines with a per-read timeout, a line-length cap, a cap on all bytes received and an overall deadline."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        read_timeout: float,
        deadline: float,
        max_line: int,
        max_bytes: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.max_line = max_line
        self.max_bytes = max_bytes
        self.received = 0
        self.buffer = bytearray()
        # Where bytes go as they arrive and leave; None keeps them in ``unfed`` (protocol not known yet).
        self.on_receive: Callable[[bytes], None] | None = None
        self.on_send: Callable[[bytes], None] | None = None
        self.unfed = bytearray()
        self.stage = "greeting"

    def extra(self, name: str) -> Any:
        return self.writer.get_extra_info(name)

    def _remaining(self) -> float:
        """Seconds left for the next read; raises once the service's deadline has passed. Called before every
        read and after the dissector has read what came, so CPU work cannot carry a probe past its deadline."""
        return self.time_left(self.read_timeout)

    def time_left(self, limit: float) -> float:
        """``limit``, or the seconds left before the service's deadline when fewer; raises once it has passed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ProbeError(SERVICE_TIMEOUT, self.stage)
        return min(limit, remaining)

    def _timed_out(self, timeout: float, reason: str) -> ProbeError:
        """A wait of ``timeout`` seconds ran out: the server's fault (``reason``) when it had the whole read
        timeout; else the service's deadline cut the wait short, and that is the reason (a server trickling a
        byte a second answers every read, yet never finishes)."""
        return ProbeError(reason if timeout >= self.read_timeout else SERVICE_TIMEOUT, self.stage)

    def feed(self, data: bytes) -> None:
        """Hands received bytes to the dissector, READ_SIZE at a time, minding the deadline between pieces."""
        assert self.on_receive is not None
        for start in range(0, len(data), READ_SIZE):
            self.on_receive(data[start : start + READ_SIZE])
            self._remaining()

    async def _fill(self, eof_ok: bool = False) -> bool:
        """Reads what comes next; False at the end of the stream when ``eof_ok`` (else that is an error)."""
        timeout = self._remaining()
        try:
            data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
        except TimeoutError:
            raise self._timed_out(timeout, f"no answer within {timeout:g} s") from None
        except (ConnectionError, OSError) as error:
            raise ProbeError(f"connection lost: {error.strerror or error}", self.stage) from None
        if not data:
            if eof_ok:
                return False
            raise ProbeError("the server closed the connection", self.stage)
        self.received += len(data)
        if self.received > self.max_bytes:
            raise ProbeError(f"more than {self.max_bytes} bytes received; gave up", self.stage)
        if self.on_receive is not None:
            self.feed(data)
        else:
            self.unfed.extend(data)
        self.buffer.extend(data)
        return True

    async def read_some(self) -> bool:
        """Reads the next bytes into the dissector (and the buffer); False when the server has closed."""
        self.buffer.clear()  # callers of read_some read through the dissector, not lines
        return await self._fill(eof_ok=True)

    async def line(self) -> str:
        """The next line without CR LF, decoded as UTF-8 (replacement characters for invalid bytes)."""
        while True:
            self._remaining()  # lines already read are not taken past the deadline either
            end = self.buffer.find(b"\n")
            if end >= 0:
                raw = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return raw.rstrip(b"\r").decode("utf-8", "replace")
            if len(self.buffer) > self.max_line:
                raise ProbeError(f"a line longer than {self.max_line} bytes without a newline", self.stage)
            await self._fill()

    async def send(self, data: bytes) -> None:
        if self.on_send is not None:
            self.on_send(data)
        self.writer.write(data)
        timeout = self._remaining()
        try:
            await asyncio.wait_for(self.writer.drain(), timeout)
        except TimeoutError:
            raise self._timed_out(timeout, "the server stopped reading") from None
        except (ConnectionError, OSError) as error:
            raise ProbeError(f"connection lost: {error.strerror or error}", self.stage) from None

    async def send_line(self, text: str) -> None:
        await self.send(text.encode("utf-8") + b"\r\n")

    async def discard_pending(self) -> int:
        """Drops what the server sent that the probe has not consumed: before a TLS handshake nothing may be
        pending. Bytes the stream reader still holds (more came than one read takes) are read first, so the
        dissector sees them as a capture shows them, in clear text before TLS; left there, they would come out
        after the handshake as if TLS had carried them (STARTTLS response injection)."""
        while _unread(self.reader):
            await self._fill()
        size = len(self.buffer)
        self.buffer.clear()
        return size

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):  # closing must never fail a probe
            await asyncio.wait_for(self.writer.wait_closed(), 2)
