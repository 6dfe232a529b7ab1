"""Does a lowered head read *sad*? Each face's per-frame label against its head pitch.

Runs ``videmo.analyze`` (the code of ``videmo run``, serial, default settings) on
a clip, then runs YuNet on every ``--every``-th frame for its five landmarks and
matches each detection to the timeline row of that frame (box overlap >= 0.5).
The pitch proxy is how far down the nose tip sits between the eye line and the
mouth line (about 0.55 for a face looking at the camera; larger when the head
is bent down). Only roughly frontal detections are kept (nose between the eyes,
mouth below them), and within each face frames above and below that face's own
median pitch are compared, so one person's face shape is compared only with
itself. Measured, not used by videmo: the timeline has no landmarks.

    python benchmarks/head_pitch.py ../shared/data/videos/multi_face/petercunha_dinner.mp4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

import videmo
from videmo.models import YUNET_FILE, model_path
from videmo.track import iou_matrix
from videmo.video import read_frames

#: Least overlap between a landmark detection and a timeline box to be that face.
MATCH_IOU = 0.5
#: Detections kept as roughly frontal: nose within this share of the eye distance of the
#: eyes' midpoint (sideways), and eye-to-mouth drop within this range of the eye distance.
MAX_YAW = 0.5
DROP_RANGE = (0.8, 2.0)


def pose_of(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, drop) from YuNet's five points (right eye, left eye, nose, mouth corners).

    Measured in the eye line's own frame, so head roll does not enter.
    """
    right_eye, left_eye, nose, mouth_r, mouth_l = landmarks.reshape(5, 2)
    eyes, mouth = (right_eye + left_eye) / 2, (mouth_r + mouth_l) / 2
    across = left_eye - right_eye
    eye_distance = float(np.linalg.norm(across)) or 1e-6
    across = across / eye_distance
    down = np.array([-across[1], across[0]])
    mouth_drop = float((mouth - eyes) @ down) or 1e-6
    pitch = float((nose - eyes) @ down) / mouth_drop
    yaw = float((nose - eyes) @ across) / eye_distance
    return pitch, yaw, mouth_drop / eye_distance


def landmark_poses(video: Path, every: int) -> pd.DataFrame:
    """One row per YuNet detection on every ``every``-th frame: frame, box, pose."""
    net, rows = None, []
    for frame in read_frames(video, every=every):
        image = frame.image
        if net is None:
            size = (image.shape[1], image.shape[0])
            net = cv2.FaceDetectorYN.create(str(model_path(YUNET_FILE)), "", size, 0.6, 0.3)
        _, faces = net.detect(image)
        for face in faces if faces is not None else []:
            rows.append((frame.index, *face[:4], *pose_of(face[4:14])))
    return pd.DataFrame(rows, columns=["frame", "x", "y", "w", "h", "pitch", "yaw", "drop"])


def with_labels(poses: pd.DataFrame, timeline: pd.DataFrame) -> pd.DataFrame:
    """``poses`` with the face id and per-frame label of the timeline row each one matches."""
    ids, labels = [], []
    by_frame = dict(tuple(timeline.groupby("frame")))
    for pose in poses.itertuples():
        rows = by_frame.get(pose.frame)
        box = np.array([[pose.x, pose.y, pose.w, pose.h]], np.float64)
        overlap = (
            iou_matrix(rows[["x", "y", "w", "h"]].to_numpy(np.float64), box)[:, 0]
            if rows is not None
            else np.zeros(0)
        )
        hit = int(overlap.argmax()) if len(overlap) and overlap.max() >= MATCH_IOU else None
        ids.append(-1 if hit is None else int(rows["face_id"].iloc[hit]))
        labels.append("" if hit is None else str(rows["emotion"].iloc[hit]))
    return poses.assign(face_id=ids, emotion=labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--every", type=int, default=5, help="landmarks on every N-th frame")
    parser.add_argument("--min-frames", type=int, default=15, help="faces with fewer are left out")
    args = parser.parse_args()
    timeline = videmo.analyze(args.video, workers=0).timeline
    poses = with_labels(landmark_poses(args.video, args.every), timeline)
    frontal = poses[
        (poses["face_id"] >= 0)
        & (poses["yaw"].abs() < MAX_YAW)
        & poses["drop"].between(*DROP_RANGE)
    ]
    print("face  frames  median pitch   sad: lower / higher pitch   happy: lower / higher")
    for face_id, face in frontal.groupby("face_id"):
        if len(face) < args.min_frames:
            continue
        median = face["pitch"].median()
        low, high = face[face["pitch"] <= median], face[face["pitch"] > median]
        share = {
            name: ((low["emotion"] == name).mean(), (high["emotion"] == name).mean())
            for name in ("sad", "happy")
        }
        print(f"{face_id:4d}  {len(face):6d}  {median:12.2f}   "
              f"{share['sad'][0]:11.0%} / {share['sad'][1]:<11.0%}   "
              f"{share['happy'][0]:5.0%} / {share['happy'][1]:.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
