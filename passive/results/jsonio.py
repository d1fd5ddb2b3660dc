"""JSON as leakscope writes it: one line per record, control characters escaped, always valid UTF-8."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import IO, Any

from passive.core.text import UNSAFE_BEYOND_C0
from passive.findings.model import SCHEMA_VERSION

# json.dumps escapes only C0 controls. Every other character that terminals and viewers act on or hide (the set of
# passive/core/text.py: DEL and C1 controls, since an 8-bit terminal reads U+009B as CSI; bidi, zero-width, tag and
# other format characters; the line and paragraph separators, which break line-oriented readers; variation
# selectors and fillers; lone surrogates, not encodable as UTF-8, e.g. from a file name given on the command line)
# is escaped here as \uXXXX (a surrogate pair beyond the BMP), so the JSON text is inert on a terminal while the
# decoded value stays exact. They can only occur inside JSON strings.
_JSON_UNSAFE = re.compile(f"[{UNSAFE_BEYOND_C0}]")


def _json_escape(character: str) -> str:
    code = ord(character)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _escape_json_text(text: str) -> str:
    if text.isascii() and "\x7f" not in text:  # DEL is the one unsafe ASCII character: most records need no search
        return text
    return _JSON_UNSAFE.sub(lambda match: _json_escape(match.group()), text)


# json.dumps with these arguments builds this encoder on every call; one built once writes the same text. Records
# are trees built here, never cyclic: not tracking the objects being written saves 6% of the encoding.
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str, check_circular=False).encode


def dumps(record: Any) -> str:
    """One JSON document on one line: control characters escaped, always valid UTF-8 once encoded."""
    return _escape_json_text(_ENCODE(record))


def dumps_indented(document: Any) -> str:
    return _escape_json_text(json.dumps(document, ensure_ascii=False, indent=2, default=str))


def write_jsonl(stream: IO[str], records: Iterable[dict[str, Any]]) -> None:
    for record in records:
        stream.write(dumps(record) + "\n")


def write_json(
    stream: IO[str],
    findings: list[dict[str, Any]],
    summary: dict[str, Any],
    sessions: list[dict[str, Any]] | None = None,
) -> None:
    document: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "findings": findings, "summary": summary}
    if sessions is not None:
        document["sessions"] = sessions
    stream.write(dumps_indented(document) + "\n")
