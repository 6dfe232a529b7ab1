"""The ``videmo`` command line: run, job, bench, and the model tools.

Every user error ends as one line on stderr (``videmo: error: ...``) and a
non-zero exit: 2 for bad usage or input, 1 when some videos of a batch
failed, 130 when interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import signal
import sys
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import click

from videmo import __version__
from videmo.errors import ClusterLost, OutputError, SettingsError, VidemoError
from videmo.naming import plural
from videmo.settings import CLASSIFY_STAGES, DETECTORS, DEVICES, Settings, load_toml

if typing.TYPE_CHECKING:
    from videmo.runner import VideoRun

DEFAULT_OUT = Path("videmo_out")


class _OutputRoot(click.Path):
    """A folder name; an empty one (``-o ''``, an unset variable) is refused, not read as
    the current folder."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("the output root is empty: name a folder (-o . for this one)", param, ctx)
        return super().convert(value, param, ctx)


OUT_ROOT = _OutputRoot(path_type=Path)
QUIET_HELP = "no progress bar or summary table (warnings and notes still go to stderr)"
_CLICK_TYPES = {int: click.INT, float: click.FLOAT, str: click.STRING}
_CHOICES = {"detector": DETECTORS, "device": DEVICES, "classify_stage": CLASSIFY_STAGES}


def _base_type(annotation: str) -> type:
    names = {"int": int, "float": float, "str": str, "bool": bool}
    return names[str(annotation).replace(" | None", "")]


def settings_options(command: typing.Callable, skip: tuple[str, ...] = ()) -> typing.Callable:
    """Add one CLI option per ``Settings`` field, with its default and help text."""
    defaults = Settings()
    for f in reversed([f for f in fields(Settings) if f.name not in skip]):
        flag = f.name.replace("_", "-")
        base = _base_type(f.type)
        help_text = f.metadata["help"]
        if base is bool:  # both ways, so a job file's `video = false` can be turned back on
            shown = "on" if getattr(defaults, f.name) else "off"
            option = click.option(f"--{flag}/--no-{flag}", f.name, default=None,
                                  help=f"{help_text} [default: {shown}]")  # fmt: skip
        else:
            choices = _CHOICES.get(f.name)
            kind = click.Choice(choices) if choices else _CLICK_TYPES[base]
            shown = getattr(defaults, f.name)
            option = click.option(
                f"--{flag}", type=kind, default=None,
                help=help_text + (f" [default: {shown}]" if shown is not None else ""),
            )  # fmt: skip
        command = option(command)
    return command


def settings_from(options: dict, base: dict | None = None) -> Settings:
    """Settings from CLI options that were given, over a job file's values."""
    values = dict(base or {})
    values.update({k: v for k, v in options.items() if v is not None})
    return Settings.from_mapping(values)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="videmo")
def cli() -> None:
    """videmo: per-face emotion timelines from videos.

    \b
    Quick start:
      videmo run movie.mp4              # -> videmo_out/movie/
      videmo run clips/ -o results      # every video under clips/, resumable
      videmo job jobs/example.toml      # the same, declared in a TOML file
    """


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_root", type=OUT_ROOT, default=DEFAULT_OUT,
              show_default=True, help="output root; each video gets OUT/<video name>/")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@settings_options
def run(inputs: tuple[str, ...], out_root: Path, quiet: bool, **options) -> None:
    """Analyse videos: INPUTS are files, folders (searched recursively) or globs.

    Writes per video: timeline.parquet, timeline.csv, faces.csv, annotated.mp4,
    plots/*.png, report.html with faces/*.jpg, and run.json (last); a batch adds
    batch.csv and report.html at the output root. Rerunning the same command
    skips videos whose outputs are complete and redoes failed or partial ones.
    """
    settings = settings_from(options)
    _run_and_report(_collect(list(inputs), out_root), out_root, settings, quiet)


def _collect(specs: list[str], out_root: Path) -> list[Path]:
    """The inputs to analyse, with a note on each kind of file the folders held but left out."""
    from videmo.inputs import Skipped, collect_inputs

    if any(not spec.strip() for spec in specs):  # "" (an unset variable) is not "this folder"
        raise click.UsageError("an input is empty: name a file, folder or glob (. for this one)")

    skipped = Skipped()
    try:
        return collect_inputs(specs, out_root, skipped)
    finally:  # also before "no video files found": it may be why
        for line in skipped.notes():  # also with -q: what was left out is never silent
            click.echo(f"videmo: {line}", err=True)


