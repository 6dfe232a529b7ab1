"""The timeline: videmo's main output, and its schema in one place.

One row per (frame, tracked face). The same table is written twice:
``timeline.parquet`` (typed, compact, for programs) and ``timeline.csv`` (for
spreadsheets and eyes). Both must read back to the *same* DataFrame, so
numbers are quantized once, in :func:`build_timeline` (probabilities and times
to 6 decimals, boxes to 1/100 pixel), and the CSV prints each value with the
shortest text that parses back to it exactly. That makes the CSV readable,
lossless against the Parquet file, and byte-identical between reruns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from videmo.detections import FaceDetections
from videmo.errors import OutputError
from videmo.outputs.atomic import atomic_write, ensure_dir
from videmo.outputs.names import FACES_CSV, RUN_JSON, TIMELINE_CSV, TIMELINE_PARQUET
from videmo.resume import is_finished
from videmo.spec import EMOTIONS

PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{name}" for name in EMOTIONS)
SMOOTH_COLUMNS: tuple[str, ...] = tuple(f"smooth_{name}" for name in EMOTIONS)
MEAN_COLUMNS: tuple[str, ...] = tuple(f"mean_{name}" for name in EMOTIONS)

#: dtype of the ``emotion`` column: categories in ``EMOTIONS`` order, unordered
#: (emotions are not ranked), so ``.cat.codes`` are class indices.
EMOTION_DTYPE = pd.CategoricalDtype(categories=list(EMOTIONS), ordered=False)

#: Column -> dtype of ``timeline.parquet`` / ``timeline.csv``, in file order.
TIMELINE_COLUMNS: dict[str, object] = {
    "frame": np.dtype(np.int64),
    "time_s": np.dtype(np.float64),
    "face_id": np.dtype(np.int64),
    "x": np.dtype(np.float32),
    "y": np.dtype(np.float32),
    "w": np.dtype(np.float32),
    "h": np.dtype(np.float32),
    "det_score": np.dtype(np.float32),
    "classified": np.dtype(bool),
    **{col: np.dtype(np.float32) for col in PROB_COLUMNS},
    **{col: np.dtype(np.float32) for col in SMOOTH_COLUMNS},
    "emotion": EMOTION_DTYPE,
    "confidence": np.dtype(np.float32),
}

#: Column -> dtype of ``faces.csv`` (one row per tracked face).
FACES_COLUMNS: dict[str, object] = {
    "face_id": np.dtype(np.int64),
    "first_s": np.dtype(np.float64),
    "last_s": np.dtype(np.float64),
    "first_frame": np.dtype(np.int64),
    "last_frame": np.dtype(np.int64),
    "n_frames": np.dtype(np.int64),
    "dominant_emotion": EMOTION_DTYPE,
    **{col: np.dtype(np.float32) for col in MEAN_COLUMNS},
}

#: Decimals kept per float column; beyond this the digits are noise, not signal.
_DECIMALS: dict[str, int] = {
    "time_s": 6,
    "x": 2,
    "y": 2,
    "w": 2,
    "h": 2,
    "det_score": 6,
    "confidence": 6,
    "first_s": 6,
    "last_s": 6,
    **{col: 6 for col in PROB_COLUMNS + SMOOTH_COLUMNS + MEAN_COLUMNS},
}


def _quantize(values: np.ndarray, column: str, dtype: np.dtype) -> np.ndarray:
    """Round in float64 first so the stored float32 is the one nearest the decimal."""
    decimals = _DECIMALS.get(column)
    if decimals is None:
        return np.asarray(values, dtype=dtype)
    return np.round(np.asarray(values, dtype=np.float64), decimals).astype(dtype)


def _conform(df: pd.DataFrame, schema: dict[str, object]) -> pd.DataFrame:
    """Exactly the schema's columns, in order, with its dtypes and a fresh RangeIndex."""
    missing = [col for col in schema if col not in df.columns]
    if missing:
        raise KeyError(", ".join(missing))
    data = {}
    for col, dtype in schema.items():
        if isinstance(dtype, pd.CategoricalDtype):
            data[col] = df[col].astype(dtype).array
        else:
            data[col] = np.asarray(df[col].to_numpy(), dtype=dtype)
    return pd.DataFrame(data)


def empty_timeline() -> pd.DataFrame:
    """A zero-row timeline with the full schema."""
    return _empty(TIMELINE_COLUMNS)


