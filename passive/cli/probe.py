"""``leakscope probe``: ask mail servers what they tell anyone who connects."""

from __future__ import annotations

import ipaddress
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from passive.analysis.domains import IpNetwork, is_domain_name, normalize_domain
from passive.cli.common import (
    domains,
    emit_records,
    format_option,
    local_domain_option,
    output_option,
    show_secrets_option,
    trusted_net_option,
    verbose_option,
)
from passive.cli.errors import EXIT_INPUT
from passive.cli.gate import apply_gate, build_gate, gate_options, gate_status
from passive.core.text import printable
from passive.probe.prober import STARTTLS_MODES, ProbeOptions, ProbeRun, probe_summary, run_probe
from passive.probe.targets import DEFAULT_PORTS, Service, parse_ports, parse_targets, read_target_list
from passive.results.baseline import Gate
from passive.results.records import finding_record, summary_record
from passive.results.redaction import Redactor

DEFAULTS = ProbeOptions()


def _domain_name(value: str) -> str | None:
    """``value`` as a DNS name in ASCII (an internationalized one in its A-label form), or None when it is none."""
    name = normalize_domain(value.strip().rstrip("."))
    return name if name.isascii() and is_domain_name(name) else None


def _address_literal(value: str) -> bool:
    """RFC 5321's address literal: ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    if not (value.startswith("[") and value.endswith("]")):
        return False
    inner = value[1:-1]
    version, text = (6, inner[5:]) if inner[:5].upper() == "IPV6:" else (4, inner)
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _ehlo_name(context: click.Context, parameter: click.Parameter, value: str) -> str:
    """``--ehlo``: a domain name or an address literal, as EHLO takes them (RFC 5321). It is written into the
    command as it is: a line break would send commands of the user's making (a DATA, a message), a character
    UTF-8 cannot encode (an argument that is not UTF-8) would end the run."""
    value = value.strip()
    if _address_literal(value):
        return value
    name = _domain_name(value)
    if name is None:
        raise click.BadParameter(f"{value!r}: not a domain name or an address literal ([192.0.2.1])")
    return name


def _relay_domain(context: click.Context, parameter: click.Parameter, value: str) -> str:
    """``--relay-from`` / ``--relay-to``: a domain name, written into MAIL FROM and RCPT TO as it is (see
    :func:`_ehlo_name` for why nothing else may be)."""
    name = _domain_name(value)
    if name is None:
        raise click.BadParameter(f"{value!r}: not a domain name")
    return name


def _relay_domain_option(flag: str, default: str, text: str) -> Any:
    return click.option(flag, default=default, show_default=True, metavar="DOMAIN", callback=_relay_domain, help=text)


# Options shared by ``probe`` and the live probe of ``compare``; defaults are ProbeOptions'.
PROBE_OPTIONS = (
    click.option(
        "--starttls",
        type=click.Choice(STARTTLS_MODES),
        default=DEFAULTS.starttls,
        show_default=True,
        help="auto: upgrade when offered (as nmap's *-ntlm-info); always: try even when not offered; never: "
        "stay in clear text (what a clear-text client leaks).",
    ),
    click.option(
        "-p",
        "--ports",
        metavar="LIST",
        help=f"Ports for bare hosts, e.g. 25,587,110 (default: {','.join(map(str, DEFAULT_PORTS))}).",
    ),
    click.option(
        "--connect-timeout",
        type=click.FloatRange(0.1, 300),
        default=DEFAULTS.connect_timeout,
        show_default=True,
        help="Seconds to wait for TCP (and implicit TLS) to connect.",
    ),
    click.option(
        "--read-timeout",
        type=click.FloatRange(0.1, 300),
        default=DEFAULTS.read_timeout,
        show_default=True,
        help="Seconds to wait for each answer.",
    ),
    click.option(
        "--service-timeout",
        type=click.FloatRange(1, 3600),
        default=DEFAULTS.service_timeout,
        show_default=True,
        help="Seconds one service may take in all.",
    ),
    click.option(
        "--max-bytes",
        type=click.IntRange(1024, 64 * 1024 * 1024),
        default=DEFAULTS.max_bytes,
        show_default=True,
        help="Bytes read from one connection at most.",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(1, 1024),
        default=DEFAULTS.concurrency,
        show_default=True,
        help="Services probed at the same time.",
    ),
    click.option(
        "--ehlo",
        "ehlo_name",
        default=DEFAULTS.ehlo_name,
        show_default=True,
        metavar="NAME",
        callback=_ehlo_name,
        help="Name given in EHLO/HELO.",
    ),
    click.option("--no-ntlm", is_flag=True, help="Do not send AUTH NTLM."),
)


def probe_options(function: Any) -> Any:
    """Decorate a command with :data:`PROBE_OPTIONS`."""
    for option in reversed(PROBE_OPTIONS):
        function = option(function)
    return function


def build_options(params: dict[str, Any], **extra: Any) -> tuple[ProbeOptions, tuple[int, ...] | None]:
    ports = parse_ports(params["ports"]) if params.get("ports") else None
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


def services(targets: tuple[str, ...] | list[str], ports: tuple[int, ...] | None) -> list[Service]:
    return parse_targets(list(targets), ports)


def _status_table(console: Console, reports: list[dict[str, Any]]) -> None:
    table = Table(title=Text("Probe status", style="bold underline"), title_justify="left")
    for column in ("server", "protocol", "port", "status", "starttls", "tls", "ntlm", "relay", "reason"):
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
            Text(report["port_state"]),
            status,
            Text(report["starttls"]),
            Text(printable(report["tls_version"])),
            Text(ntlm),
            Text(relay),
            Text(printable(reason)),
        )
    console.print(table)


def _emit_probe(
    run: ProbeRun, output_format: str, output: str | None, show_secrets: bool, gate: Gate, verbose: bool = False
) -> list[dict[str, Any]]:
    findings = list(run.findings)
    redactor = Redactor(show_secrets, secrets=run.stats.secrets)
    records = [finding_record(f, redactor=redactor) for f in findings]
    summary = summary_record(probe_summary(run), findings)
    apply_gate(gate, records, summary)
    if output_format == "table":
        reports = summary.pop("probes")
        emit_records(
            output_format,
            output,
            records,
            summary,
            also_draw=lambda console: _status_table(console, reports),
            verbose=verbose,
        )
    else:
        emit_records(output_format, output, records, summary)
    return records


@click.command("probe")
@click.argument("targets", nargs=-1)
@click.option("-iL", "target_list", metavar="FILE", help="Read targets from FILE (- for standard input), as nmap -iL.")
@probe_options
@click.option(
    "--relay-test",
    is_flag=True,
    help="Try nmap's 16 relay variants on SMTP (MAIL FROM, RCPT TO, DATA; never a message).",
)
@_relay_domain_option("--relay-from", DEFAULTS.relay_from, "Sender domain.")
@_relay_domain_option("--relay-to", DEFAULTS.relay_to, "Recipient domain.")
@format_option()
@output_option
@verbose_option
@show_secrets_option
@local_domain_option
@trusted_net_option
@gate_options
def probe_command(
    targets: tuple[str, ...],
    target_list: str | None,
    relay_test: bool,
    relay_from: str,
    relay_to: str,
    output_format: str,
    output: str | None,
    verbose: bool,
    show_secrets: bool,
    local_domains: tuple[str, ...],
    trusted_networks: tuple[IpNetwork, ...],
    fail_on: str | None,
    baseline_path: str | None,
    suppress_path: str | None,
    **params: Any,
) -> None:
    """Ask mail servers what they tell anyone who connects: banner, capabilities, STARTTLS, NTLM host information.

    TARGETS are host, host:port, a network (10.0.0.0/24, as nmap takes it) or smtp:// smtps:// submission://
    pop3:// pop3s:// imap:// imaps:// URLs; a bare host (and each host of a network) is probed on 25, 587, 465,
    110, 995, 143 and 993, or on -p's ports. Each port is reported open, closed, filtered (no answer in time) or
    error. http:// and https:// URLs ask Exchange's web endpoints
    (or the URL's path) for an NTLM challenge. Exit status 1 when a target could not be probed.
    """
    options, ports = build_options(
        params,
        relay_test=relay_test,
        relay_from=relay_from.strip().lower(),
        relay_to=relay_to.strip().lower(),
        local_domains=domains(local_domains),
        trusted_networks=trusted_networks,
    )
    listed = list(targets) + (read_target_list(target_list) if target_list else [])
    if not listed:
        raise click.UsageError("give targets (host, host:port, CIDR, URL) or -iL FILE")
    gate = build_gate(baseline_path, suppress_path)
    run = run_probe(services(listed, ports), options)
    records = _emit_probe(run, output_format, output, show_secrets, gate, verbose)
    failed = run.failed_targets
    for target in failed:
        click.echo(f"leakscope: error: {printable(target)}: could not be probed", err=True)
    if failed:
        raise SystemExit(EXIT_INPUT)
    status = gate_status(gate, records, fail_on)
    if status is not None:
        raise SystemExit(status)
