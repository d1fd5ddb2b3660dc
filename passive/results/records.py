"""Render findings: rich tables for people, JSON and JSON lines for machines. Traffic strings stay inert."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import IO, Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from passive.core.text import printable
from passive.findings.model import SCHEMA_VERSION, SECRET_MASK, Finding, FindingType

MASK = SECRET_MASK


def finding_record(finding: Finding, show_secrets: bool = False) -> dict[str, Any]:
    return finding.to_dict(show_secrets)


def summary_record(counters: dict[str, Any], findings: Iterable[Finding]) -> dict[str, Any]:
    by_type = Counter(str(f.type) for f in findings)
    return {"type": "summary", "schema_version": SCHEMA_VERSION, "findings": dict(by_type), **counters}


# json.dumps escapes only C0 controls; DEL, C1 controls (an 8-bit terminal reads U+009B as CSI), the line and
# paragraph separators (which break line-oriented readers) and lone surrogates (not encodable as UTF-8, e.g. from a
# file name given on the command line) are escaped here. They can only occur inside JSON strings.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escape_json_text(text: str) -> str:
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def dumps(record: dict[str, Any]) -> str:
    """One JSON document on one line: control characters escaped, always valid UTF-8 once encoded."""
    return _escape_json_text(json.dumps(record, ensure_ascii=False, default=str))


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
    stream.write(_escape_json_text(json.dumps(document, ensure_ascii=False, indent=2, default=str)) + "\n")


# ---- tables -----------------------------------------------------------------------------------------------------

_TITLES = {
    FindingType.NTLM_INFO: "NTLM host information",
    FindingType.AUTH_METHODS: "Authentication mechanisms offered",
    FindingType.CLEARTEXT_CREDENTIALS: "Clear-text credentials",
    FindingType.OPEN_RELAY: "Open relay",
    FindingType.MAIL_SERVICE: "Mail services",
}
_COLUMNS: dict[FindingType, list[str]] = {
    FindingType.NTLM_INFO: [
        "server",
        "protocol",
        "netbios_computer",
        "netbios_domain",
        "dns_computer",
        "dns_domain",
        "dns_tree",
        "os_version",
        "os_release",
        "server_time",
        "users",
        "workstations",
        "ntlm_version",
        "outcome",
    ],
    FindingType.AUTH_METHODS: ["server", "protocol", "mechanisms", "cleartext_exposed", "starttls_offered", "tls"],
    FindingType.CLEARTEXT_CREDENTIALS: ["server", "protocol", "mechanism", "user", "password", "outcome", "clients"],
    FindingType.OPEN_RELAY: ["server", "accepted", "mail_from", "rcpt_to", "reply", "clients"],
    FindingType.MAIL_SERVICE: [
        "server",
        "protocol",
        "banner",
        "software",
        "starttls_offered",
        "tls",
        "clients",
        "first_seen",
        "last_seen",
    ],
}
_SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}


def _cell(value: Any) -> Text:
    if value is None:
        return Text("")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list):
        return Text(printable(", ".join(str(v) for v in value)))
    return Text(printable(value))


def render_tables(console: Console, records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """One key/value card per finding, grouped by kind (readable at any terminal width)."""
    blocks: list[Any] = []
    for kind in (
        FindingType.NTLM_INFO,
        FindingType.CLEARTEXT_CREDENTIALS,
        FindingType.OPEN_RELAY,
        FindingType.AUTH_METHODS,
        FindingType.MAIL_SERVICE,
    ):
        rows = [r for r in records if r["type"] == kind]
        if not rows:
            continue
        blocks.append(Text(f"\n{_TITLES[kind]} ({kind})", style="bold underline"))
        for row in rows:
            title = Text.assemble(
                (row["severity"].upper(), _SEVERITY_STYLE.get(row["severity"], "")),
                "  ",
                (printable(row["server"]), "bold"),
                f"  {row['protocol']}  seen {row['count']}x",
            )
            card = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
            card.add_column("field", style="cyan", no_wrap=True)
            card.add_column("value", overflow="fold")
            for column in _COLUMNS[kind]:
                if column in ("server", "protocol"):
                    continue
                value = row.get(column)
                if value in (None, [], ""):
                    continue
                card.add_row(column, _cell(value))
            frames = [str(e["frame"]) for e in row.get("evidence", []) if e.get("frame") is not None]
            if frames:
                card.add_row("evidence", Text(f"{printable(row['evidence'][0]['file'])} frames {', '.join(frames)}"))
            blocks.append(card)
    if not blocks:
        blocks.append(Text("No mail findings: nothing leaked in what was analyzed.", style="green"))
    console.print(Group(*blocks))
    console.print(_summary_text(summary))


# Always shown in the summary line; other counters only when they are not zero (JSON output has them all).
_ALWAYS_SHOWN = ("findings", "packets_read", "packets_matched", "flows")


def _summary_text(summary: dict[str, Any]) -> Text:
    parts = []
    for key, value in summary.items():
        if key in ("type", "schema_version") or (not value and key not in _ALWAYS_SHOWN):
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "0"
        elif isinstance(value, list):
            value = len(value)
        parts.append(f"{key}: {value}")
    return Text(printable("; ".join(parts)), style="dim")
