"""Face thumbnails for the report: one recognisable picture per tracked face.

For each face the frames where the detector was most confident (YuNet's score is
highest for frontal, unoccluded faces) are candidates; those frames are decoded
again and the sharpest candidate crop (variance of the Laplacian) is kept. Only
the candidate frames are decoded, in a few short seeks, never the whole video.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from videmo.crop import crop_square
from videmo.errors import VideoError
from videmo.outputs.atomic import ensure_dir, write_bytes_atomic
from videmo.outputs.names import FACES_DIR, thumbnail_name
from videmo.video import Frame, PacketIndex, read_frames

#: Thumbnail side in pixels (the page shows them at this size or smaller).
THUMB_SIDE = 160
#: The thumbnail shows this much more than the detector box, so hair and chin are in.
THUMB_CONTEXT = 1.6
#: Candidate frames per face (highest detector scores).
CANDIDATES = 3
#: Thumbnails are made for at most this many faces (most frames first).
MAX_THUMBNAILS = 200
#: Candidate frames closer than this are decoded in one run instead of two seeks.
_MERGE_GAP = 48
_JPEG_QUALITY = 90


def candidates(timeline: pd.DataFrame, limit: int = MAX_THUMBNAILS) -> pd.DataFrame:
    """Rows that may become thumbnails: each face's ``CANDIDATES`` best-scored frames.

    Ties go to the larger box, then the earlier frame, so the choice is deterministic.
    Faces beyond ``limit`` (fewest frames) get none.
    """
    if len(timeline) == 0:
        return timeline.iloc[:0]
    sizes = timeline.groupby("face_id").size().sort_values(ascending=False, kind="stable")
    keep = set(sizes.index[:limit].tolist())
    rows = timeline[timeline["face_id"].isin(keep)].assign(area=lambda d: d["w"] * d["h"])
    rows = rows.sort_values(
        ["face_id", "det_score", "area", "frame"],
        ascending=[True, False, False, True],
        kind="stable",
    )
    return rows.groupby("face_id", sort=True).head(CANDIDATES)


def _frame_runs(frames: list[int]) -> list[tuple[int, int]]:
    """Sorted frame numbers grouped into ``[start, stop)`` ranges worth decoding in one go."""
    runs: list[tuple[int, int]] = []
    for f in sorted(set(frames)):
        if runs and f - runs[-1][1] < _MERGE_GAP:
            runs[-1] = (runs[-1][0], f + 1)
        else:
            runs.append((f, f + 1))
    return runs


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grayscale image at a fixed size (higher: sharper)."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    gray = cv2.resize(gray, (96, 96), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def thumbnail(frame_bgr: np.ndarray, x: float, y: float, w: float, h: float) -> np.ndarray:
    """A ``THUMB_SIDE`` square around the box, with context, padded at the frame edge."""
    side = max(w, h) * THUMB_CONTEXT
    square = crop_square(frame_bgr, x + w / 2 - side / 2, y + h / 2 - side / 2, side)
    interp = cv2.INTER_AREA if square.shape[0] >= THUMB_SIDE else cv2.INTER_CUBIC
    return cv2.resize(square, (THUMB_SIDE, THUMB_SIDE), interpolation=interp)


def _keep_sharpest(best: dict, face_id: int, frame: Frame, row: tuple) -> None:
    thumb = thumbnail(frame.image, row.x, row.y, row.w, row.h)
    key = (sharpness(thumb), -frame.index)  # ties: the earlier frame
    if face_id not in best or key > best[face_id][:2]:
        best[face_id] = (*key, thumb)


def best_thumbnails(
    path: Path, index: PacketIndex, timeline: pd.DataFrame
) -> dict[int, np.ndarray]:
    """Face id -> its sharpest candidate thumbnail (BGR uint8)."""
    rows = candidates(timeline)
    by_frame: dict[int, list[tuple]] = {}
    for row in rows.itertuples(index=False):
        by_frame.setdefault(int(row.frame), []).append(row)
    best: dict[int, tuple[float, int, np.ndarray]] = {}
    runs = _frame_runs(list(by_frame))
    if index.by_output and runs:  # every read decodes from the file's start: read once
        runs = [(runs[0][0], runs[-1][1])]
    for start, stop in runs:
        try:
            # colour only for the frames that hold a candidate, not the frames between
            for frame in read_frames(path, start, stop, index=index, bgr=False):
                for row in by_frame.get(frame.index, []):
                    _keep_sharpest(best, int(row.face_id), frame, row)
        except VideoError:  # a damaged file: the frames read so far still count
            continue
    return {face_id: item[2] for face_id, item in sorted(best.items())}


def write_thumbnails(
    path: Path, index: PacketIndex, timeline: pd.DataFrame, out_dir: Path
) -> list[Path]:
    """Write ``faces/face_NNN.jpg`` for each face; returns the files written."""
    thumbs = best_thumbnails(path, index, timeline)
    if not thumbs:
        return []
    faces_dir = ensure_dir(Path(out_dir) / FACES_DIR)
    written = []
    for face_id, image in thumbs.items():
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:  # pragma: no cover - OpenCV's JPEG encoder does not fail on uint8 BGR
            continue
        written.append(write_bytes_atomic(faces_dir / thumbnail_name(face_id), data.tobytes()))
    return written
