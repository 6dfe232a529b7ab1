"""mini-Xception (Arriaga, Ploeger & Valdenegro 2017) built with the Keras 2 API.

``tf_keras`` (Keras 2) is used rather than Keras 3 because tf2onnx converts
Keras 2 functional models through a plain ``tf.function`` reliably, while
Keras 3 models need extra wrapping and lose layer names.

The network: two 3x3 stem convolutions (8 filters), four residual modules of
depthwise-separable convolutions (16/32/64/128 filters, each halving the
resolution), a 3x3 conv to 7 channels, global average pooling and softmax.
About 58k parameters at ``width=1``. ``width`` multiplies every filter count.
"""

from __future__ import annotations

from typing import Any

import tf_keras as keras
from tf_keras import layers

from videmo.spec import ModelSpec

#: Filters of the four residual modules at width 1 (as in the paper).
MODULE_FILTERS: tuple[int, ...] = (16, 32, 64, 128)
STEM_FILTERS = 8


def build_mini_xception(
    spec: ModelSpec | None = None,
    width: float = 1.0,
    l2: float = 0.01,
    dropout: float = 0.0,
    separable_l2: float = 0.0,
) -> Any:
    """Build an uncompiled mini-Xception for ``spec`` (input size, classes, channels).

    ``l2`` regularises the two stem convolutions (0.01 as in the paper's code).
    ``separable_l2`` regularises the separable convolutions: 0 by default
    because the reference implementation passes ``kernel_regularizer`` to
    ``SeparableConv2D``, which Keras 2 silently ignores; regularising them at
    0.01 made the net underfit (about 55 % training accuracy after 56 epochs).
    ``dropout`` before the classifier conv is off by default (the paper has none).
    """
    spec = spec or ModelSpec()
    reg = keras.regularizers.l2(l2) if l2 > 0 else None
    sep_reg = keras.regularizers.l2(separable_l2) if separable_l2 > 0 else None
    inputs = keras.Input((spec.input_size, spec.input_size, spec.channels), name="input")

    x = inputs
    for _ in range(2):
        x = layers.Conv2D(_f(STEM_FILTERS, width), 3, kernel_regularizer=reg, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)

    for filters in MODULE_FILTERS:
        x = _residual_module(x, _f(filters, width), sep_reg)

    if dropout > 0:
        x = layers.Dropout(dropout)(x)
    x = layers.Conv2D(len(spec.classes), 3, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Activation("softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=f"mini_xception_w{width:g}")


def _residual_module(x: Any, filters: int, reg: Any) -> Any:
    """Two separable convs + max-pool, added to a strided 1x1 projection of the input."""
    residual = layers.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x)
    residual = layers.BatchNormalization()(residual)

    x = layers.Activation("relu")(_separable_bn(x, filters, reg))
    x = _separable_bn(x, filters, reg)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    return layers.add([x, residual])


def _separable_bn(x: Any, filters: int, reg: Any) -> Any:
    """3x3 depthwise-separable convolution (no bias) followed by batch normalisation."""
    x = layers.SeparableConv2D(
        filters, 3, padding="same", depthwise_regularizer=reg, pointwise_regularizer=reg,
        use_bias=False,
    )(x)  # fmt: skip
    return layers.BatchNormalization()(x)


def _f(filters: int, width: float) -> int:
    return max(1, int(round(filters * width)))
