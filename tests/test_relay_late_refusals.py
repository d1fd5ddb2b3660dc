"""A server seen refusing a message for relaying after it had accepted the message's recipients (at DATA, or at the
end of the data: a server that checks relaying there, a milter's) gives its RCPT 250 as no final word on a recipient.
Its other accepted foreign recipients whose transaction ended before that stage (the client sent RSET or a new MAIL,
quit, or the capture ended first: a relay test that stops at RCPT) are ``possible-relay``, not a high ``open-relay``,
whichever came first in the capture; one whose message the server took stays ``open-relay``."""

from __future__ import annotations

import pytest

from tests.test_verdict_dialogues import EHLO, findings

TRANSACTION = "C: MAIL FROM:<a@spam.test>\nS: 250 2.1.0 Ok\nC: RCPT TO:<{rcpt}>\nS: 250 2.1.5 Ok\n"
REFUSED_AT_DATA = TRANSACTION + "C: DATA\nS: 554 5.7.1 <{rcpt}>: Relay access denied\n"
MESSAGE = "C: DATA\nS: 354 End data with <CR><LF>.<CR><LF>\nC: Subject: hi<CRLF><CRLF>hello<CRLF>.\n"
REFUSED_AT_END = TRANSACTION + MESSAGE + "S: 550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain\n"
QUEUED = TRANSACTION + MESSAGE + "S: 250 2.0.0 Ok: queued as 4FA2\n"
RESET = TRANSACTION + "C: RSET\nS: 250 2.0.0 Ok\n"
UNANSWERED = TRANSACTION + MESSAGE  # the capture ends before the server's verdict on the message


def verdicts(*parts: str) -> list[tuple[str, str, str]]:
    """The (recipient, verdict, severity) of every attempt of one session made of ``parts``."""
    script = EHLO + "".join(parts).rstrip("\n")
    return sorted(
        (detail["rcpt_to"], record["verdict"], record["severity"])
        for record in findings(script)
        if record["type"] == "open-relay"
        for detail in record["details"]
    )


@pytest.mark.parametrize("refusal", [REFUSED_AT_DATA, REFUSED_AT_END], ids=["at-data", "at-end"])
@pytest.mark.parametrize(
    ("first", "second"),
    [(RESET, None), (None, RESET), (None, UNANSWERED)],  # None: the refused transaction; unanswered: the capture ends
    ids=["reset-before", "reset-after", "unanswered-after"],
)
def test_a_recipient_whose_transaction_ended_before_the_stage_its_server_refuses_at_is_possible_relay(
    refusal: str, first: str | None, second: str | None
) -> None:
    """Before or after the refusal in the capture: the server's findings are rebuilt once it is seen. A message the
    server took DATA for passed its checks at DATA: a server that refuses there judged it."""
    parts = [(first or refusal).format(rcpt="v@outside.test"), (second or refusal).format(rcpt="w@outside.test")]
    untried, refused = ("v@outside.test", "w@outside.test") if first else ("w@outside.test", "v@outside.test")
    verdict = (
        ("open-relay", "high") if (second, refusal) == (UNANSWERED, REFUSED_AT_DATA) else ("possible-relay", "medium")
    )
    assert verdicts(*parts) == sorted([(untried, *verdict), (refused, "refused", "info")])


def test_a_message_the_server_took_is_relayed_whatever_it_refused_later() -> None:
    late = REFUSED_AT_DATA.format(rcpt="w@outside.test")
    assert verdicts(QUEUED.format(rcpt="v@outside.test"), late) == [
        ("v@outside.test", "open-relay", "high"),
        ("w@outside.test", "refused", "info"),
    ]


def test_without_a_late_refusal_the_rcpt_reply_decides() -> None:
    """A server never seen refusing after RCPT: a recipient it accepted is judged on that reply, as a relay test that
    stops at RCPT judges it."""
    assert verdicts(RESET.format(rcpt="v@outside.test")) == [("v@outside.test", "open-relay", "high")]
    assert verdicts(UNANSWERED.format(rcpt="v@outside.test")) == [("v@outside.test", "open-relay", "high")]


# A refusal whose relaying words are the sender's, quoted back: Amavis names the banned attachment, Postfix the
# sender it refused (a quoted local part holds blanks and ">").
SENDER_WORDS = [
    "554 5.7.0 Reject, id=12345-01 - BANNED: P=p002,L=1/2,M=application/octet-stream,T=exe,N=Relay access denied.exe",
    '554 5.7.1 <"x>: Relay access denied"@spam.test>: Sender address rejected: Access denied',
]


@pytest.mark.parametrize("reply", SENDER_WORDS, ids=["attachment-name", "quoted-sender"])
def test_relaying_words_the_sender_wrote_are_no_late_refusal(reply: str) -> None:
    """A sender who has the server quote its words back ("Relay access denied" as an attachment's name) neither makes
    its own message a refusal of relaying nor the open relay's RCPT 250 no last word for another client's test."""
    refused_for_content = TRANSACTION.format(rcpt="w@outside.test") + MESSAGE + f"S: {reply}\n"
    assert verdicts(RESET.format(rcpt="v@outside.test"), refused_for_content) == [
        ("v@outside.test", "open-relay", "high"),
        ("w@outside.test", "possible-relay", "medium"),
    ]


@pytest.mark.parametrize(
    "reply",
    [
        "554 5.7.1 <w@outside.test>: Relay access denied",
        "550 5.7.1 <w@outside.test>... Relaying denied",
        "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        "554 5.7.1 <w@outside.test>: Recipient address rejected: no relaying",
    ],
)
def test_a_servers_own_relaying_words_are_a_late_refusal(reply: str) -> None:
    refused = TRANSACTION.format(rcpt="w@outside.test") + MESSAGE + f"S: {reply}\n"
    assert verdicts(RESET.format(rcpt="v@outside.test"), refused) == [
        ("v@outside.test", "possible-relay", "medium"),
        ("w@outside.test", "refused", "info"),
    ]


BDAT_REFUSED = TRANSACTION + "C: BDAT 7<CRLF>hello\nS: 554 5.7.1 <{rcpt}>: Relay access denied\n"
BDAT_TAKEN = TRANSACTION + "C: BDAT 7<CRLF>hello\nS: 250 2.0.0 7 bytes received\n"  # then the capture ends


@pytest.mark.parametrize(
    ("other", "refusal"),
    [(UNANSWERED, BDAT_REFUSED), (BDAT_TAKEN, REFUSED_AT_DATA), (BDAT_TAKEN, BDAT_REFUSED)],
    ids=["bdat-refused", "bdat-taken", "both-bdat"],
)
def test_a_first_bdat_chunk_is_the_data_stage(other: str, refusal: str) -> None:
    """RFC 3030: BDAT takes DATA's place, and Postfix applies its DATA restrictions at the first chunk. A first chunk
    refused is a refusal at DATA, not at the end of the data; one taken passed that stage, as a 354 does: the other
    recipient, whose message got that far, stays a high open relay."""
    parts = [refusal.format(rcpt="w@outside.test"), other.format(rcpt="v@outside.test")]  # the other ends the capture
    assert verdicts(*parts) == [("v@outside.test", "open-relay", "high"), ("w@outside.test", "refused", "info")]
