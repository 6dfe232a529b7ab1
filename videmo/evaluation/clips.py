"""Accuracy on labeled video clips, measured through the same path as ``videmo run``.

A labeled folder holds clips and a ``labels.csv`` with at least ``file`` and
``fer2013_class`` (one of the 7 FER2013 class names). Each clip is decoded,
its faces detected, cropped, classified and tracked exactly as ``videmo run``
does (serially, in this process); the clip's *main face* is the face with the
most timeline rows, and the clip's prediction is that face's ``dominant_emotion``
in ``faces.csv`` (the class with the highest mean raw probability), the label a
user reads. A clip with no face counts as wrong.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from videmo.damage import damage_line, damage_summary
from videmo.errors import DataError, OutputError, VidemoError
from videmo.inputs import VIDEO_SUFFIXES
from videmo.outputs.timeline import faces_summary
from videmo.parallel import frame_times
from videmo.pipeline import Analyzer, reduce_detections
from videmo.settings import Settings
from videmo.spec import EMOTIONS
from videmo.video import index_packets, probe

LABELS_FILE = "labels.csv"
#: The accuracy table's row of all clips together.
TOTAL_ROW = "all"


@dataclass(frozen=True)
class LabeledClip:
    folder: str
    path: Path
    label: str
    file: str  # as listed in labels.csv, normalised (``./a.mp4`` is ``a.mp4``)


def read_labels(folder: Path, name: str | None = None) -> list[LabeledClip]:
    """The clips listed in ``folder/labels.csv``; one-line DataError on anything malformed.

    ``name`` labels the folder's rows in the accuracy table (default: its name).
    """
    path = folder / LABELS_FILE
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "no such folder"
        raise DataError(f"{folder}: {what}")
    if not path.is_file():
        raise DataError(f"{folder}: no {LABELS_FILE} (columns: file, fer2013_class)")
    table = _read_table(path)
    missing = {"file", "fer2013_class"} - set(table.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    if table.empty:
        raise DataError(f"{path}: no clips listed")
    if (table["file"].str.strip() == "").any():
        raise DataError(f"{path}: a row has no file name")
    files = table["file"].map(os.path.normpath)
    # ``a.mp4``, ``./a.mp4`` and its absolute path are one clip: it would be scored twice
    same = files.map(lambda file: (folder / file).resolve())
    twice = files[same.duplicated()].unique()
    if len(twice):
        raise DataError(f"{path}: {twice[0]} is listed more than once")
    clips = []
    for file, label in zip(files, table["fer2013_class"], strict=True):
        if not label.strip():
            raise DataError(f"{path}: {file}: no fer2013_class")
        if label not in EMOTIONS:
            raise DataError(f"{path}: {file}: class {label!r} is not one of {', '.join(EMOTIONS)}")
        clip = folder / file
        if not clip.is_file():
            raise DataError(f"{path}: listed clip {file} not found")
        clips.append(LabeledClip(name or folder.name, clip, label, file))
    return clips


def _read_table(path: Path) -> pd.DataFrame:
    """``labels.csv`` as strings; a row with more fields than the header is an error (pandas
    would quietly take the first field as the row's index and shift the rest)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # a clip may be called NA.mp4 or "null": no string is read as missing
            table = pd.read_csv(path, dtype=str, index_col=False, keep_default_na=False)
            header = pd.read_csv(path, dtype=str, header=None, nrows=1, keep_default_na=False)
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: a row has more fields than the header") from None
    except pd.errors.ParserError as exc:
        extra = re.search(r"Expected \d+ fields in line (\d+), saw \d+", str(exc))
        if extra:
            raise DataError(f"{path}: line {extra[1]} has more fields than the header") from None
        raise DataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    names = [name.strip() for name in header.iloc[0]]
    twice = sorted(name for name in ("file", "fer2013_class") if names.count(name) > 1)
    if twice:  # pandas would rename the second "fer2013_class" and use the first unsaid
        # (other columns may repeat or be blank, as spreadsheets save them: they are not read)
        raise DataError(f"{path}: column {twice[0]} appears more than once in the header")
    return table


def unlisted_videos(folder: Path, clips: Sequence[LabeledClip]) -> list[Path]:
    """Videos directly in ``folder`` that ``labels.csv`` does not list (they are not scored)."""
    listed = {clip.path.resolve() for clip in clips}
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file() and p.resolve() not in listed
    )


def labeled_clips(folders: Sequence[Path]) -> list[LabeledClip]:
    """Every listed clip of every folder, named as in the accuracy table."""
    names = folder_names(folders)
    clips = [
        clip
        for folder, name in zip(folders, names, strict=True)
        for clip in read_labels(Path(folder), name)
    ]
    seen: dict[Path, LabeledClip] = {}
    for clip in clips:  # one clip listed by two folders' labels would be scored twice
        first = seen.setdefault(clip.path.resolve(), clip)
        if first is not clip:
            raise DataError(
                f"{clip.path}: listed by the labels of both {first.folder} and {clip.folder}"
            )
    return clips


