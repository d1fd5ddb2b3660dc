"""A large gzip, xz or bzip2 capture expanded by a forked process of its own, into the pipe the compiled scanner
reads (:class:`passive.capture.piped.PipedCapture`), instead of a thread of the analysis's process.

A thread waits for the interpreter lock the analysis holds, and the two take turns; a process does not. The process
is a fork of the one reading (nothing is imported or started anew, and it runs no code but the decoder and its
writes): it keeps the capture's descriptor, the pipe's writing end and a status pipe, and closes every other
descriptor it inherited. It reads as the pure-Python reader does (:class:`~passive.capture.pcapfile.Decompressed`:
a stream cut short gives all before the cut) and holds what one decoder step gives. It ends at the stream's end, at
a damaged stream (the reason, one line, on the status pipe), or at its next write once its reader has gone (a stop
request, the analysis ended, or killed). Ctrl-C is the analysis's to handle: the process ignores SIGINT from its
first instruction on (blocked across the fork). Sharing the capture's open file with it, the reading process counts
the compressed bytes it took by the file's offset (:meth:`Expander.count`).
"""

from __future__ import annotations

import contextlib
import lzma
import os
import signal
import stat
import threading
import zlib
from typing import NoReturn

from passive.capture.pcapfile import COMPRESSION_MAGICS, Decompressed, Tally
from passive.core.errors import one_line

CHUNK = 1 << 16
"""Bytes asked per step of the decoder or per read of a pipe, as the pure-Python reader asks: larger steps cost
more than they save (a 1 MiB step took 2.4 s of system time to decompress 1 GB, page faults of new buffers; 64 KiB,
0.3 s)."""
DECODER_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)
EXPAND_APART_MIN = 64 << 20
"""A file of this many bytes or more (in one of :data:`EXPAND_APART`) is expanded by a process of its own (a 1 GB
gzip capture of 2% mail, one process's analysis: 6.9 to 7.2 s with a thread, 5.1 to 5.2 s forked); a smaller one by a
thread, and a group of such files is split by flow between workers like a plain one (each worker expanding it)."""
EXPAND_APART = frozenset({"gzip", "xz", "bz2"})
"""The compressions expanded apart: those whose decoder takes the interpreter lock often or runs long. 200 MB of that
capture, thread against process: gzip 1.41 against 1.19 s, xz 4.99 against 4.83 s, bzip2 8.06 against 7.76 s; zstd
(1 GB) 2.53 against 2.96 s, its decoder fast enough that the pipe between two processes costs more than it saves."""
COUNT_EVERY = 0.1
"""Seconds between two looks at how far the process has read, for the progress display (as a thread counts each
read)."""
MAX_DAMAGE_TEXT = 1024
"""Bytes of the process's one line on why the stream ended early: more than any decoder says; never more than a pipe
holds, so the process never waits to say it."""
DAMAGED, FAILED = 3, 4
"""The process's exit status: the stream was damaged (the reason on the status pipe), or the process itself failed."""


def compression_of(path: str) -> str | None:
    """The compression a regular file starts with (one of :data:`~passive.capture.pcapfile.COMPRESSION_MAGICS`'s
    names); None for a plain file and for anything else (a pipe or FIFO, opened without waiting for a writer; a
    file it cannot read)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        head = os.read(descriptor, 6)
    except OSError:
        return None
    finally:
        os.close(descriptor)
    return next((name for magic, name in COMPRESSION_MAGICS if head.startswith(magic)), None)


def expanded_apart(path: str) -> bool:
    """Whether ``path`` is expanded by a process of its own: :data:`EXPAND_APART_MIN` bytes or more, compressed by one
    of :data:`EXPAND_APART`."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return False
    return size >= EXPAND_APART_MIN and compression_of(path) in EXPAND_APART


def expand(compression: str, source: int, target: int) -> str | None:
    """Expand the stream read from descriptor ``source`` into ``target``; why it stopped early (damage), or None."""
    reader = Decompressed(compression, open(source, "rb", closefd=False))  # noqa: SIM115 - closed below
    try:
        while chunk := reader.read(CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(target, view) :]
    except BrokenPipeError:
        return None  # the scanner stopped reading
    except DECODER_ERRORS as exc:  # all before the damage was passed on
        return one_line(exc)
    finally:
        reader.close()
    return None


class Expander:
    """The forked process expanding the file at ``path`` into the pipe's writing end ``target``; the reading
    process's side of it: :meth:`start`, :meth:`count`, :meth:`finish`."""

    def __init__(self, path: str, compression: str, target: int, tally: Tally | None) -> None:
        self.path, self.compression, self.target, self.tally = path, compression, target, tally
        self.pid = 0
        self.source = self.status = -1
        self.base = tally.bytes_read if tally is not None else 0
        self._done = threading.Event()
        self._counter = threading.Thread(target=self._count_often, name="capture-expand-count", daemon=True)

    def start(self) -> bool:
        """Fork the process; False (nothing started, nothing left open) where it cannot be."""
        try:
            self.source = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            if not stat.S_ISREG(os.fstat(self.source).st_mode):  # no longer the file looked at
                raise OSError("not a regular file")
            status, said = os.pipe()
        except OSError:
            self._close(self.source)
            return False
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            for descriptor in (status, said, self.source):
                self._close(descriptor)
            return False
        if pid == 0:
            self._child(said, blocked)  # never returns
        self.pid = pid
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(said)
        self.status = status
        if self.tally is not None:
            self._counter.start()
        return True

    def _child(self, said: int, blocked: set[signal.Signals]) -> NoReturn:
        """The forked process: SIGINT stays blocked (the analysis handles Ctrl-C), SIGTERM ends it."""
        code = FAILED
        try:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set(blocked) | {signal.SIGINT})
            _close_all_but({self.source, self.target, said})
            damage = expand(self.compression, self.source, self.target)
            code = 0
            if damage is not None:
                os.write(said, damage.encode("utf-8", "replace")[:MAX_DAMAGE_TEXT])
                code = DAMAGED
        finally:
            os._exit(code)

    def count(self) -> None:
        """Count as read the compressed bytes the process took so far (it shares the file's offset)."""
        if self.tally is not None:
            with contextlib.suppress(OSError):
                self.tally.bytes_read = self.base + os.lseek(self.source, 0, os.SEEK_CUR)

    def _count_often(self) -> None:
        while not self._done.wait(COUNT_EVERY):
            self.count()

    def finish(self, counted: bool = True) -> str | None:
        """Once the pipe's reading end is closed: wait for the process (it ends at its next write if not before),
        count what it read (unless ``counted`` is False), and say why the stream ended early, or None."""
        self._done.set()
        if self._counter.is_alive():
            self._counter.join()
        _, status = os.waitpid(self.pid, 0)
        said = b""
        with contextlib.suppress(OSError):
            said = os.read(self.status, MAX_DAMAGE_TEXT)
        if counted:
            self.count()
        for descriptor in (self.status, self.source):
            self._close(descriptor)
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            return None
        if code == DAMAGED and said:
            return one_line(said.decode("utf-8", "replace"))
        return f"expanding ended with status {code}" if code > 0 else f"expanding was ended by signal {-code}"

    @staticmethod
    def _close(descriptor: int) -> None:
        if descriptor >= 0:
            with contextlib.suppress(OSError):
                os.close(descriptor)


def _close_all_but(keep: set[int]) -> None:
    """Close every descriptor but ``keep`` (in the forked process: what the reading process held is not its)."""
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            with contextlib.suppress(OSError):
                os.close(int(name))
