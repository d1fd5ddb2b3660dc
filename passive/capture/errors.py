"""How the capture layer reports that a capture cannot be read at all."""

from __future__ import annotations


class CaptureError(Exception):
    """A capture cannot be opened or read at all; ``str(error)`` is a one-line message."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (libpcap's messages may span several)."""
    text = str(exc).strip() or exc.__class__.__name__
    return " ".join(text.split())
