"""The ``leakscope`` command line."""

from __future__ import annotations

import binascii
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from dissectors import ntlmssp
from dissectors.sasl import decode_base64
from passive.analysis.classify import mail_capture_options
from passive.analysis.pipeline import Analysis, AnalysisOptions
from passive.capture import CaptureCounters, CaptureError, CaptureOptions, analyze_file
from passive.cli.common import (
    UserError,
    emit_records,
    format_option,
    local_domain_option,
    output_option,
    show_secrets_option,
    write_text,
)
from passive.cli.progress import packet_progress
from passive.core.text import printable
from passive.results.records import dumps, finding_record, summary_record
from passive.results.store import CaptureDigest, FindingStore, StoreError, capture_digest, save_run

# Carrier prefixes a user may paste along with the blob: "334 ", "+ ", "AUTH NTLM ", "A1 AUTHENTICATE NTLM ".
_CARRIER_PREFIX = re.compile(r"^(?:334[ -]|\+\s|(?:\S+\s+)?AUTH(?:ENTICATE)?\s+NTLM\s+)", re.IGNORECASE)
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2}[\s:]*)+$")


def _blob_bytes(blob: str) -> bytes:
    text = _CARRIER_PREFIX.sub("", blob.strip()).strip()
    if not text:
        raise UserError("empty input: give a base64 or hex NTLMSSP message")
    if _HEX.match(text):
        try:
            data = binascii.unhexlify(re.sub(r"[\s:]", "", text))
        except binascii.Error:
            data = b""
        if data.startswith(ntlmssp.SIGNATURE):
            return data
    result = decode_base64(text)
    if result.data is None:
        raise UserError("input is neither base64 nor hex")
    return result.data


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="leakscope")
def main() -> None:
    """leakscope: what your mail servers give away on the wire."""


@main.command()
@click.argument("blob")
@click.option("--json", "as_json", is_flag=True, help="Print the decoded fields as JSON (the stable schema).")
def decode(blob: str, as_json: bool) -> None:
    """Decode one NTLMSSP message given as base64, hex, or - for standard input.

    SASL carrier prefixes such as "334 ", "+ " or "AUTH NTLM " are accepted and ignored.
    """
    if blob == "-":
        blob = sys.stdin.read(1024 * 1024)
    data = _blob_bytes(blob)
    try:
        message = ntlmssp.decode(data)
    except ntlmssp.DecodeError as error:
        raise UserError(str(error)) from None
    fields = message.to_dict()
    if as_json:
        click.echo(dumps(fields))  # control characters escaped, C1 and separators included
        return
    Console(highlight=False).print(_message_tree(fields))


_HEADLINE_FIELDS = {
    "negotiate": ["domain", "workstation", "client_os_version", "client_os_release"],
    "challenge": [name for name in ntlmssp.SERVER_FIELDS if name != "flags"] + ["server_challenge"],
    "authenticate": [
        "user",
        "domain",
        "workstation",
        "ntlm_version",
        "client_os_version",
        "client_os_release",
        "spn",
        "client_time",
        "client_challenge",
        "mic_present",
        "mic_flagged",
        "session_key_present",
        "channel_bindings_present",
        "av_flags",
    ],
}


def _message_tree(fields: dict[str, Any]) -> Tree:
    kind = fields["message_type"]
    tree = Tree(Text(f"NTLMSSP {kind.upper()}", style="bold"))
    for name in _HEADLINE_FIELDS.get(kind, []):
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        tree.add(Text.assemble((f"{name}: ", "cyan"), printable(value)))
    flags = tree.add(Text(f"flags: 0x{fields['flags_raw']:08x}", style="cyan"))
    for name in fields["flags"]:
        flags.add(Text(name))
    if fields.get("av_pairs"):
        pairs = tree.add(Text("av_pairs", style="cyan"))
        for pair in fields["av_pairs"]:
            value = pair["value"]
            if isinstance(value, list | dict):
                value = json.dumps(value, ensure_ascii=False)
            pairs.add(Text.assemble((f"{pair['name']}: ", "cyan"), printable(value)))
    if fields["anomalies"]:
        anomalies = tree.add(Text("anomalies", style="bold yellow"))
        for anomaly in fields["anomalies"]:
            anomalies.add(Text.assemble((anomaly["code"], "yellow"), ": ", printable(anomaly["detail"])))
    return tree


