"""The cyclic garbage collector while a run allocates millions of short-lived objects."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# Allocations between two runs of the cyclic garbage collector's youngest generation while captures are analyzed
# (Python's default is 700). A run allocates millions of short-lived objects (packets, events, their evidence) and
# makes few cycles: at the default the collector ran 851 times on a 100 MB all-mail capture, 1.0 s of 7.7 s, and
# took 0.6 s of the 2.2 s the main process of --jobs 2 spends on an archive; at this, 0.2 s. Rendering 20 000
# records took twice as long at the default. Garbage in cycles waits at most this many allocations longer (a few MiB).
GC_THRESHOLD = 100_000


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector every :data:`GC_THRESHOLD` allocations meanwhile (worker processes forked
    meanwhile too; a Dask task sets it itself), then as before. ``analyze`` holds it from its analysis to its last
    output: the records are many small objects with few cycles, and with the default threshold between the two
    the first allocation had the collector walk the ~100 000 objects the analysis left young (6-10 ms)."""
    before = gc.get_threshold()
    gc.set_threshold(max(GC_THRESHOLD, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def leave_to_exit(*held: object) -> None:
    """A command's outputs are written: what it holds now stays until the process ends, which frees it. Kept out of
    the cyclic garbage collector's sight (``gc.freeze``), so that neither the collection that follows when the
    threshold is back at its default nor the interpreter's last one at exit walks millions of objects for nothing:
    after the workers of ``analyze --jobs 2`` ended on the 1 GB capture, 0.06 s of the main process's 0.29 s. Objects
    made later are collected as usual.

    ``held`` (the run's results and records) stays referenced to the end, and the process may then end without the
    interpreter's teardown (:func:`outputs_left_to_exit`; the command line ends it so): freeing the run's objects one
    by one as the command's frames unwind and the interpreter clears its modules took 0.045 to 0.085 s after the last
    output of ``analyze --jobs 2`` on the 20-capture archive.

    Only in a process that ends with the command (:func:`command_ends_process`): a program that runs the command
    in itself and goes on (click's runner, an embedding caller) keeps its collector as it was, or every cycle it
    held then and drops later would never be freed."""
    global _held
    if _ends_with_command:
        gc.freeze()
        _held = [*(_held or ()), *held]


def outputs_left_to_exit() -> bool:
    """Whether the command said its outputs are written (:func:`leave_to_exit`) in a process that ends with it:
    nothing it holds needs the interpreter's teardown (every file it wrote is closed)."""
    return _held is not None


# Whether this process ends once its command is done (its own command line, ``leakscope ...``).
_ends_with_command = False
_held: list[object] | None = None  # what leave_to_exit keeps referenced until the process ends


def command_ends_process() -> None:
    """Say that this process ends with the command it runs: :func:`leave_to_exit` may then freeze what it holds."""
    global _ends_with_command
    _ends_with_command = True
