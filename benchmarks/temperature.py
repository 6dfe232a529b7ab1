"""Is the clip vote hurt by over-confident frames? Temperature-scaled frames, then the mean.

A clip's label is the top class of its main face's *mean* probabilities, so a model that is
over-confident on a few frames lets them outvote the rest. Temperature scaling
(``softmax(log p / T)``) softens every frame alike and never changes a single frame's top
class. ``T`` is fitted by log-loss on FER2013 PublicTest (so PublicTest accuracy is
unchanged); the clips are only measured with it, at a few other values for context.

    videmo run ../shared/data/videos/labeled/{crema-d,ravdess,mead} -o RUNS --no-video --no-plots
    python benchmarks/temperature.py RUNS [--model MODEL.onnx]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from videmo.emotion import EmotionModel
from videmo.outputs.timeline import read_timeline
from videmo.spec import EMOTIONS
from videmo.train.data import load_fer2013

SHARED = Path(__file__).resolve().parents[2] / "shared"
FOLDERS = ("crema-d", "ravdess", "mead")
PROBS = [f"prob_{name}" for name in EMOTIONS]


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` row by row."""
    logits = np.log(np.clip(probs, 1e-7, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def fit_temperature(model: EmotionModel) -> float:
    """The T in 0.50, 0.55, ..., 3.00 with the lowest log-loss on PublicTest."""
    public = load_fer2013(SHARED / "data/fer2013/fer2013.csv.gz")["PublicTest"]
    probs = model.predict(public.images)
    rows = np.arange(len(probs))
    grid = np.round(np.arange(0.5, 3.001, 0.05), 2)
    loss = [-np.log(soften(probs, t)[rows, public.labels] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(loss))])


def clip_guess(timeline: pd.DataFrame, temperature: float) -> str:
    """Top class of the main face's mean softened probabilities."""
    main = timeline.face_id.value_counts().idxmax()
    probs = timeline.loc[timeline.face_id == main, PROBS].to_numpy(np.float64)
    return EMOTIONS[int(soften(probs, temperature).mean(axis=0).argmax())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="output root of `videmo run` over the clips")
    parser.add_argument("--model", default=None, help="the model the runs used (default: shipped)")
    args = parser.parse_args()
    fitted = fit_temperature(EmotionModel(args.model, device="cpu"))
    print(f"temperature fitted on PublicTest: {fitted:.2f}")
    temperatures = sorted({0.8, 1.0, fitted, 1.5, 2.0})
    right = {t: {} for t in temperatures}
    for folder in FOLDERS:
        labels = pd.read_csv(SHARED / "data/videos/labeled" / folder / "labels.csv")
        for file, label in zip(labels.file, labels.fer2013_class, strict=True):
            timeline = read_timeline(args.runs / Path(file).stem)
            for t in temperatures:
                right[t][folder] = right[t].get(folder, 0) + (clip_guess(timeline, t) == label)
    table = pd.DataFrame(right).T.rename_axis("T")
    table["all"] = table.sum(axis=1)
    print(table.to_string())


if __name__ == "__main__":
    main()
