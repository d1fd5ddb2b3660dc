"""Real servers refusing a login without checking the password (tests/verdicts_lab.py: Postfix with SASL through
Dovecot, Dovecot's IMAP and POP3): Postfix answers an AUTH after a successful one, or inside a mail transaction, with
503 (RFC 4954 section 4); Dovecot a LOGIN once logged in with BAD, a PASS once logged in with "-ERR Unknown
command"; Postfix an AUTH with a mechanism it does not offer, or a response that is no base64 to it, with 535 5.7.8 and
the reason in words; Dovecot an unsupported mechanism with NO [ALERT] and -ERR [AUTH]; Postfix whose Dovecot auth
server went away with 454 and the reason in words. The password those carried was never judged: its outcome is
unknown, not "failure". The crafted dialogues of these cases are in tests/test_unjudged_refusals.py,
tests/test_unjudged_refusals_reasons.py and tests/test_unjudged_refusals_backend.py."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests import lab as L
from tests import verdicts_lab as V
from tests.test_verdicts_lab import analyze, of, verdicts_lab  # noqa: F401 (verdicts_lab: the lab, a fixture)

# A client that sends each line of its steps, waits for the text the server's answer to it holds, and prints what
# the server said.
DIALOGUE = r"""
import json, socket, sys, time
host, port, source, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
s = socket.create_connection((host, port), timeout=20, source_address=(source, 0))
got, mark = b"", 0
def wait_for(text, deadline=20.0):
    global got, mark
    end = time.time() + deadline
    while got.find(text, mark) < 0 and time.time() < end:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    found = got.find(text, mark)
    mark = found + len(text) if found >= 0 else len(got)
for line, reply in steps:
    if line is not None:
        s.sendall(line.encode() + b"\r\n")
    wait_for(reply.encode())
sys.stdout.write(got.decode("latin-1"))
"""
NEVER_CHECKED = "N3ver-Checked!"


def talk(lab: V.VerdictsLab, port: int, steps: list[tuple[str | None, str]]) -> str:
    """What the server at ``port`` answered ``steps`` from a client outside Postfix's networks."""
    argv = [sys.executable, "-c", DIALOGUE, L.SRV_IP, str(port), V.EXTERNAL_CLIENTS[1], json.dumps(steps)]
    done = lab.client(argv)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode().replace("\r", "")


