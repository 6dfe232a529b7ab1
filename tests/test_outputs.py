"""Tests for videmo.outputs: schema, round trips, determinism, atomicity, plots, drawing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from videmo.detections import FaceDetections
from videmo.errors import OutputError, VidemoError
from videmo.outputs.annotate import (
    _BOX_BGR,
    FaceRows,
    _overlaps,
    _place_labels,
    draw_faces,
    rows_by_frame,
)
from videmo.outputs.atomic import atomic_write, write_json_atomic, write_text_atomic
from videmo.outputs.palette import EMOTION_COLORS, hex_to_bgr
from videmo.outputs.plots import write_plots
from videmo.outputs.timeline import (
    EMOTION_DTYPE,
    FACES_COLUMNS,
    TIMELINE_COLUMNS,
    build_timeline,
    faces_summary,
    read_timeline,
    write_faces,
    write_timeline,
)
from videmo.spec import EMOTIONS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
K = len(EMOTIONS)


def make_dets(n_frames: int = 30, seed: int = 0) -> tuple[FaceDetections, np.ndarray]:
    """Two faces at 29.97 fps, face 2 missing for a stretch, one untracked detection."""
    rng = np.random.default_rng(seed)
    parts, smooth = [], []
    for f in range(n_frames):
        ids = [1] if 10 <= f < 15 else [2, 1]  # deliberately not in id order
        n = len(ids)
        xywh = np.array([[100.0 + 300 * (i == 2), 80.3, 120.25, 150.0] for i in ids]) + f
        probs = rng.dirichlet(np.full(K, 0.5), n)
        part = FaceDetections.for_frame(f, f / 29.97, xywh, rng.uniform(0.6, 1.0, n))
        part.probs[:] = probs
        part.face_id[:] = ids
        parts.append(part)
        smooth.append(probs * 0.5 + 0.5 / K)
    stray = FaceDetections.for_frame(3, 3 / 29.97, np.array([[5.0, 5, 20, 20]]), np.array([0.5]))
    parts.append(stray)
    smooth.append(np.full((1, K), 1 / K))
    return FaceDetections.concat(parts), np.concatenate(smooth)


@pytest.fixture
def timeline() -> pd.DataFrame:
    return build_timeline(*make_dets())


def assert_schema(df: pd.DataFrame, schema: dict) -> None:
    assert list(df.columns) == list(schema)
    for col, dtype in schema.items():
        assert df[col].dtype == dtype, col
    assert isinstance(df.index, pd.RangeIndex)


# --- timeline schema ----------------------------------------------------------------


def test_build_timeline_schema_order_and_values(timeline: pd.DataFrame) -> None:
    assert_schema(timeline, TIMELINE_COLUMNS)
    assert list(timeline["emotion"].cat.categories) == list(EMOTIONS)
    assert (timeline["face_id"] >= 1).all()  # untracked detection dropped
    assert len(timeline) == 2 * 30 - 5
    keys = list(zip(timeline["frame"], timeline["face_id"], strict=True))
    assert keys == sorted(keys)
    smooth = timeline[[f"smooth_{e}" for e in EMOTIONS]].to_numpy()
    codes = timeline["emotion"].cat.codes.to_numpy()
    np.testing.assert_array_equal(codes, smooth.argmax(axis=1))
    np.testing.assert_allclose(timeline["confidence"], smooth.max(axis=1), atol=1e-6)


def test_build_timeline_zero_rows_has_full_schema() -> None:
    df = build_timeline(FaceDetections.empty(), np.zeros((0, K)))
    assert len(df) == 0
    assert_schema(df, TIMELINE_COLUMNS)


def test_build_timeline_rejects_misaligned_smoothed() -> None:
    dets, smooth = make_dets(3)
    with pytest.raises(ValueError):
        build_timeline(dets, smooth[:-1])


# --- write / read ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["timeline.parquet", "timeline.csv", "."])
def test_round_trip_exact(timeline: pd.DataFrame, tmp_path: Path, name: str) -> None:
    write_timeline(timeline, tmp_path)
    if name == ".":  # a folder is read once its run.json says the run finished
        with pytest.raises(OutputError, match=r"holds no finished run \(no run.json"):
            read_timeline(tmp_path)
        (tmp_path / "run.json").write_text('{"status": "failed"}')  # says why, not "no"
        with pytest.raises(OutputError, match=r"\(an unfinished or unreadable run.json"):
            read_timeline(tmp_path)
        (tmp_path / "run.json").write_text('{"status": "complete"}')
    back = read_timeline(tmp_path / name)
    pd.testing.assert_frame_equal(back, timeline, check_exact=True)


@pytest.mark.parametrize("name", ["timeline.parquet", "timeline.csv"])
def test_classified_flag_round_trips_and_older_timelines_read(
    timeline: pd.DataFrame, tmp_path: Path, name: str
) -> None:
    """Rows the model did not see keep their flag in both files; a timeline written before
    the flag existed (every row classified) still reads, with the flag set."""
    flagged = timeline.assign(classified=np.arange(len(timeline)) % 3 == 0)
    write_timeline(flagged, tmp_path / "new")
    back = read_timeline(tmp_path / "new" / name)
    pd.testing.assert_frame_equal(back, flagged, check_exact=True)
    assert back["classified"].dtype == bool and 0 < back["classified"].sum() < len(back)
    write_timeline(timeline, tmp_path / "old")
    old = tmp_path / "old" / name
    if name.endswith(".csv"):
        pd.read_csv(old).drop(columns="classified").to_csv(old, index=False)
    else:
        pd.read_parquet(old).drop(columns="classified").to_parquet(old)
    assert read_timeline(old)["classified"].all()


@pytest.mark.parametrize("name", ["timeline.parquet", "timeline.csv"])
def test_round_trip_empty(tmp_path: Path, name: str) -> None:
    empty = build_timeline(FaceDetections.empty(), np.zeros((0, K)))
    write_timeline(empty, tmp_path)
    assert (tmp_path / "timeline.csv").read_text().startswith("frame,time_s,face_id,")
    pd.testing.assert_frame_equal(read_timeline(tmp_path / name), empty, check_exact=True)


def test_writes_are_byte_identical(timeline: pd.DataFrame, tmp_path: Path) -> None:
    first = [p.read_bytes() for p in write_timeline(timeline, tmp_path / "a")]
    second = [p.read_bytes() for p in write_timeline(timeline.copy(), tmp_path / "b")]
    assert first == second
    assert write_faces(timeline, tmp_path / "a").read_bytes() == (
        write_faces(timeline, tmp_path / "b").read_bytes()
    )


def test_csv_is_readable(timeline: pd.DataFrame, tmp_path: Path) -> None:
    write_timeline(timeline, tmp_path)
    lines = (tmp_path / "timeline.csv").read_text().splitlines()
    fields = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
    assert fields["time_s"] == "0.000000"
    assert fields["x"] == "100.00"
    assert fields["emotion"] in EMOTIONS
    assert "e-" not in "\n".join(lines)


def test_read_timeline_errors(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="no timeline"):
        read_timeline(tmp_path / "missing.parquet")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(OutputError, match="lacks columns"):
        read_timeline(bad)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(VidemoError) as info:
        read_timeline(junk)
    assert "\n" not in str(info.value)


def test_unwritable_output_dir_raises_output_error(timeline: pd.DataFrame, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="file") as info:
        write_timeline(timeline, blocker / "out")
    assert "\n" not in str(info.value)
    with pytest.raises(OutputError):
        write_text_atomic(blocker / "a.txt", "hi")
    with pytest.raises(OutputError):
        write_plots(timeline, blocker / "out", "t")


# --- atomic writes ----------------------------------------------------------------------


def test_atomic_write_success_and_json(tmp_path: Path) -> None:
    path = tmp_path / "meta.json"
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_failure_keeps_old_file(tmp_path: Path, exc: type) -> None:
    path = tmp_path / "timeline.parquet"
    path.write_text("old")
    with pytest.raises(exc), atomic_write(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".")
        assert tmp.suffix == ".parquet"
        tmp.write_text("half")
        raise exc()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["timeline.parquet"]


def test_atomic_write_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "new.csv", suffix_keep=False) as tmp:
        assert tmp.name.endswith(".tmp")
        tmp.write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_through_a_link_keeps_the_link(tmp_path: Path) -> None:
    """``--csv link.csv`` replaced the link by a plain file and left its target as it was."""
    real = tmp_path / "data" / "real.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    write_text_atomic(link, "new\n")
    assert link.is_symlink() and real.read_text() == "new\n"
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.csv"]


def test_atomic_write_into_a_pipe_or_device_writes_into_it(tmp_path: Path) -> None:
    """A FIFO (or /dev/stdout) became a plain file and nothing reached the reader; as root,
    ``--csv /dev/full`` replaced the device node itself."""
    import stat
    import threading

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_text_atomic(fifo, "a,b\n1,2\n")
    reader.join(timeout=10)
    assert got == [b"a,b\n1,2\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


# --- faces summary -----------------------------------------------------------------------


def hand_timeline() -> pd.DataFrame:
    """Face 7: happy, happy, sad (frames 0-2); face 3: sad, angry tie -> angry (frames 1, 4)."""
    rows = [  # frame, face_id, raw-prob class, smoothed class
        (0, 7, "happy", "happy"),
        (1, 3, "sad", "sad"),
        (1, 7, "happy", "happy"),
        (2, 7, "sad", "sad"),
        (4, 3, "angry", "angry"),
    ]
    eye = np.eye(K, dtype=np.float32)
    dets = FaceDetections(
        frame=[r[0] for r in rows],
        time_s=[r[0] / 10 for r in rows],
        xywh=np.tile([10, 10, 50, 50], (len(rows), 1)),
        score=np.ones(len(rows)),
        probs=[eye[EMOTIONS.index(r[2])] for r in rows],
        face_id=[r[1] for r in rows],
    )
    smooth = np.array([eye[EMOTIONS.index(r[3])] * 0.8 + 0.2 / K for r in rows])
    return build_timeline(dets, smooth)


def test_faces_summary_values(tmp_path: Path) -> None:
    summary = faces_summary(hand_timeline())
    assert_schema(summary, FACES_COLUMNS)
    assert summary["face_id"].tolist() == [3, 7]
    assert summary["first_frame"].tolist() == [1, 0]
    assert summary["last_frame"].tolist() == [4, 2]
    assert summary["first_s"].tolist() == [0.1, 0.0]
    assert summary["last_s"].tolist() == [0.4, 0.2]
    assert summary["n_frames"].tolist() == [2, 3]
    assert summary["dominant_emotion"].tolist() == ["angry", "happy"]  # tie -> EMOTIONS order
    np.testing.assert_allclose(summary["mean_happy"], [0.0, 2 / 3], atol=1e-6)
    np.testing.assert_allclose(summary["mean_sad"], [0.5, 1 / 3], atol=1e-6)
    path = write_faces(hand_timeline(), tmp_path)
    assert path.read_text().splitlines()[1].startswith("3,0.100000,0.400000,1,4,2,angry,")


def test_dominant_emotion_is_the_highest_mean_probability_not_the_most_frequent_label() -> None:
    """One strong happy frame outweighs two barely-sad ones: the label agrees with the means."""
    happy, sad = EMOTIONS.index("happy"), EMOTIONS.index("sad")
    probs = np.zeros((3, K), np.float32)
    probs[0, happy] = 1.0
    probs[1:, sad], probs[1:, happy] = 0.55, 0.45
    dets = FaceDetections(
        frame=[0, 1, 2],
        time_s=[0.0, 0.1, 0.2],
        xywh=np.tile([10, 10, 50, 50], (3, 1)),
        score=np.ones(3),
        probs=probs,
        face_id=[1, 1, 1],
    )
    timeline = build_timeline(dets, probs)  # per-frame labels: happy, sad, sad
    assert timeline["emotion"].astype(str).tolist() == ["happy", "sad", "sad"]
    summary = faces_summary(timeline)
    assert summary["dominant_emotion"].astype(str).tolist() == ["happy"]
    means = summary[[f"mean_{name}" for name in EMOTIONS]].to_numpy()
    assert EMOTIONS[int(means[0].argmax())] == "happy"


def test_faces_summary_empty(tmp_path: Path) -> None:
    empty = build_timeline(FaceDetections.empty(), np.zeros((0, K)))
    assert_schema(faces_summary(empty), FACES_COLUMNS)
    lines = write_faces(empty, tmp_path).read_text().splitlines()
    assert lines == [",".join(FACES_COLUMNS)]


# --- plots --------------------------------------------------------------------------------


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_write_plots(timeline: pd.DataFrame, tmp_path: Path) -> None:
    paths = write_plots(timeline, tmp_path, "clip.mp4")
    names = sorted(p.name for p in paths)
    assert names == ["distribution.png", "face_001.png", "face_002.png", "overview.png"]
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert_png(path)
    assert not [p for p in (tmp_path / "plots").iterdir() if p.name.startswith(".")]


def test_a_long_file_name_leaves_the_charts_titles_inside_the_figure(
    timeline: pd.DataFrame,
) -> None:
    """A 150-character name ran off both edges, and "face #1 (72 frames)" with it."""
    from videmo.outputs.plots import plot_face, plot_overview, shortened

    name = shortened("a_rather_long_recording_name_" * 5 + "take_2.mp4")
    assert name.endswith("take_2.mp4") and "…" in name
    face = timeline[timeline["face_id"] == 1]
    for fig in (plot_face(face, 1, name, 0.04), plot_overview(timeline, name)):
        fig.canvas.draw()
        box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
        assert box.x0 >= 0 and box.x1 <= fig.bbox.x1, (box, fig.bbox)


def test_write_plots_empty(tmp_path: Path) -> None:
    empty = build_timeline(FaceDetections.empty(), np.zeros((0, K)))
    paths = write_plots(empty, tmp_path, "nobody.mp4")
    assert sorted(p.name for p in paths) == ["distribution.png", "overview.png"]
    for path in paths:
        assert_png(path)


# --- annotation ---------------------------------------------------------------------------


def test_rows_by_frame(timeline: pd.DataFrame) -> None:
    rows = rows_by_frame(timeline)
    assert rows.frames.tolist() == list(range(30)) and len(rows) == 30
    assert rows.get(12).face_id.tolist() == [1]
    assert rows.get(0).face_id.tolist() == [1, 2]
    assert rows.get(0).xywh.dtype == np.float32 and rows.get(0).xywh.shape == (2, 4)
    expected = pd.Categorical(timeline["emotion"], dtype=EMOTION_DTYPE).codes[:2]
    assert rows.get(0).emotion_idx.tolist() == expected.tolist()
    assert rows.get(30) is None and 30 not in rows and 29 in rows
    assert rows.select(10, 12).frames.tolist() == [10, 11]
    assert rows.select(10, 12).get(11).face_id.tolist() == rows.get(11).face_id.tolist()
    assert len(rows_by_frame(timeline.iloc[:0])) == 0


def test_draw_faces_marks_box_only(tmp_path: Path) -> None:
    image = np.zeros((360, 640, 3), np.uint8)
    rows = FaceRows(
        np.array([[200, 150, 100, 120]], np.float32),
        np.array([4]),
        np.array([EMOTIONS.index("happy")]),
        np.array([0.87], np.float32),
    )
    out = draw_faces(image, *rows)
    assert out is image
    assert image[150:270, 200].any()  # left box edge drawn
    assert image[160:260, 210:290].sum() == 0  # inside untouched
    assert image[100:150, 200:300].any()  # label above the box
    changed = image.any(axis=2)
    assert not changed[280:, :].any() and not changed[:, 330:].any() and not changed[:, :195].any()


def test_labels_of_faces_side_by_side_do_not_cover_each_other() -> None:
    """The dinner clip's children sit side by side: each label above its own box would print
    over its neighbour's; the second goes below its box instead."""
    image = np.zeros((480, 854, 3), np.uint8)
    xywh = np.array([[300, 240, 50, 60], [370, 235, 50, 60]], np.float32)
    happy, sad = EMOTIONS.index("happy"), EMOTIONS.index("sad")
    draw_faces(image, xywh, np.array([2, 3]), np.array([happy, sad]), np.array([0.85, 0.43]))
    sad_bgr = np.array(hex_to_bgr(EMOTION_COLORS["sad"]), np.uint8)
    below = image[296:330, 372:470]
    assert (below == sad_bgr).all(axis=2).mean() > 0.3  # face 3's label under its box
    above_first = image[200:238, 300:352]
    assert not (above_first == sad_bgr).all(axis=2).any()  # nothing of it over face 2's label
    boxes = [(300, 240, 350, 300), (370, 235, 420, 295), (440, 240, 490, 300)]
    places = _place_labels(boxes, [(150, 20)] * 3, (480, 854))
    assert all(not _overlaps(a, b) for i, a in enumerate(places) for b in places[i + 1 :])
    assert places[0] == (300, 220, 450, 240)  # the first keeps its place above its box


