"""A real Postfix (SASL through Dovecot, tests/verdicts_lab.py) answering a client that pipelines its transaction
behind the last response of an AUTH LOGIN: Postfix reads the commands in turn and answers the AUTH first, so the
verdict on the relaying follows that answer. The crafted dialogues of the same cases are in
tests/test_pipelined_auth_verdicts.py. And Dovecot's POP3 answering logins pipelined in one write, in turn (crafted:
tests/test_pipelined_auth_pop3.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests import lab as L
from tests import verdicts_lab as V
from tests.test_verdicts_lab import OWN_DOMAIN, analyze, of, verdicts_lab  # noqa: F401 (verdicts_lab: the lab, a fixture)

# A client that authenticates with AUTH LOGIN, waiting for each prompt, then sends its password, MAIL FROM, RCPT TO
# and QUIT in one write, and prints what the server said.
PIPELINER = (
    V.SCRIPTED_CLIENT
    + r"""
user, password, sender, rcpt = args[:4]
wait_for(b"220 ")
s.sendall(b"EHLO pipeliner.example\r\n"); wait_for(b"250 ")
s.sendall(b"AUTH LOGIN\r\n"); wait_for(b"334 VXNlcm5hbWU6")
s.sendall(base64.b64encode(user.encode()) + b"\r\n"); wait_for(b"334 UGFzc3dvcmQ6")
s.sendall(base64.b64encode(password.encode()) + b"\r\nMAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nQUIT\r\n"
          % (sender.encode(), rcpt.encode()))
wait_for(b"221 ")
sys.stdout.write(got.decode("latin-1"))
"""
)


def pipeline(lab: V.VerdictsLab, port: int, password: str) -> str:
    """What Postfix answered the pipelining client from outside its networks, at ``port``."""
    argv = [sys.executable, "-c", PIPELINER, L.SRV_IP, str(port), V.EXTERNAL_CLIENTS[0], L.USER, password,
            L.MAIL_FROM, V.FOREIGN_RCPT]  # fmt: skip
    done = lab.client(argv)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode().replace("\r", "")


def test_postfix_answers_the_auth_before_the_pipelined_transaction(
    verdicts_lab: V.VerdictsLab,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """With the right password Postfix answers 235, then relays for the authenticated user: no relay finding. With
    a wrong one it answers 535, then refuses the foreign recipient (port 25), or takes it (the service that accepts
    every RCPT): an unauthenticated client's relaying, high, the 535 having been seen."""
    pcap = tmp_path / "pipelined-auth.pcap"
    with verdicts_lab.recording(pcap, "tcp"):
        granted = pipeline(verdicts_lab, 25, L.PASSWORD)
        refused = pipeline(verdicts_lab, 25, L.WRONG_PASSWORD)
        relayed = pipeline(verdicts_lab, V.RELAYING_PORT, L.WRONG_PASSWORD)
    assert "\n235 2.7.0" in granted and "\n250 2.1.5" in granted, granted
    assert granted.index("\n235 ") < granted.index("\n250 2.1.0"), granted
    assert "\n535 5.7.8" in refused and "Relay access denied" in refused, refused
    assert "\n535 5.7.8" in relayed and "\n250 2.1.5" in relayed, relayed

    relays = of(analyze(pcap, "--trusted-net", f"{V.TRUSTED_CLIENT}/32", *OWN_DOMAIN), "open-relay")
    verdicts = sorted((r["server"].rpartition(":")[2], r["verdict"], r["severity"]) for r in relays)
    assert verdicts == [("25", "refused", "info"), (str(V.RELAYING_PORT), "open-relay", "high")]
    [high] = [r for r in relays if r["verdict"] == "open-relay"]
    assert [d["client"].rpartition(":")[0] for d in high["details"]] == [V.EXTERNAL_CLIENTS[0]]
    attempts = {
        f["server"].rpartition(":")[2]: [(a["outcome"], a["count"]) for a in f["attempts"]]
        for f in of(analyze(pcap), "cleartext-credentials")
    }
    assert attempts == {"25": [("success", 1), ("failure", 1)], str(V.RELAYING_PORT): [("failure", 1)]}


