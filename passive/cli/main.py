"""The ``leakscope`` command line: the group, and one module per command."""

from __future__ import annotations

import click

from passive.cli.analyze import analyze
from passive.cli.compare import compare_command
from passive.cli.decode import decode
from passive.cli.errors import LeakscopeGroup, exit_table
from passive.cli.findings import findings_command
from passive.cli.probe import probe_command
from passive.cli.report import report
from passive.cli.watch import watch_command

COMMANDS = (analyze, probe_command, compare_command, report, watch_command, findings_command, decode)


@click.group(cls=LeakscopeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="leakscope")
def main() -> None:
    """leakscope: what your mail servers give away on the wire."""


for _command in COMMANDS:
    _command.epilog = exit_table()
    main.add_command(_command)
main.epilog = exit_table()
