"""Custom layers for the zoo's transformers.

Each layer is registered as serializable under the ``kerascomp`` package and
has a ``get_config``, so ``.keras`` files load with ``safe_mode=True`` and no
``custom_objects`` once :mod:`kerascomp.models` is imported. They stand in for
the Lambda layers that safe mode refuses to deserialize.
"""

from __future__ import annotations

import math

from kerascomp.backend import keras, tf

__all__ = ["ClassToken", "PositionEmbedding", "ClassTokenSelect", "GELU", "SimplifiedAttention"]

_serializable = keras.saving.register_keras_serializable(package="kerascomp")


@_serializable
class ClassToken(keras.layers.Layer):
    """Prepends a learned class token of shape ``(1, 1, dim)`` to a token sequence."""

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token", shape=(1, 1, input_shape[-1]), initializer="zeros", trainable=True
        )
        super().build(input_shape)

    def call(self, inputs):
        batch = tf.shape(inputs)[0]
        token = tf.cast(self.token, inputs.dtype)
        return tf.concat([tf.tile(token, [batch, 1, 1]), inputs], axis=1)

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + 1
        return tf.TensorShape((input_shape[0], length, input_shape[2]))


@_serializable
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding of shape ``(1, length, dim)``."""

    def __init__(self, stddev: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev

    def build(self, input_shape):
        self.embedding = self.add_weight(
            name="embedding",
            shape=(1, input_shape[1], input_shape[2]),
            initializer=keras.initializers.RandomNormal(stddev=self.stddev),
            trainable=True,
        )
        super().build(input_shape)

    def call(self, inputs):
        return inputs + tf.cast(self.embedding, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


@_serializable
class ClassTokenSelect(keras.layers.Layer):
    """Returns token 0 of a ``(batch, length, dim)`` sequence: the class token."""

    def call(self, inputs):
        return inputs[:, 0]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape((input_shape[0], input_shape[2]))


@_serializable
class GELU(keras.layers.Layer):
    """GELU activation; ``approximate=True`` is the tanh form, cheaper on integer hardware."""

    def __init__(self, approximate: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.approximate = approximate

    def call(self, inputs):
        return tf.nn.gelu(inputs, approximate=self.approximate)

    def get_config(self):
        return {**super().get_config(), "approximate": self.approximate}


@_serializable
class SimplifiedAttention(keras.layers.Layer):
    """Multi-head self-attention without value and output projections.

    From He & Hofmann, "Simplifying Transformer Blocks" (2023): only the query
    and key projections (``Dense(dim)`` with bias) are learned; the values are
    the input itself split into heads, and the heads are concatenated back to
    ``dim`` without an output projection.
    """

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {self.num_heads}")
        self.query = keras.layers.Dense(dim, name="query")
        self.key = keras.layers.Dense(dim, name="key")
        self.query.build(input_shape)
        self.key.build(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        dim = inputs.shape[-1]
        head_dim = dim // self.num_heads
        batch, length = tf.shape(inputs)[0], tf.shape(inputs)[1]

        def heads(x):  # (batch, length, dim) -> (batch, heads, length, head_dim)
            x = tf.reshape(x, [batch, length, self.num_heads, head_dim])
            return tf.transpose(x, [0, 2, 1, 3])

        query, key, value = heads(self.query(inputs)), heads(self.key(inputs)), heads(inputs)
        scores = tf.matmul(query, key, transpose_b=True) * (1.0 / math.sqrt(head_dim))
        attended = tf.matmul(tf.nn.softmax(scores, axis=-1), value)
        attended = tf.transpose(attended, [0, 2, 1, 3])
        return tf.reshape(attended, [batch, length, dim])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}
