"""A server that accepts STARTTLS (SMTP ``220``, IMAP tagged ``OK``, POP3 ``+OK`` to STLS) offers it, whether or not
a capability listing was captured: an SMTP client that said HELO, a POP3 client that sent no CAPA, an IMAP client
that asked for no CAPABILITY. ``starttls_offered`` is then true, where it stayed null (unknown); so it is when the
client carried on in clear text after the acceptance. A refusal says nothing of it, nor does Exchange's
X-ANONYMOUSTLS, which is not STARTTLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_starttls_followed import CLIENT_HELLO, SERVER_HELLO, _analyze

# protocol: (port, the dialogue up to the STARTTLS, the command, its acceptance, a refusal), no listing in any
UNLISTED: dict[str, tuple[int, list[tuple[bool, bytes]], bytes, bytes, bytes]] = {
    "smtp": (
        25,
        [(True, b"220 mx.example.com ESMTP\r\n"), (False, b"HELO c.example\r\n"), (True, b"250 mx.example.com\r\n")],
        b"STARTTLS\r\n", b"220 2.0.0 Ready to start TLS\r\n", b"454 4.7.0 TLS not available due to local problem\r\n",
    ),
    "pop3": (
        110, [(True, b"+OK POP3 ready\r\n")], b"STLS\r\n", b"+OK Begin TLS negotiation\r\n",
        b"-ERR TLS support isn't enabled.\r\n",
    ),
    "imap": (
        143, [(True, b"* OK ready\r\n")], b"a1 STARTTLS\r\n", b"a1 OK Begin TLS negotiation now\r\n",
        b"a1 BAD TLS support isn't enabled.\r\n",
    ),
}  # fmt: skip
CLEAR = {"smtp": b"QUIT\r\n", "pop3": b"QUIT\r\n", "imap": b"a2 LOGOUT\r\n"}


def _service(document: dict[str, Any]) -> dict[str, Any]:
    [service] = [f for f in document["findings"] if f["type"] == "mail-service"]
    return service


def _anomalies(document: dict[str, Any]) -> list[str]:
    return [e["code"] for s in document["sessions"] for e in s["events"] if e["event"] == "Anomaly"]


@pytest.mark.parametrize("protocol", sorted(UNLISTED))
def test_a_server_that_accepted_starttls_offers_it(tmp_path: Path, protocol: str) -> None:
    port, opening, command, accepted, _refused = UNLISTED[protocol]
    turns = [*opening, (False, command), (True, accepted), (False, CLIENT_HELLO), (True, SERVER_HELLO)]
    service = _service(_analyze(tmp_path, f"tls-{protocol}", port, turns))
    assert service["tls"] is True and service["starttls_offered"] is True


@pytest.mark.parametrize("protocol", sorted(UNLISTED))
def test_an_acceptance_the_client_did_not_use_still_says_it_is_offered(tmp_path: Path, protocol: str) -> None:
    port, opening, command, accepted, _refused = UNLISTED[protocol]
    document = _analyze(tmp_path, f"clear-{protocol}", port, [*opening, (False, command), (True, accepted),
                                                             (False, CLEAR[protocol])])  # fmt: skip
    assert _anomalies(document) == ["starttls_not_used"]
    assert _service(document)["tls"] is False and _service(document)["starttls_offered"] is True


@pytest.mark.parametrize("protocol", sorted(UNLISTED))
def test_a_refused_starttls_leaves_the_offer_unknown(tmp_path: Path, protocol: str) -> None:
    """454 (TLS not available now), -ERR, BAD: the server may list STARTTLS and fail it, or not list it at all."""
    port, opening, command, _accepted, refused = UNLISTED[protocol]
    service = _service(_analyze(tmp_path, f"refused-{protocol}", port, [*opening, (False, command), (True, refused)]))
    assert service["tls"] is False and service["starttls_offered"] is None


def test_an_accepted_x_anonymoustls_says_nothing_of_starttls(tmp_path: Path) -> None:
    """Exchange's X-ANONYMOUSTLS begins TLS as STARTTLS does, but it is not STARTTLS: the offer stays unknown, and a
    client that carries on in clear text after it draws ``anonymoustls_not_used``."""
    _port, opening, _command, _accepted, _refused = UNLISTED["smtp"]
    asked = [*opening, (False, b"X-ANONYMOUSTLS\r\n"), (True, b"220 2.0.0 SMTP server ready\r\n")]
    began = _analyze(tmp_path, "anonymoustls", 25, [*asked, (False, CLIENT_HELLO), (True, SERVER_HELLO)])
    assert _service(began)["tls"] is True and _service(began)["starttls_offered"] is None
    clear = _analyze(tmp_path, "anonymoustls-clear", 25, [*asked, (False, b"QUIT\r\n")])
    assert _anomalies(clear) == ["anonymoustls_not_used"]
    assert _service(clear)["starttls_offered"] is None
