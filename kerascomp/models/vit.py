"""Vision Transformer (Dosovitskiy et al. 2020), sized for small images.

The patch embedding is a strided ``Conv2D`` rather than
``tf.image.extract_patches``, which has no TFLite builtin. ``block="simplified"``
swaps the pre-LN block for the simplified block of He & Hofmann (2023), which
has fewer weights to compress.
"""

from __future__ import annotations

from typing import Sequence

from kerascomp.backend import keras
from kerascomp.errors import ModelError
from kerascomp.models import register

__all__ = ["vit"]

BLOCKS = ("standard", "simplified")


@register("vit")
def vit(
    input_shape: Sequence[int],
    num_classes: int,
    patch_size: int = 4,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_dim: int = 128,
    dropout: float = 0.0,
    block: str = "standard",
    gelu_approximate: bool = False,
) -> keras.Model:
    """Patch embedding, class and position embeddings, ``depth`` blocks, class-token logits.

    There is no final LayerNorm: the logits read the class token straight
    from the last block.
    """
    if len(input_shape) != 3:
        raise ModelError(
            f"vit: input_shape must be (height, width, channels), got {tuple(input_shape)}"
        )
    height, width, _ = input_shape
    if patch_size < 1 or height % patch_size or width % patch_size:
        raise ModelError(
            f"vit: image size {height}x{width} is not divisible by patch_size {patch_size}"
        )
    if heads < 1 or dim < 1 or dim % heads:
        raise ModelError(f"vit: dim {dim} is not divisible by heads {heads}")
    if block not in BLOCKS:
        raise ModelError(f"vit: unknown block {block!r}; known blocks: {', '.join(BLOCKS)}")
    if depth < 1 or mlp_dim < 1:
        raise ModelError(
            f"vit: depth and mlp_dim must be at least 1, got depth={depth}, mlp_dim={mlp_dim}"
        )
    if not 0 <= dropout < 1:
        raise ModelError(f"vit: dropout must be in [0, 1), got {dropout}")

    from kerascomp.models.layers import ClassToken, ClassTokenSelect, PositionEmbedding  # defining them imports TF

    inputs = keras.Input(shape=input_shape, name="input")
    x = keras.layers.Conv2D(dim, patch_size, strides=patch_size, name="patch_embed")(inputs)
    patches = (height // patch_size) * (width // patch_size)
    x = keras.layers.Reshape((patches, dim), name="patches")(x)
    x = ClassToken(name="class_token")(x)
    x = PositionEmbedding(name="position_embedding")(x)
    x = _dropout(x, dropout, "embedding_dropout")
    make_block = _standard_block if block == "standard" else _simplified_block
    for i in range(depth):
        x = make_block(x, f"block_{i}_", dim, heads, mlp_dim, dropout, gelu_approximate)
    x = ClassTokenSelect(name="class_token_select")(x)
    outputs = keras.layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="vit")


def _standard_block(x, prefix, dim, heads, mlp_dim, dropout, gelu_approximate):
    """Pre-LN block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``."""
    y = keras.layers.LayerNormalization(epsilon=1e-6, name=prefix + "ln1")(x)
    y = keras.layers.MultiHeadAttention(
        num_heads=heads, key_dim=dim // heads, name=prefix + "attn"
    )(y, y)
    y = _dropout(y, dropout, prefix + "attn_dropout")
    x = keras.layers.Add(name=prefix + "attn_add")([x, y])
    y = keras.layers.LayerNormalization(epsilon=1e-6, name=prefix + "ln2")(x)
    y = _mlp(y, prefix, dim, mlp_dim, dropout, gelu_approximate)
    return keras.layers.Add(name=prefix + "mlp_add")([x, y])


def _simplified_block(x, prefix, dim, heads, mlp_dim, dropout, gelu_approximate):
    """Parallel block without normalization or value/output projections: ``x + SA(x) + MLP(x)``."""
    # defines Keras classes, so importing it imports TensorFlow: on use
    from kerascomp.models.layers import SimplifiedAttention

    attended = SimplifiedAttention(num_heads=heads, name=prefix + "attn")(x)
    attended = _dropout(attended, dropout, prefix + "attn_dropout")
    y = _mlp(x, prefix, dim, mlp_dim, dropout, gelu_approximate)
    return keras.layers.Add(name=prefix + "add")([x, attended, y])


def _mlp(x, prefix, dim, mlp_dim, dropout, gelu_approximate):
    # defines Keras classes, so importing it imports TensorFlow: on use
    from kerascomp.models.layers import GELU

    x = keras.layers.Dense(mlp_dim, name=prefix + "mlp_dense1")(x)
    x = GELU(approximate=gelu_approximate, name=prefix + "gelu")(x)
    x = _dropout(x, dropout, prefix + "mlp_dropout1")
    x = keras.layers.Dense(dim, name=prefix + "mlp_dense2")(x)
    return _dropout(x, dropout, prefix + "mlp_dropout2")


def _dropout(x, rate, name):
    """Dropout, or nothing at rate 0, so that default models hold no no-op layers."""
    return keras.layers.Dropout(rate, name=name)(x) if rate else x
