"""The emotion model's contract: class order, input size and preprocessing.

This is the single source of truth shared by training, export and inference.
The spec is written into every exported ONNX file as metadata (key
``videmo.spec``), and inference reads it back from the model, so a model and
its preprocessing can never drift apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

#: FER2013 label order (Kaggle CSV ``emotion`` column 0..6).
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: ONNX metadata key under which the spec is stored.
METADATA_KEY = "videmo.spec"
#: The sides a model's square input may have, in pixels (training and stored specs alike).
INPUT_SIZES = range(8, 1025)


def _is_number(value: object) -> bool:
    """A finite int or float (not a bool, not a string)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelSpec:
    """How to turn a grayscale face crop into the model's input tensor.

    ``pixel = (uint8 / 255 - mean) / std`` which, with the defaults, maps
    0..255 to -1..1 as in Arriaga et al.'s mini-Xception.
    """

    classes: tuple[str, ...] = EMOTIONS
    input_size: int = 48
    mean: float = 0.5
    std: float = 0.5
    channels: int = 1
    layout: str = "NHWC"
    #: Face framing the model was trained on, per detector (see ``CropGeometry``).
    crops: dict[str, CropGeometry] = field(default_factory=lambda: dict(CALIBRATED_CROPS))
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """A spec read from a model file is checked here: a wrong type or value would fail
        deep inside preprocessing, as a traceback, on the first face."""
        if not _is_int(self.input_size) or self.input_size not in INPUT_SIZES:
            raise ValueError(f"input_size must be a number of pixels, not {self.input_size!r}")
        if not _is_number(self.mean):
            raise ValueError(f"mean must be a number, not {self.mean!r}")
        if not _is_number(self.std) or self.std <= 0:
            raise ValueError(f"std must be a number above 0, not {self.std!r}")
        if self.channels not in (1, 3) or not _is_int(self.channels):
            raise ValueError(f"channels must be 1 or 3, not {self.channels!r}")
        if self.layout not in ("NHWC", "NCHW"):
            raise ValueError(f"layout must be 'NHWC' or 'NCHW', not {self.layout!r}")
        if not all(isinstance(g, CropGeometry) for g in self.crops.values()):
            raise ValueError("crops must map detector names to crop geometries")

    def to_json(self) -> str:
        data = asdict(self)
        data["classes"] = list(self.classes)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Read a stored spec; models exported before crops were stored get the calibrated ones."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        data["classes"] = tuple(data["classes"])
        if "crops" in data:
            if not isinstance(data["crops"], dict):
                raise ValueError("crops must be an object")
            data["crops"] = {name: CropGeometry(**geo) for name, geo in data["crops"].items()}
        return cls(**data)

    def crop_for(self, detector: str) -> CropGeometry:
        """The framing to cut faces found by ``detector`` with (calibrated default if absent)."""
        return self.crops.get(detector, CALIBRATED_CROPS.get(detector, CropGeometry()))

    def normalize(self, batch_uint8: np.ndarray) -> np.ndarray:
        """Map a (N, S, S) uint8 batch to the float32 model input (N, S, S, 1) or NCHW."""
        x = (batch_uint8.astype(np.float32) / 255.0 - self.mean) / self.std
        x = x[..., None] if self.layout == "NHWC" else x[:, None, :, :]
        if self.channels == 3:
            x = np.repeat(x, 3, axis=-1 if self.layout == "NHWC" else 1)
        return np.ascontiguousarray(x, dtype=np.float32)


@dataclass(frozen=True)
class CropGeometry:
    """Where the model's square input lies relative to a detector's face box.

    The square's side is ``scale * max(w, h)`` of the box and its centre is the
    box centre moved by ``(shift_x, shift_y) * side``. The defaults were
    measured, not guessed: FER2013 Training faces were pasted into real frames
    at known places and sizes, found by the detector, and the median relation
    between the detector's box and the pasted face is what is stored here
    (``benchmarks/calibrate_crop.py``). Cutting a face this way frames it the
    way the training faces are framed.
    """

    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0

    def __post_init__(self) -> None:
        if not _is_number(self.scale) or self.scale <= 0:
            raise ValueError(f"a crop's scale must be a number above 0, not {self.scale!r}")
        for name in ("shift_x", "shift_y"):
            if not _is_number(getattr(self, name)):
                raise ValueError(f"a crop's {name} must be a number")

    def square(self, xywh: np.ndarray) -> tuple[float, float, float]:
        """(x0, y0, side) of the model's input square for one box, in frame pixels."""
        x, y, w, h = (float(v) for v in xywh)
        side = self.scale * max(w, h)
        cx = x + w / 2 + self.shift_x * side
        cy = y + h / 2 + self.shift_y * side
        return cx - side / 2, cy - side / 2, side


#: FER2013 framing per detector, measured on 2,000 Training faces by
#: ``python benchmarks/calibrate_crop.py`` (see the README's accuracy section).
CALIBRATED_CROPS: dict[str, CropGeometry] = {
    "yunet": CropGeometry(scale=0.977, shift_x=0.0, shift_y=-0.015),
    "haar": CropGeometry(scale=1.05, shift_x=0.0, shift_y=0.005),
}