def test_a_label_in_a_very_tall_frame_fits_across_it() -> None:
    """360x1600: the label was sized to the frame's height and ran off its right edge, and
    the confidence with it. Its colour must stop short of the edge, all its text within."""
    image = np.zeros((1600, 360, 3), np.uint8)
    surprise = EMOTIONS.index("surprise")
    draw_faces(image, np.array([[120, 700, 120, 150]], np.float32), np.array([12]),
               np.array([surprise]), np.array([1.0]))  # fmt: skip
    fill = (image == np.array(_BOX_BGR[surprise], np.uint8)).all(axis=2)
    label_rows = fill[650:700]  # above the box
    columns = np.flatnonzero(label_rows.any(axis=0))
    assert columns.size and columns.max() < 359, "the label reaches the frame's edge"


def _drawn(box: tuple[int, int, int, int], code: int) -> np.ndarray:
    """Where one face's box colour lands on a blank 320x240 frame."""
    image = np.zeros((240, 320, 3), np.uint8)
    draw_faces(image, np.array([box], np.float32), np.array([1]), np.array([code]), np.ones(1))
    return (image == np.array(_BOX_BGR[code], np.uint8)).all(axis=2)


def test_draw_faces_at_frame_edges() -> None:
    """A box partly outside the frame keeps its visible edges where they are, and its label
    stays inside the frame."""
    top_left = _drawn((-20, -10, 60, 60), 0)  # right edge at x = 39, bottom edge at y = 49
    assert top_left[15:48, 39].all() and top_left[49, 5:35].all()
    assert not top_left[52:].any() and not top_left[15:48, 42:].any()
    bottom_right = _drawn((290, 200, 80, 80), 5)  # left edge at x = 290, top edge at y = 200
    assert bottom_right[205:, 290].all() and bottom_right[200, 295:].all()
    assert not bottom_right[:180].any() and not bottom_right[202:, :289].any()
    image = np.full((240, 320, 3), 7, np.uint8)
    draw_faces(image, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), np.zeros(0))
    assert (image == 7).all()  # no faces: nothing drawn


def test_run_json_duration_is_never_shorter_than_the_frames_read() -> None:
    """A header that understated the length made the report say "duration 0:00.5" beside a
    face seen until 0:02.0; one that overstates it marks a cut file and stands."""
    import dataclasses
    from types import SimpleNamespace

    from conftest import SINGLE

    from videmo.outputs.writer import _duration_s
    from videmo.video import index_packets, probe

    info, index = probe(SINGLE), index_packets(SINGLE)
    last = float(index.times_s(info)[-1])
    assert _duration_s(SimpleNamespace(info=info, index=index)) == info.duration_s
    short = SimpleNamespace(info=dataclasses.replace(info, duration_s=0.5), index=index)
    assert abs(_duration_s(short) - (last + 1 / 30)) < 1e-5  # the last frame's end (30 fps)
    long = SimpleNamespace(info=dataclasses.replace(info, duration_s=20.0), index=index)
    assert _duration_s(long) == 20.0
