"""Run videos end to end: plan, execute chunks, reduce, write outputs.

For each input it probes the file, plans frame chunks, hands them to an
executor (serial or Ray), and as soon as all chunks of a video are back it
tracks, smooths and writes that video's outputs (in the driver, or on a Ray
worker for a batch). Every file is written atomically and ``run.json`` is
written last: it is the completion marker (see ``videmo.resume``), so a rerun
skips finished videos and redoes failed or partial ones. Which files are
inputs is ``videmo.inputs``'s business. One bad video never stops the others.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from videmo.damage import damage_line, damage_summary
from videmo.detections import SmallFaces
from videmo.errors import OutputError, VidemoError, VideoError, one_line
from videmo.models import EMOTION_FILE, model_path, sha256_file
from videmo.naming import (
    claim_output_dir,
    lock_output_dir,
    own_output_dir,
    printable,
    release_output_dir,
    unlock_output_dir,
)
from videmo.outputs.atomic import ensure_dir
from videmo.outputs.batch import remove_batch_summary, summary_lists
from videmo.parallel import (
    ChunkTask,
    FinishTask,
    PrepareTask,
    RayExecutor,
    SerialExecutor,
    frame_times,
    merge,
    note,
    plan_chunks,
)
from videmo.pipeline import ChunkResult, reduce_detections
from videmo.resume import (
    RUN_JSON,
    existing_state,
    previous_counts,
    previous_damage,
    previous_small_faces,
    redo_reason,
    remove_old_outputs,
    remove_temp_files,
    run_fingerprint,
    what_differs,
)
from videmo.settings import Settings
from videmo.video import PacketIndex, VideoInfo, index_packets, probe

#: Inputs shorter than this in total run in-process: starting Ray costs seconds.
SERIAL_BELOW_S = 30.0
#: The same on a machine with two CPUs or fewer, where the in-process path already keeps both
#: busy (decoding runs in its own thread): measured, 2 Ray workers there lose to it on a 30 s
#: 1080p video (16.2 s against 13.4 s) and win by only 9 % on a 2-minute one.
SERIAL_BELOW_S_FEW_CPUS = 120.0


def serial_below_s(cpus: int | None = None) -> float:
    """How much video (seconds, all inputs together) runs in-process unless --workers says."""
    cpus = os.cpu_count() if cpus is None else cpus
    return SERIAL_BELOW_S_FEW_CPUS if (cpus or 1) <= 2 else SERIAL_BELOW_S


@dataclass
class VideoRun:
    """State and outcome of one input video."""

    position: int
    path: Path
    out_dir: Path | None  # None until claimed (see videmo.naming)
    status: str = "pending"  # pending, running, done, skipped, failed
    error: str = ""
    error_type: type[VidemoError] = VidemoError  # of a failure, so the API raises its kind
    info: VideoInfo | None = None
    index: PacketIndex | None = None
    chunks: list[tuple[int, int]] = field(default_factory=list)
    results: list[ChunkResult] = field(default_factory=list)
    timeline: pd.DataFrame | None = None
    frames: int = 0
    faces: int = 0
    damage: dict | None = None  # see damage_summary; None for an intact video
    small_faces: SmallFaces = field(default_factory=SmallFaces)  # left out as under --min-face
    redone: str = ""  # why a finished folder is made again (resume.redo_reason, --overwrite)
    seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    timed: bool = False  # started has been set to when its first chunk began
    # seconds from its first chunk to its last, measured on the driver's clock (a worker on
    # another node that writes run.json has a clock of its own)
    analysis_s: float = 0.0

    @property
    def expected_frames(self) -> int:
        return len(self.index) if self.index is not None else 0


class Reporter:
    """Progress callbacks; the CLI shows a progress bar, the API stays silent."""

    def start(self, total_frames: int, videos: int) -> None: ...

    def advance(self, frames: int) -> None: ...

    def add_frames(self, frames: int) -> None:
        """More work: a video prepared after ``start`` adds its frames to the total."""

    def video_done(self, run: VideoRun) -> None: ...

    def close(self) -> None: ...


def _check_existing(run: VideoRun, settings: Settings, fingerprint: dict) -> None:
    """Skip an input whose folder already holds this run's outputs; refuse another's."""
    state = existing_state(run.out_dir, fingerprint, settings)
    if state == "complete":  # --overwrite replaces other runs' outputs, never this one's
        damage = previous_damage(run.out_dir)
        if damage:  # the summary says so again: a rerun must not hide it
            try:
                line = damage_line(damage)
            except (KeyError, TypeError, ValueError):  # written by another videmo version
                line = f"damaged (see {run.out_dir / RUN_JSON})"
            if settings.strict:
                raise VideoError(f"{run.path}: {line} (--strict; found by an earlier run)")
            run.damage, run.error = damage, line
        run.status = "skipped"
        run.frames, run.faces = previous_counts(run.out_dir)
        run.small_faces = previous_small_faces(run.out_dir)
        return
    if state == "absent":  # a finished folder that lost an output is made again: say why
        run.redone = redo_reason(run.out_dir, fingerprint, settings)
    if state == "different":
        what = what_differs(run.out_dir, fingerprint, settings)
        if not settings.overwrite:
            raise OutputError(
                f"{run.out_dir} holds the outputs of {what}; "
                "use --overwrite (overwrite=True in Python) to replace them"
            )
        run.redone = f"--overwrite replaced the outputs of {what}"


def check_and_plan(
    run: VideoRun, settings: Settings, model_sha: str
) -> tuple[VideoRun, dict | None]:
    """Fingerprint an input, check its folder for earlier outputs, then probe and plan it.

    Runs in the driver, or on a Ray worker for a batch (``PrepareTask``): the fingerprint
    reads the file's first and last MiB, I/O that should not queue up in one process for
    thousands of inputs. Never raises. Returns the run (``skipped`` if its outputs are
    already there, ``failed`` with a one-line reason) and its fingerprint (None if the
    file could not be read).
    """
    try:
        fingerprint = run_fingerprint(run.path, settings, model_sha)
        _check_existing(run, settings, fingerprint)
    except (VidemoError, OSError) as exc:  # unreadable input, unusable folder: this video
        _fail(run, _video_error(run, exc))
        return run, None
    if run.status == "pending":
        probe_and_plan(run, settings)
    return run, fingerprint


def probe_and_plan(run: VideoRun, settings: Settings) -> VideoRun:
    """Probe and index one input, plan its chunks, and clear older outputs from its folder.

    Runs in the driver, or on a Ray worker for a batch (``PrepareTask``): reading a file's
    packets is I/O that should not queue up in one process. Never raises: a bad input
    fails this video only, with a one-line reason. Earlier outputs in the video's folder
    are left alone until new ones are ready to be written (``finish_video``).
    """
    try:
        run.info = probe(run.path)
        run.index = index_packets(run.path)
        run.chunks = plan_chunks(run.index, run.index.times_s(run.info), settings.chunk_s)
    except (VidemoError, OSError) as exc:
        _fail(run, _video_error(run, exc))
    return run


def _video_error(run: VideoRun, exc: VidemoError | OSError) -> VidemoError:
    """The one-line error of one video (an OS error names the file or folder at fault: the
    input itself, a ``VideoError``, or its output folder, an ``OutputError``)."""
    if isinstance(exc, VidemoError):
        return exc
    where = exc.filename if exc.filename is not None else run.path
    kind = VideoError if Path(where) == Path(run.path) else OutputError
    return kind(f"{printable(where)}: {exc.strerror or exc}")


def _fail(run: VideoRun, exc: BaseException) -> None:
    run.status = "failed"
    run.error = one_line(exc)
    if isinstance(exc, VidemoError):
        run.error_type = type(exc)
    elif printable(run.path) not in run.error:  # a fault of ours: say which video met it
        run.error = f"{printable(run.path)}: {run.error}"
    run.results = []
    if run.out_dir is not None:
        release_output_dir(run.out_dir, run.path)
        if not run.out_dir.exists():  # given back: batch.csv names no folder for it
            run.out_dir = None


def _give_back(runs: list[VideoRun], reporter: _Unlocking) -> None:
    """The run stops before any work started: let go of the folders held so far, and give
    back the names claimed for videos that have nothing written yet."""
    reporter.close()
    for run in runs:
        if run.out_dir is not None and run.status == "pending":
            release_output_dir(run.out_dir, run.path)


def ray_address(settings: Settings) -> str | None:
    """The Ray cluster to join: ``--address``, else ``$RAY_ADDRESS``, else none (local Ray)."""
    return settings.address or os.environ.get("RAY_ADDRESS") or None


def choose_executor(
    settings: Settings, runs: list[VideoRun], unread: int = 0
) -> SerialExecutor | RayExecutor:
    """Serial for --workers 0 and for short work; otherwise a Ray actor pool.

    ``runs`` are the inputs prepared so far; ``unread`` more follow (a chunk or more each).
    """
    address = ray_address(settings)
    chunks = sum(len(r.chunks) for r in runs)
    workers = settings.workers
    if workers is None and not address and (chunks <= 1 or _duration(runs) < serial_below_s()):
        workers = 0
    if workers == 0:
        if settings.classify_stage == "on":
            note("--classify-stage on: a Ray-only stage; this run is in-process")
        if address and settings.workers == 0:
            note(f"--workers 0 runs in this process; the Ray cluster {address} is not used")
        return SerialExecutor(settings)
    return RayExecutor(settings, workers, address, max_useful=chunks + unread)


def check_output_root(out_root: Path) -> None:
    """Refuse an output root that is (or lies under) a file before any work is done."""
    if out_root.exists() and not out_root.is_dir():
        raise OutputError(f"output root {out_root} exists and is not a folder")
    for parent in out_root.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"output root {out_root}: {parent} is not a folder")
            break


def check_model_and_device(settings: Settings) -> None:
    """Load the emotion model once before any input is touched; raise its one-line error.

    A file that is not a videmo ONNX model, or ``--device gpu`` where this machine has no
    usable GPU, then fails the run before anything is read or written (and before
    finished videos are skipped, which would hide the error). On a Ray cluster the GPU is
    the workers' business, so ``--device gpu`` is checked there instead.
    """
    from videmo.emotion import EmotionModel

    device = "gpu" if settings.device == "gpu" and not ray_address(settings) else "cpu"
    EmotionModel(settings.model, device, batch_size=1, threads=1)


def run_videos(
    paths: list[Path],
    out_root: Path,
    settings: Settings,
    reporter: Reporter | None = None,
    finish: Callable[[VideoRun, Settings, dict], None] | None = None,
    out_dirs: list[Path] | None = None,
    keep_timelines: bool = True,
) -> list[VideoRun]:
    """Analyse every input and write its outputs; never raises for one bad video.

    Each video's folder is ``out_root/<name>`` unless ``out_dirs`` names them;
    ``finish`` (default: write all outputs) runs once a video's timeline is ready.
    Without ``keep_timelines`` a video's timeline and packet index are dropped once it is
    finished (the CLI: a batch of thousands must not fill the driver's memory).
    """
    on_cluster = bool(ray_address(settings))
    as_given = _AsGiven(paths, out_root, out_dirs, active=on_cluster)
    if on_cluster:
        # A cluster's workers run in folders of their own: a relative path would name a
        # file (or an output folder) there, not here.
        paths, out_root = [p.absolute() for p in paths], out_root.absolute()
        out_dirs = [d.absolute() for d in out_dirs] if out_dirs else None
        if settings.model and Path(settings.model).is_file():  # not a shipped model's name
            settings = replace(settings, model=str(Path(settings.model).absolute()))
    check_output_root(out_root)
    check_model_and_device(settings)
    given = out_dirs or [None] * len(paths)
    runs = [VideoRun(i, p, d) for i, (p, d) in enumerate(zip(paths, given, strict=True))]
    batch = _Batch(runs, out_root, settings, _Unlocking(reporter or Reporter()))
    batch.run(finish, keep_timelines)
    return as_given(runs)


class _Batch:
    """One call of :func:`run_videos`: its inputs, their preparation, and the dispatch loop.

    Inputs are prepared in order, and only as far as needed: here until there is enough
    work to choose the executor, later as workers ask for more tasks (on Ray, the workers
    probe and index them). A batch of thousands starts at once, and the driver holds a
    few indexes at a time. Chunks go to the executor; a video whose chunks are all back
    is finished (tracked, smoothed, written) here or, in a batch on Ray, on a worker.
    """

    def __init__(
        self, runs: list[VideoRun], out_root: Path, settings: Settings, reporter: _Unlocking
    ) -> None:
        self.runs, self.out_root, self.settings, self.reporter = runs, out_root, settings, reporter
        self.model_sha = sha256_file(model_path(settings.model or EMOTION_FILE))
        self.fingerprints: dict[int, dict] = {}
        self.upcoming = iter(runs)  # not prepared yet
        self.ready: list[VideoRun] = []  # prepared before the executor was chosen
        self.queued: list[ChunkTask | FinishTask] = []  # ready to hand out before anything new
        self.complete_here = True  # finish videos in this process (else on the workers)
        self.probe_on_workers = False
        self.keep_timelines = True
        self.finish: Callable[[VideoRun, Settings, dict], None] | None = None
        self.context: dict = {}

    def run(
        self, finish: Callable[[VideoRun, Settings, dict], None] | None, keep_timelines: bool
    ) -> None:
        """Prepare, choose the executor, dispatch; every video ends done, skipped or failed."""
        from videmo.outputs.writer import write_video_outputs

        try:
            prepared = self._prepare_until_settled()
            if not self.ready:
                self.reporter.close()
                return
            executor = choose_executor(self.settings, self.ready, unread=len(self.runs) - prepared)
        except BaseException:  # Ctrl-C, no cluster at --address: nothing was written
            _give_back(self.runs, self.reporter)
            raise
        self.finish, self.keep_timelines = finish or write_video_outputs, keep_timelines
        self.context = {
            "executor": executor.name,
            "workers": executor.workers,
            "provider": executor.provider,
            "classify_stage": bool(getattr(executor, "classifiers", None)),
            "annotate": executor.annotate,  # the annotated video, drawn by its workers
            "single": len(self.runs) == 1,  # no batch summary of its own; one may list it
        }
        # A batch on Ray tracks and writes each video on a worker, so the driver only
        # dispatches. One video is finished here instead, where its annotated video can be
        # cut into segments for all workers; so are runs whose caller wants the timeline.
        self.complete_here = not (
            isinstance(executor, RayExecutor) and len(self.runs) > 1 and finish is None
            and not keep_timelines
        )  # fmt: skip
        # Later inputs of a batch on Ray are fingerprinted, resume-checked, probed and
        # indexed on the workers as well; the driver only names them.
        self.probe_on_workers = isinstance(executor, RayExecutor)
        self._dispatch(executor)

    def _prepare_until_settled(self) -> int:
        """Prepare inputs until the work so far settles the executor; how many were."""
        prepared = 0
        for run in self.upcoming:
            self._prepare(run)
            prepared += 1
            if run.status == "pending":
                self.ready.append(run)
                if _executor_settled(self.settings, self.ready):
                    break
        return prepared

    def _prepare(self, run: VideoRun, here: bool = True) -> None:
        """Name one input; fingerprint, resume-check and probe it here unless a worker will."""
        locks = self.reporter.locks
        try:
            if not run.path.is_file():
                probe(run.path)  # raises the one-line "no such file" / "not a file" error
            if run.out_dir is None:
                folder = claim_output_dir(self.out_root, run.path)
                # named only once held: a folder another run holds is not given back below
                locks[run.position] = lock_output_dir(folder)
                run.out_dir = folder
            else:  # a folder the caller named (analyze's out_dir) is held the same way
                folder, run.out_dir = run.out_dir, None  # another's until held: kept below
                locks[run.position] = lock_output_dir(ensure_dir(folder))
                run.out_dir = folder
        except (VidemoError, OSError) as exc:  # unreadable input, unusable folder: this video
            _fail(run, _video_error(run, exc))
        if run.status == "pending" and here:
            _, self.fingerprints[run.position] = check_and_plan(run, self.settings, self.model_sha)
        if run.status in ("skipped", "failed"):
            self.reporter.video_done(run)

    def _done(self, run: VideoRun) -> None:
        run.seconds = time.perf_counter() - run.started
        run.results = []
        if not self.keep_timelines:  # written: the driver's memory must not grow with it
            run.timeline, run.index = None, None
        self.reporter.video_done(run)

    def _complete(self, run: VideoRun) -> None:
        """All of ``run``'s chunks are back: finish it here, or queue it for a worker."""
        run.analysis_s = time.perf_counter() - run.started
        ctx = {**self.context, "fingerprint": self.fingerprints[run.position]}
        if not self.complete_here:
            ctx["annotate"] = None  # a worker renders the annotated video itself
            self.queued.append(FinishTask(run.position, run, self.settings, ctx))
            return
        assert self.finish is not None
        finish_video(run, self.settings, self.finish, ctx)
        self._done(run)

    def _tasks(self) -> Iterator[ChunkTask | FinishTask | PrepareTask | None]:
        """What the executor runs, in order, as it has room for more."""
        for run in self.ready:
            yield from self._queued_now()
            yield from _chunk_tasks(run, self._complete)
        for run in self.upcoming:
            yield from self._queued_now()
            self._prepare(run, here=not self.probe_on_workers)
            if run.status != "pending":
                continue
            if self.probe_on_workers:
                yield PrepareTask(run.position, run, self.settings, self.model_sha)
                continue
            self.reporter.add_frames(run.expected_frames)
            yield from _chunk_tasks(run, self._complete)
        while self.probe_on_workers:  # chunks and finishing follow the workers' results
            yield from self._queued_now()
            yield None  # nothing to hand out now (the executor asks again after a result)

    def _queued_now(self) -> Iterator[ChunkTask | FinishTask]:
        while self.queued:
            task = self.queued.pop(0)
            if isinstance(task, ChunkTask) and self.runs[task.video].status == "failed":
                continue  # its video failed (a chunk timed out): the rest would only cost time
            yield task

    def _prepared(self, run: VideoRun, outcome: PrepareOutcome | BaseException) -> None:
        """A worker probed and indexed ``run``: queue its chunks (or fail it)."""
        if isinstance(outcome, BaseException):
            _fail(run, outcome)
        else:
            fields, self.fingerprints[run.position] = outcome
            take_outcome(run, fields)
        if run.status != "pending":
            self.reporter.video_done(run)
            return
        self.reporter.add_frames(run.expected_frames)
        self.queued.extend(_chunk_tasks(run, self._complete))

    def _dispatch(self, executor: SerialExecutor | RayExecutor) -> None:
        """Hand out tasks and take their results until every video has ended."""
        runs, reporter = self.runs, self.reporter
        try:
            # videos: all inputs, as skipped and failed ones were already counted done (the
            # start may raise an interrupt held back: the executor is closed below all the same)
            reporter.start(sum(r.expected_frames for r in self.ready), len(runs))
            progress = lambda task, n: reporter.advance(n)  # noqa: E731
            free_since = time.perf_counter()  # when the executor last handed back a chunk
            for task, result in executor.run(self._tasks(), lambda v: runs[v].index, progress):
                run = runs[task.video]
                if isinstance(task, PrepareTask):
                    self._prepared(run, result)
                    continue
                if isinstance(task, FinishTask):
                    _finished_on_worker(run, result)
                    self._done(run)
                    continue
                if not run.results and not run.timed:
                    # A video's time starts when its first chunk could start, not with the
                    # batch (exact when serial; with Ray, videos overlap: an estimate).
                    run.started, run.timed = free_since, True
                _collect(run, result, self._complete, reporter)
                free_since = time.perf_counter()
        except BaseException:  # Ctrl-C, SIGTERM, a lost cluster: say what did finish
            executor.close()  # first: no worker of this run may publish a folder after that
            _record_published(runs, self.fingerprints, self.settings, reporter)
            raise
        finally:
            executor.close()
            reporter.close()


def _record_published(
    runs: list[VideoRun], fingerprints: dict[int, dict], settings: Settings, reporter: _Unlocking
) -> None:
    """Record as finished the videos whose outputs were published as the run was stopped.

    A Ctrl-C that lands between a video's ``run.json`` and its being recorded (here, or on a
    Ray worker whose answer never arrived) would list a complete folder as interrupted.
    A pending video's folder passed the resume check, so a complete folder holding this very
    run (fingerprint and output sizes) can only have been written by this run.
    """
    for run in runs:
        fingerprint = fingerprints.get(run.position)
        unrecorded = run.status in ("pending", "done", "damaged") and (
            run.position not in reporter.recorded
        )
        if not unrecorded or run.out_dir is None or fingerprint is None:
            continue
        try:
            if existing_state(run.out_dir, fingerprint, settings) != "complete":
                continue
            run.frames, run.faces = previous_counts(run.out_dir)
            run.damage = previous_damage(run.out_dir)
            run.error = damage_line(run.damage) if run.damage else ""
        except (OSError, ValueError, KeyError, TypeError):  # unreadable: leave it interrupted
            continue
        run.status = "damaged" if run.damage else "done"
        run.seconds = time.perf_counter() - run.started
        with contextlib.suppress(KeyboardInterrupt):  # the reporter raises a pending one
            reporter.video_done(run)  # again after recording: the others still get a look


class _AsGiven:
    """Put back the paths as the caller wrote them (relative ones were made absolute for a
    cluster's workers), so stdout and batch.csv read the same with or without --address."""

    def __init__(
        self, paths: list[Path], out_root: Path, out_dirs: list[Path] | None, active: bool
    ) -> None:
        self.paths, self.out_root, self.out_dirs = list(paths), Path(out_root), out_dirs
        self.active = active

    def __call__(self, runs: list[VideoRun]) -> list[VideoRun]:
        if not self.active:
            return runs
        root = self.out_root.absolute()
        for run in runs:
            run.path = self.paths[run.position]
            if self.out_dirs:
                run.out_dir = Path(self.out_dirs[run.position])
            elif (
                run.out_dir is not None
                and not self.out_root.is_absolute()
                and run.out_dir.is_relative_to(root)
            ):
                run.out_dir = self.out_root / run.out_dir.relative_to(root)
        return runs


def run_as_given(run: VideoRun, paths: list[Path], out_root: Path) -> VideoRun:
    """A copy of a finished run with its paths as the caller wrote them (see ``_AsGiven``):
    what stdout lists while a batch runs, as batch.csv and the final listing do."""
    return _AsGiven(paths, out_root, None, active=True)([replace(run)])[0]


def finish_video(
    run: VideoRun, settings: Settings, finish: Callable[[VideoRun, Settings, dict], None],
    context: dict,
) -> VideoRun:  # fmt: skip
    """Merge a video's chunks, track and smooth its faces, and write its outputs.

    Runs in the driver, or on a Ray worker for a batch (``FinishTask``); either way the
    same code writes the same bytes. The outcome is recorded in ``run`` (never raises).
    """
    try:
        dets, run.frames = merge(run.results)
        run.small_faces = SmallFaces.merged(r.small_faces for r in run.results)
        run.damage = damage_summary(run.info, run.index, run.results)
        if run.damage and settings.strict:
            raise VideoError(f"{run.path}: {damage_line(run.damage)} (--strict)")
        run.timeline = reduce_detections(dets, settings, *frame_times(run.results))
        run.faces = int(run.timeline["face_id"].nunique())
        clear_previous_outputs(run.out_dir, single=context.get("single", False))
        own_output_dir(run.out_dir, run.path)
        finish(run, settings, context)
        run.status = "damaged" if run.damage else "done"
        run.error = damage_line(run.damage) if run.damage else ""
    except Exception as exc:  # noqa: BLE001 - the batch goes on
        _fail(run, exc)
    return run


def clear_previous_outputs(out_dir: Path | None, single: bool = False) -> None:
    """Remove an earlier run's outputs from ``out_dir``: the folder is partial from here on.

    Called only once the new outputs are ready to be written, so a run that fails or is
    interrupted before that (a bad ``--model``, a damaged input, Ctrl-C) leaves the earlier
    complete outputs as they were, ``run.json`` included. A ``single``-video run also
    removes an earlier batch's summary that lists this folder: it would describe outputs
    that are gone. (A batch removed the earlier summary when it started.)
    """
    if out_dir is not None and out_dir.is_dir():
        if single and summary_lists(out_dir.parent, out_dir.name):
            remove_batch_summary(out_dir.parent)  # first: if it cannot be, nothing is lost
            note(
                f"note: the batch summary in {out_dir.parent} (batch.csv, report.html) listed "
                f"{out_dir.name}, which is made again: it was removed, as it no longer matches"
            )
        (out_dir / RUN_JSON).unlink(missing_ok=True)
        remove_temp_files(out_dir)
        remove_old_outputs(out_dir)


def _finished_on_worker(run: VideoRun, outcome: FinishOutcome | BaseException) -> None:
    """Record what a worker's ``finish_video`` reported for ``run``."""
    if isinstance(outcome, BaseException):
        _fail(run, outcome)
        return
    take_outcome(run, outcome)


#: The VideoRun fields a worker's ``check_and_plan`` sets, sent back to the driver's record
#: (frames, faces, damage and small faces are a skipped run's, read from its folder).
PREPARED_FIELDS = (
    "status", "error", "info", "index", "chunks", "frames", "faces", "damage", "small_faces",
    "redone",
)  # fmt: skip
#: The VideoRun fields a worker's ``finish_video`` sets.
FINISHED_FIELDS = ("status", "error", "frames", "faces", "damage", "small_faces")

#: A video finished on a worker: its FINISHED_FIELDS by name.
FinishOutcome = dict
#: A video prepared on a worker: its PREPARED_FIELDS by name, and its fingerprint.
PrepareOutcome = tuple[dict, "dict | None"]


def outcome_of(run: VideoRun, names: tuple[str, ...]) -> dict:
    """The named fields of a run done on a worker, to send back (see :func:`take_outcome`)."""
    return {name: getattr(run, name) for name in names}


def take_outcome(run: VideoRun, outcome: dict) -> None:
    """Set what a worker reported on the driver's own record of the run.

    A worker that failed the video gives its folder back when that held only the claim
    (as :func:`_fail` does here); then ``batch.csv`` must name no folder either.
    """
    for name, value in outcome.items():
        setattr(run, name, value)
    if run.status == "failed" and run.out_dir and not run.out_dir.exists():
        run.out_dir = None


def _executor_settled(settings: Settings, ready: list[VideoRun]) -> bool:
    """Whether the inputs prepared so far settle the choice of executor (see choose_executor)."""
    if settings.workers is not None or ray_address(settings):
        return True  # told (serial or Ray) whatever the amount of work: start at once
    chunks = sum(len(r.chunks) for r in ready)
    return chunks > 1 and _duration(ready) >= serial_below_s()


def _duration(runs: list[VideoRun]) -> float:
    return sum(float(r.index.times_s(r.info)[-1]) for r in runs if r.expected_frames)


def _chunk_tasks(run: VideoRun, complete: Callable[[VideoRun], None]) -> Iterator[ChunkTask]:
    """A prepared video's chunks; a video with no frames is complete at once (empty outputs)."""
    if not run.chunks:
        complete(run)
        return
    # a chunk's seconds of video set how long it may run (a run prepared on a worker may
    # have no index here yet: its chunks get the plain limit)
    known = run.index is not None and run.info is not None
    times = run.index.times_s(run.info) if known else None
    for start, stop in run.chunks:
        if run.status == "failed":  # a chunk handed out earlier failed it: stop here
            return
        seconds = float(times[stop - 1] - times[start]) if times is not None else 0.0
        yield ChunkTask(run.position, run.path, start, stop, seconds)


class _Unlocking(Reporter):
    """The caller's reporter; a finished video's folder is let go of first (and all that are
    still held when the run ends, interrupted or not)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.locks: dict[int, int | None] = {}  # input position -> lock_output_dir's fd
        self.recorded: set[int] = set()  # input positions reported done

    def start(self, total_frames: int, videos: int) -> None:
        self.reporter.start(total_frames, videos)

    def advance(self, frames: int) -> None:
        self.reporter.advance(frames)

    def add_frames(self, frames: int) -> None:
        self.reporter.add_frames(frames)

    def video_done(self, run: VideoRun) -> None:
        unlock_output_dir(self.locks.pop(run.position, None))
        self.reporter.video_done(run)  # may raise a pending Ctrl-C, before or after recording:
        self.recorded.add(run.position)  # then a stopped run looks at its folder again

    def close(self) -> None:
        for fd in self.locks.values():
            unlock_output_dir(fd)
        self.locks.clear()
        self.reporter.close()


def _collect(
    run: VideoRun,
    result: ChunkResult | BaseException,
    complete: Callable[[VideoRun], None],
    reporter: Reporter,
) -> None:
    """File one chunk's result; a video's last chunk completes it, a failure fails it."""
    if run.status == "failed":
        return
    if isinstance(result, BaseException):
        _fail(run, result)
        reporter.video_done(run)
        return
    run.results.append(result)
    if len(run.results) == len(run.chunks):
        complete(run)


def interrupted_runs(
    paths: list[Path],
    finished: dict[int, VideoRun],
    why: str = "interrupted",
    status: str = "interrupted",
    out_root: Path | None = None,
) -> list[VideoRun]:
    """Every input of an interrupted batch: finished ones as they ended, others ``status``.

    With ``out_root``, paths read as the caller wrote them (``_AsGiven``): on a cluster the
    finished runs carry the absolute paths the workers were given.
    """
    runs = [
        replace(finished[k]) if k in finished else VideoRun(k, path, None, status=status, error=why)
        for k, path in enumerate(paths)
    ]
    return _AsGiven(paths, out_root, None, active=True)(runs) if out_root is not None else runs
