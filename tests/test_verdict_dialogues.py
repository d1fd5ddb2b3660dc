"""Verdicts a security team acts on, against dialogues real servers and clients produce: each test is a dialogue that
once gave a wrong ``open-relay`` or ``cleartext-credentials`` verdict (or none where one was due), read from a capture
built packet by packet, as a run reads it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from dissectors import events as ev
from passive.analysis.domains import normalize_domain
from passive.analysis.pipeline import Analysis, AnalysisOptions, analyze_captures
from passive.results.records import finding_record
from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes

CLIENT, SERVER_IP = ("203.0.113.9", 40000), "192.0.2.25"  # TEST-NET addresses: no private range
EHLO = """S: 220 mx.contoso.com ESMTP Postfix
C: EHLO client.example
S: 250-mx.contoso.com
S: 250-PIPELINING
S: 250-STARTTLS
S: 250 AUTH PLAIN LOGIN
"""


def turns(script: str) -> list[tuple[bool, bytes]]:
    """``S: line`` / ``C: line`` as (from the server, bytes) turns, one segment each; ``<CRLF>`` inside a line makes
    one segment of several lines (pipelining)."""
    result = []
    for line in script.strip().split("\n"):
        who, _, text = line.partition(": ")
        result.append((who == "S", text.replace("<CRLF>", "\r\n").encode() + b"\r\n"))
    return result


def findings(script: str | list[tuple[bool, bytes]], port: int = 25, **options: Any) -> list[dict[str, Any]]:
    """The finding records of one session (the dialogue's turns, or ``script`` already as turns) in a capture."""
    steps = turns(script) if isinstance(script, str) else script
    segments = conversation_segments(steps, CLIENT, (SERVER_IP, port))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "session.pcap"
        path.write_bytes(pcap_bytes(ethernet_frames(segments)))
        # The server's domain as its user names it: without it a foreign-looking recipient is at most possible-relay.
        options.setdefault("local_domains", frozenset({"contoso.com"}))
        results = analyze_captures([str(path)], AnalysisOptions(**options))
    return [finding_record(finding, show_secrets=True) for finding in results.findings]


def relays(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((r["verdict"], r["severity"], r["rcpt_to"]) for r in records if r["type"] == "open-relay")


def credentials(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "cleartext-credentials"]


# -- open-relay --------------------------------------------------------------------------------------------------


def test_a_pipelined_rset_after_the_message_does_not_judge_its_recipients_before_the_verdict() -> None:
    """RFC 2920 3.1: the RSET and MAIL of the next transaction may share a group with the end of the message. The
    server answers the message first (here: refused for relaying), then the RSET: the recipients it held are refused
    with the message, not judged on their RCPT's 250 when the client's RSET went by."""
    script = (
        EHLO
        + """C: MAIL FROM:<a@spam.test><CRLF>RCPT TO:<v@outside.test><CRLF>DATA
S: 250 2.1.0 Ok<CRLF>250 2.1.5 Ok<CRLF>354 End data with <CR><LF>.<CR><LF>
C: Subject: hi<CRLF><CRLF>hello<CRLF>.<CRLF>RSET<CRLF>MAIL FROM:<a@spam.test><CRLF>RCPT TO:<u@contoso.com><CRLF>DATA
S: 554 5.7.1 <v@outside.test>: Relay access denied<CRLF>250 2.0.0 Ok<CRLF>250 2.1.0 Ok<CRLF>250 2.1.5 Ok<CRLF>354 go
C: hi<CRLF>.<CRLF>QUIT
S: 250 2.0.0 Ok: queued as 4FA2<CRLF>221 2.0.0 Bye"""
    )
    assert relays(findings(script)) == [("refused", "info", "v@outside.test")]
    # A RSET the server answers ends the transaction: its accepted recipient is judged on its RCPT, as before.
    reset = (
        EHLO
        + """C: MAIL FROM:<a@spam.test>
S: 250 2.1.0 Ok
C: RCPT TO:<v@outside.test>
S: 250 2.1.5 Ok
C: RSET
S: 250 2.0.0 Ok
C: QUIT
S: 221 2.0.0 Bye"""
    )
    assert relays(findings(reset)) == [("open-relay", "high", "v@outside.test")]


def test_a_recipient_whose_domain_is_foreign_is_judged_whatever_its_local_part_names() -> None:
    """RFC 5321 4.1.2: the domain is what follows the last "@"; the server routes on it. A local part naming the
    server's own domain (a percent hack, a bang path, a quoted or unquoted "@") does not make mail for outside.test
    the server's own: accepted from outside, it is relayed."""
    for rcpt in ("v%contoso.com@outside.test", "contoso.com!v@outside.test", '"v@contoso.com"@outside.test'):
        script = (
            EHLO
            + f"""C: MAIL FROM:<a@spam.test>
S: 250 2.1.0 Ok
C: RCPT TO:<{rcpt}>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye"""
        )
        [relay] = [r for r in findings(script) if r["type"] == "open-relay"]
        assert (relay["verdict"], relay["severity"], relay["rcpt_to"]) == ("open-relay", "high", rcpt)
        assert "outside.test is not among the server's local domains" in relay["rule"]


def test_an_internationalized_domain_keeps_its_sharp_s() -> None:
    """IDNA 2008 (RFC 5891, what registries and SMTPUTF8 use) keeps ß, ς and the joiners: straße.de is
    xn--strae-oqa.de, a domain of its own, not strasse.de (IDNA 2003's mapping). A server named mx.xn--strae-oqa.de
    receives mail for straße.de; mail for strasse.de is another's."""
    assert normalize_domain("Straße.DE.") == "xn--strae-oqa.de"
    assert normalize_domain("ς.gr") == "xn--3xa.gr"  # final sigma kept
    assert normalize_domain("ΌΣΟΣ.gr") == "xn--0xahb7a.gr"  # a capital sigma is σ, wherever it stands
    assert normalize_domain("bücher.de") == "xn--bcher-kva.de"  # no deviation: as before
    banner = EHLO.replace("mx.contoso.com", "mx.xn--strae-oqa.de")
    for rcpt, expected in (("anna@straße.de", []), ("anna@strasse.de", [("open-relay", "high", "anna@strasse.de")])):
        script = (
            banner
            + f"""C: MAIL FROM:<a@spam.test> SMTPUTF8
S: 250 2.1.0 Ok
C: RCPT TO:<{rcpt}>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye"""
        )
        assert relays(findings(script, local_domains=frozenset({"xn--strae-oqa.de"}))) == expected, rcpt


def test_partial_state_dropped_mid_auth_leaves_the_transaction_unsure() -> None:
    """The run's dissector budget made the session drop its partial state in the middle of the AUTH line: the 235
    that followed answers nothing the dissector kept, and the transaction may well be an authenticated user's. It is
    at most possible-relay, as after a gap in the client's bytes."""
    analysis = Analysis()
    flow = analysis.flow(SERVER_IP, 25, CLIENT[0], CLIENT[1], partial=False)
    client, server = ev.Side.CLIENT, ev.Side.SERVER
    before = [(server, b"220 mx.contoso.com ESMTP\r\n"), (client, b"EHLO c\r\n"),
              (server, b"250-mx.contoso.com\r\n250 AUTH PLAIN\r\n"), (client, b"AUTH PLAIN AGFsaWNl")]  # fmt: skip
    after = [(client, b"AHNlY3JldA==\r\n"), (server, b"235 2.7.0 Authentication successful\r\n"),
             (client, b"MAIL FROM:<alice@contoso.com>\r\n"), (server, b"250 2.1.0 Ok\r\n"),
             (client, b"RCPT TO:<v@outside.test>\r\n"), (server, b"250 2.1.5 Ok\r\n")]  # fmt: skip
    for frame, (side, data) in enumerate(before, start=1):
        flow.data(side, data, frame, 1.8e9 + frame)
    flow.shed()
    for frame, (side, data) in enumerate(after, start=10):
        flow.data(side, data, frame, 1.8e9 + frame)
    flow.close()
    [relay] = [finding_record(f) for f in analysis.findings if f.type == "open-relay"]
    assert (relay["verdict"], relay["severity"]) == ("possible-relay", "medium")
    assert "dissector budget" in relay["rule"]


# -- cleartext-credentials --------------------------------------------------------------------------------------


def test_credentials_pipelined_before_tls_began_say_they_crossed_in_clear() -> None:
    """A client that pipelines its LOGIN (or AUTH) behind STARTTLS sends it in clear text before the handshake (the
    server, if sound, discards it): the secret crossed readable. The finding is high and says ``tls`` false, as
    every clear-text credential does, though the session went on in TLS before a verdict could be seen."""
    hello, answer = b"\x16\x03\x01\x00\x05hello", b"\x16\x03\x03\x00\x05world"
    imap = [(True, b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] ready\r\n"),
            (False, b"a1 STARTTLS\r\na2 LOGIN alice secret\r\n"), (True, b"a1 OK Begin TLS now\r\n"),
            (False, hello), (True, answer)]  # fmt: skip
    smtp = [(True, b"220 mx.contoso.com ESMTP\r\n"), (False, b"EHLO c\r\n"),
            (True, b"250-mx.contoso.com\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n"),
            (False, b"STARTTLS\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), (True, b"220 2.0.0 Ready to start TLS\r\n"),
            (False, hello), (True, answer)]  # fmt: skip
    for port, script in ((143, imap), (25, smtp)):
        [found] = credentials(findings(script, port))
        assert (found["severity"], found["user"], found["password"], found["outcome"]) == (
            "high",
            "alice",
            "secret",
            None,
        )
        assert found["tls"] is False, port


def test_a_login_without_a_password_is_no_credential() -> None:
    """``a1 LOGIN alice`` (RFC 9051 6.2.3 wants two arguments: the server answers BAD) carries a user name and no
    secret: nothing a high clear-text credential says is known to anyone on the path."""
    script = """S: * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Dovecot ready.
C: a1 LOGIN alice
S: a1 BAD Error in IMAP command LOGIN: Missing arguments
C: a2 LOGOUT
S: * BYE Logging out
S: a2 OK Logout completed."""
    assert credentials(findings(script, 143)) == []
