"""Channel dependency groups of a Keras functional graph: which channels must be removed together.

Every tensor's last axis is a *channel space*. A convolution or Dense layer
starts a new space (its filters or units); layers that act per channel
(batch norm, activations, pooling, depthwise convolutions) pass their input's
space on; elementwise merges (``Add``, ``Multiply``, ...) tie all their inputs
into one space, so a residual stream is one group whose kept channels every
member shares. ``Concatenate`` lays its inputs' spaces end to end and
``Flatten`` repeats a space once per spatial position: a consumer of either
reads the kept channels at their offsets. Spaces are merged with a union-find;
a *group* is one merged space.

What cannot be followed is never guessed: a layer whose channel mapping is not
known here (``Lambda``, ``Reshape``, a custom or nested layer, softmax across
channels, a grouped convolution) freezes every space it touches, and the plan
names it. The model's inputs and outputs are frozen too: shrinking must not
change what the model takes or returns. A group can shrink when it is not
frozen and some layer produces it.

The graph is read from ``model.get_config()`` (its ``inbound_nodes``), the
form Keras itself rebuilds models from.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from kerascomp.backend import keras
from kerascomp.errors import ModelError

__all__ = ["Space", "Concat", "Flat", "Group", "Graph", "analyse", "WEIGHT_AXES"]

PRODUCERS = {"Conv1D", "Conv2D", "Conv3D", "Dense", "Conv1DTranspose", "Conv2DTranspose"}
DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
SEPARABLE = {"SeparableConv1D", "SeparableConv2D"}
CHANNELWISE = {  # act on each channel alone: the output has the input's channels
    "BatchNormalization", "LayerNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "GELU",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "ZeroPadding1D", "ZeroPadding2D",
    "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D", "ActivityRegularization",
}
MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
ATTENTION = {"MultiHeadAttention"}

# Which axis of each weight (by its name inside the layer) reads which channels: "in", "value", "key" (the layer's
# first, second and third input; the key defaults to the value), "out" (its output) or "heads" (attention heads).
_KERNEL = {"kernel": {-2: "in", -1: "out"}, "bias": {0: "out"}}
WEIGHT_AXES = {
    **{kind: _KERNEL for kind in ("Conv1D", "Conv2D", "Conv3D", "Dense")},
    "Conv1DTranspose": {"kernel": {-1: "in", -2: "out"}, "bias": {0: "out"}},
    "Conv2DTranspose": {"kernel": {-1: "in", -2: "out"}, "bias": {0: "out"}},
    **{kind: {"depthwise_kernel": {-2: "in"}, "bias": {0: "in"}} for kind in DEPTHWISE},
    **{kind: {"depthwise_kernel": {-2: "in"}, "pointwise_kernel": {-2: "in", -1: "out"}, "bias": {0: "out"}}
       for kind in SEPARABLE},
    "BatchNormalization": {role: {0: "in"} for role in ("gamma", "beta", "moving_mean", "moving_variance")},
    "LayerNormalization": {role: {0: "in"} for role in ("gamma", "beta")},
    "MultiHeadAttention": {
        "query/kernel": {0: "in", 1: "heads"}, "query/bias": {0: "heads"},
        "key/kernel": {0: "key", 1: "heads"}, "key/bias": {0: "heads"},
        "value/kernel": {0: "value", 1: "heads"}, "value/bias": {0: "heads"},
        "attention_output/kernel": {0: "heads", 2: "out"}, "attention_output/bias": {0: "out"},
    },
}
SIZE_KEY = {**{kind: "filters" for kind in PRODUCERS | SEPARABLE if kind != "Dense"}, "Dense": "units",
            "MultiHeadAttention": "num_heads"}


@dataclasses.dataclass(frozen=True)
class Space:
    """One channel space, by id (merged spaces share a root in :class:`Graph`)."""

    id: int


@dataclasses.dataclass(frozen=True)
class Concat:
    """The channels of ``parts`` laid end to end (a ``Concatenate`` on the last axis)."""

    parts: tuple  # of Space | Concat | Flat


@dataclasses.dataclass(frozen=True)
class Flat:
    """A flattened ``(..., positions, channels)`` tensor: index ``p * channels + c`` is channel ``c`` of ``inner``."""

    inner: object
    positions: int


@dataclasses.dataclass
class Group:
    """A set of channels removed together: the merged space, its size, and who produces and reads it."""

    root: int
    size: int
    producers: list[str]  # layers whose filters/units are these channels
    members: list[str]  # every layer whose weights have an axis on these channels
    frozen: str = ""  # why it cannot shrink ("" when it can)

    @property
    def shrinkable(self) -> bool:
        return not self.frozen and bool(self.producers)


class Graph:
    """The channel spaces of a model: each tensor's descriptor, each layer's input and output, the merged groups."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.parent: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.frozen: dict[int, str] = {}
        self.producer: dict[int, list[str]] = {}
        self.tensors: dict[tuple, object] = {}  # (layer, node, index) -> descriptor
        self.inputs: dict[str, list] = {}  # layer -> descriptors of its inputs
        self.outputs: dict[str, object] = {}  # layer -> descriptor of its output
        self.unfollowed: dict[str, str] = {}  # layer -> why its channels cannot be followed
        self.heads: dict[str, Space] = {}  # attention layer -> the space of its heads

    # --- union-find over spaces ------------------------------------------------------------------------------------
    def new(self, size: int, frozen: str = "") -> Space:
        sid = len(self.parent)
        self.parent[sid], self.size[sid], self.producer[sid] = sid, int(size), []
        if frozen:
            self.frozen[sid] = frozen
        return Space(sid)

    def root(self, sid: int) -> int:
        while self.parent[sid] != sid:
            self.parent[sid] = self.parent[self.parent[sid]]
            sid = self.parent[sid]
        return sid

    def union(self, a: Space, b: Space) -> None:
        ra, rb = self.root(a.id), self.root(b.id)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            raise ModelError(f"merged channel spaces differ in size ({self.size[ra]} vs {self.size[rb]})")
        self.parent[rb] = ra
        self.producer[ra] += self.producer.pop(rb)
        if rb in self.frozen:
            self.frozen.setdefault(ra, self.frozen.pop(rb))

    def freeze(self, descriptor, why: str) -> None:
        """Keep every channel of ``descriptor`` (all the spaces it is made of)."""
        for space in spaces_of(descriptor):
            self.frozen.setdefault(self.root(space.id), why)

    def side(self, layer: str, side: str):
        """The descriptor one weight axis of ``layer`` reads (see :data:`WEIGHT_AXES`)."""
        inputs = self.inputs[layer]
        if side == "out":
            return self.outputs[layer]
        if side == "heads":
            return self.heads[layer]
        value = inputs[1] if len(inputs) > 1 else inputs[0]
        return {"in": inputs[0], "value": value, "key": inputs[2] if len(inputs) > 2 else value}[side]

    def lookup(self, triple: tuple):
        """The descriptor of the tensor ``(layer, node, index)`` of the model's config."""
        if triple not in self.tensors:
            raise ModelError(f"{self.model.name}: tensor {triple} is read before it is made")
        return self.tensors[triple]

    def width(self, descriptor, kept: dict[int, int] | None = None) -> int:
        """The number of channels ``descriptor`` has, with ``kept`` channels in the shrunk groups."""
        if isinstance(descriptor, Space):
            root = self.root(descriptor.id)
            return (kept or {}).get(root, self.size[root])
        if isinstance(descriptor, Concat):
            return sum(self.width(part, kept) for part in descriptor.parts)
        return descriptor.positions * self.width(descriptor.inner, kept)

    def indices(self, descriptor, kept: dict[int, np.ndarray]) -> np.ndarray:
        """The channel indices of ``descriptor`` that stay when each shrunk group keeps ``kept[root]``."""
        if isinstance(descriptor, Space):
            root = self.root(descriptor.id)
            return kept.get(root, np.arange(self.size[root]))
        if isinstance(descriptor, Concat):
            offsets = np.cumsum([0] + [self.width(part) for part in descriptor.parts])
            return np.concatenate([self.indices(part, kept) + offset
                                   for part, offset in zip(descriptor.parts, offsets)])
        channels = self.width(descriptor.inner)
        inner = self.indices(descriptor.inner, kept)
        return (np.arange(descriptor.positions)[:, None] * channels + inner[None, :]).reshape(-1)

    def groups(self) -> list[Group]:
        """Every merged space with its producers and the layers whose weights read it."""
        members: dict[int, list[str]] = {}
        for layer in self.model.layers:
            if layer.name in self.unfollowed:
                continue
            for role_axes in WEIGHT_AXES.get(type(layer).__name__, {}).values():
                for side in set(role_axes.values()):
                    for space in spaces_of(self.side(layer.name, side)):
                        bucket = members.setdefault(self.root(space.id), [])
                        if layer.name not in bucket:
                            bucket.append(layer.name)
        roots = sorted({self.root(sid) for sid in self.parent})
        return [Group(root, self.size[root], list(self.producer[root]), members.get(root, []),
                      self.frozen.get(root, "" if self.producer[root] else "no layer produces these channels"))
                for root in roots]


