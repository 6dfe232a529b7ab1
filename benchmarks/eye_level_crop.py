"""Does levelling the eyes help? The calibrated square, upright or rotated about its centre.

Issue 9 asked to measure a crop that "only levels the eyes and keeps the box's scale and
centre". Both arms share everything else: every frame of each development clip decoded by
OpenCV, YuNet at the pipeline's settings (working size 640), the largest face per frame, the
calibrated square cut with the same warp (rotation 0 for the upright arm), the shipped
model, mean probabilities per clip, top class. This is an offline path (no tracking, no
schedules), so its counts are not `videmo evaluate-clips`' figures; only the difference
between the two arms is the answer.

    python benchmarks/eye_level_crop.py [--model MODEL.onnx]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from videmo.crop import resize_face
from videmo.detect import YUNET_FILE, DetectorConfig
from videmo.emotion import EmotionModel
from videmo.models import model_path

LABELED = Path(__file__).resolve().parents[2] / "shared/data/videos/labeled"
FOLDERS = ("crema-d", "ravdess", "mead")
DET_SIZE = 640


def eye_roll_degrees(face: np.ndarray) -> float:
    """Angle of the line from the right eye to the left eye (YuNet's landmarks 0 and 1)."""
    return math.degrees(math.atan2(face[7] - face[5], face[6] - face[4]))


def rotated_square(gray: np.ndarray, square: tuple[float, float, float], degrees: float):
    """The square (x0, y0, side), rotated by ``degrees`` about its centre, edges repeated."""
    x0, y0, side = square
    cx, cy, size = x0 + side / 2, y0 + side / 2, max(1, int(round(side)))
    warp = cv2.getRotationMatrix2D((cx, cy), degrees, 1.0)
    warp[:, 2] += (size / 2 - cx, size / 2 - cy)
    return cv2.warpAffine(gray, warp, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def clip_crops(path: Path, net, model: EmotionModel) -> tuple[list, list, list]:
    """Upright crops, levelled crops and eye-line angles of the largest face per frame."""
    geometry = model.spec.crop_for("yunet")
    upright, level, rolls = [], [], []
    capture = cv2.VideoCapture(str(path))
    while True:
        ok, frame = capture.read()
        if not ok:
            return upright, level, rolls
        scale = min(1.0, DET_SIZE / max(frame.shape[:2]))
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        net.setInputSize((small.shape[1], small.shape[0]))
        faces = net.detect(small)[1]
        if faces is None:
            continue
        face = faces[np.argmax(faces[:, 2] * faces[:, 3])][:14] / scale
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        square = geometry.square(face[:4])
        roll = eye_roll_degrees(face)
        upright.append(resize_face(rotated_square(gray, square, 0.0), model.spec.input_size))
        level.append(resize_face(rotated_square(gray, square, roll), model.spec.input_size))
        rolls.append(abs(roll))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="emotion model (default: shipped)")
    args = parser.parse_args()
    model = EmotionModel(args.model, device="cpu")
    config = DetectorConfig()
    net = cv2.FaceDetectorYN.create(str(model_path(YUNET_FILE)), "", (320, 320),
                                    config.score_threshold, config.nms_threshold, 5000)  # fmt: skip
    rows = []
    for folder in FOLDERS:
        labels = pd.read_csv(LABELED / folder / "labels.csv")
        for file, label in zip(labels.file, labels.fer2013_class, strict=True):
            upright, level, rolls = clip_crops(LABELED / folder / file, net, model)
            guess = {
                name: model.spec.classes[model.predict(np.stack(crops)).mean(0).argmax()]
                if crops else None
                for name, crops in (("upright", upright), ("level", level))
            }  # fmt: skip
            roll = float(np.median(rolls)) if rolls else math.nan
            rows.append(
                {"folder": folder, "file": file, "label": label, **guess, "median_roll": roll}
            )
    table = pd.DataFrame(rows)
    right = table.assign(upright=table.upright == table.label, level=table.level == table.label)
    counts = right.groupby("folder")[["upright", "level"]].sum()
    counts.loc["all"] = counts.sum()
    print(counts.to_string())
    print(f"median |eye-line roll| per clip: {table.median_roll.median():.1f} degrees "
          f"(largest {table.median_roll.max():.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
