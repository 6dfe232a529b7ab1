"""Face detection: YuNet (default) and the classic Haar cascade.

Both detectors run on a downscaled copy of the frame (``det_size`` is the
longest side) because detection cost grows with pixels, then map boxes back to
full-resolution coordinates and clip them to the frame, so every later stage
works in the coordinates of the upright source frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from videmo.errors import ModelError, SettingsError
from videmo.models import HAAR_FILE, YUNET_FILE, model_path
from videmo.settings import DETECTORS


@dataclass(frozen=True)
class DetectorConfig:
    """Detector choice and thresholds; part of the run settings."""

    name: str = "yunet"
    det_size: int = 640  # longest side of the image the detector sees
    score_threshold: float = 0.6  # YuNet confidence; ignored by Haar
    min_face: int = 20  # minimum face side in full-resolution pixels
    nms_threshold: float = 0.3


class FaceDetector(Protocol):
    """Finds faces in one BGR frame; returns boxes (N, 4) xywh and scores (N,).

    ``detect_scaled`` takes the frame already shrunk by ``scale`` (the pipeline
    gets it cheaply from the decoder) and returns boxes in the coordinates of
    the full frame of shape ``full_shape``; ``detect`` shrinks it itself.
    """

    config: DetectorConfig

    def detect_scaled(
        self, small_bgr: np.ndarray, scale: float, full_shape: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def detect_counting(
        self, small_bgr: np.ndarray, scale: float, full_shape: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class _ScalingDetector:
    """Shared ``detect``: shrink to the working size, then ``detect_scaled``."""

    config: DetectorConfig

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = _working_scale(image_bgr.shape, self.config.det_size)
        return self.detect_scaled(_resize(image_bgr, scale), scale, image_bgr.shape)

    def detect_scaled(
        self, small_bgr: np.ndarray, scale: float, full_shape: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.detect_counting(small_bgr, scale, full_shape)[:2]

    def detect_counting(
        self, small_bgr: np.ndarray, scale: float, full_shape: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``detect_scaled``'s boxes and scores, and the sides (full-frame pixels) of the
        faces found but left out as smaller than ``min_face``: so a run can say that faces
        were there, instead of reporting none (see :class:`videmo.detections.SmallFaces`)."""
        raise NotImplementedError


def _working_scale(shape: tuple[int, ...], det_size: int) -> float:
    """Downscale factor so the longest side is at most ``det_size`` (never upscale)."""
    return min(1.0, det_size / max(shape[0], shape[1]))


def _to_full_resolution(
    boxes: np.ndarray, scores: np.ndarray, scale: float, shape: tuple[int, ...], min_face: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale boxes back to the full frame, clip them to it and drop tiny faces; the third
    array is the shorter side of each face dropped as smaller than ``min_face``."""
    clipped, _ = clip_to_frame(boxes.astype(np.float64) / scale, scores, shape, 0)
    sides = np.minimum(clipped[:, 2], clipped[:, 3])
    kept = sides >= min_face  # as clip_to_frame keeps them: both sides, inside the frame
    return clipped[kept], scores[kept].astype(np.float32), sides[~kept & (sides > 0)]


def clip_to_frame(
    boxes: np.ndarray, scores: np.ndarray, shape: tuple[int, ...], min_face: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) xywh clipped to a frame of ``shape``, faces under ``min_face`` dropped.

    Every face box of the pipeline passes here: detected ones and followed ones. The
    arithmetic is done in the boxes' own dtype.
    """
    h, w = shape[0], shape[1]
    x0 = np.clip(boxes[:, 0], 0, w)
    y0 = np.clip(boxes[:, 1], 0, h)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], 0, w)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], 0, h)
    xywh = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float32)
    keep = (xywh[:, 2] >= min_face) & (xywh[:, 3] >= min_face)
    return xywh[keep], scores[keep].astype(np.float32)


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _no_faces() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh empty boxes, scores and small sides (callers may keep or fill what they get)."""
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0)


class YuNetDetector(_ScalingDetector):
    """OpenCV's YuNet CNN detector (libfacedetection, MIT), the default."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        path = model_path(YUNET_FILE)
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(path), "", (320, 320), config.score_threshold, config.nms_threshold, 5000
            )
        except cv2.error as exc:
            raise ModelError(f"cannot load YuNet model {path}: {exc.err}") from None
        self._input_size: tuple[int, int] = (320, 320)

    def detect_counting(
        self, small_bgr: np.ndarray, scale: float, full_shape: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = (small_bgr.shape[1], small_bgr.shape[0])
        if size != self._input_size:
            self._net.setInputSize(size)
            self._input_size = size
        _, faces = self._net.detect(small_bgr)
        if faces is None or len(faces) == 0:
            return _no_faces()
        return _to_full_resolution(
            faces[:, :4], faces[:, 14], scale, full_shape, self.config.min_face
        )


class HaarDetector(_ScalingDetector):
    """The classic Viola-Jones frontal-face cascade (the seeds' detector).

    Its score is the cascade's final-stage weight, which is not a probability;
    it is kept for ranking only and no score threshold is applied.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        path = model_path(HAAR_FILE)
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ModelError(f"cannot load Haar cascade {path}")

    def detect_counting(
        self, small_bgr: np.ndarray, scale: float, full_shape: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        gray = cv2.equalizeHist(cv2.cvtColor(small_bgr, cv2.COLOR_BGR2GRAY))
        min_side = max(1, int(self.config.min_face * scale))
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=1.1,
            minNeighbors=5,
            minSize=(min_side, min_side),
            outputRejectLevels=True,
        )
        if len(boxes) == 0:
            return _no_faces()
        scores = np.asarray(weights, dtype=np.float32).reshape(-1)
        return _to_full_resolution(
            np.asarray(boxes), scores, scale, full_shape, self.config.min_face
        )


def create_detector(config: DetectorConfig) -> FaceDetector:
    """Build the detector named in the config."""
    if config.name == "yunet":
        return YuNetDetector(config)
    if config.name == "haar":
        return HaarDetector(config)
    raise SettingsError(f"unknown detector {config.name!r}; choose one of {', '.join(DETECTORS)}")
