"""Recipients at an address literal: the server's own address and a loopback address are the server itself (mail
for it stays there, as mail for ``localhost`` does); another address is a foreign destination."""

from __future__ import annotations

import pytest

from tests.test_verdict_dialogues import EHLO, SERVER_IP, findings, relays


def _recipient(address: str) -> list[tuple[str, str, str]]:
    script = (
        EHLO
        + f"""C: MAIL FROM:<a@spam.test>
S: 250 2.1.0 Ok
C: RCPT TO:<{address}>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye"""
    )
    return relays(findings(script))


@pytest.mark.parametrize("literal", [f"[{SERVER_IP}]", "[127.0.0.1]", "[127.1.2.3]", "[IPv6:::1]"])
def test_the_servers_own_or_a_loopback_address_literal_is_the_server_itself(literal: str) -> None:
    assert _recipient(f"postmaster@{literal}") == []


def test_another_address_literal_is_foreign() -> None:
    assert _recipient("v@[198.51.100.9]") == [("open-relay", "high", "v@[198.51.100.9]")]


@pytest.mark.parametrize("address", ["postmaster@mx", "postmaster@mx."])
def test_a_single_label_domain_is_no_high_relay(address: str) -> None:
    """Mail to ``user@mx`` goes nowhere on the Internet: a server that takes it may complete it with its own domain
    (Postfix's append_dot_mydomain) or deliver it to a local alias; even with --local-domain, no high verdict."""
    assert _recipient(address) == [("possible-relay", "medium", address)]


@pytest.mark.parametrize("address", ["u@[192.000.002.025]", "u@[010.0.0.1]", "u@[IPv6:fe80::1::2]"])
def test_an_address_literal_that_is_no_address_is_no_high_relay(address: str) -> None:
    """Leading zeros: inet_aton reads ``025`` as octal (21), others as decimal (25); the server may have taken the
    literal for one of its own addresses. What it was is unknown: possible-relay, not high."""
    assert _recipient(address) == [("possible-relay", "medium", address)]
