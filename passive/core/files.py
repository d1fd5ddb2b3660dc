"""Every file leakscope writes, written one way: readable by its owner alone, complete or not at all.

Reports, findings, hash lines and stores can hold user names, host names, password hashes and (with
``--show-secrets``/``--no-redact``) passwords, so each file leakscope creates gets mode 0600.

:func:`write_atomically` writes a temporary file beside the target and renames it over the target, so a full disk
or an interrupted run leaves the previous file as it was. It never writes through a symbolic link: a link at the
target is replaced by the new file (the file it pointed to is left untouched), as ``mv`` would. What is not a
regular file is written in place instead: a character device (``/dev/null``), a FIFO or socket, and the names of
open file descriptors (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``), which are written
through the descriptor itself, so ``-o /dev/stdout >> log`` appends as the shell set it up.

Every failure is an :class:`OutputError` with a one-line message. Content is text, bytes, or an iterable of byte
chunks written as they come (a large output never held whole).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterable
from typing import IO

from passive.core.errors import OutputError

# Content: text, bytes, or byte chunks produced as they are written.
Content = str | bytes | Iterable[bytes]
PRIVATE_MODE = 0o600
_SHARED_MODE = 0o666  # less the umask, for files that hold nothing private
# Names of file descriptors this process already holds: written through the descriptor, never replaced.
_DESCRIPTOR = re.compile(r"^/(?:dev/fd/(\d+)|proc/(?:self|thread-self)/fd/(\d+)|dev/(stdout|stderr))$")
_STANDARD = {"stdout": 1, "stderr": 2}


def regular_file_size(path: str) -> int | None:
    """A regular file's size; None for a pipe, a FIFO, a device, or what cannot be looked at."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def _regular_identity(path: str, follow: bool) -> tuple[int, int] | None:
    """(device, inode) of the regular file at ``path`` (its link's target when ``follow``); None for anything else
    (a device, a FIFO, a directory, a link when not followed, what does not exist or cannot be looked at)."""
    try:
        status = os.stat(path) if follow else os.lstat(path)
    except (OSError, ValueError):
        return None
    return (status.st_dev, status.st_ino) if stat.S_ISREG(status.st_mode) else None


def output_name(path: str) -> str:
    """The name :func:`write_atomically` replaces: its directory resolved (links in it followed), the last part
    as given (a link there is replaced, not written through)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(directory), name)


def clashes(output: str, other: str, other_is_output: bool) -> bool:
    """Would writing ``output`` replace ``other``: the file a run reads (``other_is_output`` False: a capture, a
    findings file, a store, however named, hard links included) or the name another output writes?"""
    try:
        if _descriptor_of(output) is not None or _written_in_place(output):
            return False  # /dev/stdout, /dev/null, a FIFO: written in place, nothing replaced
    except (OutputError, ValueError):
        return False  # a directory, a name that cannot be looked at: the write says so
    target = _regular_identity(output_name(output), follow=False)
    if other_is_output:
        return output_name(output) == output_name(other) or (
            target is not None and target == _regular_identity(output_name(other), follow=False)
        )
    return target is not None and target == _regular_identity(other, follow=True)


def encoded(data: str | bytes) -> bytes:
    """Text as leakscope writes it: UTF-8, with anything that cannot be encoded (a lone surrogate from a file name
    that is not UTF-8) as a backslash escape."""
    return data if isinstance(data, bytes) else data.encode("utf-8", "backslashreplace")


def chunks_of(data: Content) -> Iterable[bytes]:
    """``data`` as byte chunks to write one after the other."""
    return (encoded(data),) if isinstance(data, str | bytes) else data


def write_atomically(path: str, data: Content, private: bool = True) -> None:
    """``data`` as the whole content of ``path`` (mode 0600 when ``private``); see the module's documentation."""
    payload = chunks_of(data)
    descriptor = _descriptor_of(path)
    if descriptor is not None:
        _flush_standard(descriptor)
        write_descriptor(descriptor, payload, path)
        return
    if _written_in_place(path):
        _write_in_place(path, payload)
        return
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".leakscope-{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        handle = os.open(temporary, flags, PRIVATE_MODE if private else _SHARED_MODE)
    except OSError as error:
        raise _failed(path, error) from None
    try:
        try:
            _write_all(handle, payload)
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temporary, path)
    except OSError as error:
        _remove(temporary)
        raise _failed(path, error) from None
    except BaseException:
        _remove(temporary)
        raise


def open_private_append(path: str) -> IO[str]:
    """A text stream appending to ``path``, created with mode 0600 if missing; a symbolic link is not followed
    (an error), the names of open descriptors write through them."""
    descriptor = _descriptor_of(path)
    try:
        if descriptor is not None:
            handle = os.dup(descriptor)
        else:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            handle = os.open(path, flags, PRIVATE_MODE)
    except OSError as error:
        raise _failed(path, error) from None
    return open(handle, "a", encoding="utf-8", errors="backslashreplace")


def write_descriptor(descriptor: int, data: Content, name: str) -> None:
    """All of ``data`` to an open descriptor (standard output, say); a failure is an :class:`OutputError`."""
    try:
        _write_all(descriptor, chunks_of(data))
    except OSError as error:
        raise _failed(name, error) from None


def _flush_standard(descriptor: int) -> None:
    """What Python buffered for standard output or error goes out before what is written to their descriptor."""
    stream = {1: sys.stdout, 2: sys.stderr}.get(descriptor)
    if stream is not None:
        try:
            stream.flush()
        except OSError as error:
            raise _failed(f"/dev/fd/{descriptor}", error) from None


def _write_all(handle: int, payload: Iterable[bytes]) -> None:
    for chunk in payload:
        view = memoryview(chunk)
        while view:
            written = os.write(handle, view)
            view = view[written:]


def _descriptor_of(path: str) -> int | None:
    match = _DESCRIPTOR.match(os.path.abspath(path))
    if match is None:
        return None
    number, proc_number, standard = match.groups()
    return _STANDARD[standard] if standard else int(number or proc_number)


def _written_in_place(path: str) -> bool:
    """True for what exists and is neither a regular file nor a symbolic link (devices, FIFOs, sockets)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as error:
        raise _failed(path, error) from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"cannot write {path}: is a directory")
    return not (stat.S_ISREG(mode) or stat.S_ISLNK(mode))


def _write_in_place(path: str, payload: Iterable[bytes]) -> None:
    try:
        handle = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise _failed(path, error) from None
    try:
        try:
            _write_all(handle, payload)
        finally:
            os.close(handle)
    except OSError as error:
        raise _failed(path, error) from None


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _failed(path: str, error: OSError) -> OutputError:
    if error.errno == errno.ELOOP:  # O_NOFOLLOW met a link
        return OutputError(f"cannot write {path}: a symbolic link, which leakscope does not write through")
    return OutputError(f"cannot write {path}: {error.strerror or error}")
