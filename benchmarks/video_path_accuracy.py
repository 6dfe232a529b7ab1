"""Emotion accuracy through the video path, next to the direct accuracy of the same faces.

FER2013 PublicTest faces (labels known) are pasted at random places and sizes
(80-300 px) into frames of a real clip (640x360), each scene held for 6 frames
at 10 fps, H.264-encoded, and the mp4 is analysed by ``videmo.analyze`` (the
code of ``videmo run``). Prints coverage (faces found), accuracy through the
path on the faces found, and the model's direct accuracy on the same faces'
48x48 images. See ``videmo/evaluation/pasted.py``.

    python benchmarks/video_path_accuracy.py                       # all 3,589 faces
    python benchmarks/video_path_accuracy.py --faces 600 --model other.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from videmo.errors import VidemoError
from videmo.evaluation.pasted import evaluate_path
from videmo.outputs.atomic import check_output_file, write_text_atomic
from videmo.train.data import load_fer2013

SHARED = Path(__file__).resolve().parents[2] / "shared"


#: The per-face table's header: how an earlier one is known (other files are not replaced).
TABLE_HEADER = "item,label,side,found,rows,predicted,row"
#: Keys of the figures' JSON, likewise.
FIGURE_KEYS = {"faces", "coverage", "path_accuracy", "direct_accuracy", "gap"}


def _earlier_output(path: Path) -> bool:
    """Whether ``path`` is a table or figures file this benchmark wrote before."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    if path.suffix.lower() == ".csv":
        return text.split("\n", 1)[0].strip() == TABLE_HEADER
    try:
        figures = json.loads(text)
    except ValueError:
        return False
    return isinstance(figures, dict) and set(figures) >= FIGURE_KEYS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=0, help="seeded subset (0: every face)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    parser.add_argument("--detector", default="yunet", choices=("yunet", "haar"))
    parser.add_argument("--data", default=str(SHARED / "data/fer2013/fer2013.csv.gz"))
    parser.add_argument(
        "--background", default=str(SHARED / "data/videos/no_face/pyfeat_no_face_caminandes.mp4")
    )
    parser.add_argument("--detect-every", type=int, default=None,
                        help="videmo run's --detect-every (default: its default)")  # fmt: skip
    parser.add_argument("--classify-interval-s", type=float, default=None,
                        help="--classify-interval-s (default: its default)")  # fmt: skip
    parser.add_argument("--keep", type=Path, help="keep pasted.mp4 in this folder")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--csv", type=Path, help="also write the per-face table as CSV")
    args = parser.parse_args()
    if args.faces < 0:
        parser.error("--faces must be 0 (every face) or more")
    for path, suffix in ((args.csv, ".csv"), (args.json, ".json")):
        if path is None:  # checked before minutes of work, as videmo's commands do
            continue
        if path.suffix.lower() != suffix:
            parser.error(f"--{suffix[1:]} {path} does not end in {suffix}")
        if path.is_file() and not _earlier_output(path):
            parser.error(f"--{suffix[1:]} {path} is not an earlier output of this benchmark: "
                         "it is never replaced")  # fmt: skip
        check_output_file(path)

    public = load_fer2013(args.data)["PublicTest"]
    pick = np.arange(len(public))
    if 0 < args.faces < len(public):
        rng = np.random.default_rng(args.seed)
        pick = np.sort(rng.choice(len(public), args.faces, replace=False))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="videmo-path-") as tmp:
        result, scored = evaluate_path(
            public.images[pick],
            public.labels[pick],
            Path(args.background),
            args.keep or Path(tmp),
            seed=args.seed,
            model=args.model,
            detector=args.detector,
            **({"detect_every": args.detect_every} if args.detect_every else {}),
            **(
                {"classify_interval_s": args.classify_interval_s}
                if args.classify_interval_s is not None
                else {}
            ),
        )
    figures = {**asdict(result), "gap": result.gap, "seconds": time.perf_counter() - started}
    print(
        f"faces {result.faces}  coverage {result.coverage:.1%}  "
        f"through the path {result.path_accuracy:.1%}  direct (same faces) "
        f"{result.direct_accuracy:.1%}  gap {100 * result.gap:+.1f} points  "
        f"direct (all faces) {result.direct_accuracy_all:.1%}"
    )
    if args.csv:
        table = scored.assign(row=pick[scored["item"]]).to_csv(index=False)
        write_text_atomic(args.csv, table)
    if args.json:
        write_text_atomic(args.json, json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except VidemoError as exc:  # a bad --model or --data: one line, as the CLI says it
        sys.exit(f"video_path_accuracy: error: {exc}")
