"""Write everything for one analysed video, ending with the ``run.json`` marker.

Each file is written atomically; ``run.json`` comes last and says
``"status": "complete"``, so a folder without it is known to be partial.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from videmo import __version__
from videmo.emotion import model_metrics
from videmo.encode import VideoWriter, audio_plan_of, concat_segments
from videmo.errors import OutputError, VideoError
from videmo.models import EMOTION_FILE, model_path, sha256_file
from videmo.naming import printable
from videmo.outputs.annotate import FrameRows, draw_faces, rows_by_frame
from videmo.outputs.atomic import temp_of, write_json_atomic
from videmo.outputs.gallery import write_thumbnails
from videmo.outputs.names import ANNOTATED_MP4, REPORT_HTML, RUN_JSON
from videmo.outputs.plots import write_plots
from videmo.outputs.report import write_video_report
from videmo.outputs.timeline import faces_summary, write_faces, write_timeline
from videmo.settings import Settings
from videmo.video import Frame, PacketIndex, VideoInfo, read_frames

if TYPE_CHECKING:
    from videmo.runner import VideoRun

_PACKAGES = ("av", "numpy", "pandas", "pyarrow", "onnxruntime-gpu", "onnxruntime",
             "opencv-python-headless", "ray", "matplotlib")  # fmt: skip


def rows_for_range(rows: FrameRows, every: int, start: int, stop: int) -> FrameRows:
    """What frames ``[start, stop)`` need: their rows and those of the analysed frame before.

    A range may start on a frame that was not analysed (``start % every != 0``); it shows
    the faces of the latest analysed frame, ``start - start % every``, like a full read does.
    """
    return rows.select(start - start % every, stop)


def annotate_frames(
    path: Path,
    index: PacketIndex,
    rows: FrameRows,
    every: int,
    start: int = 0,
    stop: int | None = None,
    damaged: bool = False,
) -> Iterator[Frame]:
    """Decode frames ``[start, stop)`` and draw their faces; the same for any chunking.

    Frames skipped by ``--every`` show the faces of the latest analysed frame, also when
    that frame lies before ``start``. For a video the analysis accepted as ``damaged``
    (see the README's damaged-file policy) the frames that decode are drawn and the
    lost ones left out, as in the timeline, instead of failing the video.
    """
    anchor = start - start % every
    current = rows.get(anchor) if anchor < start else None
    try:
        for frame in read_frames(path, start, stop, index=index):
            if frame.index % every == 0:
                current = rows.get(frame.index)
            if current is not None:
                draw_faces(frame.image, *current)
            yield frame
    except VideoError:  # raised after every readable frame of the range was yielded
        if not damaged:
            raise


@dataclass(frozen=True)
class AnnotateTask:
    """Annotate frames ``[start, stop)`` of ``path`` into the video-only ``segment``."""

    path: Path
    start: int
    stop: int
    segment: Path
    rows: FrameRows  # from rows_for_range()
    damaged: bool = False  # leave out frames that do not decode (see annotate_frames)

    def run(self, index: PacketIndex, info: VideoInfo, every: int) -> int:
        """Do it here (in a worker); returns the frames written."""
        return annotate_range(
            self.path, index, info, self.rows, every, self.start, self.stop, self.segment,
            self.damaged,
        )  # fmt: skip


def annotate_range(
    path: Path,
    index: PacketIndex,
    info: VideoInfo,
    lookup_rows: FrameRows,
    every: int,
    start: int,
    stop: int,
    segment_path: Path,
    damaged: bool = False,
) -> int:
    """Annotate frames ``[start, stop)`` into a video-only segment; returns frames written.

    ``lookup_rows`` must hold the rows of :func:`rows_for_range` (more do no harm). Runs in
    a worker: segments of consecutive ranges are joined by :func:`concat_segments`.
    """
    with VideoWriter(segment_path, info, segment=True) as writer:
        for frame in annotate_frames(path, index, lookup_rows, every, start, stop, damaged):
            writer.write(frame)
        return writer.frames_written


def _segment_paths(out_path: Path, count: int) -> list[Path]:
    return [out_path.with_name(f".{out_path.stem}.{k}.tmp{out_path.suffix}") for k in range(count)]


def _remove_segments(out_path: Path) -> None:
    """Delete the segments of ``out_path``, and any partial one a killed worker left.

    A segment being written is a temp of a temp (``..annotated.0.tmp.<pid>.<n>.tmp.mp4``);
    :func:`temp_of` knows every such name. The folder's lock keeps other runs out.
    """
    for entry in out_path.parent.iterdir():
        if temp_of(entry.name) == out_path.name and entry.is_file():
            entry.unlink(missing_ok=True)


#: Runs annotation tasks (in parallel, on an executor's workers); the frames each wrote.
AnnotateSegments = Callable[[list["AnnotateTask"], PacketIndex, VideoInfo, int], list[int]]


def write_annotated(
    run: VideoRun, out_path: Path, every: int, annotate: AnnotateSegments | None = None
) -> int:
    """Re-decode the video and draw each frame's faces; returns frames written.

    Given ``annotate`` (an executor's ``annotate``) and more than one chunk, each chunk is
    annotated into a hidden segment ``.annotated.<k>.tmp.mp4`` by the executor's workers
    and the segments are joined (no re-encode, source audio added); they are removed
    afterwards, also on error. Otherwise the video is encoded here in one piece. Both ways
    give the source's frames and times and the same encoder settings.
    """
    rows = rows_by_frame(run.timeline)
    damaged = bool(run.damage)
    if annotate is None or len(run.chunks) < 2:
        with VideoWriter(out_path, run.info, copy_audio_from=_sound_source(run)) as writer:
            for frame in annotate_frames(run.path, run.index, rows, every, damaged=damaged):
                writer.write(frame)
            return writer.frames_written
    segments = _segment_paths(out_path, len(run.chunks))
    tasks = [
        AnnotateTask(run.path, a, b, seg, rows_for_range(rows, every, a, b), damaged)
        for (a, b), seg in zip(run.chunks, segments, strict=True)
    ]
    try:
        counts = annotate(tasks, run.index, run.info, every)
        packets = concat_segments(segments, out_path, copy_audio_from=_sound_source(run))
    finally:
        _remove_segments(out_path)
    if packets != sum(counts):
        out_path.unlink(missing_ok=True)
        raise OutputError(f"{out_path}: joined {packets} frames, expected {sum(counts)}")
    return packets


def _versions() -> dict[str, str]:
    found = {"videmo": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _sound_source(run: VideoRun) -> Path | None:
    """Where ``annotated.mp4``'s sound comes from. Recordings joined with ``cat`` start their
    timestamps again, the sound's too: it is left out rather than cut or misplaced (copied,
    the second recording was silent; re-encoded, the muxer failed the video)."""
    return None if run.index.restarts else run.path


def _annotated_audio(run: VideoRun) -> str:
    """What ``annotated.mp4``'s sound is, in words (see :func:`_sound_source`)."""
    plan = audio_plan_of(run.path)
    if _sound_source(run) is None and plan.mode != "none":
        return "dropped: the recording's timestamps start again (recordings joined)"
    return plan.describe()


def _duration_s(run: VideoRun) -> float | None:
    """The header's duration, unless the frames indexed run past it.

    A header that overstates the length is how a cut file is recognised (``damage``), so it
    stands; one that understates it (a hand-edited or badly muxed file) would show a video
    shorter than the faces seen in it.
    """
    header = run.info.duration_s
    times = run.index.times_s(run.info)
    if times.size < 2:  # one frame has no length of its own
        return header
    read = round(float(times[-1]) + float(np.median(np.diff(times))), 6)
    return read if header is None or read > header else header


def write_video_outputs(run: VideoRun, settings: Settings, context: dict) -> list[Path]:
    """Timeline, faces, plots and annotated video for one run, then run.json."""
    started = time.perf_counter()
    out = run.out_dir
    written = write_timeline(run.timeline, out)
    written.append(write_faces(run.timeline, out))
    if settings.plots:
        written += write_plots(run.timeline, out, printable(run.path.name))
    annotated_frames = None
    if settings.video:
        annotated_frames = write_annotated(
            run, out / ANNOTATED_MP4, settings.every, context.get("annotate")
        )
        written.append(out / ANNOTATED_MP4)
    if settings.report:
        written += write_thumbnails(run.path, run.index, run.timeline, out)
        written.append(out / REPORT_HTML)
    info = run.info
    model = model_path(settings.model or EMOTION_FILE)
    report = {
        "status": "damaged" if run.damage else "complete",
        "damage": run.damage,
        "input": printable(run.path),
        "fingerprint": context["fingerprint"],
        "versions": _versions(),
        "model": {
            "path": str(model),
            "sha256": sha256_file(model),
            "metrics": model_metrics(model),
        },
        "settings": settings.to_dict(),
        "execution": {k: context[k] for k in ("executor", "workers", "provider", "classify_stage")},
        # what annotated.mp4's sound is (copied, AAC, a stereo downmix, or why there is none)
        "annotated_audio": _annotated_audio(run) if settings.video else None,
        "video": {
            "width": info.width,
            "height": info.height,
            "rotation": info.rotation,
            "pixel_aspect": info.pixel_aspect,  # stored pixels' shape; width is as shown
            "fps": info.fps,
            "duration_s": _duration_s(run),
            # the first frame's own time: time_s counts from it, players show it
            "start_s": round(float(info.start_pts * info.time_base), 6),
            "codec": info.codec,
            "video_streams": info.video_streams,  # the first is analysed
            "frames_indexed": run.expected_frames,
            # "decoding" where timestamps cannot name frames (AVI with B-frames, repeated or
            # restarting timestamps): read in one piece from the start, counted as decoded
            "frame_order": "decoding" if run.index.by_output else "timestamps",
            "damaged": run.index.error,
        },  # fmt: skip
        "counts": {
            "frames_analysed": run.frames,
            "annotated_frames": annotated_frames,
            "faces": run.faces,
            "timeline_rows": len(run.timeline),
            # faces found but left out as under --min-face, on the frames detected in full
            "small_faces": asdict(run.small_faces),
        },
        "timings_s": {
            "analysis": round(run.analysis_s, 3),
            "writing": round(time.perf_counter() - started, 3),
        },
        "outputs": sorted(str(p.relative_to(out)) for p in written),
    }
    if settings.report:  # the page shows run.json's facts, so it is made from the same dict
        write_video_report(report, faces_summary(run.timeline), out, printable(run.path.name))
    # Sizes let a rerun tell a finished folder from one whose files were lost or changed.
    report["output_bytes"] = {name: (out / name).stat().st_size for name in report["outputs"]}
    write_json_atomic(out / RUN_JSON, report)
    return written