JOB_KEYS = {"inputs", "output", "settings"}


@cli.command()
@click.argument("job_file", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_root", type=OUT_ROOT, default=None,
              help="output root, instead of the job file's `output`")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@settings_options
def job(job_file: Path, out_root: Path | None, quiet: bool, **options) -> None:
    """Run a declarative TOML job: inputs, output root and settings.

    \b
    inputs = ["clips/", "more/*.mp4"]   # paths or globs, relative to the job file (or ~/...)
    output = "results"                  # output root, relative to the job file (or ~/...)
    [settings]                          # any `videmo run` option, underscores
    every = 2
    Options given here override the job file's settings.
    """

    data = load_toml(job_file)
    for key in data:
        if key not in JOB_KEYS:
            hint = ""
            if key in ("data", "epochs", "out"):
                hint = " (a training job? run it with `videmo train --job`)"
            elif key in {f.name for f in fields(Settings)}:
                hint = f" ({key} is a setting: put it under [settings])"
            raise SettingsError(
                f"{job_file}: unknown key {key!r} (expected {', '.join(sorted(JOB_KEYS))})" + hint
            )
    inputs = data.get("inputs")
    named = isinstance(inputs, list) and all(isinstance(i, str) and i.strip() for i in inputs)
    if not inputs or not named:  # "" would be the job file's own folder, searched whole
        raise SettingsError(f"{job_file}: key 'inputs' must be a non-empty list of paths or globs")
    output = data.get("output", str(DEFAULT_OUT))
    if not isinstance(output, str) or not output.strip():
        raise SettingsError(f"{job_file}: key 'output' must name a folder (a non-empty string)")
    if not isinstance(data.get("settings", {}), dict):
        raise SettingsError(f"{job_file}: key 'settings' must be a table")
    Settings.from_mapping(data.get("settings", {}), f"{job_file} [settings]")
    here = job_file.resolve().parent
    job_settings = dict(data.get("settings", {}))
    if job_settings.get("model"):
        job_settings["model"] = _job_model(here, job_settings["model"])
    settings = settings_from(options, job_settings)

    def beside_job(relative: str) -> Path:  # "../out" gives /x/out, not /x/jobs/../out
        # "~/results" is the home folder, as in a shell, not a folder named "~" beside the job
        return Path(os.path.normpath(here / os.path.expanduser(relative)))

    if out_root is None:
        out_root = beside_job(output)
    paths = _collect([str(beside_job(i)) for i in inputs], out_root)
    _run_and_report(paths, out_root, settings, quiet)


def _job_model(here: Path, value: str) -> str:
    """A job's ``model``: a file relative to the job file, like every path in it, or a
    shipped model's bare name; never a file that happens to be in the current folder."""
    from videmo.models import models_dir

    beside = Path(os.path.normpath(here / os.path.expanduser(value)))
    if beside.is_file() or Path(value).name != value:
        return str(beside)
    shipped = models_dir() / value
    return str(shipped) if shipped.is_file() else str(beside)


def _run_and_report(paths: list[Path], out_root: Path, settings: Settings, quiet: bool) -> None:
    """Run the inputs and report them; an output root this run made and left empty (its one
    input failed before writing anything) is removed again."""
    from videmo.naming import removed_if_left_empty

    with removed_if_left_empty(out_root):
        _run_and_list(paths, out_root, settings, quiet)


def _run_and_list(paths: list[Path], out_root: Path, settings: Settings,
                         quiet: bool) -> None:  # fmt: skip
    from videmo.naming import lock_output_dir, unlock_output_dir
    from videmo.outputs.atomic import ensure_dir
    from videmo.progress import install_interrupt_handler

    install_interrupt_handler()
    batch = len(paths) > 1
    # A batch holds its output root: two batches there each failed the videos the other was
    # writing, and the last to finish wrote a summary calling finished folders "failed".
    root_lock = lock_output_dir(ensure_dir(out_root)) if batch else None
    try:
        _run_batch_or_video(paths, out_root, settings, quiet, batch)
    finally:
        unlock_output_dir(root_lock)


