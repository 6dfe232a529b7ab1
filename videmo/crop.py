"""The crop stage: cut each detected face out of its frame the way the model's faces are framed.

Training, evaluation and inference all cut faces here, with the geometry
stored in the model's spec (``ModelSpec.crop_for``), so a model trained on
differently framed faces carries its own framing.
"""

from __future__ import annotations

import cv2
import numpy as np

from videmo.spec import CropGeometry, ModelSpec
from videmo.video import Frame


def crop_square(image: np.ndarray, x0: float, y0: float, side: float) -> np.ndarray:
    """The square [x0, x0 + side) x [y0, y0 + side) of ``image``, padded where it leaves the frame.

    A face near the frame edge keeps its framing (edge pixels are repeated)
    instead of being squeezed into a clipped, non-square crop.
    """
    h, w = image.shape[:2]
    side_px = max(1, int(round(side)))
    left, top = int(round(x0)), int(round(y0))
    right, bottom = left + side_px, top + side_px
    inside = image[max(0, top) : max(0, min(h, bottom)), max(0, left) : max(0, min(w, right))]
    if inside.size == 0:
        return np.zeros((side_px, side_px, *image.shape[2:]), image.dtype)
    pad = (max(0, -top), max(0, bottom - h), max(0, -left), max(0, right - w))
    if any(pad):
        inside = cv2.copyMakeBorder(inside, *pad, cv2.BORDER_REPLICATE)
    return inside


def resize_face(gray: np.ndarray, size: int) -> np.ndarray:
    """One uint8 grayscale face scaled to the model's ``size`` x ``size`` input.

    Area averaging when shrinking (a video face is usually larger than the input), linear
    when enlarging, as training scaled FER2013's 48 px faces up to a 64 px input. Training,
    evaluation and inference all scale faces here.
    """
    interp = cv2.INTER_AREA if min(gray.shape[:2]) >= size else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interp)


def face_crop(
    frame_bgr: np.ndarray, xywh: np.ndarray, geometry: CropGeometry, spec: ModelSpec
) -> np.ndarray:
    """One face as a uint8 grayscale crop at the model's input size.

    Only the crop is converted to gray, not the whole frame.
    """
    square = crop_square(frame_bgr, *geometry.square(xywh))
    gray = cv2.cvtColor(square, cv2.COLOR_BGR2GRAY) if square.ndim == 3 else square
    return resize_face(gray, spec.input_size)


def frame_face_crop(
    frame: Frame, xywh: np.ndarray, geometry: CropGeometry, spec: ModelSpec
) -> np.ndarray:
    """One face of a decoded video frame, cut from its luma plane: no colour conversion.

    The model is grayscale, so the Y plane the decoder produced is all it needs; the
    crop is mapped to full-range gray, matching :func:`face_crop` on the BGR frame.
    """
    square = crop_square(frame.luma(), *geometry.square(xywh))
    return resize_face(frame.gray(square), spec.input_size)
