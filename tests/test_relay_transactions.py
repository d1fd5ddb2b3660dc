"""Open-relay and credential verdicts that follow the whole SMTP transaction and what the capture lost, read by the
CLI (a real subprocess) from captures built packet by packet:

- a recipient accepted, then the message refused at DATA, at the end of the data or at BDAT LAST: refused, not an
  open relay; accepted there: the open relay it is; a 4xx to the message: not judged, as a 4xx to the RCPT;
- pipelined RCPTs with mixed answers, then a refused message: every accepted one refused with it;
- the client's bytes lost before the transaction (a gap that may hide an AUTH): at most possible-relay, and an AUTH
  exchange a gap cut gets no verdict from the next reply (a 250 to MAIL is no AUTH success);
- internationalized domains: --local-domain and the RCPT in Unicode or ASCII (IDNA) form are one domain.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_capture import conversation_segments, ethernet_frames, pcap_bytes

ROOT = Path(__file__).resolve().parents[1]
LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
ENVIRONMENT = {**os.environ, "PYTHONPATH": str(ROOT)}
CLIENT, SERVER = ("203.0.113.9", 40000), ("192.0.2.25", 25)  # TEST-NET addresses: no private range
BANNER = "220 mx.contoso.com ESMTP Postfix"
# The CLI on a capture of one session takes well under this; a hang fails the test.
TIMEOUT = 120


def turns(script: str) -> list[tuple[bool, bytes]]:
    """``S: line`` / ``C: line`` lines as (from the server, the line with CRLF) turns; ``<CRLF>`` inside a line
    makes one segment of several lines (pipelining)."""
    result = []
    for line in script.strip().split("\n"):
        who, _, text = line.strip().partition(": ")
        result.append((who == "S", text.replace("<CRLF>", "\r\n").encode() + b"\r\n"))
    return result


def capture(path: Path, script: str, lost: frozenset[int] = frozenset()) -> Path:
    """A capture of one SMTP session; the segments of the turns numbered in ``lost`` are left out (a gap)."""
    steps = turns(script)
    segments = conversation_segments(steps, CLIENT, SERVER)
    kept = [s for n, s in enumerate(segments) if n - 3 not in lost]  # three handshake segments come first
    path.write_bytes(pcap_bytes(ethernet_frames(kept)))
    return path


def run_cli(*arguments: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    """``leakscope ARGUMENTS`` in a process of its own, as a user runs it (tables ``columns`` wide, if given); a
    failure fails the test with its stderr."""
    environment = ENVIRONMENT if columns is None else {**ENVIRONMENT, "COLUMNS": str(columns)}
    done = subprocess.run([*LEAKSCOPE, *arguments], capture_output=True, text=True, env=environment, timeout=TIMEOUT,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


OWN_DOMAIN = ("--local-domain", "contoso.com")
"""The server's domain as its user names it: without it, a foreign-looking recipient is at most possible-relay
(passive.analysis.relay_rules, rule 4); tests that judge servers on other domains give their own."""


def analyze(pcap: Path, *options: str) -> list[dict[str, Any]]:
    options = options if "--local-domain" in options else (*OWN_DOMAIN, *options)
    document: dict[str, Any] = json.loads(run_cli("analyze", "--format", "json", *options, str(pcap)).stdout)
    findings: list[dict[str, Any]] = document["findings"]
    return findings


def relays(findings: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    return sorted((f["verdict"], f["severity"], f["accepted"]) for f in findings if f["type"] == "open-relay")


def transaction(*ending: str, rcpts: tuple[str, ...] = ("victim@outside.test",)) -> str:
    lines = ["S: " + BANNER, "C: EHLO client.example", "S: 250-mx.contoso.com", "S: 250 PIPELINING"]
    lines += ["C: MAIL FROM:<someone@sender.example>", "S: 250 2.1.0 Ok"]
    for rcpt in rcpts:
        lines += [f"C: RCPT TO:<{rcpt}>", "S: 250 2.1.5 Ok"]
    return "\n".join([*lines, *ending, "C: QUIT", "S: 221 2.0.0 Bye"])


MESSAGE = ("C: DATA", "S: 354 End data with <CR><LF>.<CR><LF>", "C: Subject: hi", "C: ", "C: hello", "C: .")


def test_a_message_refused_after_its_recipient_was_accepted_relayed_nothing(tmp_path: Path) -> None:
    at_data = analyze(capture(tmp_path / "data.pcap", transaction("C: DATA", "S: 554 5.7.1 Relay access denied")))
    [refused] = [f for f in at_data if f["type"] == "open-relay"]
    assert (refused["verdict"], refused["severity"], refused["accepted"]) == ("refused", "info", False)
    assert refused["reply"] == "250 2.1.5 Ok"
    assert refused["message_refused"] == "at DATA: 554 5.7.1 Relay access denied"
    assert len(refused["evidence"]) == 3  # MAIL, RCPT and the DATA the refusal answered

    at_end = transaction(*MESSAGE, "S: 554 5.7.1 <victim@outside.test>: Recipient address rejected: no relaying")
    [refused] = [f for f in analyze(capture(tmp_path / "end.pcap", at_end)) if f["type"] == "open-relay"]
    assert (refused["verdict"], refused["accepted"]) == ("refused", False)
    assert refused["message_refused"].startswith("at the end of the data: 554 5.7.1 <victim@outside.test>")

    bdat = transaction("C: BDAT 5 LAST", "C: hello", "S: 554 5.7.1 Relaying denied")
    assert relays(analyze(capture(tmp_path / "bdat.pcap", bdat))) == [("refused", "info", False)]

    # A refusal for the message's content says nothing of a message the server would not refuse: not all clear,
    # not a high verdict either.
    content = transaction(*MESSAGE, "S: 554 5.7.1 Message rejected by the content filter")
    [possible] = [f for f in analyze(capture(tmp_path / "content.pcap", content)) if f["type"] == "open-relay"]
    assert (possible["verdict"], possible["severity"], possible["accepted"]) == ("possible-relay", "medium", True)
    assert possible["message_refused"] == "at the end of the data: 554 5.7.1 Message rejected by the content filter"
    assert "nothing was relayed here" in possible["rule"]

    # The words alone, where a content filter's reply holds them (an attachment's name, an RBL's listed relay), are
    # no refusal of relaying: possible-relay; Exchange's and Exim's own refusals are.
    for n, (reply, verdict) in enumerate(
        (
            ("554 5.7.0 Reject, id=04711-07 - BANNED: recipient-list.exe", "possible-relay"),
            ("550 5.7.1 Message rejected: sending relay 198.51.100.7 is listed at zen.spamhaus.org", "possible-relay"),
            ("550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain", "refused"),
            ("550 relay not permitted", "refused"),
        )
    ):
        ended = transaction(*MESSAGE, f"S: {reply}")
        [found] = [f for f in analyze(capture(tmp_path / f"words{n}.pcap", ended)) if f["type"] == "open-relay"]
        assert (found["verdict"], found["message_refused"]) == (verdict, f"at the end of the data: {reply}")

    queued = transaction(*MESSAGE, "S: 250 2.0.0 Ok: queued as 4FA2")
    [relayed] = [f for f in analyze(capture(tmp_path / "queued.pcap", queued)) if f["type"] == "open-relay"]
    assert (relayed["verdict"], relayed["severity"], relayed["accepted"]) == ("open-relay", "high", True)
    assert "message_refused" not in relayed
    # A backup MX takes mail for another's domain from anyone: the high verdict says it assumed the server is none.
    assert relayed["assumed"] == [
        "outside.test is not a domain the server receives mail for (a backup MX, a relay domain)"
    ]

    # A temporary refusal of the message relayed nothing yet, and says nothing final: not judged.
    deferred = transaction(*MESSAGE, "S: 451 4.7.1 Try again later")
    assert relays(analyze(capture(tmp_path / "deferred.pcap", deferred))) == []
    # The client gave up before DATA (a relay test that stops at RCPT): the RCPT's 250 is all there is.
    assert relays(analyze(capture(tmp_path / "rset.pcap", transaction("C: RSET", "S: 250 2.0.0 Ok")))) == [
        ("open-relay", "high", True)
    ]


def test_pipelined_recipients_with_mixed_answers_then_a_refused_message(tmp_path: Path) -> None:
    script = "\n".join(
        [
            "S: " + BANNER,
            "C: EHLO client.example",
            "S: 250-mx.contoso.com",
            "S: 250 PIPELINING",
            "C: MAIL FROM:<someone@sender.example><CRLF>RCPT TO:<a@outside.test><CRLF>"
            "RCPT TO:<b@elsewhere.test><CRLF>DATA",
            "S: 250 2.1.0 Ok<CRLF>250 2.1.5 Ok<CRLF>554 5.7.1 <b@elsewhere.test>: Relay access denied<CRLF>"
            "554 5.5.1 Error: no valid recipients",
            "C: MAIL FROM:<someone@sender.example><CRLF>RCPT TO:<c@outside.test><CRLF>DATA",
            "S: 250 2.1.0 Ok<CRLF>250 2.1.5 Ok<CRLF>354 End data with <CR><LF>.<CR><LF>",
            "C: hello<CRLF>.",
            "S: 250 2.0.0 Ok: queued as 9C1",
            "C: QUIT",
            "S: 221 2.0.0 Bye",
        ]
    )
    findings = analyze(capture(tmp_path / "pipelined.pcap", script))
    by_verdict = {f["verdict"]: f for f in findings if f["type"] == "open-relay"}
    assert sorted(by_verdict) == ["open-relay", "refused"]
    refused = {(d["rcpt_to"], d.get("message_refused")) for d in by_verdict["refused"]["details"]}
    assert refused == {
        ("b@elsewhere.test", None),
        ("a@outside.test", "at DATA: 554 5.5.1 Error: no valid recipients"),
    }
    assert [d["rcpt_to"] for d in by_verdict["open-relay"]["details"]] == ["c@outside.test"]


AUTHENTICATED = """
S: 220 mx.contoso.com ESMTP Postfix
C: EHLO client.example
S: 250-mx.contoso.com
S: 250 AUTH PLAIN LOGIN
C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
S: 235 2.7.0 Authentication successful
C: NOOP
S: 250 2.0.0 Ok
C: NOOP
S: 250 2.0.0 Ok
C: MAIL FROM:<alice@contoso.com>
S: 250 2.1.0 Ok
C: RCPT TO:<victim@outside.test>
S: 250 2.1.5 Ok
C: QUIT
S: 221 2.0.0 Bye
"""


def test_a_gap_that_may_hide_the_auth_makes_no_high_open_relay(tmp_path: Path) -> None:
    # Whole, the session authenticated: its relaying is no finding.
    assert relays(analyze(capture(tmp_path / "whole.pcap", AUTHENTICATED))) == []
    # The AUTH and its 235 lost: the same transaction may be an authenticated user's.
    findings = analyze(capture(tmp_path / "auth-lost.pcap", AUTHENTICATED, frozenset({4, 5})))
    [possible] = [f for f in findings if f["type"] == "open-relay"]
    assert (possible["verdict"], possible["severity"]) == ("possible-relay", "medium")
    assert "a gap" in possible["rule"] and "AUTH" in possible["rule"]
    # Only the 235 lost: the exchange has no verdict, not the "250 2.1.0 Ok" that answered MAIL, and the relay
    # verdict says why it may be an authenticated user's.
    findings = analyze(capture(tmp_path / "verdict-lost.pcap", AUTHENTICATED, frozenset({5})), "--show-secrets")
    [credentials] = [f for f in findings if f["type"] == "cleartext-credentials"]
    assert (credentials["user"], credentials["password"], credentials["outcome"]) == ("alice", "secret", None)
    [possible] = [f for f in findings if f["type"] == "open-relay"]
    assert possible["verdict"] == "possible-relay" and "its AUTH PLAIN was not seen" in possible["rule"]
    # A gap in the server's bytes alone hides no AUTH: the client's commands were all seen.
    unauthenticated = AUTHENTICATED.replace("C: AUTH PLAIN AGFsaWNlAHNlY3JldA==\n", "C: NOOP\n")
    findings = analyze(capture(tmp_path / "server-gap.pcap", unauthenticated, frozenset({5})))
    assert relays(findings) == [("open-relay", "high", True)]


def test_internationalized_local_domains_in_either_form(tmp_path: Path) -> None:
    script = transaction("C: RSET", "S: 250 2.0.0 Ok", rcpts=("info@xn--bcher-kva.de", "info@BÜCHER.de"))
    script = script.replace("mx.contoso.com", "mail01")  # a server that names no domain of its own
    pcap_path = capture(tmp_path / "idn.pcap", script)
    for local in ("bücher.de", "xn--bcher-kva.de", "BÜCHER.DE."):
        assert relays(analyze(pcap_path, "--local-domain", local)) == [], local
    assert relays(analyze(pcap_path, "--local-domain", "example.com")) == [("open-relay", "high", True)]


def test_a_foreign_domain_in_the_local_part_of_a_local_address_is_a_possible_relay(tmp_path: Path) -> None:
    """``victim%outside.test@contoso.com`` is a mailbox at the server's own domain to a server that does not apply
    the percent hack (Postfix with allow_percent_hack = no, Exchange): accepting it proves no relaying. The same
    trick at a foreign domain, and a source route whose last hop is foreign, stay high."""
    local_part = (
        "victim%outside.test@contoso.com",
        "outside.test!victim@contoso.com",
        '"victim@outside.test"@contoso.com',
    )
    pcap = capture(tmp_path / "tricks.pcap", transaction("C: RSET", "S: 250 2.0.0 Ok", rcpts=local_part))
    findings = [f for f in analyze(pcap) if f["type"] == "open-relay"]
    assert [(f["verdict"], f["severity"]) for f in findings] == [("possible-relay", "medium")]
    assert sorted(d["rcpt_to"] for d in findings[0]["details"]) == sorted(local_part)
    assert "at the server's own contoso.com" in findings[0]["rule"]

    foreign = ("victim%outside.test@elsewhere.test", "@contoso.com:victim@outside.test")
    pcap = capture(tmp_path / "foreign.pcap", transaction("C: RSET", "S: 250 2.0.0 Ok", rcpts=foreign))
    assert relays(analyze(pcap)) == [("open-relay", "high", True)]


def test_recipients_past_the_held_bound_are_judged_on_their_rcpt(tmp_path: Path) -> None:
    """A transaction of 40 accepted foreign recipients refused at DATA: the last 32 wait for it and are refused with
    it; the 8 oldest, past the bound a session holds, were judged as they came, on their RCPT's 250, and again once
    the server refused relaying at DATA: possible-relay (their RCPT 250 was not its last word)."""
    rcpts = tuple(f"user{n}@outside{n}.test" for n in range(40))
    script = transaction("C: DATA", "S: 554 5.7.1 Relay access denied", rcpts=rcpts)
    findings = {f["verdict"]: f for f in analyze(capture(tmp_path / "many.pcap", script)) if f["type"] == "open-relay"}
    assert sorted(d["rcpt_to"] for d in findings["possible-relay"]["details"]) == sorted(rcpts[:8])
    assert "open-relay" not in findings
    assert sorted(d["rcpt_to"] for d in findings["refused"]["details"]) == sorted(rcpts[8:])


def test_lmtp_delivers_to_mailboxes_and_relays_nothing(tmp_path: Path) -> None:
    """An MTA handing mail for a hosted domain to Dovecot's LMTP (LHLO, RFC 2033): final delivery, no relay."""
    script = transaction(*MESSAGE, "S: 250 2.0.0 <bob@customer.test> Saved", rcpts=("bob@customer.test",))
    lmtp = capture(tmp_path / "lmtp.pcap", script.replace("C: EHLO client.example", "C: LHLO mx.provider.example"))
    assert relays(analyze(lmtp)) == []
    smtp = capture(tmp_path / "smtp.pcap", script)  # the same transaction over SMTP relays
    assert relays(analyze(smtp)) == [("open-relay", "high", True)]