def refuse_input_targets(targets: Sequence[Path | None], folders: Sequence[Path],
                         clips: Sequence[LabeledClip]) -> None:  # fmt: skip
    """An output file must not replace a clip or a ``labels.csv`` being evaluated."""
    inputs = {clip.path.resolve() for clip in clips}
    inputs |= {(Path(folder) / LABELS_FILE).resolve() for folder in folders}
    for target in targets:
        if target is not None and Path(target).resolve() in inputs:
            raise OutputError(f"cannot write {target}: it is one of the inputs being evaluated")
        if target is not None and Path(target).is_file() and _is_video_name(Path(target)):
            raise OutputError(f"cannot write {target}: it is a video, not a table or an image")


def refuse_table_target(target: Path | None) -> None:
    """``--csv`` writes a results table: a ``.csv`` name, and never any folder's labels.

    A name of another kind (``good.onnx``, ``fer2013.csv.gz``) is a swapped or mistyped
    argument that would replace that file, as ``videmo evaluate --json`` refuses too; a
    pipe or device (``/dev/stdout``) is written into and keeps its name.
    """
    if target is None:
        return
    path = Path(target)
    special = path.exists() and not path.is_file()
    if not special and path.suffix.lower() != ".csv":
        raise OutputError(f"cannot write {target}: give the per-clip table a .csv name "
                          "(a file of another kind is never overwritten)")  # fmt: skip
    if path.name.lower() == LABELS_FILE and path.is_file():
        raise OutputError(f"cannot write {target}: it is a folder's clip labels, not a table "
                          "of results")  # fmt: skip


def _is_video_name(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def folder_names(folders: Sequence[Path]) -> list[str]:
    """How each folder is named in the accuracy table: its name, or its path where names clash.

    The same folder given twice is refused: its clips would be counted twice.
    """
    seen: dict[Path, Path] = {}
    for folder in folders:
        key = Path(folder).resolve()
        if key in seen:
            raise DataError(f"{folder}: given twice (as {seen[key]} too)")
        seen[key] = Path(folder)
    names = [Path(folder).name for folder in folders]
    # "all" is the total's row: a folder of that name is named by its path, as in a clash
    clash = {name for name in names if names.count(name) > 1} | {TOTAL_ROW, ""}
    labels = [
        str(folder) if name in clash else name for folder, name in zip(folders, names, strict=True)
    ]
    return [
        str(Path(f).resolve()) if label == TOTAL_ROW else label
        for f, label in zip(folders, labels, strict=True)
    ]


def main_face(timeline: pd.DataFrame) -> pd.Series | None:
    """The ``faces.csv`` row of the face seen in most frames (ties: the earliest face).

    Its ``dominant_emotion`` is the clip's prediction: the very label a user reads
    in ``faces.csv`` and the report.
    """
    faces = faces_summary(timeline)
    if faces.empty:
        return None
    return faces.iloc[int(faces["n_frames"].to_numpy().argmax())]  # first maximum: lowest id


def evaluate_clips(
    clips: Sequence[LabeledClip],
    settings: Settings,
    progress: Callable[[LabeledClip], None] | None = None,
) -> pd.DataFrame:
    """One row per clip (``labeled_clips``): folder, file, label, predicted, correct, main
    face, its mean probs, damage and error."""
    analyzer = Analyzer(settings)
    rows = []
    for clip in clips:
        if progress is not None:
            progress(clip)
        try:
            timeline, damage = _analyse(analyzer, clip.path, settings)
            error = ""
        except VidemoError as exc:
            timeline, damage, error = pd.DataFrame(), "", str(exc)
        if damage and settings.strict:  # --strict: a damaged clip is not scored
            timeline, error = pd.DataFrame(), damage
        face = main_face(timeline)
        predicted = str(face["dominant_emotion"]) if face is not None else ""
        rows.append(
            {
                "folder": clip.folder,
                "file": clip.file,
                "label": clip.label,
                "predicted": predicted,
                "correct": predicted == clip.label,
                "main_face": int(face["face_id"]) if face is not None else -1,
                "face_rows": int(face["n_frames"]) if face is not None else 0,
                **{
                    f"mean_{name}": round(float(face[f"mean_{name}"]), 4)
                    if face is not None
                    else np.nan
                    for name in EMOTIONS
                },
                "damage": damage,
                "error": error,
            }
        )
    return pd.DataFrame(rows)


def _analyse(analyzer: Analyzer, path: Path, settings: Settings) -> tuple[pd.DataFrame, str]:
    """A clip's timeline, as ``videmo run`` makes it, and its damage line ("" if intact)."""
    info, index = probe(path), index_packets(path)
    chunk = analyzer.run_chunk(path, 0, None, index)
    damage = damage_summary(info, index, [chunk])
    timeline = reduce_detections(chunk.detections, settings, *frame_times([chunk]))
    return timeline, damage_line(damage) if damage else ""


def without_face(per_clip: pd.DataFrame) -> pd.Series:
    """Clips that were read but in which no face was confirmed (they count as wrong)."""
    return (per_clip["predicted"] == "") & (per_clip["error"] == "")


def accuracy_table(per_clip: pd.DataFrame) -> pd.DataFrame:
    """Right / clips / accuracy per folder, plus an ``all`` row."""
    grouped = per_clip.groupby("folder", sort=True)["correct"].agg(["sum", "count"])
    grouped.loc[TOTAL_ROW] = [per_clip["correct"].sum(), len(per_clip)]
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