def spaces_of(descriptor) -> list[Space]:
    """The plain spaces a descriptor is made of."""
    if isinstance(descriptor, Space):
        return [descriptor]
    if isinstance(descriptor, Concat):
        return [s for part in descriptor.parts for s in spaces_of(part)]
    return spaces_of(descriptor.inner)


def analyse(model: keras.Model) -> Graph:
    """The channel spaces and groups of a functional (or Sequential) tf_keras model."""
    if not getattr(model, "_is_graph_network", False):  # noqa: SLF001 (tf_keras has no public test)
        raise ModelError(f"{model.name}: only functional and Sequential models can shrink (subclassed models hide "
                         "their graph)")
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    graph, config = Graph(model), model.get_config()
    layers = {layer.name: layer for layer in model.layers}
    for spec in config["layers"]:  # in the order Keras rebuilds them: every input is known before it is read
        layer, nodes = layers[spec["name"]], spec["inbound_nodes"]
        if spec["class_name"] == "InputLayer":
            outputs = [graph.new(_last_dim(layer.output_shape), "a model input")]
        elif len(nodes) != 1:
            inputs = [graph.lookup(t) for node in nodes for t in _triples(node)]
            outputs = _unfollowed(graph, layer, inputs, f"called {len(nodes)} times (a shared layer)")
        else:
            inputs = [graph.lookup(t) for t in _triples(nodes[0])]
            graph.inputs[layer.name] = inputs
            outputs = _follow(graph, layer, spec, inputs)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        graph.outputs[layer.name] = outputs[0]
        for node in range(max(1, len(nodes))):
            for index, descriptor in enumerate(outputs):
                graph.tensors[(layer.name, node, index)] = descriptor
    for name, node, index in (tuple(o) for o in config["output_layers"]):
        graph.freeze(graph.tensors[(name, node, index)], "a model output")
    return graph


