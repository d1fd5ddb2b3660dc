"""SOCKS 4, 4a and 5 handshakes, sans-I/O: what a client asked a SOCKS proxy for, and whether the proxy let it through.

SOCKS5 (RFC 1928): the client's greeting (version, methods), the proxy's choice, the username/password
sub-negotiation when chosen (RFC 1929: the password crosses in clear, and is reported as a ``Credentials`` event,
mechanism ``SOCKS5-USERPASS``, with the proxy's verdict as an ``AuthResult``), the request (command, destination as an
IPv4 or IPv6 address or a domain name, port) and the reply. SOCKS4: the request (command, port, IPv4 address, user id)
and the 8-byte reply; SOCKS4a names the destination after the user id when the address is ``0.0.0.x``. A CONNECT
the proxy granted sets :attr:`SocksSession.tunnel`: the rest of the connection is the client's session with the
destination, read by whoever reads sessions (the bytes already received past the handshake are in the tunnel's
``rest``). A refused request, a method the decoder does not read (GSSAPI), or bytes that are no SOCKS end the reading:
nothing more of the connection is read. Every length is checked before it is used; at most
:data:`MAX_HANDSHAKE_BYTES` of each side are held.
"""

from __future__ import annotations

import ipaddress

from dissectors import events as ev
from dissectors import sasl
from dissectors.linebuffer import SKIP_ALL, wire_text
from dissectors.session import MailSession

MAX_HANDSHAKE_BYTES = 768
"""Bytes of one side held while a message of the handshake is incomplete or waits for the other side's answer: the
largest message is RFC 1929's (3 + 255 + 255 bytes); a SOCKS4 request's user id and 4a's domain are cut at
:data:`MAX_NAME` each. A side holding more is no SOCKS client or proxy: the reading ends."""
MAX_NAME = 255
"""A SOCKS4 user id or SOCKS4a domain longer than this (a SOCKS5 length byte's bound) ends the reading."""
MECHANISM = "SOCKS5-USERPASS"
_CONNECT = 1
_V4_GRANTED = 0x5A
_NO_AUTH, _USERPASS, _REFUSED = 0x00, 0x02, 0xFF

# Phases: which side's message comes next, and which one it is.
_HELLO, _CHOICE, _AUTH, _AUTH_STATUS, _REQUEST, _REPLY, _REQUEST4, _REPLY4, _DONE = range(9)
# What a SOCKS5 proxy's next message starts with after its choice: the sub-negotiation's status, or the reply.
_AFTER_CHOICE = {_NO_AUTH: b"\x05", _USERPASS: b"\x01"}
_EXPECTS = {_HELLO: ev.Side.CLIENT, _AUTH: ev.Side.CLIENT, _REQUEST: ev.Side.CLIENT, _REQUEST4: ev.Side.CLIENT}


def host_text(raw: bytes) -> str:
    """A destination name as sent, for findings: printable ASCII as it is, any other byte as ``\\xNN``."""
    return "".join(chr(byte) if 0x21 <= byte <= 0x7E and byte != 0x5C else f"\\x{byte:02x}" for byte in raw[:MAX_NAME])


def target_text(host: str, port: int, address: bool) -> str:
    """``ip:port``, ``[v6]:port`` or ``host:port``."""
    return f"[{host}]:{port}" if address and ":" in host else f"{host}:{port}"


def recognise(server: bytes, client: bytes) -> bool | None:
    """Are a flow's first bytes a SOCKS handshake? True when the client's first message is a SOCKS4 request or a SOCKS5
    greeting and the server's first bytes answer it; False when they cannot be; None while the server is silent.
    A proxy answers only a whole message, and a SOCKS5 proxy's choice (2 bytes) only with what the method chosen
    starts: a server that speaks before the client's message is complete, or goes on otherwise, is no SOCKS proxy
    (binary protocols that open with a byte 4 or 5, DNP3's ``05 64`` or a Modbus transaction id, answer at once)."""
    if len(client) < 2 or client[0] not in (4, 5):
        return False
    size = _hello_size(client) if client[0] == 5 else -1 if client[1] not in (1, 2) else _request4_size(client)
    if size is None:
        return False if server else None
    if size < 0:
        return False
    if len(server) < 2:
        return None
    if client[0] == 5:
        after = _AFTER_CHOICE.get(server[1], b"")  # the first byte of the proxy's next message, if any
        return server[0] == 5 and server[1] in (*client[2:size], _REFUSED) and server[2:3] in (b"", after)
    return server[0] in (0, 4) and 0x5A <= server[1] <= 0x5D


