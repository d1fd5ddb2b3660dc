#!/usr/bin/env python3
"""Regenerate the leakscope test captures from real mail software.

Everything runs inside two network namespaces created here (a server side and a
client side joined by a veth pair): a Samba AD DC, Dovecot (POP3/IMAP, NTLM through
winbind), Postfix (SMTP, SASL through Dovecot) and a small Windows-like NTLM server
(``--fake-server`` mode of this file).  Real clients (curl, swaks, fetchmail) are
driven against them while tcpdump records each session into its own pcap, and the
ground truth of every session is written next to it as ``<name>.expected.json``.

Usage (root, Debian 12): python3 pcaps/make_captures.py [--only NAME ...] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hmac
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

OUT_DIR = Path(__file__).resolve().parent

NS_SRV = "lscap-srv"
NS_CLI = "lscap-cli"
VETH_SRV = "lscap-s"
VETH_CLI = "lscap-c"

SRV_IP = "10.99.0.1"  # Samba DC, Dovecot, Postfix
RELAY_IP = "10.99.0.2"  # Postfix smtpd configured as an open relay
WIN2019_IP = "10.99.0.3"  # Windows-like NTLM server, Server 2019 challenge
WIN2022_IP = "10.99.0.4"  # Windows-like NTLM server, Server 2022 challenge
HOSTILE_IP = "10.99.0.5"  # Windows-like NTLM server with hostile names
CLIENT_IP = "10.99.0.10"
SERVER_IPS = (SRV_IP, RELAY_IP, WIN2019_IP, WIN2022_IP, HOSTILE_IP)

REALM = "LEAKSCOPE.TEST"
AD_DOMAIN = "LEAKSCOPE"
DC_NAME = "DC1"
DNS_DOMAIN = REALM.lower()
MAIL_HOST = "mail.leakscope.test"
RELAY_HOST = "relay.leakscope.test"
EHLO_NAME = "client.leakscope.test"
ADMIN_PASS = "Adm1n-Passw0rd!"
SASL_PORT = 12345  # Dovecot auth listener used by Postfix

USER = "alice"
PASSWORD = "Al1ce-Secret!"
USER2 = "bob"
PASSWORD2 = "B0b-Secret!"
WRONG_PASSWORD = "Wr0ng-Guess!"
MAIL_FROM = f"{USER}@{DNS_DOMAIN}"
MAIL_TO = f"{USER2}@{DNS_DOMAIN}"
RELAY_RCPT = "victim@example.net"

CLIENT_TIMEOUT = 40
DOVECOT_GREETING = "leakscope mail ready."
DOVECOT_MECHS = ["PLAIN", "LOGIN", "NTLM"]
POSTFIX_BANNER = f"220 {MAIL_HOST} ESMTP Postfix (Debian/GNU)"
IMAP_PRELOGIN_CAPS = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS"

# Samba's NTLMSSP server (ntlm_auth) fills the challenge from smb.conf; it always
# claims version 6.1.0 and sends no MsvAvDnsTreeName.
SAMBA_NTLM_SERVER = {
    "target_name": AD_DOMAIN,
    "netbios_computer": DC_NAME,
    "netbios_domain": AD_DOMAIN,
    "dns_computer": f"{DC_NAME.lower()}.{DNS_DOMAIN}",
    "dns_domain": DNS_DOMAIN,
    "dns_tree": None,
    "server_time_present": True,
    "os_version": "6.1.0",
}

HOSTILE_SCRIPT = "<script>alert(1)</script>"
HOSTILE_IMG = "\"'><img src=x onerror=alert(1)>"
HOSTILE_ANSI = "\x1b[31mred\x1b[0m"
HOSTILE_OSC = "\x1b]8;;http://x\x07link\x1b]8;;\x07"
HOSTILE_RICH = "[bold red]x[/]"

# Windows-like NTLM servers: the challenge is built with pyspnego's NTLM messages.
FAKE_PROFILES: dict[str, dict[str, Any]] = {
    WIN2019_IP: {
        "version": [10, 0, 17763],
        "target_name": "CONTOSO",
        "netbios_computer": "EXCH19",
        "netbios_domain": "CONTOSO",
        "dns_computer": "exch19.corp.contoso.com",
        "dns_domain": "corp.contoso.com",
        "dns_tree": "contoso.com",
        "smtp_host": "EXCH19.corp.contoso.com",
        "user": "jdoe",
        "domain": "CONTOSO",
        "password": "Summer2019!",
    },
    WIN2022_IP: {
        "version": [10, 0, 20348],
        "target_name": "FABRIKAM",
        "netbios_computer": "MAIL22",
        "netbios_domain": "FABRIKAM",
        "dns_computer": "mail22.ad.fabrikam.org",
        "dns_domain": "ad.fabrikam.org",
        "dns_tree": "fabrikam.org",
        "smtp_host": "MAIL22.ad.fabrikam.org",
        "user": "msmith",
        "domain": "FABRIKAM",
        "password": "Winter2022!",
    },
    HOSTILE_IP: {
        "version": [10, 0, 20348],
        "target_name": HOSTILE_RICH,
        "netbios_computer": HOSTILE_SCRIPT,
        "netbios_domain": HOSTILE_IMG,
        "dns_computer": f"{HOSTILE_ANSI}.evil.example",
        "dns_domain": HOSTILE_OSC,
        "dns_tree": HOSTILE_RICH,
        "smtp_host": f"{HOSTILE_SCRIPT} {HOSTILE_IMG} {HOSTILE_ANSI} {HOSTILE_OSC} {HOSTILE_RICH}",
        "user": "victim",
        "domain": "EVIL",
        "password": "Hostile1!",
    },
}


def fake_banners(profile: dict[str, Any]) -> dict[str, str]:
    host = profile["smtp_host"]
    return {
        "smtp": f"220 {host} Microsoft ESMTP MAIL Service ready",
        "pop3": f"+OK The Microsoft Exchange POP3 service is ready. {host}",
        "imap": f"* OK The Microsoft Exchange IMAP4 service is ready. {host}",
    }


FAKE_MECHS = {"smtp": ["GSSAPI", "NTLM"], "pop3": ["GSSAPI", "NTLM"], "imap": ["NTLM", "GSSAPI"]}
FAKE_PORTS = {25: "smtp", 110: "pop3", 143: "imap"}


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- process helpers


def run(
    cmd: list[str],
    *,
    check: bool = True,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, env=env, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout.decode(errors='replace')}"
            f"\n{proc.stderr.decode(errors='replace')}"
        )
    return proc


def in_ns(ns: str, cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


class Env:
    """Temp dir, namespaces and every process started for one run."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.postfix_dir: Path | None = None
        self.runsamba = work / "run-samba"
        self.hosts = work / "hosts"
        self.hosts.write_text(f"127.0.0.1 localhost\n{SRV_IP} {DC_NAME.lower()}.{DNS_DOMAIN} {DC_NAME.lower()}\n")
        self.hosts.chmod(0o644)

    def srv(self, cmd: list[str]) -> list[str]:
        """Runs cmd on the server side, in its own mount and UTS namespaces.

        winbind clients only look in /run/samba/winbindd, so our own directory is bound there; the host name and
        /etc/hosts are those of the DC so that Samba's NTLM challenge does not carry the build machine's name.
        """
        wrapper = (
            f'mount --bind "$0" /run/samba && mount --bind "$1" /etc/hosts && hostname {DC_NAME.lower()} '
            '&& shift && exec "$@"'
        )
        return in_ns(NS_SRV, ["unshare", "--uts", "sh", "-c", wrapper, str(self.runsamba), str(self.hosts), *cmd])

    def spawn(self, cmd: list[str], logname: str) -> subprocess.Popen[bytes]:
        logf = (self.work / logname).open("wb")
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc


