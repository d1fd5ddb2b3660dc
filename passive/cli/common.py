"""What every leakscope command shares: the output options, writing text and reports, the run's redactor."""

from __future__ import annotations

import errno
import io
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

import click

from passive.analysis.domains import IpNetwork, normalize_domain, not_local_domain, parse_network
from passive.capture.policy import POLICIES
from passive.core.errors import OutputError
from passive.core.files import Content, chunks_of, clashes, encoded, write_atomically
from passive.core.text import printable
from passive.results.ecs import ecs_record
from passive.results.jsonio import dumps, write_json, write_jsonl

if TYPE_CHECKING:
    from rich.console import Console

FORMATS = ("table", "json", "jsonl", "ecs")
# The file name meaning standard output, for every option that names an output file.
STDOUT = "-"
# JSON lines are written in chunks of about this size, made as they are written: the output is never held whole
# (36 MB of lines for 20,000 findings were held three times over: the text, its copy, its encoding).
JSONL_CHUNK = 1 << 20


def format_option(choices: tuple[str, ...] = FORMATS) -> Callable[[Any], Any]:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(choices),
        default="table",
        show_default=True,
        help="Tables for people; JSON or JSON lines for machines; ecs: Elastic Common Schema JSON lines for SIEMs "
        "(docs/schema.md).",
    )


output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="Write the output to FILE (- for standard output).",
)


