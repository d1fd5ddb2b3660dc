"""The one reader of findings files: JSON lines as ``--format jsonl`` writes them, or the ``--format json``
document. A findings file is input like any other: bounded in size, lines, records and nesting, and every failure
is a one-line :class:`InputError`."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from passive.core.errors import InputError

# The longest line of a JSON lines file: a record with 50 details and 8 evidence lines is a few hundred KiB.
MAX_LINE = 16 * 1024 * 1024
# Records (findings and summaries) read from all files of one command.
MAX_RECORDS = 100_000
# An indented JSON document is parsed whole.
MAX_DOCUMENT = 256 * 1024 * 1024


@dataclass
class FindingsInput:
    """What the findings files of one command held: finding records and summary records, apart."""

    records: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: Any, where: str) -> None:
        if not isinstance(record, dict):
            raise InputError(f"{where}: not a finding record (a JSON object)")
        if len(self.records) + len(self.summaries) >= MAX_RECORDS:
            raise InputError(f"{where}: more than {MAX_RECORDS} records")
        (self.summaries if record.get("type") == "summary" else self.records).append(record)


def read_findings(path: str, into: FindingsInput | None = None, data: bytes | None = None) -> FindingsInput:
    """Add the records of one findings file to ``into`` (a new one by default) and return it. ``data`` is the
    file's content when it was read already (from a pipe, which cannot be read twice)."""
    into = into if into is not None else FindingsInput()
    try:
        with open(path, "rb") if data is None else io.BytesIO(data) as stream:
            first = stream.readline(MAX_LINE)
            if first[:2] == b"\x1f\x8b":
                raise InputError(f"{path}: compressed; give the capture or the findings file uncompressed")
            record = _json_line(first)
            if record is None or _is_document(record):  # a JSON document, not one record per line
                # Read up to the bound rather than trusting the size a file says it has: a device, a FIFO or
                # /proc say 0 (``--baseline /dev/zero`` read until memory ran out).
                rest = stream.read(MAX_DOCUMENT + 1 - len(first))
                if len(first) + len(rest) > MAX_DOCUMENT:
                    raise InputError(f"{path}: JSON document larger than {MAX_DOCUMENT // 2**20} MiB")
                _read_document(path, first + rest, into)
                return into
            into.add(record, f"{path} line 1")
            _read_lines(path, stream, into)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply") from None
    return into


def _is_document(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("findings"), list) and "type" not in value


def _json_line(line: bytes) -> Any:
    try:
        return json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None


def _read_lines(path: str, stream: Any, into: FindingsInput) -> None:
    for number, line in enumerate(iter(lambda: stream.readline(MAX_LINE), b""), start=2):
        if not line.strip():
            continue
        if not line.endswith(b"\n") and len(line) >= MAX_LINE:
            raise InputError(f"{path} line {number}: longer than {MAX_LINE // 2**20} MiB")
        try:
            record = json.loads(line.decode("utf-8", "replace"))
        except ValueError as error:
            reason = getattr(error, "msg", str(error))
            raise InputError(f"{path} line {number}: not JSON ({reason})") from None
        into.add(record, f"{path} line {number}")


def _read_document(path: str, data: bytes, into: FindingsInput) -> None:
    try:
        document = json.loads(data.decode("utf-8", "replace"))
    except ValueError as error:
        reason = getattr(error, "msg", str(error))
        raise InputError(f"{path}: neither JSON lines nor a JSON document ({reason})") from None
    if isinstance(document, dict) and "findings" not in document and document.get("type") is not None:
        into.add(document, f"{path}")  # one record, pretty-printed
        return
    findings = document.get("findings") if isinstance(document, dict) else None
    if not isinstance(findings, list):
        raise InputError(f"{path}: a JSON document without a findings list")
    for index, record in enumerate(findings):
        into.add(record, f"{path} finding {index + 1}")
    if isinstance(document.get("summary"), dict):
        into.add({**document["summary"], "type": "summary"}, f"{path} summary")


def read_records(path: str) -> list[dict[str, Any]]:
    """The finding records of one findings file (its summary records left out)."""
    return read_findings(path).records
