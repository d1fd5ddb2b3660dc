"""tshark, through pyshark, as the oracle of the differential tests: what Wireshark's dissectors make of the SMTP,
POP3 and IMAP traffic in a capture.

One tshark run per capture (``-Y "smtp || pop || imap" -T json``, with only the layers read here written out in
full), read packet by packet and not kept; :func:`decode_all` runs a few at a time. For every frame tshark dissects
as mail the view records the TCP stream, the TCP payload length, the protocol, the endpoints, the request commands
and the response codes; per TCP stream, the conversation: its endpoints, which one is the server (the one requests
go to and responses come from), the mail protocols on it and any tunnel they run in. Endpoints are written as
leakscope writes them, ``ip:port`` and ``[ipv6]:port``, and protocols by leakscope's names (pop3 for tshark's pop),
so the two views compare directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# tshark's protocol names, and leakscope's for the same protocols.
PROTOCOLS = {"smtp": "smtp", "pop": "pop3", "imap": "imap"}
DISPLAY_FILTER = " || ".join(PROTOCOLS)
# Fields that carry SASL data sent after an AUTH command: tshark's SMTP dissector follows AUTH LOGIN and AUTH PLAIN
# and files the continuation lines under these instead of under a command.
SMTP_AUTH_FIELDS = ("smtp.auth.username", "smtp.auth.password", "smtp.auth.username_password")
SMTP_PASSWORD_FIELDS = ("smtp.auth.password", "smtp.auth.username_password")
# Layers tshark writes out in full (-J); pyshark needs frame, the rest is what _add reads.
JSON_LAYERS = ("frame", "ip", "ipv6", "tcp", "icmp", "icmpv6", *PROTOCOLS)
# tshark processes run at once by decode_all.
JOBS = 2
# tshark's exit status when it stops reading a damaged or cut capture.
READ_ERROR_STATUS = 2
# Seconds tshark gets to exit after its last packet before pyshark kills it.
EXIT_TIMEOUT = 30


def tshark_available() -> bool:
    return shutil.which("tshark") is not None


@dataclass(frozen=True)
class MailFrame:
    """One frame tshark dissects as SMTP, POP3 or IMAP."""

    number: int
    stream: int
    tcp_len: int
    protocol: str  # leakscope's name: smtp, pop3, imap
    src: str
    dst: str
    # Whether tshark dissects the frame as a request (client to server) or a response (server to client).
    request: bool = False
    response: bool = False
    # What it carries, as tshark names it: request commands as sent (POP3: the first word of each request
    # line, so also SASL data sent after AUTH), SASL data tshark's SMTP dissector recognises
    # as such, and response codes (SMTP reply code, POP3 +OK/-ERR, IMAP tagged status OK/NO/BAD).
    commands: tuple[str, ...] = ()
    auth_data: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    # tshark decodes a password here: SMTP AUTH LOGIN/PLAIN password, POP3 PASS, IMAP LOGIN.
    password: bool = False
    # The protocol the mail runs inside when it is not directly on TCP: "http" (CONNECT), "socks".
    tunnel: str | None = None


@dataclass
class Conversation:
    """One TCP stream as tshark sees it: its endpoints and the mail protocols dissected on it."""

    stream: int
    endpoints: frozenset[str]
    protocols: set[str] = field(default_factory=set)
    tunnels: set[str] = field(default_factory=set)
    # Votes for the server's endpoint: the destination of each request frame, the source of each response frame.
    server_votes: Counter[str] = field(default_factory=Counter)

    @property
    def server(self) -> str | None:
        """The endpoint tshark's dissection makes the server, or None when its frames say nothing either way."""
        if not self.server_votes:
            return None
        [(endpoint, _)] = self.server_votes.most_common(1)
        return endpoint

    @property
    def client(self) -> str | None:
        server = self.server
        if server is None:
            return None
        others = self.endpoints - {server}
        return next(iter(others)) if others else None