def stop_proc(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def kill_ns_leftovers(ns: str) -> None:
    # Only processes inside our own namespaces (left by an earlier, interrupted run).
    proc = run(["ip", "netns", "pids", ns], check=False)
    for pid in proc.stdout.decode().split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def delete_netns() -> None:
    existing = run(["ip", "netns", "list"], check=False).stdout.decode()
    for ns in (NS_SRV, NS_CLI):
        if re.search(rf"^{ns}\b", existing, re.M):
            kill_ns_leftovers(ns)
            run(["ip", "netns", "delete", ns], check=False)


def create_netns() -> None:
    delete_netns()
    run(["ip", "netns", "add", NS_SRV])
    run(["ip", "netns", "add", NS_CLI])
    run(["ip", "link", "add", VETH_SRV, "netns", NS_SRV, "type", "veth", "peer", "name", VETH_CLI, "netns", NS_CLI])
    for ip in SERVER_IPS:
        run(["ip", "-n", NS_SRV, "addr", "add", f"{ip}/24", "dev", VETH_SRV])
    run(["ip", "-n", NS_CLI, "addr", "add", f"{CLIENT_IP}/24", "dev", VETH_CLI])
    for ns, dev in ((NS_SRV, VETH_SRV), (NS_CLI, VETH_CLI)):
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "set", dev, "up"])
        # No IPv6 on the link: keeps router/neighbour chatter out of the captures.
        run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"], check=False)


