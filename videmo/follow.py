"""Detection on a schedule: the full-frame detector every N frames, faces followed between.

Full-frame detection is the most expensive step per frame. As in production video
analytics (DeepStream's ``interval`` on its primary detector, MediaPipe's
detect-then-track), the detector sees the whole frame only on scheduled frames
and at shot cuts. On the frames between, each face found on the previous frame
is moved by the optical flow of its own pixels (Median Flow: Lucas-Kanade on a
grid of points, forward and back), which costs well under a millisecond a face;
the next full detection corrects any drift. (Running the detector again in a
small window around each face was measured first: YuNet's per-call cost made a
160-pixel window cost a third of a full 640-pixel frame.) A face that enters
the picture is found at the next scheduled frame, at most N analysed frames
later. A shot cut, or a followed face that is lost (its points do not track, or the
pixels where it moved no longer look like it), triggers a full detection at once.

The schedule depends on the global frame index only (frames with
``index % (every * N) == 0``), and a chunk starts following from the scheduled
frame at or before its first frame, so chunked and serial runs give the same
detections.

Every analysed frame is also compared with the source frame just before it, so the
tracker can end every face at a shot cut (:attr:`ScheduledDetector.new_shot`); a
chunk reads one frame before its range when it would otherwise start without one,
so that comparison too is the same however the video is split. With ``--every``
above 1 the frames compared are further apart, motion alone can change a picture
as much as a cut (measured on the shared clips), and no frame is taken for a new shot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager
from dataclasses import dataclass

import cv2
import numpy as np

from videmo.crop import crop_square
from videmo.detect import FaceDetector, clip_to_frame
from videmo.detections import SmallFaces
from videmo.track import iou_matrix
from videmo.video import Frame

#: Optical flow looks for a face in a window this many times the face's larger side.
WINDOW_SCALE = 2.0
#: Optical flow runs where a face is this many pixels wide (smaller faces: at full size).
FLOW_FACE_PIXELS = 48
#: Points tracked per face: a FLOW_GRID x FLOW_GRID grid over the box.
FLOW_GRID = 6
#: Fewer points than this tracked reliably (forward and back): the face is lost.
MIN_FLOW_POINTS = 10
#: The most a followed face's size may change from one frame to the next.
MAX_SCALE_STEP = 0.03
#: A followed box whose pixels correlate less than this with the face's: the face is lost.
MIN_SIMILARITY = 0.5
_LK = {"winSize": (9, 9), "maxLevel": 2,
       "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)}  # fmt: skip
#: Two followed faces overlapping more than this are one face (the surer one is kept).
DUPLICATE_IOU = 0.5
#: Mean absolute difference (0-255) of two 32x32 luma thumbnails that triggers a full
#: detection at once: the picture changed as a whole.
CUT_THRESHOLD = 24.0
#: A new shot, where the tracker ends every face, needs the thumbnails to differ by more
#: than SHOT_THRESHOLD *and* the luma histograms by more than SHOT_HISTOGRAM_SHIFT (total
#: variation, 0-1). Motion changes the thumbnail but hardly the histogram: in the 5-fps
#: close-up clips of the shared data, consecutive frames of one shot differ by up to 44
#: grey levels but by at most 0.19 in histogram; the hard cuts of the Hamilton clip by 22
#: and 0.32-0.39 (its first cut, 0.19, is missed). ``benchmarks/shot_cuts.py`` measures it.
SHOT_THRESHOLD = 16.0
SHOT_HISTOGRAM_SHIFT = 0.25


@dataclass
class FollowStats:
    """How often each kind of detection ran (for ``videmo bench``)."""

    full: int = 0
    followed: int = 0  # faces moved by optical flow
    cuts: int = 0  # full detections because the picture changed as a whole
    lost: int = 0  # full detections because a followed face was lost


class ScheduledDetector:
    """Runs ``full`` on scheduled frames and at cuts, and follows known faces otherwise.

    Det scores of followed faces are those of their latest detection.
    """

    def __init__(
        self,
        full: FaceDetector,
        interval: int,
        every: int,
        det_size: int,
        clock: Callable[[str], AbstractContextManager] | None = None,
        pool: Executor | None = None,
    ) -> None:
        self.full = full
        #: Runs every full detection, one at a time (the detector is not thread-safe);
        #: with a pool, scheduled frames are detected ahead while earlier ones are followed.
        self.pool = pool
        self._ahead: dict[int, Future] = {}
        self.clock = clock or (lambda _stage: contextlib.nullcontext())
        self.interval = max(1, interval)
        self.every = every
        self.period = self.interval * every  # in source frames
        self.det_size = det_size
        self.stats = FollowStats()
        self._boxes = np.zeros((0, 4), np.float32)
        self._scores = np.zeros(0, np.float32)
        self._previous: Frame | None = None  # its luma is where the followed faces were
        #: (index, thumbnail, histogram) of the two frames read before this one, newest last
        self._seen: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._follow_from = 0  # frames before it are only compared for new_shot
        #: Whether the latest :meth:`detect` ran the full-frame detector (boxes not followed).
        self.detected_in_full = False
        #: Faces the latest full detection found but left out as under ``min_face`` (their
        #: sides), and the tally of the frames passed to :meth:`count_too_small`.
        self.too_small = np.zeros(0)
        self.small_faces = SmallFaces()
        #: Whether the latest frame begins a new shot: its picture differs as a whole from
        #: the source frame just before it (never when that frame was not analysed, or
        #: did not decode).
        self.new_shot = False
        #: Whether the latest frame, a new shot, looks again like the frame two before it:
        #: the frame between was a flash, not a cut (see ``videmo.parallel.frame_times``).
        self.shot_returns = False

    def first_frame(self, start: int) -> int:
        """Where a chunk starting at ``start`` begins reading, to follow faces as a full read.

        That is the scheduled frame at or before ``start`` (every frame is scheduled when
        detection runs on every frame), and with ``every == 1`` no later than two frames
        before ``start``, so the chunk's first frame is compared with its predecessors for
        :attr:`new_shot` as in a whole read.
        """
        # with detection on every analysed frame there is nothing to follow into the chunk
        self._follow_from = start if self.interval == 1 else start - start % self.period
        if self.every == 1:  # the two frames before start, to compare start with
            return max(0, min(self._follow_from, start - 2))
        return self._follow_from

    def is_scheduled(self, index: int) -> bool:
        """Whether frame ``index`` gets a full detection whatever its picture shows."""
        return self.interval == 1 or index % self.period == 0

    def look_ahead(self, frame: Frame) -> None:
        """Start a scheduled frame's full detection now, in the pool, before it is needed.

        The detection of a scheduled frame does not depend on the frames before it, so
        it runs on the other core while the faces of the frames before it are followed.
        """
        if self.pool is not None and self.is_scheduled(frame.index) and not self._before(frame):
            self._ahead[frame.index] = self._submit(frame)

    def close(self) -> None:
        """Drop detections started ahead and not used (the chunk ended early)."""
        for future in self._ahead.values():
            future.cancel()
        self._ahead.clear()

    def detect(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) xywh and scores (N,) of the faces on ``frame``, in frame pixels."""
        now = (frame.index, *_thumbnail(frame))
        previous = self._seen[-1] if self._seen else None
        change, shift = picture_change(now, previous) if previous else (0.0, 0.0)
        self.new_shot = (
            previous is not None and previous[0] == frame.index - 1 and _is_new_shot(change, shift)
        )
        earlier = self._seen[0] if len(self._seen) == 2 else None
        self.shot_returns = (
            self.new_shot and earlier is not None and earlier[0] == frame.index - 2
            and not _is_new_shot(*picture_change(now, earlier))
        )  # fmt: skip
        changed = change > CUT_THRESHOLD or self.new_shot
        self._seen = [*self._seen[-1:], now]
        if self._before(frame):  # read only to compare the chunk's first frame with it
            self.detected_in_full = False
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        scheduled = self.is_scheduled(frame.index)
        cut = changed and not scheduled
        self.detected_in_full = scheduled or cut
        self.too_small = np.zeros(0)
        if scheduled or cut:
            self.stats.cuts += cut
            xywh, score = self._detect_full(frame)
        else:
            with self.clock("follow (optical flow)"):
                xywh, score, lost = self._follow(frame)
            if lost:  # a face left or was covered: look at the whole frame again now
                self.stats.lost += 1
                self.detected_in_full = True
                xywh, score = self._detect_full(frame)
        self._boxes, self._scores, self._previous = xywh, score, frame
        return xywh, score

    def count_too_small(self) -> None:
        """Add the latest frame to :attr:`small_faces` if it was detected in full (the
        caller counts only the chunk's own frames, not those read to set it up)."""
        if self.detected_in_full:
            self.small_faces = self.small_faces.add(self.too_small)

    def _before(self, frame: Frame) -> bool:
        """Whether ``frame`` comes before the frame this chunk starts following faces from."""
        return frame.index < self._follow_from

    def _detect_full(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        self.stats.full += 1
        with self.clock("detect (full frame, or waiting for the detection thread)"):
            future = self._ahead.pop(frame.index, None)
            if future is None and self.pool is not None:  # a cut or a lost face: now, in the pool
                future = self._submit(frame)
            if future is not None:
                xywh, score, self.too_small = future.result()
            else:
                small, scale = frame.resized(self.det_size)
                xywh, score, self.too_small = self.full.detect_counting(small, scale, frame.shape)
            return xywh, score

    def _submit(self, frame: Frame) -> Future:
        """Shrink the frame here and detect in the pool.

        PyAV's scaler is called from this (the analysing) thread only: called from the
        pool while the decoder ran, it made detections differ between identical runs.
        """
        small, scale = frame.resized(self.det_size)
        return self.pool.submit(self.full.detect_counting, small, scale, frame.shape)

    def _follow(self, frame: Frame) -> tuple[np.ndarray, np.ndarray, bool]:
        """Each previous face moved by the optical flow of its pixels (median flow).

        The flag says whether a face was lost (its flow failed or its pixels changed).
        """
        found_boxes, found_scores, lost = [], [], False
        if self._previous is None or not len(self._boxes):  # e.g. a damaged first frame
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), lost
        previous, current = self._previous.luma(), frame.luma()
        for box, score in zip(self._boxes, self._scores, strict=True):
            self.stats.followed += 1
            moved = _median_flow(previous, current, box)
            if moved is None:
                lost = True
                continue
            found_boxes.append(moved)
            found_scores.append(score)
        if not found_boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), lost
        xywh, scores = clip_to_frame(
            np.stack(found_boxes), np.asarray(found_scores), frame.shape, self.full.config.min_face
        )
        return *_drop_duplicates(xywh, scores), lost


