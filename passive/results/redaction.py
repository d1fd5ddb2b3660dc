"""Masking, in one place: every record, event and report line that leaves the process passes through a
:class:`Redactor` unless the user asked for secrets.

Three rules, applied together:

* **Fields that hold a secret** (declared ``secret`` in :mod:`passive.findings.kinds`, and the secret parts of
  events) are replaced by :data:`MASK`.
* **Client lines are masked by what they are, not by where they came from.** A line a client sent is kept only when
  its command is known to carry nothing secret (``EHLO``, ``MAIL``, ``RCPT``, ``USER``, ``CAPA``, ...); the
  argument of a password command (``PASS``, ``APOP``, IMAP ``LOGIN``) and the initial response of ``AUTH`` /
  ``AUTHENTICATE`` are masked; any other client line (a base64 SASL step, an unknown command, garbage) is masked
  whole. So a secret is masked even when it is the first thing a capture shows of a session. HTTP: a request line
  keeps its method, path and version (its query and any user:password in an absolute URI are masked); an
  ``Authorization`` / ``Proxy-Authorization`` header keeps its scheme (``NTLM``, ``Negotiate``, ``Basic``) and
  masks the rest: it is an NTLM AUTHENTICATE (a crackable response) or a Basic password.
* **Known secrets are scrubbed from every string**: the passwords, tokens and responses the run saw are collected
  (:meth:`Redactor.learn`) and replaced wherever they appear, whatever the field.

User names are not secrets in machine output; the report masks them partly (``name_mask``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MASK = "********"
# Secrets shorter than this are not scrubbed from free text: "a" or "12" would mask half the report. They are still
# masked in the fields and lines that hold them.
MIN_SCRUBBED = 4
# Secrets remembered per run for scrubbing; a hostile capture chooses how many distinct passwords it sends.
MAX_KNOWN_SECRETS = 4096

# Client commands that carry no secret (SMTP, POP3, IMAP); anything else a client sent is masked.
HARMLESS_COMMANDS = frozenset(
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
_HTTP_REQUEST = re.compile(r"^([A-Z][A-Z0-9_-]{0,31}) (\S+) (HTTP/\d\.\d)$")
# The scheme is kept only as a short word followed by its credentials; a lone word may be a bare token.
_HTTP_AUTHORIZATION = re.compile(r"^((?:Proxy-)?Authorization:[ \t]*[A-Za-z][A-Za-z0-9_.-]{0,19})[ \t]+\S", re.I)
_URI_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@?#]*@")
_IMAP_LOGIN = re.compile(r"^(\S+\s+LOGIN)\s+(\"(?:[^\"\\]|\\.)*\"|\S+)(?:\s.*)?$", re.IGNORECASE | re.DOTALL)

NameMask = Callable[[str], str]


def keep_name(name: str) -> str:
    return name


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


def mask_client_line(line: str, name_mask: NameMask = keep_name) -> str:
    """A client's protocol line with every secret replaced by the mask (user names through ``name_mask``)."""
    text = line.strip()
    match = _HTTP_REQUEST.match(text)
    if match:
        return f"{match.group(1)} {_http_target(match.group(2))} {match.group(3)}"
    match = _HTTP_AUTHORIZATION.match(text)
    if match:
        return f"{match.group(1)} {MASK}"
    match = _SASL_COMMAND.match(text)
    if match:
        return match.group(1) + (f" {MASK}" if match.group(2) else "")
    match = _USER_COMMAND.match(text)
    if match:
        return f"{match.group(1)} {name_mask(match.group(2).strip())}"
    match = _PASS_COMMAND.match(text)
    if match:
        return f"{match.group(1)} {MASK}"
    match = _APOP_COMMAND.match(text)
    if match:
        return f"{match.group(1)} {name_mask(match.group(2))} {MASK}"
    match = _IMAP_LOGIN.match(text)
    if match:
        user = match.group(2)
        quoted = len(user) >= 2 and user.startswith('"') and user.endswith('"')
        shown = f'"{name_mask(user[1:-1])}"' if quoted else name_mask(user)
        return f"{match.group(1)} {shown} {MASK}"
    # SMTP/POP3 commands come first; IMAP commands follow a tag.
    for word in text.split(None, 2)[:2]:
        if word.split(":", 1)[0].upper() in HARMLESS_COMMANDS:
            return line
    return MASK


def _http_target(target: str) -> str:
    """A request target with its query and any ``user:password@`` masked: tokens and passwords travel there."""
    target = _URI_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", target)
    path, question, _query = target.partition("?")
    return path + (f"?{MASK}" if question else "")


class Redactor:
    """Masks what one run's outputs must not show. ``Redactor(show_secrets=True)`` passes everything through.

    ``secrets`` is held by reference: a long-running monitor passes its run's set, which grows as traffic comes.
    """

    def __init__(
        self, show_secrets: bool = False, secrets: set[str] | None = None, name_mask: NameMask = keep_name
    ) -> None:
        self.show_secrets = show_secrets
        self.name_mask = name_mask
        self._secrets: set[str] = secrets if secrets is not None else set()

    def learn(self, secret: str | None) -> None:
        """Remember a secret, so that it is scrubbed wherever it appears."""
        if secret and len(self._secrets) < MAX_KNOWN_SECRETS:
            self._secrets.add(secret)

    def text(self, value: str) -> str:
        """Any string: known secrets replaced by the mask."""
        if self.show_secrets or not self._secrets:
            return value
        for secret in self._secrets:
            if len(secret) >= MIN_SCRUBBED and secret in value:
                value = value.replace(secret, MASK)
        return value

    def line(self, line: str, side: str) -> str:
        """An evidence or event line: client lines by what they carry, every line scrubbed of known secrets."""
        if self.show_secrets:
            return line
        if side == "client":
            line = mask_client_line(line, self.name_mask)
        return self.text(line)

    def value(self, value: Any) -> Any:
        """Scrub every string inside a JSON-ready value (lists and objects walked)."""
        if self.show_secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        return value