def _run_batch_or_video(
    paths: list[Path], out_root: Path, settings: Settings, quiet: bool, batch: bool
) -> None:
    from videmo.outputs.batch import remove_batch_summary, write_batch_report
    from videmo.progress import RichReporter, interrupts_held, print_summary
    from videmo.runner import interrupted_runs, run_videos

    snapshot = _BatchSnapshot(paths, out_root) if batch else None
    listing = _OrderedListing(paths, out_root)  # before stdout is pointed at stderr below

    def on_done(finished: dict[int, VideoRun]) -> None:
        listing(finished)
        if snapshot is not None:
            snapshot(finished)

    reporter = RichReporter(enabled=not quiet, inputs=len(paths), on_done=on_done)
    if batch and out_root.is_dir():
        remove_batch_summary(out_root)
    try:
        # stdout carries results only: whatever a library prints meanwhile (Ray reports task
        # retries from its own threads) goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            runs = run_videos(paths, out_root, settings, reporter, keep_timelines=False)
    except (KeyboardInterrupt, ClusterLost) as exc:
        # What finished is finished: say so on stdout and in batch.csv, then stop.
        reporter.close()
        why = str(exc) if isinstance(exc, ClusterLost) else "interrupted"
        runs = interrupted_runs(paths, reporter.finished, why, out_root=out_root)
        if batch:
            _final_batch_csv(runs, out_root)
        listing.rest(runs, interrupted=True)
        raise
    with interrupts_held():  # every video is finished: a Ctrl-C now waits for the listing
        batch_csv = _final_batch_csv(runs, out_root) if batch else None
        if batch and settings.report:
            try:
                write_batch_report(runs, out_root)
            except VidemoError as exc:  # the videos' own outputs and batch.csv stand
                click.echo(f"videmo: warning: the batch's report.html was not written: {exc}",
                           err=True)  # fmt: skip
        if not quiet:
            print_summary(runs, batch_csv)
        listing.rest(runs)
        if len(runs) == 1 and runs[0].status in ("damaged", "skipped") and runs[0].damage:
            click.echo(f"videmo: warning: {runs[0].path}: {runs[0].error}", err=True)
        for run in runs:
            _note_what_was_not_analysed(run, settings)
        _note_replaced(runs)
        _note_small_faces(runs, settings)
    failed = [r for r in runs if r.status == "failed"]
    if len(runs) == 1 and failed:
        raise VidemoError(failed[0].error)
    if failed:
        where = f"see {batch_csv}" if batch_csv else f"batch.csv could not be written in {out_root}"
        click.echo(f"videmo: {len(failed)} of {len(runs)} videos failed; {where}", err=True)
        sys.exit(1)


def _final_batch_csv(runs: list, out_root: Path) -> Path | None:
    """Write the batch's ``batch.csv``; where that fails, say so on stderr and return None."""
    from videmo.outputs.batch import write_final_batch_csv

    try:
        return write_final_batch_csv(runs, out_root)
    except VidemoError as exc:
        click.echo(f"videmo: warning: batch.csv was not written: {exc}", err=True)
        return None


class _BatchSnapshot:
    """Keeps ``batch.csv`` current while a batch runs: finished videos as they ended, the
    others ``unfinished``. A driver that is killed (``kill -9``, or Ray ending it when its
    cluster goes away) then still leaves a summary that says what finished and what did not;
    the end of the run replaces it. Written at most every ``EVERY_S`` seconds, and only when
    more videos have finished; called as videos finish and as work progresses, so a video
    that finished within the window is written at the next call after it (not only when the
    next video finishes, which may be minutes later)."""

    EVERY_S = 2.0
    #: At most this share of the driver's time goes to rewriting the file: a batch of 50,000
    #: videos takes 0.4 s a write, which every 2 s would be a fifth of the dispatch loop.
    MAX_SHARE = 0.05

    def __init__(self, paths: list[Path], out_root: Path) -> None:
        self.paths, self.out_root = paths, out_root
        self._last = -float("inf")
        self._every = self.EVERY_S
        self._written: int | None = None  # how many finished videos the file lists

    def __call__(self, finished: dict[int, VideoRun]) -> None:
        now = time.monotonic()
        if len(finished) == self._written or now - self._last < self._every:
            return
        from videmo.outputs.batch import write_batch_csv
        from videmo.runner import interrupted_runs

        self._last, self._written = now, len(finished)
        runs = interrupted_runs(self.paths, finished, "", "unfinished", self.out_root)
        with contextlib.suppress(VidemoError):  # tried again at the next video, and at the end
            write_batch_csv(runs, self.out_root)
        spent = time.monotonic() - now
        self._every = max(self.EVERY_S, spent / self.MAX_SHARE)


