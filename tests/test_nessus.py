"""Verifying a Nessus scan: the .nessus reader (hardened), and compare --nessus / report --nessus against captures of
the shared corpus and a live probe: confirmed (with file and frame), refuted (what the probe saw), not observed."""

from __future__ import annotations

import asyncio
import json
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from passive.cli.main import main
from passive.results.nessus import NessusError, parse_nessus
from passive.results.nessus_verify import output_names, verify
from passive.results.nmap_xml import NmapXmlError, parse_nmap_xml
from passive.results.xmlstream import MAX_DEPTH
from tests.corpus import require_corpus

NTLM_OUTPUT = """
Nessus was able to obtain the following information about the host, by sending an NTLM SSP request :

  Target Name: SMTPTGT
  NetBIOS Domain Name: SMTPDOM
  NetBIOS Computer Name: SMTPHOST
  Product Version: 10.0.19041
"""


def report_item(port: int, svc: str, plugin_id: int, name: str, output: str = "") -> str:
    return (
        f'<ReportItem port="{port}" svc_name="{svc}" protocol="tcp" severity="2" pluginID="{plugin_id}" '
        f'pluginName="{name}" pluginFamily="SMTP problems"><description>x</description>'
        f"<plugin_output>{output}</plugin_output></ReportItem>"
    )


def nessus_file(hosts: dict[str, list[str]]) -> bytes:
    """A Nessus v2 export as the scanner writes it: Policy, Report, ReportHost with HostProperties, ReportItem."""
    body = "".join(
        f'<ReportHost name="{name}"><HostProperties><tag name="host-ip">{name}</tag>'
        f'<tag name="HOST_START">Mon Jun  3 10:00:00 2024</tag></HostProperties>{"".join(items)}</ReportHost>'
        for name, items in hosts.items()
    )
    return (
        '<?xml version="1.0" ?><NessusClientData_v2><Policy><policyName>mail</policyName></Policy>'
        f'<Report name="scan" xmlns:cm="http://www.nessus.org/cm">{body}</Report></NessusClientData_v2>'
    ).encode()


SCAN = {
    "10.10.11.1": [
        report_item(25, "smtp", 13926, "SMTP Host Information in NTLM SSP", NTLM_OUTPUT),
        report_item(25, "smtp", 36804, "SMTP Authentication Methods", "AUTH NTLM"),
        report_item(25, "smtp", 34861, "SMTP Server Connection Check"),
        report_item(25, "smtp", 10262, "MTA Open Mail Relaying Allowed"),
        report_item(25, "smtp", 19506, "Nessus Scan Information"),  # not mail: ignored
    ],
    "10.10.13.1": [report_item(110, "pop3", 16859, "POP3 Host Information in NTLM SSP")],
    # An HTTP NTLM plugin known by its name (its ID is not in the table).
    "10.10.4.1": [report_item(80, "www", 990001, "HTTP NTLM Information Disclosure", "NetBIOS Domain Name: X")],
    "192.0.2.99": [report_item(25, "smtp", 13926, "SMTP Host Information in NTLM SSP")],
}


def test_nessus_reader_keeps_the_mail_plugins() -> None:
    items = parse_nessus(nessus_file(SCAN))
    assert [(i.ip, i.port, i.plugin_id, i.check, i.protocol) for i in items] == [
        ("10.10.11.1", 25, 13926, "ntlm-info", "smtp"),
        ("10.10.11.1", 25, 36804, "auth-methods", "smtp"),
        ("10.10.11.1", 25, 34861, "mail-service", "smtp"),
        ("10.10.11.1", 25, 10262, "open-relay", "smtp"),
        ("10.10.13.1", 110, 16859, "ntlm-info", "pop3"),
        ("10.10.4.1", 80, 990001, "ntlm-info", "http"),
        ("192.0.2.99", 25, 13926, "ntlm-info", "smtp"),
    ]
    assert output_names(items[0].output) == {
        "target_name": "SMTPTGT",
        "netbios_domain": "SMTPDOM",
        "netbios_computer": "SMTPHOST",
        "os_version": "10.0.19041",
    }


@pytest.mark.parametrize(
    "hostile",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b"<NessusClientData_v2>&b;</NessusClientData_v2>",
        b'<!DOCTYPE x SYSTEM "file:///etc/passwd"><NessusClientData_v2/>',
        b"<nmaprun/>",
        b"not xml at all",
        b"",
    ],
)
def test_hostile_or_foreign_files_are_refused(hostile: bytes) -> None:
    with pytest.raises(NessusError):
        parse_nessus(hostile)


def test_nmap_reader_is_hardened_too_and_reads_http_ntlm_info() -> None:
    with pytest.raises(Exception, match="refused"):
        parse_nmap_xml(b'<!DOCTYPE x [<!ENTITY a "a">]><nmaprun>&a;</nmaprun>')
    xml = (
        b'<nmaprun><host><address addr="10.0.0.9" addrtype="ipv4"/><ports><port protocol="tcp" portid="80">'
        b'<script id="http-ntlm-info" output="x"><elem key="Target_Name">CONTOSO</elem>'
        b'<elem key="NetBIOS_Computer_Name">EXCH19</elem><elem key="Product_Version">10.0.17763</elem>'
        b"</script></port></ports></host></nmaprun>"
    )
    [service] = parse_nmap_xml(xml)
    assert (service.server, service.protocol) == ("10.0.0.9:80", "http")
    assert service.fields["ntlm-info"]["netbios_computer"] == "EXCH19"