def _empty(schema: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame({col: pd.Series([], dtype=dtype) for col, dtype in schema.items()})


def build_timeline(
    dets: FaceDetections,
    smoothed: np.ndarray,
    *,
    classified: np.ndarray | None = None,
    drop_untracked: bool = True,
) -> pd.DataFrame:
    """The timeline table from tracked, classified detections.

    Args:
        dets: detections after classification and tracking.
        smoothed: (len(dets), n_classes) temporally smoothed probabilities,
            row-aligned with ``dets`` and columns in ``EMOTIONS`` order.
        classified: which rows the classifier saw (the others' raw probabilities
            were interpolated); default: all of them.
        drop_untracked: leave out rows with ``face_id < 0`` (detections that
            never became a confirmed face); the timeline is per face.

    Returns:
        Rows in (frame, face_id) order with exactly ``TIMELINE_COLUMNS``.
    """
    smoothed = np.asarray(smoothed, dtype=np.float32)
    if smoothed.shape != (len(dets), len(EMOTIONS)):
        raise ValueError(
            f"smoothed has shape {smoothed.shape}, expected {(len(dets), len(EMOTIONS))}"
        )
    if classified is None:
        classified = np.ones(len(dets), dtype=bool)
    keep = dets.face_id >= 0 if drop_untracked else np.ones(len(dets), dtype=bool)
    dets, smoothed, classified = dets[keep], smoothed[keep], classified[keep]
    order = np.lexsort((dets.face_id, dets.frame))
    dets, smoothed, classified = dets[order], smoothed[order], classified[order]

    raw = {
        "frame": dets.frame,
        "time_s": dets.time_s,
        "face_id": dets.face_id,
        **{name: dets.xywh[:, i] for i, name in enumerate("xywh")},
        "det_score": dets.score,
        "classified": classified,
        **{col: dets.probs[:, i] for i, col in enumerate(PROB_COLUMNS)},
        **{col: smoothed[:, i] for i, col in enumerate(SMOOTH_COLUMNS)},
        "confidence": smoothed.max(axis=1, initial=0.0),
    }
    data = {col: _quantize(raw[col], col, TIMELINE_COLUMNS[col]) for col in raw}
    codes = smoothed.argmax(axis=1) if len(smoothed) else np.zeros(0, dtype=np.int64)
    data["emotion"] = pd.Categorical.from_codes(codes, dtype=EMOTION_DTYPE)
    return pd.DataFrame({col: data[col] for col in TIMELINE_COLUMNS})


def _csv_text_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Floats as fixed-decimal text (``_DECIMALS`` per column) for a stable, readable CSV.

    The values were quantized to exactly these decimals, so the text parses
    back to the identical float32/float64.
    """
    if len(df) == 0:
        return df
    out = {}
    for col in df.columns:
        decimals = _DECIMALS.get(col)
        if decimals is None:
            out[col] = df[col]
        else:
            out[col] = np.char.mod(f"%.{decimals}f", df[col].to_numpy(np.float64))
    return pd.DataFrame(out)


#: Rows formatted at a time: the text of a long video's timeline never sits in memory at once.
_CSV_BLOCK_ROWS = 20_000


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    """UTF-8 CSV, ``\\n`` newlines, fixed decimals, header even when there are no rows.

    Written block by block (same bytes as one go) so memory stays flat with video length.
    """
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        for start in range(0, max(len(df), 1), _CSV_BLOCK_ROWS):
            block = _csv_text_columns(df.iloc[start : start + _CSV_BLOCK_ROWS])
            block.to_csv(fh, index=False, header=start == 0, lineterminator="\n")
    return path


def _write_parquet(df: pd.DataFrame, path: Path) -> Path:
    """Parquet via pyarrow; same DataFrame, same bytes (no timestamps in the file)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def write_timeline(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write ``timeline.parquet`` and ``timeline.csv`` into ``out_dir`` (created if needed)."""
    out_dir = ensure_dir(Path(out_dir))
    df = _conform(df, TIMELINE_COLUMNS)
    return [
        _write_parquet(df, out_dir / TIMELINE_PARQUET),
        _write_csv(df, out_dir / TIMELINE_CSV),
    ]


#: dtypes pandas can enforce while parsing the CSV (the categorical is checked afterwards).
def _plain(schema: dict[str, object]) -> dict[str, object]:
    """The dtypes ``pd.read_csv`` can apply directly (categories are conformed afterwards)."""
    return {c: d for c, d in schema.items() if not isinstance(d, pd.CategoricalDtype)}


def _read_any(path: Path, in_folder: str, what: str, schema: dict[str, object]) -> pd.DataFrame:
    """Load the raw table; a folder means its ``in_folder`` file, if its run finished."""
    if path.is_dir():
        if (path / in_folder).is_file() and not is_finished(path):
            why = "no" if not (path / RUN_JSON).exists() else "an unfinished or unreadable"
            raise OutputError(
                f"{path} holds no finished run ({why} {RUN_JSON}: it failed or was "
                "interrupted); run videmo on the video again"
            )
        path = path / in_folder
    if not path.is_file():
        raise OutputError(f"no {what} at {path}")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, encoding="utf-8", dtype=_plain(schema))
        return pq.read_table(path).to_pandas()
    except (OSError, ValueError, pa.ArrowException) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OutputError(f"cannot read {what} {path}: {reason}") from exc


def _conformed(df: pd.DataFrame, schema: dict[str, object], path: Path, what: str) -> pd.DataFrame:
    """``df`` with exactly ``schema``; one-line errors for a file that is not one of ours."""
    try:
        out = _conform(df, schema)
    except KeyError as exc:
        raise OutputError(f"not a videmo {what}: {path} lacks columns {exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise OutputError(f"not a videmo {what}: {path}: {exc}") from exc
    for col, dtype in schema.items():
        if isinstance(dtype, pd.CategoricalDtype) and out[col].isna().any():
            raise OutputError(f"not a videmo {what}: {path} has emotions outside {list(EMOTIONS)}")
    return out


def read_timeline(path: Path) -> pd.DataFrame:
    """Read a timeline from a ``.csv``, a ``.parquet`` or an output folder.

    Both formats come back with exactly ``TIMELINE_COLUMNS`` dtypes (the CSV
    loses them on disk), so downstream code never cares which file it got.
    """
    path = Path(path)
    df = _read_any(path, TIMELINE_PARQUET, "timeline", TIMELINE_COLUMNS)
    if "classified" not in df.columns and "prob_neutral" in df.columns:
        df["classified"] = True  # written before classification had a schedule: every row was
    return _conformed(df, TIMELINE_COLUMNS, path, "timeline")


def read_faces(path: Path) -> pd.DataFrame:
    """Read ``faces.csv`` (an output folder's, or the file) with the dtypes of
    ``FACES_COLUMNS`` (``dominant_emotion`` a category, like the timeline's ``emotion``)."""
    path = Path(path)
    df = _read_any(path, FACES_CSV, "faces table", FACES_COLUMNS)
    return _conformed(df, FACES_COLUMNS, path, "faces table")


def faces_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per face_id (ascending): when it was seen, its dominant emotion, mean raw probs.

    The dominant emotion is the class of the highest mean raw probability, as stored
    beside it (ties: the class earlier in ``EMOTIONS``). That is the figure
    ``videmo evaluate-clips`` measures, so the accuracy in the README is the accuracy
    of the label a user reads here and in the report.
    """
    if len(df) == 0:
        return _empty(FACES_COLUMNS)
    face_ids, groups = np.unique(df["face_id"].to_numpy(np.int64), return_inverse=True)
    grouped = df.groupby(groups, sort=True)
    raw = {
        "face_id": face_ids,
        "first_s": grouped["time_s"].min().to_numpy(),
        "last_s": grouped["time_s"].max().to_numpy(),
        "first_frame": grouped["frame"].min().to_numpy(),
        "last_frame": grouped["frame"].max().to_numpy(),
        "n_frames": grouped.size().to_numpy(),
        **{
            mean: grouped[prob].mean().to_numpy(np.float64)
            for mean, prob in zip(MEAN_COLUMNS, PROB_COLUMNS, strict=True)
        },
    }
    data = {col: _quantize(raw[col], col, FACES_COLUMNS[col]) for col in raw}
    dominant = np.stack([data[col] for col in MEAN_COLUMNS], axis=1).argmax(axis=1)
    data["dominant_emotion"] = pd.Categorical.from_codes(dominant, dtype=EMOTION_DTYPE)
    return pd.DataFrame({col: data[col] for col in FACES_COLUMNS})


def write_faces(df: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``faces.csv`` (the :func:`faces_summary` of timeline ``df``) into ``out_dir``."""
    out_dir = ensure_dir(Path(out_dir))
    return _write_csv(faces_summary(df), out_dir / FACES_CSV)
