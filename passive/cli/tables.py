"""Findings as terminal cards: one per finding, grouped by kind in the kinds' display order. Traffic strings stay
inert (rich never parses them as markup; control and bidi characters are shown escaped)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from passive.cli.losses import LOSSES, RUNS_NOT_READ
from passive.core.text import printable
from passive.findings.kinds import KINDS
from passive.findings.schema import SEVERITY_ORDER, rank

SEVERITY_NAMES = tuple(str(s) for s in SEVERITY_ORDER)
RISKS = ("high", "medium", "low")  # the severities the headline counts; "info" is inventory
SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}
MAX_CARDS = 100
"""Findings of one kind and severity shown as cards on the terminal: past this, one line says how many more there
are (20,000 cards took rich over 30 s to lay out, and no reader scrolls through them); files get every finding."""
# Always shown in the summary line; other counters only when they are not zero (JSON output has them all).
_ALWAYS_SHOWN = ("findings", "packets_read", "packets_matched", "flows")


def cell(value: Any) -> Text:
    if value is None:
        return Text("")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, list):
        separator = "; " if any(isinstance(v, dict) for v in value) else ", "
        return Text(printable(separator.join(_item(v) for v in value)))
    return Text(printable(value))


def _item(value: Any) -> str:
    """One entry of a list field: an object (a credential's attempt) as its non-empty ``key value`` pairs."""
    if isinstance(value, dict):
        return " ".join(f"{key} {item}" for key, item in value.items() if item is not None)
    return str(value)


def evidence_text(listed: Any) -> str:
    """Frames grouped under the file they were read from: ``a.pcap frames 1, 2; b.pcap frame 7``."""
    by_file: dict[str, list[str]] = {}
    for item in listed if isinstance(listed, list) else []:
        if isinstance(item, dict) and item.get("frame") is not None:
            by_file.setdefault(printable(item.get("file")), []).append(printable(item["frame"]))
    return "; ".join(
        f"{name} frame{'s' if len(frames) > 1 else ''} {', '.join(frames)}" for name, frames in by_file.items()
    )


def _card(row: dict[str, Any], columns: tuple[str, ...]) -> Table:
    # A record read back from a store may be damaged: every field is looked up, none is trusted to be there.
    severity = printable(row.get("severity"))
    title = Text.assemble(
        (severity.upper(), SEVERITY_STYLE.get(severity, "")),
        "  ",
        (printable(row.get("server")), "bold"),
        f" in {printable(row.get('network'))}" if row.get("network") else "",
        f" via {cell(row.get('proxy'))}" if row.get("proxy") else "",
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
    evidence = evidence_text(row.get("evidence"))
    if evidence:
        card.add_row("evidence", Text(evidence))
    return card


def headline(records: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> str:
    """``2 high, 3 medium, 1 low on 4 servers`` (informational findings counted after); without a leak, "No leak
    found" is said only of what was read when the ``summary`` counts traffic that was not."""
    counts = Counter(str(r.get("severity")) for r in records)
    # A server is its address in its virtual network: tenants reusing one address are servers apart.
    servers = len({(str(r.get("server")), r.get("network")) for r in records if r.get("severity") in RISKS})
    risky = [f"{counts[s]} {s}" for s in RISKS if counts[s]]
    info = f"{counts['info']} informational finding{'s' if counts['info'] != 1 else ''}" if counts["info"] else ""
    if not risky:
        if summary is not None and _unread(summary):
            return f"No leak found in what could be read; {info}." if info else "No leak found in what could be read."
        return f"No leak found; {info}." if info else "No finding."
    text = f"{', '.join(risky)} on {servers} server{'s' if servers != 1 else ''}"
    return f"{text}; {info}." if info else f"{text}."


def _severity_key(row: dict[str, Any]) -> int:
    severity = row.get("severity")
    return -rank(severity) if severity in SEVERITY_NAMES else 1


def render_tables(
    console: Console, records: list[dict[str, Any]], summary: dict[str, Any], *, verbose: bool = False
) -> None:
    """The headline, then one key/value card per finding by severity, then kind (readable at 80 columns), then
    what was analyzed; the engine's counters only when ``verbose``."""
    blocks: list[Any] = [Text(headline(records, summary), style="bold")]
    order = {kind.type: index for index, kind in enumerate(KINDS.values())}
    rows = sorted(records, key=lambda r: (_severity_key(r), order.get(str(r.get("type")), len(order))))
    heading, shown, hidden = None, 0, 0
    for row in rows:
        kind = KINDS.get(str(row.get("type")))
        title = kind.title if kind else printable(row.get("type"))
        if (row.get("severity"), title) != heading:
            blocks += _not_shown(hidden)
            heading, shown, hidden = (row.get("severity"), title), 0, 0
            blocks.append(Text(f"\n{title} ({printable(row.get('type'))})", style="bold underline"))
        if shown == MAX_CARDS:
            hidden += 1
            continue
        shown += 1
        blocks.append(_card(row, kind.columns if kind else ()))
    blocks += _not_shown(hidden)
    if not any(r.get("severity") in RISKS for r in records):
        blocks.append(Text("\n" + negative_statement(summary), style="green" if _saw_mail(summary) else "yellow"))
    console.print(Group(*blocks))
    console.print(Text("\n" + scope_text(summary), style="dim"))
    if verbose:
        console.print(summary_text(summary))


def _not_shown(hidden: int) -> list[Text]:
    if not hidden:
        return []
    line = f"... and {hidden:,} more, not shown: -o FILE or --format jsonl writes them all"
    return [Text(line, style="yellow")]


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
    if "store" in summary:  # the findings of a store: its runs' counts are summed in RUNS_NOT_READ, not here
        text = f"No leak among the findings kept in the store ({_count(summary, 'runs'):,} run(s))."
        if _unread(summary):
            text += " Its runs did not read everything (below), and what was not read may hold a leak."
        return text
    sessions = _sessions(summary)
    total = sum(sessions.values())
    if not total:
        seen = [f"{_count(summary, 'packets_read'):,} packets read", f"{_count(summary, 'packets_matched'):,} examined"]
        seen.append(f"{_count(summary, 'flows'):,} TCP flows reassembled")
        if _count(summary, "flows_not_mail") or _count(summary, "flows_ignored"):
            seen.append(f"{_count(summary, 'flows_not_mail') + _count(summary, 'flows_ignored'):,} not mail")
        if _count(summary, "ip_fragments"):
            seen.append(f"{_count(summary, 'ip_fragments'):,} IP fragments not reassembled")
        return (
            f"No mail seen ({'; '.join(seen)}): nothing was analyzed, so nothing can be said about leaks. Mail is "
            "recognised on any port by what it says, unless --ports-only was given; check that the capture holds the "
            "mail servers' traffic and that --filter does not exclude it."
        )
    listed = ", ".join(f"{protocol} {count:,}" for protocol, count in sorted(sessions.items()))
    tls = _count(summary, "tls_sessions")
    if tls >= total:
        return (
            f"Every session ({listed}) went inside TLS: what they carried there (credentials, NTLM exchanges, "
            "relaying) is unknown, which is not the same as nothing leaking."
        )
    inside = f"; {tls:,} of them inside TLS, unreadable" if tls else ""
    if _unread(summary):
        return (
            f"No leak found in {total:,} session(s) ({listed}{inside}); not everything was read (below), and what "
            "was not read may hold a leak."
        )
    return f"No leak found in {total:,} session(s) ({listed}{inside})."


def _unread(summary: dict[str, Any]) -> bool:
    """Some traffic of the run (or of a store's runs) was not analyzed (:data:`LOSSES`)."""
    if "services" in summary:
        return False
    return any(_count(summary, name) for name, _ in LOSSES) or bool(_runs_losses(summary))


def _runs_losses(summary: dict[str, Any]) -> list[str]:
    """A store's losses (:data:`RUNS_NOT_READ`), in words."""
    totals = summary.get(RUNS_NOT_READ)
    if not isinstance(totals, dict):
        return []
    return [f"{_count(totals, name):,} {what}" for name, what in LOSSES if _count(totals, name)]


def scope_text(summary: dict[str, Any]) -> str:
    """What was analyzed, in one or two lines, and what could not be; ``-v`` shows every engine counter."""
    if "services" in summary:  # a probe
        ok, failed = _count(summary, "services_ok"), _count(summary, "services_failed")
        return f"Probed {_count(summary, 'services'):,} service(s): {ok:,} answered, {failed:,} did not."
    if "store" in summary:  # the findings of a store
        text = f"From the store {printable(summary['store'])}: {_count(summary, 'runs'):,} run(s)."
        losses = _runs_losses(summary)
        return text + (" Not analyzed by its runs: " + "; ".join(losses) + "." if losses else "")
    sessions = _sessions(summary)
    listed = ", ".join(f"{protocol} {count:,}" for protocol, count in sorted(sessions.items())) or "no mail session"
    captures = _count(summary, "captures")
    read = f"Read {captures:,} capture(s): " if captures else "Read "
    text = f"{read}{_count(summary, 'packets_read'):,} packets, {_count(summary, 'flows'):,} TCP flows; {listed}."
    losses = [f"{_count(summary, name):,} {what}" for name, what in LOSSES if _count(summary, name)]
    if losses:
        text += " Not analyzed: " + "; ".join(losses) + "."
    return printable(text + " (-v: every engine counter)")


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
