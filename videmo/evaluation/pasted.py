"""Accuracy through the video path: labeled faces pasted into real frames, run as a user's video.

FER2013 faces (with their labels) are upscaled to 80-300 px and pasted at
random places into frames of a real video, each held for several frames; the
frames are H.264-encoded into an ordinary mp4. That file then goes through
``videmo.analyze``, the same decode -> detect -> crop -> classify -> track code
as ``videmo run``. Each pasted face is looked up in the timeline by frame and
box overlap, and its prediction is the dominant class of its mean raw
probabilities. The same faces fed straight to the model give the *direct*
accuracy: the gap between the two is what the video path costs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

from videmo.spec import EMOTIONS
from videmo.track import iou_matrix
from videmo.video import read_frames

#: Frame size of the synthetic video (the issue's 640x360: no detector downscaling).
FRAME_SIZE: tuple[int, int] = (640, 360)
#: Pasted face sides in pixels (inclusive range).
FACE_SIDES: tuple[int, int] = (80, 300)
#: Frames each scene is held for, and the frame rate of the synthetic video.
HOLD_FRAMES = 6
FPS = 10
#: Minimum overlap between a detection and a pasted face for the detection to be that face.
MATCH_IOU = 0.3


@dataclass(frozen=True)
class PastedFace:
    """One labeled face placed in one scene (a run of ``HOLD_FRAMES`` identical frames)."""

    item: int  # index into the images/labels given to ``plan_scenes``
    label: int
    scene: int
    x: int
    y: int
    side: int


def plan_scenes(
    labels: np.ndarray,
    seed: int,
    faces_per_scene: int = 2,
    frame_size: tuple[int, int] = FRAME_SIZE,
    sides: tuple[int, int] = FACE_SIDES,
) -> list[PastedFace]:
    """Place every face, ``faces_per_scene`` per scene at random non-overlapping spots."""
    rng = np.random.default_rng(seed)
    width, height = frame_size
    plan: list[PastedFace] = []
    scene, taken = 0, []
    for item, label in enumerate(labels):
        for _attempt in range(50):
            side = int(rng.integers(sides[0], min(sides[1], height) + 1))
            x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            box = (x, y, x + side, y + side)
            if not any(_overlap(box, other) for other in taken):
                break
        else:  # no room left in this scene: start the next one
            scene, taken = scene + 1, []
        taken.append(box)
        plan.append(PastedFace(item, int(label), scene, x, y, side))
        if len(taken) == faces_per_scene:
            scene, taken = scene + 1, []
    return plan


def by_scene(plan: Sequence[PastedFace]) -> dict[int, list[PastedFace]]:
    """The planned faces grouped by scene, scenes in order."""
    scenes: dict[int, list[PastedFace]] = {}
    for face in plan:
        scenes.setdefault(face.scene, []).append(face)
    return scenes


def nearest_detection(face: PastedFace, centres: np.ndarray) -> int | None:
    """The detection (by box centre) nearest the pasted square's centre, if within half its side."""
    if not len(centres):
        return None
    distance = np.hypot(*(centres - (np.array([face.x, face.y]) + face.side / 2)).T)
    best = int(distance.argmin())
    return best if distance[best] <= face.side / 2 else None


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def background_frames(video: Path, count: int, frame_size: tuple[int, int] = FRAME_SIZE) -> list:
    """``count`` frames spread over a real video, resized to ``frame_size``."""
    frames = [f.image for f in read_frames(video)]
    picks = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).astype(int)
    return [cv2.resize(frames[i], frame_size, interpolation=cv2.INTER_AREA) for i in picks]


def upscaled(image: np.ndarray, side: int) -> np.ndarray:
    """A 48x48 face scaled up (bicubic) to the ``side`` it is pasted at."""
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)


def render_scene(background: np.ndarray, faces: Sequence[PastedFace], images: np.ndarray):
    """A copy of ``background`` with each face upscaled (bicubic) into its square."""
    frame = background.copy()
    for face in faces:
        patch = upscaled(images[face.item], face.side)
        frame[face.y : face.y + face.side, face.x : face.x + face.side] = patch[..., None]
    return frame


def pasted_scenes(
    images: np.ndarray, labels: np.ndarray, seed: int, faces_per_scene: int, background: Path
) -> Iterator[tuple[np.ndarray, list[PastedFace]]]:
    """Each planned scene as a still frame (no H.264) with the faces pasted into it: what the
    crop benchmarks run the detector on."""
    backgrounds = background_frames(background, 24)
    for scene, faces in by_scene(plan_scenes(labels, seed, faces_per_scene)).items():
        yield render_scene(backgrounds[scene % len(backgrounds)], faces, images), faces


