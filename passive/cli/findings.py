"""``leakscope findings``: the findings kept in a store, merged across runs."""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import click

from passive.cli.common import emit_records, format_option, verbose_option
from passive.cli.losses import RUNS_NOT_READ, runs_not_read
from passive.core.errors import StoreError, UsageError
from passive.core.text import printable
from passive.findings.model import SCHEMA_VERSION, FindingType
from passive.results.store import FindingStore, parse_time

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@click.command("findings")
@click.option("--db", required=True, metavar="PATH", help="The findings store written by watch or analyze --db.")
@click.option("--type", "kind", type=click.Choice([str(k) for k in FindingType]), help="Only this kind of finding.")
@click.option("--server", metavar="IP:PORT", help="Only this server (as in the records: ip:port, [v6]:port).")
@click.option("--since", metavar="WHEN", help="Seen at or after WHEN: ISO 8601 time, or an age such as 30m, 12h, 7d.")
@click.option("--source", type=click.Choice(["passive", "active"]), help="Only findings from captures or probes.")
@format_option()
@verbose_option
def findings_command(
    db: str,
    kind: str | None,
    server: str | None,
    since: str | None,
    source: str | None,
    output_format: str,
    verbose: bool,
) -> None:
    """Show the findings kept in a store, merged across runs."""
    since_time = _since(since) if since else None
    with FindingStore(db, create=False) as store:
        records = store.query(type=kind, server=server, since=since_time, source=source)
        runs = store.runs()
        summary: dict[str, Any] = {
            "type": "summary",
            "schema_version": SCHEMA_VERSION,
            "findings": dict(Counter(r["type"] for r in records)),
            "store": store.path,
            "store_schema": store.schema_version,
            "runs": len(runs),
        }
        not_read = runs_not_read(runs)
        if not_read:  # what the runs did not read: a store's findings without a leak are no all-clear then
            summary[RUNS_NOT_READ] = not_read
        warn_skipped(store)
    emit_records(output_format, None, records, summary, verbose=verbose)


def warn_skipped(store: FindingStore) -> None:
    """One warning line when the store held records that could not be read (a damaged file)."""
    if store.skipped:
        click.echo(
            f"leakscope: warning: {printable(store.path)}: {store.skipped} stored record(s) could not be read "
            "(not UTF-8 or not JSON: the file is damaged) and were left out",
            err=True,
        )


def _since(text: str) -> float:
    match = _RELATIVE.match(text.strip())
    if match:
        return time.time() - float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    try:
        return parse_time(text)
    except StoreError:
        raise UsageError(f"--since {text!r}: give an ISO 8601 time or an age such as 30m, 12h, 7d") from None