def test_an_lhlo_the_server_refused_hides_no_relaying(tmp_path: Path) -> None:
    """An SMTP server refuses LHLO (502) and takes the transaction that follows: it relays, and an LHLO sent first
    does not make it LMTP's final delivery."""
    script = transaction(*MESSAGE, "S: 250 2.0.0 Ok: queued")
    refused = script.replace("C: EHLO client.example", "C: LHLO x\nS: 502 5.5.2 Error: command not recognized")
    refused = refused.replace("S: 250-mx.contoso.com\nS: 250 PIPELINING\n", "")
    assert relays(analyze(capture(tmp_path / "lhlo-refused.pcap", refused))) == [("open-relay", "high", True)]


def test_a_server_named_in_unicode_receives_for_its_ascii_domain(tmp_path: Path) -> None:
    """A server greeting as mx.bücher.de (SMTPUTF8) receives mail for xn--bcher-kva.de: its own domain."""
    script = transaction("C: RSET", "S: 250 2.0.0 Ok", rcpts=("info@xn--bcher-kva.de",))
    pcap = capture(tmp_path / "unicode-name.pcap", script.replace("mx.contoso.com", "mx.bücher.de"))
    assert relays(analyze(pcap)) == []


@pytest.mark.parametrize("reply", ["250 2.1.5 Ok", "503 5.5.1 Error: need MAIL command"])
@pytest.mark.parametrize("refusal", ["550 5.7.1 Sender rejected", "451 4.3.0 Try again later"])
def test_recipients_after_a_refused_mail_are_not_judged(refusal: str, reply: str, tmp_path: Path) -> None:
    """A refused MAIL opens no transaction (RFC 5321 3.3): a 503 to the RCPT after it says nothing of relaying,
    and a lax server's 250 relays nothing without a MAIL it took. The next transaction is judged as any."""
    lines = ["S: " + BANNER, "C: EHLO client.example", "S: 250 mx.contoso.com", "C: MAIL FROM:<a@sender.example>",
             f"S: {refusal}", "C: RCPT TO:<victim@outside.test>", f"S: {reply}"]  # fmt: skip
    end = ["C: QUIT", "S: 221 Bye"]
    assert relays(analyze(capture(tmp_path / "refused-mail.pcap", "\n".join([*lines, *end])))) == []
    taken = [
        "C: MAIL FROM:<a@sender.example>",
        "S: 250 2.1.0 Ok",
        "C: RCPT TO:<victim@outside.test>",
        "S: 250 2.1.5 Ok",
    ]
    then = analyze(capture(tmp_path / "then-taken.pcap", "\n".join([*lines, *taken, *end])))
    assert relays(then) == [("open-relay", "high", True)]


