"""HTTP verdicts after bytes of the server's were lost (a gap): given when the matching is certain, else none.

Before, a server-side gap dropped every request awaiting its response: the response read after the gap answered
nothing (CredSLayer's ``http-ntlm.pcap``: the 302 that tshark pairs with the NTLM AUTHENTICATE of frame 5 gave no
verdict), and a request sent after the gap took the response to one sent before it (a 401 to the request before
read as the refusal of a login the server accepted). Now the requests stay, and a response answers the one request
captured before it (dissectors.http_resync), the requests an NTLM handshake shows answered set aside.
"""

from __future__ import annotations

import pytest

from dissectors import events as ev
from dissectors.http import HttpSession
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.capture import analyze_file
from passive.results.records import finding_record
from tests.corpus import public_capture
from tests.test_http import NEGOTIATE, authenticate, b64

C, S = ev.Side.CLIENT, ev.Side.SERVER
BASIC_A, BASIC_B = b64(b"alice:wrong"), b64(b"alice:right")


def request(authorization: str, path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: intranet\r\nAuthorization: {authorization}\r\n\r\n".encode()


def response(status: str) -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode()


# A gap of the client's, in a script; a ``None`` side is one of the server's.
CLIENT_GAP = "client gap"


def play(script: list[tuple[int, ev.Side | str | None, bytes]], partial: bool = False) -> list[ev.Event]:
    """(frame, side, bytes) in the order the capture delivers them; a ``None`` side is a gap of the server's (the
    bytes say how many were lost), ``CLIENT_GAP`` one of the client's."""
    session, events = HttpSession(partial=partial), []
    for frame, side, data in script:
        if side is None or side == CLIENT_GAP:
            events += session.gap(C if side == CLIENT_GAP else S, int(data), frame, float(frame))
        elif isinstance(side, ev.Side):
            events += session.receive(side, data, frame, float(frame))
    return events


def verdicts(events: list[ev.Event]) -> list[tuple[str, bool, int | None]]:
    return [(e.mechanism, e.success, e.evidence.frame) for e in events if isinstance(e, ev.AuthResult)]


def test_the_response_after_an_authenticate_whose_challenge_was_lost_is_its_verdict() -> None:
    """http-ntlm.pcap's order: the AUTHENTICATE is read before the gap that lost the 401 with the CHALLENGE."""
    script = [
        (1, C, request(f"NTLM {b64(NEGOTIATE)}")),
        (3, C, request(f"NTLM {b64(authenticate())}")),
        (2, None, b"1460"),
        (2, S, b"tail of the 401's body</html>\r\n"),
        (4, S, response("302 Object Moved")),
    ]
    assert verdicts(play(script)) == [("NTLM", True, 4)]


def test_a_request_sent_after_the_gap_does_not_take_the_answer_to_one_before() -> None:
    """The 401 was taken for the refusal of the login sent after the gap (the answer to the one before). Neither it
    nor the 200 begins the server's first segment after the latest request: either may be a body's text, and which
    request each answers is not known: no verdict."""
    script = [
        (1, C, request(f"Basic {BASIC_A}")),
        (2, None, b"700"),  # lost inside an earlier response's body
        (3, C, request(f"Basic {BASIC_B}")),
        (4, S, b"rest of that body\r\n" + response("401 Unauthorized")),
        (6, S, response("200 OK")),
    ]
    assert verdicts(play(script)) == []


def test_a_status_line_after_the_tail_of_a_line_the_gap_cut_is_no_response() -> None:
    """The lost bytes began the response to the only request; what follows them, "x" and a status line, is that
    response's body (a response's headers end with an empty line): no verdict (see the next test for one)."""
    script = [(1, C, request(f"Basic {BASIC_A}")), (2, None, b"300"), (3, S, b"x\r\n" + response("401 Unauthorized"))]
    assert verdicts(play(script)) == []


def test_two_requests_before_the_response_give_no_verdict() -> None:
    script = [
        (1, C, request(f"Basic {BASIC_A}")),
        (2, C, request(f"Basic {BASIC_B}")),
        (3, None, b"300"),
        (4, S, b"x\r\n" + response("200 OK")),
    ]
    assert verdicts(play(script)) == []


def test_credslayer_http_ntlm_capture_gives_the_verdict_tshark_shows() -> None:
    """CredSLayer's tests/samples/http-ntlm.pcap: seven NTLM logins, the 401s with the CHALLENGEs not captured; the
    only response whose status line is in the capture, the 302 in frame 6 (tshark: response to frame 5), is the
    first login's verdict. The others' status lines are among the lost bytes: no verdict."""
    analysis = Analysis(AnalysisOptions())
    path = public_capture("pcaps", "credslayer", "http-ntlm.pcap")
    analyze_file(path, analysis.handler_factory, analysis.options.capture_options())
    [ntlm] = [record for record in map(finding_record, analysis.findings) if record["type"] == "ntlm-info"]
    outcomes = sorted((detail["outcome"] or "") for detail in ntlm["details"])
    assert outcomes == ["", "", "", "", "", "", "success"]


def test_requests_held_behind_a_connect_and_read_at_the_gap_still_await_responses() -> None:
    """The client's bytes after a CONNECT wait for its answer; a gap of the server's may have lost it, so they are
    read then. The requests among them await responses like those before: the 200 after the gap may answer the GET
    (the CONNECT's 407 lost), and was taken for the acceptance of the CONNECT's wrong password."""
    connect = f"CONNECT mail.example:443 HTTP/1.1\r\nHost: mail.example:443\r\nProxy-Authorization: Basic {BASIC_A}"
    get = f"GET http://intranet/ HTTP/1.1\r\nHost: intranet\r\nProxy-Authorization: Basic {BASIC_B}"
    script = [
        (1, C, f"{connect}\r\n\r\n{get}\r\n\r\n".encode()),
        (2, None, b"300"),
        (3, S, b"x\r\n" + response("200 OK")),
    ]
    assert verdicts(play(script)) == []


# A status line and its headers, as a page about HTTP shows them in its body.
QUOTED_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
PLAIN_GET = b"GET /a HTTP/1.1\r\nHost: intranet\r\n\r\n"


def page(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def test_a_status_line_inside_a_body_a_gap_cut_is_no_response() -> None:
    """The gap lost bytes of a body whose Content-Length says where it ends: only body bytes were lost, the quoted
    status line after them is still the body's, and the 401 is the answer to the pipelined Basic login."""
    body = b"<pre>\r\n" + b"a" * 200 + b"\r\n" + QUOTED_RESPONSE + b"</pre>\r\n"
    script = [
        (1, C, PLAIN_GET),
        (2, S, page(body)[:150]),
        (3, C, request(f"Basic {BASIC_A}")),
        (4, None, b"50"),
        (4, S, page(body)[200:] + response("401 Unauthorized")),
    ]
    assert verdicts(play(script)) == [("HTTP-BASIC", False, 4)]


def test_a_status_line_read_where_the_lost_bytes_may_have_ended_a_body_gives_no_verdict() -> None:
    """More was lost than the body had left: whether a response began among the lost bytes, and where its body ends,
    is not known; the status line after them, in the middle of the server's bytes, may be a body's."""
    body = b"<pre>\r\n" + b"a" * 200 + b"\r\n</pre>\r\n"
    script = [
        (1, C, PLAIN_GET),
        (2, S, page(body)[:150]),
        (3, C, request(f"Basic {BASIC_A}")),
        (4, None, b"2000"),
        (4, S, b"more of a body\r\n" + QUOTED_RESPONSE + b"and more\r\n"),
        (6, S, response("401 Unauthorized")),
    ]
    assert verdicts(play(script)) == []


def test_a_status_line_in_a_body_after_a_gap_with_no_request_waiting_answers_no_later_request() -> None:
    """No request awaited a response at the gap: the server's place in its bytes is still lost, and a status line
    read in the middle of them may be a body's, whichever requests come after."""
    script = [
        (1, C, PLAIN_GET),
        (2, S, page(b"x" * 300)[:150]),
        (3, None, b"2000"),
        (3, S, b"tail of a body\r\n"),
        (4, C, request(f"Basic {BASIC_A}")),
        (5, S, b"more of that body\r\n" + QUOTED_RESPONSE),
    ]
    assert verdicts(play(script)) == []


def test_the_server_s_first_segment_after_the_only_request_is_its_response() -> None:
    """After a gap, a status line that begins the first segment the server sent after the one request awaiting a
    response, the server's bytes before it all captured before that request: its response."""
    script = [
        (1, C, PLAIN_GET),
        (2, S, page(b"x" * 300)[:150]),
        (3, None, b"2000"),
        (3, S, b"tail of a body\r\n"),
        (4, C, request(f"Basic {BASIC_A}")),
        (5, S, response("401 Unauthorized")),
    ]
    assert verdicts(play(script)) == [("HTTP-BASIC", False, 5)]


def test_responses_to_requests_lost_in_the_client_s_bytes_answer_no_later_request() -> None:
    """The client's bytes lost held the rest of ``GET /b`` (maybe more requests): its 200 is no answer to the Basic
    login sent after the gap, nor is any response after it while their number is unknown."""
    script = [
        (1, C, PLAIN_GET + b"GET /b HT"),
        (2, CLIENT_GAP, b"40"),
        (2, C, b"x\r\n" + request(f"Basic {BASIC_A}")),
        (3, S, response("200 OK")),
        (4, S, response("200 OK")),
        (5, S, response("401 Unauthorized")),
    ]
    assert verdicts(play(script)) == []


def test_requests_sent_before_a_client_gap_are_answered_in_order() -> None:
    """The login before the gap takes the first response (it was forgotten at the gap: the 401 went to the one
    after); the login after the gap gets none."""
    script = [
        (1, C, request(f"Basic {BASIC_A}", "/first") + b"GET /b HT"),
        (2, CLIENT_GAP, b"40"),
        (2, C, b"x\r\n" + request(f"Basic {BASIC_B}", "/after")),
        (3, S, response("401 Unauthorized")),
        (4, S, response("200 OK")),
        (5, S, response("200 OK")),
    ]
    events = play(script)
    assert verdicts(events) == [("HTTP-BASIC", False, 3)]
    answered = [(e.path, e.status) for e in events if isinstance(e, ev.HttpExchange) and e.side is S]
    assert answered == [("/first", 401)]


def test_after_a_client_gap_pairing_is_sure_again_once_a_response_ends_with_no_request_waiting() -> None:
    script = [
        (1, C, PLAIN_GET + b"GET /b HT"),
        (2, CLIENT_GAP, b"40"),
        (2, C, b"x\r\n\r\n"),
        (3, S, response("200 OK")),
        (4, S, response("200 OK")),
        (5, C, request(f"Basic {BASIC_A}")),
        (6, S, response("401 Unauthorized")),
    ]
    assert verdicts(play(script)) == [("HTTP-BASIC", False, 6)]


def test_a_flow_picked_up_in_a_response_s_tail_pairs_the_next_response_with_no_request() -> None:
    """CredSLayer's http-ntlm.pcap, the stream from client port 2249, picked up mid-stream: a request (frame 18),
    the tail of a response (19: its status line not captured), another request (22), a 200 (36). The tail may be the
    first request's response: then the 200 is the second's (tshark's pairing), not the first's."""
    script = [
        (18, C, request(f"Basic {BASIC_A}", "/_layouts/1033/core.js")),
        (19, S, b"function tail(){}\r\n</script>\r\n"),
        (22, C, PLAIN_GET),
        (36, S, response("200 OK")),
    ]
    assert verdicts(play(script, partial=True)) == []


def test_a_flow_picked_up_before_a_response_pairs_it_with_the_request_before_it() -> None:
    script = [(18, C, request(f"Basic {BASIC_A}")), (19, S, response("401 Unauthorized"))]
    assert verdicts(play(script, partial=True)) == [("HTTP-BASIC", False, 19)]


def chunked(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("message", "cut", "lost"),
    [
        (page(b"<pre>\r\n" + b"a" * 200 + b"\r\n" + QUOTED_RESPONSE + b"</pre>\r\n"), 150, None),  # to the body's end
        (chunked(b"<pre>\r\n" + b"a" * 200 + b"\r\n" + QUOTED_RESPONSE + b"</pre>\r\n"), 150, 60),  # inside a chunk
    ],
    ids=["to-the-end-of-a-length", "inside-a-chunk"],
)
def test_bytes_lost_inside_a_framed_body_leave_the_next_response_certain(
    message: bytes, cut: int, lost: int | None
) -> None:
    """Lost up to the very end of a Content-Length body, or inside a chunk: the status line read next is the next
    response's, and the quoted one is skipped as body bytes."""
    lost = len(message) - cut if lost is None else lost
    rest = message[cut + lost :]
    script = [
        (1, C, PLAIN_GET),
        (2, S, message[:cut]),
        (3, C, request(f"Basic {BASIC_A}")),
        (4, None, str(lost).encode()),
        (4, S, rest + response("401 Unauthorized")),
    ]
    assert verdicts(play(script)) == [("HTTP-BASIC", False, 4)]
