"""Registry of block replacements: block kind -> candidates, each a builder of a lighter block.

A builder gets the block, the model holding the original weights, a fresh
input tensor of the block's input shape and a name prefix, and returns a
standalone ``keras.Model`` mapping that input to the block's output shape. It
starts from the original weights wherever the shapes allow (kept heads, kept
MLP units, kept filters, a truncated SVD), so the local fit that follows starts
close to the original block instead of from noise. A builder raises
:class:`NotApplicable` when the block's shape rules it out.

Add a replacement with::

    @register("conv", "my_block", "what it does")
    def my_block(block, source, x, prefix): ...
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from kerascomp.backend import keras
from kerascomp.compress.swap.blocks import Block, attention_types, conv_types, is_add
from kerascomp.models import vit

__all__ = ["Candidate", "NotApplicable", "register", "candidates", "available", "factorize"]

Builder = Callable[[Block, "keras.Model", object, str], "keras.Model"]


class NotApplicable(Exception):
    """This replacement cannot map the block's input shape to its output shape (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    kind: str
    name: str
    description: str
    build: Builder

    def instantiate(self, block: Block, source: keras.Model, prefix: str) -> keras.Model:
        """The replacement as a standalone model; NotApplicable if it does not fit the block."""
        x = keras.Input(shape=block.input.shape[1:], name=prefix + "input")
        new = self.build(block, source, x, prefix)
        if tuple(new.output.shape[1:]) != tuple(block.output.shape[1:]):
            raise NotApplicable(f"gives shape {tuple(new.output.shape[1:])}, the block gives "
                                f"{tuple(block.output.shape[1:])}")
        return new


_REGISTRY: dict[str, dict[str, Candidate]] = {}