EMPTY_ELEMENTS = b"<a/>" * 500_000
NESSUS_HOST = (
    b'<NessusClientData_v2><Report><ReportHost name="10.0.0.1">',
    b"</ReportHost></Report></NessusClientData_v2>",
)
NMAP_HOST = (b'<nmaprun><host><address addr="10.0.0.1" addrtype="ipv4"/><ports>', b"</ports></host></nmaprun>")
READERS = [(parse_nessus, *NESSUS_HOST), (parse_nmap_xml, *NMAP_HOST)]


@pytest.mark.parametrize(("parse", "head", "tail"), READERS, ids=["nessus", "nmap"])
def test_a_file_of_many_elements_is_read_without_its_tree(parse: Any, head: bytes, tail: bytes) -> None:
    """The tree of 2 MB of empty elements took 40 MiB (a 40 MB Nessus file 918 MB; the readers accept 512 MiB and
    64 MiB): elements now leave as they end."""
    data = head + EMPTY_ELEMENTS + tail
    tracemalloc.start()
    try:
        assert parse(data) == []
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


@pytest.mark.parametrize(("parse", "head", "tail"), READERS, ids=["nessus", "nmap"])
def test_elements_nested_past_the_depth_bound_are_refused(parse: Any, head: bytes, tail: bytes) -> None:
    depth = MAX_DEPTH + 1
    with pytest.raises((NessusError, NmapXmlError), match=f"nested deeper than {MAX_DEPTH}"):
        parse(head + b"<a>" * depth + b"</a>" * depth + tail)


def test_verdicts_from_records_and_probe_reports() -> None:
    items = parse_nessus(nessus_file({"10.0.0.5": [report_item(25, "smtp", 13926, "x"), report_item(25, "smtp",
                                      10262, "y")]}))  # fmt: skip
    probe = {"server": "10.0.0.5:25", "status": "ok", "ntlm": "refused", "ntlm_reply": "504 5.7.4 Unrecognized"}
    relay = {"type": "mail-service", "server": "10.0.0.5:25", "protocol": "smtp", "source": "active",
             "relay_test": {"variants_tried": 16, "variants_accepted": 0}}  # fmt: skip
    document = verify(items, [relay], [probe])
    assert [(r["plugin_id"], r["verdict"]) for r in document["records"]] == [(13926, "refuted"), (10262, "refuted")]
    assert "504 5.7.4" in document["records"][0]["reason"] and "16 variants" in document["records"][1]["reason"]
    assert document["summary"] == {"confirmed": 0, "refuted": 2, "not-observed": 0}


