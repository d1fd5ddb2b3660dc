"""HTTP as an NTLM carrier: the GSS-API/SPNEGO reader, the HTTP session dissector (keep-alive, pipelining, framing,
hostile input), the findings it makes, and every HTTP NTLM message of the shared corpus against tshark's decoding."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dissectors import events as ev
from dissectors import gssapi, ntlmssp
from dissectors.http import HttpSession, split_challenges
from dissectors.identify import identify
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.capture import analyze_file
from passive.results.records import finding_record
from tests.corpus import require_corpus

NEGOTIATE = ntlmssp.build_negotiate()
WINDOWS_NAMES = {
    "netbios_domain": "CONTOSO",
    "netbios_computer": "EXCH19",
    "dns_domain": "corp.contoso.com",
    "dns_computer": "exch19.corp.contoso.com",
    "dns_tree": "contoso.com",
}


def windows_challenge() -> bytes:
    info = [*WINDOWS_NAMES.items(), ("timestamp", datetime(2024, 5, 1, tzinfo=UTC))]
    return ntlmssp.build_challenge(b"\x01" * 8, "CONTOSO", info, version=ntlmssp.Version(10, 0, 17763))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def authenticate() -> bytes:
    nt = b"\x11" * 16 + ntlmssp.ntlmv2_client_blob(datetime(2024, 5, 1, tzinfo=UTC), b"\x22" * 8)
    return ntlmssp.build_authenticate(nt_response=nt, lm_response=b"\0" * 24, user="jdoe", domain="CONTOSO",
                                      workstation="WS01")  # fmt: skip


def exchange_conversation(scheme: str = "NTLM", wrap: bool = False) -> list[tuple[ev.Side, bytes]]:
    """An Outlook-like EWS exchange on one keep-alive connection: NEGOTIATE, CHALLENGE, AUTHENTICATE, 200."""
    negotiate, challenge = NEGOTIATE, windows_challenge()
    if wrap:
        negotiate, challenge = gssapi.build_neg_token_init(negotiate), gssapi.build_neg_token_resp(challenge)
    body = b'<?xml version="1.0"?>\r\nWWW-Authenticate: NTLM TlRMTVNTUAACAAAAAAAA\r\n'  # looks like a header: is body
    return [
        (ev.Side.CLIENT, f"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: mail.contoso.com\r\nAuthorization: {scheme} "
                         f"{b64(negotiate)}\r\nContent-Length: 0\r\n\r\n".encode()),
        (ev.Side.SERVER, f"HTTP/1.1 401 Unauthorized\r\nServer: Microsoft-IIS/10.0\r\nWWW-Authenticate: {scheme} "
                         f"{b64(challenge)}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body),
        (ev.Side.CLIENT, f"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: mail.contoso.com\r\nAuthorization: {scheme} "
                         f"{b64(authenticate())}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                         + b"1b\r\nAuthorization: Basic eDp5\r\n\r\n0\r\n\r\n"),
        (ev.Side.SERVER, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ]  # fmt: skip


def feed(conversation: list[tuple[ev.Side, bytes]], step: int | None = None, partial: bool = False) -> list[ev.Event]:
    session = HttpSession(partial=partial)
    events: list[ev.Event] = []
    for frame, (side, data) in enumerate(conversation, 1):
        pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
        for piece in pieces:
            events.extend(session.receive(side, piece, frame, 1_700_000_000.0 + frame))
    return events


def analysis_of(conversation: list[tuple[ev.Side, bytes]], port: int = 80) -> list[dict[str, Any]]:
    analysis = Analysis(AnalysisOptions())
    flow = analysis.flow("192.0.2.5", port, "198.51.100.7", 50000, partial=False)
    for frame, (side, data) in enumerate(conversation, 1):
        flow.data(side, data, frame, 1_700_000_000.0 + frame)
    flow.close()
    return [finding_record(f, show_secrets=True) for f in analysis.findings]


# -- GSS-API / SPNEGO ------------------------------------------------------------------------------------------------


def test_spnego_tokens_from_pyspnego_unwrap_to_their_ntlm_message() -> None:
    spnego = pytest.importorskip("spnego")
    client = spnego.client("jdoe", "Secret1!", hostname="mail.contoso.com", service="HTTP", protocol="negotiate")
    token = client.step()
    assert token is not None and token[:1] == b"\x60"
    unwrapped = gssapi.unwrap(token)
    assert unwrapped.mechanism == "ntlmssp" and unwrapped.spnego and "ntlmssp" in unwrapped.mech_types
    assert isinstance(ntlmssp.decode(unwrapped.ntlm or b""), ntlmssp.NegotiateMessage)


def test_built_spnego_tokens_round_trip_and_kerberos_is_named() -> None:
    init = gssapi.unwrap(gssapi.build_neg_token_init(NEGOTIATE))
    assert (init.mechanism, init.ntlm, init.mech_types) == ("ntlmssp", NEGOTIATE, ("ntlmssp",))
    resp = gssapi.unwrap(gssapi.build_neg_token_resp(windows_challenge()))
    assert resp.neg_state == "accept-incomplete" and resp.ntlm == windows_challenge()
    done = gssapi.unwrap(gssapi.build_neg_token_resp(b"", state=0))
    assert (done.mechanism, done.neg_state, done.ntlm) == ("spnego", "accept-completed", None)
    krb_init = gssapi.build_neg_token_init(b"\x60\x05\x06\x03\x2a\x86\x48", mechs=("1.2.840.48018.1.2.2",))
    assert gssapi.unwrap(krb_init).mechanism == "kerberos"
    assert gssapi.unwrap(b"\x6e\x82\x01\x00" + b"\0" * 256).kerberos == "AP-REQ"
    krb_resp = gssapi.build_neg_token_resp(b"\x6f\x03\x02\x01\x05", state=0, mech="1.2.840.113554.1.2.2")
    assert (gssapi.unwrap(krb_resp).mechanism, gssapi.unwrap(krb_resp).kerberos) == ("kerberos", "AP-REP")
    assert gssapi.decode_oid(bytes.fromhex("2b0601040182370202 0a".replace(" ", ""))) == "1.3.6.1.4.1.311.2.2.10"


@pytest.mark.parametrize(
    "token",
    [
        b"", b"\x60", b"\x60\x80\x06", b"\x60\x85\x01\x02\x03\x04\x05", b"\x60\x84\xff\xff\xff\xff",
        b"\xa1\x03\x30\x01", b"\xa0\x02\x30\x00\x00", b"\x1f\x01\x00", b"\x60\x03\x06\x01\xff",
    ],
)  # fmt: skip
def test_hostile_der_is_named_unknown(token: bytes) -> None:
    assert gssapi.unwrap(token).mechanism in ("unknown", "spnego")


def test_nesting_is_bounded() -> None:
    token = b"\x01"
    for _ in range(5000):
        token = gssapi.build_neg_token_resp(token)
    result = gssapi.unwrap(token)
    assert result.ntlm is None and any("nested" in a for a in result.anomalies)


@given(st.binary(max_size=300))
@settings(max_examples=400, deadline=None)
def test_any_bytes_unwrap_without_raising(data: bytes) -> None:
    gssapi.unwrap(b"\x60" + data)
    gssapi.unwrap(b"\xa1" + data)
    gssapi.unwrap(data)


# -- the HTTP session ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme,wrap", [("NTLM", False), ("Negotiate", False), ("Negotiate", True)])
@pytest.mark.parametrize("step", [None, 1, 7])
def test_ntlm_exchange_over_keep_alive(scheme: str, wrap: bool, step: int | None) -> None:
    events = feed(exchange_conversation(scheme, wrap), step)
    steps = [e for e in events if isinstance(e, ev.SaslStep)]
    assert [type(e.ntlm).__name__ for e in steps] == ["NegotiateMessage", "ChallengeMessage", "AuthenticateMessage"]
    assert {e.mechanism for e in steps} == {"NTLM"}
    assert [e.side for e in steps] == [ev.Side.CLIENT, ev.Side.SERVER, ev.Side.CLIENT]
    exchanges = [e for e in events if isinstance(e, ev.HttpExchange)]
    assert {(e.path, e.host) for e in exchanges} == {("/EWS/Exchange.asmx", "mail.contoso.com")}
    results = [e for e in events if isinstance(e, ev.AuthResult)]
    assert [(r.mechanism, r.success) for r in results] == [("NTLM", True)]
    # The chunked body's "Authorization: Basic" and the 401 body's "WWW-Authenticate" are body, not headers.
    assert not [e for e in events if isinstance(e, (ev.Credentials, ev.Anomaly))]
    assert steps[1].evidence.frame == 2 and steps[1].evidence.line.startswith(f"WWW-Authenticate: {scheme} ")


@pytest.mark.parametrize("wrap", [False, True])
def test_findings_name_the_endpoint(wrap: bool) -> None:
    records = analysis_of(exchange_conversation("Negotiate" if wrap else "NTLM", wrap))
    assert [r["type"] for r in records] == ["ntlm-info"]  # a web server is no mail-service
    info = records[0]
    assert info["protocol"] == "http" and info["server"] == "192.0.2.5:80"
    assert {k: info[k] for k in WINDOWS_NAMES} == WINDOWS_NAMES
    assert info["os_version"] == "10.0.17763" and info["target_name"] == "CONTOSO"
    assert (info["http_path"], info["http_host"]) == ("/EWS/Exchange.asmx", "mail.contoso.com")
    assert info["http_endpoints"] == ["mail.contoso.com/EWS/Exchange.asmx"]
    assert info["users"] == ["CONTOSO\\jdoe"] and info["outcome"] == "success" and info["severity"] == "medium"
    assert "http-ntlm-info" in info["reference"]


def test_pipelined_requests_are_answered_in_order() -> None:
    challenge = b64(windows_challenge())
    conversation = [
        (ev.Side.CLIENT, b"GET /owa/ HTTP/1.1\r\nHost: a\r\n\r\n"
                         b"HEAD /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: a\r\n"
                         b"Authorization: NTLM " + b64(NEGOTIATE).encode() + b"\r\n\r\n"
                         b"GET /OAB/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        (ev.Side.SERVER, b"HTTP/1.1 302 Found\r\nContent-Length: 4\r\n\r\nxxxx"
                         b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 1000\r\nWWW-Authenticate: NTLM "
                         + challenge.encode() + b"\r\n\r\n"  # HEAD: no body follows whatever the length says
                         b"HTTP/1.1 100 Continue\r\n\r\n"
                         b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate\r\nWWW-Authenticate: NTLM\r\n"
                         b"Content-Length: 0\r\n\r\n"),
    ]  # fmt: skip
    events = feed(conversation)
    exchange = [e for e in events if isinstance(e, ev.HttpExchange) and e.side is ev.Side.SERVER]
    assert [(e.path, e.status) for e in exchange] == [("/autodiscover/autodiscover.xml", 401)]
    assert sum(isinstance(e, ev.SaslStep) and isinstance(e.ntlm, ntlmssp.ChallengeMessage) for e in events) == 1
    assert not [e for e in events if isinstance(e, ev.Anomaly)]


def test_basic_credentials_and_verdict() -> None:
    conversation = [
        (ev.Side.CLIENT, b"GET /owa/ HTTP/1.1\r\nHost: mail\r\nAuthorization: Basic " + b64(b"jdoe:S3cret!").encode()
                         + b"\r\n\r\n"),
        (ev.Side.SERVER, b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="mail, internal"\r\n'
                         b"Content-Length: 0\r\n\r\n"),
        (ev.Side.CLIENT, b"GET /owa/ HTTP/1.1\r\nHost: mail\r\nProxy-Authorization: Basic "
                         + b64(b"asmith:Right1!").encode() + b"\r\n\r\n"),
        (ev.Side.SERVER, b"HTTP/1.0 200 OK\r\n\r\nbody until the close\r\nHTTP/1.1 401 x\r\n"),
    ]  # fmt: skip
    records = analysis_of(conversation, port=8080)
    credentials = sorted((r["user"], r["password"], r["outcome"]) for r in records)
    assert credentials == [("asmith", "Right1!", "success"), ("jdoe", "S3cret!", "failure")]
    assert {r["type"] for r in records} == {"cleartext-credentials"}
    assert {r["mechanism"] for r in records} == {"HTTP-BASIC"}


def test_challenge_header_parsing() -> None:
    assert split_challenges('Negotiate, NTLM TlRM==, Basic realm="a, b", charset="UTF-8"') == [
        ("Negotiate", ""),
        ("NTLM", "TlRM=="),
        ("Basic", 'realm="a, b", charset="UTF-8"'),
    ]
    assert len(split_challenges(", ".join(["NTLM"] * 100))) == 8


def test_identify_recognises_http() -> None:
    assert identify(b"", b"GET /EWS/Exchange.asmx HTTP/1.1\r\n") == "http"
    assert identify(b"HTTP/1.1 401 Unauthorized\r\n", b"") == "http"
    assert identify(b"", b"GET / HTTP/1.1") is None
    assert identify(b"220 mail ESMTP\r\n", b"") == "smtp"


@pytest.mark.parametrize(
    "hostile",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        b"HTTP/1.1 401 x\r\nWWW-Authenticate: NTLM !!!!\r\n\r\n",
        b"HTTP/1.1 401 x\r\nWWW-Authenticate: Negotiate YIIFAAYGKwYBBQUCoA==\r\n\r\n",
        b"HTTP/1.1 401 x\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n",
        b"HTTP/1.1 401 x\r\nWWW-Authenticate: NTLM " + b"A" * 200_000 + b"\r\n\r\n",
        b"\x00\xff" * 1000,
    ],
)
def test_hostile_responses_never_crash(hostile: bytes) -> None:
    conversation = [(ev.Side.CLIENT, b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: NTLM " + b64(NEGOTIATE).encode()
                     + b"\r\n\r\n"), (ev.Side.SERVER, hostile)]  # fmt: skip
    for step in (None, 3):
        feed(conversation, step)
    analysis_of(conversation)


@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=200)), max_size=12))
@settings(max_examples=300, deadline=None)
def test_any_bytes_never_crash(chunks: list[tuple[bool, bytes]]) -> None:
    session = HttpSession()
    for server, data in chunks:
        session.receive(ev.Side.SERVER if server else ev.Side.CLIENT, b"HTTP/1.1 401 x\r\n" + data if server else data)


def test_gap_and_mid_stream_pickup_resynchronise() -> None:
    conversation = exchange_conversation()
    session = HttpSession(partial=True)
    events: list[ev.Event] = []
    events += session.receive(ev.Side.SERVER, b"ody of something before\r\n", 1)
    events += session.gap(ev.Side.CLIENT, 100, 2)
    for frame, (side, data) in enumerate(conversation, 3):
        events += session.receive(side, data, frame)
    # The gap ends where a request line begins: that line is read whole (LineBuffer.resync), and the NEGOTIATE,
    # the CHALLENGE and the AUTHENTICATE that follow are read.
    steps = [type(e.ntlm).__name__ for e in events if isinstance(e, ev.SaslStep)]
    assert steps == ["NegotiateMessage", "ChallengeMessage", "AuthenticateMessage"]
    assert [e.code for e in events if isinstance(e, ev.Anomaly)] == ["gap"]


def test_upgrade_stops_reading() -> None:
    conversation = [
        (ev.Side.CLIENT, b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"),
        (ev.Side.SERVER, b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 401 x\r\nWWW-Authenticate: NTLM "
                         + b64(windows_challenge()).encode() + b"\r\n\r\n"),
    ]  # fmt: skip
    assert not [e for e in feed(conversation) if isinstance(e, ev.SaslStep)]


# -- the shared corpus against tshark ---------------------------------------------------------------------------------

HTTP_NTLM_CAPTURES = ["arkime/ntlm_synthetic.pcap", "ndpi/webdav.pcap", "zeek/erspan.pcap"]
# Fields of tshark's NTLMSSP table and the names of the decoded CHALLENGE / AUTHENTICATE they correspond to.
TSHARK_CHALLENGE = {
    "ntlmssp.challenge.target_name": "target_name",
    "ntlmssp.challenge.target_info.nb_computer_name": "netbios_computer",
    "ntlmssp.challenge.target_info.nb_domain_name": "netbios_domain",
    "ntlmssp.challenge.target_info.dns_computer_name": "dns_computer",
    "ntlmssp.challenge.target_info.dns_domain_name": "dns_domain",
    "ntlmssp.challenge.target_info.dns_tree_name": "dns_tree",
}
TSHARK_AUTH = {"ntlmssp.auth.username": "user", "ntlmssp.auth.domain": "domain", "ntlmssp.auth.hostname": "workstation"}


def tshark_http_ntlm(truth: Path) -> dict[int, dict[str, str]]:
    """Frame -> tshark's decoded fields, for every NTLMSSP message tshark found inside HTTP."""
    lines = truth.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## NTLMSSP packets")) + 1
    header = lines[start].split("\t")
    rows: dict[int, dict[str, str]] = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        row = dict(zip(header, line.split("\t"), strict=False))
        if ":http:" in row["frame.protocols"]:
            rows[int(row["frame.number"])] = row
    return rows


