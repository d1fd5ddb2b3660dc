"""The captures named on a command line: files, directories (walked, capture files recognised by their magic
numbers, others counted and skipped), glob patterns (``'day-*.pcap'``, ``'archive/**/*.pcapng.gz'``; what they
match is sorted as a directory's files are) and ``-``.

Files are taken in natural order (``ring2`` before ``ring10``), which is the order ``tcpdump -W``/``-C`` and
``dumpcap -b`` write a ring buffer in when their names carry a counter or a timestamp.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from passive.capture.pcapfile import is_capture
from passive.core.errors import InputError

# Files a directory walk looks at; a directory holding more is refused rather than read for hours by surprise.
MAX_WALKED_FILES = 1_000_000
_GLOB_CHARACTERS = re.compile(r"[*?\[]")
_DIGITS = re.compile(r"(\d+)")


@dataclass
class Expanded:
    """What the arguments named: the captures, in order, and what a walk passed over."""

    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files in walked directories that are not captures


def natural_key(path: str) -> tuple[object, ...]:
    """``ring2.pcap`` before ``ring10.pcap``: runs of digits compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(path))


def expand_inputs(arguments: Iterable[str], stdin_name: str = "-") -> Expanded:
    """Files as given; directories walked; patterns matched (a pattern that matches nothing is an error, as a
    missing file is). ``-`` and named pipes are passed on untouched."""
    expanded = Expanded()
    for argument in arguments:
        if argument == stdin_name or (os.path.lexists(argument) and not os.path.isdir(argument)):
            expanded.paths.append(argument)
        elif os.path.isdir(argument):
            _walk(argument, expanded)
        elif _GLOB_CHARACTERS.search(argument):
            matches = _glob(argument)
            if not matches:
                raise InputError(f"{argument}: no file matches")
            for match in matches:
                if os.path.isdir(match):
                    _walk(match, expanded)
                else:
                    (expanded.paths if _is_capture_file(match) else expanded.skipped).append(match)
        else:
            expanded.paths.append(argument)  # missing: the reader says so, with the other inputs read
    return expanded


def _glob(pattern: str) -> list[str]:
    """The paths ``pattern`` matches, ``**`` included, without following symbolic links to directories (a link
    back up the tree would otherwise be walked until paths grow too long)."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if _GLOB_CHARACTERS.search(part))
    base = Path(*parts[:fixed]) if fixed else Path()
    rest = "/".join(parts[fixed:])
    try:
        return sorted((str(path) for path in base.glob(rest)), key=natural_key)
    except (OSError, ValueError):
        return []


def _walk(directory: str, expanded: Expanded) -> None:
    found: list[str] = []
    seen = 0
    for root, directories, files in os.walk(directory):  # symbolic links to directories are not followed: no loops
        directories.sort(key=natural_key)
        for name in files:
            seen += 1
            if seen > MAX_WALKED_FILES:
                raise InputError(f"{directory}: more than {MAX_WALKED_FILES:,} files; name the captures instead")
            found.append(os.path.join(root, name))
    for path in sorted(found, key=natural_key):
        if _is_capture_file(path):
            expanded.paths.append(path)
        else:
            expanded.skipped.append(path)


def _is_capture_file(path: str) -> bool:
    """A regular file whose magic says capture; one that cannot be read is kept, for the reader to report."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # a FIFO or socket in a walked directory would block or fail: never opened
        return is_capture(path)
    except OSError:
        return True
