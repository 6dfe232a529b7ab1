"""The `fer` package's frame loop on a video, for the speed comparison in the README.

    python benchmarks/fer_speed.py VIDEO [--frames 300]

`fer` (Haar cascade and the paper's mini-Xception, the baseline of issues 9 and 12) is
run the way its README shows: ``FER(mtcnn=False).detect_emotions(frame)`` on every
frame read with OpenCV. Prints one JSON line: frames, seconds of the loop, its fps, and
the seconds to import and load it. ``benchmarks/speed.py --fer`` runs this beside
videmo in the same session.

`fer` is not a videmo dependency. It needs TensorFlow (videmo's ``train`` extra has it)
and, at import, ``requests`` and ``pkg_resources``; its ``facenet-pytorch`` dependency is
only used for MTCNN, so ``pip install fer --no-deps`` is enough for this loop.
"""

from __future__ import annotations

import argparse
import json
import time

started = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--frames", type=int, default=300, help="frames to time (0: all)")
    args = parser.parse_args()

    import cv2

    try:
        from fer import FER
    except ImportError:  # fer 25.x: the class lives in fer.fer
        from fer.fer import FER

    detector = FER(mtcnn=False)
    capture = cv2.VideoCapture(args.video)
    ok, frame = capture.read()
    detector.detect_emotions(frame)  # load the model before timing
    loaded = time.perf_counter() - started
    frames, faces, loop_start = 0, 0, time.perf_counter()
    while ok and (args.frames <= 0 or frames < args.frames):
        faces += len(detector.detect_emotions(frame))
        frames += 1
        ok, frame = capture.read()
    seconds = time.perf_counter() - loop_start
    print(json.dumps({"frames": frames, "faces": faces, "seconds": seconds,
                      "fps": frames / seconds, "startup_s": loaded}))  # fmt: skip


if __name__ == "__main__":
    main()
