"""Emotion accuracy the way a user meets it: through the video path, on labeled clips.

* Labeled FER2013 PublicTest faces pasted into real frames, H.264-encoded and run
  through ``videmo.analyze`` must be found (coverage) and classified as well as the
  same faces fed straight to the model.
* The face crop follows the framing stored in the model's spec.
* ``videmo evaluate-clips`` on the labeled CREMA-D clips.
* Smoothing has no lag; FER+ votes load and mix into training targets.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SHARED, cli_env, requires_data

from videmo.crop import crop_square, face_crop
from videmo.detections import FaceDetections
from videmo.emotion import EmotionModel
from videmo.spec import CALIBRATED_CROPS, EMOTIONS, CropGeometry, ModelSpec
from videmo.track import smooth

DATA = SHARED.parent
FER_CSV = DATA / "fer2013" / "fer2013.csv.gz"
FERPLUS_CSV = DATA / "ferplus" / "ferplus_votes.csv.gz"
BACKGROUND = SHARED / "no_face" / "pyfeat_no_face_caminandes.mp4"
CREMA = SHARED / "labeled" / "crema-d"

needs_fer = pytest.mark.skipif(not FER_CSV.is_file(), reason=f"FER2013 not at {FER_CSV}")


# --------------------------------------------------------------------------- the crop


def test_crop_square_pads_instead_of_squeezing() -> None:
    """A face half outside the frame keeps its square framing (edge pixels repeated)."""
    image = np.arange(100 * 120, dtype=np.uint8).reshape(100, 120) % 251
    inside = crop_square(image, 10, 20, 40)
    np.testing.assert_array_equal(inside, image[20:60, 10:50])
    corner = crop_square(image, -20, -10, 50)
    assert corner.shape == (50, 50)
    np.testing.assert_array_equal(corner[10:, 20:], image[:40, :30])
    np.testing.assert_array_equal(corner[:10, 20:], np.repeat(image[:1, :30], 10, axis=0))
    assert crop_square(image, 500, 500, 30).shape == (30, 30)  # wholly outside: blank


def test_geometry_is_part_of_the_model_spec() -> None:
    geometry = CropGeometry(scale=0.9, shift_x=0.05, shift_y=-0.1)
    spec = dataclasses.replace(ModelSpec(), crops={"yunet": geometry})
    again = ModelSpec.from_json(spec.to_json())
    assert again.crop_for("yunet") == geometry
    assert again.crop_for("haar") == CALIBRATED_CROPS["haar"]  # absent: calibrated default
    x0, y0, side = geometry.square(np.array([100, 50, 80, 100]))
    assert side == pytest.approx(90.0)
    assert (x0 + side / 2, y0 + side / 2) == pytest.approx((140 + 4.5, 100 - 9.0))
    # a model exported before crops were stored gets the calibrated framing
    legacy = json.loads(spec.to_json())
    del legacy["crops"]
    assert ModelSpec.from_json(json.dumps(legacy)).crop_for("yunet") == CALIBRATED_CROPS["yunet"]


def test_shipped_model_stores_calibrated_crops_and_pipeline_uses_them() -> None:
    model = EmotionModel(device="cpu")
    assert model.spec.crops == CALIBRATED_CROPS
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[100:200, 300:380] = 255  # the detector box, bright; outside stays dark
    crop = face_crop(frame, np.array([300, 100, 80, 100]), model.spec.crop_for("yunet"), model.spec)
    side = model.spec.input_size
    assert crop.shape == (side, side)
    # scale 0.977 of the box height: the square is a little narrower than the tall box,
    # so the crop's middle rows are bright across most of their width
    middle = crop[side * 5 // 12 : side * 7 // 12, side // 6 : side * 5 // 6]
    assert middle.mean() > 200


# --------------------------------------------------------------------------- the video path


@needs_fer
@requires_data
def test_accuracy_through_the_video_path(tmp_path: Path) -> None:
    """300 seeded PublicTest faces pasted into a real clip, encoded, run like `videmo run`.

    Measured with the shipped model on this subset: see the README's accuracy section.
    With the old 15% margin crop the same faces lost 12.8 points (52.7% vs 65.5% on 600).
    """
    from videmo.evaluation.pasted import evaluate_path
    from videmo.train.data import load_fer2013

    public = load_fer2013(FER_CSV)["PublicTest"]
    pick = np.sort(np.random.default_rng(1).choice(len(public), 300, replace=False))
    result, scored = evaluate_path(
        public.images[pick], public.labels[pick], BACKGROUND, tmp_path, seed=1
    )
    assert (tmp_path / "pasted.mp4").stat().st_size > 10_000
    assert len(scored) == 300 and result.faces == 300
    assert result.coverage >= 0.95, result
    assert result.gap <= 0.02, result
    # the shipped model on this subset: 195 of the 300 faces directly (65.0 %), and 65.1 % of
    # the 289 it found through the path; a new model measures and updates these two lines
    # (one face either way: ONNX Runtime's kernels differ between CPUs, and a near tie may flip)
    assert result.direct_accuracy_all == pytest.approx(195 / 300, abs=1.01 / 300), result
    assert result.path_accuracy >= 0.63, result


# --------------------------------------------------------------------------- labeled clips


@requires_data
def test_evaluate_clips_cli_on_crema_d(tmp_path: Path) -> None:
    import subprocess
    import sys

    import pandas as pd

    per_clip = tmp_path / "clips.csv"
    done = subprocess.run(
        [sys.executable, "-m", "videmo", "evaluate-clips", str(CREMA), "--csv", str(per_clip),
         "--confusion-png", str(tmp_path / "confusion.png")],
        capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1001_DFA_HAP_XX.flv" in done.stderr  # progress goes to stderr
    table = pd.read_csv(per_clip)
    assert len(table) == 6 and set(table["label"]) == {
        "angry", "disgust", "fear", "happy", "neutral", "sad",
    }  # fmt: skip
    assert (table["face_rows"] > 40).all()  # one actor, in every frame
    means = table[[f"mean_{e}" for e in EMOTIONS]].to_numpy()
    np.testing.assert_allclose(means.sum(axis=1), 1.0, atol=1e-3)
    assert (table["label"] == table["file"].map(_crema_label)).all()
    assert (table["correct"] == (table["predicted"] == table["label"])).all()
    # measured 3/6 with the calibrated crop (the old 15% margin crop: 1/6; `fer`: 3/6)
    assert table["correct"].sum() >= 3
    assert "crema-d" in done.stdout and "all" in done.stdout
    assert (tmp_path / "confusion.png").stat().st_size > 1000

    # The figure measured is the label a user reads: `videmo run`'s faces.csv gives the
    # main face the same dominant emotion (the highest mean probability, not the most
    # frequent per-frame label: test_dominant_emotion_is_the_highest_mean_probability_...).
    clip = "1001_DFA_ANG_XX.flv"
    ran = subprocess.run(
        [sys.executable, "-m", "videmo", "run", str(CREMA / clip), "--out", str(tmp_path / "out"),
         "--no-video", "--no-plots", "--no-report"],
        capture_output=True, text=True, env=cli_env(), cwd=REPO, timeout=600,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    faces = pd.read_csv(tmp_path / "out" / "1001_DFA_ANG_XX" / "faces.csv")
    main = faces.loc[faces["n_frames"].idxmax()]
    row = table.set_index("file").loc[clip]
    assert main["dominant_emotion"] == row["predicted"]
    means = main[[f"mean_{e}" for e in EMOTIONS]].to_numpy(float)
    assert EMOTIONS[int(np.argmax(means))] == main["dominant_emotion"]


def _crema_label(file: str) -> str:
    code = file.split("_")[2]
    return {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy",
            "NEU": "neutral", "SAD": "sad"}[code]  # fmt: skip


def test_evaluate_clips_rejects_folder_without_labels(tmp_path: Path) -> None:
    from videmo.errors import DataError
    from videmo.evaluation.clips import read_labels

    with pytest.raises(DataError, match="no labels.csv"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,fer2013_class\nx.mp4,joy\n")
    with pytest.raises(DataError, match="'joy' is not one of"):
        read_labels(tmp_path)


# --------------------------------------------------------------------------- smoothing


def _step_face(n: int = 120, fps: float = 30.0, step: int = 60) -> FaceDetections:
    """One tracked face: happy until frame ``step``, sad from then on."""
    probs = np.full((n, len(EMOTIONS)), 0.02)
    probs[:step, EMOTIONS.index("happy")] = 0.88
    probs[step:, EMOTIONS.index("sad")] = 0.88
    return FaceDetections(
        frame=np.arange(n),
        time_s=np.arange(n) / fps,
        xywh=np.tile([10, 10, 50, 50], (n, 1)),
        score=np.ones(n),
        probs=probs,
        face_id=np.ones(n),
    )


def test_smoothing_has_no_lag() -> None:
    """The smoothed label switches where the face switches, not a time constant later."""
    dets = _step_face()
    smoothed = smooth(dets, 0.5)
    label = smoothed.argmax(axis=1)
    first_sad = int(np.flatnonzero(label == EMOTIONS.index("sad"))[0])
    assert abs(first_sad - 60) <= 1, first_sad  # a causal filter switches ~10 frames late
    # symmetric: the sad probability crosses the happy one at the step from both sides
    sad, happy = smoothed[:, EMOTIONS.index("sad")], smoothed[:, EMOTIONS.index("happy")]
    np.testing.assert_allclose(sad[59] - happy[59], -(sad[60] - happy[60]), atol=2e-3)
    # and it still smooths: values near the step are between the two levels
    assert 0.3 < happy[55] < 0.88 and 0.3 < sad[65] < 0.88
    # every frame rate gives the same curve in time
    slow = smooth(_step_face(n=60, fps=15.0, step=30), 0.5)
    np.testing.assert_allclose(slow[::1, 3][10:50], smoothed[::2, 3][10:50], atol=0.03)


# --------------------------------------------------------------------------- FER+


@pytest.mark.skipif(not FERPLUS_CSV.is_file(), reason="FER+ votes not available")
@needs_fer
def test_ferplus_votes_and_soft_targets() -> None:
    from videmo.train.data import ferplus_path_for, load_fer2013, load_ferplus
    from videmo.train.train import TrainConfig, training_targets

    assert ferplus_path_for(FER_CSV) == FERPLUS_CSV.resolve()
    votes = load_ferplus(FERPLUS_CSV)
    # the README of shared/data/ferplus: 28,102 rows with a majority in the 7 classes
    assert int((votes.majority >= 0).sum()) == 28_102
    splits = load_fer2013(FER_CSV, limit_per_split=500, seed=3)
    train = splits["Training"]
    hard = training_targets(train, TrainConfig(data=str(FER_CSV)))
    np.testing.assert_array_equal(hard.argmax(axis=1), train.labels)
    soft = training_targets(train, TrainConfig(data=str(FER_CSV), ferplus_weight=0.5))
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    shares, has = votes.distribution(train.rows)
    np.testing.assert_allclose(soft[has], 0.5 * hard[has] + 0.5 * shares[has], atol=1e-6)
    assert has.mean() > 0.98 and (soft[has].max(axis=1) < 1).mean() > 0.5


@needs_fer
def test_teacher_targets_are_the_shipped_models_answers_on_the_clean_faces() -> None:
    """Self-distillation's targets: the teacher's probabilities, mixed by teacher_weight."""
    from videmo.emotion import EmotionModel
    from videmo.train.data import load_fer2013
    from videmo.train.train import TrainConfig, training_targets

    train = load_fer2013(FER_CSV, limit_per_split=200, seed=5)["Training"]
    hard = training_targets(train, TrainConfig(data=str(FER_CSV)))
    config = TrainConfig(
        data=str(FER_CSV), teacher="emotion_minixception.onnx", teacher_weight=0.25
    )
    mixed = training_targets(train, config)
    teacher = EmotionModel("emotion_minixception.onnx", device="cpu").predict(train.images)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(mixed, 0.75 * hard + 0.25 * teacher, atol=1e-5)
    # the teacher disagrees with FER2013's label on about a third of Training faces
    disagree = (teacher.argmax(axis=1) != train.labels).mean()
    assert 0.15 < disagree < 0.5
