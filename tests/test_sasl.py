"""SASL exchanges as SMTP, POP3 and IMAP carry them: NTLM blobs, clear-text credentials, outcomes."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors import ntlmssp, sasl
from dissectors.sasl import (
    AuthTracker,
    SaslAnomaly,
    SaslBlob,
    SaslCancelled,
    SaslCredentials,
    SaslOutcome,
    SaslStarted,
)
from tests.corpus import require_corpus

C, S = "C", "S"


def run(protocol: str, transcript: list[tuple[str, str]]) -> list[Any]:
    tracker = AuthTracker(protocol)
    events: list[Any] = []
    for direction, line in transcript:
        events.extend(tracker.client_line(line) if direction == C else tracker.server_line(line))
    return events


def of_type(events: list[Any], kind: type) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


NEGOTIATE = ntlmssp.build_negotiate()


# ---- Microsoft's own transcripts ([MS-SMTPNTLM] 4, [MS-POP3] 4) -------------------------------------------------


def _ms_messages(name: str) -> list[str]:
    document = json.loads(require_corpus("vectors", name).read_text())
    return [message["base64"] for message in document["messages"]]


def test_ms_smtpntlm_success_and_failure() -> None:
    t1, t2, t3, f1, f2, f3 = _ms_messages("ms-smtpntlm_4.json")
    transcript = [
        (C, "AUTH NTLM"),
        (S, "334 ntlm supported"),
        (C, t1),
        (S, f"334 {t2}"),
        (C, t3),
        (S, "235 2.7.0 Authentication successful"),
        (C, "AUTH NTLM"),
        (S, "334 ntlm supported"),
        (C, f1),
        (S, f"334 {f2}"),
        (C, f3),
        (S, "535 5.7.3 Authentication unsuccessful"),
    ]
    events = run("smtp", transcript)
    blobs = of_type(events, SaslBlob)
    assert [type(b.ntlm).__name__ for b in blobs] == ["NegotiateMessage", "ChallengeMessage", "AuthenticateMessage"] * 2
    assert [b.direction for b in blobs] == ["client", "server", "client"] * 2
    challenge = blobs[1].ntlm
    assert isinstance(challenge, ntlmssp.ChallengeMessage)
    assert (challenge.netbios_computer, challenge.dns_computer, str(challenge.version)) == (
        "EXCH-CLI-66",
        "exch-cli-66",
        "5.2.3790",
    )
    authenticate = blobs[2].ntlm
    assert isinstance(authenticate, ntlmssp.AuthenticateMessage)
    assert (authenticate.user, authenticate.domain, authenticate.workstation) == ("test", "exch-cli-66", "EXCH-CLI-66")
    assert [(o.mechanism, o.success) for o in of_type(events, SaslOutcome)] == [("NTLM", True), ("NTLM", False)]
    assert not of_type(events, SaslAnomaly)


def test_ms_pop3_plus_ok_means_ntlm_supported() -> None:
    t1, t2, t3, f2, f3 = _ms_messages("ms-pop3_4.json")
    transcript = [
        (C, "AUTH NTLM"),
        (S, "+OK"),
        (C, t1),
        (S, f"+ {t2}"),
        (C, t3),
        (S, "+OK User successfully logged on"),
        (C, "AUTH NTLM"),
        (S, "+OK"),
        (C, t1),
        (S, f"+ {f2}"),
        (C, f3),
        (S, "-ERR Command not valid"),
    ]
    events = run("pop3", transcript)
    assert [(o.success, o.text) for o in of_type(events, SaslOutcome)] == [
        (True, "+OK User successfully logged on"),
        (False, "-ERR Command not valid"),
    ]
    challenges = [b.ntlm for b in of_type(events, SaslBlob) if isinstance(b.ntlm, ntlmssp.ChallengeMessage)]
    assert [c.netbios_computer for c in challenges] == ["TESTSERVER", "TESTSERVER"]
    users = [b.ntlm.user for b in of_type(events, SaslBlob) if isinstance(b.ntlm, ntlmssp.AuthenticateMessage)]
    assert users == ["user", "user"]


# ---- carriers: initial responses, continuations, tags -----------------------------------------------------------


def test_smtp_ntlm_with_initial_response() -> None:
    events = run("smtp", [(C, f"AUTH NTLM {b64(NEGOTIATE)}"), (S, "334 " + b64(b"NTLMSSP\x00\x02\x00\x00\x00"))])
    started = of_type(events, SaslStarted)
    assert started and started[0].initial_response
    blobs = of_type(events, SaslBlob)
    assert isinstance(blobs[0].ntlm, ntlmssp.NegotiateMessage)
    assert isinstance(blobs[1].ntlm, ntlmssp.ChallengeMessage) and blobs[1].ntlm.anomalies


@pytest.mark.parametrize("sasl_ir", [True, False])
def test_imap_authenticate_ntlm(sasl_ir: bool) -> None:
    start = f"a001 AUTHENTICATE NTLM {b64(NEGOTIATE)}" if sasl_ir else "a001 authenticate ntlm"
    transcript = [(C, start)]
    if not sasl_ir:
        transcript += [(S, "+"), (C, b64(NEGOTIATE))]
    transcript += [
        (S, "+ " + b64(b"NTLMSSP\x00\x02\x00\x00\x00" + b"\x00" * 40)),
        (S, "* CAPABILITY IMAP4rev1"),
        (C, "*"),
        (S, "a001 BAD authentication cancelled"),
    ]
    events = run("imap", transcript)
    assert of_type(events, SaslStarted)[0].tag == "a001"
    assert len([b for b in of_type(events, SaslBlob) if b.ntlm is not None]) == 2
    assert of_type(events, SaslCancelled)
    assert [o.success for o in of_type(events, SaslOutcome)] == [False]


def test_imap_outcome_needs_the_exchange_tag() -> None:
    events = run(
        "imap",
        [(C, "x1 AUTHENTICATE PLAIN"), (S, "x0 OK unrelated"), (S, "+"), (C, b64("\0u\0p")), (S, "x1 OK logged in")],
    )
    assert [(o.success, o.text) for o in of_type(events, SaslOutcome)] == [(True, "x1 OK logged in")]


def test_smtp_cancel() -> None:
    events = run("smtp", [(C, "AUTH NTLM"), (S, "334 "), (C, "*"), (S, "501 5.7.0 Authentication aborted")])
    assert of_type(events, SaslCancelled)
    assert [o.success for o in of_type(events, SaslOutcome)] == [False]


# ---- clear-text mechanisms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "transcript"),
    [
        ("smtp", [(C, "AUTH PLAIN " + b64("\0alice\0s3cret")), (S, "235 2.7.0 Authentication successful")]),
        ("smtp", [(C, "auth plain"), (S, "334 "), (C, b64("\0alice\0s3cret")), (S, "235 ok")]),
        ("pop3", [(C, "AUTH PLAIN"), (S, "+ "), (C, b64("\0alice\0s3cret")), (S, "+OK Logged in.")]),
        ("imap", [(C, "t1 AUTHENTICATE PLAIN " + b64("\0alice\0s3cret")), (S, "t1 OK Logged in")]),
    ],
)
def test_plain(protocol: str, transcript: list[tuple[str, str]]) -> None:
    events = run(protocol, transcript)
    credentials = of_type(events, SaslCredentials)
    assert [(c.mechanism, c.user, c.password, c.authzid) for c in credentials] == [("PLAIN", "alice", "s3cret", None)]
    assert [o.success for o in of_type(events, SaslOutcome)] == [True]


def test_plain_with_authzid_and_failure() -> None:
    events = run("smtp", [(C, "AUTH PLAIN " + b64("admin\0alice\0wrong")), (S, "535 5.7.8 Error")])
    credentials = of_type(events, SaslCredentials)[0]
    assert (credentials.authzid, credentials.user, credentials.password) == ("admin", "alice", "wrong")
    assert of_type(events, SaslOutcome)[0].success is False


@pytest.mark.parametrize("initial_response", [False, True])
def test_login(initial_response: bool) -> None:
    if initial_response:
        transcript = [(C, "AUTH LOGIN " + b64("bob"))]
    else:
        transcript = [(C, "AUTH LOGIN"), (S, "334 VXNlcm5hbWU6"), (C, b64("bob"))]
    transcript += [(S, "334 UGFzc3dvcmQ6"), (C, b64("hunter2")), (S, "235 2.7.0 Authentication successful")]
    credentials = of_type(run("smtp", transcript), SaslCredentials)
    assert [(c.mechanism, c.user, c.password) for c in credentials] == [("LOGIN", "bob", "hunter2")]


def test_cram_md5_and_xoauth2_reveal_user_and_secret_kind() -> None:
    cram = run(
        "imap",
        [
            (C, "a AUTHENTICATE CRAM-MD5"),
            (S, "+ " + b64("<1896.697170952@postoffice.example.net>")),
            (C, b64("tim b913a602c7eda7a495b4e6e7334d3890")),
            (S, "a OK"),
        ],
    )
    credentials = of_type(cram, SaslCredentials)[0]
    assert (credentials.user, credentials.secret_kind) == ("tim", "cram-md5-digest")
    oauth = run(
        "smtp",
        [(C, "AUTH XOAUTH2 " + b64("user=someone@example.com\x01auth=Bearer ya29.token\x01\x01")), (S, "235 Accepted")],
    )
    credentials = of_type(oauth, SaslCredentials)[0]
    assert (credentials.user, credentials.password, credentials.secret_kind) == (
        "someone@example.com",
        "ya29.token",
        "oauth-bearer-token",
    )


# ---- tolerance --------------------------------------------------------------------------------------------------


def test_padding_errors_are_repaired_and_reported() -> None:
    events = run("smtp", [(C, "  AUTH   PLAIN   " + b64("\0alice\0pw1").rstrip("=") + "  ")])
    blob = of_type(events, SaslBlob)[0]
    assert "bad_base64_padding" in blob.anomalies
    assert of_type(events, SaslCredentials)[0].password == "pw1"


def test_garbage_blob_is_an_anomaly_not_a_crash() -> None:
    events = run("smtp", [(C, "AUTH NTLM"), (S, "334 "), (C, "!!not base64!!"), (S, "334 %%%%")])
    blobs = of_type(events, SaslBlob)
    assert [b.data for b in blobs] == [None, None]
    assert all("bad_base64" in b.anomalies for b in blobs)


def test_non_ntlm_blob_in_ntlm_exchange() -> None:
    events = run("smtp", [(C, "AUTH NTLM " + b64("hello"))])
    assert "not_ntlmssp" in of_type(events, SaslBlob)[0].anomalies


def test_plain_with_wrong_separators() -> None:
    events = run("smtp", [(C, "AUTH PLAIN " + b64("onlyuser"))])
    assert [a.code for a in of_type(events, SaslAnomaly)] == ["bad_plain_message"]


def test_endless_exchange_is_abandoned() -> None:
    transcript = [(C, "AUTH NTLM")]
    for _ in range(sasl.MAX_STEPS + 5):
        transcript += [(S, "334 " + b64(b"x")), (C, b64(b"y"))]
    events = run("smtp", transcript)
    assert [a.code for a in of_type(events, SaslAnomaly)] == ["sasl_too_many_steps"]


def test_overlong_blob_is_not_decoded() -> None:
    result = sasl.decode_base64("A" * (sasl.MAX_BLOB_TEXT + 4))
    assert result.data is None and result.anomalies == ("blob_too_long",)


@settings(max_examples=1500, deadline=None)
@given(
    protocol=st.sampled_from(["smtp", "pop3", "imap"]),
    lines=st.lists(
        st.tuples(
            st.sampled_from([C, S]),
            st.one_of(
                st.text(max_size=80),
                st.sampled_from(
                    [
                        "AUTH NTLM",
                        "AUTH PLAIN",
                        "AUTH LOGIN",
                        "a AUTHENTICATE NTLM",
                        "334 ",
                        "+ ",
                        "+OK",
                        "*",
                        "a OK",
                        "235 ok",
                        "-ERR",
                        b64(NEGOTIATE),
                        "334 " + b64(b"NTLMSSP\x00\x02"),
                    ]
                ),
            ),
        ),
        max_size=30,
    ),
)
def test_random_dialogues_never_raise(protocol: str, lines: list[tuple[str, str]]) -> None:
    run(protocol, lines)