def register(kind: str, name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator adding a replacement builder for blocks of ``kind``."""

    def decorator(build: Builder) -> Builder:
        if name in _REGISTRY.setdefault(kind, {}):
            raise ValueError(f"candidate {name!r} is already registered for {kind} blocks")
        _REGISTRY[kind][name] = Candidate(kind, name, description, build)
        return build

    return decorator


def candidates(kind: str | None) -> list[Candidate]:
    """The replacements registered for blocks of ``kind`` (none for unknown kinds)."""
    return list(_REGISTRY.get(kind, {}).values())


def available() -> dict[str, list[str]]:
    return {kind: list(entries) for kind, entries in _REGISTRY.items()}


def factorize(kernel: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Truncated SVD: ``kernel (in, out) ~= a (in, rank) @ b (rank, out)``, singular values split evenly."""
    u, s, vt = np.linalg.svd(kernel, full_matrices=False)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(kernel.dtype), (root[:, None] * vt[:rank]).astype(kernel.dtype)


# ---- transformer blocks ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Transformer:
    """What the replacements need to know about a transformer block."""

    dim: int
    heads: int
    key_dim: int
    mlp_dim: int
    approximate: bool
    attention: keras.layers.Layer
    mlp: tuple[keras.layers.Dense, keras.layers.Dense]
    norms: list[keras.layers.LayerNormalization]

    @property
    def standard(self) -> bool:
        return isinstance(self.attention, keras.layers.MultiHeadAttention)

    @classmethod
    def of(cls, block: Block, source: keras.Model) -> "_Transformer":
        # defines Keras classes, so importing it imports TensorFlow: on use
        from kerascomp.models.layers import GELU

        layers = block.members(source)
        attention = next(layer for layer in layers if isinstance(layer, attention_types()))
        dense = [layer for layer in layers if isinstance(layer, keras.layers.Dense)]
        gelu = next((layer for layer in layers if isinstance(layer, GELU)), None)
        dim = int(block.input.shape[-1])
        standard = isinstance(attention, keras.layers.MultiHeadAttention)
        heads = attention._num_heads if standard else attention.num_heads
        norms = [layer for layer in layers if isinstance(layer, keras.layers.LayerNormalization)]
        return cls(dim=dim, heads=heads, key_dim=attention._key_dim if standard else dim // heads,
                   mlp_dim=dense[0].units, approximate=bool(gelu and gelu.approximate), attention=attention,
                   mlp=(dense[0], dense[1]), norms=norms)


@register("transformer", "simplified", "attention and MLP in parallel, no norms, no value/output projections")
def _simplified(block: Block, source: keras.Model, x, prefix: str) -> keras.Model:
    spec = _Transformer.of(block, source)
    if not spec.standard:
        raise NotApplicable("the block is already simplified")
    if spec.dim % spec.heads:
        raise NotApplicable(f"dim {spec.dim} is not divisible by {spec.heads} heads")
    return _transformer_like(spec, x, prefix, simplified=True, heads=spec.heads, mlp_dim=spec.mlp_dim)


@register("transformer", "fewer_heads", "half the attention heads (the strongest kept)")
def _fewer_heads(block: Block, source: keras.Model, x, prefix: str) -> keras.Model:
    spec = _Transformer.of(block, source)
    if not spec.standard or spec.heads < 2:
        raise NotApplicable("needs standard attention with at least 2 heads")
    return _transformer_like(spec, x, prefix, simplified=False, heads=spec.heads // 2, mlp_dim=spec.mlp_dim)


@register("transformer", "narrow_mlp", "half the MLP hidden units (the strongest kept)")
def _narrow_mlp(block: Block, source: keras.Model, x, prefix: str) -> keras.Model:
    spec = _Transformer.of(block, source)
    if spec.mlp_dim < 2:
        raise NotApplicable("the MLP has fewer than 2 hidden units")
    return _transformer_like(spec, x, prefix, simplified=not spec.standard, heads=spec.heads,
                             mlp_dim=spec.mlp_dim // 2)


def _transformer_like(spec: _Transformer, x, prefix: str, *, simplified: bool, heads: int,
                      mlp_dim: int) -> keras.Model:
    """A zoo-style block (``vit``'s simplified one, or pre-LN), initialised from ``spec``'s weights."""
    if simplified:
        y = vit._simplified_block(x, prefix, spec.dim, heads, mlp_dim, 0.0, spec.approximate)
    else:
        y = _pre_ln_block(x, prefix, spec.dim, heads, spec.key_dim, mlp_dim, spec.approximate)
    new = keras.Model(x, y, name=prefix.rstrip("_"))
    _copy_attention(spec, new.get_layer(prefix + "attn"))
    _copy_mlp(spec.mlp, (new.get_layer(prefix + "mlp_dense1"), new.get_layer(prefix + "mlp_dense2")))
    if not simplified and len(spec.norms) == 2:
        for i, norm in enumerate(spec.norms, 1):
            new.get_layer(f"{prefix}ln{i}").set_weights(norm.get_weights())
    return new


def _pre_ln_block(x, prefix, dim, heads, key_dim, mlp_dim, approximate):
    """``vit``'s standard block with the per-head width fixed, so fewer heads means fewer weights."""
    y = keras.layers.LayerNormalization(epsilon=1e-6, name=prefix + "ln1")(x)
    y = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim, name=prefix + "attn")(y, y)
    x = keras.layers.Add(name=prefix + "attn_add")([x, y])
    y = keras.layers.LayerNormalization(epsilon=1e-6, name=prefix + "ln2")(x)
    y = vit._mlp(y, prefix, dim, mlp_dim, 0.0, approximate)
    return keras.layers.Add(name=prefix + "mlp_add")([x, y])


def _copy_attention(spec: _Transformer, new: keras.layers.Layer) -> None:
    """Keep the heads whose output projection is largest; a simplified block keeps the query and key."""
    old = spec.attention.get_weights()
    if not spec.standard:
        new.set_weights(old)
    elif isinstance(new, keras.layers.MultiHeadAttention):
        keep = _strongest(np.linalg.norm(old[6].reshape(spec.heads, -1), axis=1), new._num_heads)
        projections = [w[:, keep] if w.ndim == 3 else w[keep] for w in old[:6]]  # kernels, then biases
        new.set_weights([*projections, old[6][keep], old[7]])
    elif spec.heads * spec.key_dim == spec.dim:
        new.set_weights([old[0].reshape(spec.dim, -1), old[1].reshape(-1),
                         old[2].reshape(spec.dim, -1), old[3].reshape(-1)])


def _copy_mlp(old: tuple, new: tuple) -> None:
    """Keep the hidden units with the largest in-norm x out-norm."""
    (w1, b1), (w2, b2) = old[0].get_weights(), old[1].get_weights()
    score = np.linalg.norm(w1, axis=0) * np.linalg.norm(w2, axis=1)
    keep = _strongest(score, new[0].units)
    new[0].set_weights([w1[:, keep], b1[keep]])
    new[1].set_weights([w2[keep], b2])


def _strongest(score: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest scores, in their original order."""
    return np.sort(np.argsort(score)[::-1][:count])


# ---- conv blocks ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Conv:
    """A conv block as stages of (filters, kernel size), a downsampling factor and an optional skip."""

    convs: list[keras.layers.Layer]
    norms: list[keras.layers.BatchNormalization]
    kernel: tuple[int, int]
    out_channels: int
    factor: int
    residual: bool
    activation_after_add: bool

    @classmethod
    def from_block(cls, block: Block, source: keras.Model) -> "_Conv":
        layers = block.members(source)
        convs = [layer for layer in layers if isinstance(layer, conv_types())]
        (h_in, w_in), (h_out, w_out) = block.input.shape[1:3], block.output.shape[1:3]
        factor = h_in // h_out if h_out else 0
        if not factor or h_in != h_out * factor or w_in != w_out * factor:
            raise NotApplicable(f"cannot downsample {h_in}x{w_in} to {h_out}x{w_out} with one pooling factor")
        residual = any(is_add(x) for x in layers) and factor == 1 and block.input.shape[-1] == block.output.shape[-1]
        return cls(convs=convs, norms=[x for x in layers if isinstance(x, keras.layers.BatchNormalization)],
                   kernel=tuple(convs[0].kernel_size), out_channels=int(block.output.shape[-1]), factor=factor,
                   residual=residual, activation_after_add=residual and not is_add(layers[-1]))


@register("conv", "separable", "each convolution depthwise-separable")
def _separable(block: Block, source: keras.Model, x, prefix: str) -> keras.Model:
    spec = _Conv.from_block(block, source)
    stages = [(c.filters, spec.kernel) for c in spec.convs[:-1]] + [(spec.out_channels, spec.kernel)]
    return _conv_block(spec, x, prefix, stages, keras.layers.SeparableConv2D)


@register("conv", "fewer_filters", "half the filters inside the block (the strongest kept)")
def _fewer_filters(block: Block, source: keras.Model, x, prefix: str) -> keras.Model:
    spec = _Conv.from_block(block, source)
    if len(spec.convs) < 2 or min(c.filters for c in spec.convs[:-1]) < 2:
        raise NotApplicable("needs two convolutions, the inner ones with at least 2 filters")
    stages = [(c.filters // 2, spec.kernel) for c in spec.convs[:-1]] + [(spec.out_channels, spec.kernel)]
    new = _conv_block(spec, x, prefix, stages, keras.layers.Conv2D)
    _copy_filters(spec, new, prefix)
    return new


@register("conv", "bottleneck", "1x1 reduce to a quarter of the channels, kxk, 1x1 expand")
def _bottleneck(block: Block, source: keras.Model, x, prefix: str) -> keras.Model:
    spec = _Conv.from_block(block, source)
    if spec.out_channels < 4:
        raise NotApplicable("needs at least 4 output channels")
    narrow = spec.out_channels // 4
    stages = [(narrow, (1, 1)), (narrow, spec.kernel), (spec.out_channels, (1, 1))]
    return _conv_block(spec, x, prefix, stages, keras.layers.Conv2D)


def _conv_block(spec: _Conv, x, prefix: str, stages: list, conv: type) -> keras.Model:
    """Conv-BN-ReLU stages, then max pooling by the block's factor, or a skip connection."""
    inputs, y = x, x
    for i, (filters, kernel) in enumerate(stages, 1):
        y = conv(filters, kernel, padding="same", use_bias=False, name=f"{prefix}conv{i}")(y)
        y = keras.layers.BatchNormalization(momentum=0.9, name=f"{prefix}bn{i}")(y)
        if not (spec.residual and i == len(stages)):
            y = keras.layers.ReLU(name=f"{prefix}relu{i}")(y)
    if spec.factor > 1:
        y = keras.layers.MaxPooling2D(spec.factor, name=prefix + "pool")(y)
    if spec.residual:
        y = keras.layers.Add(name=prefix + "add")([inputs, y])
        if spec.activation_after_add:
            y = keras.layers.ReLU(name=prefix + "relu")(y)
    return keras.Model(inputs, y, name=prefix.rstrip("_"))


def _copy_filters(spec: _Conv, new: keras.Model, prefix: str) -> None:
    """Keep each inner convolution's largest-L1 filters, with their batch-norm entries and the next layer's inputs.

    Only for plain conv-BN chains with bias-free convolutions (the zoo's cnn); anything else starts fresh.
    """
    plain = all(type(c) is keras.layers.Conv2D and not c.use_bias for c in spec.convs)
    if not plain or len(spec.norms) != len(spec.convs):
        return
    previous = None
    for i, (conv, norm) in enumerate(zip(spec.convs, spec.norms), 1):
        kernel = conv.get_weights()[0]
        if previous is not None:
            kernel = kernel[:, :, previous]
        target = new.get_layer(f"{prefix}conv{i}")
        keep = _strongest(np.abs(kernel).sum(axis=(0, 1, 2)), target.filters)
        target.set_weights([kernel[..., keep]])
        new.get_layer(f"{prefix}bn{i}").set_weights([w[keep] for w in norm.get_weights()])
        previous = keep


# ---- dense blocks -------------------------------------------------------------------------------------


@register("dense", "low_rank", "Dense split into two thin ones at half the weights, from a truncated SVD")
def _low_rank(block: Block, source: keras.Model, x, prefix: str) -> keras.Model:
    layers = block.members(source)
    dense = next(layer for layer in layers if isinstance(layer, keras.layers.Dense))
    kernel, *bias = dense.get_weights()
    fan_in, units = kernel.shape
    rank = fan_in * units // (2 * (fan_in + units))
    if rank < 1:
        raise NotApplicable(f"a {fan_in}x{units} kernel is too small to factorize")
    first = keras.layers.Dense(rank, use_bias=False, name=prefix + "low_rank_a")
    second = keras.layers.Dense(units, activation=dense.activation, use_bias=dense.use_bias,
                                name=prefix + "low_rank_b")
    y = x
    for layer in layers:
        if layer is dense:
            y = second(first(y))
        else:
            suffix = layer.name.removeprefix(block.name + "_")
            y = type(layer).from_config({**layer.get_config(), "name": prefix + suffix})(y)
    a, b = factorize(kernel, rank)
    first.set_weights([a])
    second.set_weights([b, *bias])
    return keras.Model(x, y, name=prefix.rstrip("_"))
