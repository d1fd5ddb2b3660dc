"""A small lab for the verdict tests: real servers in network namespaces of their own, without the Samba DC of
tests/lab.py (so it starts in seconds), built from the same helpers.

What runs in the server namespace:

- Postfix on :data:`~tests.lab.SRV_IP` port 25: ``mydestination`` the lab's domain, ``mynetworks`` the trusted
  client only (:data:`TRUSTED_CLIENT`), ``relay_domains`` :data:`RELAY_DOMAIN`, ``reject_unauth_destination`` for
  everyone else; SASL ``PLAIN LOGIN`` through Dovecot, offered without TLS; every accepted message is discarded;
- Dovecot on :data:`~tests.lab.SRV_IP`: IMAP 143, POP3 110, a password file with the lab's users, clear text allowed;
- Redis (Debian's ``redis-server``) on :data:`REDIS` (port 110: a RESP server answering ``+OK`` on the POP3 port);
- vsftpd on :data:`FTP_SMTP` (port 25) and :data:`FTP_POP3` (port 110): FTP's ``220`` greeting and ``USER``/``PASS``
  on mail ports.

The client namespace has the trusted client and :data:`EXTERNAL_CLIENTS` (outside ``mynetworks``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from tests import lab as L

NAMES_PREFIX = "lv"  # namespaces lv<pid>-srv / lv<pid>-cli: never those of tests/lab.py or make_captures
TRUSTED_CLIENT = L.CLIENT_IP  # in Postfix's mynetworks
EXTERNAL_CLIENTS = ("10.99.0.20", "10.99.0.21", "10.99.0.22")  # not in mynetworks
LOCAL_DOMAIN = L.DNS_DOMAIN  # Postfix's mydestination
RELAY_DOMAIN = "partner.test"  # Postfix's relay_domains: it takes mail for it from anyone
FOREIGN_RCPT = L.RELAY_RCPT  # a domain Postfix neither delivers nor relays for unless the client is trusted
# Three more smtpd services of the same Postfix that take every RCPT (a client access map saying OK to all): one refuses
# a foreign recipient's message at DATA, one at the end of the data (reject_unauth_destination there), one relays.
DATA_REFUSING_PORT, END_REFUSING_PORT, RELAYING_PORT = 2526, 2527, 2528
# And the relaying service with smtpd_forbid_bare_newline = yes, which Postfix 3.7.10 and later read as "normalize":
# a line may end in a bare LF, but only CR LF "." CR LF ends a message.
EXACT_END_PORT = 2529
REDIS = (L.RELAY_IP, 110)
FTP_SMTP = (L.RELAY_IP, 25)
FTP_POP3 = (L.WIN2019_IP, 110)
SASL_PORT = L.SASL_PORT
# Every client command of the tests is bounded: a server that hangs fails the test instead of stalling the run.
CLIENT_TIMEOUT = 30
TOOLS = ("ip", "ss", "postfix", "dovecot", "doveconf", "redis-server", "redis-cli", "vsftpd", "swaks", "curl",
         "tcpdump", "editcap", "tshark")  # fmt: skip

POSTFIX_MASTER = """{srv}:25 inet n - n - - smtpd
{srv}:{data_refusing} inet n - n - - smtpd
  -o smtpd_relay_restrictions=check_client_access,static:OK,reject_unauth_destination
  -o smtpd_data_restrictions=reject_unauth_destination
{srv}:{end_refusing} inet n - n - - smtpd
  -o smtpd_relay_restrictions=check_client_access,static:OK,reject_unauth_destination
  -o smtpd_end_of_data_restrictions=reject_unauth_destination
{srv}:{relaying} inet n - n - - smtpd
  -o smtpd_relay_restrictions=check_client_access,static:OK,reject_unauth_destination
{srv}:{exact_end} inet n - n - - smtpd
  -o smtpd_relay_restrictions=check_client_access,static:OK,reject_unauth_destination
  -o smtpd_forbid_bare_newline=yes
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
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


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _postfix(env: L.Env) -> None:
    relaying = f"relay_domains = {RELAY_DOMAIN}\nrelay_recipient_maps =\nsmtpd_tls_security_level = none\n"
    relaying += f"smtpd_authorized_xclient_hosts = {TRUSTED_CLIENT}\n"  # a proxy's XCLIENT is taken from it alone
    main_cf = L.postfix_main_cf(
        env.work / "postfix",
        domain=LOCAL_DOMAIN,
        mynetworks=f"{TRUSTED_CLIENT}/32",
        interfaces=L.SRV_IP,
        extra=relaying,
    )
    ports = {"data_refusing": DATA_REFUSING_PORT, "end_refusing": END_REFUSING_PORT, "relaying": RELAYING_PORT,
             "exact_end": EXACT_END_PORT}  # fmt: skip
    L.run_postfix(env, POSTFIX_MASTER.format(srv=L.SRV_IP, **ports), main_cf)


