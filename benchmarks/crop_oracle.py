"""How much of the through-the-path gap the detector's box costs: box, landmarks, true square.

FER2013 faces are pasted into real frames (as in ``video_path_accuracy.py``, without
H.264) and cut three ways: the calibrated square from YuNet's box (what videmo does); a
square regressed on YuNet's box *and* its five landmarks (fitted on Training faces); and
the true paste square, which no detector can know. All are classified by the same model.

    python benchmarks/crop_oracle.py [--model MODEL.onnx]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from videmo.crop import crop_square, resize_face
from videmo.detect import YUNET_FILE, DetectorConfig
from videmo.emotion import EmotionModel
from videmo.evaluation.pasted import PastedFace, nearest_detection, pasted_scenes
from videmo.models import model_path
from videmo.spec import CALIBRATED_CROPS
from videmo.train.data import load_fer2013

SHARED = Path(__file__).resolve().parents[2] / "shared"
BACKGROUND = SHARED / "data/videos/no_face/pyfeat_no_face_caminandes.mp4"


def detect_pasted(images: np.ndarray, labels: np.ndarray, seed: int, per_scene: int) -> list:
    """(pasted face, YuNet row: box, 5 landmarks, score; frame) for every face found."""
    # OpenCV's YuNet directly, for its landmarks; thresholds are the pipeline's
    config = DetectorConfig()
    net = cv2.FaceDetectorYN.create(
        str(model_path(YUNET_FILE)), "", (640, 360), config.score_threshold,
        config.nms_threshold, 5000,
    )  # fmt: skip
    found = []
    for frame, faces in pasted_scenes(images, labels, seed, per_scene, BACKGROUND):
        _, rows = net.detect(frame)
        rows = rows if rows is not None else np.zeros((0, 15), np.float32)
        for face in faces:
            best = nearest_detection(face, rows[:, :2] + rows[:, 2:4] / 2)
            if best is not None:
                found.append((face, rows[best], frame))
    return found


def features(row: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Landmarks relative to the box (units of its longer side); the box's centre and side."""
    x, y, w, h = row[:4]
    side, cx, cy = max(w, h), x + w / 2, y + h / 2
    landmarks = ((row[4:14].reshape(5, 2) - [cx, cy]) / side).ravel()
    return np.concatenate([[1.0, w / h], landmarks]), (cx, cy, side)


def true_square(face: PastedFace, row: np.ndarray) -> np.ndarray:
    """Where the pasted square lies, in the box's terms: centre offset and side over its side."""
    _, (cx, cy, side) = features(row)
    centre = np.array([face.x, face.y]) + face.side / 2
    return np.array([(centre[0] - cx) / side, (centre[1] - cy) / side, face.side / side])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="ONNX model (default: the shipped one)")
    parser.add_argument("--faces", type=int, default=1200, help="PublicTest faces")
    args = parser.parse_args()
    data = load_fer2013(SHARED / "data/fer2013/fer2013.csv.gz")
    train, test = data["Training"], data["PublicTest"]

    pick = np.random.default_rng(0).choice(len(train), 4000, replace=False)
    fit = detect_pasted(train.images[pick], train.labels[pick], 0, 1)
    x = np.array([features(row)[0] for _, row, _ in fit])
    y = np.array([true_square(face, row) for face, row, _ in fit])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    errors = {"box only": y - np.median(y, axis=0), "box + landmarks": y - x @ coef}
    for name, err in errors.items():
        p90 = np.percentile(np.abs(err), 90, axis=0)
        print(f"{name}: 90th percentile error, centre x/y and side: {np.round(p90, 3)}")

    model, geometry = EmotionModel(args.model, device="cpu"), CALIBRATED_CROPS["yunet"]
    pick = np.random.default_rng(0).choice(len(test), args.faces, replace=False)
    found = detect_pasted(test.images[pick], test.labels[pick], 0, 2)

    def cut(frame: np.ndarray, x0: float, y0: float, side: float) -> np.ndarray:
        gray = cv2.cvtColor(crop_square(frame, x0, y0, side), cv2.COLOR_BGR2GRAY)
        return resize_face(gray, model.spec.input_size)

    crops: dict[str, list[np.ndarray]] = {"box": [], "box + landmarks": [], "true square": []}
    for face, row, frame in found:
        crops["box"].append(cut(frame, *geometry.square(row[:4])))
        feats, (cx, cy, side) = features(row)
        dx, dy, scale = feats @ coef
        s = scale * side
        crops["box + landmarks"].append(
            cut(frame, cx + dx * side - s / 2, cy + dy * side - s / 2, s)
        )
        crops["true square"].append(cut(frame, face.x, face.y, face.side))
    truth = np.array([face.label for face, _, _ in found])
    direct = model.predict(test.images[pick][[face.item for face, _, _ in found]]).argmax(axis=1)
    share = 100 * (direct == truth).mean()
    print(f"PublicTest: found {len(found)} of {args.faces}; direct {share:.1f} %")
    for name, faces in crops.items():
        right = (model.predict(np.stack(faces)).argmax(axis=1) == truth).mean()
        print(f"  {name}: {100 * right:.1f} %")


if __name__ == "__main__":
    main()
