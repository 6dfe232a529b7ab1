"""A batch of many short videos: time to the first finished video, throughput, driver memory.

    python benchmarks/batch.py --videos 100 200 --workers 0 2 [--json out.json]
    python benchmarks/batch.py --videos 200 --workers 2 --classify-stage off on

Each input is a copy of a short shared clip (CREMA-D ``1001_DFA_HAP_XX.flv``, 56 frames,
2.2 s), so every video does the same work. For each batch size and worker count, one
``videmo run FOLDER --no-video --no-plots --no-report`` subprocess runs the whole batch;
the benchmark reads its stdout (one finished folder per line, printed at the end) for the
count, watches the output folder for the first ``run.json`` (time to the first finished
video) and reads the driver's peak RSS and CPU time from the child's own rusage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
CLIP = SHARED / "labeled" / "crema-d" / "1001_DFA_HAP_XX.flv"


def make_inputs(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"v{k:05d}{CLIP.suffix}" for k in range(count)]
    for path in paths:
        if not path.exists():
            shutil.copyfile(CLIP, path)
    return paths


def run_batch(folder: Path, out: Path, workers: int, classify_stage: str = "auto") -> dict:
    """One batch in a fresh process; wall time, first result, throughput, peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    rss_file = out.parent / "driver_rss_kib"
    args = ["run", str(folder), "-o", str(out), "-q", "--no-video", "--no-plots", "--no-report",
            "--workers", str(workers), "--classify-stage", classify_stage]  # fmt: skip
    command = [sys.executable, "-c", _DRIVER, str(rss_file), *args]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = None
    while proc.poll() is None:
        if first is None and next(out.glob("*/run.json"), None) is not None:
            first = time.perf_counter() - started
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    done = len(proc.stdout.read().split())
    peak_kib, cpu_s = rss_file.read_text().split()
    return {"workers": workers, "classify_stage": classify_stage, "videos_done": done,
            "seconds": seconds,
            "first_result_s": first, "videos_per_s": done / seconds,
            "driver_peak_rss_mib": int(peak_kib) / 1024,
            "driver_cpu_s": float(cpu_s)}  # fmt: skip


#: Runs the videmo CLI in this process and writes its own peak RSS and CPU seconds (the
#: driver's; Ray workers are other processes) to the file named by argv[1] when it exits.
_DRIVER = """
import resource, runpy, sys
rss_file, sys.argv = sys.argv[1], ["videmo", *sys.argv[2:]]
try:
    runpy.run_module("videmo", run_name="__main__")
finally:
    own = resource.getrusage(resource.RUSAGE_SELF)
    open(rss_file, "w").write(f"{own.ru_maxrss} {own.ru_utime + own.ru_stime}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument(
        "--classify-stage",
        nargs="+",
        default=["auto"],
        choices=["auto", "on", "off"],
        help="videmo run's, one batch each",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="videmo-batch-") as tmp:
        work = Path(tmp)
        for count in sorted(args.videos):
            make_inputs(work / f"in{count}", count)
            for workers in args.workers:
                for stage in args.classify_stage:
                    inputs = work / f"in{count}"
                    figures = {"videos": count, **run_batch(inputs, work / "out", workers, stage)}
                    results.append(figures)
                    print(json.dumps(figures), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
