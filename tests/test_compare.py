"""leakscope compare: per server and field, passive against active (and nmap), agree / differ / only one side."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from passive.cli.compare import MAX_CELL_TEXT, render_comparison
from passive.cli.main import main
from passive.results.compare import compare, from_nmap, from_records
from passive.results.findings_file import read_records
from passive.results.nmap_xml import MAX_MECHANISMS, NmapXmlError, parse_nmap_xml
from tests import lab as L

LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
PCAPS = Path(__file__).resolve().parents[1] / "pcaps"

NMAP_XML = b"""<?xml version="1.0"?>
<nmaprun scanner="nmap"><host><address addr="10.0.0.1" addrtype="ipv4"/><ports>
<port protocol="tcp" portid="25"><state state="open"/>
<script id="smtp-commands" output="mx.example, PIPELINING, STARTTLS, AUTH NTLM LOGIN, 8BITMIME"/>
<script id="smtp-ntlm-info" output="..."><elem key="Target_Name">CORP</elem>
<elem key="NetBIOS_Computer_Name">MX1</elem><elem key="DNS_Computer_Name">mx1.corp.example</elem>
<elem key="Product_Version">10.0.17763</elem></script>
<script id="smtp-open-relay" output="Server is an open relay (2/16 tests)"/></port>
<port protocol="tcp" portid="110"><state state="open"/>
<script id="pop3-capabilities" output="TOP USER SASL(PLAIN NTLM) STLS UIDL"/></port>
</ports></host></nmaprun>"""


def _record(kind: str, server: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "server": server, "protocol": "smtp", "source": "x", **fields}


def test_nmap_xml_is_read_into_finding_fields() -> None:
    services = {s.server: s for s in parse_nmap_xml(NMAP_XML)}
    smtp = services["10.0.0.1:25"]
    assert smtp.protocol == "smtp"
    assert smtp.fields["auth-methods"] == {"mechanisms": ["NTLM", "LOGIN"], "starttls_offered": True}
    ntlm = smtp.fields["ntlm-info"]
    assert (ntlm["target_name"], ntlm["netbios_computer"], ntlm["dns_tree"]) == ("CORP", "MX1", None)
    assert smtp.fields["open-relay"] == {"accepted": True, "variants_accepted": 2}
    pop3 = services["10.0.0.1:110"].fields["auth-methods"]
    assert pop3["mechanisms"] == ["PLAIN", "NTLM", "USER"] and pop3["starttls_offered"] is True


def test_a_long_mechanism_list_is_read_in_linear_time_and_kept_bounded() -> None:
    """Each name was compared with every name kept before it: 50 000 of them (330 KB of XML) took 12 s, and the
    file may hold 64 MiB."""
    words = " ".join(f"M{i}" for i in range(50_000))
    data = NMAP_XML.replace(b"AUTH NTLM LOGIN", f"AUTH {words} AUTH=X{'Y' * 100}".encode())
    data = data.replace(b"SASL(PLAIN NTLM)", f"SASL({words} {words})".encode())
    started = time.process_time()
    services = {s.server: s for s in parse_nmap_xml(data)}
    assert time.process_time() - started < 2
    expected = [f"M{i}" for i in range(MAX_MECHANISMS)]
    assert services["10.0.0.1:25"].fields["auth-methods"]["mechanisms"] == expected
    assert services["10.0.0.1:110"].fields["auth-methods"]["mechanisms"] == [*expected, "USER"]


@pytest.mark.parametrize(
    "data",
    [b"", b"not xml", b"<other/>", b'<!DOCTYPE x [<!ENTITY a "aaaa">]><nmaprun>&a;</nmaprun>'],
)
def test_bad_nmap_xml_is_an_error(data: bytes) -> None:
    with pytest.raises(NmapXmlError):
        parse_nmap_xml(data)


def test_statuses_per_field() -> None:
    passive = from_records(
        "passive",
        [
            _record("ntlm-info", "10.0.0.1:25", dns_computer="mx1.corp.example", dns_tree=None, os_version="10.0.1"),
            _record("auth-methods", "10.0.0.1:25", mechanisms=["LOGIN", "NTLM"], mechanisms_after_tls=None),
            _record("open-relay", "10.0.0.1:25", accepted=False),
            _record("open-relay", "10.0.0.1:25", accepted=True),
        ],
    )
    active = from_records(
        "active",
        [
            _record("ntlm-info", "10.0.0.1:25", dns_computer="mx1.corp.example", dns_tree=None, os_version="10.0.2"),
            _record("auth-methods", "10.0.0.1:25", mechanisms=["NTLM", "LOGIN"], mechanisms_after_tls=["PLAIN"]),
            _record("mail-service", "10.0.0.2:25", banner="x"),
        ],
    )
    document = compare([passive, active, from_nmap(parse_nmap_xml(NMAP_XML))])
    rows = {
        (s["server"], r["finding"], r["field"]): (r["status"], r["values"])
        for s in document["servers"]
        for r in s["fields"]
    }
    assert rows[("10.0.0.1:25", "ntlm-info", "dns_computer")][0] == "agree"
    assert rows[("10.0.0.1:25", "ntlm-info", "os_version")][0] == "differ"
    assert rows[("10.0.0.1:25", "ntlm-info", "dns_tree")][0] == "agree"  # nobody saw a tree name: a fact
    assert rows[("10.0.0.1:25", "auth-methods", "mechanisms")][0] == "agree"  # order does not matter
    assert rows[("10.0.0.1:25", "auth-methods", "mechanisms_after_tls")] == ("only-active", {"active": ["PLAIN"]})
    assert rows[("10.0.0.1:25", "open-relay", "accepted")] == ("agree", {"passive": True, "nmap": True})
    assert rows[("10.0.0.2:25", "mail-service", "banner")][0] == "only-active"
    assert rows[("10.0.0.1:110", "auth-methods", "mechanisms")][0] == "only-nmap"
    assert document["summary"]["differ"] == 1


def test_findings_files_json_and_jsonl_are_read(tmp_path: Path) -> None:
    records = [_record("mail-service", "10.0.0.1:25", banner="b")]
    (tmp_path / "a.jsonl").write_text(json.dumps(records[0]) + '\n{"type": "summary"}\n')
    (tmp_path / "a.json").write_text(json.dumps({"findings": records, "summary": {}}))
    assert read_records(tmp_path / "a.jsonl")[0]["banner"] == "b"
    assert read_records(tmp_path / "a.json") == records


def test_compare_table_keeps_hostile_values_inert() -> None:
    hostile = "\x1b]8;;http://x\x07[bold]x[/]"
    document = compare(
        [
            from_records("passive", [_record("mail-service", "10.0.0.1:25", banner=hostile)]),
            from_records("active", [_record("mail-service", "10.0.0.1:25", banner="other")]),
        ]
    )
    console = Console(record=True, width=200, color_system=None)
    render_comparison(console, document)
    text = console.export_text()
    assert "\x1b" not in text and "\x07" not in text and "[bold]x[/]" in text and "differ" in text


def test_a_huge_value_from_a_findings_file_is_cut_in_the_table() -> None:
    """A findings file may hold a value of any length: the table cuts it (a 20 MB banner took 325 s to draw)."""
    passive = [_record("mail-service", "10.0.0.1:25", banner="A" * 1_000_000)]
    active = [_record("mail-service", "10.0.0.1:25", banner="mx ESMTP")]
    document = compare([from_records("passive", passive), from_records("active", active)])
    console = Console(record=True, width=120, file=io.StringIO(), color_system=None)
    render_comparison(console, document)
    shown = console.export_text()
    assert "…" in shown and "mx ESMTP" in shown and len(shown) < 3 * MAX_CELL_TEXT


def test_cli_compare_capture_against_findings_file(tmp_path: Path) -> None:
    capture = PCAPS / "smtp-win2019-ntlm-success-curl.pcap"
    expected = json.loads((PCAPS / "smtp-win2019-ntlm-success-curl.expected.json").read_text())
    active = tmp_path / "active.jsonl"
    names = {k: v for k, v in expected["ntlm_server"].items() if k != "server_time_present"}
    active.write_text(json.dumps(_record("ntlm-info", expected["server"], **names)) + "\n")
    result = CliRunner().invoke(
        main, ["compare", "--passive", str(capture), "--active", str(active), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    (server,) = document["servers"]
    statuses = {r["field"]: r["status"] for r in server["fields"] if r["finding"] == "ntlm-info"}
    assert statuses["dns_computer"] == "agree" and statuses["os_version"] == "agree"
    assert statuses["os_release"] == "only-passive"


@pytest.mark.parametrize(
    "args",
    [["--passive", "/nonexistent.pcap", "--active", "/nonexistent.jsonl"], ["--nmap", str(PCAPS / "README.md")]],
)
def test_cli_compare_bad_input_is_one_line_exit_1(args: list[str]) -> None:
    extra = ["--active", str(PCAPS / "README.md")] if args[0] == "--nmap" else []
    result = CliRunner().invoke(main, ["compare", *args, *extra])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_cli_compare_needs_two_sources() -> None:
    result = CliRunner().invoke(main, ["compare", "--nmap", "x.xml"])
    assert result.exit_code == 2


# ---- the mail lab: a capture-recorded session's server, analyzed and probed -------------------------------------


def _curl(url: str, login: str, message: Path | None = None) -> list[str]:
    argv = ["curl", "-sS", "--max-time", "30", url, "-u", f"{L.AD_DOMAIN}\\{L.USER}:{L.PASSWORD}"]
    argv += ["--login-options", login]
    if message is not None:
        return [*argv, "--mail-from", L.MAIL_FROM, "--mail-rcpt", L.MAIL_TO, "-T", str(message)]
    return [*argv, "-o", "/dev/null"]


def test_probe_of_a_recorded_server_agrees_with_the_capture(mail_lab: L.MailLab, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    pcap, message = tmp_path / "session.pcap", tmp_path / "message.eml"
    message.write_text(f"From: <{L.MAIL_FROM}>\r\nTo: <{L.MAIL_TO}>\r\nSubject: compare\r\n\r\nHello.\r\n")
    with mail_lab.recording(pcap, f"tcp and host {L.SRV_IP}"):
        for argv in (
            _curl(f"smtp://{L.SRV_IP}:25/{L.EHLO_NAME}", "AUTH=NTLM", message),
            _curl(f"pop3://{L.SRV_IP}:110/", "AUTH=NTLM"),
            _curl(f"imap://{L.SRV_IP}:143/", "AUTH=NTLM"),
        ):
            result = mail_lab.client(argv)
            assert result.returncode == 0, result.stderr
    proc = mail_lab.client(
        [*LEAKSCOPE, "compare", "--passive", str(pcap), "--probe-seen", "--format", "json"], timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["sources"] == ["passive", "active"]
    servers = {s["server"]: s for s in document["servers"]}
    assert set(servers) == {f"{L.SRV_IP}:{port}" for port in (25, 110, 143)}
    for server in servers.values():
        statuses = {(r["finding"], r["field"]): r["status"] for r in server["fields"]}
        assert "differ" not in statuses.values(), server
        for name in ("target_name", "netbios_computer", "netbios_domain", "dns_computer", "dns_domain", "os_version"):
            assert statuses[("ntlm-info", name)] == "agree"
        assert statuses[("mail-service", "banner")] == "agree"
        assert statuses[("auth-methods", "mechanisms")] == "agree"
        # what the wire cannot show: mechanisms offered inside TLS
        assert statuses[("auth-methods", "mechanisms_after_tls")] == "only-active"


def test_overlay_tenants_at_one_address_are_compared_apart() -> None:
    """Two tenants' servers at one address (findings with a ``network``) stay two servers: merged, one tenant's names
    would be set against a probe's answer as if they were the other's. A probe reaches an address, not a tenant: its
    findings compare with the capture's server seen outside any overlay."""
    passive = from_records(
        "passive",
        [
            _record("ntlm-info", "10.0.0.1:25", network="vxlan-vni:100", netbios_computer="MAILA"),
            _record("ntlm-info", "10.0.0.1:25", network="vxlan-vni:200", netbios_computer="MAILB"),
            _record("ntlm-info", "10.0.0.1:25", netbios_computer="NATIVE"),
        ],
    )
    active = from_records("active", [_record("ntlm-info", "10.0.0.1:25", netbios_computer="NATIVE")])
    document = compare([passive, active])
    rows = {
        (s["server"], s.get("network"), r["field"]): (r["status"], r["values"])
        for s in document["servers"]
        for r in s["fields"]
        if r["field"] == "netbios_computer"
    }
    assert rows == {
        ("10.0.0.1:25", None, "netbios_computer"): ("agree", {"passive": "NATIVE", "active": "NATIVE"}),
        ("10.0.0.1:25", "vxlan-vni:100", "netbios_computer"): ("only-passive", {"passive": "MAILA"}),
        ("10.0.0.1:25", "vxlan-vni:200", "netbios_computer"): ("only-passive", {"passive": "MAILB"}),
    }
    console = Console(record=True, width=100)
    render_comparison(console, document)
    text = console.export_text()
    assert "10.0.0.1:25 in vxlan-vni:100" in text and "10.0.0.1:25 in vxlan-vni:200" in text


def test_the_table_draws_a_bounded_number_of_servers_and_says_how_many_it_left_out(monkeypatch: Any) -> None:
    """Drawing is what is slow (49,000 servers took 110 s): the table stops at MAX_SERVERS_SHOWN, the JSON has all."""
    import passive.cli.compare as cli_compare

    monkeypatch.setattr(cli_compare, "MAX_SERVERS_SHOWN", 5)
    records = [_record("mail-service", f"10.0.0.{n}:25", banner=f"b{n}") for n in range(1, 13)]
    document = compare([from_records("passive", records)])
    assert len(document["servers"]) == 12
    console = Console(record=True, width=100)
    render_comparison(console, document)
    text = console.export_text()
    assert sum(f"10.0.0.{n}:25 " in text for n in range(1, 13)) == 5
    assert "... and 7 more servers, not shown: --format json writes them all" in text
    assert "Sources: passive. only-passive: 12" in text  # the totals count every server
