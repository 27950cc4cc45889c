"""The loss a model file was compiled with: fine-tuning a model as its author trained it.

A ``.keras`` file keeps the arguments it was compiled with
(:func:`kerascomp.saving.compile_config`). Inside :func:`compiled_as`, every
training run compiles with the file's regression losses (MAE, Huber,
log-cosh: whatever the author chose over the task's MSE) and the weights of
its outputs' losses. Cross-entropy stays the task's own, from logits:
kerascomp trains a classifier's logits (an imported Keras 3 model's softmax
is split off), where the file's loss may expect probabilities.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from typing import Iterator, Sequence

from kerascomp.backend import keras

__all__ = ["compiled_as", "own_loss", "describe"]

_OWN: contextvars.ContextVar[dict | None] = contextvars.ContextVar("compile_config", default=None)


@contextlib.contextmanager
def compiled_as(config: dict | None) -> Iterator[None]:
    """Every training run inside this block compiles with ``config``'s loss and loss weights where it can."""
    token = _OWN.set(config or None)
    try:
        yield
    finally:
        _OWN.reset(token)


def own_loss(task_loss, outputs: Sequence[str]) -> tuple[object, list[float] | None]:
    """The loss (one, or one per output in the order of ``outputs``) and loss weights to compile with: the
    file's own where :func:`compiled_as` gave them and kerascomp can rebuild them, else ``task_loss``."""
    config = _OWN.get() or {}
    several = len(outputs) > 1
    losses = list(task_loss) if several else [task_loss]
    if config.get("loss") is not None:
        losses = [_rebuilt(entry) or fallback for entry, fallback in zip(_per_output(config["loss"], outputs), losses)]
    weights = config.get("loss_weights")
    if isinstance(weights, dict):
        weights = [float(weights.get(name, 1.0)) for name in outputs]
    elif weights is not None:
        weights = [float(w) for w in (weights if isinstance(weights, list) else [weights])]
    return (losses if several else losses[0]), weights


def describe(config: dict) -> str:
    """What a file's compile config changes in fine-tuning, for the log: its losses and weights as stored."""
    parts = []
    if config.get("loss") is not None:
        parts.append(f"loss {_names(config['loss'])}")
    if config.get("loss_weights") is not None:
        parts.append(f"loss weights {config['loss_weights']}")
    return ", ".join(parts)


def _per_output(loss, outputs: Sequence[str]) -> list:
    if isinstance(loss, dict) and "class_name" not in loss:  # by output name
        return [loss.get(name) for name in outputs]
    if isinstance(loss, list):
        return loss
    return [loss] * len(outputs)


def _rebuilt(entry):
    """A tf_keras loss from one stored entry (a name, or a serialized built-in class); None for cross-entropy
    (the task's, from logits, stays) and for what tf_keras does not have (a custom loss)."""
    name = entry if isinstance(entry, str) else (entry or {}).get("class_name") if isinstance(entry, dict) else None
    if not name or "crossentropy" in name.replace("_", "").lower():
        return None
    if isinstance(entry, str):
        try:
            return keras.losses.get(entry)
        except ValueError:
            return None
    cls = getattr(keras.losses, name, None)
    if not (isinstance(cls, type) and issubclass(cls, keras.losses.Loss)):
        return None
    accepted = inspect.signature(cls.__init__).parameters  # Keras 3 stores arguments tf_keras lacks (dtype)
    return cls(**{k: v for k, v in (entry.get("config") or {}).items() if k in accepted})


def _names(loss) -> str:
    if isinstance(loss, dict) and "class_name" not in loss:
        return "{" + ", ".join(f"{k}: {_names(v)}" for k, v in loss.items()) + "}"
    if isinstance(loss, list):
        return "[" + ", ".join(_names(v) for v in loss) + "]"
    return loss if isinstance(loss, str) else str((loss or {}).get("class_name"))
