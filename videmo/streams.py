"""The process's standard streams at the edges: closed, full or unwanted descriptors."""

from __future__ import annotations

import contextlib
import os
import sys


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
