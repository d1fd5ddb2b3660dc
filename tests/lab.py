"""A mail lab for tests and for the capture script: real mail servers in network namespaces of their own.

What runs (all inside a server namespace, reached from a client namespace over one veth pair):

- a Samba AD DC (realm ``LEAKSCOPE.TEST``, domain ``LEAKSCOPE``, host ``DC1``) with users :data:`USER` /
  :data:`PASSWORD` and :data:`USER2` / :data:`PASSWORD2`;
- Dovecot on :data:`SRV_IP`: POP3 110 and 1110, IMAP 143 and 1143, STLS/STARTTLS with a self-signed certificate,
  POP3S 995 and IMAPS 993 (implicit TLS), ``PLAIN LOGIN NTLM`` (NTLM through winbind, answered by Samba);
- Postfix on :data:`SRV_IP`: 25 and 2525 (``AUTH PLAIN LOGIN NTLM`` through Dovecot, STARTTLS), 587 (no AUTH before
  STARTTLS), 465 (implicit TLS); and on :data:`RELAY_IP` port 25 an open relay (no AUTH, no STARTTLS, relays for
  10.99.0.0/24; every accepted message is discarded, no DNS is asked);
- Apache on :data:`SRV_IP` port 80 with mod_auth_gssapi and the gss-ntlmssp mechanism in front of the same DC
  (winbind): Exchange-like paths (:data:`APACHE_PROTECTED`) answer ``Negotiate`` and ``NTLM`` with real CHALLENGEs
  and accept the users' real passwords (Debian 12 has no mod_auth_ntlm_winbind; this is its closest packaged kin);
- a Windows-like NTLM server on :data:`WIN2019_IP`, :data:`WIN2022_IP` and :data:`HOSTILE_IP`, ports 25, 110 and 143
  (profiles in :data:`FAKE_PROFILES`; its challenge is packed by :func:`dissectors.ntlmssp.build_challenge`, its
  answers checked with pyspnego's NTLM crypto).

The client namespace has :data:`CLIENT_IP`. Nothing leaves the two namespaces.

Use from tests (as root)::

    with MailLab() as lab:                       # about a minute: Samba provisioning is most of it
        lab.client(["curl", f"pop3://{SRV_IP}:110/"])   # runs in the client namespace
        lab.client_interface                     # "lt<pid>-c": capture or monitor the clients' traffic here
        lab.client_command(["tcpdump", ...])     # argv prefix for a long-running process in the client namespace
        with lab.recording(pcap, "tcp port 25"): ...   # tcpdump writes the clients' traffic while the body runs

``tests/conftest.py`` offers it as the session-scoped fixture ``mail_lab``. ``pcaps/make_captures.py`` builds the same
lab under other names (:data:`CAPTURE_NAMES`), so a test run and a capture run never collide.

Run as ``python3 tests/lab.py --fake-server CONFIG``, this file is the Windows-like NTLM server itself.
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class LabNames:
    """Names of the two namespaces and the veth pair; one prefix per user of the lab."""

    prefix: str

    @property
    def ns_srv(self) -> str:
        return f"{self.prefix}-srv"

    @property
    def ns_cli(self) -> str:
        return f"{self.prefix}-cli"

    @property
    def veth_srv(self) -> str:
        return f"{self.prefix}-s"

    @property
    def veth_cli(self) -> str:
        return f"{self.prefix}-c"


CAPTURE_NAMES = LabNames("lscap")  # pcaps/make_captures.py
# Test runs name their lab after their process, so two runs at once (or a run and make_captures) never collide.
TEST_PREFIX = "lt"


def names_for_process(pid: int | None = None) -> LabNames:
    return LabNames(f"{TEST_PREFIX}{os.getpid() if pid is None else pid}")


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

# Windows-like NTLM servers: the challenge is packed by dissectors.ntlmssp.build_challenge.
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

    def __init__(self, work: Path, names: LabNames) -> None:
        self.work = work
        self.names = names
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
        return in_ns(
            self.names.ns_srv, ["unshare", "--uts", "sh", "-c", wrapper, str(self.runsamba), str(self.hosts), *cmd]
        )

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


def _settle(pcap: Path, quiet: float = 0.3, limit: float = 5.0) -> None:
    """Wait until tcpdump (``-U``: it writes each packet as it comes) has written what the kernel still held: the
    file stops growing for ``quiet`` seconds. On a loaded machine SIGINT right after the traffic would lose the tail."""
    deadline = time.monotonic() + limit
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        current = pcap.stat().st_size if pcap.exists() else 0
        if current != size:
            size, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def delete_netns(names: LabNames) -> None:
    existing = run(["ip", "netns", "list"], check=False).stdout.decode()
    for ns in (names.ns_srv, names.ns_cli):
        if re.search(rf"^{ns}\b", existing, re.M):
            kill_ns_leftovers(ns)
            run(["ip", "netns", "delete", ns], check=False)


def create_netns(names: LabNames) -> None:
    delete_netns(names)
    ns_srv, ns_cli, veth_srv, veth_cli = names.ns_srv, names.ns_cli, names.veth_srv, names.veth_cli
    run(["ip", "netns", "add", ns_srv])
    run(["ip", "netns", "add", ns_cli])
    run(["ip", "link", "add", veth_srv, "netns", ns_srv, "type", "veth", "peer", "name", veth_cli, "netns", ns_cli])
    for ip in SERVER_IPS:
        run(["ip", "-n", ns_srv, "addr", "add", f"{ip}/24", "dev", veth_srv])
    run(["ip", "-n", ns_cli, "addr", "add", f"{CLIENT_IP}/24", "dev", veth_cli])
    for ns, dev in ((ns_srv, veth_srv), (ns_cli, veth_cli)):
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "set", dev, "up"])
        # No IPv6 on the link: keeps router/neighbour chatter out of the captures.
        run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"], check=False)


def listening(ns: str) -> set[str]:
    out = run(in_ns(ns, ["ss", "-Hltn"]), check=False).stdout.decode()
    return {line.split()[3] for line in out.splitlines() if len(line.split()) > 3}


def wait_listen(env: Env, addrs: list[str], what: str, timeout: float = 60) -> None:
    ns = env.names.ns_srv
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(addrs) <= listening(ns):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{what}: not listening on {sorted(set(addrs) - listening(ns))}")


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


def smb_conf(sdir: Path, veth_srv: str) -> str:
    return f"""[global]
