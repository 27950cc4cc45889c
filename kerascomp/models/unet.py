"""A small U-Net: an encoder-decoder with skip connections that predicts a class per pixel."""

from __future__ import annotations

from typing import Sequence

from kerascomp.backend import keras
from kerascomp.errors import ModelError
from kerascomp.models import register

__all__ = ["unet"]


@register("unet")
def unet(input_shape: Sequence[int], num_classes: int, width: int = 16, depth: int = 2) -> keras.Model:
    """``depth`` conv blocks that halve the image, a bottleneck block, and as many that double it back, each
    joined to the encoder block of its size; a 1x1 convolution gives per-pixel logits ``(H, W, classes)``.

    Every block is two conv-BN-ReLU layers (width doubling per level). The
    decoder upsamples by nearest neighbour rather than a transposed
    convolution: both are TFLite builtins, but nearest neighbour adds no
    weights and quantizes exactly. The image sides must divide by
    ``2**depth``. Batch norm uses momentum 0.9, as in :func:`cnn`, for the
    few steps of small data.
    """
    if len(input_shape) != 3:
        raise ModelError(f"unet: input_shape must be (height, width, channels), got {tuple(input_shape)}")
    if width < 1 or depth < 1:
        raise ModelError(f"unet: width and depth must be at least 1, got width={width}, depth={depth}")
    if any(side % 2 ** depth for side in input_shape[:2]):
        raise ModelError(f"unet: depth {depth} halves the image {depth} times, so its sides must divide by "
                         f"{2 ** depth}; got {input_shape[0]}x{input_shape[1]}")

    def block(x, filters: int, name: str):
        for j in (1, 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{j}")(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{j}")(x)
            x = keras.layers.ReLU(name=f"{name}_relu{j}")(x)
        return x

    inputs = keras.Input(shape=input_shape, name="input")
    x, skips = inputs, []
    for i in range(depth):
        x = block(x, width * 2 ** i, f"down_{i}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"down_{i}_pool")(x)
    x = block(x, width * 2 ** depth, "bottleneck")
    for i in reversed(range(depth)):
        x = keras.layers.UpSampling2D(2, name=f"up_{i}_upsample")(x)
        x = keras.layers.Concatenate(name=f"up_{i}_concat")([x, skips[i]])
        x = block(x, width * 2 ** i, f"up_{i}")
    outputs = keras.layers.Conv2D(num_classes, 1, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="unet")