@pytest.mark.parametrize("capture", HTTP_NTLM_CAPTURES)
def test_corpus_http_ntlm_agrees_with_tshark(capture: str) -> None:
    path = require_corpus("pcaps", capture)
    expected = tshark_http_ntlm(require_corpus("truth", f"{capture}.txt"))
    assert expected, "tshark found NTLMSSP in HTTP here"
    analysis = Analysis(AnalysisOptions(keep_events=True))
    analysis.file = str(path)
    analyze_file(path, analysis.handler_factory, analysis.options.capture_options())
    seen = {
        e.evidence.frame: e.ntlm
        for session in analysis.sessions
        if session.protocol == "http"
        for e in session.events
        if isinstance(e, ev.SaslStep) and e.ntlm is not None
    }
    assert set(seen) == set(expected)
    for frame, row in expected.items():
        message = seen[frame]
        assert f"0x{int(message.message_type):08x}" == row["ntlmssp.messagetype"]
        decoded = message.to_dict()
        fields = TSHARK_CHALLENGE if isinstance(message, ntlmssp.ChallengeMessage) else TSHARK_AUTH
        if isinstance(message, ntlmssp.ChallengeMessage):
            assert message.server_challenge.hex() == row["ntlmssp.ntlmserverchallenge"]
            version = ".".join(row[f"ntlmssp.version.{p}"] for p in ("major", "minor", "build_number"))
            assert decoded["os_version"] == (version if version != ".." else None)
        if isinstance(message, (ntlmssp.ChallengeMessage, ntlmssp.AuthenticateMessage)):
            for tshark_name, name in fields.items():
                assert (decoded.get(name) or "") == row.get(tshark_name, ""), (frame, name)
    records = [finding_record(f) for f in analysis.findings if f.protocol == "http"]
    servers = {r["server"] for r in records if r["type"] == "ntlm-info"}
    assert len(servers) == len({row["ip.src"] + row["tcp.srcport"] for row in expected.values()
                                if row["ntlmssp.messagetype"] == "0x00000002"})  # fmt: skip


def test_corpus_basic_credentials() -> None:
    path = require_corpus("pcaps", "ndpi/http_auth.pcap")
    analysis = Analysis()
    analysis.file = str(path)
    analyze_file(path, analysis.handler_factory, analysis.options.capture_options())
    records = [finding_record(f, show_secrets=True) for f in analysis.findings]
    # tshark -z credentials: "test" / "fail2" in frame 4 (HTTP basic auth), answered 401.
    assert [(r["user"], r["password"], r["outcome"], r["evidence"][0]["frame"]) for r in records] == [
        ("test", "fail2", "failure", 4)
    ]


def test_random_split_points_find_the_same(seed: int = 7) -> None:
    rng = random.Random(seed)
    base = feed(exchange_conversation("Negotiate", True))
    for _ in range(20):
        again = feed(exchange_conversation("Negotiate", True), rng.randint(1, 40))
        assert [type(e).__name__ for e in again] == [type(e).__name__ for e in base]