def listening(ns: str) -> set[str]:
    out = run(in_ns(ns, ["ss", "-Hltn"]), check=False).stdout.decode()
    return {line.split()[3] for line in out.splitlines() if len(line.split()) > 3}


def wait_listen(addrs: list[str], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(addrs) <= listening(NS_SRV):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{what}: not listening on {sorted(set(addrs) - listening(NS_SRV))}")


# --------------------------------------------------------------------------- servers


def make_cert(env: Env) -> tuple[Path, Path]:
    cert, key = env.work / "tls.crt", env.work / "tls.key"
    run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "3650",
            "-subj",
            f"/CN={MAIL_HOST}",
        ]
    )
    os.chmod(key, 0o640)
    return cert, key


def smb_conf(sdir: Path) -> str:
    return f"""[global]
\tnetbios name = {DC_NAME}
\tworkgroup = {AD_DOMAIN}
\trealm = {REALM}
\tserver role = active directory domain controller
\tinterfaces = lo {VETH_SRV}
\tbind interfaces only = yes
\tprivate dir = {sdir}/private
\tlock directory = {sdir}
\tstate directory = {sdir}/state
\tcache directory = {sdir}/cache
\tbinddns dir = {sdir}/bind-dns
\tpid directory = {sdir}/run
\tncalrpc dir = {sdir}/ncalrpc
\twinbindd socket directory = /run/samba/winbindd
\tlog file = {sdir}/log.%m
\t# NTLMv1 clients (swaks, fetchmail) must be able to log in
\tntlm auth = yes
\tidmap_ldb:use rfc2307 = yes
\tserver services = -dns
[netlogon]
\tpath = {sdir}/state/sysvol/{DNS_DOMAIN}/scripts
\tread only = No
[sysvol]
\tpath = {sdir}/state/sysvol
\tread only = No
"""


def start_samba(env: Env) -> Path:
    sdir = env.work / "samba"
    for sub in ("", "run", "ncalrpc", "cache"):
        (sdir / sub).mkdir(parents=True, exist_ok=True)
    env.runsamba.mkdir(exist_ok=True)
    Path("/run/samba").mkdir(exist_ok=True)  # mount point for the private bind mount
    log("samba: provisioning AD DC")
    run(
        env.srv(
            [
                "samba-tool",
                "domain",
                "provision",
                f"--realm={REALM}",
                f"--domain={AD_DOMAIN}",
                "--server-role=dc",
                "--dns-backend=SAMBA_INTERNAL",
                "--use-rfc2307",
                f"--adminpass={ADMIN_PASS}",
                f"--host-name={DC_NAME}",
                f"--host-ip={SRV_IP}",
                f"--targetdir={sdir}",
                f"--option=interfaces=lo {VETH_SRV}",
                "--option=bind interfaces only=yes",
            ]
        ),
        timeout=300,
    )
    conf = sdir / "etc" / "smb.conf"
    conf.write_text(smb_conf(sdir))
    for user, pw in ((USER, PASSWORD), (USER2, PASSWORD2)):
        run(env.srv(["samba-tool", "user", "create", user, pw, "-s", str(conf)]))
        run(env.srv(["samba-tool", "user", "setexpiry", user, "--noexpiry", "-s", str(conf)]))
    env.spawn(env.srv(["samba", "-i", "-s", str(conf)]), "samba.out")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if run(env.srv(["wbinfo", "-a", f"{USER}%{PASSWORD}"]), check=False).returncode == 0:
            log("samba: winbind answers")
            return conf
        time.sleep(1)
    raise RuntimeError("samba: winbindd did not come up")


