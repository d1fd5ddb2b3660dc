"""Mail domains as a relay check needs them: where a recipient address really sends mail, a host name's registered
domain (Public Suffix List), and which networks count as a server's own."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Set
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import idna

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A domain name holds at most 253 characters in its ASCII form (RFC 1035 2.3.4: 255 octets on the wire), and each
# character of a Unicode name gives at least one there (but for those IDNA maps to nothing, soft hyphens and
# joiners, which no real name is made of): a longer one is no name, and is not encoded. Punycode's time grows with
# the square of a label's length: a 21,000-character label (one 64 KiB line of UTF-8) took minutes.
MAX_NAME_CHARACTERS = 253
# Names every MTA delivers to itself (RFC 6761 reserves localhost; "localhost.localdomain" is the traditional alias).
LOCALHOST_NAMES = frozenset({"localhost", "localhost.localdomain"})
# Client addresses a mail server usually trusts without being told (Postfix's mynetworks_style = subnet/class
# on a private network): RFC 1918, loopback, link-local, CGNAT (RFC 6598), IPv6 ULA and link-local.
PRIVATE_NETWORKS: tuple[IpNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10",
        "::1/128", "fc00::/7", "fe80::/10",
    )
)  # fmt: skip


@cache
def _psl() -> PublicSuffixList:
    """The list shipped with the package (no network access), read on first use: a run that checks no relay
    does not spend the 33 ms (nor import the package: 4 M instructions)."""
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def parse_network(text: str) -> IpNetwork:
    """``10.0.0.0/8``, ``192.0.2.7`` (one host), ``2001:db8::/32``; ValueError with a readable message otherwise."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"not a network (CIDR) or address: {text!r}") from None


def in_networks(address: str, networks: tuple[IpNetwork, ...]) -> IpNetwork | None:
    """The first of ``networks`` that holds ``address`` (text, IPv6 without brackets), or None. An IPv4-mapped IPv6
    address (``::ffff:10.0.0.5``: an IPv4 client as a dual-stack proxy's socket names it, in its XCLIENT) is the
    IPv4 address it maps, as Postfix reads it."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return next((network for network in networks if ip.version == network.version and ip in network), None)


@lru_cache(maxsize=4096)
def registered_domain(name: str) -> str | None:
    """``contoso.com`` for ``mx3.eu.mail.contoso.com``, ``example.co.uk`` for ``mail.example.co.uk``; None for a
    bare host name or a public suffix itself."""
    name = name.lower().rstrip(".")
    if "." not in name:
        return None
    return _psl().privatesuffix(name)


def destination_domain(address: str) -> str | None:
    """Where ``RCPT TO`` really sends mail: the domain after ``@``, or the next hop of a relay trick in the local
    part (``user%example.net@server``, ``example.net!user@server``, ``@server:user@example.net`` source routes,
    quoted ``"user@example.net"@server``). Address literals come back bracketed (``[192.0.2.1]``)."""
    return route(address)[0]


def route(address: str) -> tuple[str | None, str | None]:
    """(:func:`destination_domain`, the domain after the last ``@`` when the destination was read from a relay trick
    in the local part -- a percent hack, a bang path, a quoted address -- else None). A server may take such an
    address for a mailbox of its own domain and deliver it there, as Postfix does with ``allow_percent_hack = no``
    and Exchange always does."""
    text = address.strip().strip("<>").strip()
    if text.startswith("@") and ":" in text:  # RFC 5321 4.1.2 source route: the last hop is after the colon
        text = text.split(":", 1)[1]
    if len(text) > 1 and text[0] == text[-1] == '"':  # a quoted string alone goes where its content goes (Postfix's
        text = text[1:-1]  # resolve_dequoted_address = yes): "v@example.net" to example.net, its "@" no separator
    local, at, domain = text.rpartition("@")
    if not at:
        local, domain = text, ""
    local = local.strip('"')
    outer = _domain(domain) if domain else None
    if "@" in local:  # "user@example.net"@server
        return _domain(local.rpartition("@")[2]), outer
    if "%" in local:  # user%example.net@server: the percent hack
        return _domain(local.rpartition("%")[2]), outer
    if "!" in local:  # example.net!user@server: a UUCP bang path
        return _domain(local.split("!", 1)[0]), outer
    return outer, None


class Routed(Protocol):
    """What :func:`destined` reads of a relay attempt (a dataclass): the domain its address sends mail to, as
    :func:`route` gave it, and the domain after the last "@" when that one came from a relay trick (else "")."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    domain: str
    outer: str


RoutedT = TypeVar("RoutedT", bound=Routed)


