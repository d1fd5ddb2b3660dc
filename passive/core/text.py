"""Make attacker-controlled strings inert before they reach a reader.

Rich renders :class:`rich.text.Text` without parsing markup, so markup needs no escaping there; what remains are
characters that act instead of showing, or show as nothing:

* control characters: C0, DEL and C1 (ANSI CSI/OSC sequences start with ESC or a C1 code);
* Unicode format characters (category Cf): bidi marks, embeddings, overrides and isolates (U+061C, U+200E/F,
  U+202A-202E, U+2066-2069), which reorder what a reader sees; zero-width spaces and joiners (U+200B-200D,
  U+2060, U+FEFF, U+180E); tag characters (U+E0001, U+E0020-E007F); the soft hyphen and the other Cf characters;
* the line and paragraph separators U+2028/U+2029 (Zl, Zp), which break lines where none is expected;
* the other default-ignorable code points, which fonts draw as nothing: the combining grapheme joiner (U+034F),
  variation selectors (U+180B-180F, U+FE00-FE0F, U+E0100-E01EF), Hangul fillers (U+115F, U+1160, U+3164,
  U+FFA0), Khmer inherent vowels (U+17B4, U+17B5) and the reserved ranges around them;
* lone surrogates: a file name that is not UTF-8 carries them, and a UTF-8 stream cannot encode them.

Each is shown as a visible escape: ``\\x1b``, ``\\u200b``, ``\\U000e0041``, so ``con\\u200btoso`` no longer reads
as ``contoso``. Variation selectors are escaped too: a name from the wire has no business choosing an emoji's
presentation, and one after a letter would hide in it. Other characters, confusable letters included, are shown
as they are: escaping them would make every name outside ASCII unreadable.
"""

from __future__ import annotations

import re

# The characters above but C0 controls, as a regular-expression class (JSON output escapes these: json.dumps
# already escapes C0 controls inside strings, and the line breaks of indented JSON are C0 controls that must stay).
# tests/test_text.py checks the whole set against every code point of the running Python's Unicode database.
UNSAFE_BEYOND_C0 = (
    "\x7f-\x9f"
    "\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    "\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164"
    "\ud800-\udfff\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff"
)
_UNSAFE = re.compile(f"[\x00-\x1f{UNSAFE_BEYOND_C0}]")


def escape_character(character: str) -> str:
    """One character as a visible escape: ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``."""
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: object) -> str:
    """A one-line, control-free, nothing-hidden rendering of ``value`` (None becomes the empty string)."""
    if value is None:
        return ""
    return _UNSAFE.sub(lambda match: escape_character(match.group()), str(value))
