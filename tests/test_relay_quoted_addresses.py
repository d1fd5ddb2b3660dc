"""A quoted local part (RFC 5321 section 4.1.2: a Quoted-string may hold ``>`` and ``@``) read as Postfix reads it.
Postfix 3.7 answered ``RCPT TO:<"v>x"@outside.test>`` with ``554 5.7.1 <v>x@outside.test>: Relay access denied``
(and an open one with 250): the path ends at the ``>`` outside the quotes, and the recipient is a relay attempt to
outside.test, not a path cut at the first ``>`` that names no domain and was never judged. An address that is a
quoted string alone (``"v@outside.test"``) goes where its dequoted content goes (Postfix's default
``resolve_dequoted_address = yes``: ``554 5.7.1 <v@outside.test>: Relay access denied``): to outside.test, and a
server's own ``"v@contoso.com"`` is its own, not a foreign ``contoso.com"`` with the closing quote in it."""

from __future__ import annotations

import pytest

from dissectors.smtp_syntax import address
from passive.analysis.domains import route
from tests.test_verdict_dialogues import EHLO, findings


@pytest.mark.parametrize(
    ("argument", "path"),
    [
        ('TO:<"v>x"@outside.test>', '"v>x"@outside.test'),
        ('TO:<"v>x"@outside.test> NOTIFY=NEVER', '"v>x"@outside.test'),
        ('TO:<"a\\">b"@outside.test>', '"a\\">b"@outside.test'),
        ("TO:<v@outside.test> NOTIFY=NEVER", "v@outside.test"),
        ('TO:<"unclosed@outside.test> NOTIFY=NEVER', '"unclosed@outside.test'),  # no closing quote: the first ">"
        ("FROM:<>", "<>"),
    ],
)
def test_a_path_ends_at_the_bracket_outside_its_quotes(argument: str, path: str) -> None:
    assert address(argument) == path


@pytest.mark.parametrize(
    ("path", "routed"),
    [
        ('"v>x"@outside.test', ("outside.test", None)),
        ('"v@x"@outside.test', ("x", "outside.test")),  # a quoted address at another domain, as before
        ('"v@outside.test"', ("outside.test", None)),
        ('"v@contoso.com"', ("contoso.com", None)),
        ('"v%outside.test"', ("outside.test", None)),
        ('"a@b"@contoso.com', ("b", "contoso.com")),
    ],
)
def test_the_domain_is_after_the_last_at_outside_the_quotes(path: str, routed: tuple[str, str | None]) -> None:
    assert route(path) == routed


def rcpt(recipient: str) -> str:
    return (
        EHLO + f"C: MAIL FROM:<a@spam.test>\nS: 250 2.1.0 Ok\nC: RCPT TO:<{recipient}>\nS: 250 2.1.5 Ok\n"
        "C: QUIT\nS: 221 2.0.0 Bye"
    )


def test_an_accepted_quoted_recipient_with_a_bracket_is_judged() -> None:
    relayed = [(r["verdict"], r["rcpt_to"]) for r in findings(rcpt('"v>x"@outside.test')) if r["type"] == "open-relay"]
    assert relayed == [("open-relay", '"v>x"@outside.test')]


def test_a_quoted_address_of_the_servers_own_domain_is_no_relaying() -> None:
    assert [r for r in findings(rcpt('"v@contoso.com"')) if r["type"] == "open-relay"] == []
