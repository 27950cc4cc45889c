"""A tf_keras functional config's layer graph, checked as JSON before tf_keras rebuilds it.

tf_keras rebuilds a functional model by calling each layer once the nodes it reads exist, re-queueing the
calls that must wait, until none is left; it never notices when nothing moves. A config whose graph cannot
complete (a node index no layer makes, a layer that reads itself through a cycle) keeps it re-queueing for
ever: measured, a fuzzed ``config.json`` with one node index changed to a large float hung ``load_model``
for over five minutes. The same walk done here on the JSON ends, and names the call that waits. (Keras 3
stops such a loop itself.)
"""

from __future__ import annotations

import math
import os
from typing import Iterator

from kerascomp.errors import ModelError

__all__ = ["check_graph", "dicts"]

_CONSTANT = "_CONSTANT_VALUE"  # tf_keras's name for a constant argument in place of a layer


def check_graph(path: str | os.PathLike, config: object) -> None:
    """Refuse a model config in which some functional model's layer calls can never all be made."""
    for functional in _functionals(config):
        stuck = _stuck(functional)
        if stuck:
            raise ModelError(f"cannot load {path}: the layer graph in its config cannot be built ({stuck})")


def dicts(node: object) -> Iterator[dict]:
    """Every dict in a JSON tree, ``node`` included: where a model config's layers and models sit."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from dicts(value)
    elif isinstance(node, list):
        for value in node:
            yield from dicts(value)


def _functionals(node: object) -> Iterator[dict]:
    """Every functional model's config inside ``node``: the model's own and its nested models'."""
    for entry in dicts(node):
        inner = entry.get("config")
        if isinstance(inner, dict) and isinstance(inner.get("layers"), list) and "output_layers" in inner:
            yield inner


def _stuck(config: dict) -> str | None:
    """Replay tf_keras's rebuild on the JSON: what waits for ever, or None when every call can be made."""
    layers = [layer for layer in config["layers"] if isinstance(layer, dict) and isinstance(layer.get("name"), str)]
    made = {layer.get("name"): int(layer.get("class_name") == "InputLayer") for layer in layers}
    waiting = {layer.get("name"): [[read for read in _reads(node) if read[0] in made]  # others: a KeyError
                                   for node in _listed(layer.get("inbound_nodes"))] for layer in layers}
    moved = True
    while moved:
        moved = False
        for name, calls in waiting.items():
            while calls and all(made.get(source, 0) > index for source, index in calls[0]):
                calls.pop(0)
                made[name] += 1
                moved = True
    for name, calls in waiting.items():
        if calls:
            source, index = next((s, i) for s, i in calls[0] if made.get(s, 0) <= i)
            return f"layer {name!r} reads {_node(index)} of {source!r}, which is never made"
    for source, index in _reads(config.get("output_layers")):
        if source in made and made[source] <= index:
            return f"an output is {_node(index)} of {source!r}, which is never made"
    return None


def _listed(value: object) -> list:
    """A config's list, or none where the file holds something else there (tf_keras then raises)."""
    return value if isinstance(value, list) else []


def _node(index: float) -> str:
    return f"node {index}" if index != math.inf else "a node index that is no whole number from 0"


def _reads(node: object) -> Iterator[tuple[str, float]]:
    """The ``(layer, node index)`` pairs a node's data reads: ``[name, node, tensor]`` entries, with a fourth
    (keyword arguments) searched for more; an index that is not a whole number, or is negative, is one no
    layer makes (tf_keras looks it up and waits)."""
    if not isinstance(node, list):
        if isinstance(node, dict):
            for value in node.values():
                yield from _reads(value)
        return
    if len(node) in (3, 4) and isinstance(node[0], str):
        if node[0] != _CONSTANT:
            index = node[1]
            whole = isinstance(index, int) and not isinstance(index, bool) and index >= 0
            yield node[0], index if whole else math.inf
        if len(node) == 4:
            yield from _reads(node[3])
        return
    for value in node:
        yield from _reads(value)