class SocksSession(MailSession):
    """One connection to a SOCKS proxy, read up to the end of its handshake (the module docstring)."""

    protocol = sasl.Protocol.SOCKS

    def __init__(self, partial: bool = False, max_line: int = 0) -> None:
        super().__init__(partial)
        self.phase = _DONE if partial else _HELLO  # a handshake picked up mid-stream cannot be read
        self.held = {ev.Side.CLIENT: bytearray(), ev.Side.SERVER: bytearray()}
        self.last: dict[ev.Side, tuple[int | None, float | None]] = {}  # frame and time of each side's latest bytes
        self.via = "socks5"  # "socks4" or "socks4a" once the client's first byte says so
        self.command = 0
        self.target = ""

    def receive(
        self, side: ev.Side, data: bytes, frame: int | None = None, timestamp: float | None = None
    ) -> list[ev.Event]:
        if self.phase == _DONE or not data:
            return []
        out: list[ev.Event] = []
        self._out = out
        held = self.held[side]
        held += data
        self.last[side] = (frame, timestamp)
        if len(held) > MAX_HANDSHAKE_BYTES:
            self._stop(side, "too_long", f"more than {MAX_HANDSHAKE_BYTES} bytes without a complete message")
        while self.phase != _DONE and self._step():
            pass
        self._out = []
        return out

    def gap(self, side: ev.Side, size: int, frame: int | None = None, timestamp: float | None = None) -> list[ev.Event]:
        """Bytes lost in the handshake: where its messages begin is unknown, and nothing more is read."""
        if self.phase == _DONE:
            return []
        self.last[side] = (frame, timestamp)
        return self._collect(lambda: self._stop(side, "gap", f"{size} bytes missing in the handshake"))

    def close(self, frame: int | None = None, timestamp: float | None = None) -> list[ev.Event]:
        self.phase = _DONE
        return []

    def shed(self, frame: int | None = None, timestamp: float | None = None) -> list[ev.Event]:
        return self.gap(ev.Side.CLIENT, 0, frame, timestamp) if self.phase != _DONE else []

    def skippable(self, side: ev.Side) -> tuple[int, int, bool] | None:
        """Once the reading ended without a tunnel (refused, no SOCKS), nothing more is read: all may be dropped."""
        return (SKIP_ALL, 0, False) if self.phase == _DONE and self.tunnel is None else None

    def may_skip(self) -> bool:
        return self.phase == _DONE and self.tunnel is None

    def skipped(
        self, side: ev.Side, size: int, at_line_start: bool, frame: int | None, ts: float | None, tail: bytes = b""
    ) -> None:
        """Dropped after the reading ended: nothing to do."""

    def buffered_bytes(self) -> int:
        return len(self.held[ev.Side.CLIENT]) + len(self.held[ev.Side.SERVER])

    # -- messages -------------------------------------------------------------------------------------------------

    def _step(self) -> bool:
        """Read the next message of the handshake if it is complete; whether one was read."""
        side = _EXPECTS.get(self.phase, ev.Side.SERVER)
        data = self.held[side]
        if self.phase == _HELLO and data[:1] == b"\x04":
            self.phase, self.via = _REQUEST4, "socks4"
        size = self._size(data)
        if size is None:
            return False
        if size < 0:
            self._stop(side, "not_socks", f"not a {self.via} message: {bytes(data[:8]).hex()}")
            return False
        message = bytes(data[:size])
        del data[:size]
        self._message(side, message)
        return True

    def _size(self, data: bytearray) -> int | None:
        """The size of the complete message at the start of ``data``, None while incomplete, -1 if it is none."""
        phase, have = self.phase, len(data)
        if phase == _HELLO:
            return _hello_size(data)
        if phase in (_CHOICE, _AUTH_STATUS):
            return None if have < 2 else 2
        if phase == _AUTH:
            if have < 2:
                return None
            if data[0] != 1:
                return -1
            end = 2 + data[1]
            return None if have < end + 1 or have < end + 1 + data[end] else end + 1 + data[end]
        if phase in (_REQUEST, _REPLY):
            return _address_size(data)
        if phase == _REPLY4:
            return None if have < 8 else 8
        return _request4_size(data)

    def _message(self, side: ev.Side, message: bytes) -> None:
        frame, timestamp = self.last.get(side, (None, None))
        phase = self.phase
        if phase == _HELLO:
            self.phase = _CHOICE
        elif phase == _CHOICE:
            self._choice(message)
        elif phase == _AUTH:
            self._auth(message, frame, timestamp)
        elif phase == _AUTH_STATUS:
            success = message[1] == 0
            text = f"[SOCKS5 username/password status {message[1]}]"
            self._emit(ev.AuthResult(ev.Side.SERVER, ev.Evidence.description(text, frame, timestamp), MECHANISM,
                                     success, text))  # fmt: skip
            self.phase = _REQUEST if success else _DONE
        elif phase in (_REQUEST, _REQUEST4):
            self._request(message)
        else:
            self._reply(message, frame, timestamp)

    def _choice(self, message: bytes) -> None:
        if message[0] != 5:
            self._stop(ev.Side.SERVER, "not_socks", f"not a SOCKS5 method choice: {message.hex()}")
        elif message[1] == _NO_AUTH:
            self.phase = _REQUEST
        elif message[1] == _USERPASS:
            self.phase = _AUTH
        else:  # refused (0xFF), GSSAPI or another method whose exchange is not read
            self._stop(ev.Side.SERVER, "socks_method", f"SOCKS5 method {message[1]:#04x}: nothing more is read")

    def _auth(self, message: bytes, frame: int | None, timestamp: float | None) -> None:
        size = message[1]
        user = wire_text(message[2 : 2 + size])
        password = wire_text(message[3 + size :])
        evidence = ev.Evidence.description("[SOCKS5 username/password request]", frame, timestamp)
        self._emit(ev.Credentials(ev.Side.CLIENT, evidence, MECHANISM, user, password))
        self.phase = _AUTH_STATUS

    def _request(self, message: bytes) -> None:
        self.command = message[1]
        if self.via == "socks5":
            self.target = _address(message)
            self.phase = _REPLY
            return
        port = int.from_bytes(message[2:4], "big")
        end = message.index(0, 8)
        if message[4:7] == b"\x00\x00\x00" and message[7]:  # SOCKS4a: the name follows the user id
            self.via = "socks4a"
            self.target = target_text(host_text(message[end + 1 : -1]), port, False)
        else:
            self.target = target_text(str(ipaddress.IPv4Address(message[4:8])), port, True)
        self.phase = _REPLY4

    def _reply(self, message: bytes, frame: int | None, timestamp: float | None) -> None:
        via = self.via
        granted = message[1] == (0 if via == "socks5" else _V4_GRANTED)
        self.phase = _DONE
        if not granted or self.command != _CONNECT:
            what = "refused" if not granted else f"granted command {self.command} (not CONNECT)"
            text = f"[{via} request for {self.target} {what} (reply {message[1]:#04x})]"
            self._emit(ev.Anomaly(ev.Side.SERVER, ev.Evidence.description(text, frame, timestamp), "socks_refused",
                                  f"{what}: nothing more is read"))  # fmt: skip
            return
        tunnel = ev.Tunnel(via, self.target)
        sides = sorted(self.held, key=lambda side: self.last.get(side, (None, None))[0] or 0)
        tunnel.rest = [(side, bytes(self.held[side]), *self.last[side]) for side in sides if self.held[side]]
        for data in self.held.values():
            data.clear()
        self.tunnel = tunnel

    def _stop(self, side: ev.Side, code: str, detail: str) -> None:
        frame, timestamp = self.last.get(side, (None, None))
        self.phase = _DONE
        for data in self.held.values():
            data.clear()
        self._emit(ev.Anomaly(side, ev.Evidence.description(f"[SOCKS {code}]", frame, timestamp), code, detail))


