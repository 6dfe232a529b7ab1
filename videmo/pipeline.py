"""The compute of one video: map (decode, detect, classify) and reduce (track, smooth).

``Analyzer.run_chunk`` is the expensive, parallel part: it handles any frame
range on its own. ``reduce_detections`` runs once over the merged detections
of the whole video in frame order, so chunking never changes the result.
No output files are written here; see ``videmo.runner``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from videmo.crop import face_crop
from videmo.detect import create_detector
from videmo.detections import FaceDetections
from videmo.emotion import EmotionModel
from videmo.errors import VideoError
from videmo.outputs.timeline import build_timeline
from videmo.settings import Settings
from videmo.track import smooth, track
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
    #: Frames of the range the decoder could not produce (a damaged file), and why.
    lost_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    damage: str = ""


class _CropBatcher:
    """Collects face crops across frames and classifies them a full batch at a time.

    Only full batches run until the chunk ends, so the model is never fed
    mostly padding, and crops never pile up beyond one batch: memory stays
    flat however long the chunk is.
    """

    def __init__(self, model: EmotionModel) -> None:
        self.model = model
        self.pending: list[np.ndarray] = []
        self.probs: list[np.ndarray] = []

    def add(self, crops: list[np.ndarray]) -> None:
        self.pending.extend(crops)
        full = len(self.pending) - len(self.pending) % self.model.batch_size
        if full:
            self.probs.append(self.model.predict(np.stack(self.pending[:full])))
            self.pending = self.pending[full:]

    def result(self) -> np.ndarray:
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


@dataclass
class _Failure:
    error: BaseException


class Analyzer:
    """A loaded detector and emotion model, reused for every chunk a worker runs."""

    def __init__(self, settings: Settings, threads: int = 0) -> None:
        self.settings = settings
        self.detector = create_detector(settings.detector_config)
        self.model = EmotionModel(settings.model, settings.device, settings.batch_size, threads)
        self.crop = self.model.spec.crop_for(settings.detector)

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
    ) -> ChunkResult:
        """Decode frames [start, stop), detect faces and classify them in batches."""
        batcher = _CropBatcher(self.model)
        parts: list[FaceDetections] = []
        analysed: list[tuple[int, float]] = []  # (index, time): never keep the images
        report = DecodeReport()
        frames = read_frames(path, start, stop, self.settings.every, index, report=report)
        try:
            self._analyse(prefetch(frames), batcher, parts, analysed, progress, start)
        except VideoError:
            # A damaged file: keep what decoded, record what did not (see the README's
            # damaged-file policy); --strict makes it an error.
            if self.settings.strict or not report.missing:
                raise
        covered = analysed[-1][0] + 1 if analysed else start
        if progress is not None and start + report.expected > covered:
            progress(start + report.expected - covered)  # frames after the last analysed one
        found = FaceDetections.concat(parts)
        found.probs = batcher.result()
        return ChunkResult(
            start,
            stop if stop is not None else -1,
            found,
            len(analysed),
            np.array([t for _, t in analysed], np.float64),
            np.asarray(report.missing, np.int64),
            report.error or "",
        )

    def _analyse(
        self,
        frames: Iterator[Frame],
        batcher: _CropBatcher,
        parts: list[FaceDetections],
        analysed: list[tuple[int, float]],
        progress: ProgressFn | None,
        start: int,
    ) -> None:
        """Detect, crop and batch-classify every frame; collect detections in ``parts``.

        Progress counts source frames, so the bar reaches its end with ``--every N`` too.
        """
        spec = self.model.spec
        for frame in frames:
            small, scale = frame.resized(self.settings.det_size)
            xywh, score = self.detector.detect_scaled(small, scale, frame.image.shape)
            dets = FaceDetections.for_frame(frame.index, frame.time_s, xywh, score).sorted()
            if len(dets):
                batcher.add([face_crop(frame.image, box, self.crop, spec) for box in dets.xywh])
                parts.append(dets)
            if progress is not None:  # source frames since the previous analysed one
                progress(frame.index + 1 - (analysed[-1][0] + 1 if analysed else start))
            analysed.append((frame.index, frame.time_s))


def reduce_detections(
    dets: FaceDetections,
    settings: Settings,
    analysed_times: np.ndarray | None = None,
) -> pd.DataFrame:
    """Track faces and smooth their emotions over the whole video: the timeline.

    ``analysed_times`` (one per analysed frame, in order) lets the tracker see
    frames without faces as well. Detections that never became a confirmed
    face (``face_id == -1``) are dropped.
    """
    tracked = track(dets.sorted(), settings.tracker_config, analysed_times)
    smoothed = smooth(tracked, settings.smooth_s)
    keep = tracked.face_id > 0
    return build_timeline(tracked[keep], smoothed[keep])