class _OrderedListing:
    """The output folder of every finished video on stdout, in input order (scripts read it),
    each as soon as every input before it has finished too: a batch streams its results
    (``videmo run DIR | consumer``) instead of listing them all at its end.

    Lines are written by a thread of their own, so a reader that falls behind (``| less``)
    holds up only the end of the run, not the batch. On a terminal they wait for the end, as
    before: written under a live progress bar on the same screen, they were glued to it. A
    reader that stops early (``videmo run DIR | head -1``) does not change the exit status:
    the outputs are written, and the rest of stdout goes to /dev/null. A stdout that cannot be
    written (a full disk) is a one-line error once the run is over, unless it was
    ``interrupted`` (that error must not replace the interrupt's exit status); a closed one
    (``>&-``) a note.
    """

    def __init__(self, paths: list[Path], out_root: Path) -> None:
        self.paths, self.out_root = paths, out_root
        self.stdout = sys.stdout  # the real one: the run points sys.stdout at stderr
        self.hold = self.stdout is None or _is_terminal(self.stdout)
        self.next = 0  # inputs before it are finished and listed
        self.listed: set[int] = set()  # marked before the line is queued: never twice
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.writer: threading.Thread | None = None
        self.stopped = False  # the reader went away, or stdout failed: nothing more to write
        self.error: OSError | None = None

    def __call__(self, finished: dict[int, VideoRun]) -> None:
        """List the finished videos that continue the listing without a gap."""
        if self.hold:
            return
        from videmo.progress import interrupts_held
        from videmo.runner import run_as_given

        with interrupts_held():  # a folder marked listed is queued too: never lost
            while self.next < len(self.paths) and self.next in finished:
                run = run_as_given(finished[self.next], self.paths, self.out_root)
                self.next += 1
                self._list(run)

    def rest(self, runs: list[VideoRun], interrupted: bool = False) -> None:
        """List every finished video not listed yet (the run is over) and wait for stdout."""
        for run in runs:
            self._list(run)
        if self.writer is not None:
            self.lines.put(None)
            self.writer.join()
        if self.stdout is None:
            click.echo(
                "videmo: note: stdout is closed; the output folders are not listed", err=True
            )
        elif self.error is not None and not interrupted:
            raise OutputError(f"cannot list the output folders on stdout: {self.error.strerror}")

    def _list(self, run: VideoRun) -> None:
        if run.position in self.listed:
            return
        self.listed.add(run.position)
        from videmo.outputs.batch import FINISHED_STATUSES  # their outputs are there

        if run.status not in FINISHED_STATUSES or self.stdout is None:
            return
        if self.writer is None:
            self.writer = threading.Thread(target=self._write, name="videmo-stdout", daemon=True)
            self.writer.start()
        self.lines.put(os.fspath(run.out_dir))

    def _write(self) -> None:
        while (line := self.lines.get()) is not None:
            if self.stopped:
                continue
            try:
                click.echo(line, file=self.stdout)
                self.stdout.flush()
            except OSError as exc:
                from videmo.streams import point_at_devnull

                point_at_devnull(self.stdout.fileno())  # Python's flush at exit must not fail
                self.stopped = True
                if not isinstance(exc, BrokenPipeError):
                    self.error = exc


def _is_terminal(stream: typing.TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):  # closed, or not a real file
        return False


def _register_model_tools() -> None:
    """Add train, export, evaluate and import-keras (they import TensorFlow only when run)."""
    from videmo.train.commands import (
        evaluate_command,
        export_command,
        import_keras_command,
        train_command,
    )

    for command in (train_command, export_command, evaluate_command, import_keras_command):
        cli.add_command(command)


