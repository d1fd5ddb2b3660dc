"""``leakscope compare``: passive findings beside active ones (and nmap's), per server and field."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from passive.cli.common import format_option, refuse_overwriting, render, write_text
from passive.cli.errors import EXIT_FAIL_ON, EXIT_INPUT
from passive.cli.gate import LEVELS, gate_status
from passive.cli.inputs import load_input, load_records, probe_reports
from passive.cli.interrupt import interruptible
from passive.cli.probe import build_options, probe_options, services
from passive.core.endpoints import server_name
from passive.core.text import printable
from passive.probe.prober import run_probe
from passive.results.baseline import Gate
from passive.results.compare import compare, from_nmap, from_records
from passive.results.jsonio import dumps_indented
from passive.results.nessus import read_nessus
from passive.results.nessus_verify import verify
from passive.results.nmap_xml import read_nmap_xml
from passive.results.records import finding_record

MAX_SERVERS_SHOWN = 1000
"""Servers the comparison's table draws; ``--format json`` writes every one. Drawing is the slow part: the table of
98,000 findings' 49,000 servers took 110 s and 965 MiB to draw (the JSON 6.7 s)."""

_STATUS_STYLE = {"agree": "green", "differ": "bold red"}
_VERDICT_STYLE = {"confirmed": "bold red", "refuted": "green", "not-observed": "yellow"}


MAX_CELL_TEXT = 4096
"""Characters of one value the table shows (``--format json`` writes it whole): a value read from traffic is never
longer (findings cut their text there), but a findings file may hold anything, and rich folds a long cell in a time
that grows with its square (a 20 MB banner took 325 s and wrote 36 MB)."""