@main.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@format_option()
@output_option
@click.option("--all-ports", is_flag=True, help="Look at every TCP flow and recognise mail servers by greeting.")
@click.option("--filter", "bpf", metavar="BPF", help="A BPF expression ANDed with the mail filter.")
@show_secrets_option
@local_domain_option
@click.option(
    "--hashes",
    "hashes_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Write NetNTLMv1/v2 responses as hashcat lines (modes 5500, 5600) to FILE.",
)
@click.option("--events", "keep_events", is_flag=True, help="Include per-session events (json format).")
@click.option("--db", metavar="PATH", help="Also merge the findings into this SQLite store (see leakscope findings).")
def analyze(
    captures: tuple[str, ...],
    output_format: str,
    output: str | None,
    all_ports: bool,
    bpf: str | None,
    show_secrets: bool,
    local_domains: tuple[str, ...],
    hashes_file: str | None,
    keep_events: bool,
    db: str | None,
) -> None:
    """Analyze capture files (pcap, pcapng, gzip-compressed) for what their mail traffic leaks."""
    analysis = Analysis(
        AnalysisOptions(
            all_ports=all_ports,
            local_domains=frozenset(d.lower().strip(".") for d in local_domains),
            keep_events=keep_events,
            show_secrets=show_secrets,
        )
    )
    options = mail_capture_options(all_ports=all_ports, bpf=bpf)
    counters = CaptureCounters()
    err = Console(stderr=True, highlight=False)
    plan = _store_plan(db, captures) if db else {}
    failed = _analyze_captures(captures, analysis, options, counters, err)
    for warning in counters.warnings:
        click.echo(f"leakscope: warning: {printable(warning)}", err=True)
    if len(failed) == len(captures):
        raise SystemExit(1)
    findings = list(analysis.findings)
    records = [finding_record(f, show_secrets) for f in findings]
    summary = _run_summary(analysis, counters, len(captures) - len(failed), len(failed))
    if hashes_file:
        write_text(hashes_file, "".join(line + "\n" for line in analysis.stats.hashes))
    sessions = [vars(s) for s in analysis.sessions] if keep_events else None
    emit_records(output_format, output, records, summary, sessions=sessions)
    if db:
        _save_to_store(db, plan, captures, failed, analysis, summary, options, err)
    if failed:
        raise SystemExit(1)


def _analyze_captures(
    captures: Sequence[str],
    analysis: Analysis,
    options: CaptureOptions,
    counters: CaptureCounters,
    err: Console,
    purpose: str = "",
) -> list[str]:
    """Feed each capture to the analysis; returns the ones that failed (their one-line errors printed)."""
    failed: list[str] = []
    for path in captures:
        analysis.file = path
        try:
            with packet_progress(err, path + purpose, counters):
                analyze_file(path, analysis.handler_factory, options, counters=counters)
        except CaptureError as error:
            failed.append(path)
            click.echo(f"leakscope: error: {printable(error)}{purpose}", err=True)
    return failed


def _run_summary(analysis: Analysis, counters: CaptureCounters, captures: int, failed: int) -> dict[str, Any]:
    counter_fields = counters.as_dict()
    counter_fields.pop("warnings", None)
    return summary_record(
        {
            **counter_fields,
            **analysis.stats.to_dict(),
            "flows_ignored": analysis.flows_ignored,
            "captures": captures,
            "captures_failed": failed,
        },
        list(analysis.findings),
    )


def _store_plan(db: str, captures: Sequence[str]) -> dict[str, CaptureDigest]:
    """Before analysis: the capture files the store does not hold yet, by content digest (first name kept).

    Checked up front so that a bad store fails before a long analysis, and the digest is of the bytes analyzed
    next. A file that cannot be read is left to the analysis to report.
    """
    try:
        with FindingStore(db) as store:
            plan: dict[str, CaptureDigest] = {}
            for path in captures:
                try:
                    digest = capture_digest(path)
                except StoreError:
                    continue
                before = store.known_capture(digest.sha256)
                if before is not None:
                    click.echo(
                        f"leakscope: note: {printable(path)} is already in {printable(db)} (run {before['run']}, "
                        f"as {printable(before['path'])}); its findings are not merged again",
                        err=True,
                    )
                else:
                    plan.setdefault(digest.sha256, digest)
            return plan
    except StoreError as error:
        raise UserError(str(error)) from None


def _save_to_store(
    db: str,
    plan: dict[str, CaptureDigest],
    captures: Sequence[str],
    failed: Sequence[str],
    analysis: Analysis,
    summary: dict[str, Any],
    options: CaptureOptions,
    err: Console,
) -> None:
    """Merge the run's findings into the store, leaving out capture files (by content) the store already holds."""
    fresh = [d for d in plan.values() if d.path not in failed]
    if not fresh:
        return
    findings = list(analysis.findings)
    if len(fresh) < len(captures):
        # Some files were merged before, failed or were named twice: the store gets a run over the new files alone.
        analysis = Analysis(analysis.options)
        counters = CaptureCounters()
        store_failed = _analyze_captures([d.path for d in fresh], analysis, options, counters, err, " (store)")
        fresh = [d for d in fresh if d.path not in store_failed]
        findings = list(analysis.findings)
        summary = _run_summary(analysis, counters, len(fresh), len(store_failed))
        if not fresh:
            return
    try:
        save_run(db, findings, "analyze", summary, captures=fresh)
    except StoreError as error:
        raise UserError(str(error)) from None


# Commands defined in modules of their own register below: one import, and the command in the tuple.
from passive.cli.probe import compare_command, probe_command  # noqa: E402
from passive.cli.report import report  # noqa: E402
from passive.cli.watch import findings_command, watch_command  # noqa: E402

for _command in (probe_command, compare_command, report, watch_command, findings_command):
    main.add_command(_command)
