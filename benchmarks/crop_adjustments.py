"""Would adjusting each crop's brightness, or the class priors, get more clips right?

Two inference-only ideas, measured through ``videmo evaluate-clips``' own path (decode,
detect, crop, classify, track, main face, top mean class), with only the named change:

- **photometric**: the development clips' crops differ from FER2013's faces in contrast
  (CREMA-D's crops are bright and flat: a per-crop grey-level spread of about 36 against
  54 for FER2013 Training faces). Variants: stretch crops flatter than a spread of 45 to
  45 (``stretch``), standardise every crop to FER2013 Training's mean and spread
  (``standardise``), histogram equalisation (``equalise``).
- **class priors**: the acted clips are balanced over the 7 classes and FER2013 Training
  is not (happy 25 %, disgust 1.5 %). Dividing each frame's probabilities by the Training
  prior to the power ``a`` (``prior^-0.5``, ``prior^-1``) is the label-shift correction
  for a balanced set.

Each variant is also measured on FER2013 PublicTest's ready-made faces. These figures are
on the development clips, so they cannot choose anything without held-back clips to
confirm it; the README reports them as tried, not shipped.

    python benchmarks/crop_adjustments.py [--model MODEL.onnx]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from videmo.evaluation.clips import labeled_clips, main_face
from videmo.parallel import frame_times
from videmo.pipeline import Analyzer, reduce_detections
from videmo.settings import Settings
from videmo.train.data import load_fer2013

SHARED = Path(__file__).resolve().parents[2] / "shared"
FOLDERS = ("crema-d", "ravdess", "mead")
FER_MEAN, FER_SPREAD = 129.5, 54.1  # FER2013 Training: mean of per-face mean and std
STRETCH_BELOW = 45.0


def _per_crop(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def apply(crops: np.ndarray) -> np.ndarray:
        return np.stack([fn(c) for c in crops]) if len(crops) else crops

    return apply


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _stretch(crop: np.ndarray) -> np.ndarray:
    f = crop.astype(np.float32)
    spread = f.std()
    if spread >= STRETCH_BELOW:
        return crop
    return _to_uint8((f - f.mean()) / max(spread, 1.0) * STRETCH_BELOW + f.mean())


def _standardise(crop: np.ndarray) -> np.ndarray:
    f = crop.astype(np.float32)
    return _to_uint8((f - f.mean()) / max(f.std(), 1.0) * FER_SPREAD + FER_MEAN)


PHOTOMETRIC = {
    "none": lambda crops: crops,
    "stretch": _per_crop(_stretch),
    "standardise": _per_crop(_standardise),
    "equalise": _per_crop(cv2.equalizeHist),
}


def variants(prior: np.ndarray) -> dict[str, tuple[Callable, np.ndarray]]:
    """Name -> (crop transform, per-class weight on the probabilities)."""
    flat = np.ones_like(prior)
    out = {name: (fn, flat) for name, fn in PHOTOMETRIC.items()}
    out["prior^-0.5"] = (PHOTOMETRIC["none"], prior**-0.5)
    out["prior^-1"] = (PHOTOMETRIC["none"], prior**-1.0)
    return out


def reweight(probs: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Probabilities times a per-class weight, renormalised (NaN rows stay NaN)."""
    out = probs * weight
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="emotion model .onnx (default: shipped)")
    args = parser.parse_args()
    settings = Settings(model=args.model)
    analyzer = Analyzer(settings)
    data = load_fer2013(SHARED / "data/fer2013/fer2013.csv.gz")
    train, public = data["Training"], data["PublicTest"]
    prior = np.bincount(train.labels, minlength=7) / len(train)
    table = variants(prior)
    right = {name: {folder: 0 for folder in FOLDERS} for name in table}
    clips = labeled_clips([SHARED / "data/videos/labeled" / f for f in FOLDERS])
    for clip in clips:
        chunk = analyzer.run_chunk(clip.path, 0, None, classify=False)
        rows, crops, found = chunk.crop_rows, chunk.crops, chunk.detections
        for name, (transform, weight) in table.items():
            probs = np.full_like(found.probs, np.nan)
            probs[rows] = reweight(analyzer.model.predict(transform(crops)), weight)
            found.probs = probs
            timeline = reduce_detections(found, settings, *frame_times([chunk]))
            face = main_face(timeline)
            right[name][clip.folder] += face is not None and face["dominant_emotion"] == clip.label
    rows_out = []
    for name, (transform, weight) in table.items():
        guess = reweight(analyzer.model.predict(transform(public.images)), weight).argmax(1)
        per_folder = right[name]
        rows_out.append(
            {
                "variant": name,
                "PublicTest": round(float((guess == public.labels).mean()), 4),
                **per_folder,
                "clips (72)": sum(per_folder.values()),
            }
        )
    print(pd.DataFrame(rows_out).to_string(index=False))


if __name__ == "__main__":
    main()
