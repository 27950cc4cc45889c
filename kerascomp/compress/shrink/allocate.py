"""How many channels each group keeps: channel importance, the cost of a shrunk model, a global allocation.

Importance is either the filter's L2 norm (``magnitude``: every layer that
produces the group, each normalised by its own mean so a wide layer does not
drown a narrow one, and where a batch norm reads the group its ``|gamma|``) or
data-driven (``taylor``: the first-order Taylor estimate of the loss change
when a channel is zeroed, ``|sum(w * dL/dw)|`` over the weights that make it,
on a few calibration batches; Molchanov et al. 2019). Channels leave
in chunks of ``round_to`` so that what is kept fills the runtime's vector
registers (a kept count is a multiple of ``round_to``, or the whole group).
The allocation is global: the chunk with the lowest mean importance anywhere
in the model goes first, until the model's parameters or multiply-accumulates
are within the target.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from kerascomp.compress.shrink.graph import WEIGHT_AXES, Graph, Group, Space
from kerascomp.compress.shrink.surgery import MASKED, weight_role
from kerascomp.errors import ModelError, Unreachable
from kerascomp.tasks import CLASSIFICATION, Task

__all__ = ["TARGETS", "COUNTS", "IMPORTANCES", "magnitude", "taylor", "cost", "allocate"]

COUNTS = ("params", "macs")  # what cost() counts and allocate() cuts to
TARGETS = (*COUNTS, "latency")  # what a shrink target can be: latency is measured (see .latency)
IMPORTANCES = ("magnitude", "taylor")
_DEPTHWISE = ("depthwise_kernel",)


def magnitude(graph: Graph, groups: list[Group]) -> dict[int, np.ndarray]:
    """Per shrinkable group, one importance score per channel (mean 1 per contributing layer)."""
    parts: dict[int, list] = {}
    for root, _, layer, weight, axis in _produced(graph, groups):
        if weight_role(layer, weight) in MASKED:
            value = np.moveaxis(weight.numpy(), axis, -1)
            parts.setdefault(root, []).append(np.sqrt((value ** 2).reshape(-1, value.shape[-1]).sum(0)))
    for group in (g for g in groups if g.shrinkable):
        for name in group.members:
            layer = graph.model.get_layer(name)
            source = graph.inputs[name][0]
            if type(layer).__name__ == "BatchNormalization" and isinstance(source, Space) \
                    and graph.root(source.id) == group.root and layer.scale:
                parts[group.root].append(np.abs(layer.gamma.numpy()))
    return {root: np.mean([p / (p.mean() + 1e-12) for p in values], axis=0) for root, values in parts.items()}


def taylor(graph: Graph, groups: list[Group], x: np.ndarray, y: np.ndarray, batch_size: int = 64,
           task: Task = CLASSIFICATION) -> dict[int, np.ndarray]:
    """Per shrinkable group, the first-order Taylor estimate of the loss change when each channel is zeroed.

    Zeroing channel ``c`` of a producer zeroes every weight on its slice of the
    produced axis (filter and bias, or a head's query, key, value and output
    slices), so the change is ``|sum(w * dL/dw)|`` over that slice, summed over
    ``(x, y)`` in batches (mean 1 per producing layer), with ``task``'s loss.
    """
    from kerascomp.backend import tf  # TensorFlow runs here only, on calibration batches

    slices = [(root, name, weight, axis) for root, name, _, weight, axis in _produced(graph, groups)]
    sums = [np.zeros(weight.shape[axis]) for _, _, weight, axis in slices]
    variables = [weight for _, _, weight, _ in slices]
    loss_of = task.loss()
    for start in range(0, len(x), batch_size):
        with tf.GradientTape() as tape:
            logits = graph.model(x[start:start + batch_size], training=False)
            loss = loss_of(y[start:start + batch_size], logits) * len(logits)  # the batch's sum, as every batch
        for i, (grad, (_, _, weight, axis)) in enumerate(zip(tape.gradient(loss, variables), slices)):
            product = np.moveaxis((weight * grad).numpy(), axis, -1)
            sums[i] += product.reshape(-1, product.shape[-1]).sum(0)
    by_layer: dict[tuple, np.ndarray] = {}  # a producer's weights sum into one change per channel
    for (root, name, _, _), total in zip(slices, sums):
        by_layer[root, name] = by_layer.get((root, name), 0) + total
    by_group: dict[int, list] = {}
    for (root, _), total in by_layer.items():
        by_group.setdefault(root, []).append(np.abs(total) / (np.abs(total).mean() + 1e-12))
    return {root: np.mean(parts, axis=0) for root, parts in by_group.items()}


def _produced(graph: Graph, groups: list[Group]):
    """``(group root, producer name, layer, weight, axis)`` for every weight axis that makes a shrinkable group's
    channels (a filter's output axis, its bias, a head's query/key/value/output slices)."""
    for group in (g for g in groups if g.shrinkable):
        for name in group.producers:
            layer = graph.model.get_layer(name)
            for weight in layer.weights:
                for axis, side in WEIGHT_AXES[type(layer).__name__].get(weight_role(layer, weight), {}).items():
                    if _produces(graph, name, side, group.root):
                        yield group.root, name, layer, weight, axis % len(weight.shape)


def _produces(graph: Graph, layer: str, side: str, root: int) -> bool:
    """Whether ``side`` of ``layer`` is the group ``root`` as made by that layer (its output or its heads)."""
    if side not in ("out", "heads"):
        return False
    descriptor = graph.side(layer, side)
    return isinstance(descriptor, Space) and graph.root(descriptor.id) == root


def cost(graph: Graph, sizes: dict[int, int] | None = None) -> dict[str, int]:
    """Parameters and multiply-accumulates per example of the model with ``sizes[root]`` channels per group.

    Layers whose weights are not mapped (an unfollowed custom layer) count
    their parameters as they are and no MACs.
    """
    params = macs = 0
    for layer in graph.model.layers:
        axes = WEIGHT_AXES.get(type(layer).__name__)
        if axes is None or layer.name in graph.unfollowed:
            params += layer.count_params()
            macs += _macs(layer, [tuple(w.shape) for w in layer.weights]) if axes else 0
            continue
        shapes = []
        for weight in layer.weights:
            shape = list(weight.shape)
            for axis, side in axes.get(weight_role(layer, weight), {}).items():
                shape[axis] = graph.width(graph.side(layer.name, side), sizes)
            shapes.append(tuple(shape))
            params += math.prod(shape)
        macs += _macs(layer, shapes, [weight_role(layer, w) for w in layer.weights])
    return {"params": int(params), "macs": int(macs)}


def _macs(layer, shapes: list[tuple], roles: list[str] | None = None) -> int:
    """Multiply-accumulates of one call: each kernel's size times the positions it is applied at."""
    roles = roles or [weight_role(layer, w) for w in layer.weights]
    if type(layer).__name__ == "MultiHeadAttention":
        return _attention_macs(layer, dict(zip(roles, shapes)))
    transposed = "Transpose" in type(layer).__name__
    spatial = (layer.input_shape if transposed else layer.output_shape)[1:-1]
    positions = math.prod(int(d) for d in spatial if d is not None)
    return sum(math.prod(shape) * positions for shape, role in zip(shapes, roles) if role in MASKED + _DEPTHWISE)


