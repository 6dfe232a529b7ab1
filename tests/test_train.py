"""Emotion-model training, export, evaluation and Keras import.

The TF test is a tiny but real run on FER2013 rows (one epoch on a few
hundred faces) through export, the parity check and onnxruntime evaluation.
Bad-data tests check the one-line DataError messages.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli

from videmo.crop import resize_face
from videmo.errors import DataError, ModelError, SettingsError
from videmo.spec import EMOTIONS, METADATA_KEY, ModelSpec
from videmo.train.data import load_fer2013, require_split
from videmo.train.train import CONFIG_FILE, EPOCHS_ATTR, HISTORY_FILE, LAST_FILE, TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FER_CSV = SHARED / "data" / "fer2013" / "fer2013.csv.gz"
SHIPPED = REPO / "models" / "emotion_minixception.onnx"

needs_fer = pytest.mark.skipif(not FER_CSV.is_file(), reason=f"FER2013 not at {FER_CSV}")


def _pixels(n: int = 48 * 48, value: int = 7) -> str:
    return " ".join([str(value)] * n)


def _write_csv(path: Path, rows: list[str], header: str = "emotion,pixels,Usage") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _stored_config(folder: Path, **settings: object) -> TrainConfig:
    """Write the ``config.json`` a run of these settings leaves in ``folder``."""
    from dataclasses import asdict

    config = TrainConfig(**settings)
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(config)))
    return config


def _one_line_data_error(path: Path, match: str, **kwargs: object) -> str:
    with pytest.raises(DataError, match=match) as info:
        load_fer2013(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------- data loading


def test_csv_plain_and_gz(tmp_path: Path) -> None:
    rows = [f'3,"{_pixels()}",Training', f'6,"{_pixels(value=200)}",PublicTest']
    plain = _write_csv(tmp_path / "fer.csv", rows)
    gz = tmp_path / "fer.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, gz):
        splits = load_fer2013(path)
        assert set(splits) == {"Training", "PublicTest"}
        assert splits["Training"].images.shape == (1, 48, 48)
        assert splits["Training"].images.dtype == np.uint8
        assert splits["PublicTest"].labels.tolist() == [6]
        assert int(splits["PublicTest"].images[0, 0, 0]) == 200


def test_missing_column(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "x.csv", [f'"{_pixels()}",Training'], header="pixels,Usage")
    _one_line_data_error(path, "missing column.*emotion")


def test_wrong_pixel_count(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "x.csv", [f'0,"{_pixels(100)}",Training'])
    _one_line_data_error(path, "row 1: 100 pixel values, expected 2304")


def test_label_out_of_range(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "x.csv", [f'0,"{_pixels()}",Training', f'9,"{_pixels()}",Training']
    )
    _one_line_data_error(path, "row 2: emotion label .*9.* outside 0-6")


def test_non_numeric_pixels(tmp_path: Path) -> None:
    bad = _pixels(48 * 48 - 1) + " x"
    path = _write_csv(tmp_path / "x.csv", [f'0,"{bad}",Training'])
    _one_line_data_error(path, "non-numeric pixel")


def test_missing_file(tmp_path: Path) -> None:
    _one_line_data_error(tmp_path / "nope.csv.gz", "not found")


def test_empty_training_split(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "x.csv", [f'0,"{_pixels()}",PublicTest'])
    splits = load_fer2013(path)
    with pytest.raises(DataError, match="no Training rows") as info:
        require_split(splits, "Training", "training")
    assert "\n" not in str(info.value)


def test_training_needs_training_rows(tmp_path: Path) -> None:
    from videmo.train.train import TrainConfig, _load_splits

    path = _write_csv(tmp_path / "x.csv", [f'0,"{_pixels()}",PublicTest'])
    with pytest.raises(DataError, match="no Training rows") as info:
        _load_splits(TrainConfig(data=str(path), out=str(tmp_path / "run")))
    assert "\n" not in str(info.value)


def test_cosine_schedule_warms_up_then_decays() -> None:
    from videmo.train.train import TrainConfig, cosine_lr

    config = TrainConfig(epochs=10, lr=1e-3, warmup_epochs=2, min_lr_ratio=0.01)
    lrs = [cosine_lr(e, config) for e in range(10)]
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))
    assert lrs[-1] == pytest.approx(1e-5)


def test_image_folder_layout(tmp_path: Path) -> None:
    face = np.full((48, 48), 90, np.uint8)
    for folder, cls, name in [
        ("train", "happy", "Training_1.jpg"),
        ("train", "sad", "im2.png"),  # no prefix: train/ -> Training
        ("test", "angry", "PrivateTest_3.jpg"),  # prefix wins over the folder
        ("test", "neutral", "x.png"),  # no prefix: test/ -> PublicTest
    ]:
        (tmp_path / folder / cls).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / folder / cls / name), face)
    splits = load_fer2013(tmp_path)
    assert sorted(splits["Training"].labels.tolist()) == [3, 4]
    assert splits["PrivateTest"].labels.tolist() == [0]
    assert splits["PublicTest"].labels.tolist() == [6]


# ----------------------------------------------------------------- job file


def test_job_file_unknown_key(tmp_path: Path) -> None:
    from videmo.train.train import TrainConfig

    job = tmp_path / "job.toml"
    job.write_text("epochs = 3\nlearning_rate = 0.1\n")
    with pytest.raises(SettingsError, match="unknown key 'learning_rate'"):
        TrainConfig.from_toml(job)


def test_input_size_outside_what_a_model_spec_allows_is_refused_up_front() -> None:
    """``input_size = 2000`` passed the job check and failed after config.json was written,
    as a ValueError traceback from the model spec."""
    from videmo.train.train import TrainConfig

    for size in (4, 2000):
        with pytest.raises(SettingsError, match="input_size must be 8 to 1024 pixels"):
            TrainConfig(input_size=size)


def test_job_file_faults_are_one_line(tmp_path: Path) -> None:
    """A UTF-16 job file, a key left outside [train] (it would be ignored) and missing data:
    one-line errors, and no run folder is made before the data is found."""
    from videmo.train.train import TrainConfig, train

    utf16 = tmp_path / "notepad.toml"
    utf16.write_bytes("epochs = 3\n".encode("utf-16"))
    with pytest.raises(SettingsError, match="UTF-16 text; save the job file as UTF-8"):
        TrainConfig.from_toml(utf16)
    utf16.write_bytes("epochs = 3\n".encode("utf-16-le"))  # no BOM
    with pytest.raises(SettingsError, match="UTF-16 text"):
        TrainConfig.from_toml(utf16)
    bom = tmp_path / "bom.toml"
    bom.write_bytes("epochs = 3\n".encode("utf-8-sig"))
    assert TrainConfig.from_toml(bom).epochs == 3
    with pytest.raises(SettingsError, match="frame_background is where frame_by pastes"):
        TrainConfig(frame_background="x.mp4")
    outside = tmp_path / "outside.toml"
    outside.write_text('epochs = 3\n[train]\ndata = "x.csv"\n')
    with pytest.raises(SettingsError, match="'epochs' is outside the \\[train\\] table"):
        TrainConfig.from_toml(outside)
    out = tmp_path / "run"
    with pytest.raises(DataError, match="FER2013 data not found"):
        train(TrainConfig(data=str(tmp_path / "missing.csv"), out=str(out)))
    with pytest.raises(SettingsError, match="frame_background .* is not a file"):
        train(TrainConfig(data=str(FER_CSV), out=str(out), frame_by="yunet",
                          frame_background=str(tmp_path / "none.mp4")))  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize("job", sorted(p.name for p in (REPO / "jobs").glob("train-*.toml")))
def test_shipped_job_files_parse(job: str) -> None:
    from videmo.train.train import TrainConfig

    config = TrainConfig.from_toml(REPO / "jobs" / job, epochs=2)
    assert config.epochs == 2 and config.width > 0


# ------------------------------------------------------- tiny real training run


@pytest.fixture(scope="module")
def tiny_fer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """320 real Training + 320 real PublicTest rows, parsed once from the shared CSV."""
    if not FER_CSV.is_file():
        pytest.skip(f"FER2013 not at {FER_CSV}")
    splits = load_fer2013(FER_CSV, limit_per_split=320, seed=0)
    rows = [
        f'{label},"{" ".join(map(str, image.ravel()))}",{name}'
        for name in ("Training", "PublicTest")
        for image, label in zip(splits[name].images, splits[name].labels, strict=True)
    ]
    return _write_csv(tmp_path_factory.mktemp("fer") / "tiny.csv", rows)


@pytest.mark.train
@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5")
def test_tiny_train_export_evaluate(tmp_path: Path, tiny_fer_csv: Path) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    import onnxruntime as ort

    from videmo.train.evaluate import bench_faces_per_second, evaluate, save_curves_png
    from videmo.train.export import export_onnx
    from videmo.train.train import HISTORY_FILE, TrainConfig, default_spec, train

    config = TrainConfig(
        data=str(tiny_fer_csv),
        out=str(tmp_path / "run"),
        epochs=1,
        limit_per_split=320,
        batch_size=64,
        verbose=0,
    )
    summary = train(config)
    assert summary["epochs_run"] == 1 and summary["n_train"] == 320
    best = Path(summary["best_checkpoint"])
    assert best.is_file()

    faces = load_fer2013(tiny_fer_csv)["PublicTest"].images[:64]
    onnx_path = tmp_path / "emotion.onnx"
    result = export_onnx(best, onnx_path, default_spec(config), faces)
    assert result["max_abs_diff"] <= 1e-4

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    spec = ModelSpec.from_json(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert spec.classes == EMOTIONS and spec.input_size == 48
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["probs"]
    probs = session.run(["probs"], {"input": spec.normalize(faces[:5])})[0]
    assert probs.shape == (5, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    dyn = session.run(["probs"], {"input": spec.normalize(faces[:3])})[0]
    assert dyn.shape == (3, 7)  # dynamic batch dimension

    results = evaluate(onnx_path, tiny_fer_csv, flip_tta=True, limit_per_split=200)
    public = results["splits"]["PublicTest"]
    confusion = np.asarray(public["confusion"])
    assert public["n"] == 200 and confusion.sum() == 200
    assert public["accuracy"] == pytest.approx(np.trace(confusion) / 200)
    # the same 200 faces through the bare session, mirror-averaged by hand
    split = load_fer2013(tiny_fer_csv, limit_per_split=200)["PublicTest"]
    x = spec.normalize(split.images)
    mirrored = spec.normalize(np.ascontiguousarray(split.images[:, :, ::-1]))
    by_hand = (
        session.run(["probs"], {"input": x})[0] + session.run(["probs"], {"input": mirrored})[0]
    )
    # a 1-epoch net's classes are close: batching may flip a near tie, hence 1/200
    assert public["accuracy"] == pytest.approx(
        np.mean(by_hand.argmax(1) == split.labels), abs=0.006
    )
    assert set(public["per_class"]) == set(EMOTIONS)

    _check_ensemble_export(tmp_path / "run", onnx_path, faces)
    _check_mixed_width_export(tmp_path / "run", onnx_path, faces)

    png = save_curves_png(tmp_path / "run" / HISTORY_FILE, tmp_path / "curves.png")
    assert png.stat().st_size > 1000
    assert bench_faces_per_second(onnx_path, batch=32, threads=2, seconds=0.3) > 200


def _check_ensemble_export(run: Path, single_onnx: Path, faces: np.ndarray) -> None:
    """`videmo export RUN RUN --flip-tta`: a two-member ensemble of one run must give
    exactly the single model's mirror-averaged output, and say so in its spec."""
    from click.testing import CliRunner

    from videmo.train.commands import export_command
    from videmo.train.evaluate import load_session

    out = run.parent / "ensemble.onnx"
    result = CliRunner().invoke(export_command, [str(run), str(run), "-o", str(out), "--flip-tta"])
    assert result.exit_code == 0, result.output
    assert "parity max abs diff" in result.output
    session, spec = load_session(out)
    assert spec.extra["ensemble"] == 2 and spec.extra["flip_tta_in_graph"] is True
    single, _ = load_session(single_onnx)
    x = spec.normalize(faces[:16])
    expected = (
        single.run(["probs"], {"input": x})[0] + single.run(["probs"], {"input": x[:, :, ::-1]})[0]
    ) / 2
    np.testing.assert_allclose(session.run(["probs"], {"input": x})[0], expected, atol=1e-5)


