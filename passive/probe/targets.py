"""What ``leakscope probe`` is asked to probe: ``host``, ``host:port``, a mail URL or an ``http://`` / ``https://``
URL, expanded to services."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from dissectors.registry import IMPLICIT_TLS_PORTS, PORT_PROTOCOLS
from passive.core.endpoints import endpoint
from passive.core.errors import UsageError

# Ports a bare host is probed on, in this order.
DEFAULT_PORTS: tuple[int, ...] = (25, 587, 465, 110, 995, 143, 993)
# Well-known ports: protocol and whether TLS starts with the first byte.
PORT_SERVICES: dict[int, tuple[str, bool]] = {
    port: (protocol, port in IMPLICIT_TLS_PORTS) for port, protocol in PORT_PROTOCOLS.items()
}
# HTTPS is no passive carrier (nothing in TLS can be read from a capture), but the probe speaks it.
PORT_SERVICES[443] = ("http", True)
# URL schemes: protocol, implicit TLS, default port.
SCHEMES: dict[str, tuple[str, bool, int]] = {
    "smtp": ("smtp", False, 25),
    "submission": ("smtp", False, 587),
    "smtps": ("smtp", True, 465),
    "pop3": ("pop3", False, 110),
    "pop3s": ("pop3", True, 995),
    "imap": ("imap", False, 143),
    "imaps": ("imap", True, 993),
    "http": ("http", False, 80),
    "https": ("http", True, 443),
}
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


class TargetError(UsageError):
    """A target the user wrote that cannot be probed; the message says why."""


@dataclass(frozen=True)
class Service:
    """One service to probe. ``protocol`` None: unknown port, the greeting decides."""

    target: str
    host: str
    port: int
    protocol: str | None
    implicit_tls: bool
    # The user named this port (host:port or URL); a bare host's default ports that are closed are not failures.
    named: bool
    # HTTP: the path of the URL when it names one; None (or "/") asks the default endpoints (passive.probe.http).
    path: str | None = None

    @property
    def address(self) -> str:
        return endpoint(self.host, self.port)


def parse_ports(text: str) -> tuple[int, ...]:
    """``25,587,110`` or ranges like ``1100-1110``; duplicates dropped, order kept."""
    ports: dict[int, None] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise TargetError(f"not a port or port range: {part!r}") from None
        if not (1 <= first <= last <= 65535) or last - first > 1024:
            raise TargetError(f"port range out of bounds: {part!r}")
        for port in range(first, last + 1):
            ports.setdefault(port, None)
    if not ports:
        raise TargetError("no ports given")
    return tuple(ports)


def _check_host(host: str, target: str) -> str:
    host = host.strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOST_NAME.match(host):
        raise TargetError(f"not a host name or address: {target!r}")
    return host


def _port(text: str, target: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise TargetError(f"bad port in {target!r}")
    return int(text)


def _known(port: int) -> tuple[str | None, bool]:
    return PORT_SERVICES.get(port, (None, False))


# Addresses one CIDR target may expand to: a /16 of IPv4 (nmap takes more, but a mail probe of a larger range is
# better split, and each address costs a connection per port).
MAX_RANGE_HOSTS = 65_536


def _cidr(text: str, target: str, ports: tuple[int, ...] | None) -> list[Service]:
    """``10.0.0.0/30`` or ``2001:db8::/126``: every host address of the network, each on the bare host's ports."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise TargetError(f"not a network: {target!r}") from None
    if network.num_addresses > MAX_RANGE_HOSTS:
        raise TargetError(f"{target!r} holds {network.num_addresses} addresses; at most {MAX_RANGE_HOSTS} per range")
    hosts = list(network.hosts()) or [network.network_address]
    return [service for host in hosts for service in _bare(target, str(host), ports)]


def parse_target(target: str, ports: tuple[int, ...] | None = None) -> list[Service]:
    """Expand one target. ``ports`` replaces the default ports of a bare host (and of each host of a range)."""
    text = target.strip()
    if not text:
        raise TargetError("empty target")
    if "://" in text:
        return [_parse_url(text, target)]
    if "/" in text:
        return _cidr(text, target, ports)
    if text.startswith("["):  # [v6] or [v6]:port
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise TargetError(f"bad target {target!r}")
        host = _check_host(host, target)
        if rest:
            port = _port(rest[1:], target)
            return [Service(target, host, port, *_known(port), named=True)]
        return _bare(target, host, ports)
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, target)
        return [Service(target, _check_host(host, target), port, *_known(port), named=True)]
    return _bare(target, _check_host(text, target), ports)


def _bare(target: str, host: str, ports: tuple[int, ...] | None) -> list[Service]:
    return [Service(target, host, port, *_known(port), named=False) for port in (ports or DEFAULT_PORTS)]


def _parse_url(text: str, target: str) -> Service:
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError:
        raise TargetError(f"bad URL {target!r}") from None
    scheme = url.scheme.lower()
    if scheme not in SCHEMES:
        raise TargetError(f"unknown scheme {url.scheme!r} in {target!r} (use {', '.join(SCHEMES)})")
    protocol, implicit_tls, default_port = SCHEMES[scheme]
    if not url.hostname:
        raise TargetError(f"no host in {target!r}")
    path = url.path if protocol == "http" and url.path not in ("", "/") else None
    if path is not None and (len(path) > 1024 or not path.isascii() or any(c in path for c in " \r\n\t")):
        raise TargetError(f"bad path in {target!r}")
    if port is None:
        port = default_port
    elif port == 0:  # urlsplit accepts it; nothing listens there, and 0 must not mean the default port
        raise TargetError(f"bad port in {target!r}")
    host = _check_host(url.hostname, target)
    return Service(target, host, port, protocol, implicit_tls, True, path)


# Targets read from one -iL file, as nmap reads them (whitespace-separated, # comments).
MAX_LISTED_TARGETS = 100_000


def read_target_list(path: str) -> list[str]:
    """Targets from a file (``-`` for standard input): separated by blanks or lines, ``#`` starts a comment."""
    try:
        if path == "-":
            import sys

            text = sys.stdin.read(16 * 1024 * 1024)
        else:
            with open(path, encoding="utf-8", errors="replace") as stream:
                text = stream.read(16 * 1024 * 1024)
    except OSError as error:
        raise TargetError(f"cannot read {path}: {error.strerror or error}") from None
    targets = [word for line in text.splitlines() for word in line.split("#", 1)[0].split()]
    if len(targets) > MAX_LISTED_TARGETS:
        raise TargetError(f"{path}: more than {MAX_LISTED_TARGETS} targets")
    return targets


def parse_targets(targets: list[str] | tuple[str, ...], ports: tuple[int, ...] | None = None) -> list[Service]:
    services: dict[tuple[str, int], Service] = {}
    for target in targets:
        for service in parse_target(target, ports):
            services.setdefault((service.host, service.port), service)
    return list(services.values())
