"""Is the clip's label lost in how frames are reduced to one? Other reductions, same frames.

A clip's label is the top class of its main face's *mean* raw probabilities. Acted clips
start and end neutral, so a short expression (surprise) may be outvoted by the neutral
frames around it. This reads `videmo run`'s timelines of the labeled development clips and
counts the clips each reduction gets right, per folder. It measures only; nothing here is
shipped, and any reduction chosen on these clips would be chosen on the clips it is scored on.

    videmo run ../shared/data/videos/labeled/{crema-d,ravdess,mead} -o RUNS --no-video --no-plots
    python benchmarks/clip_vote.py RUNS
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from videmo.outputs.timeline import read_timeline
from videmo.spec import EMOTIONS

SHARED = Path(__file__).resolve().parents[2] / "shared"
FOLDERS = ("crema-d", "ravdess", "mead")
PROBS = [f"prob_{name}" for name in EMOTIONS]
NEUTRAL = EMOTIONS.index("neutral")


def _least_neutral(share: float) -> Callable[[np.ndarray], int]:
    """Mean of the ``share`` of frames with the lowest neutral probability."""

    def reduce(probs: np.ndarray) -> int:
        keep = max(1, round(len(probs) * share))
        return int(probs[np.argsort(probs[:, NEUTRAL])[:keep]].mean(axis=0).argmax())

    return reduce


REDUCTIONS: dict[str, Callable[[np.ndarray], int]] = {
    "mean (shipped)": lambda p: int(p.mean(axis=0).argmax()),
    "most frequent frame label": lambda p: int(np.bincount(p.argmax(axis=1), minlength=7).argmax()),
    "75th percentile": lambda p: int(np.quantile(p, 0.75, axis=0).argmax()),
    "90th percentile": lambda p: int(np.quantile(p, 0.9, axis=0).argmax()),
    "mean of the least-neutral quarter": _least_neutral(0.25),
    "mean of the least-neutral half": _least_neutral(0.5),
}


def main_face_probs(timeline: pd.DataFrame) -> np.ndarray:
    """Raw probabilities of the face in most frames (ties: the earliest face)."""
    main = timeline.face_id.value_counts().sort_index().idxmax()
    return timeline.loc[timeline.face_id == main, PROBS].to_numpy(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="output root of `videmo run` over the clips")
    args = parser.parse_args()
    right = {name: dict.fromkeys(FOLDERS, 0) for name in REDUCTIONS}
    for folder in FOLDERS:
        labels = pd.read_csv(SHARED / "data/videos/labeled" / folder / "labels.csv")
        for file, label in zip(labels.file, labels.fer2013_class, strict=True):
            probs = main_face_probs(read_timeline(args.runs / Path(file).stem))
            for name, reduce in REDUCTIONS.items():
                right[name][folder] += EMOTIONS[reduce(probs)] == label
    table = pd.DataFrame(right).T.rename_axis("reduction")
    table["all"] = table.sum(axis=1)
    print(table.to_string())


if __name__ == "__main__":
    main()