def _check_mixed_width_export(run: Path, single_onnx: Path, faces: np.ndarray) -> None:
    """Runs of different widths export as one model: the output is the mean of both
    nets, and the spec lists each member's width in order."""
    from click.testing import CliRunner

    from videmo.train.commands import export_command
    from videmo.train.evaluate import load_session
    from videmo.train.model import build_mini_xception
    from videmo.train.train import BEST_FILE, CONFIG_FILE

    half = run.parent / "run-half"
    half.mkdir()
    config = json.loads((run / CONFIG_FILE).read_text())
    (half / CONFIG_FILE).write_text(json.dumps({**config, "width": 0.5}))
    net = build_mini_xception(width=0.5)  # untrained but real: export only reads weights
    net.save(half / BEST_FILE)

    out = run.parent / "mixed.onnx"
    result = CliRunner().invoke(export_command, [str(run), str(half), "-o", str(out)])
    assert result.exit_code == 0, result.output
    session, spec = load_session(out)
    assert spec.extra["width"] == [config["width"], 0.5] and spec.extra["ensemble"] == 2
    single, _ = load_session(single_onnx)
    x = spec.normalize(faces[:16])
    expected = (single.run(["probs"], {"input": x})[0] + net(x, training=False).numpy()) / 2
    np.testing.assert_allclose(session.run(["probs"], {"input": x})[0], expected, atol=1e-5)