def _follow(graph: Graph, layer, spec: dict, inputs: list):
    """The output descriptor of one layer call, merging or freezing spaces as the layer's kind requires."""
    kind, cfg = spec["class_name"], spec["config"]
    out_channels = _last_dim(layer.output_shape)
    if len(inputs) != 1 and kind not in MERGES | ATTENTION | {"Concatenate"}:
        return _unfollowed(graph, layer, inputs, f"{kind} with {len(inputs)} inputs")
    if kind in ATTENTION:
        return _attention(graph, layer, cfg, inputs)
    if kind not in PRODUCERS | SEPARABLE | DEPTHWISE | CHANNELWISE | MERGES | {"Concatenate", "Flatten"}:
        return _unfollowed(graph, layer, inputs, f"{kind}: its channel mapping is not known")
    source = inputs[0]
    if kind in PRODUCERS | SEPARABLE:
        if cfg.get("groups", 1) != 1:
            return _unfollowed(graph, layer, inputs, f"{kind} with groups={cfg['groups']}")
        if kind in SEPARABLE and cfg.get("depth_multiplier", 1) != 1:
            return _unfollowed(graph, layer, inputs, f"{kind} with depth_multiplier={cfg['depth_multiplier']}")
        if kind in SEPARABLE and not isinstance(source, Space):
            return _unfollowed(graph, layer, inputs, f"{kind} after a concatenation or flatten")
        out = graph.new(out_channels)
        graph.producer[out.id].append(layer.name)
        return out
    if kind in DEPTHWISE:
        if cfg.get("depth_multiplier", 1) != 1 or not isinstance(source, Space):
            return _unfollowed(graph, layer, inputs, f"{kind} with depth_multiplier={cfg.get('depth_multiplier')}")
        return source
    if kind in CHANNELWISE:
        rank = len(layer.input_shape)
        if kind in ("BatchNormalization", "LayerNormalization") and _axes(cfg.get("axis", -1), rank) != [rank - 1]:
            return _unfollowed(graph, layer, inputs, f"{kind} over axis {cfg.get('axis')}, not the channels")
        if kind == "Activation" and cfg.get("activation") == "softmax":
            return _unfollowed(graph, layer, inputs, "softmax mixes every channel")
        if "Global" in kind and cfg.get("keepdims"):
            return _unfollowed(graph, layer, inputs, f"{kind} with keepdims")
        if isinstance(source, Flat) and kind not in ("BatchNormalization", "LayerNormalization", "Activation", "ReLU",
                                                     "Dropout"):
            return _unfollowed(graph, layer, inputs, f"{kind} after a flatten")
        return source
    if kind in MERGES:
        if not all(isinstance(d, Space) for d in inputs) or len({_last_dim(s) for s in _input_shapes(layer)}) != 1:
            return _unfollowed(graph, layer, inputs, f"{kind} of tensors with different or mixed channels")
        for other in inputs[1:]:
            graph.union(inputs[0], other)
        return inputs[0]
    if kind == "Concatenate":
        rank = len(layer.output_shape)
        if _axes(cfg.get("axis", -1), rank) != [rank - 1]:
            return _unfollowed(graph, layer, inputs, "Concatenate on an axis other than the channels")
        return Concat(tuple(inputs))
    if kind == "Flatten":
        shape = layer.input_shape
        if len(shape) <= 2:
            return source
        return Flat(source, positions=math.prod(shape[1:-1]))