\tnetbios name = {DC_NAME}
\tworkgroup = {AD_DOMAIN}
\trealm = {REALM}
\tserver role = active directory domain controller
\tinterfaces = lo {veth_srv}
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
                f"--option=interfaces=lo {env.names.veth_srv}",
                "--option=bind interfaces only=yes",
            ]
        ),
        timeout=300,
    )
    conf = sdir / "etc" / "smb.conf"
    conf.write_text(smb_conf(sdir, env.names.veth_srv))
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
    port = 993
    ssl = yes
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
    port = 995
    ssl = yes
  }}
}}
""")
    return conf


def start_dovecot(env: Env, smbconf: Path, cert: Path, key: Path) -> None:
    conf = dovecot_conf(env, smbconf, cert, key)
    run(["doveconf", "-c", str(conf), "-n"])
    env.spawn(env.srv(["dovecot", "-F", "-c", str(conf)]), "dovecot.out")
    ports = (110, 143, 993, 995, 1110, 1143)
    wait_listen(env, [f"{SRV_IP}:{p}" for p in ports] + [f"127.0.0.1:{SASL_PORT}"], "dovecot")
    log("dovecot: listening")


POSTFIX_MASTER = """{srv}:25 inet n - n - - smtpd
{srv}:587 inet n - n - - smtpd -o syslog_name=postfix/submission -o smtpd_tls_auth_only=yes
{srv}:2525 inet n - n - - smtpd -o syslog_name=postfix/alt
{srv}:465 inet n - n - - smtpd -o syslog_name=postfix/smtps -o smtpd_tls_wrappermode=yes
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