def _domain_names(context: click.Context, parameter: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """``--local-domain`` values that are domain names: a typo here would silently change which relaying is high."""
    for value in values:
        name = normalize_domain(value.strip().rstrip("."))
        if name.startswith(("*.", ".")):  # a wildcard, or Postfix's notation for subdomains
            raise click.BadParameter(f"{value!r}: give {name.lstrip('*.')!r}, which covers its subdomains too")
        problem = not_local_domain(name)
        if problem is not None:
            raise click.BadParameter(f"{value!r}: {problem}")
    return values


local_domain_option = click.option(
    "--local-domain",
    "local_domains",
    multiple=True,
    metavar="DOMAIN",
    callback=_domain_names,
    help="A domain your mail servers receive mail for, and its subdomains; repeatable. Without it, no passive "
    "verdict is a high open relay: delivery to an MX and relaying by it look the same.",
)


def _networks(context: click.Context, parameter: click.Parameter, values: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    try:
        return tuple(parse_network(value) for value in values)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


trusted_net_option = click.option(
    "--trusted-net",
    "trusted_networks",
    multiple=True,
    metavar="CIDR",
    callback=_networks,
    help="A network the servers relay for (Postfix mynetworks); repeatable. Without it, clients in private ranges "
    "are assumed trusted.",
)


def reassembly_option(default: str) -> Callable[[Any], Any]:
    return click.option(
        "--reassembly",
        "reassembly_policy",
        type=click.Choice(list(POLICIES)),
        default=default,
        show_default=True,
        help="Reassemble TCP as this receiver does: whose bytes win where segments overlap, and whether RSTs, "
        "data beyond the window and stale FINs are refused (all but 'first'). See docs/hardening.md.",
    )


ignore_checksums_option = click.option(
    "--ignore-checksums",
    is_flag=True,
    help="Read segments whose TCP or IP checksum is wrong, which receivers drop (refused by default where the "
    "capture shows right ones: a planted decoy). For captures edited without fixing checksums. See docs/hardening.md.",
)


show_secrets_option = click.option(
    "--show-secrets", is_flag=True, help="Show clear-text passwords instead of masking them."
)


def domains(values: tuple[str, ...]) -> frozenset[str]:
    """``--local-domain`` values as the analysis compares them: lower case, no trailing dot, ASCII (IDNA) form."""
    return frozenset(normalize_domain(value.strip(".")) for value in values)


def refuse_overwriting(outputs: Iterable[tuple[str, str | None]], inputs: Iterable[tuple[str, str | None]]) -> None:
    """A usage error, before anything is read or written, when an output (option, file) would replace a file the
    run reads (a capture, a findings file, the store) or another output: ``analyze day.pcap -o day.pcap`` replaced
    the capture with its findings, ``-o store.db --db store.db`` the store, ``--hashes`` the table it followed."""
    written = [(option, path) for option, path in outputs if path and path != STDOUT]
    read = [(what, path) for what, path in inputs if path and path != STDOUT]
    for index, (option, path) in enumerate(written):
        for what, source in read:
            if clashes(path, source, other_is_output=False):
                raise click.UsageError(
                    f"{option} {printable(path)} is {what} {printable(source)}: writing it would replace what it reads"
                )
        for other, second in written[index + 1 :]:
            if clashes(path, second, other_is_output=True):
                raise click.UsageError(f"{option} and {other} write the same file, {printable(path)}")


def write_text(output: str | None, text: Content) -> None:
    """To FILE (replaced whole, mode 0600: see :mod:`passive.core.files`), or to standard output when none is
    given; a failure (a full disk, a closed pipe) is a one-line :class:`OutputError`, never a traceback. ``text``
    may be byte chunks, written as they are made."""
    if output and output != STDOUT:
        write_atomically(output, text)
        return
    stdout = standard_output()
    try:
        _to_stdout(stdout, chunks_of(text))
    except BrokenPipeError:
        silence_stdout()  # the reader went away (| head): nothing more to say to it, and no error to report
    except OSError as error:
        raise stdout_failed(error) from None


def standard_output() -> TextIO:
    """``sys.stdout``; an :class:`OutputError` when the process was started with standard output closed (Python
    then has none)."""
    if sys.stdout is None:
        raise OutputError("cannot write standard output: it is closed")
    return sys.stdout


def _to_stdout(stdout: TextIO, chunks: Iterable[bytes]) -> None:
    """Every byte of ``chunks`` to standard output, after what its text layer holds. Python unbuffered (``python -u``,
    PYTHONUNBUFFERED, common in containers) writes straight to the descriptor, and a write that a signal interrupts
    (the Ctrl-C that lets a run write what it read) returns having written part of its bytes: the rest follows."""
    stdout.flush()
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            written = stdout.buffer.write(view)
            if not written:  # a descriptor set non-blocking, its pipe full (a buffered writer raises so)
                raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
            view = view[written:]
    stdout.flush()


def silence_stdout() -> None:
    """Standard output failed: point it at /dev/null, so that Python's own flush at exit neither fails again nor
    prints a second error after ours."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no descriptor (output captured in memory): nothing will flush it at exit
        pass


def stdout_failed(error: OSError) -> OutputError:
    silence_stdout()
    return OutputError(f"cannot write standard output: {error.strerror or error}")


# A colour code (SGR escape) at the end of a line.
_FINAL_SGR = re.compile(r"\x1b\[[0-9;]*m$")
# Files get the width a terminal has by default: a table written to a file reads as it would on screen.
TEXT_WIDTH = 80


def strip_trailing(text: str) -> str:
    """Every line without the blanks rich pads table cells with; colour codes among them are kept, in order."""
    lines = []
    for line in text.split("\n"):
        codes: list[str] = []
        while True:
            code = _FINAL_SGR.search(line)
            if code:
                codes.insert(0, code.group(0))
                line = line[: code.start()]
            elif line.endswith(" "):
                line = line.rstrip(" ")
            else:
                break
        lines.append(line + "".join(codes))
    return "\n".join(lines)


def rich_console(**settings: Any) -> Console:
    """A rich console. rich (40 ms of imports) loads here and in the tables, when something is drawn: JSON output
    never loads it."""
    from rich.console import Console

    return Console(**settings)


def draw_tables(
    console: Console, records: list[dict[str, Any]], summary: dict[str, Any], *, verbose: bool = False
) -> None:
    """The findings tables (:mod:`passive.cli.tables`, imported when tables are drawn: see :func:`rich_console`)."""
    from passive.cli.tables import render_tables

    render_tables(console, records, summary, verbose=verbose)


def render(
    output: str | None, draw: Callable[[Console], None], before_output: Callable[[], None] | None = None
) -> None:
    """Draw rich output to the terminal, or as plain text (no colour, 80 columns) into FILE; no line ends in blanks.
    ``before_output`` is called once the drawing is done, just before it goes to standard output."""
    if output and output != STDOUT:
        buffer = io.StringIO()
        draw(rich_console(file=buffer, width=TEXT_WIDTH, highlight=False, color_system=None))
        write_text(output, strip_trailing(buffer.getvalue()))
        return
    stdout = standard_output()
    try:
        terminal = rich_console(highlight=False)
        with terminal.capture() as captured:
            draw(terminal)
        if before_output is not None:
            before_output()
        text = strip_trailing(captured.get())
        _to_stdout(stdout, (text.encode(stdout.encoding or "utf-8", "backslashreplace"),))
    except BrokenPipeError:
        silence_stdout()
    except OSError as error:
        raise stdout_failed(error) from None


def emit_records(
    output_format: str,
    output: str | None,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    *,
    sessions: list[dict[str, Any]] | None = None,
    also_draw: Callable[[Console], None] | None = None,
    verbose: bool = False,
    before_output: Callable[[], None] | None = None,
) -> None:
    """Findings and summary in the chosen format; ``also_draw`` adds a table after the findings; ``before_output``
    is called when the output is ready, before it goes to standard output (a progress display clears itself)."""
    if output_format == "table":

        def draw(on: Console) -> None:
            draw_tables(on, records, summary, verbose=verbose)
            if also_draw is not None:
                also_draw(on)

        render(output, draw, before_output)
        return
    if output_format in ("jsonl", "ecs"):
        rows = [*records, summary]
        if before_output is not None and (not output or output == STDOUT):
            before_output()
        write_text(output, jsonl_chunks(map(ecs_record, rows) if output_format == "ecs" else rows))
        return
    buffer = io.StringIO()
    write_json(buffer, records, summary, sessions)
    if before_output is not None and (not output or output == STDOUT):
        before_output()
    write_text(output, buffer.getvalue())


def jsonl_chunks(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """The records as JSON lines, encoded, in chunks of about JSONL_CHUNK bytes."""
    lines: list[str] = []
    size = 0
    for record in records:
        line = dumps(record) + "\n"
        lines.append(line)
        size += len(line)
        if size >= JSONL_CHUNK:
            yield encoded("".join(lines))
            lines, size = [], 0
    if lines:
        yield encoded("".join(lines))


class ByteSize(click.ParamType):
    """A size as tcpdump and dd write it: bytes, or a number with k, M or G (powers of 1024)."""

    name = "SIZE"
    _UNITS: ClassVar[dict[str, int]] = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)i?[bB]?\s*", str(value))
        size = int(float(match.group(1)) * self._UNITS[match.group(2).lower()]) if match else 0
        if size < 1:
            self.fail(f"{value!r}: give a size such as 500k, 100M or 2G", param, ctx)
        return size


verbose_option = click.option(
    "-v", "--verbose", is_flag=True, help="Tables: also show every engine counter (JSON output always has them)."
)

all_outputs_option = click.option(
    "-oA",
    "output_all",
    metavar="BASENAME",
    help="Also write BASENAME.txt (tables), BASENAME.jsonl and BASENAME.html (the report) in one run, as nmap -oA.",
)


def emit_all(
    basename: str, records: list[dict[str, Any]], summary: dict[str, Any], *, redact: bool, verbose: bool = False
) -> None:
    """The three outputs of ``-oA``: what the table, JSON lines and HTML report of this run would be."""
    render(f"{basename}.txt", lambda on: draw_tables(on, records, summary, verbose=verbose))
    buffer = io.StringIO()
    write_jsonl(buffer, [*records, summary])
    write_text(f"{basename}.jsonl", buffer.getvalue())
    from passive.results.report import build_report, render_html  # the templates load for -oA only

    write_text(f"{basename}.html", render_html(build_report(records, [summary], redact=redact)))
