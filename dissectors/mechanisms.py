"""The SASL mechanisms a server's listing names, sans-I/O: SMTP's EHLO ``AUTH`` keyword, IMAP's ``AUTH=``
capabilities, POP3's CAPA ``SASL`` line and its ``AUTH`` list (RFC 4954, RFC 9051, RFC 5034)."""

from __future__ import annotations

import re

# The characters of a mechanism name (RFC 4422 section 3.1, lower case too); how long a listed one may be is the
# detector's to judge and count (passive.analysis.detectors.auth_methods).
_MECHANISM_CHARACTERS = re.compile(r"[A-Za-z0-9_-]+")


def mechanism_names(words: list[str]) -> list[str]:
    """The mechanisms a server's listing names (EHLO AUTH, IMAP ``AUTH=``, POP3 CAPA SASL or the AUTH list): the
    words made of a mechanism name's characters, upper case, each once, in order. Other words (``=cmd|'``, ``/C``, a
    control character) are none: no client can ask for them."""
    return list(dict.fromkeys(word.upper() for word in words if _MECHANISM_CHARACTERS.fullmatch(word)))
