"""Whole-command speed of ``videmo run`` beside decode-only speed of the same file, in one run.

    python benchmarks/speed.py [--seconds 30] [--repeat 3] [--json out.json]

Makes the two clips of issue 12 by looping real shared clips without re-encoding
(``make_long_video.py``): the 1080p Teams-meeting clip (3 faces) and the 854x480
dinner clip (5-6 faces), each looped to ``--seconds``. For each it measures, in
this process and back to back:

- decode only: every frame decoded by PyAV, no pixel conversion (the ceiling);
- ``videmo run FILE --no-video --no-plots --no-report`` as a subprocess, default
  settings otherwise: wall time of the whole command, start-up included;
- the same with the previous release's defaults (detection on every 5th frame, every
  face classified on every frame) and with everything on every frame (``VARIANTS``);
- with ``--compare-model M``, default settings with ``--model M`` as well (another
  emotion model, measured in the same run);
- with ``--fer N``, the `fer` package's own loop on the first N frames
  (``fer_speed.py``; it needs `fer` importable, which videmo does not install).

Each figure is the median of ``--repeat`` runs, interleaved (decode-only, then each
variant, ``--repeat`` times) so a machine that slows down slows every figure alike.
Faces and timeline rows are printed so a speed-up that loses faces shows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_long_video import loop_clips  # noqa: E402

from videmo.bench import decode_fps  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "multi_face"
CLIPS = {
    "1080p, 3 faces": SHARED / "diwakar_teams_meeting_happy.mp4",
    "854x480, 5-6 faces (dinner)": SHARED / "petercunha_dinner.mp4",
}


def timed_run(video: Path, out: Path, *options: str) -> tuple[float, int, int]:
    """Wall seconds of one ``videmo run`` command, and its faces and timeline rows."""
    # A fresh folder each time: the same run into a finished folder is skipped (--overwrite
    # replaces other runs' outputs, never this one's), which timed the skip, not the run.
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "videmo", "run", str(video), "-o", str(out), "-q",
               "--no-video", "--no-plots", "--no-report", *options]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    faces = pd.read_csv(out / video.stem / "faces.csv")
    return seconds, len(faces), int(faces["n_frames"].sum())


#: Settings compared with the defaults in the same run: label -> (description, options).
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "default": ("default settings", ()),
    "previous": (
        "previous defaults: detect every 5th frame, classify every frame",
        ("--detect-every", "5", "--classify-interval-s", "0"),
    ),
    "every_frame": (
        "detect and classify every frame",
        ("--detect-every", "1", "--classify-interval-s", "0"),
    ),
}


def measure(video: Path, repeat: int, work: Path, compare_model: Path | None = None) -> dict:
    """Decode-only and every variant, interleaved ``repeat`` times; medians."""
    variants = dict(VARIANTS)
    if compare_model is not None:
        model = ("--model", str(compare_model))
        variants["compare_model"] = (f"--model {compare_model.name}", model)
    decodes, runs = [], {label: [] for label in variants}
    for _ in range(repeat):
        decodes.append(decode_fps(video, convert=False))
        for label, (_, options) in variants.items():
            runs[label].append(timed_run(video, work / label, *options))
    frames = decodes[0][0]
    result = {"video": video.name, "frames": frames,
              "decode_fps": statistics.median(fps for _, fps in decodes)}  # fmt: skip
    for label, (description, _) in variants.items():
        seconds = statistics.median(r[0] for r in runs[label])
        result[label] = {"what": description, "seconds": seconds, "fps": frames / seconds,
                         "faces": runs[label][0][1], "rows": runs[label][0][2]}  # fmt: skip
    return result


def fer_fps(video: Path, frames: int) -> dict:
    """The `fer` package's loop on the first ``frames`` frames of ``video``, in a subprocess."""
    script = Path(__file__).resolve().parent / "fer_speed.py"
    command = [sys.executable, str(script), str(video), "--frames", str(frames)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each looped clip")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--compare-model", type=Path, help="also time default settings with it")
    parser.add_argument("--fer", type=int, default=0, metavar="FRAMES",
                        help="also time the `fer` package's loop on this many frames "
                             "(benchmarks/fer_speed.py; needs fer importable)")  # fmt: skip
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="videmo-speed-") as tmp:
        work = Path(tmp)
        for label, clip in CLIPS.items():
            video = work / f"{clip.stem}_{int(args.seconds)}s.mp4"
            loop_clips([clip], video, args.seconds / 60)
            result = measure(video, args.repeat, work, args.compare_model)
            result["clip"] = label
            if args.fer:
                result["fer"] = fer_fps(video, args.fer)
            results.append(result)
            print(f"{label}: {result['frames']} frames | decode only "
                  f"{result['decode_fps']:.0f} fps", flush=True)  # fmt: skip
            if "fer" in result:
                f = result["fer"]
                print(f"  fer (Haar), first {f['frames']} frames: {f['fps']:.1f} fps "
                      f"(start-up {f['startup_s']:.1f} s)", flush=True)  # fmt: skip
            for key in [k for k in result if isinstance(result[k], dict) and k != "fer"]:
                r = result[key]
                print(f"  {r['what']}: {r['fps']:.0f} fps ({r['seconds']:.2f} s, "
                      f"{r['faces']} faces, {r['rows']} rows)", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
