"""Small VGG-style convolutional network for low-resolution images (digits, MNIST, CIFAR)."""

from __future__ import annotations

from typing import Sequence

from kerascomp.backend import keras
from kerascomp.errors import ModelError
from kerascomp.models import register

__all__ = ["cnn"]


@register("cnn")
def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    width: int = 32,
    depth: int = 2,
    dropout: float = 0.2,
) -> keras.Model:
    """``depth`` blocks of two conv-BN-ReLU layers, then global average pooling and logits.

    Block ``i`` has ``width * 2**i`` filters and ends in a 2x2 max pool while
    the feature map is still at least 2 pixels wide, so deep models also work
    on 8x8 inputs. Convolutions have no bias because batch norm follows them;
    batch norm uses momentum 0.9 because small datasets give few steps, and
    Keras' default 0.99 leaves the running statistics near their start values.
    All layers sit in one flat functional graph so tfmot can wrap each one.
    """
    if len(input_shape) != 3:
        raise ModelError(
            f"cnn: input_shape must be (height, width, channels), got {tuple(input_shape)}"
        )
    if width < 1 or depth < 1:
        raise ModelError(
            f"cnn: width and depth must be at least 1, got width={width}, depth={depth}"
        )
    if not 0 <= dropout < 1:
        raise ModelError(f"cnn: dropout must be in [0, 1), got {dropout}")

    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    size = min(input_shape[:2])
    for i in range(depth):
        for j in (1, 2):
            x = keras.layers.Conv2D(
                width * 2**i, 3, padding="same", use_bias=False, name=f"block_{i}_conv{j}"
            )(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"block_{i}_bn{j}")(x)
            x = keras.layers.ReLU(name=f"block_{i}_relu{j}")(x)
        if size >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"block_{i}_pool")(x)
            size //= 2
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="cnn")
