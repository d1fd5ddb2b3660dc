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


def network_name(network: tuple[str, int]) -> str:
    """An overlay's virtual network as findings name it: ``vxlan-vni:42`` (its kind and id, tunnels.vnet_label)."""
    return f"{network[0]}:{network[1]}"


def server_name(server: str, network: str | None) -> str:
    """A server as outputs name it: its endpoint, and the overlay network it was seen in (``10.0.0.5:25 in
    vxlan-vni:42``): tenants reusing one address are servers apart."""
    return f"{server} in {network}" if network else server