def _ignore_late_interrupts() -> None:
    """The work is done and reported: a Ctrl-C during interpreter shutdown must not print a
    traceback from some library's cleanup (or turn a finished run's exit status into 130);
    nor must a SIGTERM, which videmo's own handler turns into a KeyboardInterrupt."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _guard_closed_std_descriptors() -> None:
    """Started with stdout or stderr closed (``>&-``), the next file opened would get
    descriptor 1 or 2, and whatever a library prints would land in it: give it /dev/null."""
    from videmo.streams import point_at_devnull

    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            point_at_devnull(fd)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors instead of tracebacks for everything the user can fix."""
    _guard_closed_std_descriptors()
    if argv is None and sys.stderr is not None:  # the command line's own stderr
        from videmo.streams import StderrThatOutlivesItsReader

        sys.stderr = StderrThatOutlivesItsReader(sys.stderr)
    _register_model_tools()
    try:
        cli.main(args=argv, prog_name="videmo", standalone_mode=False)
        if argv is None:  # the command line, not a caller in the same process
            _ignore_late_interrupts()
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `videmo`: the help, not an error
        click.echo(exc.format_message(), err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"videmo: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt) as exc:
        # Nothing is imported here: a Ctrl-C in the first second lands inside some lazy
        # import, and importing again from the half-made module raised a traceback.
        progress = sys.modules.get("videmo.progress")
        interrupted = getattr(progress, "INTERRUPTED", None)
        if isinstance(exc.__cause__, EOFError) and not (interrupted and interrupted.is_set()):
            # click turns any EOFError into Abort: a file that ends early, not a Ctrl-C
            why = str(exc.__cause__).splitlines()[0] if str(exc.__cause__) else "EOFError"
            click.echo(f"videmo: error: unexpected end of data: {why}", err=True)
            sys.exit(1)

        stop_signal = getattr(progress, "stop_signal", None)  # no handler yet: Ctrl-C
        signum = stop_signal() if callable(stop_signal) else int(signal.SIGINT)
        click.echo(f"videmo: {'terminated' if signum == signal.SIGTERM else 'interrupted'}",
                   err=True)  # fmt: skip
        _exit_interrupted(128 + signum, from_command_line=argv is None)
    except ClusterLost as exc:  # what finished is written; the rest cannot run
        click.echo(f"videmo: error: {exc}", err=True)
        if argv is None:  # Ray would end this process anyway once it gives up on the cluster
            _exit_now(1)
        sys.exit(1)
    except VidemoError as exc:
        click.echo(f"videmo: error: {exc}", err=True)
        sys.exit(2)


#: A video gets a note on faces left out as too small when they were on at least this share
#: of its fully detected frames (a face that stays, not a one-off false detection), or when
#: it has no face at all.
SMALL_FACES_NOTE_SHARE = 0.1


def _replaced(run: VideoRun) -> bool:
    return run.status in ("done", "damaged") and run.redone.startswith("--overwrite")


def _note_replaced(runs: list[VideoRun]) -> None:
    """Say what ``--overwrite`` replaced: for one video what its folder held, for a batch in
    one line (every folder of a batch rerun with other settings would be a line)."""
    replaced = [run for run in runs if _replaced(run)]
    if len(replaced) == 1 and len(runs) == 1:
        click.echo(f"videmo: note: {runs[0].path}: made again: {runs[0].redone}", err=True)
    elif replaced:
        first = replaced[0]
        click.echo(
            f"videmo: note: --overwrite made {plural(len(replaced), 'finished folder')} again "
            f"(e.g. {first.out_dir}: {first.redone.removeprefix('--overwrite ')})",
            err=True,
        )


def _note_what_was_not_analysed(run: VideoRun, settings: Settings) -> None:
    """Say what a finished video's outputs cannot show: video streams after the first,
    faces that too few frames could not confirm ("0 faces" is not "no one was there"), and
    faces beyond the caps on graphs and thumbnails. Said here, by the driver, so a video
    finished on a Ray worker gets the same notes as one finished serially."""
    from videmo.outputs.gallery import MAX_THUMBNAILS
    from videmo.outputs.plots import MAX_FACE_PLOTS

    min_hits = settings.min_hits
    written = run.status in ("done", "damaged")
    for on, cap, what in ((settings.plots, MAX_FACE_PLOTS, "graphs"),
                          (settings.report, MAX_THUMBNAILS, "thumbnails")):  # fmt: skip
        if written and on and run.faces > cap:
            click.echo(
                f"videmo: note: {run.path}: {run.faces} faces; {what} for the {cap} seen in "
                "the most frames",
                err=True,
            )
    sound = _annotated_audio(run) if written and settings.video else None
    if sound and sound.startswith(("dropped", "AAC, downmixed")):
        click.echo(f"videmo: note: {run.path}: annotated.mp4's sound: {sound}", err=True)
    if written and run.redone and not _replaced(run):  # a rerun redoes one only for a reason
        click.echo(f"videmo: note: {run.path}: made again: {run.redone}", err=True)
    if run.info is not None and run.info.video_streams > 1:
        click.echo(
            f"videmo: note: {run.path} has {run.info.video_streams} video streams; the first "
            "was analysed",
            err=True,
        )
    if run.status != "failed" and not run.faces and run.frames < min_hits:
        click.echo(
            f"videmo: warning: {run.path}: only {run.frames} frame"
            f"{'s' if run.frames != 1 else ''} analysed, fewer than --min-hits {min_hits}: "
            "no face could be confirmed",
            err=True,
        )


def _note_small_faces(runs: list[VideoRun], settings: Settings) -> None:
    """Say that faces were left out as under --min-face: for one video where and how small,
    for a batch in one line (a 583-video batch had 156 such notes)."""
    noted = [
        run for run in runs
        if run.status in ("done", "damaged") and run.small_faces.frames
        and (run.small_faces.share >= SMALL_FACES_NOTE_SHARE or not run.faces)
    ]  # fmt: skip
    if not noted:
        return
    smallest = min(run.small_faces.smallest for run in noted)
    keeps = (
        f"--min-face {int(smallest)} keeps them, though expressions that small are hard to read"
        if smallest >= 1
        else "boxes that small are not faces (is --score-threshold too low?)"
    )
    if len(runs) == 1:
        click.echo(
            f"videmo: note: {runs[0].path}: faces under --min-face {settings.min_face} px were "
            f"left out ({runs[0].small_faces.describe()}); {keeps}",
            err=True,
        )
        return
    click.echo(
        f"videmo: note: {len(noted)} of {len(runs)} videos had faces under --min-face "
        f"{settings.min_face} px left out (each run.json's counts.small_faces says where; "
        f"the smallest {int(smallest)} px); {keeps}",
        err=True,
    )


def _annotated_audio(run: VideoRun) -> str | None:
    """What ``run.json`` says of the annotated video's sound (written on a worker, maybe)."""
    from videmo.outputs.names import RUN_JSON

    try:
        return json.loads((run.out_dir / RUN_JSON).read_text()).get("annotated_audio")
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _exit_interrupted(status: int, from_command_line: bool) -> None:
    """Exit 130 (Ctrl-C) or 143 (SIGTERM). From the command line the interpreter's teardown
    is skipped: Ray's own threads crashed in it once in about ten interrupted batches
    (SIGSEGV instead of 130), and a module whose import the interrupt cut short aborted it
    ("Fatal Python error ... finalizing"). By now Ray is shut down and every file videmo
    wrote is complete on disk (atomic writes); only the exit status was at stake."""
    if from_command_line:
        _ignore_late_interrupts()
        _exit_now(status)
    sys.exit(status)


def _exit_now(status: int) -> None:
    """Flush and exit without the interpreter's teardown (Ray's threads may not survive it)."""
    from videmo.streams import flush_std_streams

    flush_std_streams()
    os._exit(status)


@cli.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--workers", "workers", multiple=True, type=click.IntRange(min=0),
              help="worker counts to compare (repeatable; 0 = serial) [default: 0]")  # fmt: skip
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="also write the figures as JSON"
)
@functools.partial(settings_options, skip=("workers", "video", "plots", "report", "overwrite"))
def bench(
    videos: tuple[Path, ...], workers: tuple[int, ...], json_path: Path | None, **options
) -> None:
    """Measure end-to-end fps next to decode-only fps of the same file, in one run.

    Analysis only (no annotated video, no plots), default settings unless given.
    """
    import json
    import os

    from rich.console import Console
    from rich.table import Table

    from videmo.bench import run_bench
    from videmo.outputs.atomic import check_output_file, write_text_atomic
    from videmo.progress import install_interrupt_handler

    install_interrupt_handler()  # SIGTERM ends it as Ctrl-C does: "videmo: terminated"
    if json_path is not None:  # before the benchmark, not after
        from videmo.train.commands import check_suffix

        check_output_file(json_path)
        check_suffix(json_path, ".json", "--json file")  # never over a video or a model
    settings = settings_from(options)
    results, failed = [], 0
    for video in _collect([str(v) for v in videos], DEFAULT_OUT):  # files, folders, globs
        try:
            results.append(run_bench(video, settings, list(workers) or [0]))
        except VidemoError as exc:  # one bad file must not lose the others' figures
            click.echo(f"videmo: error: {exc}", err=True)
            failed += 1
    if not results:  # every input failed, each said why: no empty table (exit 2, as run)
        sys.exit(2)
    unwritten = None
    if json_path:  # before printing: a reader that stops early loses nothing
        unwritten = _attempt(write_text_atomic, json_path, json.dumps(results, indent=2) + "\n")
    table = Table(title=f"videmo bench ({os.cpu_count()} CPUs)")
    for column in ("video", "size", "frames", "decode fps", "decode+BGR fps", "full detect fps",
                   "workers", "end-to-end fps", "vs decode", "faces"):  # fmt: skip
        table.add_column(column)
    for r in results:
        for run in r["runs"]:
            table.add_row(
                Path(r["video"]).name, f"{r['width']}x{r['height']}", str(r["frames"]),
                f"{r['decode_fps']:.0f}", f"{r['decode_bgr_fps']:.0f}", f"{r['detect_fps']:.0f}",
                "serial" if run["executor"] == "serial" else f"{run['workers']} (Ray)",
                f"{run['fps']:.1f}", f"{run['ratio_to_decode']:.0%}",
                str(run["faces"]),
            )  # fmt: skip
    console = Console(width=160)
    console.print(table)
    for r in results:
        stages = r["stages"]
        breakdown = Table(title=f"{Path(r['video']).name}: ms per frame, serial analysis "
                          f"({stages['analysis_fps']:.0f} fps; "
                          f"{plural(stages['full_detections'], 'full detection')}, "
                          f"{plural(stages['followed_faces'], 'face')} followed)")  # fmt: skip
        breakdown.add_column("stage")
        breakdown.add_column("ms/frame", justify="right")
        for stage, ms in stages["ms_per_frame"].items():
            breakdown.add_row(stage, f"{ms:.2f}")
        console.print(breakdown)
    if unwritten is not None:  # after the figures: a full disk does not lose them
        raise unwritten
    if failed:
        sys.exit(1)