@pytest.mark.train
@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5")
def test_fine_tune_from_a_keras_file(tmp_path: Path, tiny_fer_csv: Path) -> None:
    """`init_from` trains on from a saved net (how the paper's 64x64 mini-Xception, the
    shipped model's weights, is fine-tuned): its weights move, the input size is the
    file's, and a file whose input does not match ``input_size`` is refused in one line.

    Runs `videmo train` as a user does, in a fresh process: 64x64 training needs TF's
    oneDNN kernels off, which only works before TensorFlow is loaded."""
    pytest.importorskip("tensorflow")
    import subprocess
    import sys

    from videmo.train.export import load_keras
    from videmo.train.model import build_mini_xception
    from videmo.train.train import LAST_FILE, TrainConfig, default_spec

    start = tmp_path / "start.h5"
    build_mini_xception(ModelSpec(input_size=64), width=0.5).save(start)
    job = tmp_path / "ft.toml"
    job.write_text(
        f'data = "{tiny_fer_csv}"\nout = "{tmp_path / "ft"}"\nepochs = 1\n'
        f'limit_per_split = 320\ninit_from = "{start}"\ninput_size = 64\n'
        "video_augment = true\nverbose = 0\n"
    )
    train = [sys.executable, "-m", "videmo", "train", "--job", str(job), "--no-export"]
    done = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = load_keras(start), load_keras(tmp_path / "ft" / LAST_FILE)
    assert after.input_shape == (None, 64, 64, 1)
    pairs = zip(before.get_weights(), after.get_weights(), strict=True)
    moved = [not np.array_equal(a, b) for a, b in pairs]
    assert sum(moved) > len(moved) // 2
    spec = default_spec(TrainConfig.from_toml(job))
    assert spec.input_size == 64 and spec.extra["init_from"] == "start.h5"

    # freeze_batchnorm keeps the start's normalisation (statistics and scale) while the
    # convolutions still learn
    frozen_job = tmp_path / "frozen.toml"
    frozen_job.write_text(
        job.read_text().replace(str(tmp_path / "ft"), str(tmp_path / "frozen"))
        + "freeze_batchnorm = true\n"
    )
    frozen = subprocess.run(
        [*train[:-3], "--job", str(frozen_job), "--no-export"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert frozen.returncode == 0, frozen.stderr[-2000:]
    tuned = load_keras(tmp_path / "frozen" / LAST_FILE)
    for old, new in zip(before.layers, tuned.layers, strict=True):
        pairs = zip(old.get_weights(), new.get_weights(), strict=True)
        same = [np.array_equal(a, b) for a, b in pairs]
        if type(old).__name__ == "BatchNormalization":
            assert all(same), old.name
        elif old.get_weights():
            assert not all(same), old.name

    # runs of different input sizes cannot be one ensemble: one line, before any export
    small = tmp_path / "small"
    small.mkdir()
    stored = json.loads((tmp_path / "ft" / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**stored, "input_size": 48, "init_from": ""}))
    mixed = subprocess.run(
        [sys.executable, "-m", "videmo", "export", str(tmp_path / "ft"), str(small),
         "-o", str(tmp_path / "mixed.onnx")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert mixed.returncode == 2, mixed.stderr[-2000:]
    assert mixed.stderr.strip().splitlines()[-1].endswith("one model needs one input size")

    job.write_text(job.read_text().replace("input_size = 64", "input_size = 48")
                   .replace(str(tmp_path / "ft"), str(tmp_path / "ft48")))  # fmt: skip
    refused = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert "init_from" in last and "input (64, 64, 1)" in last and "(48, 48, 1)" in last


def test_export_rejects_a_folder_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from videmo.cli import main

    with pytest.raises(SystemExit) as info:
        main(["export", str(tmp_path), "-o", str(tmp_path / "m.onnx")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("videmo: error:") and "no config.json" in err and "\n" not in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.train
@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5")
def test_import_keras(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    import tf_keras as keras

    from videmo.train.evaluate import load_session
    from videmo.train.keras_import import import_keras

    # A small mini-Xception-like model with oarriaga's 64x64 grayscale input.
    inputs = keras.Input((64, 64, 1))
    x = keras.layers.Conv2D(8, 3, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.SeparableConv2D(7, 3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Activation("softmax", name="predictions")(x)
    h5 = tmp_path / "_mini_XCEPTION.00-0.50.hdf5"
    keras.Model(inputs, outputs).save(str(h5))

    result = import_keras(h5, tmp_path / "imported.onnx")
    assert result["max_abs_diff"] <= 1e-4
    session, spec = load_session(tmp_path / "imported.onnx")
    assert spec.input_size == 64 and spec.mean == 0.5 and spec.std == 0.5
    assert spec.extra["imported_from"] == h5.name
    face = np.full((2, 48, 48), 100, np.uint8)  # evaluation resizes to the model's size
    x = spec.normalize(np.stack([resize_face(f, spec.input_size) for f in face]))
    assert session.run(["probs"], {"input": x})[0].shape == (2, 7)

    # --flip-tta: the graph averages the face and its mirror image (how the shipped
    # model is built from the paper's file)
    faces = np.random.default_rng(1).integers(0, 256, (4, 64, 64), np.uint8)
    import_keras(h5, tmp_path / "flip.onnx", flip_tta=True)
    flipped, flip_spec = load_session(tmp_path / "flip.onnx")
    assert flip_spec.extra["flip_tta_in_graph"] is True
    x = spec.normalize(faces)
    expected = (session.run(["probs"], {"input": x})[0]
                + session.run(["probs"], {"input": x[:, :, ::-1]})[0]) / 2  # fmt: skip
    np.testing.assert_allclose(flipped.run(["probs"], {"input": x})[0], expected, atol=1e-5)

    # several files: one graph averaging the nets on the same face (an ensemble)
    keras.utils.set_random_seed(7)
    other = keras.models.clone_model(keras.models.load_model(str(h5)))
    h5b = tmp_path / "other.h5"
    other.save(str(h5b))
    import_keras([h5, h5b], tmp_path / "ens.onnx")
    import_keras(h5b, tmp_path / "other.onnx")
    ensemble, ens_spec = load_session(tmp_path / "ens.onnx")
    second, _ = load_session(tmp_path / "other.onnx")
    assert ens_spec.extra["imported_from"] == f"{h5.name} + {h5b.name}"
    pair = (session.run(["probs"], {"input": x})[0] + second.run(["probs"], {"input": x})[0]) / 2
    np.testing.assert_allclose(ensemble.run(["probs"], {"input": x})[0], pair, atol=1e-5)
    small = keras.Input((48, 48, 1))
    tiny = keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(small))
    keras.Model(small, tiny).save(str(tmp_path / "small.h5"))
    with pytest.raises(ModelError, match="one input size"):
        import_keras([h5, tmp_path / "small.h5"], tmp_path / "mixed.onnx")


@pytest.mark.train
@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5")
def test_import_keras_rejects_wrong_outputs(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    import tf_keras as keras

    from videmo.train.keras_import import import_keras

    inputs = keras.Input((48, 48, 1))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    h5 = tmp_path / "bad.h5"
    keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x)).save(str(h5))
    with pytest.raises(ModelError, match="expected 7 outputs"):
        import_keras(h5, tmp_path / "bad.onnx")
    # as a member of an ensemble too (it was a traceback from the averaging layer)
    good = tmp_path / "good.h5"
    keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x)).save(str(good))
    with pytest.raises(ModelError, match=r"bad\.h5: expected 7 outputs"):
        import_keras([good, h5], tmp_path / "pair.onnx")
    assert not (tmp_path / "pair.onnx").exists()
    pair = import_keras([good, good], tmp_path / "pair.onnx")
    assert json.loads(pair["spec"])["extra"]["ensemble"] == 2


# ------------------------------------------------------------- shipped model


@needs_fer
def test_shipped_model_publictest_accuracy() -> None:
    from videmo.train.evaluate import evaluate

    results = evaluate(SHIPPED, FER_CSV)
    # The shipped model measures 0.6631 (models/emotion_minixception.md); issue 4's floor is
    # 0.66. An earlier default (two width-2 nets, 0.6450) fails here.
    assert results["splits"]["PublicTest"]["accuracy"] >= 0.66
    assert "Training" in results["splits"]


def test_shipped_model_metadata_and_speed() -> None:
    from videmo.train.evaluate import bench_faces_per_second, load_session

    session, spec = load_session(SHIPPED)
    # the paper's mini-Xception sees 64x64 faces (FER2013's 48x48 scaled up in training)
    assert spec.classes == EMOTIONS and spec.input_size == 64
    assert spec.extra["flip_tta_in_graph"] is True
    # the figures every run.json and report.html show are the README's, not a stale release's
    metrics, readme = spec.extra["metrics"], (REPO / "README.md").read_text()
    assert f"**{metrics['dev_clips_correct']} development clips" in readme
    assert f"{metrics['video_path_accuracy'] * 100:.1f} % through the video path**" in readme
    assert f"{metrics['publictest_accuracy'] * 100:.1f} % on FER2013 PublicTest" in readme
    batch_dim = session.get_inputs()[0].shape[0]
    assert batch_dim is None or isinstance(batch_dim, str)  # dynamic batch
    # Speed belongs to benchmarks (the model card); here only that the benchmark runs.
    assert bench_faces_per_second(SHIPPED, batch=32, threads=2, seconds=0.2) > 0


def test_validation_without_publictest_is_named_as_a_training_hold_out(tmp_path: Path) -> None:
    """It was reported as "best PublicTest accuracy" although no PublicTest row existed."""
    from videmo.train.train import HOLDOUT_NAME, TrainConfig, _load_splits

    rows = [f'{i % 7},"{_pixels(value=i * 8)}",Training' for i in range(30)]
    data = _write_csv(tmp_path / "train_only.csv", rows)
    train_split, val = _load_splits(TrainConfig(data=str(data)))
    assert val.name == HOLDOUT_NAME == "a 10 % hold-out of Training"
    assert len(val) == 3 and len(train_split) == 27
    # each face keeps its CSV row (the key to its FER+ votes), in both parts
    assert sorted([*train_split.rows, *val.rows]) == list(range(30))
    assert all(val.images[k, 0, 0] == val.rows[k] * 8 for k in range(3))


@pytest.mark.skipif(not FER_CSV.is_file(), reason="needs ../shared")
def test_fer_plus_figures_need_the_original_csv_rows(
    tmp_path: Path, tiny_fer_csv: Path, capsys
) -> None:
    """FER+ votes are keyed by row number: a subset CSV beside them was scored against other
    images' votes (FER+ 0.17 where the labels gave 0.75)."""
    from videmo.train.evaluate import evaluate

    layout = tmp_path / "data"
    (layout / "fer2013").mkdir(parents=True)
    (layout / "ferplus").symlink_to(FER_CSV.parents[1] / "ferplus")
    subset = layout / "fer2013" / "subset.csv"
    subset.write_bytes(tiny_fer_csv.read_bytes())
    results = evaluate(SHIPPED, subset, limit_per_split=50)
    assert "no FER+ figures" in capsys.readouterr().err
    assert all("ferplus_accuracy" not in split for split in results["splits"].values())
    # a run of Training rows from further down: every row's split matches the votes' own,
    # and it was scored against the first rows' votes (FER+ 0.20 where the labels gave 0.77)
    with gzip.open(FER_CSV, "rt") as whole:
        lines = whole.read().splitlines(keepends=True)
    shifted = layout / "fer2013" / "shifted.csv"
    shifted.write_text("".join([lines[0], *lines[5001:5401]]))
    results = evaluate(SHIPPED, shifted)
    assert "the data has 400 rows and the votes cover" in capsys.readouterr().err
    assert "ferplus_accuracy" not in results["splits"]["Training"]
    full = evaluate(SHIPPED, FER_CSV, limit_per_split=50)  # the original rows: figures
    assert full["splits"]["PublicTest"]["ferplus_accuracy"] > 0.5


def test_output_names_of_another_kind_are_refused(tmp_path: Path) -> None:
    """`import-keras a.h5 b.h5` wrote ONNX over b.h5; `export RUN -o RUN/best.h5` over the
    checkpoint; `evaluate M.onnx --json M.onnx` JSON over the model."""
    from click.testing import CliRunner

    from videmo.train.commands import evaluate_command, export_command, import_keras_command

    keras_file = tmp_path / "b.h5"
    keras_file.write_bytes(b"keras weights")
    model = tmp_path / "m.onnx"
    model.write_bytes(SHIPPED.read_bytes())
    for command, args in (
        (import_keras_command, [str(keras_file), str(keras_file)]),
        (export_command, [str(tmp_path), "-o", str(keras_file)]),
        (evaluate_command, [str(model), "--data", str(FER_CSV), "--json", str(model)]),
    ):
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2 and "does not end in" in result.output, result.output
    assert keras_file.read_bytes() == b"keras weights"
    assert model.read_bytes() == SHIPPED.read_bytes()


def test_evaluate_cli_table(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from videmo.train.commands import evaluate_command

    rows = [f'{i % 7},"{_pixels(value=i * 30)}",PublicTest' for i in range(7)]
    data = _write_csv(tmp_path / "tiny.csv", rows)
    out_json = tmp_path / "r.json"
    result = CliRunner().invoke(
        evaluate_command, [str(SHIPPED), "--data", str(data), "--json", str(out_json)]
    )
    assert result.exit_code == 0, result.output
    assert "PublicTest" in result.output and "overall" in result.output
    assert json.loads(out_json.read_text())["splits"]["PublicTest"]["n"] == 7
    # an earlier result is replaced; a training run's config.json is never (the run was lost)
    again = CliRunner().invoke(
        evaluate_command, [str(SHIPPED), "--data", str(data), "--json", str(out_json)]
    )
    assert again.exit_code == 0, again.output
    config = tmp_path / "run" / "config.json"
    config.parent.mkdir()
    config.write_text('{"data": "tiny.csv", "epochs": 1}\n')
    refused = CliRunner().invoke(
        evaluate_command, [str(SHIPPED), "--data", str(data), "--json", str(config)]
    )
    assert "not an earlier 'videmo evaluate' result" in str(refused.exception)
    assert config.read_text() == '{"data": "tiny.csv", "epochs": 1}\n'


def test_random_upscale_uses_every_kernel_and_stays_in_range() -> None:
    """`resample_augment`: 48 px faces reach 64 px through linear, cubic and Lanczos kernels."""
    tf = pytest.importorskip("tensorflow")
    from videmo.train.train import UPSCALE_KERNELS, _random_upscale

    splits = load_fer2013(FER_CSV, limit_per_split=8, seed=0) if FER_CSV.is_file() else None
    if splits is None:
        pytest.skip(f"FER2013 not at {FER_CSV}")
    x = tf.constant(ModelSpec(input_size=64).normalize(splits["Training"].images))
    kinds = {
        method: tf.image.resize(x, [64, 64], method=method).numpy() for method in UPSCALE_KERNELS
    }
    seen = set()
    for _ in range(40):
        out = _random_upscale(tf, x, 64).numpy()
        assert out.shape == (len(x), 64, 64, 1) and out.min() >= -1.0 and out.max() <= 1.0
        for method, expected in kinds.items():
            if np.allclose(out, np.clip(expected, -1, 1), atol=1e-6):
                seen.add(method)
    assert seen == set(UPSCALE_KERNELS)


def test_paste_scale_gives_linear_and_pasted_faces_in_range() -> None:
    """`paste_augment`: half the batches reach 64 px linearly, the others as a face pasted
    at 80-300 px (bicubic up, area down) reaches the net."""
    tf = pytest.importorskip("tensorflow")
    from videmo.train.train import _paste_scale

    if not FER_CSV.is_file():
        pytest.skip(f"FER2013 not at {FER_CSV}")
    faces = load_fer2013(FER_CSV, limit_per_split=8, seed=0)["Training"].images
    x = tf.constant(ModelSpec(input_size=64).normalize(faces))
    linear = tf.image.resize(x, [64, 64], method="bilinear").numpy()
    plain = pasted = 0
    for _ in range(30):
        out = _paste_scale(tf, x, 64).numpy()
        assert out.shape == (len(x), 64, 64, 1) and out.min() >= -1.0 and out.max() <= 1.0
        if np.allclose(out, np.clip(linear, -1, 1), atol=1e-6):
            plain += 1
        else:  # sharper than the linear upscale: more detail between neighbouring pixels
            pasted += 1
            assert np.abs(np.diff(out, axis=2)).mean() > np.abs(np.diff(linear, axis=2)).mean()
    assert plain and pasted


@pytest.mark.train
@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5")
def test_resume_refuses_a_data_file_changed_under_the_same_name(
    tmp_path: Path, tiny_fer_csv: Path
) -> None:
    """Settings name the data by its path: a file replaced by other rows was resumed as the
    same data, and its best epoch chosen across two validation sets."""
    pytest.importorskip("tensorflow")
    from videmo.errors import SettingsError
    from videmo.train.train import TrainConfig, train

    data = tmp_path / "d.csv"
    lines = tiny_fer_csv.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[:201] + lines[-100:]))  # header, 200 Training, 100 PublicTest
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=1, verbose=0)
    train(config)
    data.write_text("".join(lines[:1] + lines[101:301] + lines[-50:]))  # other faces, one name
    with pytest.raises(SettingsError, match="on other data than the file given now holds"):
        train(TrainConfig(**{**vars(config), "epochs": 2}))


@pytest.mark.train
@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5")
def test_resume_follows_the_checkpoint_not_the_log(tmp_path: Path, tiny_fer_csv: Path) -> None:
    """A kill between the log row and last.h5 resumes at the epoch the weights are at; a
    damaged last.h5 is one line; a run early stopping ended is left as it is."""
    pytest.importorskip("tensorflow")
    import h5py
    import pandas as pd

    from videmo.errors import SettingsError
    from videmo.train.train import (
        BEST_FILE,
        EPOCHS_ATTR,
        HISTORY_FILE,
        LAST_FILE,
        SUMMARY_FILE,
        TrainConfig,
        train,
    )  # fmt: skip

    out = tmp_path / "run"
    config = TrainConfig(data=str(tiny_fer_csv), out=str(out), epochs=1, limit_per_split=200,
                         verbose=0)  # fmt: skip
    train(config)
    with h5py.File(out / LAST_FILE, "r") as fh:
        assert fh.attrs[EPOCHS_ATTR] == 1
    log = pd.read_csv(out / HISTORY_FILE)
    # killed after epoch 2's log row was written, before its weights were
    pd.concat([log, log.assign(epoch=1)]).to_csv(out / HISTORY_FILE, index=False)
    spelled = TrainConfig(**{**vars(config), "epochs": 2, "out": f"{tmp_path}/./run"})
    summary = train(spelled)  # the folder spelled another way is the same run
    log = pd.read_csv(out / HISTORY_FILE)
    assert log["epoch"].tolist() == [0, 1] and summary["epochs_run"] == 2
    assert log["loss"].iloc[1] != log["loss"].iloc[0]  # a real second epoch, not the stale row
    with h5py.File(out / LAST_FILE, "r") as fh:
        assert fh.attrs[EPOCHS_ATTR] == 2

    # a budget below the epochs already trained is not a new run: nothing is rewritten
    config_json = (out / "config.json").read_text()
    assert train(TrainConfig(**{**vars(config), "epochs": 1}))["epochs_run"] == 2
    assert (out / "config.json").read_text() == config_json

    # a run that early stopping ended is finished: running it again changes nothing
    stored = json.loads((out / SUMMARY_FILE).read_text())
    (out / SUMMARY_FILE).write_text(json.dumps({**stored, "stopped_early": True}))
    best = (out / BEST_FILE).read_bytes()
    again = train(TrainConfig(**{**vars(config), "epochs": 5}))
    assert again["epochs_run"] == 2 and (out / BEST_FILE).read_bytes() == best

    (out / LAST_FILE).write_bytes((out / LAST_FILE).read_bytes()[:96])  # killed mid-save
    with pytest.raises(SettingsError, match="is damaged"):
        train(TrainConfig(**{**vars(config), "epochs": 3}))

    # without last.h5 the run cannot be resumed, and a fresh start would overwrite best.h5
    # (found by probing: it did, silently, with other settings too)
    (out / LAST_FILE).unlink()
    with pytest.raises(SettingsError, match="best.h5, history.csv, summary.json of a run that"):
        train(TrainConfig(**{**vars(config), "lr": 0.05}))
    assert (out / BEST_FILE).read_bytes() == best

    # a second trainer on the same folder is refused while the first holds it
    import fcntl

    busy = tmp_path / "busy"
    busy.mkdir()
    with open(busy / ".train.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SettingsError, match="being trained by another videmo train"):
            train(TrainConfig(**{**vars(config), "out": str(busy)}))
    assert sorted(p.name for p in busy.iterdir()) == [".train.lock"]
    # an --out that is a file is one line, not a traceback
    with pytest.raises(SettingsError, match="is a file, not a folder"):
        train(TrainConfig(**{**vars(config), "out": str(tmp_path / "busy" / ".train.lock")}))


@pytest.mark.train
def test_early_stopping_resumes_with_its_best_and_wait() -> None:
    """A resumed run forgot the epochs before it and trained on past the stop an
    uninterrupted run makes (patience 2: stopped after 3 epochs, resumed after 2 ran 5)."""
    pytest.importorskip("tensorflow")
    import tf_keras as keras

    from videmo.train.train import _EarlyStopping

    stop = _EarlyStopping(keras)({"val_accuracy": [0.26, 0.14]}, patience=2)
    stop.set_model(keras.Sequential([keras.layers.Dense(1, input_shape=(1,))]))
    stop.on_train_begin()
    assert stop.best == 0.26 and stop.wait == 1
    stop.on_epoch_end(2, {"val_accuracy": 0.177})
    assert stop.model.stop_training and stop.stopped_epoch == 2


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("lr", "0.001", "key 'lr' must be float, not str"), ("epochs", 1.7, "'epochs' must be int"),
     ("min_lr_ratio", -1.0, "min_lr_ratio must be in"), ("dropout", 1.5, "dropout must be in"),
     ("limit_per_split", 1, "limit_per_split must be >= 2"), ("patience", 0, "patience >= 1"),
     ("freeze_batchnorm", True, "set init_from"), ("resample_augment", True, "input_size"),
     ("paste_augment", True, "input_size"),
     ("teacher_weight", 0.5, "set teacher"), ("teacher_weight", 1.5, "teacher_weight must be in"),
     ("frame_by", "mtcnn", "frame_by must be one of")],
)  # fmt: skip
def test_bad_training_values_are_one_line(key: str, value: object, message: str) -> None:
    from videmo.errors import SettingsError
    from videmo.train.train import TrainConfig

    with pytest.raises(SettingsError, match=message):
        TrainConfig(**{key: value})


# ------------------------------------------------- training faces framed by the detector


def test_training_faces_framed_as_videmo_run_cuts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``frame_by`` faces are the pipeline's own crop of the detector's box on the pasted
    face; faces the detector misses keep their own framing; the result is cached."""
    from videmo.crop import face_crop
    from videmo.detect import DetectorConfig, create_detector
    from videmo.evaluation.pasted import background_frames, by_scene, plan_scenes, render_scene
    from videmo.train import recrop

    if not FER_CSV.is_file():
        pytest.skip(f"FER2013 not at {FER_CSV}")
    images = load_fer2013(FER_CSV, limit_per_split=40, seed=3)["Training"].images
    spec = ModelSpec(input_size=64)
    background = SHARED / "data/videos/no_face/pyfeat_no_face_caminandes.mp4"
    faces, found = recrop.cached_detector_framed(images, spec, "yunet", background, 7, tmp_path)
    assert faces.shape == (40, 64, 64) and faces.dtype == np.uint8
    assert found.mean() >= 0.9
    for i in np.flatnonzero(~found):
        assert np.array_equal(faces[i], resize_face(images[i], spec.input_size))

    # Where the square lies inside the pasted face, the cut equals videmo run's crop of the frame.
    detector, geometry = create_detector(DetectorConfig()), spec.crop_for("yunet")
    frames = background_frames(background, 24)
    compared = 0
    for scene, placed in by_scene(plan_scenes(np.zeros(40, int), 7)).items():
        frame = render_scene(frames[scene % len(frames)], placed, images)
        boxes, _ = detector.detect(frame)
        for face in placed:
            best = recrop.nearest_detection(face, boxes[:, :2] + boxes[:, 2:] / 2)
            if best is None:
                continue
            x0, y0, side = geometry.square(boxes[best])
            inside = (face.x <= x0 and x0 + side <= face.x + face.side - 1) and (
                face.y <= y0 and y0 + side <= face.y + face.side - 1
            )
            if inside:
                expected = face_crop(frame, boxes[best], geometry, spec)
                assert np.abs(faces[face.item].astype(int) - expected).max() <= 1
                compared += 1
    assert compared >= 3

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached faces were cut again")

    monkeypatch.setattr(recrop, "detector_framed", must_not_run)
    again, _ = recrop.cached_detector_framed(images, spec, "yunet", background, 7, tmp_path)
    assert np.array_equal(again, faces)


def test_export_says_when_a_run_is_unfinished(tmp_path: Path, capsys) -> None:
    """An interrupted run exported without a word, as if it were the model it was for."""
    from videmo.train.export import _warn_if_unfinished
    from videmo.train.train import HISTORY_FILE, SUMMARY_FILE, TrainConfig

    (tmp_path / HISTORY_FILE).write_text("epoch,val_accuracy\n0,0.3\n")
    _warn_if_unfinished(tmp_path, TrainConfig(epochs=6))
    assert "is unfinished (1 of 6 epochs)" in capsys.readouterr().err
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"stopped_early": True}))
    _warn_if_unfinished(tmp_path, TrainConfig(epochs=6))  # early stopping finished it
    _warn_if_unfinished(tmp_path, TrainConfig(epochs=1))
    assert capsys.readouterr().err == ""


def test_a_run_killed_while_saving_its_first_epoch_starts_over(tmp_path: Path) -> None:
    """The log row and best.h5 are written before last.h5: such leftovers are this run's own
    and the same command starts over; a finished run's (summary.json) are refused."""
    from videmo.train.train import BEST_FILE, SUMMARY_FILE, _check_fresh

    config = _stored_config(tmp_path, data="fer.csv", out=str(tmp_path))
    (tmp_path / HISTORY_FILE).write_text("epoch,val_accuracy\n0,0.3\n")
    (tmp_path / BEST_FILE).write_bytes(b"weights")
    _check_fresh(tmp_path, config)  # starts over
    with pytest.raises(SettingsError, match="other settings"):
        _check_fresh(tmp_path, TrainConfig(data="fer.csv", out=str(tmp_path), lr=0.05))
    (tmp_path / SUMMARY_FILE).write_text("{}")
    with pytest.raises(SettingsError, match="cannot be resumed"):
        _check_fresh(tmp_path, config)


@pytest.mark.parametrize(("option", "value"), [("--std", "0"), ("--std", "-1"), ("--mean", "nan")])
def test_import_keras_refuses_normalisation_that_is_not_a_number(tmp_path, option, value) -> None:
    """`--std 0` made every face infinite, and the model was blamed: "not softmax"."""
    from click.testing import CliRunner

    from videmo.train.commands import import_keras_command

    keras_file = tmp_path / "m.h5"
    keras_file.write_bytes(b"keras weights")
    args = [str(keras_file), str(tmp_path / "m.onnx"), option, value]
    result = CliRunner().invoke(import_keras_command, args)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, result.output
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------ faults found by probing the model commands


def test_bad_data_files_are_one_line_data_errors(tmp_path: Path) -> None:
    """A truncated .gz read as Ctrl-C (click turns EOFError into "interrupted", exit 130);
    a header without rows was evaluated as nothing, with exit 0; a 12-digit pixel value and
    a numpy repr in the label message were tracebacks or noise."""
    rows = [f'{i % 7},"{_pixels(value=i)}",Training' for i in range(400)]
    whole = gzip.compress(_write_csv(tmp_path / "whole.csv", rows).read_bytes())
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    _one_line_data_error(cut, "ends early")
    damaged = tmp_path / "damaged.csv.gz"  # a flipped byte in the deflate stream: zlib.error
    damaged.write_bytes(whole[:20] + bytes([whole[20] ^ 0xFF]) + whole[21:])
    _one_line_data_error(damaged, "cannot read FER2013 CSV")
    _one_line_data_error(_write_csv(tmp_path / "header.csv", []), "no faces in the data")
    huge = _write_csv(tmp_path / "huge.csv", [f'0,"99999999999 {_pixels(48 * 48 - 1)}",Training'])
    _one_line_data_error(huge, "outside 0-255")
    label = _write_csv(tmp_path / "label.csv", [f'7,"{_pixels()}",Training'])
    assert "emotion label '7' outside 0-6" in _one_line_data_error(label, "outside 0-6")
    result = run_cli("evaluate", "--data", cut)  # the shipped model; no TensorFlow needed
    assert "ends early" in result.assert_one_line_error()


@pytest.mark.parametrize(
    ("setting", "value", "match"),
    [("lr", float("nan"), "lr must be a finite"), ("lr", float("inf"), "lr must be a finite"),
     ("width", float("nan"), "width must be a finite"), ("l2", float("nan"), "l2 must be"),
     ("seed", -1, "seed must be in"), ("seed", 2**33, "seed must be in")],
)  # fmt: skip
def test_settings_that_trained_nan_or_crashed_are_refused(setting, value, match) -> None:
    """lr = inf trained a NaN net and reported success; width = nan and seed = -1 were
    tracebacks after the data and TensorFlow had loaded."""
    from videmo.train.train import TrainConfig

    with pytest.raises(SettingsError, match=match):
        TrainConfig(data="fer.csv", **{setting: value})


def test_a_start_that_failed_does_not_block_the_corrected_command(tmp_path: Path) -> None:
    """A missing teacher failed the start after config.json was written; the corrected job
    was then refused: "holds a run with other settings (teacher, teacher_weight)"."""
    from videmo.train.train import _check_fresh

    _stored_config(tmp_path, data="fer.csv", out=str(tmp_path), teacher="nope.onnx",
                   teacher_weight=0.5)  # fmt: skip
    _check_fresh(tmp_path, TrainConfig(data="fer.csv", out=str(tmp_path)))  # goes on


def test_resume_needs_the_log_of_every_trained_epoch(tmp_path: Path) -> None:
    """With history.csv gone, a resume replaced best.h5 (epoch 6, the best) by epoch 7 and
    called it "best at epoch 1/1"; with summary.json gone too it was a TypeError."""
    import h5py

    from videmo.train.train import _resumable_epochs

    config = _stored_config(tmp_path, data="fer.csv", out=str(tmp_path))
    with h5py.File(tmp_path / LAST_FILE, "w") as fh:
        fh.attrs[EPOCHS_ATTR] = 6
    (tmp_path / HISTORY_FILE).write_text("epoch,val_accuracy\n" + "".join(
        f"{k},0.2\n" for k in range(6)))  # fmt: skip
    assert _resumable_epochs(tmp_path, config) == 6
    (tmp_path / HISTORY_FILE).unlink()
    with pytest.raises(SettingsError, match="has 0 of the 6 epochs"):
        _resumable_epochs(tmp_path, config)


def test_a_data_file_spelled_another_way_is_the_same_run(tmp_path: Path, monkeypatch) -> None:
    """`--data mid.csv`, `./mid.csv` and its absolute path name one file: resuming with
    another spelling was refused as "other settings (data)"."""
    from videmo.train.train import _refuse_other_settings

    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "mid.csv", [])
    _write_csv(tmp_path / "other.csv", [])
    run = tmp_path / "run"
    run.mkdir()
    _stored_config(run, data="mid.csv")
    for same in ("./mid.csv", str(tmp_path / "mid.csv")):
        _refuse_other_settings(run, TrainConfig(data=same))
    with pytest.raises(SettingsError, match=r"other settings \(data\)"):
        _refuse_other_settings(run, TrainConfig(data="other.csv"))