def plain(password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{L.USER}\0{password}".encode()).decode()


def test_a_503_or_a_bad_from_real_servers_leaves_the_password_unjudged(
    verdicts_lab: V.VerdictsLab,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """Postfix: a second AUTH after a 235 (503), an AUTH after MAIL FROM (503); Dovecot: a second LOGIN (BAD), a
    second PASS (-ERR)."""
    hello: list[tuple[str | None, str]] = [(None, "220 "), ("EHLO client.example", "250 ")]
    second_auth = [*hello, (plain(L.PASSWORD), "235 "), (plain(L.WRONG_PASSWORD), "503 "), ("QUIT", "221 ")]
    in_transaction = [*hello, (f"MAIL FROM:<{L.MAIL_FROM}>", "250 "), (plain(NEVER_CHECKED), "503 "), ("QUIT", "221 ")]
    logins = [(f"a1 LOGIN {L.USER} {L.PASSWORD}", "a1 OK"), (f"a2 LOGIN {L.USER} {L.WRONG_PASSWORD}", "a2 ")]
    passes = [(f"USER {L.USER}", "+OK"), (f"PASS {L.PASSWORD}", "+OK"), (f"USER {L.USER}", "-ERR"),
              (f"PASS {L.WRONG_PASSWORD}", "-ERR")]  # fmt: skip
    pcap = tmp_path / "unjudged.pcap"
    with verdicts_lab.recording(pcap, "tcp"):
        again = talk(verdicts_lab, 25, second_auth)
        inside = talk(verdicts_lab, 25, in_transaction)
        imap = talk(verdicts_lab, 143, [(None, "* OK"), *logins, ("a3 LOGOUT", "a3 OK")])
        pop3 = talk(verdicts_lab, 110, [(None, "+OK"), *passes, ("QUIT", "+OK")])
    assert "\n235 2.7.0" in again and "\n503 5.5.1 Error: already authenticated" in again, again
    assert "\n503 5.5.1 Error: MAIL transaction in progress" in inside, inside
    assert "\na1 OK" in imap and "\na2 BAD" in imap, imap
    assert pop3.count("\n+OK") >= 2 and "\n-ERR Unknown command: PASS" in pop3, pop3

    found = {
        (f["server"].rpartition(":")[2], f["mechanism"]): [(a["password"], a["outcome"]) for a in f["attempts"]]
        for f in of(analyze(pcap, "--show-secrets"), "cleartext-credentials")
    }
    assert found == {
        ("25", "PLAIN"): [(L.PASSWORD, "success"), (L.WRONG_PASSWORD, None), (NEVER_CHECKED, None)],
        ("143", "IMAP-LOGIN"): [(L.PASSWORD, "success"), (L.WRONG_PASSWORD, None)],
        ("110", "USER-PASS"): [(L.PASSWORD, "success"), (L.WRONG_PASSWORD, None)],
    }


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


TOKEN = "ya29.Never-Checked"
XOAUTH2 = b64(f"user={L.USER}\x01auth=Bearer {TOKEN}\x01\x01")  # Dovecot here offers PLAIN and LOGIN only


def test_real_servers_refusing_a_mechanism_or_base64_they_never_checked_leave_the_secret_unjudged(
    verdicts_lab: V.VerdictsLab,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """Postfix answers an XOAUTH2 token and an AUTH LOGIN password line with a blank (not base64 to it) with 535
    5.7.8, naming the reason: null; its 535 for a wrong password ("(reason unavailable)"): failure. Dovecot refuses
    the XOAUTH2 token over IMAP and POP3 as an unsupported mechanism: null."""
    spaced = b64(NEVER_CHECKED)
    spaced = f"{spaced[:4]} {spaced[4:]}"  # read with its blank dropped, as lenient decoders do; Postfix takes none
    smtp = [(None, "220 "), ("EHLO client.example", "250 "), (f"AUTH XOAUTH2 {XOAUTH2}", "535 "),
            ("AUTH LOGIN", "334 "), (b64(L.USER), "334 "), (spaced, "535 "), (plain(L.WRONG_PASSWORD), "535 "),
            ("QUIT", "221 ")]  # fmt: skip
    imap_steps = [(None, "* OK"), (f"a1 AUTHENTICATE XOAUTH2 {XOAUTH2}", "a1 "), ("a2 LOGOUT", "a2 OK")]
    pop3_steps = [(None, "+OK"), (f"AUTH XOAUTH2 {XOAUTH2}", "-ERR"), ("QUIT", "+OK")]
    pcap = tmp_path / "reasons.pcap"
    with verdicts_lab.recording(pcap, "tcp"):
        postfix = talk(verdicts_lab, 25, smtp)
        imap = talk(verdicts_lab, 143, imap_steps)
        pop3 = talk(verdicts_lab, 110, pop3_steps)
    failed = "\n535 5.7.8 Error: authentication failed: "
    assert f"{failed}Invalid authentication mechanism\n" in postfix, postfix
    assert f"{failed}Invalid base64 data in continued response\n" in postfix, postfix
    assert f"{failed}(reason unavailable)\n" in postfix, postfix  # a wrong password: Postfix 3.7 words it so
    assert "\na1 NO [ALERT] Unsupported authentication mechanism.\n" in imap, imap
    assert "\n-ERR [AUTH] Unsupported authentication mechanism.\n" in pop3, pop3

    found = {
        (f["server"].rpartition(":")[2], f["mechanism"]): [(a["password"], a["outcome"]) for a in f["attempts"]]
        for f in of(analyze(pcap, "--show-secrets"), "cleartext-credentials")
    }
    assert found == {
        ("25", "XOAUTH2"): [(TOKEN, None)],
        ("25", "LOGIN"): [(NEVER_CHECKED, None)],
        ("25", "PLAIN"): [(L.WRONG_PASSWORD, "failure")],
        ("143", "XOAUTH2"): [(TOKEN, None)],
        ("110", "XOAUTH2"): [(TOKEN, None)],
    }


# A client that says EHLO (Postfix then asks Dovecot's auth server for its mechanisms, and keeps the connection),
# marks the file ``ready``, waits for the file ``go``, sends its AUTH line and QUIT. argv: ready, go, the AUTH line.
BACKEND_CLIENT = (
    V.SCRIPTED_CLIENT
    + r"""
import os
ready, go, auth = args
wait_for(b"220 ")
s.sendall(b"EHLO client.example\r\n")
wait_for(b"250 ")
open(ready, "w").close()
end = time.time() + 20
while not os.path.exists(go) and time.time() < end:
    time.sleep(0.05)
s.sendall(auth.encode() + b"\r\n")
wait_for(b"\r\n4")
s.sendall(b"QUIT\r\n")
wait_for(b"221 ")
sys.stdout.write(got.decode("latin-1"))
"""
)


def _stop_auth_connections(lab: V.VerdictsLab) -> list[int]:
    """Kills the Dovecot auth processes that hold Postfix's connections to the auth listener (by their ids, as ss
    names them): the connections close under Postfix, as when the auth server stops or crashes."""
    query = ["ss", "-Htnp", "state", "established", f"( sport = :{L.SASL_PORT} )"]
    listed = L.run(L.in_ns(lab.names.ns_srv, query)).stdout.decode()
    pids = sorted({int(pid) for pid in re.findall(r"pid=(\d+)", listed)})
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def test_postfix_whose_auth_server_went_away_leaves_the_password_unjudged(
    verdicts_lab: V.VerdictsLab,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """Dovecot's auth process dies between EHLO and AUTH: Postfix (3.1 and later) answers "454 4.7.0 Temporary
    authentication failure: Connection lost to authentication server" (2.3 to 3.0: 535 5.7.8 with the same words,
    tests/test_unjudged_refusals_backend.py). The password, right as it is, was never checked: null."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    argv = [sys.executable, "-c", BACKEND_CLIENT, L.SRV_IP, "25", V.EXTERNAL_CLIENTS[1], str(ready), str(go),
            plain(L.PASSWORD)]  # fmt: skip
    pcap = tmp_path / "backend-gone.pcap"
    with verdicts_lab.recording(pcap, "tcp"):
        in_client_ns = L.in_ns(verdicts_lab.names.ns_cli, argv)
        client = subprocess.Popen(in_client_ns, stdout=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.monotonic() + V.CLIENT_TIMEOUT
            while not ready.exists() and client.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ready.exists(), "the client never got past EHLO"
            assert _stop_auth_connections(verdicts_lab), "Postfix held no connection to Dovecot's auth server"
            go.touch()
            said = client.communicate(timeout=V.CLIENT_TIMEOUT + 10)[0].decode().replace("\r", "")
        finally:
            L.stop_proc(client)
    assert "\n454 4.7.0 Temporary authentication failure: Connection lost to authentication server\n" in said, said

    [found] = of(analyze(pcap, "--show-secrets"), "cleartext-credentials")
    assert [(a["password"], a["outcome"]) for a in found["attempts"]] == [(L.PASSWORD, None)]