def destined(attempt: RoutedT, local: Set[str], addresses: frozenset[str]) -> RoutedT | None:
    """The attempt as its destination has it judged: None when the mail stays with the server (its domain is local,
    and so is the one after the last "@" when a relay trick in the local part named another); judged on the domain
    after the last "@" when that one is foreign, whatever the local part names (RFC 5321 4.1.2: the server routes on
    it, and ``v%contoso.com@outside.test`` goes to outside.test)."""
    if attempt.outer and not is_local(attempt.outer, local, addresses):
        return dataclasses.replace(attempt, domain=attempt.outer, outer="")
    return None if is_local(attempt.domain, local, addresses) else attempt


def normalize_domain(text: str) -> str:
    """A domain as relay checks compare them: lower case, no trailing dot, an internationalized name in its ASCII
    form (``Bücher.de`` and ``xn--bcher-kva.de`` are one domain); text that is no valid name stays as it is, lower
    case. IDNA 2008 with UTS 46 mapping (the ``idna`` package, nontransitional): ``straße.de`` is
    ``xn--strae-oqa.de`` as registries and SMTPUTF8 name it (RFC 5891), not ``strasse.de``, another's domain, which
    Python's IDNA 2003 codec makes of it; a name IDNA 2008 refuses (a symbol IDNA 2003 allowed) goes through that
    codec, as before."""
    text = text.strip()
    if text.isascii() or len(text) > MAX_NAME_CHARACTERS:
        return text.lower().rstrip(".")
    try:
        return idna.encode(text, uts46=True, transitional=False).decode("ascii").rstrip(".")
    except (idna.IDNAError, UnicodeError):
        pass
    try:
        return text.lower().encode("idna").decode("ascii").rstrip(".")
    except UnicodeError:
        return text.lower().rstrip(".")


_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def is_domain_name(name: str) -> bool:
    """Whether ``name`` (as :func:`normalize_domain` gives it) is a DNS name: dot-separated labels of 1 to 63
    letters, digits, hyphens (not at either end) or underscores, 253 characters at most."""
    return 0 < len(name) <= MAX_NAME_CHARACTERS and all(_LABEL.fullmatch(label) for label in name.split("."))


def not_local_domain(name: str) -> str | None:
    """Why ``name`` (as :func:`normalize_domain` gives it) cannot be a domain the user's servers receive mail for,
    or None when it can: no DNS name; an address (no top-level domain is all digits: ``192.0.2.25``, which matches
    no recipient domain, while the server's own address literals are local already); a public suffix, under which
    every domain would be local (``com``, ``co.uk``, and a name without a dot such as ``contoso``, a typo for
    ``contoso.com``)."""
    if not is_domain_name(name):
        return "not a domain name"
    if name.rpartition(".")[2].isdigit():
        return "an address, not a domain name (the servers' own address literals are local already)"
    if registered_domain(name) is None:
        return "a public suffix: every domain under it would be local (give your organisation's domain)"
    return None


def server_name(text: str) -> str | None:
    """A name a server gives itself (its greeting's first word, its EHLO reply's) as a domain name, or None for an
    address (``[203.0.113.25]``, ``203.0.113.25``: no top-level domain is all digits) or what is no name."""
    name = normalize_domain(text)
    if "." not in name or not is_domain_name(name) or name.rpartition(".")[2].isdigit():
        return None
    return name


def _domain(text: str) -> str | None:
    text = normalize_domain(text)
    if not text:
        return None
    if text.startswith("[") and text.endswith("]"):
        return address_literal(text) or text
    return text


def address_literal(text: str) -> str | None:
    """An address literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``) as ``[address]`` in the address's canonical form;
    None for what is no bracketed address (``[192.000.002.025]``: leading zeros, which servers read differently)."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    inner = text[1:-1]
    inner = inner[5:] if inner.lower().startswith("ipv6:") else inner
    try:
        return f"[{ipaddress.ip_address(inner)}]"
    except ValueError:
        return None


def is_local(domain: str, local_domains: Set[str], server_addresses: frozenset[str]) -> bool:
    """The recipient domain is the server's own: localhost, one of its addresses or a loopback address as a literal
    (``[127.0.0.1]``, ``[IPv6:::1]``: the server itself, as ``localhost`` is), or one of the local domains or a
    subdomain of one."""
    if domain in LOCALHOST_NAMES or domain.endswith(".localhost"):
        return True
    if domain.startswith("["):
        return domain[1:-1] in server_addresses or _loopback(domain[1:-1])
    return any(domain == local or domain.endswith("." + local) for local in local_domains)


def _loopback(text: str) -> bool:
    """Whether ``text`` is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False