@pytest.fixture()
def plain_web_server() -> Iterator[int]:
    """An HTTP server on the loopback that answers every request 200 without any authentication."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nServer: plain\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def start() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    ready.wait(10)
    yield port[0]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_compare_and_report_with_nessus(tmp_path: Path, plain_web_server: int) -> None:
    capture = require_corpus("pcaps", "arkime", "ntlm_synthetic.pcap")
    scan = dict(SCAN)
    scan["127.0.0.1"] = [report_item(plain_web_server, "www", 990001, "HTTP NTLM Information Disclosure")]
    nessus = tmp_path / "scan.nessus"
    nessus.write_bytes(nessus_file(scan))
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["compare", "--passive", str(capture), "--probe", f"http://127.0.0.1:{plain_web_server}/OAB/",
         "--nessus", str(nessus), "--format", "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    verdicts = {(r["server"], r["plugin_id"]): r for r in document["nessus"]["records"]}
    smtp = verdicts[("10.10.11.1:25", 13926)]
    assert smtp["verdict"] == "confirmed" and smtp["evidence"][0]["frame"] == 146
    assert smtp["evidence"][0]["file"] == str(capture)
    assert {name: v["agree"] for name, v in smtp["values"].items()} == {
        "target_name": True, "netbios_domain": False, "netbios_computer": False, "os_version": True,
    }  # fmt: skip  # the synthetic challenge carries a target name and no AV pairs
    assert verdicts[("10.10.11.1:25", 36804)]["verdict"] == "confirmed"
    assert verdicts[("10.10.11.1:25", 34861)]["verdict"] == "confirmed"
    assert verdicts[("10.10.11.1:25", 10262)]["verdict"] == "not-observed"
    assert verdicts[("10.10.13.1:110", 16859)]["verdict"] == "confirmed"
    http = verdicts[("10.10.4.1:80", 990001)]
    assert http["verdict"] == "confirmed" and http["evidence"][0]["frame"] == 46
    assert verdicts[("192.0.2.99:25", 13926)]["verdict"] == "not-observed"
    refuted = verdicts[(f"127.0.0.1:{plain_web_server}", 990001)]
    assert refuted["verdict"] == "refuted" and "/OAB/: 200" in refuted["reason"]
    assert document["nessus"]["summary"] == {"confirmed": 5, "refuted": 1, "not-observed": 2}
    table = runner.invoke(main, ["compare", "--passive", str(capture), "--nessus", str(nessus)])
    assert table.exit_code == 0 and "Nessus verification" in table.output and "confirmed" in table.output

    report = tmp_path / "report.md"
    result = runner.invoke(main, ["report", str(capture), "--nessus", str(nessus), "-o", str(report)])
    assert result.exit_code == 0, result.output
    text = report.read_text()
    assert "## Nessus findings verified" in text
    assert "| 10.10.11.1:25 | 13926 SMTP Host Information in NTLM SSP | confirmed |" in text
    html = tmp_path / "report.html"
    assert runner.invoke(main, ["report", str(capture), "--nessus", str(nessus), "-o", str(html)]).exit_code == 0
    assert 'id="nessus"' in html.read_text()


def test_compare_needs_a_source_beside_nessus(tmp_path: Path) -> None:
    nessus = tmp_path / "scan.nessus"
    nessus.write_bytes(nessus_file(SCAN))
    result = CliRunner().invoke(main, ["compare", "--nessus", str(nessus)])
    assert result.exit_code == 2


def test_refusals_in_traffic_do_not_refute_an_open_relay_and_overlay_tenants_confirm_nothing() -> None:
    """Only a probe refutes: a server that refused some foreign recipients in the traffic may still relay the variants
    Nessus tried. And a server seen at the scanned address only inside an overlay may be another tenant's machine:
    it neither confirms nor refutes what Nessus found at the address."""
    items = parse_nessus(nessus_file({"10.0.0.5": [report_item(25, "smtp", 10262, "y"), report_item(25, "smtp",
                                      13926, "x")]}))  # fmt: skip
    refused = {"type": "open-relay", "server": "10.0.0.5:25", "protocol": "smtp", "source": "passive",
               "accepted": False, "verdict": "refused"}  # fmt: skip
    document = verify(items, [refused], [])
    relay = document["records"][0]
    assert relay["verdict"] == "not-observed", relay
    assert "refused" in relay["reason"] and "probe --relay-test" in relay["reason"]
    tenant = {"type": "ntlm-info", "server": "10.0.0.5:25", "protocol": "smtp", "source": "passive",
              "network": "vxlan-vni:100", "netbios_computer": "MAILA", "evidence": []}  # fmt: skip
    accepted = {**refused, "accepted": True, "verdict": "open-relay", "network": "vxlan-vni:100"}
    document = verify(items, [tenant, accepted], [])
    assert [r["verdict"] for r in document["records"]] == ["not-observed", "not-observed"]
    assert all("vxlan-vni:100" in r["reason"] for r in document["records"]), document["records"]


def test_only_an_open_relay_verdict_confirms_nessus_open_relaying() -> None:
    """A recipient accepted for a domain the server may be MX for (possible-relay), or for a client in its own
    network, shows no relaying for anyone: not observed, and the probe named; an open-relay verdict confirms."""
    items = parse_nessus(nessus_file({"10.0.0.5": [report_item(25, "smtp", 10262, "y")]}))
    base = {"type": "open-relay", "server": "10.0.0.5:25", "protocol": "smtp", "source": "passive", "accepted": True}
    for verdict in ("possible-relay", "relays-for-internal-clients", "relays-for-trusted-network"):
        [relay] = verify(items, [{**base, "verdict": verdict, "evidence": []}], [])["records"]
        assert relay["verdict"] == "not-observed" and verdict in relay["reason"], relay
        assert "probe --relay-test" in relay["reason"]
    [relay] = verify(items, [{**base, "verdict": "open-relay", "evidence": []}], [])["records"]
    assert relay["verdict"] == "confirmed", relay


def test_a_probe_relay_test_that_got_a_variant_accepted_never_refutes() -> None:
    """The probe chose the destination: an accepted variant was relayed for it, whatever verdict the server's names
    allowed (possible-relay for a server that gives none, without --local-domain)."""
    items = parse_nessus(nessus_file({"10.0.0.5": [report_item(25, "smtp", 10262, "x")]}))
    service = {"type": "mail-service", "server": "10.0.0.5:25", "protocol": "smtp", "source": "active",
               "relay_test": {"variants_tried": 3, "variants_accepted": 1}, "evidence": []}  # fmt: skip
    relay = {"type": "open-relay", "server": "10.0.0.5:25", "protocol": "smtp", "source": "active",
             "accepted": True, "verdict": "possible-relay", "evidence": []}  # fmt: skip
    [record] = verify(items, [service, relay], [{"server": "10.0.0.5:25", "status": "ok"}])["records"]
    assert record["verdict"] == "confirmed" and "1 of 3 variants accepted" in record["reason"], record
    refused = {**service, "relay_test": {"variants_tried": 3, "variants_accepted": 0}}
    [record] = verify(items, [refused], [{"server": "10.0.0.5:25", "status": "ok"}])["records"]
    assert record["verdict"] == "refuted"
