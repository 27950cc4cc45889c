"""Model zoo: a registry of Keras model builders, looked up by name.

Every builder has the signature ``builder(input_shape, num_classes, **kwargs)``
and returns a flat functional ``keras.Model`` (no nested models, no Lambda
layers) whose last layer is a float32 ``Dense`` named ``logits``. Flat models
are what tfmot pruning and quantization-aware training can wrap, and the
absence of Lambda layers keeps ``.keras`` files loadable with
``safe_mode=True``. Keyword arguments are checked against the builder's
signature up front, so a typo in a config is a clear error rather than a
``TypeError`` deep inside Keras.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

from kerascomp.backend import keras
from kerascomp.errors import ModelError

__all__ = ["Builder", "register", "build", "available", "get", "check_args"]

Builder = Callable[..., "keras.Model"]

# The first two parameters of every builder; the rest are model arguments.
_POSITIONAL = ("input_shape", "num_classes")

_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator that adds a builder to the zoo under ``name``."""

    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        params = tuple(inspect.signature(builder).parameters)
        if params[:2] != _POSITIONAL:
            raise ValueError(
                f"builder for {name!r} must start with (input_shape, num_classes), got {params}"
            )
        _REGISTRY[name] = builder
        return builder

    return decorator


def get(name: str) -> Builder:
    """The builder registered as ``name``; ModelError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ModelError(f"unknown model {name!r}; known models: {known}") from None


def available() -> dict[str, dict[str, object]]:
    """Every model name mapped to its arguments and their defaults."""
    return {name: _arguments(builder) for name, builder in sorted(_REGISTRY.items())}


def build(name: str, input_shape: Sequence[int], num_classes: int | dict[str, int], **kwargs: object) -> keras.Model:
    """Build model ``name`` for inputs of ``input_shape`` (no batch axis) and ``num_classes``.

    ``num_classes`` as a dict (output name: units) builds one dense output
    per entry on the features the model's logits read: a model with several
    outputs, e.g. a class and a position from one backbone.
    """
    builder = check_args(name, kwargs)
    input_shape = tuple(input_shape)
    if not input_shape or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ModelError(f"input_shape must be positive integers, got {input_shape}")
    heads = num_classes if isinstance(num_classes, dict) else {"logits": num_classes}
    for units in heads.values():
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ModelError(f"num_classes must be a positive integer, got {units!r}")
    model = builder(input_shape, next(iter(heads.values())), **kwargs)
    return model if not isinstance(num_classes, dict) else _with_heads(model, heads)


def _with_heads(model: keras.Model, heads: dict[str, int]) -> keras.Model:
    """``model`` with its ``logits`` layer replaced by one float32 dense output per head, on the same features."""
    logits = model.get_layer("logits")
    if not isinstance(logits, keras.layers.Dense):
        raise ModelError(f"model {model.name!r} ends in a {type(logits).__name__}, not a dense layer: it cannot "
                         f"take several outputs ({', '.join(heads)})")
    features = logits.input
    outputs = [keras.layers.Dense(units, name=name, dtype="float32")(features) for name, units in heads.items()]
    return keras.Model(model.inputs, outputs, name=model.name)


def check_args(name: str, kwargs: dict) -> Builder:
    """The builder of ``name`` after checking ``kwargs`` are its arguments: typos fail before data loads."""
    builder = get(name)
    known = _arguments(builder)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ModelError(
            f"unknown argument(s) {', '.join(unknown)} for model {name!r}; "
            f"known arguments: {', '.join(known) or 'none'}"
        )
    return builder


def _arguments(builder: Builder) -> dict[str, object]:
    params = list(inspect.signature(builder).parameters.values())[len(_POSITIONAL) :]
    return {p.name: p.default for p in params}


# Imported last: the submodules use ``register`` from this module.
from kerascomp.models import applications, cnn, mlp, unet, vit  # noqa: E402, F401
