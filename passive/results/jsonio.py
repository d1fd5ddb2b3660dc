"""JSON as leakscope writes it: one line per record, control characters escaped, always valid UTF-8."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import IO, Any

from passive.findings.model import SCHEMA_VERSION

# json.dumps escapes only C0 controls; DEL, C1 controls (an 8-bit terminal reads U+009B as CSI), the line and
# paragraph separators (which break line-oriented readers) and lone surrogates (not encodable as UTF-8, e.g. from a
# file name given on the command line) are escaped here. They can only occur inside JSON strings.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escape_json_text(text: str) -> str:
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def dumps(record: Any) -> str:
    """One JSON document on one line: control characters escaped, always valid UTF-8 once encoded."""
    return _escape_json_text(json.dumps(record, ensure_ascii=False, default=str))


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