def dovecot_conf(env: Env, smbconf: Path, cert: Path, key: Path) -> Path:
    d = env.work / "dovecot"
    for sub in ("run", "state", "mail", "home"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    shutil.chown(d / "mail", "mail", "mail")
    shutil.chown(d / "home", "mail", "mail")
    ntlm_wrapper = d / "ntlm_auth"
    ntlm_wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ntlm_auth --configfile={smbconf} "$@"\n')
    ntlm_wrapper.chmod(0o755)
    users = d / "users"
    users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n{USER2}:{{PLAIN}}{PASSWORD2}\n")
    conf = d / "dovecot.conf"
    conf.write_text(f"""protocols = imap pop3
listen = {SRV_IP}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
# clear-text logins are part of what the captures must show
disable_plaintext_auth = no
auth_mechanisms = {" ".join(m.lower() for m in DOVECOT_MECHS)}
auth_use_winbind = yes
auth_winbind_helper_path = {ntlm_wrapper}
auth_username_chars =
auth_verbose = yes
login_greeting = {DOVECOT_GREETING}
mail_location = maildir:{d}/mail/%n
first_valid_uid = 8
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home={d}/home/%n
}}
service auth {{
  # ntlm_auth needs winbind's privileged pipe
  user = root
  inet_listener {{
    address = 127.0.0.1
    port = {SASL_PORT}
  }}
}}
# wrong-password sessions come one after another from the same client
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 143
  }}
  inet_listener imap-alt {{
    port = 1143
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 110
  }}
  inet_listener pop3-alt {{
    port = 1110
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""")
    return conf


def start_dovecot(env: Env, smbconf: Path, cert: Path, key: Path) -> None:
    conf = dovecot_conf(env, smbconf, cert, key)
    run(["doveconf", "-c", str(conf), "-n"])
    env.spawn(env.srv(["dovecot", "-F", "-c", str(conf)]), "dovecot.out")
    wait_listen([f"{SRV_IP}:{p}" for p in (110, 143, 1110, 1143)] + [f"127.0.0.1:{SASL_PORT}"], "dovecot")
    log("dovecot: listening")


POSTFIX_MASTER = """{srv}:25 inet n - n - - smtpd
{srv}:587 inet n - n - - smtpd -o syslog_name=postfix/submission -o smtpd_tls_auth_only=yes
{srv}:2525 inet n - n - - smtpd -o syslog_name=postfix/alt
{relay}:25 inet n - n - - smtpd -o syslog_name=postfix/relay -o myhostname={relay_host} -o mynetworks=10.99.0.0/24
  -o smtpd_relay_restrictions=permit_mynetworks,reject -o smtpd_sasl_auth_enable=no -o smtpd_tls_security_level=none
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def start_postfix(env: Env, cert: Path, key: Path) -> None:
    d = env.work / "postfix"
    (d / "spool").mkdir(parents=True, exist_ok=True)
    (d / "data").mkdir(exist_ok=True)
    shutil.chown(d / "data", "postfix")
    (d / "master.cf").write_text(POSTFIX_MASTER.format(srv=SRV_IP, relay=RELAY_IP, relay_host=RELAY_HOST))
    (d / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
myhostname = {MAIL_HOST}
mydomain = {DNS_DOMAIN}
myorigin = $mydomain
mydestination = $myhostname, $mydomain
mynetworks = 127.0.0.0/8
inet_interfaces = {SRV_IP}, {RELAY_IP}
inet_protocols = ipv4
smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
biff = no
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
# nothing leaves: accepted mail is discarded and no DNS is ever asked
default_transport = discard
local_transport = discard
relay_transport = discard
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated reject_unauth_destination
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{SASL_PORT}
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
""")
    env.postfix_dir = d
    for action in ("check", "start"):
        if run(in_ns(NS_SRV, ["postfix", "-c", str(d), action]), check=False).returncode != 0:
            maillog = d / "maillog"
            tail = maillog.read_text()[-2000:] if maillog.exists() else ""
            raise RuntimeError(f"postfix {action} failed (logs go to syslog before postlogd runs):\n{tail}")
    wait_listen([f"{SRV_IP}:25", f"{SRV_IP}:587", f"{SRV_IP}:2525", f"{RELAY_IP}:25"], "postfix")
    log("postfix: listening")


