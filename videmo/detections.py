"""``FaceDetections``: the one columnar type that flows between pipeline stages.

Modelled on supervision's ``Detections``: every column is a numpy array with
one row per detected face, stages take it and return it, and it concatenates
and slices like an array. Rows are kept in (frame, x, y) order so results are
deterministic no matter how the work was split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from videmo.spec import EMOTIONS

N_CLASSES = len(EMOTIONS)

#: Column name -> (dtype, trailing shape). One place for the schema of the type.
_COLUMNS: dict[str, tuple[type, tuple[int, ...]]] = {
    "frame": (np.int64, ()),
    "time_s": (np.float64, ()),
    "xywh": (np.float32, (4,)),
    "score": (np.float32, ()),
    "probs": (np.float32, (N_CLASSES,)),
    "face_id": (np.int64, ()),
}


@dataclass
class FaceDetections:
    """Faces found in a run of frames.

    Attributes:
        frame: global frame index (presentation order, 0-based).
        time_s: presentation time of the frame in seconds (from pts).
        xywh: box in pixels of the upright, full-resolution frame.
        score: detector confidence.
        probs: raw emotion probabilities, columns in ``EMOTIONS`` order
            (all zeros until the classifier has run).
        face_id: track id, 1-based; -1 until the tracker has run, and for
            detections that never became a confirmed face.
    """

    frame: np.ndarray
    time_s: np.ndarray
    xywh: np.ndarray
    score: np.ndarray
    probs: np.ndarray
    face_id: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.frame)
        for name, (dtype, shape) in _COLUMNS.items():
            value = np.asarray(getattr(self, name), dtype=dtype).reshape((n, *shape))
            setattr(self, name, value)

    @classmethod
    def empty(cls) -> FaceDetections:
        return cls(
            **{name: np.zeros((0, *shape), dtype) for name, (dtype, shape) in _COLUMNS.items()}
        )

    @classmethod
    def for_frame(
        cls, frame: int, time_s: float, xywh: np.ndarray, score: np.ndarray
    ) -> FaceDetections:
        """Detections of one frame, before classification and tracking."""
        n = len(score)
        return cls(
            frame=np.full(n, frame),
            time_s=np.full(n, time_s),
            xywh=xywh,
            score=score,
            probs=np.zeros((n, N_CLASSES)),
            face_id=np.full(n, -1),
        )

    @classmethod
    def concat(cls, parts: Sequence[FaceDetections]) -> FaceDetections:
        if not parts:
            return cls.empty()
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, index: slice | np.ndarray | Sequence[int]) -> FaceDetections:
        """Rows selected by a slice, a boolean mask or integer indices."""
        return FaceDetections(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def sorted(self) -> FaceDetections:
        """Rows in canonical order: frame, then left-to-right, then top-to-bottom."""
        order = np.lexsort((self.xywh[:, 1], self.xywh[:, 0], self.frame))
        return self[order]

    def to_frame(self) -> pd.DataFrame:
        """A flat DataFrame: frame, time_s, face_id, x, y, w, h, det_score, prob_<class>..."""
        data = {
            "frame": self.frame,
            "time_s": self.time_s,
            "face_id": self.face_id,
            "x": self.xywh[:, 0],
            "y": self.xywh[:, 1],
            "w": self.xywh[:, 2],
            "h": self.xywh[:, 3],
            "det_score": self.score,
        }
        data.update({f"prob_{name}": self.probs[:, i] for i, name in enumerate(EMOTIONS)})
        return pd.DataFrame(data)

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> FaceDetections:
        return cls(
            frame=df["frame"].to_numpy(),
            time_s=df["time_s"].to_numpy(),
            xywh=df[["x", "y", "w", "h"]].to_numpy(),
            score=df["det_score"].to_numpy(),
            probs=df[[f"prob_{name}" for name in EMOTIONS]].to_numpy(),
            face_id=df["face_id"].to_numpy() if "face_id" in df else np.full(len(df), -1),
        )


@dataclass(frozen=True)
class SmallFaces:
    """Faces the detector found but left out as smaller than ``--min-face``.

    Counted on the frames detected in full (between them faces are followed, not
    found), per chunk, and merged per video: the same figures however the video is split.
    """

    detection_frames: int = 0  # frames the detector saw whole
    frames: int = 0  # of those, frames with at least one face left out as too small
    most: int = 0  # the most left out in one frame
    smallest: float = 0.0  # the smallest side left out, in frame pixels (0: none)

    def add(self, sides: np.ndarray) -> SmallFaces:
        """This tally with one more frame detected in full, where ``sides`` were left out."""
        smallest = round(float(np.min(sides)), 2) if len(sides) else 0.0
        return self.merged([self, SmallFaces(1, int(len(sides) > 0), len(sides), smallest)])

    @classmethod
    def merged(cls, parts: Iterable[SmallFaces]) -> SmallFaces:
        parts = list(parts)
        sides = [p.smallest for p in parts if p.frames]
        return cls(
            sum(p.detection_frames for p in parts),
            sum(p.frames for p in parts),
            max((p.most for p in parts), default=0),
            min(sides, default=0.0),
        )

    @property
    def share(self) -> float:
        """Share of the frames detected in full that had a face left out as too small."""
        return self.frames / self.detection_frames if self.detection_frames else 0.0

    def describe(self) -> str:
        """Where and how small, in words: for the run's note and the report."""
        return (
            f"on {self.share:.0%} of the frames detected in full, up to {self.most} in a "
            f"frame, the smallest {int(self.smallest)} px"  # floored: --min-face N keeps it
        )
