"""Find the blocks of a functional model, and re-run its graph with some blocks swapped.

A block is a set of layers with exactly one tensor coming in and one going out,
so that any replacement mapping the same input shape to the same output shape
can take its place. Blocks are found, in this order of preference, from

* a ``--blocks`` regular expression on layer names: the matched text (or its
  first group) names the block, so ``stage\\d+`` groups ``stage1_conv`` and
  ``stage1_bn`` into ``stage1``;
* the zoo's names: every ``block_<i>_...`` layer of ``mlp``, ``cnn`` and ``vit``;
* residual structure: an ``Add`` (or ``x + y``) together with every layer
  between it and the tensor its branches fork from (an attention unit directly followed by an MLP
  unit is merged into one transformer block).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Iterator, Sequence

from kerascomp.backend import keras, tf
from kerascomp.errors import ConfigError, ModelError

__all__ = ["Block", "Swap", "find_blocks", "replay", "model_flops", "compile_pattern", "is_add", "ZOO_PATTERN",
           "attention_types", "conv_types"]

ZOO_PATTERN = r"(block_\d+)_"


def attention_types() -> tuple[type, ...]:
    """The attention layers a block may hold: Keras' and the zoo's simplified one (functions, not constants:
    reading ``keras.layers`` imports TensorFlow, which importing this module must not)."""
    # defines Keras classes, so importing it imports TensorFlow: on use
    from kerascomp.models.layers import SimplifiedAttention

    return keras.layers.MultiHeadAttention, SimplifiedAttention


def conv_types() -> tuple[type, ...]:
    return keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D


def _norm_types() -> tuple[type, ...]:
    return keras.layers.LayerNormalization, keras.layers.BatchNormalization


@dataclasses.dataclass
class Block:
    """Layers that map one tensor (``input``) to one tensor (``output``) inside ``model``."""

    name: str
    layers: tuple[str, ...]  # in graph order; the last one produces ``output``
    input: object  # KerasTensor
    output: object  # KerasTensor
    kind: str | None  # "transformer", "conv", "dense" or None (no replacement known)
    params: int
    flops: int
    chain: bool  # each layer feeds the next, the first reads ``input``

    def members(self, model: keras.Model) -> list[keras.layers.Layer]:
        return [model.get_layer(name) for name in self.layers]

    @property
    def output_layer(self) -> str:
        return self.output._keras_history.layer.name

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "layers": list(self.layers), "params": self.params,
                "flops": self.flops, "input_shape": list(self.input.shape[1:]),
                "output_shape": list(self.output.shape[1:])}


@dataclasses.dataclass
class Swap:
    """Replace ``block`` by ``build(input_tensor) -> output_tensor`` when the graph is replayed."""

    block: Block
    build: Callable


def find_blocks(model: keras.Model, pattern: str | None = None) -> list[Block]:
    """The blocks of ``model`` in graph order; ModelError when there are none."""
    graph = _Graph(model)
    if pattern is not None:
        groups = graph.group_by(compile_pattern(pattern))
        if not groups:
            raise ModelError(f"--blocks {pattern!r} matches no layer name of model {model.name!r}")
    else:
        groups = graph.group_by(re.compile(ZOO_PATTERN)) or graph.residual_units()
    if not groups:
        raise ModelError(f"no blocks found in model {model.name!r}: it has no block_<i>_ layer names and no "
                         "residual connections; name its blocks with --blocks REGEX")
    blocks = [graph.block(name, layers) for name, layers in groups.items()]
    return sorted(blocks, key=lambda b: graph.position[b.output_layer])


def replay(model: keras.Model, inputs: Sequence, swaps: Sequence[Swap] = ()) -> tuple[list, dict[int, object]]:
    """Call ``model``'s layers again on ``inputs``, building each swapped block's replacement instead.

    Layers are reused, not copied, so a replayed model shares (frozen)
    weights with ``model``. Nodes whose inputs did not change are not called
    again. Returns the new outputs and the map ``id(old tensor) -> new tensor``.
    """
    tmap = {id(old): new for old, new in zip(model.inputs, inputs)}
    inside = {name: swap for swap in swaps for name in swap.block.layers}
    for node in _nodes(model):
        swap = inside.get(node.layer.name)
        if swap is not None:
            if node.layer.name == swap.block.output_layer:
                tmap[id(swap.block.output)] = swap.build(tmap.get(id(swap.block.input), swap.block.input))
            continue
        old = node.keras_inputs
        if all(tmap.get(id(t), t) is t for t in old):
            continue
        args, kwargs = tf.nest.map_structure(
            lambda v: tmap.get(id(v), v), (tuple(node.call_args), dict(node.call_kwargs)))
        outputs = node.layer(*args, **kwargs)
        for before, after in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
            tmap[id(before)] = after
    return [tmap.get(id(t), t) for t in model.outputs], tmap


def model_flops(model: keras.Model, layers: Sequence[str] | None = None) -> int:
    """Estimated floating-point operations (2 per multiply-add) of one example through ``model``.

    Counts the layers that dominate inference cost (convolutions, dense,
    attention) from the shapes of ``model``'s own graph; element-wise layers
    are ignored. ``layers`` restricts the count to those layer names.
    """
    wanted = None if layers is None else set(layers)
    total = 0
    for node in _nodes(model):
        if wanted is None or node.layer.name in wanted:
            total += _layer_flops(node.layer, node.keras_inputs[0].shape, tf.nest.flatten(node.outputs)[0].shape)
    return int(total)


def compile_pattern(pattern: str) -> re.Pattern:
    """``pattern`` compiled; ConfigError naming it when it is not a regular expression."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--blocks {pattern!r} is not a valid regular expression: {exc}") from None