def stop_postfix(env: Env) -> None:
    if env.postfix_dir is None:
        return
    run(in_ns(NS_SRV, ["postfix", "-c", str(env.postfix_dir), "stop"]), check=False)
    pidfile = env.postfix_dir / "spool" / "pid" / "master.pid"
    deadline = time.monotonic() + 10
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def start_fake_server(env: Env) -> None:
    cfg = env.work / "fake.json"
    cfg.write_text(json.dumps({"profiles": FAKE_PROFILES, "log": str(env.work / "fake-auth.jsonl")}))
    env.spawn(in_ns(NS_SRV, [sys.executable, str(Path(__file__).resolve()), "--fake-server", str(cfg)]), "fake.out")
    wait_listen([f"{ip}:{port}" for ip in FAKE_PROFILES for port in FAKE_PORTS], "fake server")
    log("fake NTLM server: listening")


# --------------------------------------------------------------------------- Windows-like NTLM server


def ntlm_version(nt: bytes, lm: bytes) -> str:
    """NTLMv2 responses are longer than 24 bytes; ESS puts the client challenge in the LM field."""
    if len(nt) > 24:
        return "NTLMv2"
    return "NTLMv1-ESS" if len(lm) == 24 and lm[8:] == bytes(16) else "NTLMv1"


class NtlmAcceptor:
    """Answers a Type 1 with a Windows-like Type 2 and checks the Type 3 against one account."""

    def __init__(self, profile: dict[str, Any]) -> None:
        self.profile = profile
        self.server_challenge = os.urandom(8)

    def challenge(self, type1: bytes) -> bytes:
        from spnego._ntlm_raw.messages import (
            AvId,
            Challenge,
            FileTime,
            NegotiateFlags,
            NTLMMessage,
            TargetInfo,
            Version,
        )

        p = self.profile
        neg = NTLMMessage.unpack(type1)
        flags = (
            NegotiateFlags.request_target
            | NegotiateFlags.ntlm
            | NegotiateFlags.always_sign
            | NegotiateFlags.target_type_domain
            | NegotiateFlags.target_info
            | NegotiateFlags.version
        )
        # Like Windows: echo what the client asked for among these.
        for f in (
            NegotiateFlags.unicode,
            NegotiateFlags.oem,
            NegotiateFlags.extended_session_security,
            NegotiateFlags.key_128,
            NegotiateFlags.key_56,
            NegotiateFlags.key_exch,
            NegotiateFlags.sign,
            NegotiateFlags.seal,
        ):
            if neg.flags & f:
                flags |= f
        if flags & NegotiateFlags.unicode:
            flags &= ~NegotiateFlags.oem
        info = TargetInfo()
        info[AvId.nb_domain_name] = p["netbios_domain"]
        info[AvId.nb_computer_name] = p["netbios_computer"]
        info[AvId.dns_domain_name] = p["dns_domain"]
        info[AvId.dns_computer_name] = p["dns_computer"]
        info[AvId.dns_tree_name] = p["dns_tree"]
        info[AvId.timestamp] = FileTime.now()
        major, minor, build = p["version"]
        msg = Challenge(
            flags=flags,
            server_challenge=self.server_challenge,
            target_name=p["target_name"],
            target_info=info,
            version=Version(major, minor, build),
        )
        return msg.pack()

    def authenticate(self, type3: bytes) -> dict[str, Any]:
        from spnego._ntlm_raw.crypto import compute_response_v1, hmac_md5, lmowfv1, ntowfv1, ntowfv2
        from spnego._ntlm_raw.messages import NTLMMessage

        p = self.profile
        msg = NTLMMessage.unpack(type3)
        nt, lm = msg.nt_challenge_response or b"", msg.lm_challenge_response or b""
        nt_hash = ntowfv1(p["password"])
        version = ntlm_version(nt, lm)
        if version == "NTLMv2":
            key = ntowfv2(msg.user_name or "", nt_hash, msg.domain_name)
            ok = hmac.compare_digest(hmac_md5(key, self.server_challenge + nt[16:]), nt[:16])
        else:
            expect, _, _ = compute_response_v1(
                msg.flags, nt_hash, lmowfv1(p["password"]), self.server_challenge, lm[:8], no_lm_response=False
            )
            ok = hmac.compare_digest(expect, nt)
        ok = ok and (msg.user_name or "").lower() == p["user"].lower()
        return {
            "user": msg.user_name,
            "domain": msg.domain_name,
            "workstation": msg.workstation,
            "ntlm_version": version,
            "ok": ok,
        }