def _median_flow(previous: np.ndarray, current: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Where ``box`` went from ``previous`` to ``current`` (luma planes), or None if lost.

    Kalal et al.'s Median Flow: a grid of points in the box is tracked with pyramidal
    Lucas-Kanade, forward and back; points that do not come back to where they started
    are dropped; the box moves by the median displacement and scales by the median
    ratio of point distances. The work is done at a size where the face is
    ``FLOW_FACE_PIXELS`` wide, so it costs the same for any resolution.
    """
    x, y, w, h = (float(v) for v in box)
    scale = min(1.0, FLOW_FACE_PIXELS / max(w, h, 1.0))
    side = WINDOW_SCALE * max(w, h)
    x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    side_px = max(8, int(round(side)))
    size = max(8, int(round(side_px * scale)))
    step = max(1, side_px // size)  # skip pixels first: area-averaging them all is slow
    side_px = side_px - side_px % step
    patches = [
        cv2.resize(
            crop_square(plane, x0, y0, side_px)[::step, ::step],
            (size, size),
            interpolation=cv2.INTER_LINEAR,  # after the skip the scale is close to 1
        )
        for plane in (previous, current)
    ]
    k = size / side_px  # window pixels per frame pixel
    points = ((_GRID * (w, h) + (x - x0, y - y0)) * k).astype(np.float32).reshape(-1, 1, 2)
    ahead, ok1, _ = cv2.calcOpticalFlowPyrLK(patches[0], patches[1], points, None, **_LK)
    back, ok2, _ = cv2.calcOpticalFlowPyrLK(patches[1], patches[0], ahead, None, **_LK)
    diff = (back - points).reshape(-1, 2)
    error = np.sqrt((diff * diff).sum(axis=1))
    good = (ok1.ravel() == 1) & (ok2.ravel() == 1)
    if good.sum() < MIN_FLOW_POINTS:
        return None
    good &= error <= max(_median(error[good]), 0.5)
    if good.sum() < MIN_FLOW_POINTS:
        return None
    p0, p1 = points.reshape(-1, 2)[good], ahead.reshape(-1, 2)[good]
    dx, dy = _median(p1 - p0) / k
    half = len(p0) // 2  # pairs of points far apart: O(n), not O(n^2)
    d0 = _distances(p0, half)
    d1 = _distances(p1, half)
    far = d0 > 1
    ratio = float(_median(d1[far] / d0[far])) if far.any() else 1.0
    if not 0.8 <= ratio <= 1.25:  # a face does not change size that fast: flow failed
        return None
    # Scale from a few dozen points is noisy and compounds frame after frame; the next full
    # detection sets the true size, so following changes it by at most 3 % a frame.
    ratio = min(max(ratio, 1 - MAX_SCALE_STEP), 1 + MAX_SCALE_STEP)
    cx, cy = x + w / 2 + dx, y + h / 2 + dy
    moved = np.array([cx - w * ratio / 2, cy - h * ratio / 2, w * ratio, h * ratio], np.float32)
    before = _patch(patches[0], (np.array([x, y, w, h]) - [x0, y0, 0, 0]) * k)
    after = _patch(patches[1], (moved - [x0, y0, 0, 0]) * k)
    if before is None or after is None or _similarity(before, after) < MIN_SIMILARITY:
        return None  # what is there now does not look like the face: it left or was covered
    return moved


#: Where the tracked points sit in a box, as fractions of its width and height.
_GRID = np.stack(
    np.meshgrid((np.arange(FLOW_GRID) + 0.5) / FLOW_GRID, (np.arange(FLOW_GRID) + 0.5) / FLOW_GRID),
    axis=-1,
).reshape(-1, 2)


def _median(values: np.ndarray) -> np.ndarray:
    """``np.median`` along the first axis, by sorting: ten times faster on a few dozen values."""
    ordered = np.sort(values, axis=0)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def _distances(points: np.ndarray, shift: int) -> np.ndarray:
    """Distance from each point to the one ``shift`` places further on (cyclically)."""
    d = points - np.concatenate((points[shift:], points[:shift]))
    return np.sqrt((d * d).sum(axis=1))


def _patch(image: np.ndarray, xywh: np.ndarray) -> np.ndarray | None:
    """The box's pixels at a fixed 16x16 size, or None if it lies mostly outside."""
    x, y, w, h = xywh
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(image.shape[1], int(round(x + w))), min(image.shape[0], int(round(y + h)))
    if (x1 - x0) * (y1 - y0) < 0.5 * w * h or min(x1 - x0, y1 - y0) < 4:
        return None
    return cv2.resize(image[y0:y1, x0:x1], (16, 16), interpolation=cv2.INTER_AREA)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two equal-size patches (1: same up to brightness)."""
    a = a.astype(np.float32) - a.mean()
    b = b.astype(np.float32) - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def picture_change(a: tuple, b: tuple) -> tuple[float, float]:
    """How two (index, thumbnail, histogram) pictures differ: the thumbnails' mean absolute
    difference (grey levels) and the histograms' total variation (0-1)."""
    return float(np.mean(cv2.absdiff(a[1], b[1]))), float(np.abs(a[2] - b[2]).sum()) / 2


def _is_new_shot(change: float, shift: float) -> bool:
    """Whether a picture change is a new shot (see ``SHOT_THRESHOLD``)."""
    return change > SHOT_THRESHOLD and shift > SHOT_HISTOGRAM_SHIFT


def _thumbnail(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """A 32x32 luma thumbnail and a 32-bin luma histogram (shares), from every 8th pixel."""
    sample = np.ascontiguousarray(frame.luma()[::8, ::8])
    histogram = cv2.calcHist([sample], [0], None, [32], [0, 256]).ravel()
    thumb = cv2.resize(sample, (32, 32), interpolation=cv2.INTER_AREA)
    return thumb, histogram / max(1.0, float(histogram.sum()))


def _drop_duplicates(xywh: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS: two followed faces that became one keep the higher score (then the first)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    overlap = iou_matrix(xywh, xywh)
    for i in order:
        if all(overlap[i, j] <= DUPLICATE_IOU for j in keep):
            keep.append(int(i))
    keep.sort()
    return xywh[keep], scores[keep]
