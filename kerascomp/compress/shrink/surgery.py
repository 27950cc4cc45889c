"""Cut the removed channels out of a model: a plain, smaller Keras model with the kept weights, no masks.

The new model is built from the original's config with fewer filters and
units, and every weight axis that reads a group's channels keeps exactly the
group's kept indices (at their offsets behind a ``Concatenate``, once per
position behind a ``Flatten``). :func:`mask` is the check of the cut: the
original model with the removed channels zeroed where their consumers read
them computes what the shrunk model computes.
"""

from __future__ import annotations

import numpy as np

from kerascomp.backend import keras
from kerascomp.compress.shrink.graph import SIZE_KEY, WEIGHT_AXES, Graph
from kerascomp.errors import ModelError

__all__ = ["rebuild", "mask", "weight_role", "MASKED"]


MASKED = ("kernel", "pointwise_kernel", "query/kernel", "key/kernel", "value/kernel", "attention_output/kernel")


def weight_role(layer, weight) -> str:
    """``kernel``, ``gamma``, ``query/kernel``...: a variable's name inside its layer."""
    name = weight.name.rpartition(":")[0]
    prefix = layer.name + "/"
    return name[name.index(prefix) + len(prefix):] if prefix in name else name.rpartition("/")[2]


def rebuild(graph: Graph, kept: dict[int, np.ndarray]) -> keras.Model:
    """The model of ``graph`` with each shrunk group holding only ``kept[root]`` (sorted channel indices)."""
    # the zoo's layers register themselves for deserialization; defining them imports TensorFlow: on use
    import kerascomp.models.layers  # noqa: F401

    sizes = {root: len(indices) for root, indices in kept.items()}
    config = graph.model.get_config()
    for spec in config["layers"]:
        name, cfg = spec["name"], spec["config"]
        if spec["class_name"] in SIZE_KEY and name not in graph.unfollowed:
            made = graph.heads.get(name, graph.outputs[name])
            cfg[SIZE_KEY[spec["class_name"]]] = graph.width(made, sizes)
            for side in ("query", "value", "key"):  # attention records the shapes it was built for
                if cfg.get(f"{side}_shape"):
                    cfg[f"{side}_shape"] = [*cfg[f"{side}_shape"][:-1], graph.width(
                        graph.side(name, "in" if side == "query" else side), sizes)]
    shrunk = keras.Model.from_config(config)
    for layer in shrunk.layers:
        original = graph.model.get_layer(layer.name)
        values = [_slice(graph, original, weight, value, kept)
                  for weight, value in zip(original.weights, original.get_weights())]
        try:
            layer.set_weights(values)
        except ValueError as exc:
            raise ModelError(f"shrinking {layer.name}: the cut weights do not fit ({exc})") from None
    return shrunk


def mask(graph: Graph, kept: dict[int, np.ndarray]) -> keras.Model:
    """A copy of the original model whose consumers read zeros from every removed channel (for tests and checks)."""
    copy = keras.models.clone_model(graph.model)
    copy.set_weights(graph.model.get_weights())
    for layer in copy.layers:
        axes = WEIGHT_AXES.get(type(layer).__name__, {})
        inputs = graph.inputs.get(layer.name)
        if not axes or not inputs or layer.name in graph.unfollowed:
            continue
        values = []
        for weight, value in zip(layer.weights, layer.get_weights()):
            role = weight_role(layer, weight)
            for axis, side in axes.get(role, {}).items():
                if side != "out" and role in MASKED:
                    keep = np.zeros(value.shape[axis], bool)
                    keep[graph.indices(graph.side(layer.name, side), kept)] = True
                    shape = [1] * value.ndim
                    shape[axis] = -1
                    value = value * keep.reshape(shape)
            values.append(value)
        layer.set_weights(values)
    return copy


def _slice(graph: Graph, layer, weight, value: np.ndarray, kept: dict[int, np.ndarray]) -> np.ndarray:
    """``value`` with every axis that reads a group's channels cut to the kept ones."""
    if layer.name in graph.unfollowed:
        return value
    for axis, side in WEIGHT_AXES.get(type(layer).__name__, {}).get(weight_role(layer, weight), {}).items():
        value = np.take(value, graph.indices(graph.side(layer.name, side), kept), axis=axis)
    return value
