"""Hinton-style fully connected network, the classic pruning/distillation baseline."""

from __future__ import annotations

from typing import Sequence

from kerascomp.backend import keras
from kerascomp.errors import ModelError
from kerascomp.models import register

__all__ = ["mlp"]


@register("mlp")
def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] | int = (1200, 1200),
    dropout: float = 0.2,
) -> keras.Model:
    """Flatten, then ``Dense(relu)`` + ``Dropout`` per hidden layer, then float32 logits.

    The dropout layer is left out when ``dropout`` is 0 so that the model
    holds no layers that do nothing.
    """
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)  # `--model-arg hidden=64` is one layer
    if not hidden or not all(isinstance(u, int) and u > 0 for u in hidden):
        raise ModelError(f"mlp: hidden must be one or more positive integers, got {hidden}")
    if not 0 <= dropout < 1:
        raise ModelError(f"mlp: dropout must be in [0, 1), got {dropout}")

    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"block_{i}_dense")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"block_{i}_dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="mlp")
