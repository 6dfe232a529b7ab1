"""Terminal progress for long runs (rich), on stderr so stdout stays clean."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from videmo.naming import plural, printable
from videmo.runner import Reporter, VideoRun

console = Console(stderr=True)

#: Set by Ctrl-C. Python drops a KeyboardInterrupt that lands in a weakref callback or a
#: ``__del__`` ("Exception ignored in ..."), and the run would go on as if no key was pressed;
#: the reporter raises it again at its next call from the main loop.
INTERRUPTED = threading.Event()


#: The signal that stopped the run (SIGINT or SIGTERM): the exit status is 128 + it.
STOPPED_BY: list[int] = []


#: Set while the outcome of a finished run is written and listed: Ctrl-C then waits for it.
_HELD = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    if not INTERRUPTED.is_set():
        STOPPED_BY[:] = [signum]
    INTERRUPTED.set()
    if not _HELD.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C or SIGTERM during the block stops the run when the block is done.

    Once every video is finished, writing ``batch.csv`` and the report and listing the
    folders take a moment; an interrupt landing then listed nothing on stdout although
    every folder was complete. Also around each step of the listing while a batch runs: a
    Ctrl-C between marking a folder listed and queueing its line lost the line. Inside
    another such block it leaves the holding (and the raise) to the outer one.
    """
    if _HELD.is_set():
        yield
        return
    _HELD.set()
    try:
        yield
    finally:
        _HELD.clear()
    _raise_if_interrupted()


def _quiet_unraisable(unraisable: object) -> None:
    """Python prints "Exception ignored in ..." with a traceback for a KeyboardInterrupt that
    lands in a weakref callback or ``__del__``; INTERRUPTED raises it again in the run's own
    loop, so it is not the user's business."""
    if isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)  # type: ignore[arg-type]


