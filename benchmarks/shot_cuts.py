"""Which frames of the shared clips start a new shot, by the rule the tracker uses.

For every clip: the frames taken for new shots (thumbnail change above ``SHOT_THRESHOLD``
*and* histogram shift above ``SHOT_HISTOGRAM_SHIFT``, see ``videmo.follow``), and the largest
thumbnail change and histogram shift between consecutive frames that were *not* taken for
one, to show the margin. Only clips with a change above the thumbnail threshold are listed.

    python benchmarks/shot_cuts.py [--frames 2000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from videmo.follow import SHOT_THRESHOLD, _is_new_shot, _thumbnail, picture_change
from videmo.inputs import VIDEO_SUFFIXES
from videmo.video import read_frames

VIDEOS = Path(__file__).resolve().parents[2] / "shared/data/videos"


def changes(path: Path, frames: int) -> list[tuple[int, float, float]]:
    """(frame, thumbnail change, histogram shift) from each frame to the one after it."""
    out, previous = [], None
    for frame in read_frames(path, 0, frames, bgr=False):
        now = (frame.index, *_thumbnail(frame))
        if previous is not None and previous[0] == frame.index - 1:
            out.append((frame.index, *picture_change(now, previous)))
        previous = now
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames read per clip")
    args = parser.parse_args()
    clips = sorted(p for p in VIDEOS.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    for path in clips:
        steps = changes(path, args.frames)
        shots = [f for f, c, s in steps if _is_new_shot(c, s)]
        rest = [(c, s) for f, c, s in steps if f not in shots]
        if not any(c > SHOT_THRESHOLD for c, _ in rest) and not shots:
            continue
        print(f"{path.relative_to(VIDEOS)}: new shots at {shots or 'none'}; within shots at "
              f"most {max(c for c, _ in rest):.1f} grey levels, "
              f"histogram shift {max(s for _, s in rest):.2f}")  # fmt: skip
    print(f"{len(clips)} clips read")


if __name__ == "__main__":
    main()