# A proxy (the lab's XCLIENT-authorized host) that authenticates, then hands the session to another client with
# XCLIENT ADDR (no LOGIN) and sends that client's transaction, and prints what the server said.
XCLIENT_AFTER_AUTH = r"""
import base64, socket, sys
host, port, source, user, password, client, sender, rcpt = sys.argv[1], int(sys.argv[2]), *sys.argv[3:9]
s = socket.create_connection((host, port), timeout=20, source_address=(source, 0))
replies = s.makefile("rb")
def reply():
    lines = [replies.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(replies.readline())
    return b"".join(lines)
got = [reply()]
plain = base64.b64encode(b"\0%s\0%s" % (user.encode(), password.encode()))
for line in (b"EHLO proxy.example", b"AUTH PLAIN " + plain, b"XCLIENT ADDR=" + client.encode(),
             b"EHLO proxied.example", b"MAIL FROM:<%s>" % sender.encode(), b"RCPT TO:<%s>" % rcpt.encode(), b"QUIT"):
    s.sendall(line + b"\r\n")
    got.append(reply())
sys.stdout.write(b"".join(got).decode("latin-1"))
"""


def test_postfix_forgets_the_auth_at_an_xclient_without_login(
    verdicts_lab: V.VerdictsLab,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """After a granted AUTH, an XCLIENT naming an outside client and no LOGIN: Postfix resets its SASL state and
    refuses that client's foreign recipient (port 25), or takes it (the service that accepts every RCPT). Both are
    judged as the named client's, not passed over as an authenticated session's."""
    pcap = tmp_path / "xclient-after-auth.pcap"
    replies = {}
    with verdicts_lab.recording(pcap, "tcp"):
        for port in (25, V.RELAYING_PORT):
            argv = [sys.executable, "-c", XCLIENT_AFTER_AUTH, L.SRV_IP, str(port), V.TRUSTED_CLIENT, L.USER,
                    L.PASSWORD, V.EXTERNAL_CLIENTS[1], L.MAIL_FROM, V.FOREIGN_RCPT]  # fmt: skip
            done = verdicts_lab.client(argv)
            assert done.returncode == 0, done.stderr.decode(errors="replace")
            replies[port] = done.stdout.decode().replace("\r", "")
    for text in replies.values():
        assert "\n235 2.7.0" in text and "\n220 " in text.partition("\n235 ")[2], text
    assert "Relay access denied" in replies[25], replies[25]
    assert "\n250 2.1.5" in replies[V.RELAYING_PORT], replies[V.RELAYING_PORT]

    relays = of(analyze(pcap, "--trusted-net", f"{V.TRUSTED_CLIENT}/32", *OWN_DOMAIN), "open-relay")
    verdicts = sorted((r["server"].rpartition(":")[2], r["verdict"], r["severity"]) for r in relays)
    assert verdicts == [("25", "refused", "info"), (str(V.RELAYING_PORT), "open-relay", "high")]
    for relay in relays:
        assert [d["client"].rpartition(":")[0] for d in relay["details"]] == [V.EXTERNAL_CLIENTS[1]]


# A client that sends two AUTH PLAIN commands (with initial responses: the wrong password, then the right one), its
# transaction and QUIT in one write after EHLO, and prints what the server said.
TWO_AUTHS = (
    V.SCRIPTED_CLIENT
    + r"""
user, first, second, sender, rcpt = args[:5]
def plain(password):
    return b"AUTH PLAIN " + base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()) + b"\r\n"
wait_for(b"220 ")
s.sendall(b"EHLO pipeliner.example\r\n"); wait_for(b"250 ")
transaction = b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nQUIT\r\n" % (sender.encode(), rcpt.encode())
s.sendall(plain(first) + plain(second) + transaction)
wait_for(b"221 ")
sys.stdout.write(got.decode("latin-1"))
"""
)


def test_postfix_answers_two_pipelined_auths_in_turn(
    verdicts_lab: V.VerdictsLab,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """Two AUTH PLAIN in one write, the wrong password first: Postfix answers each in turn (535, then 235) before
    the transaction, which it then takes for the authenticated user: no relay finding, and each password with its
    own verdict."""
    pcap = tmp_path / "two-auths.pcap"
    argv = [sys.executable, "-c", TWO_AUTHS, L.SRV_IP, str(V.RELAYING_PORT), V.EXTERNAL_CLIENTS[0], L.USER,
            L.WRONG_PASSWORD, L.PASSWORD, L.MAIL_FROM, V.FOREIGN_RCPT]  # fmt: skip
    with verdicts_lab.recording(pcap, "tcp"):
        done = verdicts_lab.client(argv)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    said = done.stdout.decode().replace("\r", "")
    codes = [line[:3] for line in said.split("\n")[1:] if line[:3].isdigit() and line[3:4] == " "]
    assert codes[1:] == ["535", "235", "250", "250", "221"], said
    assert of(analyze(pcap, *OWN_DOMAIN), "open-relay") == []
    [found] = of(analyze(pcap, "--show-secrets"), "cleartext-credentials")
    assert [(a["password"], a["outcome"]) for a in found["attempts"]] == [
        (L.WRONG_PASSWORD, "failure"),
        (L.PASSWORD, "success"),
    ]


# A client that sends each of its steps (args after the user name: "<lines>|<until>", the lines joined by "\n",
# "{plain:<password>}" for PLAIN's message in base64, "{user}" for the user name) in one write, waits until the server
# has sent <until> lines in all (a number) or the text <until>, and prints what the server said.
STEPS = (
    V.SCRIPTED_CLIENT
    + r"""
def lines(count, deadline=20.0):
    global got
    end = time.time() + deadline
    while got.count(b"\r\n") < count and time.time() < end:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
def line(text):
    head, found, rest = text.partition("{plain:")
    if found:
        password, _, tail = rest.partition("}")
        text = head + base64.b64encode(("\0%s\0%s" % (args[0], password)).encode()).decode() + tail
    return text.replace("{user}", args[0]).encode() + b"\r\n"
lines(1)
for step in args[1:]:
    text, _, until = step.rpartition("|")
    s.sendall(b"".join(line(t) for t in text.split("\n")))
    if until.isdigit():
        lines(int(until))
    else:
        wait_for(until.encode())
sys.stdout.write(got.decode("latin-1"))
"""
)


def steps(lab: V.VerdictsLab, port: int, *steps: str) -> str:
    argv = [sys.executable, "-c", STEPS, L.SRV_IP, str(port), V.EXTERNAL_CLIENTS[0], L.USER, *steps]
    done = lab.client(argv)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode().replace("\r", "")


def test_dovecot_answers_pipelined_pop3_logins_in_turn(
    verdicts_lab: V.VerdictsLab,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """Dovecot's POP3 answers the logins of one write in turn: two AUTH PLAIN (the wrong password first), PASS then
    AUTH PLAIN, and an AUTH PLAIN it prompts ("+ ") with USER pipelined behind it, which it reads as the response.
    Each password gets its own verdict: the right one worked every time, the wrong one failed."""
    pcap = tmp_path / "pop3-pipelined.pcap"
    wrong, right = L.WRONG_PASSWORD, L.PASSWORD
    with verdicts_lab.recording(pcap, "tcp port 110"):
        two = steps(verdicts_lab, 110, f"AUTH PLAIN {{plain:{wrong}}}\nAUTH PLAIN {{plain:{right}}}\nQUIT|4")
        pass_first = steps(verdicts_lab, 110, "USER {user}|2", f"PASS {wrong}\nAUTH PLAIN {{plain:{right}}}\nQUIT|5")
        prompted = steps(verdicts_lab, 110, "AUTH PLAIN\nUSER {user}|3", "USER {user}|4", f"PASS {right}|5", "QUIT|6")
    for said in (two, pass_first):
        replies = [line.split()[0] for line in said.split("\n")[1:] if line]
        assert replies[-3:] == ["-ERR", "+OK", "+OK"], said
    assert [line.split(" ")[0] for line in prompted.split("\n")[1:] if line] == ["+", "-ERR", "+OK", "+OK", "+OK"]

    found = of(analyze(pcap, "--show-secrets"), "cleartext-credentials")
    attempts = sorted(
        (f["mechanism"], a["password"], str(a["outcome"]), a["count"]) for f in found for a in f["attempts"]
    )
    assert attempts == [("PLAIN", right, "success", 2), ("PLAIN", wrong, "failure", 1),
                        ("USER-PASS", right, "success", 1), ("USER-PASS", wrong, "failure", 1)], attempts  # fmt: skip


def test_dovecot_checks_a_pop3_pass_only_right_after_a_user_it_took(
    verdicts_lab: V.VerdictsLab,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """RFC 1939: PASS only right after a successful USER. Dovecot answers a PASS with no USER before it, and a second
    PASS after a refused one (it forgot the user), "-ERR No username given." without trying the password, the right
    one included: neither is a failed password; the PASS right after the USER is. Its greeting gives no APOP
    timestamp, and it answers APOP "-ERR APOP not enabled.": no failed digest either. A USER pipelined behind an AUTH
    it prompts is that AUTH's response, no USER: the PASS after it draws "-ERR No username given." too."""
    pcap = tmp_path / "pop3-pass-without-user.pcap"
    wrong, right, digest = L.WRONG_PASSWORD, L.PASSWORD, "0" * 32
    with verdicts_lab.recording(pcap, "tcp port 110"):
        said = steps(verdicts_lab, 110, f"PASS {right}|2", "USER {user}|3", f"PASS {wrong}|4", f"PASS {right}|5",
                     f"APOP {{user}} {digest}|6", "QUIT|7")  # fmt: skip
        # A USER pipelined behind an AUTH Dovecot prompts is read as the AUTH's response: the PASS has no USER.
        swallowed = steps(verdicts_lab, 110, f"AUTH PLAIN\nUSER {{user}}\nPASS {right}|4", "QUIT|5")
    assert said.count("-ERR No username given.") == 2 and "-ERR APOP not enabled." in said, said
    assert swallowed.rstrip().split("\n")[-2].startswith("-ERR No username given."), swallowed

    found = of(analyze(pcap, "--show-secrets"), "cleartext-credentials")
    attempts = sorted((a["password"], str(a["outcome"]), a["count"]) for f in found for a in f["attempts"])
    # The right password three times in all (two of them counted as one attempt), never judged.
    assert attempts == [(digest, "None", 1), (right, "None", 1), (right, "None", 2), (wrong, "failure", 1)], attempts


def test_dovecot_answers_pipelined_imap_logins_by_tag(
    verdicts_lab: V.VerdictsLab,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """Dovecot's IMAP answers each login of one write with its tag: two AUTHENTICATE PLAIN with initial responses
    (SASL-IR, the wrong password first), LOGIN then AUTHENTICATE, and an AUTHENTICATE whose response shares a write
    with the commands after it. Each password gets its own verdict."""
    pcap = tmp_path / "imap-pipelined.pcap"
    wrong, right = L.WRONG_PASSWORD, L.PASSWORD
    end = "a3 LOGOUT|a3 OK"
    with verdicts_lab.recording(pcap, "tcp port 143"):
        said = [
            steps(
                verdicts_lab,
                143,
                f"a1 AUTHENTICATE PLAIN {{plain:{wrong}}}\na2 AUTHENTICATE PLAIN {{plain:{right}}}\n{end}",
            ),
            steps(verdicts_lab, 143, f"a1 LOGIN {{user}} {wrong}\na2 AUTHENTICATE PLAIN {{plain:{right}}}\n{end}"),
            steps(verdicts_lab, 143, "a1 AUTHENTICATE PLAIN|\r\n+", f"{{plain:{right}}}\na2 NOOP\n{end}"),
        ]
    for text, first in zip(said, ("a1 NO", "a1 NO", "a1 OK"), strict=True):
        assert f"\n{first}" in text and "\na2 OK" in text, text

    found = of(analyze(pcap, "--show-secrets"), "cleartext-credentials")
    attempts = sorted(
        (f["mechanism"], a["password"], str(a["outcome"]), a["count"]) for f in found for a in f["attempts"]
    )
    assert attempts == [("IMAP-LOGIN", wrong, "failure", 1), ("PLAIN", right, "success", 3),
                        ("PLAIN", wrong, "failure", 1)], attempts  # fmt: skip


def test_postfix_reads_a_command_pipelined_behind_a_prompted_auth_as_its_response(
    verdicts_lab: V.VerdictsLab,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """AUTH PLAIN without an initial response, MAIL and RCPT in one write: Postfix prompts (334), reads MAIL as the
    response (535: invalid base64, says its SASL server) and refuses the RCPT for want of a MAIL (503); the MAIL sent
    next is the one its 250 answers. No recipient was accepted: the service that takes every RCPT relayed nothing."""
    pcap = tmp_path / "prompted-auth.pcap"
    group = f"AUTH PLAIN\nMAIL FROM:<{L.MAIL_FROM}>\nRCPT TO:<{V.FOREIGN_RCPT}>|503 "
    with verdicts_lab.recording(pcap, "tcp"):
        said = steps(verdicts_lab, V.RELAYING_PORT, "EHLO pipeliner.example|250 ", group,
                     f"MAIL FROM:<{L.MAIL_FROM}>|250 2.1.0", "QUIT|221 ")  # fmt: skip
    codes = [line[:3] for line in said.replace("\r", "").split("\n") if line[3:4] == " "]
    assert codes[2:] == ["334", "535", "503", "250", "221"], said
    assert of(analyze(pcap, *OWN_DOMAIN), "open-relay") == []
