"""The process's standard streams at the edges: closed, full or unwanted descriptors."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, TextIO


def point_at_devnull(fd: int) -> None:
    """Make descriptor ``fd`` write to /dev/null (it stays open, so nothing else takes it)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    if devnull != fd:
        os.dup2(devnull, fd)
        os.close(devnull)


def flush_std_streams() -> None:
    """Flush stdout and stderr where they exist and can still be written (``>&-``, a full
    disk or a reader gone must not turn an exit into a traceback)."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()


class StderrThatOutlivesItsReader:
    """``sys.stderr`` for a reader that may go away (``videmo run ... 2>&1 | head -1``): the
    work goes on, and the rest of the chatter goes to /dev/null instead of a BrokenPipeError
    ending the batch wherever it printed next."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        point_at_devnull(self._stream.fileno())  # the buffered rest is flushed there

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding... of the stream
        return getattr(self._stream, name)
