"""What a proxy let through: the bytes of a connection after an accepted HTTP ``CONNECT`` or SOCKS handshake
(:attr:`dissectors.session.MailSession.tunnel`) are a new stream, classified by its first lines as any flow is on
any port (:class:`~passive.analysis.classify.FirstLines`), then read by its protocol's dissector from its start.

Its findings name the server the client asked the proxy for (the tunnel's target: ``ip:port``, or ``host:port`` as
the client named it) and say how it was reached: ``socks5 10.0.0.1:1080``, the handshake and the proxy's endpoint
(hops of nested tunnels joined by `` > ``), the session context's ``proxy``.
"""

from __future__ import annotations

from dissectors import events as ev
from passive.analysis.classify import FirstLines
from passive.findings.model import Finding

MAX_TUNNELS = 2
"""Tunnels read one inside another in one connection (a CONNECT through a SOCKS proxy); a deeper one is not read:
each costs a session, and no client of a mail server needs more."""

MAX_PROXIES = 8
"""Proxies a finding lists in its ``proxy`` field: a server reached through more is one server all the same, and the
first ones say how it is reached."""


def hop(tunnel: ev.Tunnel, proxy: str, earlier: str) -> str:
    """The session context's ``proxy`` for a session through ``tunnel``, opened on the proxy ``proxy`` (``ip:port``,
    or an earlier tunnel's target), after the hops ``earlier`` ("" for none)."""
    step = f"{tunnel.via} {proxy}"
    return f"{earlier} > {step}" if earlier else step


class TunnelCheck:
    """The first bytes of each side inside a tunnel, held until their first lines name the protocol; the same
    interface as :class:`~passive.analysis.classify.PortCheck`, whose port's protocol stands where nothing else is
    shown: here nothing stands, and a tunnel that shows no protocol read (or ends, or loses bytes, before it does)
    is let go like any flow that is no mail."""

    refuted_at_end = True  # at a gap or the end, an undecided tunnel is no session that is read

    def __init__(self) -> None:
        self.first = FirstLines()
        self.shown: str | None = None

    @property
    def held(self) -> list[tuple[bool, bytes, int | None, float | None]]:
        return self.first.held

    def add(self, from_server: bool, data: bytes, frame: int | None, timestamp: float | None) -> bool | None:
        """Hold the bytes; True once the first lines tell (``shown``: the protocol, None for none read), else None."""
        verdict = self.first.add(from_server, data, frame, timestamp)
        if verdict is None:
            return None
        self.shown = verdict or None
        return True


def note_proxy(finding: Finding, proxy: str) -> None:
    """List ``proxy`` (how the finding's server was reached; "": directly, nothing to list) in its ``proxy`` field."""
    if proxy:
        proxies = finding.fields.setdefault("proxy", [])
        if proxy not in proxies and len(proxies) < MAX_PROXIES:
            proxies.append(proxy)