def postfix_main_cf(d: Path, *, domain: str, mynetworks: str, interfaces: str, extra: str) -> str:
    """A lab Postfix's main.cf: SASL through Dovecot, nothing ever leaves (accepted mail is discarded, no DNS is
    asked); ``extra`` adds the lines of one lab (TLS, relay domains)."""
    return f"""compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
myhostname = {MAIL_HOST}
mydomain = {domain}
myorigin = $mydomain
mydestination = $myhostname, $mydomain
mynetworks = {mynetworks}
inet_interfaces = {interfaces}
inet_protocols = ipv4
smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
biff = no
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
default_transport = discard
local_transport = discard
relay_transport = discard
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated reject_unauth_destination
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{SASL_PORT}
{extra}"""


def run_postfix(env: Env, master_cf: str, main_cf: str) -> Path:
    """Write a lab Postfix's configuration under the lab's work directory and start it in the server namespace."""
    d = env.work / "postfix"
    (d / "spool").mkdir(parents=True, exist_ok=True)
    (d / "data").mkdir(exist_ok=True)
    shutil.chown(d / "data", "postfix")
    (d / "master.cf").write_text(master_cf)
    (d / "main.cf").write_text(main_cf)
    env.postfix_dir = d
    for action in ("check", "start"):
        if run(in_ns(env.names.ns_srv, ["postfix", "-c", str(d), action]), check=False).returncode != 0:
            maillog = d / "maillog"
            tail = maillog.read_text()[-2000:] if maillog.exists() else ""
            raise RuntimeError(f"postfix {action} failed (logs go to syslog before postlogd runs):\n{tail}")
    return d


def start_postfix(env: Env, cert: Path, key: Path) -> None:
    tls = f"smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\nsmtpd_tls_security_level = may\n"
    main_cf = postfix_main_cf(
        env.work / "postfix",
        domain=DNS_DOMAIN,
        mynetworks="127.0.0.0/8",
        interfaces=f"{SRV_IP}, {RELAY_IP}",
        extra=tls,
    )
    run_postfix(env, POSTFIX_MASTER.format(srv=SRV_IP, relay=RELAY_IP, relay_host=RELAY_HOST), main_cf)
    wait_listen(env, [f"{SRV_IP}:{p}" for p in (25, 465, 587, 2525)] + [f"{RELAY_IP}:25"], "postfix")
    log("postfix: listening")


def stop_postfix(env: Env) -> None:
    if env.postfix_dir is None:
        return
    run(in_ns(env.names.ns_srv, ["postfix", "-c", str(env.postfix_dir), "stop"]), check=False)
    pidfile = env.postfix_dir / "spool" / "pid" / "master.pid"
    deadline = time.monotonic() + 10
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def start_fake_server(env: Env) -> None:
    cfg = env.work / "fake.json"
    cfg.write_text(json.dumps({"profiles": FAKE_PROFILES, "log": str(env.work / "fake-auth.jsonl")}))
    env.spawn(
        in_ns(env.names.ns_srv, [sys.executable, str(Path(__file__).resolve()), "--fake-server", str(cfg)]), "fake.out"
    )
    wait_listen(env, [f"{ip}:{port}" for ip in FAKE_PROFILES for port in FAKE_PORTS], "fake server")
    log("fake NTLM server: listening")


# --------------------------------------------------------------------------- Apache: NTLM and Negotiate over HTTP

APACHE_PORT = 80  # on SRV_IP
# Exchange-like endpoints Apache protects (mod_auth_gssapi with the gss-ntlmssp mechanism, names from winbind):
# each offers Negotiate and NTLM, and answers an anonymous NEGOTIATE with a real CHALLENGE.
APACHE_PROTECTED = ("/EWS/", "/mapi/", "/autodiscover/")
APACHE_FILES = {"EWS/Exchange.asmx": "ews", "mapi/nspi/index.html": "nspi", "autodiscover/autodiscover.xml": "ad",
                "index.html": "leakscope lab"}  # fmt: skip
APACHE_MODULES = ("mpm_event", "authn_core", "authz_core", "authz_user", "auth_gssapi", "dir", "mime")


