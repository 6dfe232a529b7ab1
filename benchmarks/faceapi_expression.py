"""Rebuild face-api's expression net as a Keras model, to measure it through videmo's path.

face-api (``@vladmandic/face-api`` on npm, MIT) ships a small 7-class expression net
(``model/face_expression_model.bin``: 112×112 RGB input, four densely connected blocks of
depthwise-separable convolutions). Its authors trained it on public datasets and images
from the web, not on FER2013 alone, so it is a second opinion from other data at about the
same size. This script reads the tfjs weights (uint8-quantised tensors are dequantised as
``q * scale + min``), builds the same graph in tf_keras and saves it with the classes in
FER2013's order. The graph takes videmo's gray crop (``uint8 / 255``) and repeats it into
the net's three channels minus its RGB mean with one fixed 1×1 convolution.

    npm pack @vladmandic/face-api@1.7.15 && tar xzf vladmandic-face-api-1.7.15.tgz
    python benchmarks/faceapi_expression.py package/model faceapi.h5
    videmo import-keras --mean 0 --std 1 --flip-tta faceapi.h5 faceapi.onnx
    videmo evaluate-clips L/crema-d L/ravdess L/mead --model faceapi.onnx

The crop keeps videmo's calibrated framing unless the ONNX spec is restamped
(``videmo.train.export.restamp_spec``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

#: face-api's class order (FACE_EXPRESSION_LABELS in its source).
FACEAPI_CLASSES = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
#: For each FER2013 class in videmo's order, its index in face-api's output.
TO_FER2013 = [3, 5, 4, 1, 2, 6, 0]
#: The RGB mean face-api subtracts before dividing by 255 (FaceFeatureExtractor.ts).
MEAN_RGB = np.array([122.782, 117.001, 104.298], np.float32)
INPUT_SIZE = 112


def read_tfjs_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of ``face_expression_model.bin``, dequantised, by its manifest name."""
    manifest = json.loads((model_dir / "face_expression_model-weights_manifest.json").read_text())
    blob = (model_dir / "face_expression_model.bin").read_bytes()
    weights: dict[str, np.ndarray] = {}
    offset = 0
    for group in manifest:
        for entry in group["weights"]:
            count = int(np.prod(entry["shape"]))
            quant = entry.get("quantization")
            if quant:
                raw = np.frombuffer(blob, np.uint8, count, offset).astype(np.float32)
                values = raw * np.float32(quant["scale"]) + np.float32(quant["min"])
                offset += count
            else:
                values = np.frombuffer(blob, np.float32, count, offset).copy()
                offset += 4 * count
            weights[entry["name"]] = values.reshape(entry["shape"])
    if offset != len(blob):
        raise ValueError(f"manifest covers {offset} of {len(blob)} bytes")
    return weights


def build(weights: dict[str, np.ndarray]):  # noqa: ANN201 (a tf_keras Model)
    """face-api's FaceExpressionNet in tf_keras, gray uint8/255 in, FER2013-ordered softmax out."""
    import tf_keras as keras

    layers = keras.layers
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 1), name="input")
    to_rgb = layers.Conv2D(3, 1, name="gray_to_rgb_minus_mean")
    x = to_rgb(inputs)
    to_rgb.set_weights([np.ones((1, 1, 1, 3), np.float32), -MEAN_RGB / 255])

    def separable(x, name: str, stride: int):  # noqa: ANN001, ANN202
        pointwise = weights[f"{name}/pointwise_filter"]
        layer = layers.SeparableConv2D(
            pointwise.shape[-1], 3, strides=stride, padding="same", name=name.replace("/", "_")
        )
        y = layer(x)
        layer.set_weights([weights[f"{name}/depthwise_filter"], pointwise, weights[f"{name}/bias"]])
        return y

    def dense_block(x, block: str, first: bool):  # noqa: ANN001, ANN202 (denseBlock4)
        if first:
            conv = layers.Conv2D(32, 3, strides=2, padding="same", name=f"{block}_conv0")
            out1 = conv(x)
            conv.set_weights([weights[f"{block}/conv0/filters"], weights[f"{block}/conv0/bias"]])
        else:
            out1 = separable(x, f"{block}/conv0", 2)
        outs = [layers.ReLU()(out1)]
        for i in (1, 2, 3):
            joined = outs[0] if len(outs) == 1 else layers.Add()(outs)
            inp = joined if i == 1 else layers.ReLU()(joined)
            outs.append(separable(inp, f"{block}/conv{i}", 1))
        return layers.ReLU()(layers.Add()(outs))

    for i in range(4):
        x = dense_block(x, f"dense{i}", first=i == 0)
    x = layers.AveragePooling2D(7, strides=2, padding="valid")(x)
    x = layers.Flatten()(x)
    fc = layers.Dense(len(TO_FER2013), name="fc")
    x = fc(x)
    fc.set_weights([weights["fc/weights"][:, TO_FER2013], weights["fc/bias"][TO_FER2013]])
    return keras.Model(inputs, layers.Softmax(name="probs")(x), name="faceapi_expression")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="face-api's model/ folder")
    parser.add_argument("out", help="where to save the Keras model (.h5)")
    args = parser.parse_args()
    model = build(read_tfjs_weights(args.model_dir))
    model.save(args.out)
    print(f"wrote {args.out} ({model.count_params()} parameters)")


if __name__ == "__main__":
    main()
