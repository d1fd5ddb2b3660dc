"""The ``leakscope`` command line: the group, and one module per command, imported when its command runs (a command
costs only its own imports: ``analyze`` does not load the probe, the report templates or the live dashboard)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import click

from passive.cli.errors import LeakscopeGroup, exit_table
from passive.core.collector import command_ends_process

COMMANDS = {
    "analyze": "passive.cli.analyze:analyze",
    "probe": "passive.cli.probe:probe_command",
    "compare": "passive.cli.compare:compare_command",
    "report": "passive.cli.report:report",
    "watch": "passive.cli.watch:watch_command",
    "findings": "passive.cli.findings:findings_command",
    "decode": "passive.cli.decode:decode",
}
"""Each command's name and where it is defined (``module:attribute``)."""


class _Commands(LeakscopeGroup):
    """The group with its commands loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attribute)
            command.epilog = exit_table()
            self.add_command(command)
        return command

    def main(self, args: Sequence[str] | None = None, *more: Any, **settings: Any) -> Any:
        """click's ``main``. Given no arguments (the process's own command line) in standalone mode, the process
        ends with the command (click exits): what the command holds at its end may be left to the exit
        (:func:`~passive.core.collector.leave_to_exit`). A caller passing arguments (click's runner, an embedding
        program) goes on afterwards and keeps its garbage collector as it was."""
        standalone = more[2] if len(more) > 2 else settings.get("standalone_mode", True)
        if args is None and standalone:
            command_ends_process()
        return super().main(args, *more, **settings)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as error:  # click suggests from the commands loaded: all of them
            raise click.exceptions.NoSuchCommand(error.command_name, possibilities=COMMANDS, ctx=ctx) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="leakscope")
def main() -> None:
    """leakscope: what your mail servers give away on the wire."""


main.epilog = exit_table()
