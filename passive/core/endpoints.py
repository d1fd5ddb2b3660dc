"""The one way an endpoint is written: ``ip:port``, IPv6 in brackets (``[2001:db8::1]:25``)."""

from __future__ import annotations

import socket


def endpoint(host: str | bytes, port: int | str) -> str:
    """``host`` is an address as text, or packed (4 or 16 bytes, as it comes off the wire)."""
    if isinstance(host, bytes):
        family = socket.AF_INET6 if len(host) == 16 else socket.AF_INET
        host = socket.inet_ntop(family, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_endpoint(server: str) -> tuple[str, int]:
    """``("10.0.0.1", 25)`` from ``10.0.0.1:25``, ``("2001:db8::1", 25)`` from ``[2001:db8::1]:25``; port 0 when
    the text has none."""
    host, _, port = server.rpartition(":")
    if not host:
        return server, 0
    return host.strip("[]"), int(port) if port.isdigit() else 0