@cli.command("evaluate-clips")
@click.argument(
    "folders", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="also write the per-clip table as CSV")  # fmt: skip
@click.option("--confusion-png", type=click.Path(dir_okay=False, path_type=Path),
              help="save the confusion matrix of all clips as PNG")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="no per-clip progress on stderr")
@functools.partial(
    settings_options,
    skip=(
        "workers",
        "video",
        "plots",
        "report",
        "overwrite",
        "chunk_s",
        "chunk_timeout_s",
        "classify_stage",
        "address",
        "smooth_s",
    ),
)
def evaluate_clips_command(
    folders: tuple[Path, ...],
    csv_path: Path | None,
    confusion_png: Path | None,
    quiet: bool,
    **options,
) -> None:
    """Accuracy on labeled clips, through the same path as `videmo run`.

    \b
    Each FOLDER holds clips and a labels.csv with columns file and fer2013_class.
    A clip's prediction is the class with the highest mean raw probability of its
    main face (the face in most frames), its dominant_emotion in faces.csv; a clip
    with no face counts as wrong. A clip that cannot be read counts as wrong too, is
    named on stderr, and makes the exit status 1.
    Prints the per-clip table and the accuracy per folder (stdout).
      videmo evaluate-clips ../shared/data/videos/labeled/*/
    """
    from videmo.evaluation import clips as labeled
    from videmo.outputs.atomic import check_output_file
    from videmo.progress import install_interrupt_handler
    from videmo.train.evaluate import check_image_target

    install_interrupt_handler()  # SIGTERM ends it as Ctrl-C does: "videmo: terminated"

    settings = settings_from({**options, "workers": 0})
    clips = labeled.labeled_clips(list(folders))
    # Before minutes of evaluation, not after; and never over a clip or a labels.csv.
    labeled.refuse_input_targets([csv_path, confusion_png], list(folders), clips)
    labeled.refuse_table_target(csv_path)
    if csv_path is not None:
        check_output_file(csv_path)
    if confusion_png is not None:
        check_image_target(confusion_png)
    for folder in folders:
        unlisted = labeled.unlisted_videos(Path(folder), clips)
        if unlisted:
            click.echo(
                f"videmo: note: {len(unlisted)} video(s) in {folder} are not in labels.csv and "
                f"are not scored (first: {unlisted[0].name})",
                err=True,
            )

    def progress(clip) -> None:
        if not quiet:
            click.echo(f"{clip.folder}/{clip.file}", err=True)

    per_clip = labeled.evaluate_clips(clips, settings, progress)
    # The files before the table (a reader that closes stdout early must not lose them), and
    # the table even when a file fails (a disk full since the check must not lose it).
    unwritten = _attempt(_write_clip_files, per_clip, csv_path, confusion_png)
    shown = ["folder", "file", "label", "predicted", "correct", "face_rows"]
    click.echo(per_clip[shown].to_string(index=False))
    click.echo("")
    click.echo(labeled.accuracy_table(per_clip).to_string())
    unreadable = _warn_about_clips(per_clip)
    if unwritten is not None:
        raise unwritten
    if unreadable:
        sys.exit(1)


