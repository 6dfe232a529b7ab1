"""Emotion classification: one ONNX Runtime session, batched face crops.

The model's class order, input size and normalisation are read from the ONNX
metadata (``videmo.spec``) written at export time, so inference never guesses
how the model was trained.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnxruntime as ort

from videmo.crop import resize_face
from videmo.errors import ModelError, SettingsError, one_line
from videmo.models import EMOTION_FILE, model_path
from videmo.settings import DEVICES
from videmo.spec import EMOTIONS, METADATA_KEY, ModelSpec

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def read_spec(session: ort.InferenceSession, path: Path) -> ModelSpec:
    """The videmo spec stored in the model; refuse models that lack it."""
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise ModelError(
            f"{path} has no '{METADATA_KEY}' metadata: convert it with 'videmo import-keras'"
        )
    try:
        spec = ModelSpec.from_json(meta[METADATA_KEY])
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"{path.name}: invalid '{METADATA_KEY}' metadata: {exc}") from None
    if tuple(spec.classes) != EMOTIONS:
        raise ModelError(
            f"{path} classes {list(spec.classes)} differ from FER2013's {list(EMOTIONS)}"
        )
    return spec


def _create_session(path: Path, providers: list[str], threads: int) -> ort.InferenceSession:
    """Create a session with ONNX Runtime's own logging muted.

    onnxruntime-gpu lists CUDA even where its libraries are missing and then
    prints two error lines while falling back to the CPU; the provider that
    really runs is read from the session afterwards instead.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    ort.set_default_logger_severity(4)
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"cannot load emotion model {path}: {str(exc).splitlines()[0]}") from None
    finally:
        ort.set_default_logger_severity(3)


def open_model(
    path: Path, providers: list[str] | None = None, threads: int = 0
) -> tuple[ort.InferenceSession, ModelSpec]:
    """The one ONNX loader: a session (CPU unless told) and the spec stored in the model.

    The pipeline (``EmotionModel``) and ``videmo evaluate`` both load models here.
    """
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    session = _create_session(path, providers or [_CPU], threads)
    spec = read_spec(session, path)
    check_outputs(session, spec, path)
    return session, spec


def check_outputs(session: ort.InferenceSession, spec: ModelSpec, path: Path) -> None:
    """Run the model once on a blank face and refuse it unless it gives 7 probabilities.

    A model whose graph does not match its spec (another input size or channel count,
    another number of outputs) or that gives raw scores or NaN would otherwise fail
    only when the first face reaches it, or worse, run and write timelines of
    non-probabilities (a NaN row reads as "not classified" and its face is dropped).
    """
    graph_input = session.get_inputs()[0]
    batch = graph_input.shape[0]
    blank = np.full((batch if isinstance(batch, int) else 1, spec.input_size, spec.input_size),
                    128, np.uint8)  # fmt: skip
    described = f"{spec.layout} {spec.channels}x{spec.input_size}x{spec.input_size}"
    x = spec.normalize(blank)
    shape = [d if isinstance(d, int) else "N" for d in graph_input.shape]
    if len(shape) != x.ndim or any(
        isinstance(d, int) and d != n for d, n in zip(shape[1:], x.shape[1:], strict=True)
    ):
        raise ModelError(
            f"{path.name} takes input of shape {shape}, not the {described} faces its spec "
            "describes"
        )
    try:
        probs = session.run(None, {graph_input.name: x})[0]
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{path.name} fails on a blank face: {one_line(exc)}") from None
    if probs.ndim != 2 or probs.shape[1] != len(spec.classes):
        raise ModelError(
            f"{path.name} gives outputs of shape {list(probs.shape[1:])} per face; "
            f"its spec lists {len(spec.classes)} classes"
        )
    if not np.isfinite(probs).all():
        raise ModelError(f"{path.name} gives NaN or infinite outputs for a blank face")
    if (probs < -1e-6).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ModelError(
            f"{path.name}'s outputs are not probabilities (a row sums to "
            f"{float(probs.sum(axis=1)[0]):.3g}): export the model with its softmax"
        )


class EmotionModel:
    """Classifies batches of uint8 face crops into the 7 FER2013 emotions."""

    def __init__(
        self,
        path: str | Path | None = None,
        device: str = "auto",
        batch_size: int = 64,
        threads: int = 0,
    ) -> None:
        if device not in DEVICES:
            raise SettingsError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
        self.path = model_path(path or EMOTION_FILE)
        self.batch_size = batch_size
        want_gpu = device != "cpu" and _CUDA in ort.get_available_providers()
        providers = [_CUDA, _CPU] if want_gpu else [_CPU]
        self.session, self.spec = open_model(self.path, providers, threads)
        fixed = self.session.get_inputs()[0].shape[0]
        if isinstance(fixed, int) and fixed > 0:  # exported for one batch size: use it
            self.batch_size = fixed
        self.provider = self.session.get_providers()[0]
        if device == "gpu" and self.provider != _CUDA:
            raise ModelError("--device gpu: CUDA is not usable here (no GPU or CUDA libraries)")
        self._input = self.session.get_inputs()[0].name

    @property
    def n_classes(self) -> int:
        return len(self.spec.classes)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities (N, 7) for uint8 crops (N, S, S), run in fixed-size batches.

        Every batch is padded to ``batch_size`` rows so each crop is computed
        by the same kernels whatever else is in its batch: results then do not
        depend on how frames were split into chunks. Faces of another size (e.g.
        FER2013's 48x48 for a 64x64 model) are resized as training resized them.
        """
        n = len(crops)
        out = np.zeros((n, self.n_classes), np.float32)
        size = self.spec.input_size
        if n and crops.shape[1:3] != (size, size):
            crops = np.stack([resize_face(face, size) for face in crops])
        for start in range(0, n, self.batch_size):
            chunk = crops[start : start + self.batch_size]
            padded = np.zeros((self.batch_size, size, size), np.uint8)
            padded[: len(chunk)] = chunk
            probs = self.session.run(None, {self._input: self.spec.normalize(padded)})[0]
            if not np.isfinite(probs[: len(chunk)]).all():  # NaN marks "not classified"
                raise ModelError(f"{self.path.name} gave NaN or infinite outputs for a face")
            out[start : start + len(chunk)] = probs[: len(chunk)]
        return out


@functools.lru_cache(maxsize=8)
def _metrics_of(path: Path, mtime_ns: int) -> dict:
    _, spec = open_model(path)
    metrics = spec.extra.get("metrics", {})
    return dict(metrics) if isinstance(metrics, dict) else {}


def model_metrics(path: Path) -> dict:
    """The accuracy figures stored in the model's spec (``extra.metrics``), or ``{}``.

    They travel with the model file, so ``run.json`` and the report show the
    figures of the model that really ran.
    """
    return dict(_metrics_of(Path(path), Path(path).stat().st_mtime_ns))
