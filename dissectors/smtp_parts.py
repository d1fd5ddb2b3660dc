"""The parts of an SMTP session the dissector keeps (:mod:`dissectors.smtp`): a command waiting for its reply, a reply
being read, and what bounds them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial

from dissectors import events as ev
from dissectors.held import HeldParts, sizes_of
from dissectors.session import COMMAND_OVERHEAD, MAX_VERB, Span

REPLY_LINE = re.compile(r"^(\d{3})([ -]?)(.*)$")
BDAT_LINE = re.compile(r"^\s*BDAT\s+(\d{1,12})(\s+LAST)?\s*$", re.IGNORECASE)
# More reply lines than this in one reply are not kept (a hostile server may never send the final line).
MAX_REPLY_LINES = 256
# Nor more bytes than this (256 lines of 64 KiB held 16 MiB): a real EHLO reply is under 1 KiB; two full-length
# lines fit. The final line is always read.
MAX_REPLY_BYTES = 128 * 1024


@dataclass
class Command:
    """A command waiting for its reply (commands may be pipelined)."""

    verb: str
    line: str  # cited as evidence only: kept up to what evidence holds
    frame: int | None
    timestamp: float | None
    argument: str = ""
    held: int = 0

    def __post_init__(self) -> None:
        self.verb, self.line = self.verb[:MAX_VERB], self.line[: ev.MAX_EVIDENCE_TEXT]
        self.held = COMMAND_OVERHEAD + sizes_of(self.verb, self.line, self.argument)


@dataclass
class Reply:
    """A reply being read: its code and lines, up to its final line."""

    code: int
    lines: HeldParts = field(default_factory=partial(HeldParts, MAX_REPLY_LINES, MAX_REPLY_BYTES))
    last: str = ""  # the final line's text, read whatever the lines before it were
    cited: Span | None = None  # where its AUTH lines were (an EHLO reply's evidence)

    def texts(self) -> list[str]:
        return self.lines.texts()


def is_last(argument: str) -> bool:
    """``BDAT 1000 LAST``: the chunk that ends the message."""
    return argument.upper().split()[-1:] == ["LAST"]
