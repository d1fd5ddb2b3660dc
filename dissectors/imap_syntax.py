"""IMAP syntax, without state: literal markers, [CAPABILITY] response codes, tokens of an assembled command, the
parameter list of ID (RFC 2971).

Every function here is one pass over its input, with string methods (RFC 3501/9051 section 4 and 7.1).
"""

from __future__ import annotations

import re

from dissectors.linebuffer import wire_text

# Where a [CAPABILITY ...] response code opens; its end is the next "]", found with str.find (a regular expression
# scanning for the "]" from every opening tried before was quadratic on a line of openings).
_CAPABILITY_OPEN = re.compile(r"\[CAPABILITY ", re.IGNORECASE)
# The next token: a quoted string's opening quote, or an atom (a run of anything but whitespace; \s is whitespace
# as str.isspace has it, both being Py_UNICODE_ISSPACE).
_TOKEN = re.compile(r'(")|(\S+)')
# What ends a run of plain characters inside a quoted string: its closing quote, or a backslash escaping the next.
_QUOTED_SPECIAL = re.compile(r'["\\]')
# In an ID parameter list: what separates its strings (whitespace and the list's parentheses), and an atom (NIL, or
# a literal's {n} marker).
_ID_SEPARATORS = re.compile(r"[\s()]*")
_ID_ATOM = re.compile(r'[^\s()"]+')
# RFC 2971 section 3.3: at most 30 field-value pairs, fields of at most 30 octets and values of at most 1024; what a
# peer sends beyond is not kept.
MAX_ID_PAIRS = 30
MAX_ID_FIELD = 30
MAX_ID_VALUE = 1024
# Octet counts of a literal: RFC 9051 allows 63 bits; twelve digits (a terabyte) already exceed any real message.
MAX_LITERAL_DIGITS = 12


def literal_at_end(text: str) -> tuple[int, bool] | None:
    """The literal a line announces at its end, ``{n}`` or ``{n+}``: (n, non-synchronising); None without one."""
    if not text.endswith("}"):
        return None
    start = text.rfind("{")
    inner = text[start + 1 : -1]
    plus = inner.endswith("+")
    digits = inner[:-1] if plus else inner
    if start < 0 or not 0 < len(digits) <= MAX_LITERAL_DIGITS or not digits.isdecimal():
        return None
    return int(digits), plus


def _is_literal_marker(atom: str) -> bool:
    return atom.rfind("{") == 0 and literal_at_end(atom) is not None


def capability_code(line: str) -> str | None:
    """The list inside the first complete ``[CAPABILITY ...]`` response code of a line; None without one."""
    opening = _CAPABILITY_OPEN.search(line)
    if opening is None:
        return None
    end = line.find("]", opening.end())
    return None if end < 0 else line[opening.end() : end]


def without_capability_codes(text: str) -> str:
    """The text with every complete ``[CAPABILITY ...]`` response code taken out (for a greeting's banner)."""
    kept: list[str] = []
    position = 0
    while (opening := _CAPABILITY_OPEN.search(text, position)) is not None:
        end = text.find("]", opening.end())
        if end < 0:
            break
        kept.append(text[position : opening.start()])
        position = end + 1
    kept.append(text[position:])
    return "".join(kept)


def tokens(parts: list[str | bytes]) -> list[str]:
    """Split an assembled line into atoms, quoted strings (unescaped) and literals (decoded)."""
    result: list[str] = []
    for part in parts:
        if isinstance(part, bytes):
            result.append(wire_text(part))
            continue
        text = part
        found = _TOKEN.search(text)
        while found is not None:
            atom = found.group(2)
            if atom is None:  # an opening quote
                value, position = _quoted(text, found.end())
                result.append(value)
            else:
                if not (atom[0] == "{" and _is_literal_marker(atom)):  # the {n} marker itself is not a value
                    result.append(atom)
                position = found.end()
            found = _TOKEN.search(text, position)
    return result


def _quoted(text: str, position: int) -> tuple[str, int]:
    """A quoted string's value from just after its opening quote, and where reading goes on (after the closing
    quote, or the end of the text when it has none)."""
    value: list[str] = []
    while (special := _QUOTED_SPECIAL.search(text, position)) is not None:
        at = special.start()
        value.append(text[position:at])
        if text[at] == '"':
            return "".join(value), at + 1
        if at + 1 == len(text):  # a backslash that escapes nothing stays
            value.append("\\")
            return "".join(value), len(text)
        value.append(text[at + 1])
        position = at + 2
    value.append(text[position:])
    return "".join(value), len(text)


def id_parameters(parts: list[str | bytes]) -> dict[str, str]:
    """The field-value pairs of an ID command's or response's parameter list (RFC 2971), ``parts`` holding what
    follows the word ID (text, and the values of literals): ``("name" "Thunderbird" "version" "115.3.1")`` gives
    ``{"name": "Thunderbird", "version": "115.3.1"}``. Field names are in lower case; NIL values, and a field
    without a value, are left out; RFC 2971's limits bound what is kept. One pass over the text."""
    values: list[str | None] = []
    wanted = 2 * MAX_ID_PAIRS
    for part in parts:
        if len(values) >= wanted:
            break
        if isinstance(part, bytes):  # a literal's value
            values.append(wire_text(part[:MAX_ID_VALUE]))
            continue
        position = _ID_SEPARATORS.match(part).end()  # type: ignore[union-attr]  # matches the empty string
        while position < len(part) and len(values) < wanted:
            if part[position] == '"':
                value, position = _quoted(part, position + 1)
                values.append(value[:MAX_ID_VALUE])
            else:
                atom = _ID_ATOM.match(part, position)
                if atom is None:  # cannot be: a separator would have been skipped
                    break
                position = atom.end()
                word = atom.group()
                if word.upper() == "NIL":
                    values.append(None)
                elif not (word[0] == "{" and _is_literal_marker(word)):  # the {n} marker itself is not a value
                    values.append(word[:MAX_ID_VALUE])
            position = _ID_SEPARATORS.match(part, position).end()  # type: ignore[union-attr]
    pairs: dict[str, str] = {}
    for name, value in zip(values[0::2], values[1::2], strict=False):
        if name is not None and value is not None:
            pairs.setdefault(name[:MAX_ID_FIELD].lower(), value)
    return pairs
