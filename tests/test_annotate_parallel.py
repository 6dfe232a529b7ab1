"""The annotated video made in parallel, per chunk, equals the one made in one piece.

Chunks are annotated into video-only segments and joined without re-encoding; the result
must keep exactly the source's frames and frame times, and its audio.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from videmo.encode import VideoWriter, concat_segments
from videmo.errors import OutputError
from videmo.outputs.annotate import rows_by_frame
from videmo.outputs.atomic import temp_path_for
from videmo.outputs.writer import (
    ANNOTATED_MP4,
    annotate_frames,
    rows_for_range,
    write_annotated,
)
from videmo.runner import VideoRun, run_videos
from videmo.settings import Settings
from videmo.video import Frame, index_packets, probe, read_frames

DATA = Path("/work/shared/data/videos")
HAMILTON = DATA / "multi_face" / "face_recognition_short_hamilton_clip.mp4"
SINGLE = DATA / "single_face" / "pyfeat_single_face.mp4"
EVERY = 4  # with 1 s chunks (~30 frames) some chunks start on a frame that was not analysed

pytestmark = pytest.mark.skipif(not HAMILTON.exists(), reason="shared test videos missing")


def _run(path: Path, out: Path, workers: int) -> VideoRun:
    settings = Settings(workers=workers, chunk_s=1.0, every=EVERY, plots=False)
    (run,) = run_videos([path], out, settings)
    assert run.status == "done", run.error
    assert len(run.chunks) >= 3
    return run


@pytest.fixture(scope="module", params=[HAMILTON, SINGLE], ids=["hamilton", "single"])
def chunked(request, tmp_path_factory) -> tuple[VideoRun, Path]:
    """A serial run in 1 s chunks, plus the same timeline annotated in one piece."""
    run = _run(request.param, tmp_path_factory.mktemp("chunked"), workers=0)
    whole = run.out_dir.parent / "whole.mp4"
    write_annotated(run, whole, EVERY)  # no executor: encoded here, in one piece
    return run, whole


def _frame_times(path: Path) -> list[Fraction]:
    info = probe(path)
    return [Fraction(int(p)) * info.time_base for p in index_packets(path).pts]


def _assert_like_source(video: Path, source: Path) -> None:
    """Same frames at the same times as the source, decodable, with its audio if any."""
    src_info, got_info = probe(source), probe(video)
    assert _frame_times(video) == _frame_times(source)
    assert sum(1 for _ in read_frames(video)) == len(index_packets(source))
    assert got_info.has_audio == src_info.has_audio
    assert (got_info.width, got_info.height) == (src_info.width, src_info.height)


def _mean_abs_diff(a: Path, b: Path) -> float:
    diffs = [
        np.abs(x.image.astype(np.int16) - y.image.astype(np.int16)).mean()
        for x, y in zip(read_frames(a), read_frames(b), strict=True)
    ]
    return float(np.mean(diffs))


def test_chunked_annotated_video_keeps_source_frames_times_and_audio(chunked) -> None:
    run, whole = chunked
    video = run.out_dir / ANNOTATED_MP4
    _assert_like_source(video, run.path)
    _assert_like_source(whole, run.path)
    assert not [p.name for p in run.out_dir.iterdir() if "tmp" in p.name]
    # Same encoder settings; only the segment joins (new keyframes) differ.
    assert _mean_abs_diff(video, whole) < 3.0


def test_source_audio_is_copied(chunked) -> None:
    run, _ = chunked
    assert probe(run.path).has_audio  # both test videos have sound
    with av.open(str(run.out_dir / ANNOTATED_MP4)) as out, av.open(str(run.path)) as src:
        got, want = out.streams.audio[0], src.streams.audio[0]
        assert got.rate == want.rate
        n_got = sum(1 for p in out.demux(got) if p.size)
        n_want = sum(1 for p in src.demux(want) if p.size)
    assert n_got == n_want


def test_chunks_starting_on_unanalysed_frames_draw_like_one_pass(chunked) -> None:
    """Drawn frames (before encoding) are identical for any chunking, `every` included."""
    run, _ = chunked
    assert any(a % EVERY for a, _ in run.chunks)
    rows = rows_by_frame(run.timeline)
    assert len(rows.frames) > 0
    one = [f.image for f in annotate_frames(run.path, run.index, rows, EVERY)]
    parts = [
        f.image
        for a, b in run.chunks
        for f in annotate_frames(
            run.path, run.index, rows_for_range(rows, EVERY, a, b), EVERY, a, b
        )
    ]
    assert len(parts) == len(one)
    for i, (x, y) in enumerate(zip(one, parts, strict=True)):
        assert np.array_equal(x, y), f"frame {i} differs"


class _FailingPool:
    """Writes the first segment, then fails like a crashed worker."""

    def annotate(self, tasks, index, info, every) -> list[int]:
        tasks[0].run(index, info, every)
        raise RuntimeError("worker died")


def test_segments_are_removed_when_annotation_fails(chunked, tmp_path: Path) -> None:
    run, _ = chunked
    out = tmp_path / ANNOTATED_MP4
    with pytest.raises(RuntimeError, match="worker died"):
        write_annotated(run, out, EVERY, _FailingPool().annotate)
    assert list(tmp_path.iterdir()) == []


class _RetriedPool:
    """Annotates every segment, the first one after a worker was killed writing it: its
    half-written file (the writer's temp name) stays behind, as after a SIGKILL or OOM."""

    def annotate(self, tasks, index, info, every) -> list[int]:
        temp_path_for(tasks[0].segment).write_bytes(b"half a segment")
        return [task.run(index, info, every) for task in tasks]


def test_a_killed_workers_partial_segment_is_removed(chunked, tmp_path: Path) -> None:
    """The retried chunk completes the video; the killed attempt's partial segment (a temp of a
    temp: ``..annotated.0.tmp.<pid>.<n>.tmp.mp4``) was left hidden in the finished folder."""
    run, whole = chunked
    out = tmp_path / ANNOTATED_MP4
    write_annotated(run, out, EVERY, _RetriedPool().annotate)
    assert [p.name for p in tmp_path.iterdir()] == [ANNOTATED_MP4]
    assert _frame_times(out) == _frame_times(whole)


def test_ray_workers_write_the_same_video(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    run = _run(SINGLE, tmp_path / "ray", workers=2)
    report = json.loads((run.out_dir / "run.json").read_text())
    assert report["execution"]["executor"] == "ray"
    # the analysis time is the driver's (a worker elsewhere has another clock), and filled in
    assert 0 < report["timings_s"]["analysis"] <= run.seconds
    video = run.out_dir / ANNOTATED_MP4
    _assert_like_source(video, SINGLE)
    assert not [p.name for p in run.out_dir.iterdir() if "tmp" in p.name]
    whole = tmp_path / "whole.mp4"
    write_annotated(run, whole, EVERY)
    assert _mean_abs_diff(video, whole) < 3.0


def _segment(path: Path, source: Path, start: int, stop: int, crop: int = 0) -> Path:
    info = probe(source)
    with VideoWriter(path, info, segment=True) as writer:
        for f in read_frames(source, start, stop):
            if crop:
                f = Frame(f.index, f.pts, f.time_s, np.ascontiguousarray(f.image[crop:]))
            writer.write(f)
    return path


def test_concat_rejects_mismatched_or_overlapping_segments(tmp_path: Path) -> None:
    a = _segment(tmp_path / ".a.tmp.mp4", SINGLE, 0, 5)
    b = _segment(tmp_path / ".b.tmp.mp4", SINGLE, 5, 10, crop=40)
    c = _segment(tmp_path / ".c.tmp.mp4", SINGLE, 3, 8)
    out = tmp_path / "out.mp4"
    with pytest.raises(OutputError, match="different height"):
        concat_segments([a, b], out, SINGLE)
    with pytest.raises(OutputError, match="overlaps"):
        concat_segments([a, c], out, SINGLE)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.tmp.mp4", ".b.tmp.mp4", ".c.tmp.mp4"]
    assert concat_segments([a, _segment(tmp_path / "d.mp4", SINGLE, 5, 9)], out, None) == 9
    assert not probe(out).has_audio
    assert _frame_times(out) == _frame_times(SINGLE)[:9]
