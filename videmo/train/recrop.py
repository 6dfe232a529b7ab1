"""Training faces framed by the detector: cut the way ``videmo run`` cuts a face from video.

FER2013's faces were framed by FER2013's own tool. At inference the frame is
cut around *YuNet's* box with the calibrated ``CropGeometry``, and the two
framings differ face by face (the 90th percentile of the side's error is about
a quarter of the box), which costs about two points through the video path.
Training on faces that went through the same detector and the same
``crop.face_crop`` removes that difference by construction: each Training face
is upscaled into a real frame, found by the detector, and cut from the frame
exactly as a video face is. Faces the detector misses keep their own framing.

Where the cut square reaches past the 48x48 image, a video face would show more
of the head; a pasted face would show an unrelated background. The square is
therefore cut from the upscaled face with its edge pixels repeated outwards, as
``crop.crop_square`` does at a frame's edge, not from the pasted frame.
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np

from videmo.crop import face_crop, resize_face
from videmo.detect import DetectorConfig, create_detector
from videmo.evaluation.pasted import (
    PastedFace,
    background_frames,
    by_scene,
    nearest_detection,
    plan_scenes,
    render_scene,
    upscaled,
)
from videmo.outputs.atomic import write_bytes_atomic
from videmo.spec import CropGeometry, ModelSpec


def detector_framed(
    images: np.ndarray,
    spec: ModelSpec,
    detector: str,
    background: Path,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Every face of ``images`` (N, 48, 48) cut as the pipeline would, at the model's input size.

    Returns ``(faces, found)``: faces (N, S, S) uint8 and a mask of the faces the
    detector found (the others are the original image, resized).
    """
    finder = create_detector(DetectorConfig(name=detector))
    geometry = spec.crop_for(detector)
    backgrounds = background_frames(background, 24)
    faces = np.stack([resize_face(image, spec.input_size) for image in images])
    found = np.zeros(len(images), bool)
    scenes = by_scene(plan_scenes(np.zeros(len(images), int), seed))
    cut = 0
    for scene, placed in scenes.items():
        frame = render_scene(backgrounds[scene % len(backgrounds)], placed, images)
        boxes, _ = finder.detect(frame)
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        for face in placed:
            best = nearest_detection(face, centres)
            if best is not None:
                faces[face.item] = _cut(images[face.item], face, boxes[best], geometry, spec)
                found[face.item] = True
        before, cut = cut, cut + len(placed)
        if before // 4000 != cut // 4000:
            print(f"framing faces by {detector}: {cut}/{len(images)}", file=sys.stderr)
    return faces, found


def _cut(
    image: np.ndarray, face: PastedFace, box: np.ndarray, geometry: CropGeometry, spec: ModelSpec
) -> np.ndarray:
    """``face_crop`` of the detector's box, on the upscaled face alone (edges repeated)."""
    patch = upscaled(image, face.side)
    local = np.asarray(box, np.float64) - np.array([face.x, face.y, 0.0, 0.0])
    return face_crop(patch, local, geometry, spec)


def cached_detector_framed(
    images: np.ndarray,
    spec: ModelSpec,
    detector: str,
    background: Path,
    seed: int,
    cache_dir: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """``detector_framed``, kept in ``cache_dir`` so a resumed run does not cut them again."""
    key = hashlib.sha256(images.tobytes())
    key.update(f"{spec.input_size}|{spec.crop_for(detector)}|{detector}|{seed}".encode())
    key.update(Path(background).name.encode())
    cache = cache_dir / f"framed-{detector}-{key.hexdigest()[:16]}.npz"
    if cache.exists():
        with np.load(cache) as stored:
            return stored["faces"], stored["found"]
    faces, found = detector_framed(images, spec, detector, background, seed)
    buffer = io.BytesIO()
    np.savez(buffer, faces=faces, found=found)
    write_bytes_atomic(cache, buffer.getvalue())
    print(
        f"framed {found.sum()}/{len(found)} training faces by {detector} ({cache.name})",
        file=sys.stderr,
    )
    return faces, found
