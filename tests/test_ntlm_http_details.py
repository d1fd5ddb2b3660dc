"""What an ``ntlm-info`` finding says of each HTTP exchange, and of the latest client, matches the exchange.

Two defects seen on public captures (a SharePoint capture whose server answers were not all captured, a WPAD
capture with NTLMv2 logins followed by anonymous ones):

- an exchange closed by the next request's NEGOTIATE (its answer never seen) was recorded with that next request's
  path: the exchange of ``GET /`` was listed under ``/default.aspx``;
- the finding's client fields are the latest AUTHENTICATE's, but a field it lacks kept an earlier one's value: after
  a user's NTLMv2 login and then an anonymous one, the finding said ``ntlm_version: anonymous`` beside the earlier
  login's user, domain and SPN, a client nobody was.
"""

from __future__ import annotations

import base64
from typing import Any

from dissectors import events as ev
from dissectors import ntlmssp
from tests.test_http import NEGOTIATE, analysis_of, authenticate, windows_challenge

C, S = ev.Side.CLIENT, ev.Side.SERVER


def request(path: str, token: bytes) -> tuple[ev.Side, bytes]:
    header = f"Authorization: NTLM {base64.b64encode(token).decode()}"
    return C, f"GET {path} HTTP/1.1\r\nHost: portal.contoso.com\r\n{header}\r\n\r\n".encode()


def answer(status: str, token: bytes | None = None) -> tuple[ev.Side, bytes]:
    challenge = f"WWW-Authenticate: NTLM {base64.b64encode(token).decode()}\r\n" if token else ""
    return S, f"HTTP/1.1 {status}\r\n{challenge}Content-Length: 0\r\n\r\n".encode()


def ntlm_info(conversation: list[tuple[ev.Side, bytes]]) -> dict[str, Any]:
    [info] = [f for f in analysis_of(conversation) if f["type"] == "ntlm-info"]
    return info


def test_each_exchange_is_listed_under_its_own_request_when_no_answer_was_seen() -> None:
    # The client's side alone: each exchange ends when the next begins, before any answer.
    conversation = [
        request("/", NEGOTIATE),
        request("/", authenticate()),
        request("/default.aspx", NEGOTIATE),
        request("/default.aspx", authenticate()),
    ]
    info = ntlm_info(conversation)
    assert [(d["http_path"], d["frames"]) for d in info["details"]] == [("/", [1, 2]), ("/default.aspx", [3, 4])]


def test_an_answered_exchange_keeps_its_path() -> None:
    conversation = [
        request("/EWS/Exchange.asmx", NEGOTIATE),
        answer("401 Unauthorized", windows_challenge()),
        request("/EWS/Exchange.asmx", authenticate()),
        answer("200 OK"),
        request("/owa/", NEGOTIATE),
    ]
    info = ntlm_info(conversation)
    assert [d["http_path"] for d in info["details"]] == ["/EWS/Exchange.asmx"]
    assert info["details"][0]["outcome"] == "success"


def anonymous() -> bytes:
    return ntlmssp.build_authenticate(user="", domain="", workstation="KIOSK7", lm_response=b"\0")


def test_the_latest_authenticate_gives_every_client_field_even_an_empty_one() -> None:
    conversation = [
        request("/wpad.dat", NEGOTIATE),
        answer("401 Unauthorized", windows_challenge()),
        request("/wpad.dat", authenticate()),
        answer("200 OK"),
        request("/wpad.dat", NEGOTIATE),
        answer("401 Unauthorized", windows_challenge()),
        request("/wpad.dat", anonymous()),
        answer("200 OK"),
    ]
    info = ntlm_info(conversation)
    latest = {name: info[name] for name in ("user", "domain", "workstation", "ntlm_version", "spn")}
    assert latest == {"user": None, "domain": None, "workstation": "KIOSK7", "ntlm_version": "anonymous", "spn": None}
    # What the earlier login gave stays where every login is listed, and in the severity it earned.
    assert info["users"] == ["CONTOSO\\jdoe"] and info["workstations"] == ["WS01", "KIOSK7"]
    assert info["severity"] == "medium"
    assert [d["ntlm_version"] for d in info["details"]] == ["NTLMv2", "anonymous"]


def test_a_negotiate_alone_erases_nothing_a_login_gave() -> None:
    conversation = [
        request("/", NEGOTIATE),
        answer("401 Unauthorized", windows_challenge()),
        request("/", authenticate()),
        answer("200 OK"),
        request("/", NEGOTIATE),
        answer("401 Unauthorized", windows_challenge()),
    ]
    info = ntlm_info(conversation)
    assert (info["user"], info["domain"], info["ntlm_version"]) == ("jdoe", "CONTOSO", "NTLMv2")
