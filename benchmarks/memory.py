"""Peak memory of `videmo run` against video length.

    python benchmarks/memory.py VIDEO [VIDEO ...] [-- extra videmo run options]

Runs each video in a fresh `videmo run --workers 0` process (serial, so the
whole pipeline lives in one process) and reports its peak resident memory
(ru_maxrss of the finished child) next to the video's length and frame rate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def peak_rss_mb(command: list[str]) -> tuple[float, float]:
    """Run ``command`` in a fresh process; its peak RSS in MiB and wall seconds.

    ru_maxrss of RUSAGE_CHILDREN is the largest peak among waited-for children,
    so each measurement runs from a fresh helper process of its own.
    """
    probe = (
        "import resource, subprocess, sys, time, json;"
        "t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True);"
        "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,"
        " time.perf_counter() - t]))"
    )
    out = subprocess.run([sys.executable, "-c", probe, *command], check=True,
                         capture_output=True, text=True)  # fmt: skip
    mb, seconds = json.loads(out.stdout.strip().splitlines()[-1])
    return mb, seconds


def main() -> None:
    args = sys.argv[1:]
    extra = args[args.index("--") + 1 :] if "--" in args else []
    videos = args[: args.index("--")] if "--" in args else args
    if not videos or {"-h", "--help"} & set(videos):
        print(__doc__.strip(), file=sys.stderr if not videos else sys.stdout)
        sys.exit(0 if videos else 2)
    from videmo.video import index_packets, probe

    rows = []
    for video in videos:
        info, frames = probe(video), len(index_packets(video))
        with tempfile.TemporaryDirectory() as out:
            command = ["videmo", "run", video, "-o", out, "-q", "--workers", "0",
                       "--no-video", "--no-plots", *extra]  # fmt: skip
            mb, seconds = peak_rss_mb(command)
        rows.append({"video": Path(video).name, "minutes": round(info.duration_s / 60, 2),
                     "frames": frames, "peak_rss_mb": round(mb, 1),
                     "fps": round(frames / seconds, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    if len(rows) > 1:
        ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
        print(f"peak RSS ratio last/first: {ratio:.2f}")


if __name__ == "__main__":
    main()