def _attention(graph: Graph, layer, cfg: dict, inputs: list):
    """Multi-head attention: its heads are a group of their own (each head's query, key, value and output slices
    leave together); without ``output_shape`` its output has the query's channels, so the two are one group."""
    if not all(isinstance(d, Space) for d in inputs) or cfg.get("attention_axes") not in (None, [1], (1,)):
        return _unfollowed(graph, layer, inputs, "attention over a concatenation, flatten or several axes")
    heads = graph.heads[layer.name] = graph.new(cfg["num_heads"])
    graph.producer[heads.id].append(layer.name)
    out = graph.new(_last_dim(layer.output_shape))
    graph.producer[out.id].append(layer.name)
    if cfg.get("output_shape") is None:
        graph.union(inputs[0], out)
    return out


def _unfollowed(graph: Graph, layer, inputs: list, why: str) -> list[Space]:
    """Freeze every space ``layer`` reads; each of its outputs is a new, frozen space."""
    graph.unfollowed[layer.name] = why
    for descriptor in inputs:
        graph.freeze(descriptor, f"read by {layer.name} ({why})")
    graph.inputs.setdefault(layer.name, inputs)
    shapes = layer.get_output_shape_at(0)
    shapes = shapes if isinstance(shapes, list) else [shapes]
    return [graph.new(_last_dim(shape) or 1, f"made by {layer.name} ({why})") for shape in shapes]


def _triples(node) -> list[tuple]:
    """Every ``(layer, node index, tensor index)`` a config node refers to, wherever it is nested."""
    if isinstance(node, (list, tuple)):
        if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int) and isinstance(node[2], int):
            return [(node[0], node[1], node[2]), *(t for extra in node[3:] for t in _triples(extra))]
        return [t for item in node for t in _triples(item)]
    if isinstance(node, dict):
        return [t for item in node.values() for t in _triples(item)]
    return []


def _last_dim(shape) -> int:
    shape = shape[0] if isinstance(shape, list) else shape
    return int(shape[-1]) if shape and shape[-1] is not None else 0


def _input_shapes(layer) -> list:
    shapes = layer.input_shape
    return shapes if isinstance(shapes, list) else [shapes]


def _axes(axis, rank: int) -> list[int]:
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return sorted(a % rank for a in axes)
