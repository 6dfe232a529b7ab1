"""Accuracy on labeled video clips, measured through the same path as ``videmo run``.

A labeled folder holds clips and a ``labels.csv`` with at least ``file`` and
``fer2013_class`` (one of the 7 FER2013 class names). Each clip is decoded,
its faces detected, cropped, classified and tracked exactly as ``videmo run``
does (serially, in this process); the clip's *main face* is the face with the
most timeline rows, and the clip's prediction is the class with the highest
mean raw probability of that face. A clip with no face counts as wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from videmo.errors import DataError, VidemoError
from videmo.pipeline import Analyzer, reduce_detections
from videmo.settings import Settings
from videmo.spec import EMOTIONS

LABELS_FILE = "labels.csv"
PROB_COLUMNS = [f"prob_{name}" for name in EMOTIONS]


@dataclass(frozen=True)
class LabeledClip:
    folder: str
    path: Path
    label: str


def read_labels(folder: Path) -> list[LabeledClip]:
    """The clips listed in ``folder/labels.csv``; one-line DataError on anything malformed."""
    path = folder / LABELS_FILE
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "no such folder"
        raise DataError(f"{folder}: {what}")
    if not path.is_file():
        raise DataError(f"{folder}: no {LABELS_FILE} (columns: file, fer2013_class)")
    try:
        table = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    missing = {"file", "fer2013_class"} - set(table.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    clips = []
    for file, label in zip(table["file"], table["fer2013_class"], strict=True):
        if label not in EMOTIONS:
            raise DataError(f"{path}: {file}: class {label!r} is not one of {', '.join(EMOTIONS)}")
        clip = folder / file
        if not clip.is_file():
            raise DataError(f"{path}: listed clip {file} not found")
        clips.append(LabeledClip(folder.name, clip, label))
    return clips


def main_face_probs(timeline: pd.DataFrame) -> tuple[int, int, np.ndarray]:
    """(face_id, rows, mean raw probabilities) of the face seen in most frames."""
    if timeline.empty:
        return -1, 0, np.full(len(EMOTIONS), np.nan)
    counts = timeline["face_id"].value_counts()
    top = counts[counts == counts.max()].index.min()  # ties: the earliest face
    rows = timeline[timeline["face_id"] == top]
    return int(top), len(rows), rows[PROB_COLUMNS].to_numpy(np.float64).mean(axis=0)


def evaluate_clips(
    folders: Sequence[Path],
    settings: Settings,
    progress: Callable[[LabeledClip], None] | None = None,
) -> pd.DataFrame:
    """One row per clip: folder, file, label, predicted, correct, main face, its mean probs."""
    clips = [clip for folder in folders for clip in read_labels(Path(folder))]
    analyzer = Analyzer(settings)
    rows = []
    for clip in clips:
        if progress is not None:
            progress(clip)
        try:
            chunk = analyzer.run_chunk(clip.path, 0, None)
            timeline = reduce_detections(chunk.detections, settings, chunk.analysed_times)
            error = ""
        except VidemoError as exc:
            timeline, error = pd.DataFrame(columns=["face_id", *PROB_COLUMNS]), str(exc)
        face, n_rows, probs = main_face_probs(timeline)
        predicted = EMOTIONS[int(np.argmax(probs))] if n_rows else ""
        rows.append(
            {
                "folder": clip.folder,
                "file": clip.path.name,
                "label": clip.label,
                "predicted": predicted,
                "correct": predicted == clip.label,
                "main_face": face,
                "face_rows": n_rows,
                **{
                    f"mean_{name}": round(float(p), 4)
                    for name, p in zip(EMOTIONS, probs, strict=True)
                },
                "error": error,
            }
        )
    return pd.DataFrame(rows)


def accuracy_table(per_clip: pd.DataFrame) -> pd.DataFrame:
    """Right / clips / accuracy per folder, plus an ``all`` row."""
    grouped = per_clip.groupby("folder", sort=True)["correct"].agg(["sum", "count"])
    grouped.loc["all"] = [per_clip["correct"].sum(), len(per_clip)]
    grouped.columns = ["right", "clips"]
    grouped["accuracy"] = (grouped["right"] / grouped["clips"]).round(4)
    return grouped.astype({"right": int, "clips": int})


def confusion(per_clip: pd.DataFrame) -> np.ndarray:
    """7x7 counts, rows = label, columns = prediction (clips without a face are left out)."""
    matrix = np.zeros((len(EMOTIONS), len(EMOTIONS)), int)
    for label, predicted in zip(per_clip["label"], per_clip["predicted"], strict=True):
        if predicted:
            matrix[EMOTIONS.index(label), EMOTIONS.index(predicted)] += 1
    return matrix
