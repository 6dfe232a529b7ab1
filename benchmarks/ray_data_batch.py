"""The same batch of short videos on Ray Data instead of videmo's Ray-core executor.

    python benchmarks/ray_data_batch.py --videos 1000 --workers 2 [--json out.json]

Issue 11 asked to choose between Ray Data's streaming executor and Ray core by
measurement. This runs the batch of ``benchmarks/batch.py`` (copies of one 2.2-s CREMA-D
clip, analysis outputs only) as a Ray Data pipeline built from videmo's own functions:
``from_items`` of input paths -> ``map`` with an actor pool of ``--workers`` actors, each
of which names the output folder, fingerprints, probes and indexes the input, analyses it
and tracks and writes its outputs (the work of ``PrepareTask``, the chunks and
``FinishTask``) -> the driver iterates the finished rows. It reports what ``batch.py``
reports: wall time, time to the first finished video, videos/s and the driver's peak RSS
and CPU time (the driver is this process; Ray's workers are others).

Each video is one row, analysed whole by one actor: right for short clips, which are a
single chunk. A long video would need one row per chunk and a per-video reduce (tracking
runs over the chunks in order), which in Ray Data is a ``groupby`` (an all-to-all step that
waits for its whole input) or state kept outside the dataset; videmo's executor handles that
dependency directly (see the README's batch section for the choice).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch import make_inputs  # noqa: E402 - the same inputs as batch.py


class _VideoWorker:
    """Ray Data actor: one loaded Analyzer, whole short videos in, one outcome row out."""

    def __init__(self, out_root: str, workers: int) -> None:
        import cv2

        from videmo.models import EMOTION_FILE, model_path, sha256_file
        from videmo.pipeline import Analyzer
        from videmo.settings import Settings

        cv2.setNumThreads(1)
        self.settings = Settings(video=False, plots=False, report=False)
        self.analyzer = Analyzer(self.settings, threads=1)
        self.model_sha = sha256_file(model_path(self.settings.model or EMOTION_FILE))
        self.out_root = Path(out_root)
        self.context = {"executor": "ray-data", "workers": workers, "classify_stage": False,
                        "provider": self.analyzer.provider, "annotate": None}  # fmt: skip

    def __call__(self, row: dict) -> dict:
        from videmo.naming import claim_output_dir
        from videmo.outputs.writer import write_video_outputs
        from videmo.runner import VideoRun, check_and_plan, finish_video

        path = Path(row["path"])
        run = VideoRun(int(row["position"]), path, claim_output_dir(self.out_root, path))
        run, fingerprint = check_and_plan(run, self.settings, self.model_sha)
        if run.status == "pending":
            run.started = time.perf_counter()
            run.results = [
                self.analyzer.run_chunk(path, start, stop, run.index) for start, stop in run.chunks
            ]
            run.analysis_s = time.perf_counter() - run.started  # run.json's analysis time
            finish_video(run, self.settings, write_video_outputs,
                         {**self.context, "fingerprint": fingerprint})  # fmt: skip
        return {"out_dir": str(run.out_dir), "status": run.status, "error": run.error}


def run_batch(paths: list[Path], out: Path, workers: int) -> dict:
    """One Ray Data batch: wall time (Ray's start included), first result, driver figures."""
    import ray

    started = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)  # fmt: skip
    ray.data.DataContext.get_current().enable_progress_bars = False
    items = [{"position": k, "path": str(p)} for k, p in enumerate(paths)]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map(
        _VideoWorker,
        fn_constructor_args=(str(out), workers),
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
    )
    first, statuses = None, []
    for row in dataset.iter_rows():
        first = first if first is not None else time.perf_counter() - started
        statuses.append(row["status"])
    seconds = time.perf_counter() - started
    ray.shutdown()
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = own.ru_utime + own.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    done = statuses.count("done")
    return {"executor": "ray-data", "workers": workers, "videos_done": done,
            "seconds": seconds, "first_result_s": first, "videos_per_s": done / seconds,
            "driver_peak_rss_mib": own.ru_maxrss / 1024, "driver_cpu_s": cpu_s}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="videmo-raydata-") as tmp:
        work = Path(tmp)
        paths = make_inputs(work / "in", args.videos)
        figures = {"videos": args.videos, **run_batch(paths, work / "out", args.workers)}
    print(json.dumps(figures), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
