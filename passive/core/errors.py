"""The application's errors: one base, a subclass per kind of failure. Each carries a one-line message for the
user; the command line maps the kinds to exit statuses in one place (``passive/cli/errors.py``)."""

from __future__ import annotations


class LeakscopeError(Exception):
    """A failure the user can act on; ``str(error)`` is one line."""


class InputError(LeakscopeError):
    """An input cannot be read or is not what it claims: a capture, a findings file, a store, an nmap file."""


class UsageError(LeakscopeError):
    """An argument is wrong: a BPF expression, a probe target, a time, an option value."""


class OutputError(LeakscopeError):
    """An output cannot be written (permissions, full disk, a directory in the way)."""


class CaptureError(InputError):
    """A capture cannot be opened or read at all (damage inside one is a warning, not this)."""


class StoreError(InputError):
    """The findings store cannot be opened, read or written."""


class ProbeError(LeakscopeError):
    """Why a service could not be probed (further); ``stage`` says where it happened."""

    def __init__(self, reason: str, stage: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage


def one_line(error: BaseException) -> str:
    """An exception's message on one line, or its class name when it has none."""
    text = str(error).strip() or error.__class__.__name__
    return " ".join(text.split())
