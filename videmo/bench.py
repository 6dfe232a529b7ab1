"""``videmo bench``: end-to-end speed next to decode-only speed of the same file.

Decode-only speed is the reference: it is the ceiling for any analysis of
that file on that machine, so the ratio between the two travels across
machines better than raw fps. Every figure comes from the same process run.
"""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from videmo.detect import create_detector
from videmo.pipeline import prefetch
from videmo.runner import run_videos
from videmo.settings import Settings
from videmo.video import index_packets, probe, read_frames


def _timed_fps(frames: int, seconds: float) -> float:
    return frames / seconds if seconds > 0 else float("nan")


def decode_fps(path: Path, convert: bool = True) -> tuple[int, float]:
    """Frames and fps of a plain decode (with or without the BGR conversion)."""
    index = index_packets(path)
    started = time.perf_counter()
    every = 1 if convert else len(index) + 1  # every > n: decode all, convert only frame 0
    frames = sum(1 for _ in read_frames(path, every=every, index=index))
    elapsed = time.perf_counter() - started
    return len(index) if not convert else frames, _timed_fps(len(index), elapsed)


def detect_fps(path: Path, settings: Settings) -> float:
    """Decode plus face detection only (no classification, no outputs), as the pipeline does."""
    detector = create_detector(settings.detector_config)
    index = index_packets(path)
    started = time.perf_counter()
    for frame in prefetch(read_frames(path, every=settings.every, index=index)):
        small, scale = frame.resized(settings.det_size)
        detector.detect_scaled(small, scale, frame.image.shape)
    return _timed_fps(len(index), time.perf_counter() - started)


def end_to_end(path: Path, settings: Settings) -> dict:
    """Full analysis (decode, detect, classify, track, timeline files) of one video."""
    with tempfile.TemporaryDirectory(prefix="videmo-bench-") as tmp:
        started = time.perf_counter()
        [run] = run_videos([path], Path(tmp), replace(settings, overwrite=True))
        elapsed = time.perf_counter() - started
    if run.status != "done":
        raise RuntimeError(run.error)
    frames = len(index_packets(path))
    return {"seconds": elapsed, "fps": _timed_fps(frames, elapsed), "faces": run.faces,
            "rows": len(run.timeline)}  # fmt: skip


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def run_bench(path: Path, settings: Settings, workers: list[int | None]) -> dict:
    """All figures for one file: decode, detect, and end-to-end per worker count."""
    info = probe(path)
    frames, decode_only = decode_fps(path, convert=False)
    _, decode_bgr = decode_fps(path, convert=True)
    result = {
        "video": str(path), "width": info.width, "height": info.height, "frames": frames,
        "duration_s": info.duration_s, "decode_fps": decode_only, "decode_bgr_fps": decode_bgr,
        "detect_fps": detect_fps(path, settings), "runs": [],
    }  # fmt: skip
    for count in workers:
        run_settings = replace(settings, workers=count, video=False, plots=False, report=False)
        figures = end_to_end(path, run_settings)
        figures["workers"] = count
        figures["ratio_to_decode_bgr"] = figures["fps"] / decode_bgr
        result["runs"].append(figures)
    result["peak_rss_mb"] = peak_rss_mb()
    return result
