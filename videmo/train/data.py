"""Load FER2013 into per-split uint8 arrays, without TensorFlow.

Only numpy, pandas and OpenCV are used here so that ``videmo evaluate`` works
on a plain install (no ``[train]`` extra). Two layouts are accepted:

* the Kaggle CSV ``emotion,pixels,Usage`` (plain or ``.gz``);
* the image-folder layout ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``.

Every malformed input raises a one-line :class:`~videmo.errors.DataError`.
"""

from __future__ import annotations

import lzma
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from videmo.errors import DataError
from videmo.spec import EMOTIONS

#: FER2013's native crop size; every row must carry SIDE * SIDE pixels.
SIDE = 48
SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
REQUIRED_COLUMNS: tuple[str, ...] = ("emotion", "pixels", "Usage")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclass(frozen=True)
class Split:
    """One split: ``images`` (N, 48, 48) uint8 and ``labels`` (N,) int64 in EMOTIONS order.

    ``rows`` are the 0-based data-row numbers in the source CSV (None for image
    folders): the key that joins FER+ votes to their images.
    """

    images: np.ndarray
    labels: np.ndarray
    rows: np.ndarray | None = None
    name: str = ""  # how reports name it, e.g. "PublicTest"
    file_rows: int | None = None  # data rows in the whole source CSV (None: image folders)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_fer2013(
    path: str | Path,
    limit_per_split: int | None = None,
    seed: int = 0,
) -> dict[str, Split]:
    """Load FER2013 from a CSV (plain/.gz) or an image-folder root.

    Only splits that are present are returned. ``limit_per_split`` keeps a
    seeded random subset of each split (for tiny CI runs) so that class mix
    stays representative rather than taking the first rows.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"FER2013 data not found: {path}")
    splits = _load_folder(path) if path.is_dir() else _load_csv(path)
    if not splits:  # evaluate reported success on nothing; export crashed
        raise DataError(f"{path}: no faces in the data (no {', '.join(SPLITS)} rows)")
    if limit_per_split is not None:
        splits = {name: _subset(s, limit_per_split, seed) for name, s in splits.items()}
    return splits


def require_split(splits: dict[str, Split], name: str, purpose: str) -> Split:
    """Return a split or raise a DataError saying why it is needed."""
    split = splits.get(name)
    if split is None or len(split) == 0:
        present = ", ".join(f"{k}={len(v)}" for k, v in splits.items()) or "none"
        raise DataError(f"no {name} rows in the data (needed for {purpose}; found: {present})")
    return split


def _subset(split: Split, limit: int, seed: int) -> Split:
    if len(split) <= limit:
        return split
    idx = np.sort(np.random.default_rng(seed).choice(len(split), size=limit, replace=False))
    rows = split.rows[idx] if split.rows is not None else None
    return Split(split.images[idx], split.labels[idx], rows, split.name, split.file_rows)


# --------------------------------------------------------------------------- CSV


#: What reading a CSV can raise for a bad file. EOFError is a truncated .gz (left to
#: click, it read as Ctrl-C); zlib.error and LZMAError are damaged compressed data.
_UNREADABLE = (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError,
               EOFError, zlib.error, lzma.LZMAError)  # fmt: skip


def _why_unreadable(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the compressed file ends early (cut short?)"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _load_csv(path: Path) -> dict[str, Split]:
    try:
        frame = pd.read_csv(path, dtype={"pixels": str, "Usage": str}, compression="infer")
    except _UNREADABLE as exc:
        raise DataError(f"cannot read FER2013 CSV {path}: {_why_unreadable(exc)}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path.name}: missing column(s) {', '.join(missing)} "
            f"(expected {','.join(REQUIRED_COLUMNS)})"
        )
    labels = _parse_labels(frame["emotion"], path.name)
    images = _parse_pixels(frame["pixels"], path.name)
    usage = frame["Usage"].astype(str).str.strip()
    unknown = sorted(set(usage) - set(SPLITS))
    if unknown:
        raise DataError(f"{path.name}: unknown Usage value(s) {unknown[:3]} (expected {SPLITS})")
    rows = np.arange(len(frame), dtype=np.int64)
    return {
        name: Split(images[mask], labels[mask], rows[mask], file_rows=len(frame))
        for name in SPLITS
        if (mask := (usage == name).to_numpy()).any()
    }


def _parse_labels(column: pd.Series, where: str) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() | (values % 1 != 0) | (values < 0) | (values >= len(EMOTIONS))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{where}: row {row + 1}: emotion label {str(column.iloc[row])!r} "
            f"outside 0-{len(EMOTIONS) - 1}"
        )
    return values.to_numpy().astype(np.int64)


def _parse_pixels(column: pd.Series, where: str) -> np.ndarray:
    """Parse space-separated pixel strings into an (N, 48, 48) uint8 array."""
    out = np.empty((len(column), SIDE, SIDE), dtype=np.uint8)
    expected = SIDE * SIDE
    for row, text in enumerate(column.to_numpy()):
        tokens = str(text).split() if isinstance(text, str) else []
        if len(tokens) != expected:
            raise DataError(
                f"{where}: row {row + 1}: {len(tokens)} pixel values, expected {expected}"
            )
        try:
            values = np.array(tokens, dtype=np.int32)
        except OverflowError:  # digits only, beyond int32
            raise DataError(f"{where}: row {row + 1}: pixel values outside 0-255") from None
        except ValueError:
            raise DataError(f"{where}: row {row + 1}: non-numeric pixel values") from None
        if values.min() < 0 or values.max() > 255:
            raise DataError(f"{where}: row {row + 1}: pixel values outside 0-255")
        out[row] = values.reshape(SIDE, SIDE)
    return out


# ----------------------------------------------------------------- image folders


def _load_folder(root: Path) -> dict[str, Split]:
    """Read ``train/`` and ``test/`` class folders; file-name prefixes override the split."""
    parts: dict[str, tuple[list[np.ndarray], list[int]]] = {s: ([], []) for s in SPLITS}
    found_any = False
    for folder, default_split in (("train", "Training"), ("test", "PublicTest")):
        base = root / folder
        if not base.is_dir():
            continue
        for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            label = _class_index(class_dir.name, class_dir)
            for file in sorted(class_dir.iterdir()):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                found_any = True
                split = _split_from_name(file.name, default_split)
                parts[split][0].append(_read_gray48(file))
                parts[split][1].append(label)
    if not found_any:
        raise DataError(f"{root}: no images under train/<class>/ or test/<class>/")
    return {
        name: Split(np.stack(imgs), np.asarray(labels, dtype=np.int64))
        for name, (imgs, labels) in parts.items()
        if imgs
    }


def _class_index(name: str, where: Path) -> int:
    key = name.strip().lower()
    if key not in EMOTIONS:
        raise DataError(f"{where}: unknown class folder {name!r} (expected one of {EMOTIONS})")
    return EMOTIONS.index(key)


def _split_from_name(file_name: str, default: str) -> str:
    for split in SPLITS:
        if file_name.startswith(split + "_"):
            return split
    return default


def _read_gray48(file: Path) -> np.ndarray:
    image = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataError(f"{file}: not a readable image")
    if image.shape != (SIDE, SIDE):
        interp = cv2.INTER_AREA if min(image.shape) >= SIDE else cv2.INTER_LINEAR
        image = cv2.resize(image, (SIDE, SIDE), interpolation=interp)
    return image


# ------------------------------------------------------------------------- FER+


#: FER+ vote columns in FER2013 class order (``contempt`` has no FER2013 class).
FERPLUS_COLUMNS: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral",
)  # fmt: skip
#: Where ``ferplus_votes.csv.gz`` sits next to ``fer2013.csv.gz`` in ``../shared``.
FERPLUS_DEFAULT = Path("../ferplus/ferplus_votes.csv.gz")


@dataclass(frozen=True)
class FerPlusVotes:
    """FER+ crowd votes for FER2013 rows, indexed by data-row number.

    ``votes`` (rows, 7) holds the counts for the 7 FER2013 classes (contempt,
    unknown and not-a-face dropped); rows without FER+ votes are all zero.
    ``majority`` is FER+'s own majority label (-1 where FER+ drops the image).
    """

    votes: np.ndarray
    majority: np.ndarray
    usage: np.ndarray | None = None  # the FER2013 split each voted row belongs to ("" if none)

    def misaligned(self, split: Split, name: str) -> str | None:
        """Why the votes cannot be ``split``'s (a split called ``name``), or None.

        The votes are keyed by the row numbers of the original ``fer2013.csv``: any other
        CSV (a subset, another order) gets another image's votes. A file with fewer rows
        than the votes cover is a subset, even where its rows' splits happen to match.
        """
        rows = split.rows
        if rows is None or not len(rows):
            return None
        if split.file_rows is not None and split.file_rows < len(self.majority):
            return (
                f"the data has {split.file_rows:,} rows and the votes cover {len(self.majority):,}"
            )
        outside = rows[rows >= len(self.majority)]
        if len(outside):
            return f"data row {int(outside[0]) + 1} is not a row they have votes for"
        if self.usage is None:
            return None
        usage = self.usage[rows]
        wrong = rows[(usage != "") & (usage != name)]
        if len(wrong):
            return f"data row {int(wrong[0]) + 1} is not the {name} row they have votes for"
        return None

    def distribution(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vote shares (N, 7) for ``rows`` and a mask of the rows that have any vote."""
        counts = self.votes[rows].astype(np.float32)
        total = counts.sum(axis=1, keepdims=True)
        has = total[:, 0] > 0
        return np.divide(counts, np.maximum(total, 1.0)), has


