"""Open-relay verdicts that hold on real traffic: local domains from the server's names (Public Suffix List), from
localhost and address literals, from its MX behaviour; trusted networks; each verdict saying which rule decided."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from dissectors import events as ev
from passive.analysis.domains import destination_domain, registered_domain
from passive.analysis.pipeline import Analysis, AnalysisOptions, analyze_captures
from passive.results.records import finding_record
from tests.corpus import require_corpus

C, S = ev.Side.CLIENT, ev.Side.SERVER
OUTSIDE = "203.0.113.9"  # TEST-NET-3: no private range


def dialogue(banner: bytes, mail_from: str, rcpt: str, reply: bytes = b"250 2.1.5 Ok") -> list[tuple[ev.Side, bytes]]:
    return [
        (S, b"220 " + banner + b" ESMTP\r\n"),
        (C, b"EHLO client.example\r\n"),
        (S, b"250 " + banner.split()[0] + b"\r\n"),
        (C, f"MAIL FROM:<{mail_from}>\r\n".encode()),
        (S, b"250 2.1.0 Ok\r\n"),
        (C, f"RCPT TO:<{rcpt}>\r\n".encode()),
        (S, reply + b"\r\n"),
        (C, b"QUIT\r\n"),
    ]


def relays(
    sessions: list[tuple[str, list[tuple[ev.Side, bytes]]]], options: AnalysisOptions | None = None
) -> list[dict[str, Any]]:
    """Run each (client ip, dialogue) against server 192.0.2.25:25; the open-relay records."""
    analysis = Analysis(options)
    for port, (client, steps) in enumerate(sessions, start=40000):
        flow = analysis.flow("192.0.2.25", 25, client, port, partial=False)
        for side, data in steps:
            flow.data(side, data, 1, 1.8e9)
        flow.close()
    return [finding_record(f) for f in analysis.findings if f.type == "open-relay"]


def test_domains() -> None:
    assert registered_domain("mx3.eu.mail.contoso.com") == "contoso.com"
    assert registered_domain("mail.example.co.uk") == "example.co.uk"
    assert registered_domain("mail01") is None
    assert destination_domain("victim@Outside.TEST.") == "outside.test"
    assert destination_domain("relaytest%example.net@[192.0.2.25]") == "example.net"
    assert destination_domain("example.net!relaytest@mx.corp.example") == "example.net"
    assert destination_domain("@mx.corp.example:relaytest@example.net") == "example.net"
    assert destination_domain('"relaytest@example.net"@[192.0.2.25]') == "example.net"
    assert destination_domain("user@[IPv6:2001:db8::1]") == f"[{ipaddress.ip_address('2001:db8::1')}]"
    assert destination_domain("postmaster") is None


CORP = AnalysisOptions(local_domains=frozenset({"corp.example"}))  # the user names the domains of their servers


def test_foreign_recipient_from_outside_is_a_high_open_relay() -> None:
    [relay] = relays([(OUTSIDE, dialogue(b"mx.corp.example", "a@spam.test", "victim@outside.test"))], CORP)
    assert (relay["severity"], relay["verdict"], relay["accepted"]) == ("high", "open-relay", True)
    assert "203.0.113.9" in relay["rule"] and "outside.test" in relay["rule"]
    assert "corp.example" in relay["local_domains"] and relay["trusted_networks"] == []


@pytest.mark.parametrize(
    ("banner", "rcpt"),
    [
        (b"tux319.loginserver.ch", "mirjam@abrakadabra.ch"),  # a hosting provider's MX, for a customer's domain
        (b"BN8NAM11FT066.mail.protection.outlook.com", "bob@contoso.com"),  # Microsoft 365's MX, for a tenant's
        (b"mx.corp.example", "sales@corp-group.example"),  # a company's MX, for its other domain
    ],
)
def test_delivery_to_an_mx_for_a_domain_other_than_its_names_is_no_high_open_relay(banner: bytes, rcpt: str) -> None:
    """In traffic, mail delivered to an MX and mail relayed by it look the same: the names a server gives itself
    are some of its domains, never all. Without the user's --local-domain, a foreign-looking recipient accepted from
    outside is possible-relay, saying how to decide."""
    [relay] = relays([(OUTSIDE, dialogue(banner, "a@sender.example", rcpt))])
    assert (relay["severity"], relay["verdict"], relay["accepted"]) == ("medium", "possible-relay", True)
    assert "--local-domain" in relay["assumed"][0] and "--relay-test" in relay["assumed"][0]


def test_local_domains_judge_only_the_servers_that_name_themselves_in_them() -> None:
    """--local-domain corp.example says which domains the user's servers take mail for; outbound mail from the
    user's network to another's MX (mx.google.com taking gmail.com) is no relaying of theirs."""
    [outbound] = relays([(OUTSIDE, dialogue(b"mx.google.com", "a@corp.example", "someone@gmail.com"))], CORP)
    assert (outbound["severity"], outbound["verdict"]) == ("medium", "possible-relay")
    assert "google.com" in outbound["rule"]
    [nameless] = relays([(OUTSIDE, dialogue(b"mail01", "a@spam.test", "victim@outside.test"))], CORP)
    assert (nameless["severity"], nameless["verdict"]) == ("high", "open-relay")


def test_mail_for_the_servers_own_organisation_is_not_relaying() -> None:
    """An MX several labels below its registered domain accepting a user at that domain is delivering, not relaying."""
    inbound = dialogue(b"mx3.eu.mail.contoso.com", "a@partner.test", "ceo@contoso.com")
    to_subdomain = dialogue(b"mx3.eu.mail.contoso.com", "a@partner.test", "it@corp.contoso.com")
    assert relays([(OUTSIDE, inbound), (OUTSIDE, to_subdomain)]) == []


@pytest.mark.parametrize("recipient", ["root@localhost", "root@LOCALHOST.", "postmaster@[192.0.2.25]", "postmaster"])
def test_localhost_address_literals_and_bare_names_are_local(recipient: str) -> None:
    assert relays([(OUTSIDE, dialogue(b"gw", "a@spam.test", recipient))]) == []


def test_relay_tricks_in_the_local_part_are_possible_relaying() -> None:
    # At the server's own address: a server that does not apply the percent hack delivers it to a local mailbox
    # (or bounces it), so the 250 proves no relaying; at a foreign domain the trick changes nothing.
    [relay] = relays([(OUTSIDE, dialogue(b"mx.corp.example", "a@spam.test", "victim%outside.test@[192.0.2.25]"))])
    assert relay["verdict"] == "possible-relay" and relay["severity"] == "medium"
    assert "outside.test" in relay["rule"] and "[192.0.2.25]" in relay["rule"]
    [relay] = relays([(OUTSIDE, dialogue(b"mx.corp.example", "a@spam.test", "victim%outside.test@other.test"))], CORP)
    assert relay["verdict"] == "open-relay" and relay["severity"] == "high"


def test_private_clients_relaying_through_their_server_are_a_low_internal_fact() -> None:
    [relay] = relays([("172.16.16.225", dialogue(b"mx.corp.example", "a@corp.example", "b@outside.test"))])
    assert (relay["severity"], relay["verdict"]) == ("low", "relays-for-internal-clients")
    assert relay["assumed"] and "--trusted-net" in relay["assumed"][0]


def test_trusted_networks_decide_instead_of_private_ranges() -> None:
    options = AnalysisOptions(
        trusted_networks=(ipaddress.ip_network("203.0.113.0/24"),), local_domains=CORP.local_domains
    )
    [trusted] = relays([(OUTSIDE, dialogue(b"mx.corp.example", "a@corp.example", "b@outside.test"))], options)
    assert (trusted["severity"], trusted["verdict"]) == ("info", "relays-for-trusted-network")
    assert trusted["trusted_networks"] == ["203.0.113.0/24"]
    # Given trusted networks, a private client outside them is no longer assumed trusted.
    [open_relay] = relays([("10.1.2.3", dialogue(b"mx.corp.example", "a@x.test", "b@outside.test"))], options)
    assert open_relay["verdict"] == "open-relay" and open_relay["severity"] == "high"


def test_unknown_local_domains_make_a_possible_relay() -> None:
    [relay] = relays([(OUTSIDE, dialogue(b"mail01", "a@spam.test", "victim@outside.test"))])
    assert (relay["severity"], relay["verdict"]) == ("medium", "possible-relay")
    assert "--local-domain" in relay["assumed"][0]
    options = AnalysisOptions(local_domains=frozenset({"corp.example"}))
    [known] = relays([(OUTSIDE, dialogue(b"mail01", "a@spam.test", "victim@outside.test"))], options)
    assert known["verdict"] == "open-relay"
    assert relays([(OUTSIDE, dialogue(b"mail01", "a@spam.test", "x@corp.example"))], options) == []


def test_a_domain_the_server_receives_from_many_senders_is_its_own() -> None:
    """mail02 names no domain, yet unrelated senders deliver cyberdyne.test to it: it is that domain's MX."""
    senders = [("198.51.100.1", "a@one.test"), ("198.51.100.2", "b@two.test"), ("198.51.100.3", "c@three.test")]
    sessions = [(ip, dialogue(b"mail02", sender, "sanders@cyberdyne.test")) for ip, sender in senders]
    assert [r["verdict"] for r in relays(sessions[:2])] == ["possible-relay"]
    assert relays(sessions) == []  # the third sender shows what it is: earlier verdicts are withdrawn
    outbound = (OUTSIDE, dialogue(b"mail02", "x@spam.test", "victim@outside.test"))
    assert [r["verdict"] for r in relays([*sessions, outbound])] == ["possible-relay"]


