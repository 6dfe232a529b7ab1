"""Locate the model files shipped with videmo (never downloaded at run time)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from videmo.errors import ModelError

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
HAAR_FILE = "haarcascade_frontalface_default.xml"
EMOTION_FILE = "emotion_minixception.onnx"

_PACKAGE_DIR = Path(__file__).resolve().parent


def models_dir() -> Path:
    """The folder with the shipped models.

    A wheel install carries them inside the package (``videmo/models``); an
    editable install or a plain checkout reads the repository's ``models/``.
    """
    for candidate in (_PACKAGE_DIR / "models", _PACKAGE_DIR.parent / "models"):
        if (candidate / YUNET_FILE).is_file():
            return candidate
    raise ModelError("shipped models not found: reinstall videmo (models/ is missing)")


def model_path(name_or_path: str | Path) -> Path:
    """Resolve a shipped model's bare file name, or check a user-given path exists.

    Only a bare name (no folder) may mean a shipped model: a mistyped path must
    fail, never fall back silently to the shipped file of the same name.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = models_dir() / path.name
    if str(path) == path.name and shipped.is_file():
        return shipped
    if path.exists():
        raise ModelError(f"model path is not a file: {name_or_path}")
    raise ModelError(f"model file not found: {name_or_path}")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, recorded in run.json so results can be traced to a model."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
