"""Draw face boxes and emotion labels onto video frames.

This runs once per frame of the annotated video, so it works on plain numpy
arrays (no pandas per call): :func:`rows_by_frame` splits the timeline once
into a :class:`FrameRows`,
and :func:`draw_faces` draws one frame's rows in place with OpenCV. Colours
are the plots' palette, converted to BGR once at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd

from videmo.outputs.palette import EMOTION_COLORS, hex_to_bgr, text_color_bgr
from videmo.outputs.timeline import EMOTION_DTYPE
from videmo.spec import EMOTIONS

#: BGR box colour and label text colour per class index (``EMOTIONS`` order).
_BOX_BGR: tuple[tuple[int, int, int], ...] = tuple(
    hex_to_bgr(EMOTION_COLORS[name]) for name in EMOTIONS
)
_TEXT_BGR: tuple[tuple[int, int, int], ...] = tuple(
    text_color_bgr(EMOTION_COLORS[name]) for name in EMOTIONS
)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class FaceRows(NamedTuple):
    """One frame's faces as arrays; ``draw_faces(image, *rows)`` draws them."""

    xywh: np.ndarray  # (n, 4) float32, pixels of the upright full-resolution frame
    face_id: np.ndarray  # (n,) int64
    emotion_idx: np.ndarray  # (n,) int, index into EMOTIONS
    confidence: np.ndarray  # (n,) float32, 0..1


@dataclass(frozen=True)
class FrameRows:
    """The timeline's per-frame rows as a few flat arrays, built once per video.

    Frame ``frames[i]`` owns rows ``bounds[i]:bounds[i + 1]`` of the other arrays;
    frames without faces are absent. Compact to pickle, so chunks of it travel to
    the workers that annotate video segments (``select``).
    """

    frames: np.ndarray  # (m,) int64, ascending
    bounds: np.ndarray  # (m + 1,) int64
    xywh: np.ndarray  # (n, 4) float32
    face_id: np.ndarray  # (n,) int64
    emotion_idx: np.ndarray  # (n,) int64
    confidence: np.ndarray  # (n,) float32

    def __len__(self) -> int:
        return int(self.frames.size)

    def __contains__(self, frame: int) -> bool:
        return self.get(frame) is not None

    def get(self, frame: int) -> FaceRows | None:
        """The faces of ``frame``, or None when it has none."""
        i = int(np.searchsorted(self.frames, frame))
        if i >= self.frames.size or self.frames[i] != frame:
            return None
        a, b = self.bounds[i], self.bounds[i + 1]
        return FaceRows(self.xywh[a:b], self.face_id[a:b], self.emotion_idx[a:b],
                        self.confidence[a:b])  # fmt: skip

    def select(self, start: int, stop: int) -> FrameRows:
        """The rows of frames in ``[start, stop)`` only."""
        lo, hi = np.searchsorted(self.frames, [start, stop])
        a, b = self.bounds[lo], self.bounds[hi]
        return FrameRows(
            self.frames[lo:hi], self.bounds[lo : hi + 1] - a, self.xywh[a:b],
            self.face_id[a:b], self.emotion_idx[a:b], self.confidence[a:b],
        )  # fmt: skip


def rows_by_frame(df: pd.DataFrame | None) -> FrameRows:
    """Split a timeline into per-frame arrays once, so each frame is a cheap lookup."""
    df = (
        df
        if df is not None
        else pd.DataFrame(
            {
                "frame": [],
                "x": [],
                "y": [],
                "w": [],
                "h": [],
                "face_id": [],
                "emotion": [],
                "confidence": [],
            }
        )
    )
    order = np.argsort(df["frame"].to_numpy(np.int64), kind="stable")
    frames = df["frame"].to_numpy(np.int64)[order]
    starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]]) if frames.size else frames
    codes = pd.Categorical(df["emotion"], dtype=EMOTION_DTYPE).codes.astype(np.int64)
    return FrameRows(
        frames=frames[starts],
        bounds=np.r_[starts, frames.size].astype(np.int64),
        xywh=df[["x", "y", "w", "h"]].to_numpy(np.float32).reshape(-1, 4)[order],
        face_id=df["face_id"].to_numpy(np.int64)[order],
        emotion_idx=codes[order],
        confidence=df["confidence"].to_numpy(np.float32)[order],
    )


