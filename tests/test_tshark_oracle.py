"""leakscope against tshark, run through pyshark, on every capture with SMTP, POP3 or IMAP: the public corpus (the
captures whose tshark protocol hierarchy in corpus/truth lists smtp, pop or imap) and the project's pcaps/.

tshark is the oracle here, not leakscope's expected-facts files: each test compares what leakscope reports with
what Wireshark's dissectors make of the same frames (tests/tshark_oracle.py).

Where the two are expected to differ, and why:

* Ports. tshark dissects SMTP on 25 and 587, POP3 on 110 and IMAP on 143 (and the same inside TLS on 465, 995 and
  993). It is told the other ports the captures use (``DECODE_AS``): 2525, in leakscope's table of SMTP ports but not
  in tshark's, and the lab's 1110 (POP3) and 1143 (IMAP) from pcaps/README.md. leakscope, by default, reads only its
  own port table (``MAIL_PORTS``) and so reports nothing on 1110 and 1143; in port-independent mode (--all-ports)
  the server's greeting decides, on any port. The tests compare both modes.
* Tunnels. tshark follows HTTP CONNECT (zeek/connect-with-smtp.pcap) and SOCKS5 (arkime/socks5-smtp-503.pcap) and
  dissects the SMTP session inside, on the proxy's port. leakscope does not look inside proxies; those services
  are left out of what it must report, and it must report none of them.
* ICMP. tshark runs its mail dissectors on the TCP header an ICMP error quotes (frames 26 and 28-30 of
  zeek/smtp.pcap); that is not TCP traffic, and the oracle leaves those frames out.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from dissectors.registry import MAIL_PORTS
from passive.analysis.pipeline import AnalysisOptions, analyze_captures
from passive.findings.model import MAX_DETAILS
from passive.results.records import finding_record
from tests.corpus import CORPUS, require_corpus
from tests.tshark_oracle import TsharkView, decode_all, tshark_available

pytest.importorskip("pyshark", reason="pyshark (the test extra) is not installed")
pytestmark = pytest.mark.skipif(not tshark_available(), reason="tshark is not installed (apt-get install tshark)")

PCAPS = Path(__file__).resolve().parents[1] / "pcaps"
DECODE_AS = {"tcp.port==2525": "smtp", "tcp.port==1110": "pop", "tcp.port==1143": "imap"}


def _corpus_mail_captures() -> list[Path]:
    summary = CORPUS / "truth" / "_summary.jsonl"
    if not summary.exists():
        return []
    captures = []
    for line in summary.read_text().splitlines():
        record = json.loads(line)
        if {"smtp", "pop", "imap"} & set(record.get("protocols", [])):
            captures.append(CORPUS / "pcaps" / record["file"])
    return sorted(captures)


CORPUS_CAPTURES = _corpus_mail_captures()
CAPTURES = CORPUS_CAPTURES + sorted(PCAPS.glob("*.pcap"))
IDS = [f"{p.parent.name}/{p.name}" for p in CAPTURES]


@pytest.fixture(scope="module")
def tshark(request: pytest.FixtureRequest) -> dict[Path, TsharkView]:
    """tshark's view of each capture the selected tests compare: one tshark run per capture, two at a time."""
    wanted = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.module is request.module and callspec is not None and "capture" in callspec.params:
            wanted.add(callspec.params["capture"])
    return decode_all(sorted(wanted), DECODE_AS)


@functools.cache
def leakscope(capture: Path, all_ports: bool) -> tuple[dict[str, Any], ...]:
    results = analyze_captures([str(capture)], AnalysisOptions(all_ports=all_ports))
    return tuple(finding_record(finding, show_secrets=True) for finding in results.findings)


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_corpus_mail_captures_are_compared() -> None:
    require_corpus("truth", "_summary.jsonl")
    assert len(CORPUS_CAPTURES) >= 40
    assert all(capture.exists() for capture in CORPUS_CAPTURES)


