"""``videmo bench``: end-to-end speed next to decode-only speed of the same file.

Decode-only speed is the reference: it is the ceiling for any analysis of
that file on that machine, so the ratio between the two travels across
machines better than raw fps. Every figure comes from the same process run.
"""

from __future__ import annotations

import contextlib
import json
import resource
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from videmo.detect import create_detector
from videmo.errors import VidemoError, VideoError
from videmo.outputs.names import RUN_JSON
from videmo.pipeline import Analyzer, prefetch
from videmo.runner import run_videos
from videmo.settings import Settings
from videmo.video import Frame, index_packets, probe, read_frames


def _timed_fps(frames: int, seconds: float) -> float:
    return frames / seconds if seconds > 0 else float("nan")


def _readable(frames: Iterator[Frame]) -> Iterator[Frame]:
    """The frames that decode: a damaged file is timed on them, as ``videmo run`` analyses
    them (its loss is reported there, not here)."""
    with contextlib.suppress(VideoError):
        yield from frames


def decode_fps(path: Path, convert: bool = True) -> tuple[int, float]:
    """Frames and fps of a plain decode (with or without converting every frame to BGR)."""
    index = index_packets(path)
    started = time.perf_counter()
    frames = sum(1 for _ in _readable(read_frames(path, index=index, bgr=convert)))
    return frames, _timed_fps(frames, time.perf_counter() - started)


def detect_fps(path: Path, settings: Settings) -> float:
    """Decode plus full-frame face detection on every analysed frame (the old schedule)."""
    detector = create_detector(settings.detector_config)
    index = index_packets(path)
    started = time.perf_counter()
    frames = _readable(read_frames(path, every=settings.every, index=index, bgr=False))
    for frame in prefetch(frames):
        small, scale = frame.resized(settings.det_size)
        detector.detect_scaled(small, scale, frame.shape)
    return _timed_fps(len(index), time.perf_counter() - started)


def stage_profile(path: Path, settings: Settings) -> dict:
    """Milliseconds per source frame in each stage of the analysing thread, for one serial pass.

    Decoding runs in its own thread; "decode (waiting for frames)" is the time the
    analysis waited for it, so the stages add up to the analysis wall time.
    """
    analyzer = Analyzer(settings)
    index = index_packets(path)
    started = time.perf_counter()
    analyzer.run_chunk(path, 0, len(index), index)
    wall = time.perf_counter() - started
    per_frame = {k: 1000 * v / len(index) for k, v in sorted(analyzer.clock.seconds.items())}
    per_frame["other"] = 1000 * wall / len(index) - sum(per_frame.values())
    stats = analyzer.stats
    return {"ms_per_frame": per_frame, "analysis_fps": _timed_fps(len(index), wall),
            "full_detections": stats.full, "followed_faces": stats.followed,
            "shot_cuts": stats.cuts}  # fmt: skip


def end_to_end(path: Path, settings: Settings, frames: int) -> dict:
    """Full analysis (decode, detect, classify, track, timeline files) of one video.

    ``frames`` is what the rate counts: the frames that decode, as ``decode_fps`` counts
    them, so the ratio compares like with like (a damaged file's lost frames are in neither;
    with ``--every N`` the run still goes through every frame of the file)."""
    with tempfile.TemporaryDirectory(prefix="videmo-bench-") as tmp:
        started = time.perf_counter()
        [run] = run_videos([path], Path(tmp), replace(settings, overwrite=True))
        elapsed = time.perf_counter() - started
        if run.status == "failed":
            raise VidemoError(run.error)
        # the workers that really ran (fewer than asked when the clip has fewer chunks)
        execution = json.loads((run.out_dir / RUN_JSON).read_text())["execution"]
    return {"seconds": elapsed, "fps": _timed_fps(frames, elapsed), "faces": run.faces,
            "rows": len(run.timeline), "workers": execution["workers"],
            "executor": execution["executor"]}  # fmt: skip


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
        "detect_fps": detect_fps(path, settings), "stages": stage_profile(path, settings),
        "runs": [],
    }  # fmt: skip
    for count in workers:
        run_settings = replace(settings, workers=count, video=False, plots=False, report=False)
        figures = end_to_end(path, run_settings, frames)
        figures["workers_asked"] = count
        figures["ratio_to_decode"] = figures["fps"] / decode_only  # the reference
        figures["ratio_to_decode_bgr"] = figures["fps"] / decode_bgr
        result["runs"].append(figures)
    result["peak_rss_mb"] = peak_rss_mb()
    return result