def test_export_refuses_what_it_cannot_write_or_read_before_converting(tmp_path: Path) -> None:
    """`-o afile/x.onnx` was a FileExistsError traceback after the conversion; a run whose
    config.json `evaluate --json` had replaced was a TypeError; `export r r` built a
    two-member "ensemble" of one net."""
    from videmo.errors import OutputError
    from videmo.train.commands import _check_model_target
    from videmo.train.train import read_run_config

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputError, match="afile is not a folder"):
        _check_model_target(afile / "sub" / "x.onnx", "ONNX model")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        _check_model_target(tmp_path / "dir.onnx", "ONNX model")
    _check_model_target(tmp_path / "new" / "x.onnx", "ONNX model")  # export makes the folder
    config = tmp_path / CONFIG_FILE
    _stored_config(tmp_path, data="fer.csv")
    assert read_run_config(config).data == "fer.csv"
    for text, why in (('{"model": "m.onnx", "splits": {}}', "unknown setting"), ("{oops", "")):
        config.write_text(text)
        with pytest.raises(SettingsError, match=f"is not a videmo train config.*{why}"):
            read_run_config(config)
    link = tmp_path / "link"  # the same run by another name
    link.symlink_to(tmp_path, target_is_directory=True)
    result = run_cli("export", tmp_path, link, "-o", tmp_path / "e.onnx")
    assert f"videmo: note: {link} is given twice" in result.stderr
    assert "is not a videmo train config" in result.stderr and result.rc == 2