def install_interrupt_handler() -> None:
    """Ctrl-C, and SIGTERM (``timeout``, ``kill``, a scheduler cancelling the job), stop the
    run the same way: what finished is listed on stdout and in ``batch.csv``, the rest is
    marked interrupted. Also when the first KeyboardInterrupt is swallowed. (Ray, started
    in this process, would install a SIGTERM handler of its own: ``RayExecutor`` keeps this
    one.)
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        sys.unraisablehook = _quiet_unraisable


def stop_signal() -> int:
    """The signal that stopped the run; SIGINT if none was seen (a KeyboardInterrupt)."""
    return STOPPED_BY[0] if STOPPED_BY else int(signal.SIGINT)


def _raise_if_interrupted() -> None:
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


class RichReporter(Reporter):
    """Progress on stderr: for one video a bar over its frames; for a batch a bar over its
    videos (their frames are known only as each is prepared, so a bar over frames sat near
    its end all along), with the frames analysed and their average rate beside it.

    When stderr is not a terminal (a log file, a scheduler) a bar cannot redraw in place:
    a plain line is written every ``LOG_EVERY_S`` seconds instead.
    """

    LOG_EVERY_S = 30.0

    def __init__(
        self,
        enabled: bool = True,
        inputs: int = 1,
        on_done: Callable[[dict[int, VideoRun]], None] | None = None,
    ) -> None:
        self.enabled = enabled
        self.inputs = inputs
        #: called with ``finished`` as work starts and after each finished video
        self.on_done = on_done
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.videos_total = 0
        self.videos_done = 0
        self.frames_done = 0
        self.started = time.monotonic()
        self._logged = self.started
        self.finished: dict[int, VideoRun] = {}  # by input position: what an interrupt keeps

    @property
    def batch(self) -> bool:
        return self.inputs > 1

    def start(self, total_frames: int, videos: int) -> None:
        self.videos_total += videos
        if self.on_done is not None:  # the work starts: a batch killed now says so too
            self.on_done(self.finished)
        if not self.enabled or not console.is_terminal:
            return
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
        if self.batch:  # a bar over videos; frames and their rate as text
            columns += [TextColumn("{task.fields[frames]}")]
        else:
            columns += [TextColumn("frames"), TextColumn("{task.fields[fps]}")]
        self.progress = Progress(
            *columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console,
            transient=False,
        )  # fmt: skip
        self.progress.start()
        self.task = self.progress.add_task(
            "videos" if self.batch else self._description(),
            total=self.videos_total if self.batch else total_frames,
            completed=self.videos_done if self.batch else 0,  # skipped or failed in preparing
            fps="",
            frames="",
        )

    def _description(self) -> str:
        return f"videos {self.videos_done}/{self.videos_total}"

    def _rate(self) -> str:
        """Frames analysed so far and their average rate since the start, in words."""
        seconds = max(time.monotonic() - self.started, 1e-9)
        return f"{self.frames_done:,} frames, {self.frames_done / seconds:,.0f} fps"

    def advance(self, frames: int) -> None:
        _raise_if_interrupted()
        self.frames_done += frames
        if self.on_done is not None:  # a finish held back by its time window is written now
            self.on_done(self.finished)
        self._log_line()
        if self.progress is None or self.task is None:
            return
        if self.batch:
            self.progress.update(self.task, frames=self._rate())
            return
        self.progress.advance(self.task, frames)
        speed = self.progress.tasks[0].speed
        self.progress.update(self.task, fps=f"{speed:6.1f} fps" if speed else "")

    def add_frames(self, frames: int) -> None:
        if self.progress is None or self.task is None or self.batch:
            return
        total = self.progress.tasks[0].total or 0
        self.progress.update(self.task, total=total + frames)

    def _log_line(self) -> None:
        """A plain progress line, when stderr is a file and the last one is old enough."""
        now = time.monotonic()
        if not self.enabled or console.is_terminal or now - self._logged < self.LOG_EVERY_S:
            return
        self._logged = now
        console.print(
            Text(f"videmo: {self.videos_done}/{self.videos_total} videos, {self._rate()}, "
                 f"{now - self.started:.0f} s"),
            highlight=False, soft_wrap=True,
        )  # fmt: skip

    def video_done(self, run: VideoRun) -> None:
        self.videos_done += 1
        self.finished[run.position] = run
        if run.status == "failed" and self.inputs > 1:  # a single input's error ends the run
            # file names and errors are text, never Rich markup (`clip [final].mp4`)
            where = printable(run.path)  # say which video, unless its error does
            said = run.error if where in run.error else f"{where}: {run.error}"
            console.print(Text.assemble(("failed: ", "red"), printable(said)), soft_wrap=True)
        elif run.damage and run.status != "failed" and self.inputs > 1:  # as for one input
            line = f"videmo: warning: {printable(run.path)}: {printable(run.error)}"
            console.print(Text(line, style="yellow"), soft_wrap=True, highlight=False)
        if self.progress is not None and self.task is not None:
            if self.batch:
                self.progress.update(self.task, completed=self.videos_done, frames=self._rate())
            else:
                self.progress.update(self.task, description=self._description())
        self._log_line()
        if self.on_done is not None:
            self.on_done(self.finished)
        _raise_if_interrupted()  # after recording it: the interrupted batch lists it finished

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def print_summary(runs: list[VideoRun], batch_csv: Path | None) -> None:
    """One row per video: status, frames, faces, seconds, where the outputs are."""
    if len(runs) == 1:
        run = runs[0]
        if run.status != "failed":
            console.print(
                Text(f"{run.status}: {run.out_dir}  ({plural(run.frames, 'frame')}, "
                     f"{plural(run.faces, 'face')}, {run.seconds:.1f} s)"),
                highlight=False, soft_wrap=True,
            )  # fmt: skip
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("video", "status", "frames", "faces", "seconds", "output"):
        table.add_column(
            column, justify="right" if column in ("frames", "faces", "seconds") else "left"
        )
    for run in runs:
        style = {"failed": "red", "damaged": "yellow", "skipped": "dim"}.get(run.status, "")
        table.add_row(
            Text(printable(run.path.name)), Text(run.status, style=style),
            str(run.frames), str(run.faces), f"{run.seconds:.1f}", Text(str(run.out_dir or "")),
        )  # fmt: skip
    console.print(table)
    if batch_csv is not None:
        console.print(Text(f"batch summary: {batch_csv}"), highlight=False)
