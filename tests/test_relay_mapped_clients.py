"""A client a proxy names by an IPv4-mapped IPv6 address (``XCLIENT ADDR=IPV6:::ffff:10.0.0.5``: an IPv4 client as
a dual-stack proxy's socket sees it) is that IPv4 address, as Postfix reads it: judged by the trusted networks and
private ranges that hold it, not taken for an outsider's relaying."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from tests.test_verdict_dialogues import EHLO, findings, relays


def _vouched(address: str, **options: Any) -> list[tuple[str, str, str]]:
    script = (
        EHLO
        + f"""C: XCLIENT ADDR={address}
S: 220 mx.contoso.com ESMTP
C: EHLO proxy.example
S: 250 mx.contoso.com
C: MAIL FROM:<a@spam.test>
S: 250 2.1.0 Ok
C: RCPT TO:<v@outside.test>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye"""
    )
    return relays(findings(script, **options))


@pytest.mark.parametrize("address", ["10.0.0.5", "IPV6:::ffff:10.0.0.5", "IPv6:::FFFF:10.0.0.5"])
def test_a_mapped_client_address_is_judged_as_the_ipv4_address_it_maps(address: str) -> None:
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    assert _vouched(address, trusted_networks=trusted) == [("relays-for-trusted-network", "info", "v@outside.test")]
    assert _vouched(address) == [("relays-for-internal-clients", "low", "v@outside.test")]


def test_a_mapped_public_address_is_an_outsider() -> None:
    assert _vouched("IPV6:::ffff:198.51.100.7") == [("open-relay", "high", "v@outside.test")]
