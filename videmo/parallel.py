"""Chunk planning and execution: serially in-process, or on Ray actors.

A video is cut into frame ranges near keyframes; each range is decoded,
detected and classified on its own (``Analyzer.run_chunk``). Results come
back in any order and are merged in frame order, so the merged detections,
and everything computed from them, do not depend on the chunking.

Ray runs embedded by default: a private local instance bound to 127.0.0.1,
without dashboard or usage reporting, in a temporary folder that is removed
on shutdown. With an address (``--address`` or ``$RAY_ADDRESS``) the same
code runs on an existing cluster.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from videmo.detections import FaceDetections
from videmo.errors import ClusterLost, VidemoError, one_line
from videmo.pipeline import Analyzer, ChunkResult, classify_chunk
from videmo.settings import Settings
from videmo.streams import flush_std_streams, point_at_devnull
from videmo.video import PacketIndex, VideoInfo

if TYPE_CHECKING:
    from videmo.outputs.writer import AnnotateTask
    from videmo.runner import FinishOutcome, PrepareOutcome, VideoRun


@dataclass(frozen=True)
class ChunkTask:
    """One unit of parallel work: frames [start, stop) of one video."""

    video: int  # position of the video in the batch
    path: Path
    start: int
    stop: int
    seconds: float = 0.0  # of video: a file read in one piece is one long chunk


@dataclass(frozen=True)
class FinishTask:
    """Track, smooth and write one video whose chunks are all back, on a worker.

    A batch on Ray sends these to the actors, so tracking and writing (the per-video
    work that would otherwise run in the driver between dispatches) scale with the
    workers. The outputs are the same bytes as when the driver writes them.
    """

    video: int  # position of the video in the batch
    run: VideoRun  # with its chunk results, packet index and output folder
    settings: Settings
    context: dict  # what run.json records about the execution, and the fingerprint


@dataclass(frozen=True)
class PrepareTask:
    """Fingerprint, resume-check, probe and index one input of a batch, on a worker.

    Reading a file (its first and last MiB for the fingerprint, every packet for the
    index) is I/O; on a cluster it belongs on the workers, next to the decoding, not
    queued up in the driver ahead of the first chunk.
    """

    video: int
    run: VideoRun  # named by the driver
    settings: Settings
    model_sha: str  # of the emotion model, part of the fingerprint (hashed once, in the driver)


def plan_chunks(index: PacketIndex, times_s: np.ndarray, chunk_s: float) -> list[tuple[int, int]]:
    """Frame ranges of about ``chunk_s`` seconds, cut at keyframes when one is near.

    A chunk may start on a non-keyframe (the reader then seeks to the keyframe
    before it and discards the frames in between): that keeps chunks short in
    videos with long GOPs and lets tests use chunks of a few frames. A stream whose frames
    are named by decoding order (``PacketIndex.by_output``) is one chunk.
    """
    n = len(index)
    if n == 0:
        return []
    if index.by_output:  # frames are counted from the start: one reader, one piece
        return [(0, n)]
    keyframes = np.flatnonzero(index.keyframe)
    cuts = [0]
    while True:
        target = np.searchsorted(times_s, times_s[cuts[-1]] + chunk_s)
        if target >= n:
            break
        near = keyframes[np.abs(times_s[keyframes] - times_s[target]) <= 0.25 * chunk_s]
        near = near[near > cuts[-1]]
        cut = int(near[np.argmin(np.abs(near - target))]) if len(near) else int(target)
        cut = max(cut, cuts[-1] + 1)  # at least a frame, however short chunk_s is
        if cut >= n:
            break
        cuts.append(cut)
    cuts.append(n)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def merge(results: Iterable[ChunkResult]) -> tuple[FaceDetections, int]:
    """Detections of all chunks in frame order, and the number of frames decoded."""
    ordered = sorted(results, key=lambda r: r.start)
    dets = FaceDetections.concat([r.detections for r in ordered]).sorted()
    return dets, sum(r.frames_decoded for r in ordered)


def frame_times(results: Iterable[ChunkResult]) -> tuple[np.ndarray, np.ndarray]:
    """Times of a video's analysed frames and of its new shots, each in frame order.

    Whatever order the chunks come in: what the tracker needs
    (:func:`videmo.pipeline.reduce_detections`). A frame that looks like the frame two
    before it again, after a change, ends a one-frame flash: neither it nor the flash
    starts a new shot (a flash and the frame after it may fall in different chunks).
    """
    ordered = sorted(results, key=lambda r: r.start)
    empty = np.zeros(0, np.float64)
    analysed, starts, returns = (
        np.concatenate([empty, *[getattr(r, name) for r in ordered]])
        for name in ("analysed_times", "shot_starts", "shot_returns")
    )
    at = np.searchsorted(analysed, returns)
    flashes = np.concatenate([returns, analysed[at[at > 0] - 1]])
    return analysed, starts[~np.isin(starts, flashes)]


class SerialExecutor:
    """Runs chunks one after another in this process (``--workers 0``; short inputs)."""

    name = "serial"

    def __init__(self, settings: Settings) -> None:
        self.analyzer = Analyzer(settings)
        self.provider = self.analyzer.provider
        self.workers = 1

    def run(
        self,
        tasks: Iterable[ChunkTask],
        index_of: Callable[[int], PacketIndex],
        progress: Callable[[ChunkTask, int], None],
    ) -> Iterator[tuple[ChunkTask, ChunkResult | BaseException]]:
        """Run chunk tasks one by one as they come (``tasks`` may be a generator)."""
        for task in tasks:
            try:
                result = self.analyzer.run_chunk(
                    task.path, task.start, task.stop, index_of(task.video),
                    lambda n, t=task: progress(t, n),
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - reported per video by the runner
                yield task, exc
            else:
                yield task, result

    def annotate(
        self, tasks: list[AnnotateTask], index: PacketIndex, info: VideoInfo, every: int
    ) -> list[int]:
        """Write the annotated segments of one video, in order; frames written per task."""
        return [task.run(index, info, every) for task in tasks]

    def close(self) -> None:
        pass


def _quiet_ray_env() -> None:
    """No usage stats, no dashboard, no log spam in the user's terminal."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