@dataclass
class TsharkView:
    """What tshark decodes of a capture's mail traffic."""

    path: Path
    frames: dict[int, MailFrame] = field(default_factory=dict)
    conversations: dict[int, Conversation] = field(default_factory=dict)
    # Frames where tshark's mail dissector ran only on the packet an ICMP error quotes: not TCP traffic.
    quoted_in_icmp: list[int] = field(default_factory=list)
    # tshark's message when it stopped early at damage in the file (exit status 2); the frames before it stand.
    read_error: str | None = None

    def services(self, tunnelled: bool = True) -> set[tuple[str, str]]:
        """(protocol, server endpoint) for every TCP stream tshark dissects as mail; with ``tunnelled=False``, only
        where the mail runs directly on TCP, not inside a proxy protocol."""
        return {
            (protocol, conversation.server)
            for conversation in self.conversations.values()
            if conversation.server is not None and (tunnelled or not conversation.tunnels)
            for protocol in conversation.protocols
        }


def decode(path: Path, decode_as: Mapping[str, str] | None = None) -> TsharkView:
    """Run tshark on ``path`` through pyshark and collect its view of the mail frames.

    ``decode_as`` is passed on as tshark's ``-d`` rules, for example ``{"tcp.port==2525": "smtp"}``.
    """
    return decode_all([path], decode_as)[Path(path)]


def decode_all(
    paths: Iterable[Path], decode_as: Mapping[str, str] | None = None, jobs: int = JOBS
) -> dict[Path, TsharkView]:
    """:func:`decode` for several captures, ``jobs`` tshark processes at a time."""
    # pyshark drives tshark from an asyncio event loop. Give it a private one, so that nothing depends on (or
    # changes) the thread's current loop or the process-wide child watcher, and close it afterwards.
    loop = asyncio.new_event_loop()
    try:
        views = loop.run_until_complete(_decode_all([Path(p) for p in paths], dict(decode_as or {}), jobs, loop))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    return {view.path: view for view in views}


async def _decode_all(
    paths: list[Path], decode_as: dict[str, str], jobs: int, loop: asyncio.AbstractEventLoop
) -> list[TsharkView]:
    slots = asyncio.Semaphore(jobs)

    async def one(path: Path) -> TsharkView:
        async with slots:
            view = TsharkView(path)
            capture = _file_capture()(
                str(path),
                display_filter=DISPLAY_FILTER,
                use_json=True,
                keep_packets=False,
                decode_as=decode_as,
                eventloop=loop,
                # Only the layers read here in full; the others by name only.
                custom_parameters=["-J", " ".join(JSON_LAYERS)],
            )
            # Runs tshark to the end of the file, hands each packet over as it is parsed, keeps none, and closes
            # (waits for) the tshark process.
            await capture.packets_from_tshark(lambda packet: _add(view, packet))
            view.read_error = capture.read_error
            return view

    return list(await asyncio.gather(*(one(path) for path in paths)))


@functools.cache
def _file_capture() -> type:
    import pyshark

    class FileCapture(pyshark.FileCapture):
        """pyshark's FileCapture, but waiting for tshark to exit by itself at the end of the file.

        After the last packet pyshark kills tshark if asyncio has not yet seen it exit. By then it usually has
        exited, and ``Popen.send_signal`` polls before signalling: that reaps the process behind the back of
        asyncio's child watcher, which then reports exit status 255, and pyshark raises TSharkCrashException for
        a run that went fine. Waiting for the exit first leaves pyshark nothing to kill.
        """

        read_error: str | None = None

        def _get_tshark_version(self) -> Any:
            # pyshark asks `tshark -v` once per capture; once per test run is enough.
            return _tshark_version()

        async def _cleanup_subprocess(self, process: Any) -> None:
            if self._eof_reached and process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), EXIT_TIMEOUT)
            if self._eof_reached and process.returncode == READ_ERROR_STATUS:
                # tshark read the file up to damage in it, printed what it could and said why it stopped.
                self.read_error = self._last_error_line
                return
            await super()._cleanup_subprocess(process)

    return FileCapture


@functools.cache
def _tshark_version() -> Any:
    from pyshark.tshark.tshark import get_tshark_version

    return get_tshark_version()