def _hello_size(data: bytes | bytearray) -> int | None:
    """The size of a SOCKS5 greeting (version, the number of methods, the methods)."""
    if data[:1] not in (b"", b"\x05") or (len(data) >= 2 and not data[1]):
        return -1
    return None if len(data) < 2 or len(data) < 2 + data[1] else 2 + data[1]


def _address_size(data: bytearray) -> int | None:
    """The size of a SOCKS5 request or reply (version, command or reply, reserved, address type, address, port)."""
    if len(data) < 5:
        return None
    kind = data[3]
    if data[0] != 5 or kind not in (1, 3, 4) or (kind == 3 and data[4] == 0):
        return -1
    size = 4 + {1: 4, 4: 16}.get(kind, 1 + data[4]) + 2
    return None if len(data) < size else size


def _address(message: bytes) -> str:
    """The destination of a SOCKS5 request whose size :func:`_address_size` checked."""
    kind, port = message[3], int.from_bytes(message[-2:], "big")
    if kind == 1:
        return target_text(str(ipaddress.IPv4Address(message[4:8])), port, True)
    if kind == 4:
        return target_text(str(ipaddress.IPv6Address(message[4:20])), port, True)
    return target_text(host_text(message[5:-2]), port, False)


def _request4_size(data: bytes | bytearray) -> int | None:
    """The size of a SOCKS4 or 4a request: 8 bytes, the user id and its NUL, and for 4a a name and its NUL."""
    if len(data) < 9:
        return None
    if data[0] != 4 or data[1] not in (1, 2):
        return -1
    end = data.find(b"\x00", 8, 8 + MAX_NAME + 1)
    if end < 0:
        return None if len(data) < 8 + MAX_NAME + 1 else -1
    if not (data[4:7] == b"\x00\x00\x00" and data[7]):
        return end + 1
    name_end = data.find(b"\x00", end + 1, end + 1 + MAX_NAME + 1)
    if name_end < 0:
        return None if len(data) < end + 1 + MAX_NAME + 1 else -1
    return name_end + 1 if name_end > end + 1 else -1