class FakeSession:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: dict[str, Any]) -> None:
        self.reader, self.writer, self.cfg = reader, writer, cfg
        local_ip, local_port = writer.get_extra_info("sockname")[:2]
        self.profile = cfg["profiles"][local_ip]
        self.proto = FAKE_PORTS[local_port]
        self.banners = fake_banners(self.profile)

    async def send(self, *lines: str) -> None:
        self.writer.write(b"".join(line.encode("utf-8") + b"\r\n" for line in lines))
        await self.writer.drain()

    async def recv(self) -> str | None:
        data = await asyncio.wait_for(self.reader.readline(), 60)
        return data.decode("utf-8", "replace").rstrip("\r\n") if data else None

    def record(self, result: dict[str, Any]) -> None:
        with open(self.cfg["log"], "a") as fh:
            fh.write(json.dumps({"proto": self.proto, "profile": self.profile["netbios_computer"], **result}) + "\n")

    async def ntlm(self, initial: str | None, cont: str) -> bool | None:
        """Runs the NTLM exchange; `cont` is the protocol's continuation prefix. None means cancelled."""
        acceptor = NtlmAcceptor(self.profile)
        if not initial:
            await self.send(cont)
            initial = await self.recv()
        if initial is None or initial == "*":
            return None
        type2 = acceptor.challenge(base64.b64decode(initial))
        await self.send(f"{cont}{base64.b64encode(type2).decode()}")
        type3 = await self.recv()
        if type3 is None or type3 == "*":
            return None
        result = acceptor.authenticate(base64.b64decode(type3))
        self.record(result)
        return bool(result["ok"])

    async def smtp(self) -> None:
        await self.send(self.banners["smtp"])
        host = self.profile["smtp_host"]
        while (line := await self.recv()) is not None:
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                exts = [
                    f"{host} Hello [{self.writer.get_extra_info('peername')[0]}]",
                    "SIZE 37748736",
                    "PIPELINING",
                    "DSN",
                    "ENHANCEDSTATUSCODES",
                    "AUTH " + " ".join(FAKE_MECHS["smtp"]),
                    "8BITMIME",
                    "BINARYMIME",
                    "CHUNKING",
                ]
                await self.send(*(f"250-{e}" for e in exts[:-1]), f"250 {exts[-1]}")
            elif verb == "HELO":
                await self.send(f"250 {host} Hello")
            elif verb == "AUTH" and arg.split(" ")[0].upper() == "NTLM":
                parts = arg.split(" ")
                ok = await self.ntlm(parts[1] if len(parts) > 1 else None, "334 ")
                if ok is None:
                    await self.send("501 5.7.0 Authentication canceled")
                elif ok:
                    await self.send("235 2.7.0 Authentication successful")
                else:
                    await self.send("535 5.7.3 Authentication unsuccessful")
            elif verb == "AUTH":
                await self.send("504 5.7.4 Unrecognized authentication type")
            elif verb == "MAIL":
                await self.send("250 2.1.0 Sender OK")
            elif verb == "RCPT":
                await self.send("250 2.1.5 Recipient OK")
            elif verb == "DATA":
                await self.send("354 Start mail input; end with <CRLF>.<CRLF>")
                while (body := await self.recv()) is not None and body != ".":
                    pass
                await self.send("250 2.6.0 Queued mail for delivery")
            elif verb in ("RSET", "NOOP"):
                await self.send("250 2.0.0 OK")
            elif verb == "QUIT":
                await self.send("221 2.0.0 Service closing transmission channel")
                return
            else:
                await self.send("500 5.3.3 Unrecognized command")

    async def pop3(self) -> None:
        await self.send(self.banners["pop3"])
        authed = False
        while (line := await self.recv()) is not None:
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "CAPA":
                await self.send("+OK", "TOP", "UIDL", "SASL " + " ".join(FAKE_MECHS["pop3"]), "USER", ".")
            elif verb == "AUTH" and arg.split(" ")[0].upper() == "NTLM":
                parts = arg.split(" ")
                ok = await self.ntlm(parts[1] if len(parts) > 1 else None, "+ ")
                authed = bool(ok)
                await self.send(
                    "+OK User successfully authenticated."
                    if ok
                    else "-ERR Logon failure: unknown user name or bad password."
                )
            elif verb in ("LIST", "UIDL") and authed:
                await self.send("+OK", ".")
            elif verb == "STAT" and authed:
                await self.send("+OK 0 0")
            elif verb == "QUIT":
                await self.send("+OK Microsoft Exchange Server POP3 server signing off.")
                return
            else:
                await self.send("-ERR Command is not valid in this state.")

    async def imap(self) -> None:
        await self.send(self.banners["imap"])
        authed = False
        while (line := await self.recv()) is not None:
            tag, _, rest = line.partition(" ")
            verb, _, arg = rest.partition(" ")
            verb = verb.upper()
            if verb == "CAPABILITY":
                mechs = " ".join(f"AUTH={m}" for m in FAKE_MECHS["imap"])
                await self.send(
                    f"* CAPABILITY IMAP4 IMAP4rev1 {mechs} SASL-IR UIDPLUS MOVE ID UNSELECT "
                    "CHILDREN IDLE NAMESPACE LITERAL+",
                    f"{tag} OK CAPABILITY completed.",
                )
            elif verb == "AUTHENTICATE" and arg.split(" ")[0].upper() == "NTLM":
                parts = arg.split(" ")
                ok = await self.ntlm(parts[1] if len(parts) > 1 else None, "+ ")
                authed = bool(ok)
                await self.send(f"{tag} OK AUTHENTICATE completed." if ok else f"{tag} NO AUTHENTICATE failed.")
            elif verb == "LIST" and authed:
                await self.send('* LIST (\\Marked \\HasNoChildren) "/" INBOX', f"{tag} OK LIST completed.")
            elif verb == "LOGOUT":
                await self.send(
                    "* BYE Microsoft Exchange Server IMAP4 server signing off.", f"{tag} OK LOGOUT completed."
                )
                return
            else:
                await self.send(f"{tag} BAD Command Argument Error. 11")