def _nodes(model: keras.Model) -> Iterator:
    """The model's own call nodes (not those of other models sharing its layers), inputs first."""
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if not node.is_input:
                yield node


class _Graph:
    """Who produces and who consumes each tensor of one model, by layer name."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.nodes = list(_nodes(model))
        self.position = {node.layer.name: i for i, node in enumerate(self.nodes)}
        self.producer = {id(t): node.layer.name for node in self.nodes for t in tf.nest.flatten(node.outputs)}
        self.inputs = {node.layer.name: node.keras_inputs for node in self.nodes}
        self.outputs = {node.layer.name: tf.nest.flatten(node.outputs) for node in self.nodes}
        self.consumers: dict[int, list[str]] = {}
        for node in self.nodes:
            for t in node.keras_inputs:
                self.consumers.setdefault(id(t), []).append(node.layer.name)
        self.model_outputs = {id(t) for t in model.outputs}

    def group_by(self, pattern: re.Pattern) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for node in self.nodes:
            match = pattern.match(node.layer.name)
            if match:
                key = match.group(1) if pattern.groups else match.group(0)
                groups.setdefault(key, []).append(node.layer.name)
        return groups

    def boundary(self, layers: Sequence[str]) -> tuple[list, list]:
        """Distinct tensors entering and leaving a set of layers."""
        members = set(layers)
        entering, leaving = {}, {}
        for name in layers:
            for t in self.inputs[name]:
                if self.producer.get(id(t)) not in members:
                    entering[id(t)] = t
            for t in self.outputs[name]:
                outside = any(c not in members for c in self.consumers.get(id(t), ()))
                if outside or id(t) in self.model_outputs:
                    leaving[id(t)] = t
        return list(entering.values()), list(leaving.values())

    def block(self, name: str, layers: Sequence[str]) -> Block:
        entering, leaving = self.boundary(layers)
        if len(entering) != 1 or len(leaving) != 1:
            raise ModelError(f"block {name!r} ({', '.join(layers)}) has {len(entering)} input and {len(leaving)} "
                             "output tensors; a block must have exactly one of each")
        members = [self.model.get_layer(n) for n in layers]
        feeds = [entering[0], *(self.outputs[n][0] for n in layers[:-1])]
        chain = all(len(self.inputs[n]) == 1 and self.inputs[n][0] is t for n, t in zip(layers, feeds))
        return Block(name=name, layers=tuple(layers), input=entering[0], output=leaving[0],
                     kind=_kind(members, chain), params=int(sum(layer.count_params() for layer in members)),
                     flops=model_flops(self.model, layers), chain=chain)

    def residual_units(self) -> dict[str, list[str]]:
        """Each ``Add`` with the layers since the tensor its branches fork from, merged attention+MLP."""
        units: list[list[str]] = []
        claimed: set[str] = set()
        for i, node in enumerate(self.nodes):
            if is_add(node.layer) and node.layer.name not in claimed:
                unit = self._unit_ending_at(i)
                if unit and not claimed & set(unit):
                    units.append(unit)
                    claimed.update(unit)
        return {f"residual_{i}": unit for i, unit in enumerate(_merge_transformer_units(units, self))}

    def _unit_ending_at(self, end: int) -> list[str] | None:
        """The smallest span ending at node ``end`` with one tensor in, one out and some weights."""
        ancestors = self._ancestors(self.nodes[end].layer.name)
        span: list[str] = []
        for node in reversed(self.nodes[:end + 1]):
            if node.layer.name not in ancestors:
                continue
            span.insert(0, node.layer.name)
            entering, leaving = self.boundary(span)
            if len(entering) == 1 and len(leaving) == 1 and any(self.model.get_layer(n).weights for n in span):
                return span
        return None

    def _ancestors(self, name: str) -> set[str]:
        seen, todo = {name}, [name]
        while todo:
            for t in self.inputs[todo.pop()]:
                parent = self.producer.get(id(t))
                if parent is not None and parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return seen


def is_add(layer: keras.layers.Layer) -> bool:
    """An ``Add`` layer, or the op layer that ``x + y`` on Keras tensors creates."""
    return isinstance(layer, keras.layers.Add) or getattr(layer, "symbol", None) in ("__operators__.add", "math.add")


def _merge_transformer_units(units: list[list[str]], graph: _Graph) -> list[list[str]]:
    """Join an attention unit and the MLP unit that directly follows it: one pre-LN transformer block."""
    merged: list[list[str]] = []
    for unit in units:
        if merged and _kind_of(merged[-1], graph) == "attention" and _kind_of(unit, graph) == "dense-residual" \
                and graph.boundary(unit)[0][0] is graph.boundary(merged[-1])[1][0]:
            merged[-1] = merged[-1] + unit
        else:
            merged.append(unit)
    return merged


def _kind_of(unit: list[str], graph: _Graph) -> str:
    layers = [graph.model.get_layer(n) for n in unit]
    if any(isinstance(layer, attention_types()) for layer in layers):
        return "attention"
    weighted = [layer for layer in layers if layer.weights and not isinstance(layer, _norm_types())]
    return "dense-residual" if weighted and all(isinstance(x, keras.layers.Dense) for x in weighted) else "other"


def _kind(layers: Sequence[keras.layers.Layer], chain: bool) -> str | None:
    """The replacement family of a block, from the layers that hold its weights."""
    weighted = [layer for layer in layers if layer.weights and not isinstance(layer, _norm_types())]
    attention = [layer for layer in weighted if isinstance(layer, attention_types())]
    dense = [layer for layer in weighted if isinstance(layer, keras.layers.Dense)]
    convs = [layer for layer in weighted if isinstance(layer, conv_types())]
    if len(attention) == 1 and len(dense) == 2 and len(weighted) == 3:
        return "transformer"
    if convs and len(convs) == len(weighted):
        return "conv"
    if chain and len(dense) == 1 and len(weighted) == 1 and not any(isinstance(x, _norm_types()) for x in layers):
        return "dense"
    return None


def _layer_flops(layer, in_shape, out_shape) -> int:
    positions = math.prod(out_shape[1:-1])
    if isinstance(layer, keras.layers.SeparableConv2D):
        depthwise = in_shape[-1] * layer.depth_multiplier
        return 2 * positions * depthwise * (math.prod(layer.kernel_size) + out_shape[-1])
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return 2 * positions * math.prod(layer.kernel_size) * out_shape[-1]
    if isinstance(layer, keras.layers.Conv2D):
        return 2 * positions * math.prod(layer.kernel_size) * in_shape[-1] // layer.groups * out_shape[-1]
    if isinstance(layer, keras.layers.Dense):
        return 2 * positions * in_shape[-1] * layer.units
    if isinstance(layer, keras.layers.MultiHeadAttention):
        tokens, dim, heads = positions, in_shape[-1], layer._num_heads
        projections = dim * heads * (2 * layer._key_dim + 2 * layer._value_dim)
        mixing = tokens * heads * (layer._key_dim + layer._value_dim)
        return 2 * tokens * (projections + mixing)
    if isinstance(layer, attention_types()[1]):
        tokens, dim = positions, in_shape[-1]
        return 2 * tokens * (2 * dim * dim + 2 * tokens * dim)
    return 0
