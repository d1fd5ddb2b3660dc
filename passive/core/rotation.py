"""A JSON lines file that rotates by size, as ``tcpdump -C`` and logrotate do: when FILE has reached the size
limit, FILE.1 … become FILE.2 …, FILE becomes FILE.1 and a new FILE is started; the oldest beyond ``keep`` is
deleted. Rotation happens only between lines, so a record is never split across two files."""

from __future__ import annotations

import contextlib
import os
from typing import IO, Protocol

from passive.core.files import open_private_append


class TextSink(Protocol):
    """Where records are appended: an open text file, or a :class:`RotatingAppender`."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


# Rotated files kept beside the current one when the user does not say: ten files of the size asked for.
DEFAULT_KEEP = 10


class RotatingAppender:
    """A text stream appending to ``path``; past ``max_bytes`` the next line starts a new file. Files are private
    (0600), as every file that names users and hosts. ``max_bytes`` None never rotates."""

    def __init__(self, path: str, max_bytes: int | None = None, keep: int = DEFAULT_KEEP) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.rotations = 0
        self._stream: IO[str] = open_private_append(path)
        self._size = self._current_size()

    def _current_size(self) -> int:
        try:
            return os.fstat(self._stream.fileno()).st_size
        except OSError:
            return 0

    def write(self, text: str) -> int:
        """Append ``text``; a file that reached the limit is rotated before the next line (records are lines)."""
        if self.max_bytes is None:
            return self._stream.write(text)
        for line in text.splitlines(keepends=True):
            if self._size and self._size >= self.max_bytes and self._regular():
                self._rotate()
            self._stream.write(line)
            self._size += len(line.encode("utf-8", "backslashreplace"))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()

    def _regular(self) -> bool:
        """Only a regular file rotates: a pipe or /dev/stdout given as FILE is written on and on."""
        try:
            return os.path.isfile(self.path) and not os.path.islink(self.path)
        except OSError:
            return False

    def _rotate(self) -> None:
        self._stream.flush()
        self._stream.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.path}.{self.keep}")
        for number in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}.{number}", f"{self.path}.{number + 1}")
        os.replace(self.path, f"{self.path}.1")
        self._stream = open_private_append(self.path)
        self._size = 0
        self.rotations += 1
