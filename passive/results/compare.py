"""Compare what the wire showed (passive), what a server tells anyone who asks (active) and, optionally, what nmap's
NSE scripts reported: per server, per field, each source's value and whether they agree, differ, or only one has it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from dissectors import ntlmssp
from passive.core.text import printable
from passive.findings.model import SCHEMA_VERSION, FindingType
from passive.results.nmap_xml import NmapService

SOURCES = ("passive", "active", "nmap")
# The fields compared, per finding type; other fields describe one session (times, clients), not the server.
COMPARED: dict[str, tuple[str, ...]] = {
    "mail-service": ("banner", "software", "starttls_offered"),
    "auth-methods": ("mechanisms", "mechanisms_after_tls", "cleartext_login"),
    # The server's names and build; its clock and flags differ from one challenge to the next.
    "ntlm-info": tuple(name for name in ntlmssp.SERVER_FIELDS if name not in ("server_time", "flags")),
    "open-relay": ("accepted",),
}
# Lists compared as sets: the order a server lists mechanisms in is no leak.
SET_FIELDS = {"mechanisms", "mechanisms_after_tls"}
# Fields where null is itself a fact (the challenge carried no such name), not a gap in what a source knows.
NULL_IS_A_VALUE = set(COMPARED["ntlm-info"])
MAX_INPUT_BYTES = 256 * 1024 * 1024
PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x0a\x0d\x0d\x0a")


class CompareError(ValueError):
    pass


# Per server: per finding type: field -> value.
ServerFields = dict[str, dict[str, dict[str, Any]]]


@dataclass
class SourceData:
    name: str
    servers: ServerFields = field(default_factory=dict)
    protocols: dict[str, str] = field(default_factory=dict)


def from_records(name: str, records: list[dict[str, Any]]) -> SourceData:
    """Findings records (as ``analyze``/``probe`` write them) reduced to the compared fields."""
    source = SourceData(name)
    kinds = {str(kind) for kind in FindingType}
    for record in records:
        kind, server = record.get("type"), record.get("server")
        if kind not in kinds or kind not in COMPARED or not isinstance(server, str):
            continue
        if isinstance(record.get("protocol"), str):
            source.protocols.setdefault(server, record["protocol"])
        fields = source.servers.setdefault(server, {}).setdefault(kind, {})
        if kind == "open-relay":
            # One finding per verdict: the server relays when any attempt was accepted.
            fields["accepted"] = bool(fields.get("accepted")) or bool(record.get("accepted"))
            continue
        for name in COMPARED[kind]:
            if name in record:
                fields[name] = record[name]
    return source


def from_nmap(services: list[NmapService]) -> SourceData:
    source = SourceData("nmap")
    for service in services:
        if service.protocol:
            source.protocols.setdefault(service.server, service.protocol)
        for kind, fields in service.fields.items():
            target = source.servers.setdefault(service.server, {}).setdefault(kind, {})
            target.update({name: value for name, value in fields.items() if name in COMPARED.get(kind, ())})
    return source


def _normal(name: str, value: Any) -> Any:
    if name in SET_FIELDS and isinstance(value, list):
        return sorted({str(item).upper() for item in value})
    return value


def compare(sources: list[SourceData]) -> dict[str, Any]:
    """The comparison document: ``servers[].fields[]`` with ``values`` per source and a ``status``."""
    names = [source.name for source in sources]
    servers = sorted({server for source in sources for server in source.servers}, key=_server_key)
    totals: Counter[str] = Counter()
    out: list[dict[str, Any]] = []
    for server in servers:
        rows: list[dict[str, Any]] = []
        for kind, field_names in COMPARED.items():
            for name in field_names:
                values: dict[str, Any] = {}
                for source in sources:
                    fields = source.servers.get(server, {}).get(kind)
                    if fields is None or name not in fields:
                        continue
                    if fields[name] is None and name not in NULL_IS_A_VALUE:
                        continue
                    values[source.name] = fields[name]
                if not values:
                    continue
                status = _status(name, values)
                totals[status] += 1
                rows.append({"finding": kind, "field": name, "values": values, "status": status})
        protocol = next((s.protocols[server] for s in sources if server in s.protocols), None)
        out.append({"server": server, "protocol": protocol, "fields": rows})
    return {
        "type": "comparison",
        "schema_version": SCHEMA_VERSION,
        "sources": names,
        "servers": out,
        "summary": dict(totals),
    }


def _status(name: str, values: dict[str, Any]) -> str:
    if len(values) == 1:
        return f"only-{next(iter(values))}"
    normal = [json.dumps(_normal(name, value), sort_keys=True, default=str) for value in values.values()]
    return "agree" if len(set(normal)) == 1 else "differ"


def _server_key(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host, int(port) if port.isdigit() else 0


# ---- reading inputs ---------------------------------------------------------------------------------------------


def is_capture(path: str | Path) -> bool:
    """pcap, pcapng or gzip (a compressed capture); findings files are text."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(4)
    except OSError as error:
        raise CompareError(f"cannot read {path}: {error.strerror or error}") from None
    return head in PCAP_MAGICS or head[:2] == b"\x1f\x8b"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Findings from a ``--format json`` document or ``--format jsonl`` lines (summary lines are skipped)."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_INPUT_BYTES + 1)
    except OSError as error:
        raise CompareError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise CompareError(f"{path}: larger than {MAX_INPUT_BYTES} bytes")
    if data[:2] == b"\x1f\x8b":
        raise CompareError(f"{path}: compressed; give the capture or the findings file uncompressed")
    text = data.decode("utf-8", "replace").strip()
    try:
        document = json.loads(text) if text.startswith("{") and "\n{" not in text else None
    except json.JSONDecodeError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("findings"), list):
        return [r for r in document["findings"] if isinstance(r, dict)]
    if isinstance(document, dict):
        return [document]
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise CompareError(f"{path}: line {number} is not JSON (expected leakscope JSON or JSON lines)") from None
        if isinstance(record, dict):
            records.append(record)
    return records