def write_pasted_video(
    path: Path,
    plan: Sequence[PastedFace],
    images: np.ndarray,
    backgrounds: Sequence[np.ndarray],
    hold_frames: int = HOLD_FRAMES,
    fps: int = FPS,
) -> int:
    """Encode the planned scenes as an H.264 mp4 (CRF 23, yuv420p); returns the frame count."""
    scenes = by_scene(plan)
    height, width = backgrounds[0].shape[:2]
    frames = 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps), options={"crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for scene in range(max(scenes) + 1 if scenes else 0):
            background = backgrounds[scene % len(backgrounds)]
            image = render_scene(background, scenes.get(scene, []), images)
            for _ in range(hold_frames):
                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                frame.pts = frames
                container.mux(stream.encode(frame))
                frames += 1
        container.mux(stream.encode(None))
    return frames


def score_faces(
    timeline: pd.DataFrame, plan: Sequence[PastedFace], hold_frames: int = HOLD_FRAMES
) -> pd.DataFrame:
    """One row per pasted face: found or not, predicted class, and the label.

    A face is *found* when some timeline row of its scene's frames overlaps its
    square by ``MATCH_IOU``; its prediction is the argmax of the mean raw
    probabilities of those rows (-1 when not found).
    """
    prob_cols = [f"prob_{name}" for name in EMOTIONS]
    scene_of_row = timeline["frame"].to_numpy() // hold_frames
    boxes = timeline[["x", "y", "w", "h"]].to_numpy(np.float64)
    probs = timeline[prob_cols].to_numpy(np.float64)
    rows = []
    for face in plan:
        in_scene = np.flatnonzero(scene_of_row == face.scene)
        square = np.array([[face.x, face.y, face.side, face.side]], np.float64)
        hits = in_scene[iou_matrix(boxes[in_scene], square)[:, 0] >= MATCH_IOU]
        predicted = int(probs[hits].mean(axis=0).argmax()) if len(hits) else -1
        rows.append((face.item, face.label, face.side, len(hits) > 0, len(hits), predicted))
    return pd.DataFrame(rows, columns=["item", "label", "side", "found", "rows", "predicted"])


@dataclass(frozen=True)
class PathAccuracy:
    """The summary the benchmark prints and the test asserts on."""

    faces: int
    coverage: float  # share of pasted faces found by the detector (and confirmed by the tracker)
    path_accuracy: float  # through the video path, on the faces found
    direct_accuracy: float  # the model on the same (found) faces' 48x48 images
    direct_accuracy_all: float  # the model on all pasted faces' 48x48 images

    @property
    def gap(self) -> float:
        """Points lost between direct and through-the-path accuracy (positive: lost)."""
        return self.direct_accuracy - self.path_accuracy


def summarize(scored: pd.DataFrame, direct_predicted: np.ndarray) -> PathAccuracy:
    """Coverage and both accuracies from ``score_faces`` and the direct predictions."""
    found = scored["found"].to_numpy()
    labels = scored["label"].to_numpy()
    direct_right = direct_predicted[scored["item"].to_numpy()] == labels
    path_right = scored["predicted"].to_numpy() == labels
    return PathAccuracy(
        faces=len(scored),
        coverage=float(found.mean()),
        path_accuracy=float(path_right[found].mean()) if found.any() else 0.0,
        direct_accuracy=float(direct_right[found].mean()) if found.any() else 0.0,
        direct_accuracy_all=float(direct_right.mean()),
    )


def evaluate_path(
    images: np.ndarray,
    labels: np.ndarray,
    background_video: Path,
    work_dir: Path,
    *,
    seed: int = 0,
    model: str | None = None,
    detector: str = "yunet",
    n_backgrounds: int = 24,
    **settings: object,
) -> tuple[PathAccuracy, pd.DataFrame]:
    """Paste, encode, run ``videmo.analyze`` on the mp4, and score every face.

    ``work_dir`` receives ``pasted.mp4`` (kept, so a person can look at it). Other
    ``settings`` (e.g. ``detect_every=1``) go to ``analyze`` as they would to ``videmo run``.
    """
    from videmo.api import analyze
    from videmo.emotion import EmotionModel

    plan = plan_scenes(labels, seed)
    backgrounds = background_frames(background_video, n_backgrounds)
    work_dir.mkdir(parents=True, exist_ok=True)
    video = work_dir / "pasted.mp4"
    write_pasted_video(video, plan, images, backgrounds)
    result = analyze(video, model=model, detector=detector, workers=0, **settings)
    scored = score_faces(result.timeline, plan)
    direct = EmotionModel(model, device="cpu").predict(images).argmax(axis=1)
    return summarize(scored, direct), scored
