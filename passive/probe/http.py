"""The HTTP conversation of a probe: Exchange's web endpoints asked for an NTLM challenge with an anonymous
NEGOTIATE, as nmap's ``http-ntlm-info`` asks the root.

Per path, on a connection of its own: ``GET path`` with ``Authorization: NTLM <NEGOTIATE>`` (the NEGOTIATE of
:func:`dissectors.ntlmssp.build_negotiate`, no credentials ever) and ``Connection: close``; the response is read to
its end (bounded in bytes and time) by the same HTTP dissector and detectors as a capture. A path whose 401 offers
``Negotiate`` but not ``NTLM`` is asked again with the NEGOTIATE inside a SPNEGO NegTokenInit. Redirects are not
followed; bodies are skipped by their framing, never read.
"""

from __future__ import annotations

import base64
from typing import Any

from dissectors import gssapi
from dissectors.http import HttpSession
from passive.core.endpoints import endpoint
from passive.core.errors import ProbeError
from passive.probe.conversation import Conversation

# nmap http-ntlm-info's default root, then the endpoints Exchange (2013 to SE) publishes on its Client Access
# services: EWS, Autodiscover, RPC over HTTP (Outlook Anywhere), MAPI over HTTP (NSPI and EMSMDB), ActiveSync,
# the Offline Address Book, OWA and ECP (forms-based by default, NTLM when set to Windows authentication).
EXCHANGE_PATHS: tuple[str, ...] = (
    "/",
    "/EWS/Exchange.asmx",
    "/autodiscover/autodiscover.xml",
    "/rpc/rpcproxy.dll",
    "/mapi/nspi/",
    "/mapi/emsmdb/",
    "/Microsoft-Server-ActiveSync",
    "/OAB/",
    "/owa/",
    "/ecp/",
)
USER_AGENT = "leakscope"
# Reads of one response at most; each read is bounded by the read timeout and all by --max-bytes.
MAX_READS = 4096


class HttpConversation(Conversation):
    def _http_paths(self) -> tuple[str, ...]:
        return (self.service.path,) if self.service.path else EXCHANGE_PATHS

    def _host_header(self) -> str:
        host, port = self.service.host, self.service.port
        default = 443 if self.service.implicit_tls else 80
        return host if port == default else endpoint(host, port)

    async def _http(self) -> None:
        endpoints: list[dict[str, Any]] = []
        self.report.endpoints = endpoints
        for number, path in enumerate(self._http_paths()):
            if number:
                await self._reconnect()
            record = await self._http_ask(path, "NTLM")
            if not record["challenge"] and "Negotiate" in record["offered"] and "NTLM" not in record["offered"]:
                await self._reconnect()
                record = await self._http_ask(path, "Negotiate")
            endpoints.append(record)
            self._http_outcome(endpoints)

    def _http_outcome(self, endpoints: list[dict[str, Any]]) -> None:
        """What the paths asked so far showed, recorded after each: a service cut off by its timeout keeps it."""
        challenged = [e for e in endpoints if e["challenge"]]
        self.report.ntlm_advertised = any("NTLM" in e["offered"] or "Negotiate" in e["offered"] for e in endpoints)
        self.report.ntlm = "challenge" if challenged else "no-challenge"
        self.report.ntlm_reply = (
            None if challenged else "; ".join(f"{e['path']}: {e['status']}" for e in endpoints)[:200]
        )

    async def _reconnect(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None
        await self._connect()  # type: ignore[attr-defined]  # ServiceProbe's

    async def _http_ask(self, path: str, scheme: str) -> dict[str, Any]:
        """One request on the current connection, its response read to the end; what it offered and answered."""
        conn, wire = self.conn, self.wire
        assert conn is not None and wire is not None and isinstance(wire.session, HttpSession)
        conn.stage = f"http {path}"
        token = self._negotiate_b64()
        if scheme == "Negotiate":
            token = base64.b64encode(gssapi.build_neg_token_init(base64.b64decode(token))).decode("ascii")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {self._host_header()}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n"
            f"Authorization: {scheme} {token}\r\nConnection: close\r\n\r\n"
        )
        wire.challenge_seen = False
        await conn.send(request.encode("ascii"))
        session = wire.session
        for _ in range(MAX_READS):
            if session.responses or not await conn.read_some():
                break
        else:
            raise ProbeError(f"no complete response in {MAX_READS} reads", conn.stage)
        if session.last_status is None:
            raise ProbeError("the server closed the connection without an HTTP response", conn.stage)
        if self.report.banner is None and session.last_server:
            self.report.banner = session.last_server[:200]
        return {
            "path": path,
            "scheme": scheme,
            "status": session.last_status,
            "offered": list(session.last_schemes),
            "challenge": wire.challenge_seen,
        }