def _add(view: TsharkView, packet: Any) -> None:
    layers = {layer.layer_name: layer for layer in packet.layers}
    if "icmp" in layers or "icmpv6" in layers:
        view.quoted_in_icmp.append(int(packet.number))
        return
    tcp = _fields(layers["tcp"])
    network = "ipv6" if "ipv6" in layers else "ip"
    addresses = _fields(layers[network])
    src = _endpoint(_last(addresses, f"{network}.src"), _last(tcp, "tcp.srcport"))
    dst = _endpoint(_last(addresses, f"{network}.dst"), _last(tcp, "tcp.dstport"))
    stream = int(_last(tcp, "tcp.stream"))
    # The protocol stack, e.g. eth:ethertype:ip:tcp:socks:smtp; what sits between tcp and the mail protocol.
    stack = _last(_fields(packet.frame_info), "frame.protocols").split(":")
    conversation = view.conversations.setdefault(stream, Conversation(stream, frozenset((src, dst))))
    for name, protocol in PROTOCOLS.items():
        if name not in layers:
            continue
        carrier = stack[stack.index(name) - 1] if name in stack else "tcp"
        frame = MailFrame(
            number=int(packet.number),
            stream=stream,
            tcp_len=int(_last(tcp, "tcp.len")),
            protocol=protocol,
            src=src,
            dst=dst,
            tunnel=None if carrier == "tcp" else carrier,
            **_MAIL_FIELDS[name](_fields(layers[name])),
        )
        view.frames[frame.number] = frame
        conversation.protocols.add(protocol)
        if frame.tunnel:
            conversation.tunnels.add(frame.tunnel)
        if frame.request:
            conversation.server_votes[dst] += 1
        if frame.response:
            conversation.server_votes[src] += 1


def _smtp(values: dict[str, list[str]]) -> dict[str, Any]:
    auth = tuple(v for name in SMTP_AUTH_FIELDS for v in values.get(name, []))
    return {
        "request": "1" in values.get("smtp.req", []) or bool(auth),
        "response": "1" in values.get("smtp.rsp", []),
        "commands": tuple(values.get("smtp.req.command", [])),
        "auth_data": auth,
        "codes": tuple(values.get("smtp.response.code", [])),
        "password": any(name in values for name in SMTP_PASSWORD_FIELDS),
    }


def _pop(values: dict[str, list[str]]) -> dict[str, Any]:
    commands = tuple(values.get("pop.request.command", []))
    return {
        "request": "pop.request" in values,
        "response": "pop.response" in values,
        "commands": commands,
        "codes": tuple(values.get("pop.response.indicator", [])),
        "password": any(command.upper() == "PASS" for command in commands),
    }


def _imap(values: dict[str, list[str]]) -> dict[str, Any]:
    flags = values.get("imap.isrequest", [])
    return {
        "request": "1" in flags,
        "response": "0" in flags,
        "commands": tuple(values.get("imap.request.command", [])),
        "codes": tuple(values.get("imap.response.status", [])),
        "password": "imap.request.password" in values,
    }


_MAIL_FIELDS = {"smtp": _smtp, "pop": _pop, "imap": _imap}


def _fields(layer: Any) -> dict[str, list[str]]:
    """Every field of a pyshark JSON layer, nested trees and repeated layers included, as name -> values.

    pyshark's ``get_field`` looks one level deep only, while tshark puts most mail fields in subtrees
    (``smtp.command_line_tree``, ``pop.request_tree``, ``imap.line_tree``), and repeats keys as lists when a frame
    holds several lines; the layer keeps tshark's JSON tree as it came, so walk that.
    """
    result: dict[str, list[str]] = {}
    for each in (layer, *getattr(layer, "duplicate_layers", ())):
        for key, value in _walk(each._all_fields):
            result.setdefault(key, []).append(value)
    return result


def _walk(tree: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(tree, dict):
        for name, value in tree.items():
            yield from _walk(value, name)
    elif isinstance(tree, list):
        for item in tree:
            yield from _walk(item, key)
    elif key:
        yield key, str(tree)


def _last(values: dict[str, list[str]], name: str) -> str:
    """The innermost value: for tunnelled packets tshark lists the outer header's fields first."""
    return values[name][-1]


def _endpoint(ip: str, port: str) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