# ---- rendering --------------------------------------------------------------------------------------------------

_STATUS_STYLE = {"agree": "green", "differ": "bold red"}


def _cell(value: Any) -> Text:
    if value is None:
        return Text("(none)", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list):
        return Text(printable(", ".join(str(v) for v in value)))
    return Text(printable(value))


def render_comparison(console: Console, document: dict[str, Any]) -> None:
    names = document["sources"]
    blocks: list[Any] = []
    for server in document["servers"]:
        title = Text.assemble((printable(server["server"]), "bold"), f"  {server['protocol'] or ''}")
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("finding", style="cyan", no_wrap=True)
        table.add_column("field", style="cyan", no_wrap=True)
        for name in names:
            table.add_column(name, overflow="fold")
        table.add_column("status", no_wrap=True)
        for row in server["fields"]:
            cells = [_cell(row["values"][n]) if n in row["values"] else Text("-", style="dim") for n in names]
            status = row["status"]
            table.add_row(row["finding"], row["field"], *cells, Text(status, style=_STATUS_STYLE.get(status, "yellow")))
        blocks.append(table)
    if not blocks:
        blocks.append(Text("Nothing to compare: no source had a finding.", style="yellow"))
    console.print(Group(*blocks))
    summary = ", ".join(f"{status}: {count}" for status, count in sorted(document["summary"].items())) or "no fields"
    console.print(Text(printable(summary), style="dim"))


def load_capture_records(path: str) -> list[dict[str, Any]]:
    """Analyze a capture as ``leakscope analyze`` does and return its findings records."""
    from passive.analysis.classify import mail_capture_options
    from passive.analysis.pipeline import Analysis, AnalysisOptions
    from passive.capture import CaptureError, analyze_file
    from passive.results.records import finding_record

    analysis = Analysis(AnalysisOptions())
    analysis.file = path
    try:
        analyze_file(path, analysis.handler_factory, mail_capture_options())
    except CaptureError as error:
        raise CompareError(str(error)) from None
    return [finding_record(finding) for finding in analysis.findings]


def load_records(path: str) -> list[dict[str, Any]]:
    return load_capture_records(path) if is_capture(path) else read_records(path)