@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
def test_mail_services_agree_with_tshark(capture: Path, tshark: dict[Path, TsharkView]) -> None:
    """The (protocol, server) pairs of leakscope's mail-service findings are the ones tshark dissects as SMTP, POP3
    or IMAP, with the same clients, and the frame each finding cites is one tshark dissects as that service's. Mail
    through a proxy (SOCKS, HTTP CONNECT) is named by the server the client asked for: its TCP server, for tshark, is
    the proxy."""
    view = tshark[capture]
    direct = view.services(tunnelled=False)
    tunnelled = view.services() - direct
    reported = {}
    for all_ports in (False, True):
        reported[all_ports] = {
            (f["protocol"], _tcp_server(f)): f for f in leakscope(capture, all_ports) if f["type"] == "mail-service"
        }
    expected = {(protocol, server) for protocol, server in direct if _port(server) in MAIL_PORTS}
    assert {key for key, f in reported[False].items() if not f.get("proxy")} == expected
    proxied = {key for key, f in reported[True].items() if f.get("proxy")}
    assert set(reported[True]) - proxied == direct
    # Mail through a SOCKS proxy or a CONNECT: tshark dissects it in the proxy's connection, whose ends it may take
    # the wrong way round (a CONNECT's 220 read as a client's line): the proxy is one of them.
    ends = {
        (p, end) for c in view.conversations.values() if c.tunnels for p in c.protocols for end in (c.server, c.client)
    }
    assert proxied <= ends and len(proxied) == len(tunnelled)
    for (protocol, server), finding in reported[True].items():
        if finding.get("proxy"):
            continue
        clients = {c.client for c in view.conversations.values() if c.server == server and protocol in c.protocols}
        assert set(finding["clients"]) <= clients
        assert len(finding["clients"]) == min(len(clients), MAX_DETAILS)
        for evidence in finding["evidence"]:
            frame = view.frames.get(evidence["frame"])
            assert frame is not None, f"frame {evidence['frame']} is not mail to tshark"
            assert frame.protocol == protocol
            if evidence["side"] == "server":
                assert frame.response and frame.src == server
            else:
                assert frame.request and frame.dst == server


def _tcp_server(finding: dict) -> str:
    """The server of the TCP connection tshark dissects a finding's session in: the finding's server, or for one
    reached through a proxy (``proxy``: ``socks5 10.0.0.1:1080``, nested hops joined by `` > ``) the proxy the
    connection went to."""
    if not finding.get("proxy"):
        return finding["server"]
    return finding["proxy"][0].split(" > ")[0].split(" ", 1)[1]


def _command_word(protocol: str, line: str) -> str:
    """What a client line starts with: the command (after the tag for IMAP), or the SASL data it consists of."""
    words = line.split()
    return words[1] if protocol == "imap" and len(words) > 1 else words[0]


def _status_word(protocol: str, line: str) -> str:
    """A server line's result: the SMTP reply code, POP3's +OK/-ERR, IMAP's tagged OK/NO/BAD."""
    words = line.split()
    if protocol == "smtp":
        return line[:3]
    return words[1] if protocol == "imap" else words[0]


@pytest.mark.parametrize("capture", CAPTURES, ids=IDS)
def test_credential_evidence_frames_agree_with_tshark(capture: Path, tshark: dict[Path, TsharkView]) -> None:
    """Each frame a cleartext-credentials finding cites carries, to tshark, the same command (AUTH, USER, PASS,
    LOGIN, AUTHENTICATE, or the SASL data that follows AUTH) or the same response code; and each frame where tshark
    decodes a password (SMTP AUTH, POP3 PASS, IMAP LOGIN) is cited by one of leakscope's findings."""
    view = tshark[capture]
    cited = set()
    for finding in leakscope(capture, True):
        if finding["type"] != "cleartext-credentials" or finding["protocol"] in ("http", "socks"):
            continue  # the oracle reads mail; HTTP Basic is checked against tshark in tests/test_http.py
        protocol, server = finding["protocol"], _tcp_server(finding)
        for evidence in finding["evidence"]:
            number, line = evidence["frame"], evidence["line"]
            frame = view.frames.get(number)
            assert frame is not None, f"frame {number} is not mail to tshark"
            assert frame.protocol == protocol, f"frame {number}"
            if evidence["side"] == "client":
                assert frame.request and frame.dst == server and frame.src in finding["clients"], f"frame {number}"
                said = {word.casefold() for word in frame.commands + frame.auth_data}
                assert _command_word(protocol, line).casefold() in said, f"frame {number}: {line!r} vs {said}"
                cited.add(number)
            else:
                assert frame.response and frame.src == server, f"frame {number}"
                codes = {code.casefold() for code in frame.codes}
                assert _status_word(protocol, line).casefold() in codes, f"frame {number}: {line!r} vs {codes}"
    passwords = {number for number, frame in view.frames.items() if frame.password and frame.tunnel is None}
    assert passwords <= cited
