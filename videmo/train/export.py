"""Export a Keras emotion model to a videmo ONNX file, with the spec embedded.

The ONNX file is self-describing: ``metadata_props[videmo.spec]`` holds the
:class:`ModelSpec` JSON (classes, input size, normalisation), so inference
never guesses preprocessing. Every export ends with a parity check on real
FER2013 faces: Keras and onnxruntime must agree to 1e-4, else nothing is
trusted and :class:`ModelError` is raised.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from videmo.errors import ModelError, OutputError
from videmo.outputs.atomic import atomic_write
from videmo.spec import METADATA_KEY, ModelSpec

INPUT_NAME = "input"
OUTPUT_NAME = "probs"
OPSET = 13
PARITY_TOL = 1e-4


def export_onnx(
    model: Any,
    out_path: str | Path,
    spec: ModelSpec,
    parity_images: np.ndarray | None = None,
    producer_note: str = "",
) -> dict[str, Any]:
    """Convert a Keras model (or a path to one) to ONNX at ``out_path``.

    ``parity_images`` are uint8 (N, S, S) faces used for the Keras/ONNX parity
    check; pass real FER2013 images. Returns ``{"path", "max_abs_diff", ...}``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnx
    import tensorflow as tf
    import tf2onnx

    model = load_keras(model) if isinstance(model, (str, Path)) else model
    _check_io(model, spec)
    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)
    proto = _rename_output(proto, onnx)
    _set_metadata(proto, spec, producer_note, tf.__version__, tf2onnx.__version__)
    onnx.checker.check_model(proto)

    out_path = Path(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    result: dict[str, Any] = {"path": str(out_path), "opset": OPSET}
    # Check first, then rename: a failed export never replaces the target (which may be
    # the shipped model the video pipeline is reading).
    with atomic_write(out_path) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        if parity_images is not None:
            result["max_abs_diff"] = parity_check(model, tmp, spec, parity_images)
            result["parity_images"] = int(len(parity_images))
    return result


def average_models(models: list[Any], flip_tta: bool = False) -> Any:
    """One graph that averages the softmax outputs of ``models`` (an ensemble of nets
    trained with different seeds), and with ``flip_tta`` also over each face's mirror image.

    Averaging independently trained nets and the mirrored face buys FER2013 accuracy
    (about a point each) at proportionally more compute, with no change to the
    pipeline's code: the result is still one ``input -> probs`` model.
    """
    import tensorflow as tf
    import tf_keras as keras

    if not models:
        raise ModelError("no models to export")
    if len(models) == 1 and not flip_tta:
        return models[0]
    for i, member in enumerate(models):
        member._name = f"member{i}"  # nested models need unique names in one graph
    inputs = keras.Input(models[0].input_shape[1:], name=INPUT_NAME)
    views = [inputs]
    if flip_tta:
        views.append(keras.layers.Lambda(lambda t: tf.reverse(t, axis=[2]), name="hflip")(inputs))
    outputs = [member(view) for member in models for view in views]
    average = keras.layers.Average(name=OUTPUT_NAME)(outputs)
    kind = f"ensemble{len(models)}" if len(models) > 1 else models[0].name
    return keras.Model(inputs, average, name=kind + ("_fliptta" if flip_tta else ""))


def load_keras(path: str | Path) -> Any:
    """Load a Keras 2 (tf_keras) model file without its optimizer state."""
    import tf_keras as keras

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Keras model not found: {path}")
    try:
        return keras.models.load_model(str(path), compile=False)
    except (OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        if "No model config found" in first:  # Keras names the file by an object's address
            first = (
                "no model in it (weights only, or not a Keras file): save the whole model "
                "with model.save, not save_weights"
            )
        raise ModelError(f"cannot load Keras model {path}: {first}") from None


def parity_check(model: Any, onnx_path: str | Path, spec: ModelSpec, images: np.ndarray) -> float:
    """Max |Keras - onnxruntime| over ``images``; raises ModelError above 1e-4."""
    import onnxruntime as ort

    from videmo.crop import resize_face

    x = spec.normalize(np.stack([resize_face(im, spec.input_size) for im in images]))
    expected = np.asarray(model(x, training=False))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    diff = float(np.max(np.abs(expected - got)))
    if not diff <= PARITY_TOL:
        raise ModelError(f"ONNX parity check failed: max abs diff {diff:.3g} > {PARITY_TOL}")
    return diff


def _check_io(model: Any, spec: ModelSpec) -> None:
    in_shape, out_shape = tuple(model.input_shape), tuple(model.output_shape)
    want_in = (spec.input_size, spec.input_size, spec.channels)
    if in_shape[1:] != want_in:
        raise ModelError(f"model input {in_shape[1:]} does not match the spec {want_in}")
    if out_shape[1:] != (len(spec.classes),):
        raise ModelError(f"model output {out_shape[1:]} is not ({len(spec.classes)},) classes")


def _rename_output(proto: Any, onnx: Any) -> Any:
    """Give the single output the stable name ``probs`` (tf2onnx uses the layer's tensor name)."""
    graph = proto.graph
    if len(graph.output) != 1:
        raise ModelError(f"expected one model output, got {len(graph.output)}")
    old = graph.output[0].name
    if old == OUTPUT_NAME:
        return proto
    for node in graph.node:
        node.output[:] = [OUTPUT_NAME if o == old else o for o in node.output]
        node.input[:] = [OUTPUT_NAME if i == old else i for i in node.input]
    graph.output[0].name = OUTPUT_NAME
    return proto


def _set_metadata(proto: Any, spec: ModelSpec, note: str, tf_version: str, t2o: str) -> None:
    from videmo import __version__

    proto.producer_name = "videmo"
    proto.producer_version = __version__
    proto.doc_string = "videmo emotion classifier; input NHWC float32, output softmax probs"
    props = {
        METADATA_KEY: spec.to_json(),
        "videmo.producer": (
            f"videmo {__version__}; tensorflow {tf_version}; tf2onnx {t2o}; "
            f"python {platform.python_version()}"
        ),
    }
    if note:
        props["videmo.note"] = note
    kept = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for p in kept:
        proto.metadata_props.add(key=p.key, value=p.value)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)


def export_checkpoint(
    checkpoints: str | Path | list[str | Path],
    out_path: str | Path,
    data: str | Path,
    spec: ModelSpec | None = None,
    note: str = "",
    flip_tta: bool = False,
) -> dict[str, Any]:
    """Export one training checkpoint, or the average of several, checking parity on
    256 real faces from ``data``.

    ``flip_tta`` bakes horizontal-flip test-time augmentation into the graph. Both
    choices are recorded in the spec's ``extra`` (``ensemble``, ``flip_tta_in_graph``).
    """
    from videmo.train.data import load_fer2013

    paths = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    splits = load_fer2013(data, limit_per_split=256, seed=0)
    faces = (splits.get("PublicTest") or next(iter(splits.values()))).images
    spec = spec or ModelSpec(extra={"arch": "mini_xception", "width": 1.0, "dataset": "FER2013"})
    model = average_models([load_keras(p) for p in paths], flip_tta=flip_tta)
    extra = dict(spec.extra)
    if len(paths) > 1:
        extra["ensemble"] = len(paths)
    if flip_tta:
        extra["flip_tta_in_graph"] = True
    spec = dataclasses.replace(spec, extra=extra)
    return export_onnx(model, out_path, spec, faces, producer_note=note)


def export_runs(
    run_dirs: list[Path],
    out_path: str | Path,
    flip_tta: bool | None = None,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Export the best checkpoints of one or more ``videmo train`` runs as one ONNX model.

    Runs may differ in width: the spec's ``extra["width"]`` is then the list of the
    members' widths, in the order given. ``flip_tta`` and ``data`` (for the parity
    check) default to the first run's settings. The note in the model's metadata
    names every run's config file.
    """
    from videmo.errors import SettingsError
    from videmo.train.train import BEST_FILE, CONFIG_FILE, default_spec, read_run_config

    config_files = [Path(run) / CONFIG_FILE for run in run_dirs]
    configs = []
    for run, config_file in zip(run_dirs, config_files, strict=True):
        if not config_file.is_file():
            raise SettingsError(f"{run}: not a training run (no {CONFIG_FILE})")
        configs.append(read_run_config(config_file))
    first = configs[0]
    sizes = sorted({c.input_size for c in configs})
    if len(sizes) > 1:
        raise SettingsError(
            f"the runs see faces of different sizes ({', '.join(f'{s} px' for s in sizes)}): "
            "one model needs one input size"
        )
    for run, config in zip(run_dirs, configs, strict=True):
        _warn_if_unfinished(Path(run), config)
    spec = default_spec(first)
    widths = [c.width for c in configs]
    if len(set(widths)) > 1:
        spec = dataclasses.replace(spec, extra={**spec.extra, "width": widths})
    note = "trained by videmo on FER2013 Training; configs " + ", ".join(map(str, config_files))
    return export_checkpoint(
        [Path(run) / BEST_FILE for run in run_dirs],
        out_path,
        data or first.data,
        spec,
        note,
        flip_tta=first.flip_tta if flip_tta is None else flip_tta,
    )


def _warn_if_unfinished(run: Path, config: Any) -> None:
    """Say so on stderr when a run stopped before its epochs were done (not by early stop):
    its best checkpoint so far is exported, which may not be the model the run was for."""
    import sys

    from videmo.train.train import run_history, run_summary

    done = len(run_history(run).get("epoch", []))
    stopped = bool((run_summary(run) or {}).get("stopped_early"))
    if done < config.epochs and not stopped:
        print(
            f"videmo: warning: {run} is unfinished ({done} of {config.epochs} epochs): "
            "exporting its best checkpoint so far",
            file=sys.stderr,
        )


def restamp_spec(source: str | Path, target: str | Path, spec: ModelSpec) -> Path:
    """Copy an ONNX model with a new ``videmo.spec`` (e.g. another crop geometry), atomically.

    The weights are untouched; only the metadata changes. Used to store the
    calibrated crop geometry in an existing model and to compare crops.
    """
    import onnx

    proto = onnx.load(str(source))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    for p in kept:
        proto.metadata_props.add(key=p.key, value=p.value)
    proto.metadata_props.add(key=METADATA_KEY, value=spec.to_json())
    target = Path(target)
    with atomic_write(target) as tmp:
        onnx.save(proto, str(tmp))
    return target
