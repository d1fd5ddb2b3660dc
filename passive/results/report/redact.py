"""Masking for reports: user names partly, passwords, hashes and SASL responses entirely.

Evidence lines are the raw protocol lines, so a client line can carry what the finding's own fields mask: a
``PASS`` argument, a base64 SASL response (PLAIN, LOGIN, a NetNTLM AUTHENTICATE with its crackable response).
Client lines are therefore kept only when their command is known to carry nothing secret.
"""

from __future__ import annotations

import re

from passive.findings.model import SECRET_MASK as MASK

# Client commands that carry no secret (SMTP, POP3, IMAP); anything else a client sent is masked.
_HARMLESS_COMMANDS = frozenset(
    {
        "EHLO", "HELO", "LHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP", "BDAT",
        "STARTTLS", "STLS", "CAPA", "CAPABILITY", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "LOGOUT",
        "SELECT", "EXAMINE", "FETCH", "UID", "ID", "ENABLE", "NAMESPACE", "IDLE", "CLOSE", "EXPUNGE", "SEARCH",
    }
)  # fmt: skip
_SASL_COMMAND = re.compile(r"^((?:\S+\s+)?(?:AUTH|AUTHENTICATE)\s+\S+)(\s+\S.*)?$", re.IGNORECASE | re.DOTALL)
_USER_COMMAND = re.compile(r"^(USER)\s+(\S.*)$", re.IGNORECASE | re.DOTALL)
_PASS_COMMAND = re.compile(r"^(PASS)(?:\s.*)?$", re.IGNORECASE | re.DOTALL)
_APOP_COMMAND = re.compile(r"^(APOP)\s+(\S+)(?:\s.*)?$", re.IGNORECASE | re.DOTALL)
_IMAP_LOGIN = re.compile(r"^(\S+\s+LOGIN)\s+(\"(?:[^\"\\]|\\.)*\"|\S+)(?:\s.*)?$", re.IGNORECASE | re.DOTALL)


def mask_name(name: str) -> str:
    """``jdoe`` -> ``j***e``: enough to recognise a known account, not enough to learn one. Qualifiers stay."""
    if "\\" in name:  # DOMAIN\user
        domain, _, user = name.rpartition("\\")
        return f"{domain}\\{mask_name(user)}"
    if "@" in name.strip("@"):  # user@domain
        user, _, domain = name.rpartition("@")
        return f"{mask_name(user)}@{domain}"
    if len(name) <= 1:
        return "*" if name else name
    if len(name) == 2:
        return name[0] + "*"
    return f"{name[0]}***{name[-1]}"


def mask_client_line(line: str) -> str:
    """A client's protocol line with user names masked partly and every secret replaced by the mask."""
    text = line.strip()
    match = _SASL_COMMAND.match(text)
    if match:
        return match.group(1) + (f" {MASK}" if match.group(2) else "")
    match = _USER_COMMAND.match(text)
    if match:
        return f"{match.group(1)} {mask_name(match.group(2).strip())}"
    match = _PASS_COMMAND.match(text)
    if match:
        return f"{match.group(1)} {MASK}"
    match = _APOP_COMMAND.match(text)
    if match:
        return f"{match.group(1)} {mask_name(match.group(2))} {MASK}"
    match = _IMAP_LOGIN.match(text)
    if match:
        user = match.group(2)
        quoted = len(user) >= 2 and user.startswith('"') and user.endswith('"')
        shown = f'"{mask_name(user[1:-1])}"' if quoted else mask_name(user)
        return f"{match.group(1)} {shown} {MASK}"
    words = text.split(None, 2)
    # SMTP/POP3 commands come first; IMAP commands follow a tag.
    for word in words[:2]:
        verb = word.split(":", 1)[0].upper()
        if verb in _HARMLESS_COMMANDS:
            return line
    return MASK
