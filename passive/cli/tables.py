"""Findings as terminal cards: one per finding, grouped by kind in the kinds' display order. Traffic strings stay
inert (rich never parses them as markup; control and bidi characters are shown escaped)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from passive.core.text import printable
from passive.findings.kinds import KINDS

SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}
# Always shown in the summary line; other counters only when they are not zero (JSON output has them all).
_ALWAYS_SHOWN = ("findings", "packets_read", "packets_matched", "flows")


def cell(value: Any) -> Text:
    if value is None:
        return Text("")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list):
        return Text(printable(", ".join(str(v) for v in value)))
    return Text(printable(value))


def _card(row: dict[str, Any], columns: tuple[str, ...]) -> Table:
    # A record read back from a store may be damaged: every field is looked up, none is trusted to be there.
    severity = printable(row.get("severity"))
    title = Text.assemble(
        (severity.upper(), SEVERITY_STYLE.get(severity, "")),
        "  ",
        (printable(row.get("server")), "bold"),
        f"  {printable(row.get('protocol'))}  seen {printable(row.get('count'))}x",
    )
    card = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
    card.add_column("field", style="cyan", no_wrap=True)
    card.add_column("value", overflow="fold")
    for column in columns:
        value = row.get(column)
        if value in (None, [], ""):
            continue
        card.add_row(column, cell(value))
    listed = row.get("evidence")
    evidence = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    frames = [printable(e["frame"]) for e in evidence if e.get("frame") is not None]
    if frames:
        card.add_row("evidence", Text(f"{printable(evidence[0].get('file'))} frames {', '.join(frames)}"))
    return card


def render_tables(console: Console, records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """One key/value card per finding, grouped by kind (readable at any terminal width)."""
    blocks: list[Any] = []
    for kind in KINDS.values():
        rows = [r for r in records if r.get("type") == kind.type]
        if not rows:
            continue
        blocks.append(Text(f"\n{kind.title} ({kind.type})", style="bold underline"))
        blocks.extend(_card(row, kind.columns) for row in rows)
    if not any(r.get("severity") in ("low", "medium", "high") for r in records):
        blocks.append(Text("\n" + negative_statement(summary), style="green" if _saw_mail(summary) else "yellow"))
    console.print(Group(*blocks))
    console.print(summary_text(summary))


def _count(summary: dict[str, Any], name: str) -> int:
    value = summary.get(name)
    return value if isinstance(value, int) else 0


def _sessions(summary: dict[str, Any]) -> dict[str, int]:
    sessions = summary.get("sessions")
    return {str(k): v for k, v in sessions.items() if isinstance(v, int)} if isinstance(sessions, dict) else {}


def _saw_mail(summary: dict[str, Any]) -> bool:
    if "services" in summary:  # a probe
        return _count(summary, "services_ok") > 0
    return sum(_sessions(summary).values()) > 0


def negative_statement(summary: dict[str, Any]) -> str:
    """What a run without a leak saw, so that "nothing leaked" is only said of traffic that was really analyzed."""
    if "services" in summary:  # a probe
        ok, failed = _count(summary, "services_ok"), _count(summary, "services_failed")
        if not ok:
            return (
                f"No service answered: {failed} service(s) could not be probed (closed, filtered, not mail or "
                "refused; see the probe status). Nothing was learned, which is not the same as nothing leaking."
            )
        return f"No leak found: {ok} service(s) answered and gave away no host information or credentials."
    sessions = _sessions(summary)
    total = sum(sessions.values())
    if not total:
        seen = [f"{_count(summary, 'packets_read'):,} packets read", f"{_count(summary, 'packets_matched'):,} on mail"]
        seen.append(f"{_count(summary, 'flows'):,} TCP flows reassembled")
        if _count(summary, "flows_not_mail") or _count(summary, "flows_ignored"):
            seen.append(f"{_count(summary, 'flows_not_mail') + _count(summary, 'flows_ignored'):,} not mail")
        if _count(summary, "ip_fragments"):
            seen.append(f"{_count(summary, 'ip_fragments'):,} IP fragments not reassembled")
        return (
            f"No mail seen ({'; '.join(seen)}): nothing was analyzed, so nothing can be said about leaks. Mail on "
            "other ports needs --all-ports; check that the capture holds the mail servers' traffic and that --filter "
            "does not exclude it."
        )
    listed = ", ".join(f"{protocol} {count:,}" for protocol, count in sorted(sessions.items()))
    tls = _count(summary, "tls_sessions")
    inside = f"; {tls:,} of them inside TLS, unreadable" if tls else ""
    return f"No leak found in {total:,} session(s) ({listed}{inside})."


def summary_text(summary: dict[str, Any]) -> Text:
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
