"""The ``leakscope`` command line: the group, and one module per command, imported when its command runs (a command
costs only its own imports: ``analyze`` does not load the probe, the report templates or the live dashboard)."""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from passive.cli.errors import LeakscopeGroup, exit_table
from passive.core.collector import command_ends_process, outputs_left_to_exit

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
        program) goes on afterwards and keeps its garbage collector as it was; so does a program running it in a
        thread of its own (click's exit ends that thread only). A command that left its outputs to the exit ends
        the process at once (:func:`_end_at_once`)."""
        standalone = more[2] if len(more) > 2 else settings.get("standalone_mode", True)
        if args is None and standalone and threading.current_thread() is threading.main_thread():
            command_ends_process()
            try:
                return super().main(args, *more, **settings)
            except SystemExit as request:
                if outputs_left_to_exit():
                    _end_at_once(request)
                raise
        return super().main(args, *more, **settings)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as error:  # click suggests from the commands loaded: all of them
            raise click.exceptions.NoSuchCommand(error.command_name, possibilities=COMMANDS, ctx=ctx) from None


def _end_at_once(request: SystemExit) -> NoReturn:
    """End the process with ``request``'s status as Python's exit would, less the interpreter's teardown: the exit
    handlers run and the standard streams are flushed, then ``os._exit``. Python's own exit instead (``request`` is
    raised again) when the status is not a number, a thread that is not a daemon still runs (Python waits for it),
    the process goes on afterwards (:func:`_watched`), or a standard stream cannot be flushed (a closed pipe: Python
    reports it as it always does)."""
    code = request.code
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if (code is not None and not isinstance(code, int)) or others or _watched():
        raise request
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        raise request from None
    os._exit(code or 0)


# sys.monitoring's tool identifiers (Python 3.12+) are 0 to 5: the debugger's, coverage's, the profiler's, the others.
_MONITORING_TOOLS = 6


def _watched() -> bool:
    """Whether the process goes on once the command has exited: a tool runs the command inside it and writes its
    results then (a profiler, ``python -m cProfile -o FILE -m passive``; a tracer, coverage, a debugger), or an
    interactive session was asked for (``python -i``, PYTHONINSPECT). An ``os._exit`` would lose them."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return True
    if sys.flags.inspect or (not sys.flags.ignore_environment and os.environ.get("PYTHONINSPECT")):
        return True
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and any(monitoring.get_tool(tool) is not None for tool in range(_MONITORING_TOOLS))


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="leakscope")
def main() -> None:
    """leakscope: what your mail servers give away on the wire."""


main.epilog = exit_table()
