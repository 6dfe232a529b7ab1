"""Evaluate a videmo ONNX emotion model on FER2013 with onnxruntime only (no TensorFlow).

Preprocessing comes from the spec stored in the model's metadata, exactly as
the video pipeline does at inference time, so the numbers reported here are
the numbers the shipped pipeline gets on FER2013 crops.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from videmo.spec import ModelSpec
from videmo.train.data import load_fer2013


def load_session(model_path: str | Path, threads: int = 0) -> tuple[Any, ModelSpec]:
    """An onnxruntime CPU session and the model's spec (``videmo.emotion.open_model``)."""
    from videmo.emotion import open_model

    return open_model(Path(model_path), threads=threads)


def predict_probs(model: Any, images: np.ndarray, flip_tta: bool = False) -> np.ndarray:
    """Class probabilities for uint8 (N, H, W) faces through ``EmotionModel.predict``, the
    video path's own batching; ``flip_tta`` averages with the mirrored faces."""
    probs = model.predict(images)
    if flip_tta:
        probs = 0.5 * (probs + model.predict(np.ascontiguousarray(images[:, :, ::-1])))
    return probs


def evaluate(
    model_path: str | Path,
    data_path: str | Path,
    flip_tta: bool = False,
    limit_per_split: int | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion matrix for every split in the data."""
    from videmo.emotion import EmotionModel

    model = EmotionModel(model_path, device="cpu", batch_size=256)
    spec = model.spec
    splits = load_fer2013(data_path, limit_per_split=limit_per_split)
    results: dict[str, Any] = {
        "model": str(model_path),
        "data": str(data_path),
        "flip_tta": flip_tta,
        "classes": list(spec.classes),
        "splits": {},
    }
    votes = _ferplus_beside(data_path)
    if votes is not None and _votes_misaligned(votes, splits, data_path):
        votes = None
    for name, split in splits.items():
        probs = predict_probs(model, split.images, flip_tta=flip_tta)
        metrics = split_metrics(split.labels, probs.argmax(axis=1), spec.classes)
        if votes is not None and split.rows is not None:
            majority = votes.majority[split.rows]
            has = majority >= 0
            right = probs.argmax(axis=1)[has] == majority[has]
            metrics["ferplus_n"] = int(has.sum())
            metrics["ferplus_accuracy"] = float(right.mean()) if has.any() else None
        results["splits"][name] = metrics
    return results


def _votes_misaligned(votes: Any, splits: dict, data_path: str | Path) -> bool:
    """Say on stderr, and return True, when the votes belong to another CSV's rows."""
    import sys

    from videmo.train.data import ferplus_path_for, misaligned_message

    for name, split in splits.items():
        reason = votes.misaligned(split, name)
        if reason is not None:
            why = misaligned_message(ferplus_path_for(data_path), data_path, reason)
            print(f"videmo: warning: no FER+ figures: {why}", file=sys.stderr)
            return True
    return False


def _ferplus_beside(data_path: str | Path) -> Any:
    """FER+ votes when they sit beside the FER2013 CSV (``../ferplus/``), else None.

    Accuracy against the FER+ majority vote is then reported next to the
    accuracy against the original labels.
    """
    from videmo.train.data import ferplus_path_for, load_ferplus

    path = ferplus_path_for(data_path)
    return load_ferplus(path) if Path(data_path).is_file() and path.is_file() else None


def split_metrics(labels: np.ndarray, preds: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Overall accuracy, per-class accuracy (recall) and the confusion matrix (rows = truth)."""
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, preds), 1)
    support = confusion.sum(axis=1)
    per_class = {
        cls: (float(confusion[i, i] / support[i]) if support[i] else None)
        for i, cls in enumerate(classes)
    }
    return {
        "n": int(len(labels)),
        "accuracy": float(np.trace(confusion) / max(1, len(labels))),
        "per_class": per_class,
        "support": {cls: int(support[i]) for i, cls in enumerate(classes)},
        "confusion": confusion.tolist(),
    }


#: The keys every ``videmo evaluate --json`` file has: how an earlier result is known.
RESULT_KEYS = frozenset({"model", "data", "flip_tta", "classes", "splits"})


def check_results_target(path: str | Path) -> None:
    """Fail before any work unless ``path`` may take the results: a new file, or an earlier
    result of ``videmo evaluate``. Any other JSON file (a training run's ``config.json`` or
    ``summary.json``: that run could no longer be exported or resumed) is never replaced."""
    import json

    from videmo.errors import OutputError
    from videmo.outputs.atomic import check_output_file

    path = Path(path)
    check_output_file(path)
    if not path.is_file():
        return
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = None
    if not (isinstance(earlier, dict) and set(earlier) >= RESULT_KEYS):
        raise OutputError(
            f"cannot write {path}: it is not an earlier 'videmo evaluate' result (a file of "
            "another kind is never overwritten): give another --json"
        )


def check_image_target(path: str | Path) -> None:
    """Fail before any work when ``path`` cannot take an image (folder, or a type matplotlib
    does not write, chosen by the file's suffix as ``savefig`` does)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from videmo.errors import OutputError
    from videmo.outputs.atomic import check_output_file

    path = Path(path)
    check_output_file(path)
    supported = FigureCanvasAgg.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in supported:
        raise OutputError(
            f"cannot write {path}: the suffix must be an image type "
            f"({', '.join(sorted(supported))})"
        )


def save_confusion_png(
    confusion: list[list[int]] | np.ndarray,
    classes: tuple[str, ...] | list[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Row-normalised confusion matrix with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            color = "white" if norm[i, j] > 0.5 else "black"
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color=color,
            )
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    from videmo.outputs.atomic import atomic_write

    path = Path(path)
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lower().lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def read_history(history_csv: str | Path) -> dict[str, list[float]]:
    """The Keras CSVLogger history as ``{column: values}``."""
    with open(history_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    return {key: [float(r[key]) for r in rows if r.get(key) not in (None, "")] for key in rows[0]}


def save_curves_png(
    history_csv: str | Path | list[str | Path], path: str | Path, title: str = ""
) -> Path:
    """Loss and accuracy (train vs. validation) and the learning rate per epoch.

    Several histories (the members of an ensemble) are drawn on the same axes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = [history_csv] if isinstance(history_csv, (str, Path)) else list(history_csv)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
    for n, file in enumerate(files):
        hist = read_history(file)
        epochs = [int(e) + 1 for e in hist.get("epoch", [])]
        member = f"run {n + 1} " if len(files) > 1 else ""
        for ax, key in zip(axes[:2], ("loss", "accuracy"), strict=True):
            ax.plot(epochs, hist.get(key, []), label=f"{member}train")
            ax.plot(epochs, hist.get(f"val_{key}", []), label=f"{member}validation")
        if "lr" in hist and n == 0:
            axes[2].plot(epochs, hist["lr"])
    for ax, name in zip(axes, ("loss", "accuracy", "learning rate"), strict=True):
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def bench_faces_per_second(
    model_path: str | Path, batch: int = 32, threads: int = 2, seconds: float = 3.0
) -> float:
    """Steady-state CPU throughput (faces/s) of the model alone at a fixed batch size."""
    session, spec = load_session(model_path, threads=threads)
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (batch, spec.input_size, spec.input_size), dtype=np.uint8)
    x = spec.normalize(faces)
    feed = {session.get_inputs()[0].name: x}
    for _ in range(5):  # warm-up: allocations and kernel selection
        session.run(None, feed)
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        session.run(None, feed)
        runs += 1
    return runs * batch / elapsed
