"""Face ids per multi-face clip: how often the tracker splits one person into several faces.

Runs ``videmo.analyze`` (the code of ``videmo run``, serial) on every clip of
``shared/data/videos/multi_face`` and prints the number of face ids, of faces
seen on at least 50 frames, and the most faces in one frame. Fewer ids for the
same people means fewer broken faces; look at the ``faces/`` thumbnails of a run
before calling a join right.

    python benchmarks/face_ids.py                     # default settings
    python benchmarks/face_ids.py --detect-every 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import videmo

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detect-every", type=int, default=None)
    parser.add_argument("--score-threshold", type=float, default=None)
    args = parser.parse_args()
    options = {k: v for k, v in vars(args).items() if v is not None}
    for clip in sorted((SHARED / "data/videos/multi_face").glob("*.mp4")):
        timeline = videmo.analyze(clip, workers=0, **options).timeline
        rows = timeline["face_id"].value_counts()
        most = int(timeline.groupby("frame").size().max()) if len(timeline) else 0
        print(f"{clip.name:45s} ids {timeline['face_id'].nunique():3d}  "
              f">=50 frames {int((rows >= 50).sum()):2d}  most in a frame {most}")  # fmt: skip


if __name__ == "__main__":
    main()