def _dovecot(env: L.Env) -> None:
    d = env.work / "dovecot"
    for sub in ("run", "state", "mail", "home"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    shutil.chown(d / "mail", "mail", "mail")
    shutil.chown(d / "home", "mail", "mail")
    users = d / "users"
    users.write_text(f"{L.USER}:{{PLAIN}}{L.PASSWORD}\n{L.USER2}:{{PLAIN}}{L.PASSWORD2}\n")
    conf = d / "dovecot.conf"
    conf.write_text(f"""protocols = imap pop3
listen = {L.SRV_IP}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
login_greeting = {L.DOVECOT_GREETING}
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
  inet_listener {{
    address = 127.0.0.1
    port = {SASL_PORT}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
""")
    L.run(["doveconf", "-c", str(conf), "-n"])
    env.spawn(L.in_ns(env.names.ns_srv, ["dovecot", "-F", "-c", str(conf)]), "dovecot.out")


def _redis(env: L.Env) -> None:
    host, port = REDIS
    argv = ["redis-server", "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--dir", str(env.work)]  # fmt: skip
    env.spawn(L.in_ns(env.names.ns_srv, argv), "redis.out")


def _vsftpd(env: L.Env, address: tuple[str, int]) -> None:
    host, port = address
    root, empty = env.work / "ftp", env.work / "ftp-empty"
    root.mkdir(exist_ok=True)
    empty.mkdir(exist_ok=True)
    (root / "README").write_text("nothing here\n")
    conf = env.work / f"vsftpd-{host}-{port}.conf"
    conf.write_text(f"""listen=YES
listen_ipv6=NO
listen_address={host}
listen_port={port}
background=NO
anonymous_enable=YES
anon_root={root}
no_anon_password=YES
local_enable=NO
write_enable=NO
secure_chroot_dir={empty}
seccomp_sandbox=NO
xferlog_enable=NO
pasv_enable=YES
pasv_min_port=30000
pasv_max_port=30100
""")
    env.spawn(L.in_ns(env.names.ns_srv, ["vsftpd", str(conf)]), f"vsftpd-{port}.out")


class VerdictsLab:
    """The lab as a context manager; everything is stopped and the namespaces deleted on exit."""

    def __init__(self) -> None:
        self.names = L.LabNames(f"{NAMES_PREFIX}{os.getpid()}")
        self.env: L.Env | None = None

    def __enter__(self) -> VerdictsLab:
        work = Path(tempfile.mkdtemp(prefix=f"leakscope-{self.names.prefix}-"))
        os.chmod(work, 0o755)  # dovecot, postfix and ftp users must reach their directories
        self.env = env = L.Env(work, self.names)
        try:
            L.create_netns(self.names)
            for ip in EXTERNAL_CLIENTS:
                L.run(["ip", "-n", self.names.ns_cli, "addr", "add", f"{ip}/24", "dev", self.names.veth_cli])
            _dovecot(env)
            L.wait_listen(env, [f"{L.SRV_IP}:110", f"{L.SRV_IP}:143", f"127.0.0.1:{SASL_PORT}"], "dovecot")
            _postfix(env)
            _redis(env)
            _vsftpd(env, FTP_SMTP)
            _vsftpd(env, FTP_POP3)
            wanted = [f"{L.SRV_IP}:25", f"{REDIS[0]}:{REDIS[1]}", f"{FTP_SMTP[0]}:25", f"{FTP_POP3[0]}:110"]
            ports = (DATA_REFUSING_PORT, END_REFUSING_PORT, RELAYING_PORT, EXACT_END_PORT)
            wanted += [f"{L.SRV_IP}:{port}" for port in ports]
            L.wait_listen(env, wanted, "postfix, redis and vsftpd")
        except BaseException:
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
        L.teardown(env)
        shutil.rmtree(env.work, ignore_errors=True)

    def client(self, argv: list[str]) -> subprocess.CompletedProcess[bytes]:
        """Runs ``argv`` in the client namespace (never raises on a non-zero exit; bounded in time)."""
        return L.run(L.in_ns(self.names.ns_cli, argv), check=False, timeout=CLIENT_TIMEOUT + 10)

    @contextlib.contextmanager
    def recording(self, pcap: Path, bpf: str) -> Iterator[None]:
        """tcpdump on the client side of the link writes what ``bpf`` selects while the body runs: a filter on the
        source address records one direction only, as a capture point behind asymmetric routing does."""
        argv = ["tcpdump", "-Z", "root", "--immediate-mode", "-U", "-n", "-i", self.names.veth_cli, "-w", str(pcap)]
        tcpdump = subprocess.Popen(
            L.in_ns(self.names.ns_cli, [*argv, bpf]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert tcpdump.stderr is not None
            assert "listening on" in tcpdump.stderr.readline().decode()
            yield
            L._settle(pcap)
        finally:
            L.stop_proc(tcpdump, signal.SIGINT)


SCRIPTED_CLIENT = r"""
import base64, socket, sys, time
host, port, source, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
s = socket.create_connection((host, port), timeout=20, source_address=(source, 0))
got = b""
def wait_for(text, deadline=20.0):
    global got
    end = time.time() + deadline
    while text not in got and time.time() < end:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
"""
"""The start of a client script the tests run in the lab (``python -c``, argv: host, port, source address, then
``args``): connected from the source, ``got`` what the server said so far, ``wait_for(text)`` until it holds it."""
