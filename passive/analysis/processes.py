"""The worker processes of ``--jobs`` as the platform makes them: how they start, and how they end with the main
process.

multiprocessing is imported when workers start (:func:`processes`), not with the analysis: a run in one process
never loads it (13 M instructions, 2% of a one-packet ``analyze``). ctypes loads in the worker itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def processes() -> Any:
    """The multiprocessing context workers start from: forked where the platform can, else spawned."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def end_with_parent() -> None:
    """Have the kernel end this worker when the main process ends (a second Ctrl-C ends it at once, without
    cleanup): an orphaned worker would hold the terminal's pipes open and, blocked on a full pipe, never notice.
    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere the worker ends at its next write to the closed pipe."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the main process ended before the request was made
            os._exit(1)
