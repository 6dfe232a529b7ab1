"""Face identity across frames (IOU tracker) and temporal smoothing.

Both run once over the merged detections of a whole video, in frame order.
They cost microseconds per frame, and running them after the parallel map
step makes a chunked run identical to a serial run by construction: a face
keeps its id across chunk boundaries because the tracker never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from videmo.detections import FaceDetections


@dataclass(frozen=True)
class TrackerConfig:
    """When detections in different frames are the same face.

    Attributes:
        iou_threshold: minimum box overlap to continue a track.
        min_hits: analysed frames in a row a track needs before it becomes a
            face (norfair's initialization delay); shorter tracks, typically
            one-frame false detections, are dropped. Frames where a face was
            followed between scheduled detections count as well, so a false
            detection on a scheduled frame that optical flow follows for
            ``min_hits`` frames becomes a face. (Dropping faces the detector
            found once and missed when it looked again was measured: it cost
            3.7 points of coverage on pasted faces, so it is not done.)
        max_gap_s: how long a confirmed face may go undetected and keep its id;
            a face may always miss one analysed frame, however far apart
            analysed frames are (``--every``).
        reacquire_iou: a confirmed face that no box continues at ``iou_threshold``
            takes a box left over by every other face and track if they overlap
            this much (ByteTrack's second association, for a different reason):
            between scheduled detections a face is followed, and a followed box
            that drifted while the head moved meets the next detection at an
            overlap of 0.2-0.3. Without this the face got a new id (3 of the
            shared multi-face clips' 7 clips had such breaks).
        reacquire_size_ratio: in that pass, the box may differ from the face's last box by
            at most this factor in width and in height: a drifted box keeps the face's size,
            while a weak overlap with a box of another size is another face (a blurred
            face in the background and the performer in front of it, at 0.13).
        rejoin_gap_s: a face lost (unseen for longer than ``max_gap_s``) is remembered
            this long: a new face that starts where it was lost, once it is confirmed,
            continues its id. A person who turns away from the camera for a second or
            two (a profile the detector cannot see) is then one face, not several
            (ByteTrack keeps lost tracks for its ``track_buffer`` in the same way).
        rejoin_iou: how much the new face's first box must overlap the lost face's last
            box (and be within ``reacquire_size_ratio`` of its size): the face is back
            where it was, not merely nearby.
    """

    iou_threshold: float = 0.3
    min_hits: int = 3
    max_gap_s: float = 0.5
    reacquire_iou: float = 0.1
    reacquire_size_ratio: float = 1.5
    rejoin_gap_s: float = 2.0
    rejoin_iou: float = 0.5


@dataclass
class _Track:
    rows: list[int] = field(default_factory=list)
    box: np.ndarray = field(default_factory=lambda: np.zeros(4))
    last_time: float = 0.0
    first_box: np.ndarray = field(default_factory=lambda: np.zeros(4))
    first_time: float = 0.0

    @property
    def hits(self) -> int:
        return len(self.rows)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection-over-union of xywh boxes, shape (len(a), len(b))."""
    a0, a1 = a[:, None, :2].astype(np.float64), (a[:, None, :2] + a[:, None, 2:]).astype(np.float64)
    b0, b1 = b[None, :, :2].astype(np.float64), (b[None, :, :2] + b[None, :, 2:]).astype(np.float64)
    sides = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)
    inter = sides[..., 0] * sides[..., 1]
    union = np.prod(a1 - a0, axis=-1) + np.prod(b1 - b0, axis=-1) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _similar_size(a: np.ndarray, b: np.ndarray, ratio: float) -> np.ndarray:
    """(len(a), len(b)): whose widths and heights differ by at most a factor ``ratio``."""
    r = a[:, None, 2:] / np.maximum(b[None, :, 2:], 1e-9)
    return ((r <= ratio) & (r >= 1 / ratio)).all(-1)


def _assign(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, column) pairs of the assignment maximising total IOU among pairs above ``threshold``.

    Pairs below the threshold are ruled out before assigning (gating, as ByteTrack
    does with ``lap``'s cost limit), so a weak pair can never displace a good one.
    Usually every track then overlaps at most one box and every box at most one
    track, and those pairs are the answer; scipy's Hungarian solver (half a second
    to import) is loaded only for frames where faces really compete.
    """
    gated = np.where(iou >= threshold, iou, 0.0)
    candidates = gated > 0
    if (candidates.sum(axis=0) <= 1).all() and (candidates.sum(axis=1) <= 1).all():
        rows, cols = np.nonzero(candidates)
    else:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-gated)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if candidates[r, c]]


class _Tracker:
    """Online IOU tracker over frames in order; keeps every track's row list."""

    def __init__(self, config: TrackerConfig) -> None:
        self.config = config
        self.confirmed: list[_Track] = []
        self.tentative: list[_Track] = []
        self.lost: list[_Track] = []  # confirmed faces unseen for a while: may rejoin
        self.finished: list[_Track] = []
        self._recent = [-np.inf, -np.inf]  # times of the two analysed frames before this one

    def _match(
        self,
        tracks: list[_Track],
        boxes: np.ndarray,
        free: list[int],
        threshold: float,
        size_ratio: float = np.inf,
    ) -> list[tuple]:
        """Tracks matched to free boxes: the best assignment among pairs above ``threshold``
        whose widths and heights differ by at most ``size_ratio``."""
        if not tracks or not free:
            return []
        last = np.stack([t.box for t in tracks])
        iou = iou_matrix(last, boxes[free])
        if np.isfinite(size_ratio):
            iou = np.where(_similar_size(last, boxes[free], size_ratio), iou, 0.0)
        return [(tracks[r], free[c]) for r, c in _assign(iou, threshold)]

    def update(self, rows: np.ndarray, boxes: np.ndarray, now: float, new_shot: bool) -> None:
        """Feed one analysed frame: its row numbers, boxes and time.

        At a ``new_shot`` every face ends: the same place in the picture now shows
        someone else.
        """
        if new_shot:
            self.finished += self.confirmed + self.lost
            self.confirmed, self.tentative, self.lost = [], [], []
        expired = [t for t in self.confirmed if self._expired(t, now)]
        self.confirmed = [t for t in self.confirmed if t not in expired]
        forgotten = [t for t in self.lost if now - t.last_time > self.config.rejoin_gap_s]
        self.finished += forgotten
        self.lost = [t for t in self.lost if t not in forgotten] + expired
        self._recent = [self._recent[1], now]
        free = list(range(len(rows)))
        self._continue(self.confirmed, rows, boxes, free, now, self.config.iou_threshold)
        self._continue(self.tentative, rows, boxes, free, now, self.config.iou_threshold)
        unmatched = [t for t in self.confirmed if t.last_time != now]
        self._continue(unmatched, rows, boxes, free, now, self.config.reacquire_iou,
                       self.config.reacquire_size_ratio)  # fmt: skip
        # A tentative track dies on its first miss; new boxes start tentative tracks.
        self.tentative = [t for t in self.tentative if t.last_time == now]
        self.tentative += [_Track([int(rows[b])], boxes[b], now, boxes[b], now) for b in free]
        ready = [t for t in self.tentative if t.hits >= self.config.min_hits]
        self.tentative = [t for t in self.tentative if t.hits < self.config.min_hits]
        self.confirmed += self._rejoin(ready)

    def _rejoin(self, ready: list[_Track]) -> list[_Track]:
        """Newly confirmed tracks, each continuing the lost face it starts where, if any.

        The new track's first box is matched against the lost faces' last boxes (best
        assignment above ``rejoin_iou``, sizes within ``reacquire_size_ratio``); a lost
        face that is matched takes the new track's rows and is confirmed again.
        """
        if not ready or not self.lost:
            return ready
        last = np.stack([t.box for t in self.lost])
        first = np.stack([t.first_box for t in ready])
        similar = _similar_size(last, first, self.config.reacquire_size_ratio)
        before = np.array([[old.last_time < new.first_time for new in ready] for old in self.lost])
        iou = np.where(similar & before, iou_matrix(last, first), 0.0)
        out, rejoined = list(ready), set()
        for r, c in _assign(iou, self.config.rejoin_iou):
            old, new = self.lost[r], ready[c]
            old.rows += new.rows
            old.box, old.last_time = new.box, new.last_time
            out[c] = old
            rejoined.add(r)
        self.lost = [t for r, t in enumerate(self.lost) if r not in rejoined]
        return out

    def _continue(
        self,
        tracks: list[_Track],
        rows: np.ndarray,
        boxes: np.ndarray,
        free: list[int],
        now: float,
        threshold: float,
        size_ratio: float = np.inf,
    ) -> None:
        """Extend ``tracks`` with the free boxes they match; those boxes are no longer free."""
        for t, b in self._match(tracks, boxes, free, threshold, size_ratio):
            t.rows.append(int(rows[b]))
            t.box, t.last_time = boxes[b], now
            free.remove(b)

    def _expired(self, t: _Track, now: float) -> bool:
        """Unseen for longer than ``max_gap_s``, and missed on two analysed frames already.

        A face missed on one analysed frame is always looked for on the next, however far
        apart ``--every`` puts them.
        """
        missed_twice = t.last_time < self._recent[0]
        return missed_twice and now - t.last_time > self.config.max_gap_s

    def face_ids(self, n_rows: int) -> np.ndarray:
        """1-based ids of confirmed tracks in order of first appearance; -1 elsewhere."""
        faces = sorted(self.finished + self.lost + self.confirmed, key=lambda t: t.rows[0])
        face_id = np.full(n_rows, -1, np.int64)
        for number, t in enumerate(faces, start=1):
            face_id[t.rows] = number
        return face_id


def track(
    dets: FaceDetections,
    config: TrackerConfig = TrackerConfig(),
    analysed_times: np.ndarray | None = None,
    shot_starts: np.ndarray | None = None,
) -> FaceDetections:
    """Assign ``face_id`` (1-based, in order of first appearance) to every row.

    The tracker is updated once per analysed frame, in time order, as norfair's
    and supervision's are: ``analysed_times`` lists every analysed frame's time,
    so a frame without detections counts as a miss (a tentative face dies, a
    confirmed face's gap grows). Without it only frames with detections are seen.
    At the times in ``shot_starts`` (shot cuts) every face ends and new ids begin.
    Rows that never joined a confirmed track keep ``face_id == -1``.
    Expects rows in canonical order (``FaceDetections.sorted``).
    """
    tracker = _Tracker(config)
    times = np.unique(dets.time_s) if analysed_times is None else np.asarray(analysed_times)
    order = np.searchsorted(times, dets.time_s) if len(dets) else np.zeros(0, int)
    if len(dets) and not np.array_equal(times[np.minimum(order, len(times) - 1)], dets.time_s):
        raise ValueError("detections at times that are not analysed frames")
    bounds = np.searchsorted(order, np.arange(len(times) + 1))
    cuts = np.isin(times, [] if shot_starts is None else shot_starts)
    for k, now in enumerate(times):
        rows = np.arange(bounds[k], bounds[k + 1])
        boxes = dets.xywh[rows].reshape(-1, 4)
        tracker.update(rows, boxes, float(now), bool(cuts[k]))
    out = dets[:]
    out.face_id = tracker.face_ids(len(dets))
    return out


def fill_unclassified(dets: FaceDetections) -> tuple[FaceDetections, np.ndarray]:
    """Give every tracked row probabilities, interpolated in time within its face.

    Faces are classified on a schedule (``--classify-every``); rows between carry
    NaN probabilities from the analysis. Each is filled per class by linear
    interpolation between the face's nearest classified rows (the nearest one
    before its first or after its last), so a row's probabilities still sum to 1.
    A face with no classified row at all (a track split off between classified
    frames and lost again) is dropped, and faces are renumbered so ids stay
    1, 2, ... in order of first appearance. Returns the filled detections and
    which rows were classified.
    """
    classified = ~np.isnan(dets.probs).any(axis=1)
    out = dets[:]
    out.probs, out.face_id = dets.probs.copy(), dets.face_id.copy()  # a slice is a view
    for face in np.unique(out.face_id[out.face_id > 0]):
        rows = np.flatnonzero(out.face_id == face)
        known = rows[classified[rows]]
        if not len(known):
            out.face_id[rows] = -1
        elif len(known) < len(rows):
            times, known_times = out.time_s[rows], out.time_s[known]
            for c in range(out.probs.shape[1]):
                out.probs[rows, c] = np.interp(times, known_times, out.probs[known, c])
    tracked = out.face_id > 0
    out.face_id[tracked] = np.unique(out.face_id[tracked], return_inverse=True)[1] + 1
    return out, classified


def smooth(dets: FaceDetections, time_constant_s: float) -> np.ndarray:
    """Zero-phase exponential smoothing of the probabilities per face, in seconds.

    videmo reads whole files, so it can smooth without lag: an exponential
    filter runs forward in time and then backward over its own output (as
    ``scipy.signal.filtfilt`` does), and the smoothed label changes when the
    face changes, not ``time_constant_s`` later. Each step's weight is
    ``1 - exp(-dt / tau)``, so smoothing is the same at any frame rate or
    ``--every`` step, and a face seen again after a long gap starts almost
    fresh. Rows without a face keep their raw values.
    """
    out = dets.probs.astype(np.float64).copy()
    if time_constant_s <= 0:
        return out.astype(np.float32)
    for face in np.unique(dets.face_id[dets.face_id > 0]):
        rows = np.flatnonzero(dets.face_id == face)
        times = dets.time_s[rows]
        forward = _exponential(out[rows], times, time_constant_s)
        out[rows] = _exponential(forward[::-1], times[::-1], time_constant_s)[::-1]
    return out.astype(np.float32)


def _exponential(values: np.ndarray, times: np.ndarray, time_constant_s: float) -> np.ndarray:
    """Causal exponential filter over rows of ``values`` at ``times`` (either direction)."""
    out = values.copy()
    alphas = 1.0 - np.exp(-np.abs(np.diff(times)) / time_constant_s)
    for i, alpha in enumerate(alphas, start=1):
        out[i] = out[i - 1] + alpha * (values[i] - out[i - 1])
    return out