def _attempt(write: Callable[..., object], *args: object) -> VidemoError | None:
    """Run ``write``; its one-line error is returned, to be raised after the results print."""
    try:
        write(*args)
    except VidemoError as exc:
        return exc
    return None


def _write_clip_files(per_clip, csv_path: Path | None, confusion_png: Path | None) -> None:
    """evaluate-clips' --csv and --confusion-png."""
    from videmo.evaluation import clips as labeled

    if csv_path:
        from videmo.outputs.atomic import write_text_atomic

        write_text_atomic(csv_path, per_clip.to_csv(index=False))
    if confusion_png:
        from videmo.spec import EMOTIONS
        from videmo.train.evaluate import save_confusion_png

        right, total = int(per_clip["correct"].sum()), len(per_clip)
        faceless = int(labeled.without_face(per_clip).sum())
        title = f"labeled clips: {right}/{total} right"
        if faceless:
            title += f" ({faceless} without a face, not in the matrix)"
        save_confusion_png(labeled.confusion(per_clip), list(EMOTIONS), confusion_png, title)


def _warn_about_clips(per_clip) -> int:
    """Name damaged, faceless and unreadable clips on stderr; returns how many were unreadable."""
    scored = per_clip["error"] == ""
    for row in per_clip[(per_clip["damage"] != "") & scored].itertuples(index=False):
        click.echo(
            f"videmo: warning: {row.folder}/{row.file} is {row.damage}; scored on the frames that "
            "decode (--strict counts it as unreadable)",
            err=True,
        )
    from videmo.evaluation.clips import without_face

    for row in per_clip[without_face(per_clip)].itertuples(index=False):
        click.echo(
            f"videmo: warning: no face was confirmed in {row.folder}/{row.file}; it counts as "
            "wrong (see videmo run's --min-hits, --every and --det-size)",
            err=True,
        )
    unreadable = per_clip[~scored]
    for row in unreadable.itertuples(index=False):
        click.echo(f"videmo: warning: {row.folder}/{row.file} could not be read: {row.error}",
                   err=True)  # fmt: skip
    if len(unreadable):
        click.echo(
            f"videmo: {len(unreadable)} of {len(per_clip)} clips could not be read; they count "
            "as wrong above",
            err=True,
        )
    return len(unreadable)
