"""Import an existing Keras emotion model (e.g. oarriaga's ``_mini_XCEPTION.*.hdf5``).

The input size and channel count are read from the model itself; the
preprocessing recorded in the spec is the mini-Xception convention
``x / 255 - 0.5) * 2`` i.e. mean 0.5, std 0.5 (override for other models).
The class order must be FER2013's (:data:`videmo.spec.EMOTIONS`), which is
what oarriaga's FER2013 models use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videmo.errors import ModelError
from videmo.spec import EMOTIONS, ModelSpec


def import_keras(
    h5_path: str | Path | Sequence[str | Path],
    out_path: str | Path,
    mean: float = ModelSpec.mean,
    std: float = ModelSpec.std,
    parity_faces: np.ndarray | None = None,
    flip_tta: bool = False,
) -> dict[str, Any]:
    """Convert a Keras .hdf5/.h5/.keras emotion model to a videmo ONNX model.

    Several files (nets of one input size) become one graph that averages their
    probabilities on the same face: an ensemble. ``parity_faces`` are uint8 (N, H, W)
    faces for the Keras/ONNX parity check (real FER2013 faces when available); random
    faces are used otherwise. ``flip_tta`` bakes the average of the face and its mirror
    image into the graph.
    """
    from videmo.train.export import average_models, export_onnx, load_keras

    paths = [Path(h5_path)] if isinstance(h5_path, (str, Path)) else [Path(p) for p in h5_path]
    models = [load_keras(path) for path in paths]
    shapes = {tuple(m.input_shape[1:]) for m in models}
    if len(shapes) > 1:
        raise ModelError(f"an ensemble needs one input size, got {sorted(shapes)}")
    for path, member in zip(paths, models, strict=True):  # each one: 7 classes, square input
        try:
            spec_from_keras(member, mean, std)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from None
    source = " + ".join(path.name for path in paths)
    spec = spec_from_keras(models[0], mean, std, source=source)
    if len(models) > 1:
        spec = dataclasses.replace(spec, extra={**spec.extra, "ensemble": len(models)})
    model = average_models(models, flip_tta=flip_tta)
    if flip_tta:
        spec = dataclasses.replace(spec, extra={**spec.extra, "flip_tta_in_graph": True})
    _check_probabilities(model, spec)
    if parity_faces is None:
        rng = np.random.default_rng(0)
        parity_faces = rng.integers(0, 256, (64, spec.input_size, spec.input_size), np.uint8)
    result = export_onnx(
        model,
        out_path,
        spec,
        parity_faces,
        producer_note=f"imported from Keras file{'s' if len(paths) > 1 else ''} {source}",
    )
    result["spec"] = spec.to_json()
    return result


def spec_from_keras(model: Any, mean: float, std: float, source: str = "") -> ModelSpec:
    """Read input size / channels from the model; check it is a 7-class square NHWC model."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[1] is None or shape[3] not in (1, 3):
        raise ModelError(f"expected a square NHWC input with 1 or 3 channels, got {shape}")
    n_out = tuple(model.output_shape)[1:]
    if n_out != (len(EMOTIONS),):
        raise ModelError(f"expected {len(EMOTIONS)} outputs (FER2013 classes), got {n_out}")
    extra = {"imported_from": source, "arch": model.name} if source else {"arch": model.name}
    try:
        return ModelSpec(
            input_size=int(shape[1]), channels=int(shape[3]), mean=mean, std=std, extra=extra
        )
    except ValueError as exc:  # an input size no model of videmo's can have
        raise ModelError(f"{source or model.name}: {exc}") from None


def _check_probabilities(model: Any, spec: ModelSpec) -> None:
    """The pipeline expects softmax outputs; a logits model would silently mis-score."""
    x = spec.normalize(np.full((2, spec.input_size, spec.input_size), 128, np.uint8))
    probs = np.asarray(model(x, training=False))
    if np.any(probs < -1e-6) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ModelError("model outputs are not softmax probabilities (add a softmax layer)")
