"""Share of pasted FER2013 Training faces YuNet finds, per score threshold.

Training faces (never PublicTest) are pasted into real frames as in the
through-the-path benchmark; YuNet runs once with a very low threshold and each
face's best score is kept, so every threshold is read off one run. Detections
matching no pasted face are counted too (false detections on the backgrounds).
Pair it with ``face_ids.py --score-threshold T`` on real clips before changing
the default.

    python benchmarks/detector_threshold.py --faces 2000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from videmo.detect import DetectorConfig, create_detector
from videmo.evaluation.pasted import (
    background_frames,
    by_scene,
    nearest_detection,
    plan_scenes,
    render_scene,
)
from videmo.train.data import load_fer2013

SHARED = Path(__file__).resolve().parents[2] / "shared"
BACKGROUND = SHARED / "data/videos/no_face/pyfeat_no_face_caminandes.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    train = load_fer2013(SHARED / "data/fer2013/fer2013.csv.gz")["Training"]
    pick = np.random.default_rng(args.seed).choice(len(train), args.faces, replace=False)
    images = train.images[pick]
    detector = create_detector(DetectorConfig(score_threshold=0.05))
    backgrounds = background_frames(BACKGROUND, 24)
    best, unmatched = np.zeros(len(images)), []
    for scene, placed in by_scene(plan_scenes(np.zeros(len(images), int), args.seed)).items():
        boxes, scores = detector.detect(render_scene(backgrounds[scene % 24], placed, images))
        centres, used = boxes[:, :2] + boxes[:, 2:] / 2, set()
        for face in placed:
            k = nearest_detection(face, centres)
            if k is not None:
                best[face.item], _ = scores[k], used.add(k)
        unmatched += [scores[k] for k in range(len(scores)) if k not in used]
    unmatched = np.array(unmatched)
    for threshold in (0.3, 0.4, 0.5, 0.6, 0.7):
        print(f"threshold {threshold:.1f}: found {(best >= threshold).mean():.1%}  "
              f"false detections {int((unmatched >= threshold).sum())}")  # fmt: skip


if __name__ == "__main__":
    main()
