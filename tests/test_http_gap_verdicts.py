"""HTTP verdicts after bytes of the server's were lost (a gap): given when the matching is certain, else none.

Before, a server-side gap dropped every request awaiting its response: the response read after the gap answered
nothing (CredSLayer's ``http-ntlm.pcap``: the 302 that tshark pairs with the NTLM AUTHENTICATE of frame 5 gave no
verdict), and a request sent after the gap took the response to one sent before it (a 401 to the request before
read as the refusal of a login the server accepted). Now the requests stay, and a response answers the one request
captured before it (dissectors.http_resync), the requests an NTLM handshake shows answered set aside.
"""

from __future__ import annotations

from dissectors import events as ev
from dissectors.http import HttpSession
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.capture import analyze_file
from passive.results.records import finding_record
from tests.corpus import require_corpus
from tests.test_http import NEGOTIATE, authenticate, b64

C, S = ev.Side.CLIENT, ev.Side.SERVER
BASIC_A, BASIC_B = b64(b"alice:wrong"), b64(b"alice:right")


def request(authorization: str, path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: intranet\r\nAuthorization: {authorization}\r\n\r\n".encode()


def response(status: str) -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode()


def play(script: list[tuple[int, ev.Side | None, bytes]]) -> list[ev.Event]:
    """(frame, side, bytes) in the order the capture delivers them; a ``None`` side is a gap of the server's."""
    session, events = HttpSession(), []
    for frame, side, data in script:
        if side is None:
            events += session.gap(S, int(data), frame, float(frame))
        else:
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
    script = [
        (1, C, request(f"Basic {BASIC_A}")),
        (2, None, b"700"),  # lost inside an earlier response's body
        (3, C, request(f"Basic {BASIC_B}")),
        (4, S, b"rest of that body\r\n" + response("401 Unauthorized")),
        (6, S, response("200 OK")),
    ]
    assert verdicts(play(script)) == [("HTTP-BASIC", True, 6)]  # the 401 is either's: no verdict


def test_one_request_outstanding_takes_the_response_after_the_gap() -> None:
    script = [(1, C, request(f"Basic {BASIC_A}")), (2, None, b"300"), (3, S, b"x\r\n" + response("401 Unauthorized"))]
    assert verdicts(play(script)) == [("HTTP-BASIC", False, 3)]


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
    path = require_corpus("pcaps", "credslayer", "http-ntlm.pcap")
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
