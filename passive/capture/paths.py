"""The captures named on a command line: files, directories (walked, capture files recognised by their magic
numbers, others counted and skipped), glob patterns (``'day-*.pcap'``, ``'archive/**/*.pcapng.gz'``; what they
match is sorted as a directory's files are) and ``-``. A walk or a pattern takes each file once (a link to a file
it also finds under its own name is skipped, and so is a dangling link, and a compressed copy found beside its
plain file); a file named twice is read twice.

Files are taken in natural order (``ring2`` before ``ring10``), which is the order ``tcpdump -W``/``-C`` and
``dumpcap -b`` write a ring buffer in when their names carry a counter or a timestamp.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from passive.capture.pcapfile import is_capture
from passive.core.errors import InputError

# Files a directory walk looks at; a directory holding more is refused rather than read for hours by surprise.
MAX_WALKED_FILES = 1_000_000
_GLOB_CHARACTERS = re.compile(r"[*?\[]")
# What compressing a capture adds to its name (gzip, xz, bzip2, zstd and their usual spellings).
COMPRESSED_SUFFIXES = (".gz", ".xz", ".bz2", ".zst", ".zstd")
_DIGITS = re.compile(r"(\d+)")


@dataclass
class Expanded:
    """What the arguments named: the captures, in order, and what a walk passed over."""

    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files in walked directories that are not captures
    reasons: dict[str, str] = field(default_factory=dict)  # why a skipped file was, when not "is not a capture"


def natural_key(path: str) -> tuple[object, ...]:
    """``ring2.pcap`` before ``ring10.pcap``: runs of digits compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(path))


def expand_inputs(
    arguments: Iterable[str], stdin_name: str = "-", accept: Callable[[str], bool] | None = None
) -> Expanded:
    """Files as given; directories walked; patterns matched (a pattern that matches nothing is an error, as a
    missing file is). ``-`` and named pipes are passed on untouched. What a walk or a pattern finds is taken when
    ``accept`` says so (by default: a capture file; a file that cannot be read is taken, for its reader to
    report)."""
    accept = accept if accept is not None else is_capture_file
    expanded = Expanded()
    for argument in arguments:
        if argument == stdin_name or (os.path.lexists(argument) and not os.path.isdir(argument)):
            expanded.paths.append(argument)
        elif os.path.isdir(argument):
            _walk(argument, expanded, accept)
        elif _GLOB_CHARACTERS.search(argument):
            matches = _glob(argument)
            if not matches:
                raise InputError(f"{argument}: no file matches")
            once = _Once([match for match in matches if not os.path.isdir(match)], accept)
            for match in matches:
                if os.path.isdir(match):
                    _walk(match, expanded, accept)
                else:
                    once.take(match, expanded)
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


def _walk(directory: str, expanded: Expanded, accept: Callable[[str], bool]) -> None:
    found: list[str] = []
    seen = 0
    for root, directories, files in os.walk(directory):  # symbolic links to directories are not followed: no loops
        directories.sort(key=natural_key)
        for name in files:
            seen += 1
            if seen > MAX_WALKED_FILES:
                raise InputError(f"{directory}: more than {MAX_WALKED_FILES:,} files; name the captures instead")
            found.append(os.path.join(root, name))
    found.sort(key=natural_key)
    once = _Once(found, accept)
    for path in found:
        once.take(path, expanded)


class _Once:
    """Each file a walk or a pattern finds taken once: capture hosts keep links (``latest.pcap`` to the piece being
    written) that would have a ring's piece read twice, the second time apart from its ring, and leave links
    dangling when the rotation deletes their file. A link, or a second name of a file, is skipped when the file is
    found under another name (a name that is not a link is the one kept); a dangling link is skipped. So is
    ``x.pcap.gz`` found beside ``x.pcap``: ``tcpdump -z gzip`` compresses each rotated piece beside the ring, and
    while it runs the piece is there twice, whole and in part."""

    def __init__(self, paths: list[str], accept: Callable[[str], bool]) -> None:
        self.found, self.accept = set(paths), accept
        self.names: dict[tuple[int, int], str] = {}
        for path in sorted(paths, key=os.path.islink):  # stable: names that are not links first, in their order
            identity = _identity(path)
            if identity is not None:
                self.names.setdefault(identity, path)

    def take(self, path: str, expanded: Expanded) -> None:
        identity = _identity(path)
        if identity is None and os.path.islink(path) and not os.path.exists(path):
            expanded.skipped.append(path)
            expanded.reasons[path] = "is a dangling link"
        elif identity is not None and self.names.get(identity, path) != path:
            expanded.skipped.append(path)
            expanded.reasons[path] = f"is {self.names[identity]}, read once"
        elif path.endswith(COMPRESSED_SUFFIXES) and self._read(os.path.splitext(path)[0]):
            expanded.skipped.append(path)
            expanded.reasons[path] = f"is {os.path.splitext(path)[0]} compressed, read once"
        elif self.accept(path):
            expanded.paths.append(path)
        else:
            expanded.skipped.append(path)

    def _read(self, plain: str) -> bool:
        """Whether ``plain``, found beside its compressed copy, is read: a capture file (not a dangling link, not an
        empty or other file), so that the copy is not needed."""
        return plain in self.found and _identity(plain) is not None and is_capture_file(plain)


def _identity(path: str) -> tuple[int, int] | None:
    """The regular file ``path`` names (device and inode, links followed), or None."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return (status.st_dev, status.st_ino) if stat.S_ISREG(status.st_mode) else None


def is_capture_file(path: str) -> bool:
    """A regular file whose magic says capture; one that cannot be read is kept, for the reader to report."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # a FIFO or socket in a walked directory would block or fail: never opened
        return is_capture(path)
    except OSError:
        return True
