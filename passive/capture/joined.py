"""Several capture files read as one stream: the pieces of one ring buffer (:mod:`passive.capture.rings`).

One engine, one reassembler, one flow table for all of them: a session that the capture tool's file switch cut in
two is reassembled whole. Each file gets a new scanner, told which of the flows going on were found to be mail and
which not, and given the pieces of fragmented tunnel packets the previous one held
(:meth:`~passive.capture.engine.Engine.carry_over`). Frames are numbered on from file to file, as if the files had
been concatenated (``mergecap -a``): frame 1 of the second file is the first file's last frame plus one; the
stream's :class:`FileMap` turns such a number back into the file that holds the frame and its number there, as
Wireshark shows it in that file. Flows still open are closed once, after the last file (:meth:`JoinedStream.finish`).
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from pathlib import Path

from passive.capture.counters import SUPPRESSED, CaptureCounters
from passive.capture.engine import make_engine, read_into
from passive.capture.flow import HandlerFactory
from passive.capture.options import CaptureOptions
from passive.capture.stop import StopFlag


class FileMap:
    """The files of one stream in order, each with the number of frames before it: which file holds a frame of the
    stream's numbering, and the frame's number in that file."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._paths: list[str] = []

    def add(self, base: int, path: str) -> None:
        """``path`` follows the stream's first ``base`` frames (its first frame is ``base + 1``)."""
        self._bases.append(base)
        self._paths.append(path)

    def locate(self, frame: int) -> tuple[str, int] | None:
        """The file holding the stream's ``frame`` (1-based) and the frame's number in it; None before any file.
        A file that held no frame shares its base with the next, which holds the frame."""
        index = bisect_left(self._bases, frame) - 1
        if index < 0:
            return None
        return self._paths[index], frame - self._bases[index]


class JoinedStream:
    """Feed files one after another into one engine. :meth:`read` raises
    :class:`~passive.core.errors.CaptureError` for a file that cannot be read; the stream goes on with the next."""

    def __init__(
        self,
        handler_factory: HandlerFactory,
        options: CaptureOptions,
        counters: CaptureCounters,
        stop: StopFlag | None = None,
    ) -> None:
        self.options, self.counters = options, counters
        self.engine = make_engine(handler_factory, options, counters, stop)
        self._first_read = counters.packets_read
        self.files = FileMap()

    @property
    def frames(self) -> int:
        """Frames read so far: the number before the next file's first frame."""
        return self.counters.packets_read - self._first_read

    def read(self, path: str | Path) -> None:
        """Read on with ``path``. What its reader warns of (a piece cut mid-record: the file a capture tool was still
        writing) names the file, which a run of many files would otherwise leave to guess."""
        self.engine.frame_base = self.frames
        self.files.add(self.frames, str(path))
        warnings = self.counters.warnings
        before = len(warnings)
        try:
            read_into(self.engine, Path(path), self.options)
        finally:
            for index in range(before, len(warnings)):
                if warnings[index] != SUPPRESSED:
                    warnings[index] = f"{path}: {warnings[index]}"

    def finish(self) -> None:
        """Close the flows still open: the stream has ended."""
        self.engine.finish()


def counters_since(now: CaptureCounters, before: CaptureCounters) -> CaptureCounters:
    """What was counted between ``before`` (a copy taken earlier) and ``now``: one file's share of a stream's."""
    delta = CaptureCounters()
    for field in dataclasses.fields(CaptureCounters):
        name = field.name
        if name == "tunnelled":
            delta.tunnelled = {k: v - before.tunnelled.get(k, 0) for k, v in now.tunnelled.items()}
            delta.tunnelled = {k: v for k, v in delta.tunnelled.items() if v}
        elif name == "warnings":
            delta.warnings = list(now.warnings[len(before.warnings) :])
        else:
            setattr(delta, name, getattr(now, name) - getattr(before, name))
    return delta


def snapshot(counters: CaptureCounters) -> CaptureCounters:
    return dataclasses.replace(counters, tunnelled=dict(counters.tunnelled), warnings=list(counters.warnings))