async def fake_handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: dict[str, Any]) -> None:
    session = FakeSession(reader, writer, cfg)
    try:
        await getattr(session, session.proto)()
    except (TimeoutError, ConnectionError, ValueError):
        traceback.print_exc()
    finally:
        writer.close()


async def fake_main(cfg_path: str) -> None:
    cfg = json.loads(Path(cfg_path).read_text())
    servers = []
    for ip in cfg["profiles"]:
        for port in FAKE_PORTS:
            servers.append(await asyncio.start_server(lambda r, w: fake_handle(r, w, cfg), ip, port))
    print("fake server ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


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
    missing = [
        t
        for t in (
            "ip",
            "tcpdump",
            "tshark",
            "samba",
            "samba-tool",
            "wbinfo",
            "ntlm_auth",
            "dovecot",
            "doveconf",
            "postfix",
            "curl",
            "swaks",
            "fetchmail",
            "openssl",
            "ss",
        )
        if shutil.which(t) is None
    ]
    if missing:
        sys.exit(f"missing tools: {' '.join(missing)} (see pcaps/README.md for the packages)")
    if os.geteuid() != 0:
        sys.exit("must run as root (network namespaces, tcpdump, Samba provisioning)")


def teardown(env: Env) -> None:
    stop_postfix(env)
    for proc in reversed(env.procs):
        stop_proc(proc)
    delete_netns()


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

    env = Env(Path(tempfile.mkdtemp(prefix="leakscope-pcaps-")))
    os.chmod(env.work, 0o755)  # dovecot/postfix users must reach their dirs
    results: list[tuple[str, int, list[str]]] = []
    try:
        create_netns()
        cert, key = make_cert(env)
        smbconf = start_samba(env)
        start_dovecot(env, smbconf, cert, key)
        start_postfix(env, cert, key)
        start_fake_server(env)
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
