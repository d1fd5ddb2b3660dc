"""The ``leakscope`` command line: the group, and one module per command, imported when its command runs (a command
costs only its own imports: ``analyze`` does not load the probe, the report templates or the live dashboard)."""

from __future__ import annotations

import importlib

import click

from passive.cli.errors import LeakscopeGroup, exit_table

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