@pytest.mark.train
def test_sigterm_stops_training_as_ctrl_c_does(tmp_path: Path, tiny_fer_csv: Path) -> None:
    """SIGTERM (a scheduler's cancel, `timeout`) ended `videmo train` with no word; it now
    says "videmo: terminated", exits 143, and the run resumes from its last epoch."""
    pytest.importorskip("tensorflow")
    import signal
    import subprocess
    import time

    import h5py
    from conftest import REPO, cli_env, videmo_cmd

    out = tmp_path / "run"
    args = ("train", "--data", tiny_fer_csv, "--out", out, "--limit-per-split", "200",
            "--batch-size", "50", "--no-export")  # fmt: skip
    proc = subprocess.Popen(videmo_cmd(*args, "--epochs", "200"), env=cli_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while not (out / "last.h5").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr[-2000:]
    assert stderr.strip().endswith("videmo: terminated") and "Traceback" not in stderr
    with h5py.File(out / "last.h5", "r") as fh:  # the log row may be one epoch ahead of it
        done = int(fh.attrs[EPOCHS_ATTR])
    assert 1 <= done < 200
    resumed = run_cli(*args, "--epochs", done + 1, timeout=300)
    assert resumed.rc == 0 and f"resuming {out} after epoch {done}" in resumed.stderr, resumed


def test_an_end_of_file_error_is_not_reported_as_ctrl_c(monkeypatch, capsys) -> None:
    """click turns every EOFError into Abort, which videmo printed as "interrupted" with
    exit 130: a file that ends early must read as an error."""
    import videmo.train.evaluate
    from videmo.cli import main

    def ends_early(*args: object, **kwargs: object) -> None:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(videmo.train.evaluate, "evaluate", ends_early)
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", "--data", "fer.csv.gz"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stopped.value.code == 1
    assert lines == ["videmo: error: unexpected end of data: Compressed file ended before "
                     "the end-of-stream marker was reached"]  # fmt: skip


def test_train_help_shows_the_trainers_defaults_without_setting_them() -> None:
    """`videmo train --help` showed no defaults; they come from TrainConfig, and the
    options' own defaults stay None so that a job file's values are not overridden."""
    import re

    from click.testing import CliRunner

    from videmo.train.commands import train_command

    result = CliRunner().invoke(train_command, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    config = TrainConfig()
    shown = {
        "--epochs": config.epochs,
        "--batch-size": config.batch_size,
        "--lr": config.lr,
        "--seed": config.seed,
        "--threads": config.threads,
        "--out": config.out,
    }
    for option, value in shown.items():
        line = next(row for row in result.output.splitlines() if row.strip().startswith(option))
        assert line.rstrip().endswith(f"[default: {value}]"), line
    assert not re.search(r"--data .*\[default", result.output)  # required: no default shown
    ctx = train_command.make_context("train", ["--data", "x.csv"])
    names = {name.strip("-").replace("-", "_") for name in shown}
    assert all(ctx.params[name] is None for name in names)  # not given: the job's value stands


def test_a_weights_only_keras_file_is_named_as_such(tmp_path: Path) -> None:
    """Keras's own message named the file by a Python object's address (``<GFile object at
    0x7f...>``); the one line says what the file is and what to save instead."""
    import tf_keras as keras

    from videmo.train.export import load_keras

    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    weights = tmp_path / "net.weights.h5"
    net.save_weights(str(weights))
    with pytest.raises(ModelError, match=r"no model in it \(weights only") as caught:
        load_keras(weights)
    assert "0x" not in str(caught.value) and str(weights) in str(caught.value)


def test_the_next_train_removes_the_temp_files_of_a_killed_save(tmp_path: Path) -> None:
    """SIGKILL in the middle of a checkpoint save left ``.best.<pid>.<n>.tmp.h5`` in the run
    folder for good. The next trainer, once it holds the folder's lock, removes videmo temp
    files whose process is gone, and keeps those of live processes and every other file."""
    import os
    import subprocess
    import sys

    from videmo.outputs.atomic import orphaned_temps
    from videmo.train.train import _only_trainer

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid, live_pid = int(gone.stdout), os.getpid()
    run = tmp_path / "run"
    run.mkdir()
    orphans = [run / f".best.{dead_pid}.0.tmp.h5", run / f".history.csv.{dead_pid}.3.tmp"]
    kept = [
        run / f".last.{live_pid}.1.tmp.h5",  # a writer at work
        run / ".annotated.2.tmp.mp4",  # no pid in the name
        run / f".notes.{dead_pid}.0.tmp.txt",  # a temp name, but not of a file train writes
        run / "notes.tmp.txt",  # the user's
        run / "best.h5",
    ]
    for path in [*orphans, *kept]:
        path.write_bytes(b"x")
    assert orphaned_temps(run, lambda name: name in ("best.h5", "history.csv")) == sorted(orphans)
    with _only_trainer(run):
        assert not any(path.exists() for path in orphans)
        assert all(path.exists() for path in kept)


def test_a_training_job_is_checked_before_tensorflow_is_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the [train] extra, a mistyped job file said only "tensorflow is not installed":
    the job's keys, types and ranges are checked first, so its mistake shows, and the missing
    package is said once the job is right."""
    from click.testing import CliRunner

    from videmo.train import commands

    def no_tensorflow() -> None:
        raise commands.click.ClickException("tensorflow is not installed")

    monkeypatch.setattr(commands, "_require_tf", no_tensorflow)
    job = tmp_path / "job.toml"
    job.write_text('data = "x.csv"\nepochz = 3\n')
    result = CliRunner().invoke(commands.train_command, ["--job", str(job)])
    assert result.exit_code != 0 and "unknown key 'epochz'" in str(result.exception or "") + (
        result.output
    ), result.output
    job.write_text('data = "x.csv"\nepochs = 3\n')  # a good job: then the missing package
    result = CliRunner().invoke(commands.train_command, ["--job", str(job)])
    assert "tensorflow is not installed" in result.output
