#!/usr/bin/env python3
"""Regenerate the leakscope test captures from real mail software.

Everything runs inside two network namespaces created here (a server side and a
client side joined by a veth pair): a Samba AD DC, Dovecot (POP3/IMAP, NTLM through
winbind), Postfix (SMTP, SASL through Dovecot) and a small Windows-like NTLM server.
That lab is ``tests/lab.py``, shared with the test suite under other namespace names.
Real clients (curl, swaks, fetchmail) are driven against it while tcpdump records each
session into its own pcap, and the ground truth of every session is written next to it
as ``<name>.expected.json``.

Usage (root, Debian 12): python3 pcaps/make_captures.py [--only NAME ...] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.lab import (  # the lab lives with the tests; this script runs from anywhere
    AD_DOMAIN,
    CAPTURE_NAMES,
    CLIENT_IP,
    CLIENT_TIMEOUT,
    DOVECOT_GREETING,
    DOVECOT_MECHS,
    EHLO_NAME,
    FAKE_MECHS,
    FAKE_PROFILES,
    HOSTILE_IP,
    IMAP_PRELOGIN_CAPS,
    MAIL_FROM,
    MAIL_TO,
    PASSWORD,
    PASSWORD2,
    POSTFIX_BANNER,
    RELAY_HOST,
    RELAY_IP,
    RELAY_RCPT,
    SAMBA_NTLM_SERVER,
    SRV_IP,
    USER,
    USER2,
    WIN2019_IP,
    WIN2022_IP,
    WRONG_PASSWORD,
    Env,
    fake_banners,
    fake_main,
    in_ns,
    log,
    missing_tools,
    ntlm_version,
    run,
    start_servers,
    stop_proc,
    teardown,
)

OUT_DIR = Path(__file__).resolve().parent
NS_CLI = CAPTURE_NAMES.ns_cli
VETH_CLI = CAPTURE_NAMES.veth_cli

# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    name: str
    description: str
    protocol: str
    server_ip: str
    port: int
    argv: list[str]
    facts: dict[str, Any]
    must_contain: list[str] = field(default_factory=list)
    must_not_contain: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # client-side files: name -> content


def ntlm_client(user: str, domain: str | None, workstation: str | None, version: str, password: str) -> dict[str, Any]:
    return {"user": user, "domain": domain, "workstation": workstation, "ntlm_version": version, "password": password}


def fake_server_facts(ip: str) -> dict[str, Any]:
    p = FAKE_PROFILES[ip]
    keys = ("target_name", "netbios_computer", "netbios_domain", "dns_computer", "dns_domain", "dns_tree")
    facts = {k: p[k] for k in keys}
    facts["server_time_present"] = True
    facts["os_version"] = ".".join(str(v) for v in p["version"])
    return facts


MESSAGE = f"From: <{MAIL_FROM}>\r\nTo: <{MAIL_TO}>\r\nSubject: leakscope capture\r\n\r\nHello.\r\n"


def curl(
    url: str,
    user: str,
    password: str,
    *,
    login: str | None = None,
    sasl_ir: bool = False,
    starttls: bool = False,
    smtp: bool = False,
) -> list[str]:
    argv = ["curl", "-sS", "-v", "--max-time", "30", url, "-u", f"{user}:{password}"]
    if login:
        argv += ["--login-options", login]
    if sasl_ir:
        argv.append("--sasl-ir")
    if starttls:
        argv += ["--ssl-reqd", "-k"]
    if smtp:
        argv += ["--mail-from", MAIL_FROM, "--mail-rcpt", MAIL_TO, "-T", "{dir}/message.eml"]
    else:
        argv += ["-o", "/dev/null"]
    return argv


def swaks(server: str, port: int, *extra: str, mail_from: str = MAIL_FROM, rcpt: str = MAIL_TO) -> list[str]:
    return [
        "swaks",
        "--server",
        server,
        "--port",
        str(port),
        "--ehlo",
        EHLO_NAME,
        "--from",
        mail_from,
        "--to",
        rcpt,
        "--timeout",
        "30",
        "--header",
        "Subject: leakscope capture",
        "--body",
        "Hello.",
        *extra,
    ]


def swaks_auth(mech: str, user: str, password: str, *extra: str, port: int = 25) -> list[str]:
    return swaks(SRV_IP, port, "--auth", mech, "--auth-user", user, "--auth-password", password, *extra)


def fetchmail_rc(port: int, auth: str, user: str, password: str, proto: str = "POP3") -> str:
    # sslproto '' keeps fetchmail from switching to STLS on its own
    return (
        f"set no syslog\npoll {SRV_IP} proto {proto} port {port} auth {auth}\n"
        f"  user '{user}' there with password '{password}' is 'root' here\n"
        "  keep\n  sslproto ''\n  mda '/bin/cat >/dev/null'\n"
    )


def fetchmail() -> list[str]:
    return ["fetchmail", "-f", "{dir}/fetchmailrc", "--nodetach", "--nosyslog", "-v", "--timeout", "30"]


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def facts(
    software: str,
    banner: str,
    mechs: dict[str, Any],
    *,
    visible: bool = True,
    tls: bool = False,
    ntlm_server: dict[str, Any] | None = None,
    ntlm_client: dict[str, Any] | None = None,
    credentials: list[dict[str, str]] | None = None,
    hidden_credentials: list[dict[str, str]] | None = None,
    outcome: str | None = None,
    relay: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "client_software": software,
        "banner": banner,
        "mechanisms": mechs,
        "mechanisms_visible": visible,
        "tls": tls,
        "ntlm_server": ntlm_server,
        "ntlm_client": ntlm_client,
        "credentials": credentials or [],
        "hidden_credentials": hidden_credentials or [],
        "outcome": outcome,
        "relay": relay,
    }


def scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    dc_user = f"{AD_DOMAIN}\\{USER}"
    pop3_banner = f"+OK {DOVECOT_GREETING}"
    imap_banner = (
        f"* OK [CAPABILITY {IMAP_PRELOGIN_CAPS} {' '.join('AUTH=' + m for m in DOVECOT_MECHS)}] {DOVECOT_GREETING}"
    )
    banners = {"smtp": POSTFIX_BANNER, "pop3": pop3_banner, "imap": imap_banner}
    mechs = {"before_tls": DOVECOT_MECHS, "after_tls": DOVECOT_MECHS}
    ok_marker = {"smtp": "235 2.7.0", "pop3": "+OK Logged in.", "imap": "OK [CAPABILITY"}
    bad_marker = {
        "smtp": "535 5.7.8",
        "pop3": "-ERR [AUTH] Authentication failed.",
        "imap": "NO [AUTHENTICATIONFAILED]",
    }
    curl_ws = "WORKSTATION"  # curl's fixed NTLM workstation name
    # Authen::NTLM (swaks) and fetchmail put the user name in the workstation field and answer with NTLMv1.
    v1_clients = {"swaks", "fetchmail"}

    def ntlm_samba(name: str, desc: str, proto: str, port: int, argv: list[str], software: str, pw: str) -> Scenario:
        ok = pw == PASSWORD
        if software in v1_clients:
            client = ntlm_client(USER, AD_DOMAIN, USER, "NTLMv1", pw)
        else:
            client = ntlm_client(USER, AD_DOMAIN, curl_ws, "NTLMv2", pw)
        # fetchmail goes straight to AUTH NTLM on POP3, without CAPA
        visible = not (software == "fetchmail" and proto == "pop3")
        return Scenario(
            name,
            desc,
            proto,
            SRV_IP,
            port,
            argv,
            facts(
                software,
                banners[proto],
                mechs,
                visible=visible,
                ntlm_server=SAMBA_NTLM_SERVER,
                ntlm_client=client,
                outcome="success" if ok else "failure",
            ),
            must_contain=["TlRMTVNTUAAC", "TlRMTVNTUAAD", ok_marker[proto] if ok else bad_marker[proto]],
        )

    # NTLM against the Samba DC, success and wrong password, per protocol and client.
    for pw in (PASSWORD, WRONG_PASSWORD):
        tag = "success" if pw == PASSWORD else "failure"
        smtp_url = f"smtp://{SRV_IP}:25/{EHLO_NAME}"
        out.append(
            ntlm_samba(
                f"smtp-ntlm-{tag}-curl",
                f"SMTP AUTH NTLM ({tag}) from curl, no initial response",
                "smtp",
                25,
                curl(smtp_url, dc_user, pw, login="AUTH=NTLM", smtp=True),
                "curl",
                pw,
            )
        )
        out.append(
            ntlm_samba(
                f"smtp-ntlm-{tag}-curl-sasl-ir",
                f"SMTP AUTH NTLM ({tag}) from curl --sasl-ir",
                "smtp",
                25,
                curl(smtp_url, dc_user, pw, login="AUTH=NTLM", sasl_ir=True, smtp=True),
                "curl",
                pw,
            )
        )
        out.append(
            ntlm_samba(
                f"smtp-ntlm-{tag}-swaks",
                f"SMTP AUTH NTLM ({tag}) from swaks (Authen::NTLM)",
                "smtp",
                25,
                swaks_auth("NTLM", USER, pw, "--auth-extra", f"domain={AD_DOMAIN}"),
                "swaks",
                pw,
            )
        )
        out.append(
            ntlm_samba(
                f"pop3-ntlm-{tag}-curl",
                f"POP3 AUTH NTLM ({tag}) from curl" + (" --sasl-ir" if tag == "failure" else ""),
                "pop3",
                110,
                curl(f"pop3://{SRV_IP}:110/", dc_user, pw, login="AUTH=NTLM", sasl_ir=tag == "failure"),
                "curl",
                pw,
            )
        )
        sc = ntlm_samba(
            f"pop3-ntlm-{tag}-fetchmail",
            f"POP3 AUTH NTLM ({tag}) from fetchmail",
            "pop3",
            110,
            fetchmail(),
            "fetchmail",
            pw,
        )
        sc.files["fetchmailrc"] = fetchmail_rc(110, "ntlm", f"{USER}@{AD_DOMAIN}", pw)
        out.append(sc)
        out.append(
            ntlm_samba(
                f"imap-ntlm-{tag}-curl",
                f"IMAP AUTHENTICATE NTLM ({tag}) from curl" + (" --sasl-ir" if tag == "success" else ""),
                "imap",
                143,
                curl(f"imap://{SRV_IP}:143/", dc_user, pw, login="AUTH=NTLM", sasl_ir=tag == "success"),
                "curl",
                pw,
            )
        )

    # Non-standard ports.
    out.append(
        ntlm_samba(
            "smtp-2525-ntlm-success-curl",
            "SMTP on port 2525, AUTH NTLM from curl",
            "smtp",
            2525,
            curl(f"smtp://{SRV_IP}:2525/{EHLO_NAME}", dc_user, PASSWORD, login="AUTH=NTLM", smtp=True),
            "curl",
            PASSWORD,
        )
    )
    out.append(
        ntlm_samba(
            "pop3-1110-ntlm-success-curl",
            "POP3 on port 1110, AUTH NTLM from curl",
            "pop3",
            1110,
            curl(f"pop3://{SRV_IP}:1110/", dc_user, PASSWORD, login="AUTH=NTLM"),
            "curl",
            PASSWORD,
        )
    )

    def clear(
        name: str,
        desc: str,
        proto: str,
        port: int,
        argv: list[str],
        software: str,
        mech: str,
        markers: list[str],
        visible: bool = True,
    ) -> Scenario:
        cred = {"mechanism": mech, "user": USER2, "password": PASSWORD2}
        return Scenario(
            name,
            desc,
            proto,
            SRV_IP,
            port,
            argv,
            facts(software, banners[proto], mechs, visible=visible, credentials=[cred], outcome="success"),
            must_contain=[*markers, ok_marker[proto]],
        )

    # Clear-text credentials.
    plain_b64 = b64(f"\0{USER2}\0{PASSWORD2}")
    out.append(
        clear(
            "smtp-auth-plain-swaks",
            "SMTP AUTH PLAIN without TLS from swaks",
            "smtp",
            25,
            swaks_auth("PLAIN", USER2, PASSWORD2),
            "swaks",
            "PLAIN",
            [f"AUTH PLAIN {plain_b64}"],
        )
    )
    out.append(
        clear(
            "smtp-auth-login-swaks",
            "SMTP AUTH LOGIN without TLS from swaks",
            "smtp",
            25,
            swaks_auth("LOGIN", USER2, PASSWORD2),
            "swaks",
            "LOGIN",
            ["AUTH LOGIN", b64(USER2), b64(PASSWORD2)],
        )
    )
    sc = clear(
        "pop3-user-pass-fetchmail",
        "POP3 USER/PASS from fetchmail",
        "pop3",
        110,
        fetchmail(),
        "fetchmail",
        "USER",
        [f"USER {USER2}", f"PASS {PASSWORD2}"],
        visible=False,
    )
    sc.files["fetchmailrc"] = fetchmail_rc(110, "password", USER2, PASSWORD2)
    out.append(sc)
    out.append(
        clear(
            "pop3-auth-plain-curl",
            "POP3 AUTH PLAIN from curl",
            "pop3",
            110,
            curl(f"pop3://{SRV_IP}:110/", USER2, PASSWORD2, login="AUTH=PLAIN"),
            "curl",
            "PLAIN",
            ["AUTH PLAIN", plain_b64],
        )
    )
    # curl 7.88 cannot force the IMAP LOGIN command while AUTH= mechanisms are offered; fetchmail uses it.
    for port in (143, 1143):
        name = "imap-login-fetchmail" if port == 143 else "imap-1143-login-fetchmail"
        desc = "IMAP LOGIN command from fetchmail" + ("" if port == 143 else " on port 1143")
        sc = clear(name, desc, "imap", port, fetchmail(), "fetchmail", "LOGIN", [f'LOGIN "{USER2}" "{PASSWORD2}"'])
        sc.files["fetchmailrc"] = fetchmail_rc(port, "password", USER2, PASSWORD2, proto="IMAP")
        out.append(sc)
    out.append(
        clear(
            "imap-authenticate-plain-curl",
            "IMAP AUTHENTICATE PLAIN from curl",
            "imap",
            143,
            curl(f"imap://{SRV_IP}:143/", USER2, PASSWORD2, login="AUTH=PLAIN"),
            "curl",
            "PLAIN",
            ["AUTHENTICATE PLAIN", plain_b64],
        )
    )

    # STARTTLS before AUTH: only the switch to TLS is visible.
    hidden = [PASSWORD2, plain_b64, "AUTH PLAIN", "AUTHENTICATE"]
    for name, desc, proto, port, argv, software, tls_mechs, marker in (
        (
            "smtp-starttls-auth-swaks",
            "SMTP submission (587): STARTTLS, then AUTH PLAIN inside TLS",
            "smtp",
            587,
            swaks_auth("PLAIN", USER2, PASSWORD2, "--tls", port=587),
            "swaks",
            {"before_tls": [], "after_tls": DOVECOT_MECHS},
            "220 2.0.0 Ready to start TLS",
        ),
        (
            "pop3-stls-auth-curl",
            "POP3 STLS, then AUTH PLAIN inside TLS",
            "pop3",
            110,
            curl(f"pop3://{SRV_IP}:110/", USER2, PASSWORD2, login="AUTH=PLAIN", starttls=True),
            "curl",
            mechs,
            "+OK Begin TLS negotiation now.",
        ),
        (
            "imap-starttls-auth-curl",
            "IMAP STARTTLS, then AUTHENTICATE PLAIN inside TLS",
            "imap",
            143,
            curl(f"imap://{SRV_IP}:143/", USER2, PASSWORD2, login="AUTH=PLAIN", starttls=True),
            "curl",
            mechs,
            "OK Begin TLS negotiation now.",
        ),
    ):
        cred = {"mechanism": "PLAIN", "user": USER2, "password": PASSWORD2}
        out.append(
            Scenario(
                name,
                desc,
                proto,
                SRV_IP,
                port,
                argv,
                facts(software, banners[proto], tls_mechs, tls=True, hidden_credentials=[cred], outcome="success"),
                must_contain=[marker],
                must_not_contain=hidden,
            )
        )

    # Relay: an open relay accepts mail for a foreign domain, the normal server refuses it.
    relay_banner = f"220 {RELAY_HOST} ESMTP Postfix (Debian/GNU)"
    relay_mechs = {"before_tls": [], "after_tls": None}
    for name, desc, ip, sender, accepted, banner, rmechs, marker in (
        (
            "smtp-open-relay-swaks",
            "Open relay accepts alice@leakscope.test -> victim@example.net",
            RELAY_IP,
            MAIL_FROM,
            True,
            relay_banner,
            relay_mechs,
            "250 2.0.0 Ok: queued",
        ),
        (
            "smtp-open-relay-null-sender-swaks",
            "Open relay accepts <> -> victim@example.net",
            RELAY_IP,
            "",
            True,
            relay_banner,
            relay_mechs,
            "250 2.0.0 Ok: queued",
        ),
        (
            "smtp-relay-denied-swaks",
            "Normal Postfix refuses to relay to victim@example.net",
            SRV_IP,
            MAIL_FROM,
            False,
            POSTFIX_BANNER,
            mechs,
            "554 5.7.1",
        ),
    ):
        relay = {"mail_from": sender, "rcpt_to": RELAY_RCPT, "accepted": accepted}
        out.append(
            Scenario(
                name,
                desc,
                "smtp",
                ip,
                25,
                swaks(ip, 25, mail_from=sender or "<>", rcpt=RELAY_RCPT),
                facts("swaks", banner, rmechs, relay=relay),
                must_contain=[f"MAIL FROM:<{sender}>", f"RCPT TO:<{RELAY_RCPT}>", marker],
            )
        )

    # Banner-only connection checks; only IMAP shows its mechanisms in the greeting.
    for name, proto, port, argv in (
        (
            "smtp-banner-only-swaks",
            "smtp",
            25,
            ["swaks", "--server", SRV_IP, "--port", "25", "--quit-after", "connect", "--timeout", "30"],
        ),
        ("pop3-banner-only", "pop3", 110, ["{python}", "{script}", "--banner-check", "pop3", SRV_IP, "110"]),
        ("imap-banner-only", "imap", 143, ["{python}", "{script}", "--banner-check", "imap", SRV_IP, "143"]),
    ):
        software = "swaks" if argv[0] == "swaks" else "python-socket"
        out.append(
            Scenario(
                name,
                f"{proto.upper()} banner check: connect, read greeting, quit",
                proto,
                SRV_IP,
                port,
                argv,
                facts(software, banners[proto], mechs, visible=proto == "imap"),
            )
        )

    # Windows-like challenges answered to curl's real Type 1 / Type 3.
    for name, desc, ip, proto, pw_ok, sasl_ir in (
        (
            "smtp-win2019-ntlm-success-curl",
            "Windows Server 2019-like SMTP, NTLM success",
            WIN2019_IP,
            "smtp",
            True,
            False,
        ),
        (
            "pop3-win2019-ntlm-failure-curl",
            "Windows Server 2019-like POP3, NTLM wrong password",
            WIN2019_IP,
            "pop3",
            False,
            False,
        ),
        (
            "imap-win2019-ntlm-success-curl",
            "Windows Server 2019-like IMAP, NTLM success (--sasl-ir)",
            WIN2019_IP,
            "imap",
            True,
            True,
        ),
        (
            "smtp-win2022-ntlm-success-curl",
            "Windows Server 2022-like SMTP, NTLM success (--sasl-ir)",
            WIN2022_IP,
            "smtp",
            True,
            True,
        ),
        (
            "pop3-win2022-ntlm-success-curl",
            "Windows Server 2022-like POP3, NTLM success",
            WIN2022_IP,
            "pop3",
            True,
            False,
        ),
        (
            "imap-win2022-ntlm-failure-curl",
            "Windows Server 2022-like IMAP, NTLM wrong password",
            WIN2022_IP,
            "imap",
            False,
            False,
        ),
        (
            "smtp-hostile-names-ntlm-curl",
            "Hostile names in banner and NTLM challenge (SMTP), NTLM success",
            HOSTILE_IP,
            "smtp",
            True,
            False,
        ),
        (
            "pop3-hostile-names-ntlm-curl",
            "Hostile names in banner and NTLM challenge (POP3), wrong password",
            HOSTILE_IP,
            "pop3",
            False,
            False,
        ),
        (
            "imap-hostile-names-ntlm-curl",
            "Hostile names in banner and NTLM challenge (IMAP), wrong password",
            HOSTILE_IP,
            "imap",
            False,
            False,
        ),
    ):
        p = FAKE_PROFILES[ip]
        pw = p["password"] if pw_ok else WRONG_PASSWORD
        port = {"smtp": 25, "pop3": 110, "imap": 143}[proto]
        url = f"{proto}://{ip}:{port}/" + (EHLO_NAME if proto == "smtp" else "")
        argv = curl(url, f"{p['domain']}\\{p['user']}", pw, login="AUTH=NTLM", sasl_ir=sasl_ir, smtp=proto == "smtp")
        marker = {
            "smtp": ("235 2.7.0", "535 5.7.3"),
            "pop3": ("+OK User successfully", "-ERR Logon failure"),
            "imap": ("OK AUTHENTICATE completed", "NO AUTHENTICATE failed"),
        }[proto][0 if pw_ok else 1]
        out.append(
            Scenario(
                name,
                desc,
                proto,
                ip,
                port,
                argv,
                facts(
                    "curl",
                    fake_banners(p)[proto],
                    {"before_tls": FAKE_MECHS[proto], "after_tls": None},
                    ntlm_server=fake_server_facts(ip),
                    ntlm_client=ntlm_client(p["user"], p["domain"], curl_ws, "NTLMv2", pw),
                    outcome="success" if pw_ok else "failure",
                ),
                must_contain=["TlRMTVNTUAAC", "TlRMTVNTUAAD", marker],
            )
        )
    return out


# --------------------------------------------------------------------------- capture and checks


def capture(env: Env, sc: Scenario) -> tuple[int, str]:
    cdir = env.work / "clients" / sc.name
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "message.eml").write_text(MESSAGE)
    for fname, content in sc.files.items():
        (cdir / fname).write_text(content)
        (cdir / fname).chmod(0o600)
    subst = {"{dir}": str(cdir), "{script}": str(Path(__file__).resolve()), "{python}": sys.executable}
    argv = []
    for arg in sc.argv:
        for key, value in subst.items():
            arg = arg.replace(key, value)
        argv.append(arg)
    pcap = env.work / f"{sc.name}.pcap"
    bpf = f"tcp and host {sc.server_ip} and port {sc.port}"
    # immediate mode: a short session must not sit in a ring-buffer block when tcpdump is stopped
    tcpdump_cmd = [
        "tcpdump",
        "-i",
        VETH_CLI,
        "-Z",
        "root",
        "--immediate-mode",
        "-s",
        "0",
        "-U",
        "-n",
        "-w",
        str(pcap),
        bpf,
    ]
    tcpdump = subprocess.Popen(
        in_ns(NS_CLI, tcpdump_cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    env.procs.append(tcpdump)
    assert tcpdump.stderr is not None
    first = tcpdump.stderr.readline().decode(errors="replace")  # "listening on ..." once the capture is armed
    if "listening on" not in first:
        raise RuntimeError(f"tcpdump: {first}")
    clientenv = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cdir),
        "FETCHMAILHOME": str(cdir),
        "LOGNAME": "root",
        "LANG": "C",
    }
    try:
        # A fixed client host name: swaks puts it in the Message-Id.
        wrapped = ["unshare", "--uts", "sh", "-c", 'hostname client && exec "$@"', "sh", *argv]
        proc = run(in_ns(NS_CLI, wrapped), check=False, timeout=CLIENT_TIMEOUT, env=clientenv)
        rc, output = proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")
    except subprocess.TimeoutExpired:
        rc, output = -1, "client timed out"
    time.sleep(0.5)  # let the last FIN/ACK reach the capture
    stop_proc(tcpdump, signal.SIGINT)
    stats = tcpdump.stderr.read().decode(errors="replace")
    (env.work / f"{sc.name}.client.log").write_text(" ".join(argv) + f"\nrc={rc}\n{output}\n{first}{stats}")
    shutil.copyfile(pcap, OUT_DIR / f"{sc.name}.pcap")
    return rc, output


def payloads(pcap: Path, server_port: int) -> tuple[bytes, bytes]:
    """Client-to-server and server-to-client TCP payload bytes, in capture order."""
    out = run(
        ["tshark", "-r", str(pcap), "-Y", "tcp.len > 0", "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.payload"]
    ).stdout.decode()
    to_server, to_client = bytearray(), bytearray()
    for line in out.splitlines():
        port, _, data = line.partition("\t")
        chunk = bytes.fromhex(data.replace(":", ""))
        (to_client if int(port) == server_port else to_server).extend(chunk)
    return bytes(to_server), bytes(to_client)


def ntlm_messages(stream: str) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    for token in re.findall(r"TlRMTVNTUAA[A-Za-z0-9+/=]+", stream):
        raw = base64.b64decode(token)
        found.setdefault(raw[8], raw)
    return found


def check_ntlm(sc: Scenario, stream: str) -> list[str]:
    """Decodes the NTLM messages in the capture and compares them with the recorded ground truth."""
    from spnego._ntlm_raw.messages import AvId, NTLMMessage

    problems: list[str] = []
    msgs = ntlm_messages(stream)
    server, client = sc.facts["ntlm_server"], sc.facts["ntlm_client"]
    if 2 not in msgs or 3 not in msgs:
        return ["NTLM challenge or authenticate message missing"]
    ch = NTLMMessage.unpack(msgs[2])
    ti = ch.target_info or {}
    got = {
        "target_name": ch.target_name,
        "netbios_computer": ti.get(AvId.nb_computer_name),
        "netbios_domain": ti.get(AvId.nb_domain_name),
        "dns_computer": ti.get(AvId.dns_computer_name),
        "dns_domain": ti.get(AvId.dns_domain_name),
        "dns_tree": ti.get(AvId.dns_tree_name),
        "server_time_present": AvId.timestamp in ti,
        "os_version": f"{ch.version.major}.{ch.version.minor}.{ch.version.build}" if ch.version else None,
    }
    problems += [f"challenge {k}: capture {got[k]!r} != expected {v!r}" for k, v in server.items() if got[k] != v]
    au = NTLMMessage.unpack(msgs[3])
    got = {
        "user": au.user_name,
        "domain": au.domain_name,
        "workstation": au.workstation or None,
        "ntlm_version": ntlm_version(au.nt_challenge_response or b"", au.lm_challenge_response or b""),
    }
    problems += [f"authenticate {k}: capture {v!r} != expected {client[k]!r}" for k, v in got.items() if v != client[k]]
    return problems


def mechanism_listing(proto: str, mechs: list[str]) -> str:
    if proto == "smtp":
        return "AUTH " + " ".join(mechs) + "\r\n"
    if proto == "pop3":
        return "SASL " + " ".join(mechs) + "\r\n"
    return " ".join(f"AUTH={m}" for m in mechs)


def verify(sc: Scenario) -> list[str]:
    pcap = OUT_DIR / f"{sc.name}.pcap"
    to_server, to_client = payloads(pcap, sc.port)
    c2s, s2c = to_server.decode("utf-8", "replace"), to_client.decode("utf-8", "replace")
    both = c2s + "\n" + s2c
    problems = [f"missing {s!r}" for s in sc.must_contain if s not in both]
    problems += [f"visible {s!r}" for s in sc.must_not_contain if s in both]
    if not s2c.startswith(sc.facts["banner"] + "\r\n"):
        problems.append(f"banner is not {sc.facts['banner']!r}: {s2c[:120]!r}")
    before = sc.facts["mechanisms"]["before_tls"]
    if before:
        listed = mechanism_listing(sc.protocol, before) in s2c
        if listed != sc.facts["mechanisms_visible"]:
            problems.append(f"mechanism listing {'present' if listed else 'absent'}, expected the opposite")
    elif sc.protocol == "smtp" and re.search(r"^250[- ]AUTH", s2c, re.M):
        problems.append("SMTP AUTH advertised before TLS")
    if sc.facts["ntlm_server"]:
        problems += check_ntlm(sc, both)
    if pcap.stat().st_size > 64 * 1024:
        problems.append(f"capture is {pcap.stat().st_size} bytes")
    return problems


def write_expected(sc: Scenario) -> None:
    facts = {
        "capture": f"{sc.name}.pcap",
        "description": sc.description,
        "protocol": sc.protocol,
        "server": f"{sc.server_ip}:{sc.port}",
        "client": CLIENT_IP,
        **sc.facts,
    }
    path = OUT_DIR / f"{sc.name}.expected.json"
    path.write_text(json.dumps(facts, indent=2, ensure_ascii=True) + "\n")


# --------------------------------------------------------------------------- banner check client


def banner_check(proto: str, host: str, port: int) -> int:
    import socket

    with socket.create_connection((host, port), timeout=10) as sock:
        fh = sock.makefile("rb")
        print(fh.readline().decode(errors="replace").rstrip())
        sock.sendall(b"QUIT\r\n" if proto == "pop3" else b"a1 LOGOUT\r\n")
        for line in fh:
            print(line.decode(errors="replace").rstrip())
    return 0


# --------------------------------------------------------------------------- main


def check_tools() -> None:
    missing = missing_tools(("tcpdump", "tshark", "curl", "swaks", "fetchmail")) + missing_tools()
    if missing:
        sys.exit(f"missing tools: {' '.join(missing)} (see pcaps/README.md for the packages)")
    if os.geteuid() != 0:
        sys.exit("must run as root (network namespaces, tcpdump, Samba provisioning)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="capture only these scenario names")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--list", action="store_true", help="list scenario names")
    ap.add_argument("--fake-server", metavar="CONFIG", help=argparse.SUPPRESS)
    ap.add_argument("--banner-check", nargs=3, metavar=("PROTO", "HOST", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fake_server:
        asyncio.run(fake_main(args.fake_server))
        return 0
    if args.banner_check:
        proto, host, port = args.banner_check
        return banner_check(proto, host, int(port))
    todo = scenarios()
    if args.list:
        print("\n".join(sc.name for sc in todo))
        return 0
    if args.only:
        unknown = set(args.only) - {sc.name for sc in todo}
        if unknown:
            sys.exit(f"unknown scenarios: {' '.join(sorted(unknown))}")
        todo = [sc for sc in todo if sc.name in args.only]
    check_tools()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still tear down when killed

    env = Env(Path(tempfile.mkdtemp(prefix="leakscope-pcaps-")), CAPTURE_NAMES)
    os.chmod(env.work, 0o755)  # dovecot/postfix users must reach their dirs
    results: list[tuple[str, int, list[str]]] = []
    try:
        start_servers(env)
        for sc in todo:
            log(f"--- {sc.name}")
            try:
                rc, _ = capture(env, sc)
                write_expected(sc)
                problems = verify(sc)
            except Exception as exc:  # one broken scenario must not stop the others
                rc, problems = -1, [f"{type(exc).__name__}: {exc}"]
            results.append((sc.name, rc, problems))
            for p in problems:
                log(f"    PROBLEM: {p}")
            if problems:
                args.keep = True
    except Exception:
        traceback.print_exc()
        log(f"setup failed; logs in {env.work}")
        args.keep = True
    finally:
        teardown(env)
        if not args.keep:
            shutil.rmtree(env.work, ignore_errors=True)
        else:
            log(f"kept {env.work}")

    log("\nsummary:")
    for name, rc, problems in results:
        log(f"  {'OK  ' if not problems else 'FAIL'} {name} (client rc={rc})" + (f": {problems}" if problems else ""))
    verified = sum(1 for _, _, problems in results if not problems)
    log(f"{verified} of {len(todo)} captures verified")
    return 0 if verified == len(todo) else 1


if __name__ == "__main__":
    sys.exit(main())
