"""``--fail-on``, ``--baseline`` and ``--suppress``: a run as a CI gate (see :mod:`passive.results.baseline`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from passive.cli.errors import EXIT_FAIL_ON
from passive.findings.kinds import SEVERITY_ORDER
from passive.results.baseline import Gate, read_baseline, read_suppressions

LEVELS = tuple(str(s) for s in SEVERITY_ORDER if str(s) != "info")


def gate_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command that writes findings with the gate's options."""
    options = (
        click.option(
            "--fail-on",
            type=click.Choice(LEVELS),
            help=f"Exit with status {EXIT_FAIL_ON} when a finding at or above this severity is found (with "
            "--baseline: a new one, or one more severe than there; suppressed ones never count).",
        ),
        click.option(
            "--baseline",
            "baseline_path",
            metavar="FILE",
            help="An earlier run's findings (JSON lines or JSON): mark each finding new, worse (more severe than "
            "there) or unchanged, list the resolved ones in the summary.",
        ),
        click.option(
            "--suppress",
            "suppress_path",
            metavar="FILE",
            help="Accepted findings: lines 'ls-FINGERPRINT YYYY-MM-DD reason' or JSON lines {id, expires, reason}; "
            "counted, never hidden.",
        ),
    )
    for option in reversed(options):
        function = option(function)
    return function


def build_gate(baseline_path: str | None, suppress_path: str | None) -> Gate:
    return Gate(
        baseline=read_baseline(baseline_path) if baseline_path else None,
        suppressions=read_suppressions(suppress_path) if suppress_path else {},
    )


def apply_gate(gate: Gate, records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Mark the records and add what the gate decided to the summary."""
    gate.mark(records)
    summary.update(gate.summary())


def gate_status(gate: Gate, records: list[dict[str, Any]], fail_on: str | None) -> int | None:
    """The exit status ``--fail-on`` asks for, or None when the gate passes."""
    if fail_on is None:
        return None
    failing = gate.failing(records, fail_on)
    if not failing:
        return None
    click.echo(
        f"leakscope: --fail-on {fail_on}: {len(failing)} finding(s) at or above {fail_on}"
        + (" that are new since the baseline, or more severe than there" if gate.baseline is not None else ""),
        err=True,
    )
    return EXIT_FAIL_ON