@pytest.mark.parametrize(
    ("ending", "found"),
    [((*MESSAGE, "S: 250 2.0.0 Ok: queued"), [("open-relay", "high", True)]), (MESSAGE[:2], []),
     (("C: DATA", "S: 503 5.5.1 Error: need MAIL command"), [])],
    ids=["message-taken", "message-unanswered", "data-refused"],
)  # fmt: skip
def test_a_lax_server_that_takes_a_message_after_refusing_its_mail_relayed_it(
    ending: tuple[str, ...], found: list, tmp_path: Path
) -> None:
    """The RCPTs taken after a refused MAIL are judged only if the server takes a message after all: then it relayed
    what its refusal said it would not."""
    lines = ["S: " + BANNER, "C: EHLO client.example", "S: 250 mx.contoso.com", "C: MAIL FROM:<a@sender.example>",
             "S: 550 5.7.1 Sender rejected", "C: RCPT TO:<victim@outside.test>", "S: 250 Ok", *ending]  # fmt: skip
    assert relays(analyze(capture(tmp_path / "lax.pcap", "\n".join(lines)))) == found


def test_a_mail_refused_inside_an_open_transaction_leaves_it_open(tmp_path: Path) -> None:
    """A second MAIL refused with 503 ("sender already given", Exim; "nested MAIL command", Postfix) changes nothing:
    the RCPT after it belongs to the transaction still open, and is judged."""
    script = transaction("C: MAIL FROM:<b@sender.example>", "S: 503 sender already given",
                         "C: RCPT TO:<other@outside.test>", "S: 250 Accepted")  # fmt: skip
    [relay] = [f for f in analyze(capture(tmp_path / "nested.pcap", script)) if f["type"] == "open-relay"]
    assert (relay["severity"], relay["count"]) == ("high", 2)
    assert [d["rcpt_to"] for d in relay["details"]] == ["victim@outside.test", "other@outside.test"]


