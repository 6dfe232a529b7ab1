"""Measure how FER2013 faces are framed relative to each detector's box.

FER2013 *Training* faces are upscaled to 80-300 px and pasted into real frames
(640x360, as in the through-the-path benchmark) at known places; the detector
runs as in the pipeline, and for every face found the pasted square is
expressed in the box's terms: side / max(w, h) and the centre offset / side.
The medians are the ``CropGeometry`` stored in ``videmo/spec.py``
(``CALIBRATED_CROPS``). Only Training faces are used, so PublicTest stays
untouched for reporting.

    python benchmarks/calibrate_crop.py --faces 2000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from videmo.detect import DetectorConfig, create_detector
from videmo.evaluation.pasted import (
    background_frames,
    nearest_detection,
    plan_scenes,
    render_scene,
)
from videmo.train.data import load_fer2013

SHARED = Path(__file__).resolve().parents[2] / "shared"


def measure(detector_name: str, images: np.ndarray, seed: int, background: Path) -> np.ndarray:
    """Rows of (scale, shift_x, shift_y) for every pasted face the detector finds."""
    detector = create_detector(DetectorConfig(name=detector_name))
    plan = plan_scenes(np.zeros(len(images), int), seed, faces_per_scene=1)
    backgrounds = background_frames(background, 24)
    rows = []
    for face in plan:
        frame = render_scene(backgrounds[face.scene % len(backgrounds)], [face], images)
        boxes, _ = detector.detect(frame)
        best = nearest_detection(face, boxes[:, :2] + boxes[:, 2:] / 2)
        if best is None:
            continue
        paste_centre = np.array([face.x, face.y]) + face.side / 2
        x, y, w, h = boxes[best]
        side = max(w, h)
        rows.append(
            (
                face.side / side,
                (paste_centre[0] - (x + w / 2)) / face.side,
                (paste_centre[1] - (y + h / 2)) / face.side,
            )
        )
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=2000, help="Training faces per detector")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(SHARED / "data/fer2013/fer2013.csv.gz"))
    parser.add_argument(
        "--background", default=str(SHARED / "data/videos/no_face/pyfeat_no_face_caminandes.mp4")
    )
    args = parser.parse_args()
    train = load_fer2013(args.data)["Training"]
    pick = np.random.default_rng(args.seed).choice(len(train), args.faces, replace=False)
    for name in ("yunet", "haar"):
        rows = measure(name, train.images[pick], args.seed, Path(args.background))
        scale, shift_x, shift_y = np.median(rows, axis=0)
        print(
            f"{name}: found {len(rows)}/{args.faces}  "
            f"CropGeometry(scale={scale:.3f}, shift_x={shift_x:.3f}, shift_y={shift_y:.3f})  "
            f"spread (p10-p90 of scale) {np.percentile(rows[:, 0], 10):.2f}-"
            f"{np.percentile(rows[:, 0], 90):.2f}"
        )


if __name__ == "__main__":
    main()
