"""Make attacker-controlled strings inert before they reach a terminal.

Rich renders :class:`rich.text.Text` without parsing markup, so markup needs no escaping there; what remains are
control characters (ANSI CSI/OSC sequences start with ESC or C1 codes) and bidirectional overrides that reorder what
a reader sees. Each is shown as a visible escape instead.
"""

from __future__ import annotations

import re

# C0 controls except nothing, DEL, C1 controls, the Unicode bidi embedding/override/isolate characters, and lone
# surrogates (a file name that is not UTF-8 carries them; a UTF-8 terminal stream cannot encode them).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """A one-line, control-free rendering of ``value`` (None becomes the empty string)."""
    if value is None:
        return ""
    return _UNSAFE.sub(_escape, str(value))