class RayExecutor:
    """Runs chunks on a pool of Ray actors, each holding one loaded Analyzer.

    The ONNX session and the detector are created once per actor, not per
    chunk. When the cluster has GPUs and the device allows it, each actor
    asks for a share of one.
    """

    name = "ray"

    def __init__(
        self, settings: Settings, workers: int | None, address: str | None, max_useful: int = 1
    ) -> None:
        """Start (or join) Ray and one actor per worker.

        ``workers=None`` means one per CPU of the cluster, but no more than
        ``max_useful`` (the number of chunks to run).
        """
        import ray

        _quiet_ray_env()
        self._ray = ray
        self._temp_dir: str | None = None
        self.actors: list = []
        self.classifiers: list = []  # the classification stage, when there is one
        self._retired: set[str] = set()  # ids of classifiers replaced (dead or hung)
        self._staged: dict = {}  # classifier's ref -> (its worker's ref, classifier)
        if workers is not None and workers > max(1, max_useful):
            note(f"--workers {workers}: only {max(1, max_useful)} chunk(s) to run; using that many")
            workers = max(1, max_useful)
        self._owns_ray = not ray.is_initialized()
        self._address = address
        self._lost = False  # the cluster stopped answering: nothing more to ask of Ray
        self.timeout_s = settings.chunk_timeout_s
        self._chunk_s = settings.chunk_s
        from ray.exceptions import RayActorError

        self._actor_died = RayActorError
        try:
            if self._owns_ray:
                self._init(address, workers or min(os.cpu_count() or 1, max(1, max_useful)))
            self._start_actors(settings, workers, max_useful)
        except BaseException as exc:
            # Actors whose constructor fails (e.g. --device gpu without CUDA) must not
            # leave Ray running or its temp folder behind.
            self.close()
            if isinstance(exc, VidemoError) or not isinstance(exc, Exception):
                raise  # a user error as it is; an interrupt or exit is not an error
            raise VidemoError(one_line(_unwrap(exc))) from None

    def _start_actors(self, settings: Settings, workers: int | None, max_useful: int) -> None:
        ray = self._ray
        if workers is None:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            workers = max(1, min(cpus, max_useful))
        gpus = ray.cluster_resources().get("GPU", 0.0) if settings.device != "cpu" else 0.0
        stage = settings.classify_stage == "on" or (settings.classify_stage == "auto" and gpus >= 1)
        if stage:
            self._start_classifiers(settings, gpus)
            # The workers only cut crops; the model they load gives the crop geometry.
            settings = replace(settings, device="cpu")
            gpus = 0.0
        # A worker process or node that dies costs a restart of its actor (models loaded
        # again, elsewhere if need be) and a retry of the call it was running, not a video.
        self._actor_cls = ray.remote(_AnalyzerActor).options(
            num_cpus=1,
            num_gpus=min(1.0, gpus / workers) if gpus else 0,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=CALL_RETRIES,
        )
        self._settings = settings
        self.actors = [self._actor_cls.remote(settings) for _ in range(workers)]
        self.workers = workers
        # The first call also tells whether the actors could start; a constructor error is
        # final, so it is not retried (and Ray prints no retry messages for it).
        first = self.classifiers[0] if self.classifiers else self.actors[0]
        self.provider = ray.get(first.provider.options(max_task_retries=0).remote())
        if self.classifiers:
            ray.get(self.actors[0].provider.options(max_task_retries=0).remote())

    def _start_classifiers(self, settings: Settings, gpus: float) -> None:
        """The classification stage: one actor per GPU (one on CPUs), fed by all workers.

        Each worker's chunk result goes to a classifier straight from the object store,
        not through the driver. Without a GPU the classifier reserves no CPU: it shares
        the workers' cores, as classification inside them would.
        """
        ray = self._ray
        self._classifier_cls = ray.remote(_ClassifierActor).options(
            num_cpus=0,
            num_gpus=1 if gpus >= 1 else 0,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=CALL_RETRIES,
        )
        self._classifier_settings = settings
        count = max(1, int(gpus))
        self.classifiers = [self._classifier_cls.remote(settings) for _ in range(count)]
        self._next_classifier = 0

    def _classify(self, chunk_ref: object) -> object:
        """Send a chunk's crops (an ObjectRef, still on its worker) to the next classifier."""
        classifier = self.classifiers[self._next_classifier % len(self.classifiers)]
        self._next_classifier += 1
        ref = classifier.classify.remote(chunk_ref)
        self._staged[ref] = (chunk_ref, classifier)
        return ref

    def _hung_classifier(self, ref: object, pending: dict, again: list) -> bool:
        """Whether an overdue call is stuck in its classifier (its worker's part is done).

        That classifier is then replaced, and the other calls queued on it are sent again.
        """
        chunk_ref, classifier = self._staged.pop(ref, (None, None))
        if chunk_ref is None or not self._ray.wait([chunk_ref], timeout=0)[0]:
            return False
        self._replace_classifier(classifier._actor_id.hex())
        for other in [r for r in pending if self._staged.get(r, (None, None))[1] is classifier]:
            self._requeue(other, pending, again)
        return True

    def _init(self, address: str | None, workers: int) -> None:
        """Start or join Ray; the process keeps its own SIGTERM handler (Ray's would exit
        at once, with nothing listed: videmo stops a batch on SIGTERM as on Ctrl-C)."""
        with _keeping_sigterm_handler(self._ray):
            self._start_ray(address, workers)

    def _start_ray(self, address: str | None, workers: int) -> None:
        kwargs: dict = dict(
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
            configure_logging=True,
        )
        if address:
            _check_reachable(address)
            try:
                self._ray.init(address=address, **kwargs)
            except Exception as exc:  # noqa: BLE001 - Ray raises many types here
                reason = one_line(exc)
                raise VidemoError(f"cannot connect to Ray at {address}: {reason}") from None
            return
        reap_stale_ray_dirs()
        self._temp_dir = tempfile.mkdtemp(
            prefix=f"{RAY_DIR_PREFIX}{os.getpid()}-", dir=ray_temp_parent()
        )
        self._ray.init(
            num_cpus=workers,
            _node_ip_address="127.0.0.1",
            _temp_dir=self._temp_dir,
            **kwargs,
        )

    def _dispatch(
        self, calls: Iterable[Callable | None], limit_s: Callable[[int], float] | None = None
    ) -> Iterator[tuple[int, object]]:
        """Run ``call(actor) -> ObjectRef`` on the actors; yield (k, result or error) as done.

        ``calls`` is consumed lazily, only as actors have room, so a batch streams: the
        caller may prepare inputs while earlier ones run. A ``None`` call means "nothing
        to run yet": the caller may have more once a running call has returned. Each actor
        holds up to ``CALLS_PER_WORKER`` calls (Ray runs them one after another), so it
        keeps working while the caller handles a result. A call that gives no result
        ``timeout_s`` after it could start fails with a one-line reason and its actor is
        replaced (a hung decode must not hang the batch); an actor that died for good
        (restarts used up) is replaced too. Calls queued behind either are sent again.
        ``limit_s(k)``, when given, is call ``k``'s own limit instead of ``timeout_s``.
        """
        ray = self._ray
        source = enumerate(calls)
        again: list[tuple[int, Callable]] = []  # calls queued on an actor that was replaced
        pending: dict = {}  # ref -> [k, call, actor, time the call could start, limit]
        resent: Counter = Counter()  # calls sent again after their worker died for good
        while True:
            self._fill(source, again, pending, limit_s or (lambda _k: self.timeout_s))
            if not pending:
                return
            now = time.monotonic()
            wait_s = max(0.0, min(p[3] + p[4] for p in pending.values()) - now)
            done, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            if not done:  # the oldest running call is overdue
                ref = min(pending, key=lambda r: pending[r][3] + pending[r][4])
                k, _, actor, _, limit = pending.pop(ref)
                hung = self._hung_classifier(ref, pending, again)
                which = "classifier" if hung else "worker"
                if which == "worker":
                    self._replace(actor, pending, again)
                else:  # the worker itself is free: its next call starts now
                    _start_next_call(actor, pending)
                yield k, VidemoError(f"no result after {limit:g} s ({which} replaced)")
                continue
            self._staged.pop(done[0], None)
            k, pending_call, actor, _, _ = pending.pop(done[0])
            _start_next_call(actor, pending)
            try:
                result = ray.get(done[0])
            except self._actor_died as exc:
                self._check_cluster()
                if self._replace_classifier(getattr(exc, "actor_id", None)):
                    _insert_in_order(again, (k, pending_call))
                    continue
                self._replace(actor, pending, again)
                resent[k] += 1
                if resent[k] <= RESENDS_AFTER_LOSS:  # its restarts used up: a new worker
                    _insert_in_order(again, (k, pending_call))
                    continue
                yield k, VidemoError(f"worker lost: {one_line(exc)}")
                continue
            except Exception as exc:  # noqa: BLE001 - the caller decides what fails
                yield k, _unwrap(exc)
                continue
            yield k, result

    def _check_cluster(self) -> None:
        """After an actor died: if the cluster itself is gone, stop the run in one line.

        Otherwise every later call would fail as "worker lost" until Ray, a minute later,
        ended this process with no summary written. ``ClusterLost`` lets the caller write
        what finished (the CLI: ``batch.csv`` and stdout) first.
        """
        if not self._address:
            return
        try:
            _check_reachable(self._address, timeout_s=2.0)
        except VidemoError as exc:
            self._lost = True
            reason = str(exc).rsplit(": ", 1)[-1]
            raise ClusterLost(f"lost the Ray cluster at {self._address} ({reason})") from None

    def _fill(
        self, source: Iterator, again: list, pending: dict, limit_s: Callable[[int], float]
    ) -> None:
        """Give every actor calls up to ``CALLS_PER_WORKER``, re-sent ones first."""
        busy = Counter(id(p[2]) for p in pending.values())  # calls held per actor
        for slot in range(CALLS_PER_WORKER):
            for actor in list(self.actors):
                if busy[id(actor)] > slot:
                    continue
                item = again.pop(0) if again else next(source, None)
                if item is None or item[1] is None:  # no more calls, or none yet
                    return
                k, call = item
                # a call queued behind another may start only when that one ends
                start = time.monotonic() if busy[id(actor)] == 0 else float("inf")
                pending[call(actor)] = [k, call, actor, start, limit_s(k)]
                busy[id(actor)] += 1

    def _replace_classifier(self, actor_id: str | None) -> bool:
        """Replace the classifier ``actor_id`` names; False if it names no classifier.

        A chunk whose classifier died for good (or was replaced) is then sent again: its
        worker did its part, the classifier did not.
        """
        ids = [c._actor_id.hex() for c in self.classifiers]
        if actor_id in self._retired:
            return True
        if actor_id is None or actor_id not in ids:
            return False
        at = ids.index(actor_id)
        self._retired.add(actor_id)
        self._ray.kill(self.classifiers[at], no_restart=True)
        self.classifiers[at] = self._classifier_cls.remote(self._classifier_settings)
        return True

    def _replace(self, actor: object, pending: dict, again: list) -> None:
        """Kill ``actor`` for good, start a fresh one, and queue its other calls again."""
        self._ray.kill(actor, no_restart=True)
        fresh = self._actor_cls.remote(self._settings)
        self.actors = [fresh if a is actor else a for a in self.actors]
        for ref in [r for r, p in pending.items() if p[2] is actor]:
            self._requeue(ref, pending, again)

    def _requeue(self, ref: object, pending: dict, again: list) -> None:
        """Take a call off ``pending`` and queue it to be sent again, in call order.

        A call that had started (another worker's, waiting on a replaced classifier) leaves
        its worker free: the call queued behind it starts now, so its limit counts too.
        """
        k, call, actor, start, _ = pending.pop(ref)
        self._staged.pop(ref, None)
        _insert_in_order(again, (k, call))
        if start != float("inf"):
            _start_next_call(actor, pending)

    def run(
        self,
        tasks: Iterable[ChunkTask | FinishTask | PrepareTask | None],
        index_of: Callable[[int], PacketIndex],
        progress: Callable[[ChunkTask, int], None],
    ) -> Iterator[
        tuple[ChunkTask, ChunkResult | BaseException]
        | tuple[FinishTask, FinishOutcome | BaseException]
        | tuple[PrepareTask, PrepareOutcome | BaseException]
    ]:
        """Run tasks as they come (``tasks`` may be a generator that prepares inputs).

        ``None`` among the tasks means none is ready yet; the generator is asked again
        after the next result (a video's chunks follow its PrepareTask's result, and its
        FinishTask its last chunk's result).
        """
        refs: dict[int, object] = {}  # the latest videos' packet indexes in the object store
        sent: dict[int, ChunkTask | FinishTask | PrepareTask] = {}

        def calls() -> Iterator[Callable | None]:
            for k, task in enumerate(tasks):
                if task is None:
                    yield None
                    continue
                sent[k] = task
                if isinstance(task, FinishTask):
                    yield lambda actor, t=task: actor.finish.remote(t)
                    continue
                if isinstance(task, PrepareTask):
                    yield lambda actor, t=task: actor.prepare.remote(t)
                    continue
                if task.video not in refs:
                    if len(refs) >= 8:  # in-flight calls keep their own reference
                        refs.pop(next(iter(refs)))
                    refs[task.video] = self._ray.put(index_of(task.video))
                ref = refs[task.video]
                if self.classifiers:  # crops go from the worker to the classification stage
                    yield lambda actor, t=task, r=ref: self._classify(
                        actor.run_chunk.remote(t.path, t.start, t.stop, r, False)
                    )
                    continue
                yield lambda actor, t=task, r=ref: actor.run_chunk.remote(
                    t.path, t.start, t.stop, r
                )

        for k, result in self._dispatch(calls(), lambda k: self._limit_s(sent[k])):
            task = sent.pop(k)
            if isinstance(result, ChunkResult):
                progress(task, task.stop - task.start)  # source frames, as serial
            yield task, result

    def _limit_s(self, task: ChunkTask | FinishTask | PrepareTask) -> float:
        """How long a task may run: ``--chunk-timeout-s`` per ``--chunk-s`` of video, at least
        once; for finishing a video (tracking, writing, the annotated video: work that grows
        with its length) once more. A file read in one piece (``PacketIndex.by_output``) is
        a single chunk as long as the video and gets that much longer."""
        if isinstance(task, FinishTask):
            run = task.run
            known = run.index is not None and run.info is not None and len(run.index) > 0
            seconds = float(run.index.times_s(run.info)[-1]) if known else 0.0
            return self.timeout_s * (1 + max(len(run.chunks), seconds / self._chunk_s))
        if isinstance(task, ChunkTask):
            return self.timeout_s * max(1.0, task.seconds / self._chunk_s)
        return self.timeout_s

    def annotate(
        self, tasks: list[AnnotateTask], index: PacketIndex, info: VideoInfo, every: int
    ) -> list[int]:
        """Write the annotated segments of one video on the actors; frames written per task.

        All tasks are awaited before the first error is raised, so no worker is still
        writing a segment when the caller cleans up.
        """
        index_ref, info_ref = self._ray.put(index), self._ray.put(info)
        calls = [
            lambda actor, t=task: actor.annotate.remote(t, index_ref, info_ref, every)
            for task in tasks
        ]
        results = dict(self._dispatch(calls))
        errors = [r for r in results.values() if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return [int(results[k]) for k in range(len(tasks))]

    def close(self) -> None:
        """End the pool (once: a stopped run closes it before looking at what was written)."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        ray = self._ray
        if self._lost:  # no one left to ask: Ray's calls would wait on the dead cluster
            return
        if self._owns_ray:  # ends every actor; killing them first made Ray retry their
            # ray.shutdown resets SIGTERM in the OS while Python still reports videmo's
            # handler: a SIGTERM in the run's last second then killed it silently
            with _quiet_fd2(), _keeping_sigterm_handler(ray):  # tasks in flight and print a
                ray.shutdown()  # "(raylet) Task ... failed" line each; its core logs the rest
        else:  # a cluster outlives this run: let go of its workers now
            for actor in [*getattr(self, "actors", []), *getattr(self, "classifiers", [])]:
                ray.kill(actor)
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Send file descriptor 2 (where Ray's C++ code logs) to /dev/null for a moment."""
    flush_std_streams()
    saved = os.dup(2)
    try:
        point_at_devnull(2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _keeping_sigterm_handler(ray: Any) -> Iterator[None]:
    """Keep the process's own SIGTERM handler through ``ray.init``, which installs one of its
    own in the driver (``sys.exit``: a SIGTERM then ended videmo with a crash dump, or was
    swallowed where Python ignores exceptions and the run went on). Where videmo has a
    handler, Ray's is not installed at all; it is put back afterwards in any case (also
    around ``ray.shutdown``, which resets it in the operating system)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    installer = getattr(utils, "set_sigterm_handler", None)
    if callable(handler) and installer is not None:
        utils.set_sigterm_handler = lambda _handler: None
    try:
        yield
    except SystemExit as exc:  # Ray's handler was installed after all and caught one
        if exc.code != signal.SIGTERM or not callable(handler):
            raise
        signal.signal(signal.SIGTERM, handler)
        signal.raise_signal(signal.SIGTERM)
        raise
    finally:
        if installer is not None:
            utils.set_sigterm_handler = installer
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


def _start_next_call(actor: object, pending: dict) -> None:
    """The actor has finished a call: the next one queued on it could start now.

    Its time limit counts from here; a queued call's start time is infinite until then.
    """
    for other in pending.values():
        if other[2] is actor and other[3] == float("inf"):
            other[3] = time.monotonic()
            return


def _insert_in_order(again: list, item: tuple[int, Callable]) -> None:
    """Queue a call to be sent again; earlier calls (lower k) go first."""
    bisect.insort(again, item, key=lambda entry: entry[0])


#: Calls queued on each worker at once: it starts the next chunk while the driver writes.
CALLS_PER_WORKER = 2

#: Times a worker's actor is restarted after its process or node died.
ACTOR_RESTARTS = 4

#: Times a call is retried on its restarted actor (Ray's ``max_task_retries``); chunks are
#: deterministic, so a retried chunk gives the same result.
CALL_RETRIES = 3

#: Times a call is sent to a new worker after its worker died for good (restarts used up):
#: workers killed from outside (a node's OOM killer, say) must not fail a video, but a chunk
#: that itself kills every worker it meets must fail in the end.
RESENDS_AFTER_LOSS = 2

#: Local Ray temp folders are named ``videmo-ray-<pid of the videmo process>-<random>``.
RAY_DIR_PREFIX = "videmo-ray-"
#: Ray's agents notice a killed driver within about a minute; a folder is reaped after that.
STALE_AFTER_S = 120.0


#: Longest temp folder path (bytes) that leaves room for Ray's sockets under it: a Unix
#: socket's path is at most 107 bytes, and videmo's folder plus Ray's session folder
#: (``videmo-ray-<pid>-<x>/session_<date>_<pid>/sockets/plasma_store``) take up to ~95.
MAX_RAY_TEMP_PARENT = 12


def ray_temp_parent() -> Path:
    """Where local Ray's folder goes: the system temp folder if its path is short enough,
    else ``/tmp``, as Ray itself does. A longer ``$TMPDIR`` (macOS's is about 50 bytes)
    failed every Ray run with "AF_UNIX path length cannot exceed 107 bytes"."""
    temp = Path(tempfile.gettempdir())
    if len(os.fsencode(temp)) <= MAX_RAY_TEMP_PARENT or not os.access("/tmp", os.W_OK):
        return temp
    return Path("/tmp")


def reap_stale_ray_dirs(now: float | None = None) -> list[Path]:
    """Delete local Ray temp folders left by videmo processes that no longer exist.

    A run killed with SIGKILL cannot clean up after itself; the next run does,
    once the owner process is gone and the folder is old enough for Ray's own
    agents to have exited.
    """
    now = time.time() if now is None else now
    removed = []
    for folder in ray_temp_parent().glob(f"{RAY_DIR_PREFIX}*"):
        match = re.match(rf"{RAY_DIR_PREFIX}(\d+)-", folder.name)
        if not match or not folder.is_dir() or _alive(int(match.group(1))):
            continue
        try:
            if now - folder.stat().st_mtime < STALE_AFTER_S:
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


#: What a gRPC client sends first (HTTP/2's connection preface and an empty SETTINGS frame).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS = 4


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, unless a Ray cluster answers at a host:port address.

    Ray itself retries a dead address for minutes before giving up, and waits for ever on a
    port where something else listens (a web server, the dashboard's port). Ray's head and
    its client server speak gRPC, so the check opens a connection and asks for HTTP/2's
    first frame: a SETTINGS frame comes back from Ray, not from anything else. With
    ``RAY_USE_TLS`` (a cluster that speaks TLS) only the connection is checked.
    """
    if re.fullmatch(r"(?:ray://)?\[?\]?:\d*", address.strip()):  # ":6379": Ray's traceback
        raise VidemoError(
            f"--address {address!r} names no host: give HOST:PORT, e.g. 10.0.0.5:6379"
        )
    if re.match(r"https?://", address.strip(), re.IGNORECASE):  # Ray's advice is cut off
        raise VidemoError(
            f"--address {address!r} is a web address (the dashboard or the job API): give the "
            "head's address, HOST:PORT as 'ray start --head' printed it (e.g. 10.0.0.5:6379), "
            "or ray://HOST:10001"
        )
    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address.strip())
    if match is None:  # "auto" and other forms: let Ray resolve them
        return
    tls = os.environ.get("RAY_USE_TLS", "0").strip().lower() in ("1", "true")
    try:
        with socket.create_connection((match[1], int(match[2])), timeout=timeout_s) as conn:
            if tls:  # a TLS cluster answers only after a handshake: a listener has to do
                return
            conn.settimeout(timeout_s)
            conn.sendall(_HTTP2_PREFACE)
            head = _read_up_to(conn, 9, timeout_s)
    except OSError as exc:
        reason = "it does not answer" if isinstance(exc, TimeoutError) else exc.strerror or exc
        raise VidemoError(f"no Ray cluster reachable at {address}: {reason}") from None
    if len(head) < 9 or head[3] != _HTTP2_SETTINGS or _http_not_grpc(*match.groups(), timeout_s):
        raise VidemoError(
            f"no Ray cluster at {address}: something listens there but does not answer as "
            "Ray does (gRPC); the head's port is the one 'ray start --head' printed"
        )


#: A call of Ray's head (GCS). Only how the server answers it matters, not what.
_GCS_CALL = "/ray.rpc.NodeInfoGcsService/GetClusterId"


def _http_not_grpc(host: str, port: str, timeout_s: float = 5.0) -> bool:
    """Whether an HTTP/2 server at ``host:port`` answers a gRPC call with an HTTP status (a
    proxy or web server) instead of a gRPC one.

    Every gRPC server, Ray's included, answers with a gRPC status: "unauthenticated",
    "unimplemented" for a method it lacks, or the reply. An HTTP/2 proxy answers 404, and
    Ray then retried it for 20 s, printing a C++ error line for each try.
    """
    try:
        import grpc  # with Ray's client and default extras; plain `ray` may lack it
    except ImportError:  # the SETTINGS check alone then: a proxy is left to Ray
        return False
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # the host the SETTINGS check reached, not an http_proxy from the environment
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            channel.unary_unary(_GCS_CALL)(b"", timeout=timeout_s)
        except grpc.RpcError as exc:
            return (exc.details() or "").startswith("Received http2 header with status")
    return False


def _read_up_to(conn: socket.socket, size: int, timeout_s: float) -> bytes:
    """Up to ``size`` bytes, fewer if the peer closes or ``timeout_s`` passes."""
    data, deadline = b"", time.monotonic() + timeout_s
    while len(data) < size and time.monotonic() < deadline:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _unwrap(exc: BaseException) -> BaseException:
    """The user-facing error inside a Ray task or actor error, if there is one."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    creation = getattr(exc, "error_msg", None) or ""
    if "VidemoError" in creation or "ModelError" in creation:  # the actor's constructor
        last = [line for line in creation.splitlines() if "Error: " in line]
        if last:
            return VidemoError(last[-1].split("Error: ", 1)[1])
    return exc


def note(text: str) -> None:
    """A one-line notice on stderr (never stdout, which carries results)."""
    print(f"videmo: {text}", file=sys.stderr)


class _AnalyzerActor:
    """Ray actor: one Analyzer per worker process, single-threaded kernels.

    It also writes annotated video segments, and in a batch it probes inputs
    (``prepare``) and tracks and writes whole videos (``finish``), so those reuse the
    same worker processes.
    """

    def __init__(self, settings: Settings) -> None:
        import cv2

        cv2.setNumThreads(1)
        self.analyzer = Analyzer(settings, threads=1)

    def provider(self) -> str:
        return self.analyzer.provider

    def pid(self) -> int:
        """The worker's process id (for diagnostics and the worker-kill test)."""
        return os.getpid()

    def run_chunk(
        self, path: Path, start: int, stop: int, index: PacketIndex, classify: bool = True
    ) -> ChunkResult:
        return self.analyzer.run_chunk(path, start, stop, index, classify=classify)

    def annotate(self, task: AnnotateTask, index: PacketIndex, info: VideoInfo, every: int) -> int:
        return task.run(index, info, every)

    def prepare(self, task: PrepareTask) -> PrepareOutcome:
        """Fingerprint, resume-check, probe, index and plan one input (see ``PrepareTask``)."""
        from videmo.runner import PREPARED_FIELDS, check_and_plan, outcome_of

        run, fingerprint = check_and_plan(task.run, task.settings, task.model_sha)
        return outcome_of(run, PREPARED_FIELDS), fingerprint

    def finish(self, task: FinishTask) -> FinishOutcome:
        """Track, smooth and write one video of a batch (see ``FinishTask``)."""
        from videmo.outputs.writer import write_video_outputs
        from videmo.runner import FINISHED_FIELDS, finish_video, outcome_of

        run = finish_video(task.run, task.settings, write_video_outputs, task.context)
        return outcome_of(run, FINISHED_FIELDS)


class _ClassifierActor:
    """Ray actor: the classification stage, one emotion model for every worker's crops.

    It holds the GPU where there is one (``--device``), so crops from all CPU workers
    meet one session in large batches instead of each worker holding a slice of it.
    """

    def __init__(self, settings: Settings) -> None:
        from videmo.emotion import EmotionModel

        self.model = EmotionModel(settings.model, settings.device, settings.batch_size, threads=1)

    def provider(self) -> str:
        return self.model.provider

    def pid(self) -> int:
        return os.getpid()

    def classify(self, result: ChunkResult) -> ChunkResult:
        return classify_chunk(result, self.model)
