"""Accuracy on pasted FER2013 *Training* faces against the crop's scale and vertical shift.

Checks that the calibrated framing (``CALIBRATED_CROPS``, the medians of where the faces
lie in the detector's box) is also where accuracy peaks. Training faces only, so
PublicTest stays untouched for reporting.

    python benchmarks/crop_sweep.py [--model MODEL.onnx] [--faces 3000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from videmo.crop import face_crop
from videmo.detect import DetectorConfig, create_detector
from videmo.emotion import EmotionModel
from videmo.evaluation.pasted import nearest_detection, pasted_scenes
from videmo.spec import CropGeometry
from videmo.train.data import load_fer2013

SHARED = Path(__file__).resolve().parents[2] / "shared"
BACKGROUND = SHARED / "data/videos/no_face/pyfeat_no_face_caminandes.mp4"
SCALES = (0.90, 0.94, 0.977, 1.02, 1.06, 1.10)
SHIFTS_Y = (-0.04, -0.015, 0.01)


def found_faces(images: np.ndarray, labels: np.ndarray, seed: int) -> list[tuple]:
    """(pasted face, detector box, frame) for every pasted face YuNet finds."""
    detector = create_detector(DetectorConfig(name="yunet"))
    found = []
    for frame, faces in pasted_scenes(images, labels, seed, 2, BACKGROUND):
        boxes, _ = detector.detect(frame)
        for face in faces:
            best = nearest_detection(face, boxes[:, :2] + boxes[:, 2:] / 2)
            if best is not None:
                found.append((face, boxes[best], frame))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="ONNX model (default: the shipped one)")
    parser.add_argument("--faces", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    if args.faces < 1:
        parser.error("--faces must be at least 1")
    train = load_fer2013(SHARED / "data/fer2013/fer2013.csv.gz")["Training"]
    pick = np.random.default_rng(args.seed).choice(len(train), args.faces, replace=False)
    images, labels = train.images[pick], train.labels[pick]
    model = EmotionModel(args.model, device="cpu")
    found = found_faces(images, labels, args.seed)
    truth = np.array([face.label for face, _, _ in found])
    direct = model.predict(images[[face.item for face, _, _ in found]]).argmax(axis=1)
    print(f"found {len(found)} of {args.faces}; direct {100 * (direct == truth).mean():.1f} %")
    for scale in SCALES:
        for shift_y in SHIFTS_Y:
            geometry = CropGeometry(scale=scale, shift_x=0.0, shift_y=shift_y)
            crops = np.stack([face_crop(f, box, geometry, model.spec) for _, box, f in found])
            right = (model.predict(crops).argmax(axis=1) == truth).mean()
            print(f"scale {scale:.3f} shift_y {shift_y:+.3f}: {100 * right:.1f} %")


if __name__ == "__main__":
    main()