def ferplus_path_for(fer2013_csv: str | Path) -> Path:
    """The FER+ votes file beside a FER2013 CSV in the ``shared/data`` layout."""
    return (Path(fer2013_csv).parent / FERPLUS_DEFAULT).resolve()


def load_ferplus(path: str | Path, n_rows: int | None = None) -> FerPlusVotes:
    """Read ``ferplus_votes.csv.gz`` into per-row vote counts and FER+ majority labels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"FER+ votes not found: {path}")
    try:
        frame = pd.read_csv(path, compression="infer")
    except _UNREADABLE as exc:
        raise DataError(f"cannot read FER+ votes {path}: {_why_unreadable(exc)}") from None
    needed = ("row", *FERPLUS_COLUMNS, "contempt", "unknown", "NF")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{path.name}: missing column(s) {', '.join(missing)}")
    size = int(frame["row"].max()) + 1 if n_rows is None else n_rows
    rows = frame["row"].to_numpy(np.int64)
    votes = np.zeros((size, len(FERPLUS_COLUMNS)), np.int16)
    votes[rows] = frame[list(FERPLUS_COLUMNS)].to_numpy(np.int16)
    majority = np.full(size, -1, np.int64)
    majority[rows] = _ferplus_majority(frame[[*FERPLUS_COLUMNS, "contempt", "unknown", "NF"]])
    usage = np.full(size, "", object)
    if "Usage" in frame.columns:
        usage[rows] = frame["Usage"].astype(str).str.strip().to_numpy()
    return FerPlusVotes(votes, majority, usage)


def misaligned_message(votes_path: Path | str, data: Path | str, why: str) -> str:
    """Why FER+ votes cannot be used with ``data``: their rows are another CSV's."""
    return (
        f"the FER+ votes {votes_path} are keyed by the rows of the original fer2013.csv, "
        f"and {data} is not it: {why} (a subset or reordered CSV)"
    )


def _ferplus_majority(counts: pd.DataFrame) -> np.ndarray:
    """FER+'s majority rule: drop single votes, then a class needs over half of the rest.

    Returns the FER2013 class index, or -1 where FER+ drops the image (no
    majority, or the majority is contempt, unknown or not-a-face).
    """
    c = counts.to_numpy(np.float64)
    c[c == 1] = 0
    total = c.sum(axis=1)
    top = c.argmax(axis=1)
    has_majority = c[np.arange(len(c)), top] > total / 2
    return np.where(has_majority & (top < len(FERPLUS_COLUMNS)), top, -1)
