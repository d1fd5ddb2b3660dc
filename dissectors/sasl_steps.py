"""Which client lines a SASL exchange may take as responses when the server's prompts are not in the capture.

:class:`dissectors.sasl.AuthTracker` binds responses to the server's prompts; these are the limits it applies when
the server said nothing since the exchange began (a capture of the client's side only): how many responses each
mechanism has, and which lines are commands of the protocol rather than base64; and the commands that start an
exchange.
"""

from __future__ import annotations

import re

# A line longer than this is no response taken without a prompt (sasl.MAX_BLOB_TEXT: a real NTLM blob is a few
# hundred bytes of base64).
MAX_RESPONSE_TEXT = 64 * 1024
_BASE64 = re.compile(rb"^[A-Za-z0-9+/]*={0,3}$")

# The client responses a mechanism has, its initial response included (RFC 4616 PLAIN: one message; the LOGIN draft:
# user name then password; RFC 2195 CRAM-MD5: one; the OAuth mechanisms: one; [MS-NLMP] NTLM: NEGOTIATE and
# AUTHENTICATE). Without a server prompt, no more than these are taken; a mechanism not named here is not limited.
CLIENT_STEPS = {"PLAIN": 1, "LOGIN": 2, "CRAM-MD5": 1, "XOAUTH2": 1, "OAUTHBEARER": 1, "EXTERNAL": 1, "NTLM": 2}
# Commands of each protocol that are also valid base64 (four letters): never a response taken without a prompt.
PROTOCOL_COMMANDS = {
    "smtp": frozenset({"HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
                       "AUTH", "BDAT", "TURN", "ETRN", "ATRN", "STARTTLS"}),
    "pop3": frozenset({"USER", "PASS", "APOP", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL",
                       "CAPA", "STLS", "AUTH", "LAST"}),
    "imap": frozenset({"DONE"}),
}  # fmt: skip


# The commands that start an exchange, by protocol: Exchange's X-EXPS (the verb its servers authenticate each other
# with, listed as "X-EXPS GSSAPI NTLM" in EHLO replies) runs AUTH's 334 steps and answers anyone who sends it.
AUTH_VERBS = {"smtp": ("AUTH", "X-EXPS"), "pop3": ("AUTH",), "imap": ("AUTHENTICATE",)}


def looks_like_response(protocol: str, line: str) -> bool:
    """Could a client line be a SASL response sent without a prompt: base64 (or ``*``), and no command?"""
    text = line.strip()
    if text == "*":
        return True
    if len(text) > MAX_RESPONSE_TEXT or not _BASE64.match(text.encode("ascii", errors="replace")):
        return False
    return text.upper() not in PROTOCOL_COMMANDS.get(protocol, frozenset())
