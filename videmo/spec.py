"""The emotion model's contract: class order, input size and preprocessing.

This is the single source of truth shared by training, export and inference.
The spec is written into every exported ONNX file as metadata (key
``videmo.spec``), and inference reads it back from the model, so a model and
its preprocessing can never drift apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

#: FER2013 label order (Kaggle CSV ``emotion`` column 0..6).
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: ONNX metadata key under which the spec is stored.
METADATA_KEY = "videmo.spec"


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
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["classes"] = list(self.classes)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        data = json.loads(text)
        data["classes"] = tuple(data["classes"])
        return cls(**data)

    def resize(self, gray: np.ndarray) -> np.ndarray:
        """Resize one uint8 grayscale crop to the model's square input size."""
        size = (self.input_size, self.input_size)
        interp = cv2.INTER_AREA if min(gray.shape[:2]) >= self.input_size else cv2.INTER_LINEAR
        return cv2.resize(gray, size, interpolation=interp)

    def normalize(self, batch_uint8: np.ndarray) -> np.ndarray:
        """Map a (N, S, S) uint8 batch to the float32 model input (N, S, S, 1) or NCHW."""
        x = (batch_uint8.astype(np.float32) / 255.0 - self.mean) / self.std
        x = x[..., None] if self.layout == "NHWC" else x[:, None, :, :]
        if self.channels == 3:
            x = np.repeat(x, 3, axis=-1 if self.layout == "NHWC" else 1)
        return np.ascontiguousarray(x, dtype=np.float32)


#: Fraction of the box side added around a detected face before cropping.
#: FER2013 crops include the forehead and chin; detector boxes are tighter.
CROP_MARGIN = 0.15


def square_crop_box(xywh: np.ndarray, frame_w: int, frame_h: int) -> tuple[int, int, int, int]:
    """Square box (x0, y0, x1, y1) around a face, with margin, clipped to the frame."""
    x, y, w, h = (float(v) for v in xywh)
    side = max(w, h) * (1.0 + 2 * CROP_MARGIN)
    cx, cy = x + w / 2, y + h / 2
    x0 = int(round(max(0.0, cx - side / 2)))
    y0 = int(round(max(0.0, cy - side / 2)))
    x1 = int(round(min(float(frame_w), cx + side / 2)))
    y1 = int(round(min(float(frame_h), cy + side / 2)))
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def face_crop(frame_bgr: np.ndarray, xywh: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Cut one face out of a BGR frame as grayscale at the model's input size.

    Only the crop is converted to gray, not the whole frame.
    """
    h, w = frame_bgr.shape[:2]
    x0, y0, x1, y1 = square_crop_box(xywh, w, h)
    return spec.resize(cv2.cvtColor(frame_bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY))
