"""Real HTTP NTLM and Negotiate: Apache (mod_auth_gssapi, gss-ntlmssp) in front of the lab's Samba DC. Clients
authenticate with real passwords while tcpdump records; the capture's findings and the probe's agree field for
field."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from passive.analysis.pipeline import analyze_captures
from passive.cli.main import main
from passive.findings.kinds import NTLM_INFO
from passive.results.findings_file import read_records
from passive.results.records import finding_record
from tests import lab as L

LEAKSCOPE = [sys.executable, "-c", "from passive.cli.main import main; main()"]
CLIENT = [sys.executable, str(Path(__file__).with_name("http_ntlm_client.py"))]
SERVER = f"{L.SRV_IP}:{L.APACHE_PORT}"
# What gss-ntlmssp puts in its CHALLENGE, asked of winbind: the DC's NetBIOS names, its short host name as DNS
# computer name, no DNS domain or forest, and version 6.2.0.
APACHE_CHALLENGE = {
    "target_name": L.AD_DOMAIN,
    "netbios_computer": L.DC_NAME,
    "netbios_domain": L.AD_DOMAIN,
    "dns_computer": L.DC_NAME.lower(),
    "dns_domain": None,
    "dns_tree": None,
    "os_version": "6.2.0",
}


def _http_ntlm(records: list[dict[str, Any]]) -> dict[str, Any]:
    [record] = [r for r in records if r["type"] == "ntlm-info" and r["server"] == SERVER]
    assert record["protocol"] == "http"
    return record


def test_apache_challenges_passive_and_active_agree(mail_lab: L.MailLab, tmp_path: Path) -> None:
    pcap, active = tmp_path / "apache.pcap", tmp_path / "active.json"
    with mail_lab.recording(pcap, f"tcp port {L.APACHE_PORT}"):
        ntlm = mail_lab.client([*CLIENT, "NTLM", L.SRV_IP, "/EWS/Exchange.asmx", L.USER, L.PASSWORD])
        negotiate = mail_lab.client([*CLIENT, "Negotiate", L.SRV_IP, "/mapi/nspi/", L.USER2, L.PASSWORD2])
        wrong = mail_lab.client([*CLIENT, "NTLM", L.SRV_IP, "/autodiscover/autodiscover.xml", L.USER, L.WRONG_PASSWORD])
        probe = mail_lab.client([*LEAKSCOPE, "probe", "--format", "json", "-o", str(active), f"http://{L.SRV_IP}/"])
    assert (ntlm.returncode, negotiate.returncode, wrong.returncode) == (0, 0, 1), (ntlm, negotiate, wrong)
    assert probe.returncode == 0, probe.stderr.decode()

    results = analyze_captures([str(pcap)])
    passive = _http_ntlm([finding_record(f) for f in results.findings])
    assert {name: passive[name] for name in APACHE_CHALLENGE} == APACHE_CHALLENGE
    assert {u.rpartition("\\")[2] for u in passive["users"]} >= {L.USER, L.USER2}
    assert {d["outcome"] for d in passive["details"]} >= {"success", "failure"}
    assert set(passive["http_endpoints"]) >= {
        "mail.leakscope.test/EWS/Exchange.asmx",
        "mail.leakscope.test/mapi/nspi/",
        f"{L.SRV_IP}/EWS/Exchange.asmx",  # the probe's requests, captured too
    }
    assert results.stats.ntlm_messages["authenticate"] >= 3
    assert not [r for r in (finding_record(f) for f in results.findings) if r["type"] == "mail-service"]

    document = json.loads(active.read_text())
    active_info = _http_ntlm(document["findings"])
    assert {name: active_info[name] for name in APACHE_CHALLENGE} == APACHE_CHALLENGE
    assert active_info["source"] == "active" and active_info["ntlm_over_tls"] is False
    [report] = document["summary"]["probes"]
    challenged = {e["path"] for e in report["endpoints"] if e["challenge"]}
    assert challenged == {"/EWS/Exchange.asmx", "/autodiscover/autodiscover.xml", "/mapi/nspi/", "/mapi/emsmdb/"}
    assert next(e for e in report["endpoints"] if e["path"] == "/")["status"] == 200

    compared = CliRunner().invoke(
        main, ["compare", "--passive", str(pcap), "--active", str(active), "--format", "json"]
    )
    assert compared.exit_code == 0, compared.output
    [server] = [s for s in json.loads(compared.output)["servers"] if s["server"] == SERVER]
    rows = {row["field"]: row["status"] for row in server["fields"] if row["finding"] == "ntlm-info"}
    assert rows == dict.fromkeys(NTLM_INFO.compared, "agree")
    assert read_records(str(active))  # the probe's file is an ordinary findings file