def apache_conf(env: Env) -> Path:
    d = env.work / "apache"
    (d / "www").mkdir(parents=True, exist_ok=True)
    for name, text in APACHE_FILES.items():
        (d / "www" / name).parent.mkdir(parents=True, exist_ok=True)
        (d / "www" / name).write_text(text + "\n")
    modules = "\n".join(f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so" for m in APACHE_MODULES)
    locations = "\n".join(
        f"""<Location {path}>
  AuthType GSSAPI
  AuthName "{path.strip("/")}"
  GssapiAllowedMech ntlmssp
  GssapiConnectionBound On
  Require valid-user
</Location>"""
        for path in APACHE_PROTECTED
    )
    conf = d / "httpd.conf"
    conf.write_text(f"""ServerRoot {d}
ServerName {MAIL_HOST}
Listen {SRV_IP}:{APACHE_PORT}
PidFile {d}/httpd.pid
Mutex file:{d}
DefaultRuntimeDir {d}
User www-data
Group www-data
ErrorLog {d}/error.log
LogLevel info
{modules}
TypesConfig /etc/mime.types
DocumentRoot {d}/www
DirectoryIndex index.html
<Directory {d}/www>
  Require all granted
</Directory>
{locations}
""")
    return conf


def start_apache(env: Env) -> None:
    """Apache in front of the Samba DC: gss-ntlmssp asks winbind for the names it puts in its CHALLENGE and for
    the verdict on an AUTHENTICATE (through winbind's privileged pipe, opened to the www-data group here)."""
    conf = apache_conf(env)
    privileged = env.work / "samba" / "state" / "winbindd_privileged"
    if privileged.exists():
        shutil.chown(privileged, group="www-data")
        privileged.chmod(0o750)
    env.spawn(env.srv(["apache2", "-f", str(conf), "-DFOREGROUND"]), "apache.out")
    wait_listen(env, [f"{SRV_IP}:{APACHE_PORT}"], "apache")
    log("apache: listening")


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
        from spnego._ntlm_raw.messages import NegotiateFlags, NTLMMessage

        from dissectors import ntlmssp

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
        info = [
            ("netbios_domain", p["netbios_domain"]),
            ("netbios_computer", p["netbios_computer"]),
            ("dns_domain", p["dns_domain"]),
            ("dns_computer", p["dns_computer"]),
            ("dns_tree", p["dns_tree"]),
            ("timestamp", datetime.now(UTC)),
        ]
        return ntlmssp.build_challenge(
            self.server_challenge, p["target_name"], info, flags=flags, version=ntlmssp.Version(*p["version"])
        )

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


# --------------------------------------------------------------------------- the lab as a whole

LAB_TOOLS = (
    "ip", "ss", "samba", "samba-tool", "wbinfo", "ntlm_auth", "dovecot", "doveconf", "postfix", "openssl", "apache2",
)  # fmt: skip


def missing_tools(tools: tuple[str, ...] = LAB_TOOLS) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


def start_servers(env: Env) -> None:
    """Namespaces, certificate, Samba AD DC, Dovecot, Postfix, Apache and the Windows-like NTLM server, in that
    order."""
    create_netns(env.names)
    cert, key = make_cert(env)
    smbconf = start_samba(env)
    start_dovecot(env, smbconf, cert, key)
    start_postfix(env, cert, key)
    start_apache(env)
    start_fake_server(env)


def teardown(env: Env) -> None:
    """Stops every process the lab started and deletes its namespaces (safe to call after a partial start)."""
    stop_postfix(env)
    for proc in reversed(env.procs):
        stop_proc(proc)
    delete_netns(env.names)


def delete_stale_test_labs() -> None:
    """Namespaces of test labs whose process is gone (a run that was killed) are removed."""
    existing = run(["ip", "netns", "list"], check=False).stdout.decode()
    for pid in sorted(set(re.findall(rf"^{TEST_PREFIX}(\d+)-(?:srv|cli)\b", existing, re.M))):
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            delete_netns(names_for_process(int(pid)))
        except PermissionError:
            pass  # alive, someone else's


class MailLab:
    """The whole lab as a context manager; everything is torn down on exit, also after a failure.

    Addresses: :data:`SRV_IP` (Samba, Dovecot, Postfix), :data:`RELAY_IP` (open relay), :data:`WIN2019_IP`,
    :data:`WIN2022_IP`, :data:`HOSTILE_IP` (Windows-like NTLM), :data:`CLIENT_IP` (the client namespace).
    Ports: :data:`DOVECOT_PORTS`, :data:`POSTFIX_PORTS`, :data:`RELAY_PORTS`, :data:`FAKE_PORTS`.
    Accounts: :data:`USER`/:data:`PASSWORD`, :data:`USER2`/:data:`PASSWORD2` (domain :data:`AD_DOMAIN`); the
    Windows-like servers accept the ``user``/``password`` of their :data:`FAKE_PROFILES` entry.
    """

    def __init__(self, names: LabNames | None = None, keep: bool = False) -> None:
        self.names = names or names_for_process()
        self.keep = keep
        self.env: Env | None = None

    @property
    def work(self) -> Path:
        """The lab's temporary directory: server configurations and logs."""
        assert self.env is not None
        return self.env.work

    @property
    def client_namespace(self) -> str:
        return self.names.ns_cli

    @property
    def server_namespace(self) -> str:
        return self.names.ns_srv

    @property
    def client_interface(self) -> str:
        """The client side of the veth pair, inside the client namespace: every client/server packet crosses it."""
        return self.names.veth_cli

    def client_command(self, argv: list[str]) -> list[str]:
        """``argv`` prefixed so that it runs in the client namespace (for subprocess.Popen and friends)."""
        return in_ns(self.names.ns_cli, argv)

    @contextlib.contextmanager
    def recording(self, pcap: Path, bpf: str) -> Iterator[None]:
        """tcpdump on :attr:`client_interface` writes ``pcap`` while the body runs (capture started when entered)."""
        argv = ["tcpdump", "-Z", "root", "--immediate-mode", "-U", "-n", "-i", self.client_interface]
        tcpdump = subprocess.Popen(
            self.client_command([*argv, "-w", str(pcap), bpf]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert tcpdump.stderr is not None
            assert "listening on" in tcpdump.stderr.readline().decode()
            yield
            _settle(pcap)
        finally:
            stop_proc(tcpdump, signal.SIGINT)  # tcpdump flushes and exits

    def client(
        self, argv: list[str], *, timeout: float = 60, env: dict[str, str] | None = None, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Runs ``argv`` in the client namespace and returns its result (never raises on a non-zero exit)."""
        return run(self.client_command(argv), check=False, timeout=timeout, env=env, stdin=stdin)

    def __enter__(self) -> MailLab:
        if os.geteuid() != 0:
            raise RuntimeError("the mail lab needs root (network namespaces, Samba provisioning)")
        missing = missing_tools()
        if missing:
            raise RuntimeError(f"the mail lab needs: {' '.join(missing)}")
        delete_stale_test_labs()
        work = Path(tempfile.mkdtemp(prefix=f"leakscope-{self.names.prefix}-"))
        os.chmod(work, 0o755)  # dovecot/postfix users must reach their dirs
        self.env = Env(work, self.names)
        try:
            start_servers(self.env)
        except BaseException:
            self.keep = True
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        env, self.env = self.env, None
        if env is None:
            return
        teardown(env)
        if self.keep:
            log(f"mail lab: kept {env.work}")
        else:
            shutil.rmtree(env.work, ignore_errors=True)


DOVECOT_PORTS = {"pop3": (110, 1110), "imap": (143, 1143)}
POSTFIX_PORTS = {"smtp": (25, 587, 2525)}
RELAY_PORTS = {"smtp": (25,)}


def main() -> int:
    parser = argparse.ArgumentParser(description="leakscope mail lab")
    parser.add_argument("--fake-server", metavar="CONFIG", help="run the Windows-like NTLM server")
    args = parser.parse_args()
    if args.fake_server:
        # Run as a script, this file sees tests/ first on sys.path; the fake server packs with dissectors.ntlmssp.
        root = str(Path(__file__).resolve().parents[1])
        if root not in sys.path:
            sys.path.insert(0, root)
        asyncio.run(fake_main(args.fake_server))
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