def _cell(value: Any) -> Text:
    if value is None:
        return Text("(none)", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    text = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if len(text) > MAX_CELL_TEXT:
        text = text[: MAX_CELL_TEXT - 1] + "…"
    return Text(printable(text))


def _values(row: dict[str, Any], names: list[str]) -> Text:
    """One value when the sources that have the field show the same text; else one line per source."""
    present = [(name, _cell(row["values"][name])) for name in names if name in row["values"]]
    if len({text.plain for _, text in present}) == 1:
        return present[0][1]
    width = max(len(name) for name, _ in present) if present else 0
    lines = [Text.assemble((f"{name}:".ljust(width + 2), "dim"), text) for name, text in present]
    return Text("\n").join(lines)


def render_comparison(console: Console, document: dict[str, Any]) -> None:
    """Per server, per finding: each field's status and value (one value when the sources agree), in three
    columns that read at 80 columns whatever the number of sources."""
    names = document["sources"]
    blocks: list[Any] = []
    for server in document["servers"][:MAX_SERVERS_SHOWN]:
        name = server_name(server["server"], server.get("network"))
        title = Text.assemble((printable(name), "bold"), f"  {server['protocol'] or ''}")
        table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
        table.add_column("field", style="cyan", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("value", overflow="fold")
        finding = None
        for row in server["fields"]:
            if row["finding"] != finding:
                finding = row["finding"]
                table.add_row(Text(printable(finding), style="bold"), "", "")
            status = row["status"]
            table.add_row(
                "  " + printable(row["field"]),
                Text(status, style=_STATUS_STYLE.get(status, "yellow")),
                _values(row, names),
            )
        blocks.append(table)
        blocks.append(Text(""))
    if not blocks:
        blocks.append(Text("Nothing to compare: no source had a finding.", style="yellow"))
    hidden = len(document["servers"]) - MAX_SERVERS_SHOWN
    if hidden > 0:
        blocks.append(
            Text(f"... and {hidden:,} more servers, not shown: --format json writes them all", style="yellow")
        )
    console.print(Group(*blocks))
    summary = ", ".join(f"{status}: {count}" for status, count in sorted(document["summary"].items())) or "no fields"
    console.print(Text(printable(f"Sources: {', '.join(names)}. {summary}"), style="dim"))
    if "nessus" in document:
        render_nessus(console, document["nessus"])


def render_nessus(console: Console, verification: dict[str, Any]) -> None:
    """One entry per Nessus plugin result: the verdict, the host and plugin, why, and the evidence (file#frame, or
    the probe); two columns, so that it reads at 80 columns."""
    if not verification["records"]:
        console.print(Text("The Nessus file has no mail- or NTLM-related plugin result.", style="yellow"))
        return
    table = Table(
        title=Text("Nessus verification", style="bold underline"),
        title_justify="left",
        show_header=False,
        box=None,
        padding=(0, 1),
    )
    table.add_column("verdict", no_wrap=True)
    table.add_column("details", overflow="fold")
    for record in verification["records"]:
        evidence = ", ".join(
            f"{e.get('file')}#{e.get('frame')}" if e.get("source") == "passive" else f"probe {e.get('probe')}"
            for e in record["evidence"]
        )
        details = Text.assemble(
            (printable(record["server"] or record["host"]), "bold"),
            printable(f"  {record['plugin_id']} {record['plugin_name']}"),
            ("\nwhy: ", "dim"),
            printable(record["reason"]),
        )
        if evidence:
            details.append_text(Text.assemble(("\nevidence: ", "dim"), printable(evidence)))
        table.add_row(Text(record["verdict"], style=_VERDICT_STYLE.get(record["verdict"], "")), details)
    console.print(table)
    totals = ", ".join(f"{verdict}: {count}" for verdict, count in verification["summary"].items())
    console.print(Text(printable(totals), style="dim"))


def _check_sources(
    passive: tuple[str, ...],
    active: tuple[str, ...],
    probe_targets: tuple[str, ...],
    probe_seen: bool,
    nmap: tuple[str, ...],
    nessus: tuple[str, ...],
    output: str | None = None,
) -> list[bool]:
    """Which sides were given; a usage error unless at least two can be compared, or when ``output`` would replace
    one of the files read."""
    given = [bool(passive), bool(active or probe_targets or probe_seen), bool(nmap)]
    if sum(given) + bool(nessus) < 2 or (nessus and not any(given[:2])):
        raise click.UsageError(
            "give at least two of --passive, --active/--probe/--probe-seen and --nmap (or --nessus and one of "
            "--passive, --active/--probe)"
        )
    if probe_seen and not passive:
        raise click.UsageError("--probe-seen probes the servers of --passive")
    refuse_overwriting([("-o", output)], [("an input", path) for path in (*passive, *active, *nmap, *nessus)])
    return given


@click.command("compare")
@click.option(
    "--passive",
    "passive_inputs",
    multiple=True,
    metavar="FILE",
    help="Capture (pcap, pcapng, gzip) or findings (JSON, JSON lines) of what the wire showed.",
)
@click.option(
    "--active",
    "active_inputs",
    multiple=True,
    metavar="FILE",
    help="Findings (JSON, JSON lines) written by leakscope probe.",
)
@click.option(
    "--probe",
    "probe_targets",
    multiple=True,
    metavar="TARGET",
    help="Probe TARGET now as the active side (as leakscope probe TARGET).",
)
@click.option("--probe-seen", is_flag=True, help="Probe every server the passive side saw, on its port.")
@click.option(
    "--nmap",
    "nmap_inputs",
    multiple=True,
    metavar="XML",
    help="nmap -oX output of smtp-ntlm-info, pop3-ntlm-info, imap-ntlm-info, http-ntlm-info, smtp-commands, "
    "smtp-open-relay (pop3-capabilities too).",
)
@click.option(
    "--nessus",
    "nessus_inputs",
    multiple=True,
    metavar="FILE",
    help="Nessus v2 export (.nessus): each mail- and NTLM-related plugin result is confirmed, refuted or not "
    "observed with the packet and probe evidence of the other sources.",
)
@probe_options
@format_option(("table", "json"))
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write the comparison to FILE.")
@click.option(
    "--fail-on",
    type=click.Choice(LEVELS),
    help=f"Exit with status {EXIT_FAIL_ON} when a finding of the compared sources is at or above this severity.",
)
def compare_command(
    passive_inputs: tuple[str, ...],
    active_inputs: tuple[str, ...],
    probe_targets: tuple[str, ...],
    probe_seen: bool,
    nmap_inputs: tuple[str, ...],
    nessus_inputs: tuple[str, ...],
    output_format: str,
    output: str | None,
    fail_on: str | None,
    **params: Any,
) -> None:
    """Compare passive findings with active ones (and nmap's): per server, per field, agree / differ / only one.

    With --nessus, each mail- and NTLM-related Nessus plugin result is confirmed (with the file and frame, or the
    probe, that shows it), refuted (what a probe saw instead) or not observed: after a fix, probe plus
    compare --nessus is the re-run of the scan.

    Exit status 0 when the comparison ran (whatever it found), 1 when an input could not be read or probed.
    """
    given = _check_sources(passive_inputs, active_inputs, probe_targets, probe_seen, nmap_inputs, nessus_inputs, output)
    with interruptible() as run:
        passive = [record for path in passive_inputs for record in load_records(path, run=run)]
        active_read = [load_input(path) for path in active_inputs]
        active = [record for read in active_read for record in read.records]
        nmap = [service for path in nmap_inputs for service in read_nmap_xml(path)]
        nessus = [item for path in nessus_inputs for item in read_nessus(path)]
        probes = [report for read in active_read for report in probe_reports(read.summaries)]
        targets = list(probe_targets)
        if probe_seen:
            targets += sorted({r["server"] for r in passive if isinstance(r.get("server"), str)})
        failed: list[str] = []
        if targets and not run.requested:  # interrupted while reading captures: no probe
            options, ports = build_options(params)
            with run.at_once():
                probed = run_probe(services(targets, ports), options)
            active += [finding_record(f) for f in probed.findings]
            probes += [report.to_dict() for report in probed.reports]
            failed = probed.failed_targets
        sources = []
        if passive_inputs:
            sources.append(from_records("passive", passive))
        if given[1]:
            sources.append(from_records("active", active))
        if nmap_inputs:
            sources.append(from_nmap(nmap))
        document = {**compare(sources), **run.partial()}
        if nessus_inputs:
            document["nessus"] = verify(nessus, passive + active, probes)
        if output_format == "json":
            write_text(output, dumps_indented(document) + "\n")
        else:
            render(output, lambda console: render_comparison(console, document))
        for target in failed:
            click.echo(f"leakscope: error: {printable(target)}: could not be probed", err=True)
        if failed:
            raise SystemExit(EXIT_INPUT)
        status = gate_status(Gate(), passive + active, fail_on)
        if status is not None:
            raise SystemExit(status)
