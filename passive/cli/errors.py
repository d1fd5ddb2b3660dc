"""Exit statuses, in one table, and the one place application errors become them."""

from __future__ import annotations

from typing import Any

import click

from passive.core.errors import LeakscopeError, UsageError
from passive.core.text import printable

EXIT_OK = 0  # the analysis (probe, comparison, report) ran, whatever it found
EXIT_INPUT = 1  # an input could not be read, a target could not be probed, an output could not be written
EXIT_USAGE = 2  # the command line is wrong: an option value, a filter, a target
EXIT_FAIL_ON = 3  # --fail-on: a finding at or above the level (with --baseline: new or worse; not suppressed)
EXIT_INTERRUPTED = 130  # stopped by SIGINT (128 + 2)

EXIT_STATUSES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "the analysis ran (whatever it found)"),
    (EXIT_INPUT, "an input could not be read, a target could not be probed, or an output could not be written"),
    (EXIT_USAGE, "usage error: an unknown option, a bad value, filter, target or time"),
    (
        EXIT_FAIL_ON,
        "--fail-on LEVEL: a finding at or above LEVEL (with --baseline, a new or more severe one) that is not "
        "suppressed",
    ),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C): what was read so far is written, marked partial"),
)


def exit_table() -> str:
    """The exit statuses as every command's help ends with them."""
    return "Exit status: " + "; ".join(f"{status} {meaning}" for status, meaning in EXIT_STATUSES) + "."


def exit_status(error: LeakscopeError) -> int:
    return EXIT_USAGE if isinstance(error, UsageError) else EXIT_INPUT


class CommandError(click.ClickException):
    """A one-line error for the user: ``leakscope: error: ...`` on standard error, then the mapped exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    @classmethod
    def of(cls, error: LeakscopeError) -> CommandError:
        return cls(str(error), exit_status(error))

    def show(self, file: Any = None) -> None:
        click.echo(f"leakscope: error: {printable(self.message)}", err=True)


class LeakscopeGroup(click.Group):
    """The ``leakscope`` group: every :class:`LeakscopeError` a command raises becomes its one-line error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LeakscopeError as error:
            raise CommandError.of(error) from None
        except KeyboardInterrupt:  # Ctrl-C where no command stops cleanly: 130, one line, no "Aborted!"
            click.echo("leakscope: interrupted", err=True)
            raise SystemExit(EXIT_INTERRUPTED) from None