def _style(height: int, width: int) -> tuple[float, int, int]:
    """Font scale, text thickness and box thickness for a frame of this size.

    Scaled so the label is about 2.5% of the frame's shorter side at any resolution (its
    height in a landscape frame). Scaled by the height alone, a label in a very tall frame
    (360x1600) was wider than the frame and lost its confidence off the edge.
    """
    side = min(height, width)
    scale = max(0.35, side / 900)
    thickness = max(1, round(side / 480))
    return scale, thickness, max(2, round(side / 300))


Rect = tuple[int, int, int, int]  # left, top, right, bottom (exclusive)


def _label_candidates(box: Rect, size: tuple[int, int], frame: tuple[int, int]) -> list[Rect]:
    """Where a label may go, best first: above the box, below it, inside its top edge.

    Each is shifted into the frame, so a face at the frame's edge still gets its label.
    """
    x0, y0, x1, y1 = box
    width, height = size
    frame_h, frame_w = frame
    left = min(max(0, x0), max(0, frame_w - width))
    tops = (y0 - height, y1, y0)
    return [
        (left, top, left + width, top + height)
        for top in (min(max(0, t), max(0, frame_h - height)) for t in tops)
    ]


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place_labels(boxes: list[Rect], sizes: list[tuple[int, int]],
                  frame: tuple[int, int]) -> list[Rect]:  # fmt: skip
    """One label rectangle per face, none covering a label placed before it where avoidable.

    Faces side by side at one height (a table of people) would otherwise have their labels
    printed over each other; a label that collides above its box goes below it, then inside
    its top edge, and only when all three collide does it take the first place regardless.
    """
    placed: list[Rect] = []
    for box, size in zip(boxes, sizes, strict=True):
        candidates = _label_candidates(box, size, frame)
        free = (c for c in candidates if not any(_overlaps(c, p) for p in placed))
        placed.append(next(free, candidates[0]))
    return placed


def draw_faces(
    image_bgr: np.ndarray,
    xywh: np.ndarray,
    face_ids: np.ndarray,
    emotion_idx: np.ndarray,
    confidence: np.ndarray,
) -> np.ndarray:
    """Draw each face's box and ``#<id> <emotion> <conf>%`` label onto ``image_bgr`` in place.

    Args:
        image_bgr: (H, W, 3) uint8, C-contiguous (OpenCV draws in place).
        xywh: (n, 4) boxes in pixels; boxes may extend past the frame edges.
        face_ids, emotion_idx, confidence: (n,) per face.

    Returns:
        ``image_bgr`` itself, for chaining.
    """
    height, width = image_bgr.shape[:2]
    scale, text_thick, box_thick = _style(height, width)
    xywh = np.rint(np.asarray(xywh, dtype=np.float64)).astype(np.int64).reshape(-1, 4)
    boxes = [(x, y, x + w, y + h) for x, y, w, h in xywh.tolist()]
    codes = np.asarray(emotion_idx).tolist()
    labels = [
        f"#{fid} {EMOTIONS[code]} {round(conf * 100)}%"
        for fid, code, conf in zip(np.asarray(face_ids).tolist(), codes,
                                   np.asarray(confidence, dtype=np.float64).tolist(), strict=True)
    ]  # fmt: skip
    metrics = [cv2.getTextSize(label, _FONT, scale, text_thick) for label in labels]
    sizes = [(tw + 4, th + baseline + 2) for (tw, th), baseline in metrics]
    for (x0, y0, x1, y1), code in zip(boxes, codes, strict=True):
        cv2.rectangle(image_bgr, (x0, y0), (x1 - 1, y1 - 1), _BOX_BGR[code], box_thick)
    places = _place_labels(boxes, sizes, (height, width))
    for label, code, ((_, _), baseline), (left, top, right, bottom) in zip(
        labels, codes, metrics, places, strict=True
    ):
        cv2.rectangle(image_bgr, (left, top), (right, bottom), _BOX_BGR[code], cv2.FILLED)
        cv2.putText(
            image_bgr,
            label,
            (left + 2, bottom - baseline - 1),
            _FONT,
            scale,
            _TEXT_BGR[code],
            text_thick,
            cv2.LINE_AA,
        )
    return image_bgr