def test_past_the_local_domains_a_domain_many_senders_deliver_to_stays_a_possible_relay() -> None:
    """Spam bots abusing an open relay send from many addresses and domains. Once --local-domain says which domains
    are the user's, the domain they send to is not taken for the server's own (their high verdicts withdrawn), but
    is possible-relay: the server may be its backup MX."""
    options = AnalysisOptions(local_domains=frozenset({"corp.example"}))
    senders = [("198.51.100.1", "a@one.test"), ("198.51.100.2", "b@two.test"), ("198.51.100.3", "c@three.test")]
    sessions = [(ip, dialogue(b"mx.corp.example", sender, "victim@outside.test")) for ip, sender in senders]
    assert [(r["verdict"], r["count"]) for r in relays(sessions[:2], options)] == [("open-relay", 2)]
    [relay] = relays(sessions, options)
    assert (relay["severity"], relay["verdict"], relay["count"]) == ("medium", "possible-relay", 3)
    assert "--local-domain" in relay["assumed"][0]


def test_refusals_are_info() -> None:
    refused = dialogue(b"mx.corp.example", "a@spam.test", "v@outside.test", b"554 5.7.1 Relay access denied")
    [relay] = relays([(OUTSIDE, refused)])
    assert (relay["severity"], relay["verdict"], relay["accepted"]) == ("info", "refused", False)