@pytest.mark.parametrize("greeting", ["EHLO", "HELO", "LHLO"])
def test_a_greeting_the_server_took_ends_the_transaction(greeting: str, tmp_path: Path) -> None:
    """A later EHLO or HELO the server took clears the transaction as RSET does (RFC 5321 4.1.4; LHLO alike): the
    recipient taken before it is judged on its RCPT reply, not on a 503 "need MAIL" to a DATA after it, and a 503 to
    an RCPT after it is no refusal of relaying. Before, the first was a possible-relay and the second "refused"."""
    again = [f"C: {greeting} client.example", "S: 250 mx.contoso.com"]
    need_mail = "S: 503 5.5.1 Error: need MAIL command"
    first = transaction(*again, "C: DATA", need_mail)
    assert relays(analyze(capture(tmp_path / "data-after.pcap", first))) == [("open-relay", "high", True)]
    lines = ["S: " + BANNER, "C: EHLO client.example", "S: 250 mx.contoso.com", "C: MAIL FROM:<a@sender.example>",
             "S: 250 2.1.0 Ok", *again, "C: RCPT TO:<victim@outside.test>", need_mail]  # fmt: skip
    lines += ["C: QUIT", "S: 221 Bye"]
    assert relays(analyze(capture(tmp_path / "rcpt-after.pcap", "\n".join(lines)))) == []
