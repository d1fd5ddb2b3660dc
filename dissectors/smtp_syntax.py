"""The arguments of SMTP commands the session reads: the path of MAIL FROM and RCPT TO, XCLIENT's attributes."""

from __future__ import annotations

import re

from dissectors import events as ev
from dissectors.session import MAX_VERB

_PATH = re.compile(r"^\s*(?:FROM|TO)\s*:\s*(<[^>]*>|[^\s<>]+)(.*)$", re.IGNORECASE)
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")


def xclient_attributes(argument: str) -> dict[str, str]:
    """``ADDR=192.0.2.7 LOGIN=alice`` as ``{"ADDR": "192.0.2.7", "LOGIN": "alice"}`` (xtext ``+HH`` decoded), the
    first :data:`~dissectors.events.MAX_OVERRIDE_ATTRIBUTES` of them."""
    attributes: dict[str, str] = {}
    for word in argument.split(None, ev.MAX_OVERRIDE_ATTRIBUTES)[: ev.MAX_OVERRIDE_ATTRIBUTES]:
        name, equals, value = word.partition("=")
        if equals and name:
            attributes[name.upper()[:MAX_VERB]] = _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)
    return attributes


def address(argument: str) -> str:
    """The path of ``MAIL FROM:<a>`` or ``RCPT TO:<a>`` without brackets; the null sender stays ``<>``."""
    match = _PATH.match(argument)
    if not match:
        return argument.strip()
    path = match.group(1)
    if path == "<>":
        return "<>"
    return path.strip("<>")
