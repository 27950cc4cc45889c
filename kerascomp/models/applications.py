"""ImageNet architectures from ``keras.applications`` with a fresh classifier head.

The zoo's data is scaled to [0, 1], so a ``Rescaling`` layer maps it to the
range each application was trained on; that keeps ``weights="imagenet"``
usable. The application is built on our input tensor (``input_tensor=``)
rather than called as a sub-model, so the result is one flat functional model
that tfmot can wrap layer by layer.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from kerascomp.backend import keras
from kerascomp.errors import ModelError
from kerascomp.models import register

__all__ = ["mobilenet_v2", "efficientnet_b0"]

# keras.applications refuses smaller inputs.
MIN_SIZE = 32


@register("mobilenet_v2")
def mobilenet_v2(
    input_shape: Sequence[int],
    num_classes: int,
    alpha: float = 1.0,
    weights: Optional[str] = None,
    input_size: Optional[int] = None,
) -> keras.Model:
    """MobileNetV2 (expects [-1, 1]); ``input_size`` resizes small images up first."""
    return _application(
        "mobilenet_v2",
        keras.applications.MobileNetV2,
        input_shape,
        num_classes,
        weights,
        input_size,
        keras.layers.Rescaling(2.0, offset=-1.0, name="rescale"),
        alpha=alpha,
    )


@register("efficientnet_b0")
def efficientnet_b0(
    input_shape: Sequence[int],
    num_classes: int,
    weights: Optional[str] = None,
    input_size: Optional[int] = None,
) -> keras.Model:
    """EfficientNet-B0 (expects [0, 255], normalizes internally); ``input_size`` as above."""
    return _application(
        "efficientnet_b0",
        keras.applications.EfficientNetB0,
        input_shape,
        num_classes,
        weights,
        input_size,
        keras.layers.Rescaling(255.0, name="rescale"),
    )


def _application(
    name: str,
    application: Callable[..., keras.Model],
    input_shape: Sequence[int],
    num_classes: int,
    weights: Optional[str],
    input_size: Optional[int],
    rescale: keras.layers.Layer,
    **kwargs: object,
) -> keras.Model:
    if len(input_shape) != 3:
        raise ModelError(
            f"{name}: input_shape must be (height, width, channels), got {tuple(input_shape)}"
        )
    if weights not in (None, "imagenet"):
        raise ModelError(f"{name}: weights must be None or 'imagenet', got {weights!r}")
    if weights == "imagenet" and input_shape[-1] != 3:
        raise ModelError(f"{name}: imagenet weights need 3 input channels, got {input_shape[-1]}")
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int)):
        raise ModelError(f"{name}: input_size must be an integer, got {input_size!r}")
    size = input_size if input_size is not None else min(input_shape[:2])
    if size < MIN_SIZE:
        hint = "" if input_size is not None else f"; pass input_size={MIN_SIZE} or more to resize"
        raise ModelError(f"{name}: input size {size} is below the minimum {MIN_SIZE}{hint}")

    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    if input_size is not None:
        x = keras.layers.Resizing(input_size, input_size, name="resize")(x)
    x = rescale(x)
    try:
        base = application(
            include_top=False, weights=weights, input_tensor=x, pooling="avg", **kwargs
        )
    except ValueError as error:  # keras rejects e.g. an alpha without imagenet weights
        raise ModelError(f"{name}: {error}") from error
    except Exception as error:  # keras.utils.get_file raises a bare Exception when offline
        if weights != "imagenet":
            raise
        raise ModelError(
            f"{name}: could not download imagenet weights: {error} (offline?)"
        ) from error
    outputs = keras.layers.Dense(num_classes, name="logits", dtype="float32")(base.output)
    return keras.Model(inputs, outputs, name=name)