def test_chrissanders_captures_report_no_high_open_relay() -> None:
    captures = sorted(require_corpus("pcaps", "chrissanders").glob("*.pcapng"))
    assert captures
    results = analyze_captures([str(p) for p in captures])
    found = [finding_record(f) for f in results.findings if f.type == "open-relay"]
    assert found and all(r["severity"] != "high" for r in found), [(r["server"], r["verdict"]) for r in found]
    assert {r["verdict"] for r in found} == {"relays-for-internal-clients"}
    assert all(isinstance(r["rule"], str) and r["rule"] for r in found)


@pytest.mark.parametrize(
    ("banner", "local"),
    [
        (b"mx1.eu.corp.example", "eu.corp.example"),  # a subdomain given as the local domain
        (b"mx.corp.example", "eu.corp.example"),  # the same organisation's server for its subdomain
        (b"[203.0.113.25]", "corp.example"),  # a server that names itself by its address gives no name
        (b"203.0.113.25", "corp.example"),
    ],
)
def test_a_server_of_the_local_domains_is_judged_high(banner: bytes, local: str) -> None:
    options = AnalysisOptions(local_domains=frozenset({local}))
    [relay] = relays([(OUTSIDE, dialogue(banner, "a@spam.test", "victim@outside.test"))], options)
    assert (relay["severity"], relay["verdict"]) == ("high", "open-relay"), relay["rule"]
    assert not any(name.rpartition(".")[2].isdigit() for name in relay["local_domains"])