def _attention_macs(layer, shapes: dict[str, tuple]) -> int:
    """Attention: the projections, and the weightless work of every kept head.

    The query and output projections run at each of the ``T`` queries, the key
    and value projections at each of the ``S`` keys. Per head, each query meets
    each key once for the scores ``QK^T`` (``key_dim`` MACs) and once for the
    weighted values ``AV`` (``value_dim``).
    """
    queries, keys = int(layer._query_shape[1]), int(layer._value_shape[1])  # (batch, T, d), (batch, S, d)
    _, heads, key_dim = shapes["query/kernel"]
    value_dim = shapes["value/kernel"][2]
    at_queries = math.prod(shapes["query/kernel"]) + math.prod(shapes["attention_output/kernel"])
    at_keys = math.prod(shapes["key/kernel"]) + math.prod(shapes["value/kernel"])
    return queries * at_queries + keys * at_keys + queries * keys * heads * (key_dim + value_dim)


def allocate(graph: Graph, groups: list[Group], scores: dict[int, np.ndarray], target: str, keep: float,
             round_to: int) -> dict[int, np.ndarray]:
    """The kept channel indices of every group that shrinks, so that ``target`` is at most ``keep`` of the original.

    Attention heads leave one at a time. Raises :class:`~kerascomp.errors.Unreachable`
    when even the smallest allowed model (``round_to`` channels per group, one
    head per attention layer) is over the target, saying what the smallest is.
    """
    if target not in COUNTS:
        raise ModelError(f"unknown target {target!r}; use one of {', '.join(COUNTS)}")
    base = cost(graph)[target]
    limit = keep * base
    order = {root: np.argsort(values, kind="stable") for root, values in scores.items()}
    sizes = {root: len(values) for root, values in scores.items()}
    heads = {graph.root(space.id) for space in graph.heads.values()}
    step = {root: 1 if root in heads else round_to for root in scores}  # a head is a whole unit already
    heap = [item for root in scores if (item := _next_chunk(root, sizes[root], order, scores, step[root]))]
    heapq.heapify(heap)
    while cost(graph, sizes)[target] > limit:
        if not heap:
            smallest = cost(graph, sizes)[target] / base
            raise Unreachable(f"cannot shrink {target} to {keep:.0%}: with {round_to} channels left in every group it "
                             f"is still {smallest:.0%} of the original (layers outside every group stay whole)")
        _, root, size = heapq.heappop(heap)
        sizes[root] = size
        if (item := _next_chunk(root, size, order, scores, step[root])) is not None:
            heapq.heappush(heap, item)
    return {root: np.sort(order[root][len(order[root]) - size:]) for root, size in sizes.items()
            if size < len(order[root])}


def _next_chunk(root: int, size: int, order: dict, scores: dict, round_to: int):
    """``(mean score of the channels removed next, root, size after)``, or None when the group is at its floor."""
    smaller = (size - 1) // round_to * round_to
    if smaller < min(round_to, len(order[root])) or smaller <= 0:
        return None
    removed = order[root][len(order[root]) - size:len(order[root]) - smaller]
    return float(scores[root][removed].mean()), root, smaller
