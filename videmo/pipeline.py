"""The compute of one video: map (decode, detect, classify) and reduce (track, smooth).

``Analyzer.run_chunk`` is the expensive, parallel part: it handles any frame
range on its own. ``reduce_detections`` runs once over the merged detections
of the whole video in frame order, so chunking never changes the result.
No output files are written here; see ``videmo.runner``.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import pandas as pd

from videmo.crop import frame_face_crop
from videmo.detect import create_detector
from videmo.detections import FaceDetections, SmallFaces
from videmo.emotion import EmotionModel
from videmo.errors import VideoError
from videmo.follow import FollowStats, ScheduledDetector
from videmo.outputs.timeline import build_timeline
from videmo.settings import Settings
from videmo.track import fill_unclassified, smooth, track
from videmo.video import DecodeReport, Frame, PacketIndex, read_frames

ProgressFn = Callable[[int], None]
T = TypeVar("T")


@dataclass
class ChunkResult:
    """What one chunk sends back: its detections and how many frames it decoded."""

    start: int
    stop: int
    detections: FaceDetections
    frames_decoded: int
    #: Time of every frame analysed, faces or not: the tracker needs the empty ones too
    #: (a tentative face dies on a frame without it).
    analysed_times: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    #: Times of the analysed frames that begin a new shot: the tracker ends every face there
    #: (see ``videmo.parallel.frame_times``), and of those that look like the frame two
    #: before them again (the frame between was a flash: no new shot after all).
    shot_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    shot_returns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    #: Frames of the range the decoder could not produce (a damaged file), and why.
    lost_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    damage: str = ""
    #: Faces found on the range's fully detected frames but left out as under --min-face.
    small_faces: SmallFaces = field(default_factory=SmallFaces)
    #: Face crops still to classify (uint8, N x S x S) and the detection rows they belong
    #: to, when the chunk ran with ``classify=False``: a separate stage (one model, on a
    #: GPU where there is one) classifies them with :func:`classify_chunk`.
    crops: np.ndarray | None = None
    crop_rows: np.ndarray | None = None


class FrameFacts(NamedTuple):
    """What the tracker needs to know of an analysed frame besides its faces."""

    index: int
    time_s: float
    new_shot: bool  # its picture differs as a whole from the analysed frame before
    shot_returns: bool  # ...but not from the one before that (a one-frame flash)


class StageClock:
    """Wall seconds spent per stage in the analysing thread (``videmo bench`` prints them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed


class _CropBatcher:
    """Collects face crops across frames and classifies them a full batch at a time.

    Only full batches run until the chunk ends, so the model is never fed
    mostly padding, and crops never pile up beyond one batch: memory stays
    flat however long the chunk is. With ``model=None`` the crops are only
    collected, for a separate classification stage.
    """

    def __init__(self, model: EmotionModel | None) -> None:
        self.model = model
        self.pending: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []

    def add(self, crops: list[np.ndarray]) -> None:
        self.pending.extend(crops)
        if self.model is None:
            return
        full = len(self.pending) - len(self.pending) % self.model.batch_size
        if full:
            self.probs.append(self.model.predict(np.stack(self.pending[:full])))
            self.pending = self.pending[full:]

    def collected(self, size: int) -> np.ndarray:
        """The crops collected (uint8, N x size x size), for a separate stage."""
        if not self.pending:
            return np.zeros((0, size, size), np.uint8)
        return np.stack(self.pending)

    def result(self) -> np.ndarray:
        assert self.model is not None
        if self.pending:
            self.probs.append(self.model.predict(np.stack(self.pending)))
            self.pending = []
        if not self.probs:
            return np.zeros((0, self.model.n_classes), np.float32)
        return np.concatenate(self.probs)


def prefetch(items: Iterator[T], depth: int = 4) -> Iterator[T]:
    """Produce ``items`` in a background thread, up to ``depth`` ahead, in order.

    Decoding and pixel conversion (FFmpeg) and detection (OpenCV) both release
    the GIL, so reading the next frames overlaps with analysing this one. Errors
    in the producer are re-raised here, at the position where they happened.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            buffer.put(_Failure(exc))
        buffer.put(done)

    worker = threading.Thread(target=produce, name="videmo-decode", daemon=True)
    worker.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full buffer
            with contextlib.suppress(queue.Empty):
                buffer.get(timeout=0.05)


def lookahead(items: Iterator[T], depth: int, on_enter: Callable[[T], None]) -> Iterator[T]:
    """``items`` in order, each handed to ``on_enter`` ``depth`` items before it is produced.

    An error from ``items`` (a damaged file) is raised only after the items already
    read have been produced, so no decoded frame is lost to the look-ahead.
    """
    waiting: collections.deque[T] = collections.deque()
    try:
        for item in items:
            on_enter(item)
            waiting.append(item)
            if len(waiting) > depth:
                yield waiting.popleft()
    except Exception:
        while waiting:
            yield waiting.popleft()
        raise
    while waiting:
        yield waiting.popleft()


@dataclass
class _Failure:
    error: BaseException


class Analyzer:
    """A loaded detector and emotion model, reused for every chunk a worker runs."""

    def __init__(self, settings: Settings, threads: int = 0) -> None:
        self.settings = settings
        self.detector = create_detector(settings.detector_config)
        self.stats = FollowStats()  # of the latest chunk
        self.clock = StageClock()  # seconds per stage, summed over every chunk run here
        self.model = EmotionModel(settings.model, settings.device, settings.batch_size, threads)
        self.crop = self.model.spec.crop_for(settings.detector)
        # One thread runs every full-frame detection, ahead of the frames being followed.
        self.detect_pool = ThreadPoolExecutor(1, thread_name_prefix="videmo-detect")

    @property
    def provider(self) -> str:
        return self.model.provider

    def run_chunk(
        self,
        path: Path,
        start: int,
        stop: int | None,
        index: PacketIndex | None = None,
        progress: ProgressFn | None = None,
        classify: bool = True,
    ) -> ChunkResult:
        """Decode frames [start, stop), detect faces and classify them in batches.

        With ``classify=False`` the face crops are returned instead, for a separate
        classification stage (:func:`classify_chunk`); the result is then the same.
        Reading starts at the scheduled full-detection frame at or before ``start``
        (see ``videmo.follow``); the frames before ``start`` only set up which faces
        are followed, so any chunking gives the detections of one whole read.
        """
        batcher = _CropBatcher(self.model if classify else None)
        parts: list[FaceDetections] = []
        classified: list[np.ndarray] = []  # per part: which of its rows were classified
        analysed: list[FrameFacts] = []  # never keep the images
        report = DecodeReport()
        detector = self.scheduled_detector()
        lead = detector.first_frame(start)
        frames = read_frames(path, lead, stop, self.settings.every, index, report=report, bgr=False)
        # Frames wait in a short queue once decoded, so that the detection of the next
        # scheduled frame starts while the frames before it are still being followed.
        ahead = lookahead(prefetch(frames), max(2, detector.interval), detector.look_ahead)
        try:
            self._analyse(ahead, detector, batcher, parts, classified, analysed, progress, start)
        except VideoError:
            # A damaged file: keep what decoded, record what did not (see the README's
            # damaged-file policy). --strict makes it an error once the whole video is read,
            # with the line that says what was lost (damage.damage_line), not a decoder's.
            if not report.missing:
                raise
        finally:
            detector.close()
        self.stats = detector.stats
        end = lead + report.expected
        covered = analysed[-1].index + 1 if analysed else start
        if progress is not None and end > covered:
            progress(end - covered)  # frames after the last analysed one
        lost = np.asarray([i for i in report.missing if i >= start], np.int64)
        found = FaceDetections.concat(parts)
        result = ChunkResult(
            start,
            stop if stop is not None else -1,
            found,
            len(analysed),
            np.array([f.time_s for f in analysed], np.float64),
            np.array([f.time_s for f in analysed if f.new_shot], np.float64),
            np.array([f.time_s for f in analysed if f.shot_returns], np.float64),
            lost,
            (report.error or "") if len(lost) else "",
            detector.small_faces,
        )
        rows = np.flatnonzero(np.concatenate([np.zeros(0, bool), *classified]))
        if not classify:
            result.crops = batcher.collected(self.model.spec.input_size)
            result.crop_rows = rows
            found.probs = np.full((len(found), self.model.n_classes), np.nan, np.float32)
            return result
        with self.clock("classify"):
            found.probs = _scatter_probs(batcher.result(), rows, len(found))
        return result

    def scheduled_detector(self) -> ScheduledDetector:
        """A fresh detection schedule (it holds the faces followed within one chunk)."""
        s = self.settings
        return ScheduledDetector(
            self.detector, s.detect_every, s.every, s.det_size, self.clock, self.detect_pool
        )

    def _analyse(
        self,
        frames: Iterator[Frame],
        detector: ScheduledDetector,
        batcher: _CropBatcher,
        parts: list[FaceDetections],
        classified: list[np.ndarray],
        analysed: list[FrameFacts],
        progress: ProgressFn | None,
        start: int,
    ) -> None:
        """Detect every frame, crop and batch-classify faces on the classification schedule.

        Detections go to ``parts``, and which of them were classified to ``classified``.
        Frames before ``start`` are only seen by the detector (to follow faces into the
        chunk). Progress counts source frames, so the bar reaches its end with ``--every N``.
        """
        spec, clock = self.model.spec, self.clock
        schedule = ClassifySchedule(self.settings.classify_interval_s)
        while True:
            with clock("decode (waiting for frames)"):
                frame = next(frames, None)
            if frame is None:
                return
            xywh, score = detector.detect(frame)  # timed inside: full frame or followed
            # Faces the full detector found are always classified (so every face is
            # classified where it first appears), followed ones on the time schedule.
            classify = schedule.due(frame.time_s, detector.detected_in_full)
            if frame.index < start:
                continue
            detector.count_too_small()
            dets = FaceDetections.for_frame(frame.index, frame.time_s, xywh, score).sorted()
            if len(dets):
                if classify:
                    with clock("crop"):
                        crops = [frame_face_crop(frame, box, self.crop, spec) for box in dets.xywh]
                    with clock("classify"):
                        batcher.add(crops)
                parts.append(dets)
                classified.append(np.full(len(dets), classify))
            if progress is not None:  # source frames since the previous analysed one
                progress(frame.index + 1 - (analysed[-1].index + 1 if analysed else start))
            analysed.append(
                FrameFacts(frame.index, frame.time_s, detector.new_shot, detector.shot_returns)
            )


class ClassifySchedule:
    """Which frames' followed faces are classified: those ``interval_s`` after the last classified.

    Faces the full detector finds are always classified (every face is classified where
    it first appears) and reset the clock, so at 30 fps with detection every 10th frame
    and the default 0.2 s, faces are classified on 2 frames in 10. A chunk starts
    reading at a full-detection frame and sees every frame after it, so any chunking
    classifies the same rows. Measured in time, not frames, so a 5-fps clip is
    classified on every frame and a 60-fps clip no more often than a 30-fps one.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: float | None = None  # time of the latest classified frame

    def due(self, time_s: float, detected_in_full: bool) -> bool:
        due = (
            detected_in_full
            or self.interval_s <= 0
            or self._last is None
            or time_s - self._last >= self.interval_s - 1e-9
        )
        if due:
            self._last = time_s
        return due


def _scatter_probs(probs: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Probabilities for every row: the classifier's on the classified ``rows``, NaN elsewhere."""
    out = np.full((n_rows, probs.shape[1]), np.nan, np.float32)
    out[rows] = probs
    return out


def classify_chunk(result: ChunkResult, model: EmotionModel) -> ChunkResult:
    """Classify the crops of a chunk run with ``classify=False``: the separate stage.

    ``EmotionModel.predict`` pads every batch to one size, so each crop gets the same
    probabilities here as inside the chunk: the timeline does not depend on where
    classification ran.
    """
    if result.crops is None:
        return result
    probs = result.detections.probs.copy()  # from Ray's object store: read-only
    probs[result.crop_rows] = model.predict(result.crops)
    result.detections.probs = probs
    result.crops = result.crop_rows = None
    return result


def reduce_detections(
    dets: FaceDetections,
    settings: Settings,
    analysed_times: np.ndarray | None = None,
    shot_starts: np.ndarray | None = None,
) -> pd.DataFrame:
    """Track faces and smooth their emotions over the whole video: the timeline.

    ``analysed_times`` (one per analysed frame, in order) lets the tracker see
    frames without faces as well, and ``shot_starts`` end every face at a shot cut.
    Detections that never became a confirmed face (``face_id == -1``) are dropped.
    """
    tracked = track(dets.sorted(), settings.tracker_config, analysed_times, shot_starts)
    tracked, classified = fill_unclassified(tracked)
    smoothed = smooth(tracked, settings.smooth_s)
    keep = tracked.face_id > 0
    return build_timeline(tracked[keep], smoothed[keep], classified=classified[keep])
