"""The ``leakscope probe`` and ``leakscope compare`` commands."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from passive.cli.common import (
    UserError,
    emit_records,
    format_option,
    local_domain_option,
    output_option,
    render,
    show_secrets_option,
    write_text,
)
from passive.core.text import printable
from passive.probe.prober import STARTTLS_MODES, ProbeOptions, ProbeRun, probe_summary, run_probe
from passive.probe.targets import Service, TargetError, parse_ports, parse_targets
from passive.results.compare import CompareError, compare, from_nmap, from_records, load_records, render_comparison
from passive.results.nmap_xml import NmapXmlError, read_nmap_xml
from passive.results.records import finding_record, summary_record


def _probe_options(function: Any) -> Any:
    """Options shared by ``probe`` and the live probe of ``compare``."""
    options = [
        click.option(
            "--starttls",
            type=click.Choice(STARTTLS_MODES),
            default="auto",
            show_default=True,
            help="auto: upgrade when offered (as nmap's *-ntlm-info); always: try even when not offered; never: "
            "stay in clear text (what a clear-text client leaks).",
        ),
        click.option(
            "--ports",
            metavar="LIST",
            help="Ports for bare hosts, e.g. 25,587,110 (default: 25,587,465,110,995,143,993).",
        ),
        click.option(
            "--connect-timeout",
            type=click.FloatRange(0.1, 300),
            default=5.0,
            show_default=True,
            help="Seconds to wait for TCP (and implicit TLS) to connect.",
        ),
        click.option(
            "--read-timeout",
            type=click.FloatRange(0.1, 300),
            default=10.0,
            show_default=True,
            help="Seconds to wait for each answer.",
        ),
        click.option(
            "--service-timeout",
            type=click.FloatRange(1, 3600),
            default=60.0,
            show_default=True,
            help="Seconds one service may take in all.",
        ),
        click.option(
            "--max-bytes",
            type=click.IntRange(1024, 64 * 1024 * 1024),
            default=256 * 1024,
            show_default=True,
            help="Bytes read from one connection at most.",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(1, 1024),
            default=16,
            show_default=True,
            help="Services probed at the same time.",
        ),
        click.option(
            "--ehlo",
            "ehlo_name",
            default="leakscope.invalid",
            show_default=True,
            metavar="NAME",
            help="Name given in EHLO/HELO.",
        ),
        click.option("--no-ntlm", is_flag=True, help="Do not send AUTH NTLM."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _build_options(params: dict[str, Any], **extra: Any) -> tuple[ProbeOptions, tuple[int, ...] | None]:
    try:
        ports = parse_ports(params["ports"]) if params.get("ports") else None
    except TargetError as error:
        raise UserError(str(error)) from None
    options = ProbeOptions(
        connect_timeout=params["connect_timeout"],
        read_timeout=params["read_timeout"],
        service_timeout=params["service_timeout"],
        max_bytes=params["max_bytes"],
        concurrency=params["concurrency"],
        starttls=params["starttls"],
        ntlm=not params["no_ntlm"],
        ehlo_name=params["ehlo_name"],
        **extra,
    )
    return options, ports


def _services(targets: tuple[str, ...] | list[str], ports: tuple[int, ...] | None) -> list[Service]:
    try:
        return parse_targets(list(targets), ports)
    except TargetError as error:
        raise UserError(str(error)) from None


def _status_table(console: Console, reports: list[dict[str, Any]]) -> None:
    table = Table(title=Text("Probe status", style="bold underline"), title_justify="left")
    for column in ("server", "protocol", "status", "starttls", "tls", "ntlm", "relay", "reason"):
        table.add_column(column, overflow="fold")
    for report in reports:
        relay = (
            f"{report['relay_variants_accepted']}/{report['relay_variants_tried']} accepted"
            if report["relay_variants_tried"]
            else ""
        )
        ntlm = report["ntlm"] + ("" if report["ntlm_advertised"] in (None, True) else " (not advertised)")
        reason = f"{report['stage']}: {report['error']}" if report["error"] else (report["ntlm_reply"] or "")
        status = Text(report["status"], style="green" if report["status"] == "ok" else "bold red")
        table.add_row(
            Text(printable(report["server"])),
            Text(printable(report["protocol"])),
            status,
            Text(report["starttls"]),
            Text(printable(report["tls_version"])),
            Text(ntlm),
            Text(relay),
            Text(printable(reason)),
        )
    console.print(table)


def _emit_probe(run: ProbeRun, output_format: str, output: str | None, show_secrets: bool) -> None:
    findings = list(run.findings)
    records = [finding_record(f, show_secrets) for f in findings]
    summary = summary_record(probe_summary(run), findings)
    if output_format == "table":
        reports = summary.pop("probes")
        emit_records(output_format, output, records, summary, also_draw=lambda console: _status_table(console, reports))
        return
    emit_records(output_format, output, records, summary)


@click.command("probe")
@click.argument("targets", nargs=-1, required=True)
@_probe_options
@click.option(
    "--relay-test", is_flag=True, help="Try nmap's 16 relay variants on SMTP (MAIL FROM/RCPT TO; never DATA)."
)
@click.option("--relay-from", default="example.com", show_default=True, metavar="DOMAIN", help="Sender domain.")
@click.option("--relay-to", default="example.net", show_default=True, metavar="DOMAIN", help="Recipient domain.")
@format_option()
@output_option
@show_secrets_option
@local_domain_option
def probe_command(
    targets: tuple[str, ...],
    relay_test: bool,
    relay_from: str,
    relay_to: str,
    output_format: str,
    output: str | None,
    show_secrets: bool,
    local_domains: tuple[str, ...],
    **params: Any,
) -> None:
    """Ask mail servers what they tell anyone who connects: banner, capabilities, STARTTLS, NTLM host information.

    TARGETS are host, host:port, or smtp:// smtps:// submission:// pop3:// pop3s:// imap:// imaps:// URLs; a bare
    host is probed on 25, 587, 465, 110, 995, 143 and 993. Exit status 1 when a target could not be probed.
    """
    options, ports = _build_options(
        params,
        relay_test=relay_test,
        relay_from=relay_from.strip().lower(),
        relay_to=relay_to.strip().lower(),
        local_domains=frozenset(d.lower().strip(".") for d in local_domains),
    )
    run = run_probe(_services(targets, ports), options)
    _emit_probe(run, output_format, output, show_secrets)
    failed = run.failed_targets
    for target in failed:
        click.echo(f"leakscope: error: {printable(target)}: could not be probed", err=True)
    if failed:
        raise SystemExit(1)


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
    help="nmap -oX output of smtp-ntlm-info, pop3-ntlm-info, imap-ntlm-info, smtp-commands, "
    "smtp-open-relay (pop3-capabilities too).",
)
@_probe_options
@format_option(("table", "json"))
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write the comparison to FILE.")
def compare_command(
    passive_inputs: tuple[str, ...],
    active_inputs: tuple[str, ...],
    probe_targets: tuple[str, ...],
    probe_seen: bool,
    nmap_inputs: tuple[str, ...],
    output_format: str,
    output: str | None,
    **params: Any,
) -> None:
    """Compare passive findings with active ones (and nmap's): per server, per field, agree / differ / only one.

    Exit status 0 when the comparison ran (whatever it found), 1 when an input could not be read or probed.
    """
    given = [bool(passive_inputs), bool(active_inputs or probe_targets or probe_seen), bool(nmap_inputs)]
    if sum(given) < 2:
        raise click.UsageError("give at least two of --passive, --active/--probe/--probe-seen and --nmap")
    if probe_seen and not passive_inputs:
        raise click.UsageError("--probe-seen probes the servers of --passive")
    try:
        passive = [record for path in passive_inputs for record in load_records(path)]
        active = [record for path in active_inputs for record in load_records(path)]
        nmap = [service for path in nmap_inputs for service in read_nmap_xml(path)]
    except (CompareError, NmapXmlError) as error:
        raise UserError(str(error)) from None
    targets = list(probe_targets)
    if probe_seen:
        targets += sorted({r["server"] for r in passive if isinstance(r.get("server"), str)})
    failed: list[str] = []
    if targets:
        options, ports = _build_options(params)
        run = run_probe(_services(targets, ports), options)
        active += [finding_record(f) for f in run.findings]
        failed = run.failed_targets
    sources = []
    if passive_inputs:
        sources.append(from_records("passive", passive))
    if given[1]:
        sources.append(from_records("active", active))
    if nmap_inputs:
        sources.append(from_nmap(nmap))
    document = compare(sources)
    if output_format == "json":
        write_text(output, json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")
    else:
        render(output, lambda console: render_comparison(console, document))
    for target in failed:
        click.echo(f"leakscope: error: {printable(target)}: could not be probed", err=True)
    if failed:
        raise SystemExit(1)
