"""Write everything for one analysed video, ending with the ``run.json`` marker.

Each file is written atomically; ``run.json`` comes last and says
``"status": "complete"``, so a folder without it is known to be partial.
"""

from __future__ import annotations

import platform
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from videmo import __version__
from videmo.models import EMOTION_FILE, model_path, sha256_file
from videmo.outputs.annotate import draw_faces, rows_by_frame
from videmo.outputs.atomic import write_json_atomic
from videmo.outputs.plots import write_plots
from videmo.outputs.timeline import write_faces, write_timeline
from videmo.settings import Settings
from videmo.video import VideoWriter, read_frames

if TYPE_CHECKING:
    from videmo.runner import VideoRun

ANNOTATED_MP4 = "annotated.mp4"
_PACKAGES = ("av", "numpy", "pandas", "pyarrow", "onnxruntime-gpu", "onnxruntime",
             "opencv-python-headless", "ray", "matplotlib")  # fmt: skip


def write_annotated(run: VideoRun, out_path: Path, every: int) -> int:
    """Re-decode the video and draw each frame's faces; returns frames written.

    Frames skipped by ``--every`` show the faces of the latest analysed frame.
    """
    lookup = rows_by_frame(run.timeline)
    current = None
    with VideoWriter(out_path, run.info, copy_audio_from=run.path) as writer:
        for frame in read_frames(run.path, index=run.index):
            if frame.index % every == 0:
                current = lookup.get(frame.index)
            if current is not None:
                draw_faces(frame.image, *current)
            writer.write(frame)
        return writer.frames_written


def _versions() -> dict[str, str]:
    found = {"videmo": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_video_outputs(run: VideoRun, settings: Settings, context: dict) -> list[Path]:
    """Timeline, faces, plots and annotated video for one run, then run.json."""
    started = time.perf_counter()
    out = run.out_dir
    written = write_timeline(run.timeline, out)
    written.append(write_faces(run.timeline, out))
    if settings.plots:
        written += write_plots(run.timeline, out, run.path.name)
    annotated_frames = None
    if settings.video:
        annotated_frames = write_annotated(run, out / ANNOTATED_MP4, settings.every)
        written.append(out / ANNOTATED_MP4)
    info = run.info
    model = model_path(settings.model or EMOTION_FILE)
    report = {
        "status": "complete",
        "input": str(run.path),
        "fingerprint": context["fingerprint"],
        "versions": _versions(),
        "model": {"path": str(model), "sha256": sha256_file(model)},
        "settings": settings.to_dict(),
        "execution": {k: context[k] for k in ("executor", "workers", "provider")},
        "video": {
            "width": info.width,
            "height": info.height,
            "rotation": info.rotation,
            "fps": info.fps,
            "duration_s": info.duration_s,
            "codec": info.codec,
            "frames_indexed": run.expected_frames,
            "damaged": run.index.error,
        },  # fmt: skip
        "counts": {
            "frames_analysed": run.frames,
            "annotated_frames": annotated_frames,
            "faces": run.faces,
            "timeline_rows": len(run.timeline),
        },
        "timings_s": {
            "analysis": round(started - run.started, 3),
            "writing": round(time.perf_counter() - started, 3),
        },
        "outputs": sorted(str(p.relative_to(out)) for p in written),
    }
    write_json_atomic(out / "run.json", report)
    return written
