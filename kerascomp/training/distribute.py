"""tf.distribute strategies and mixed precision, chosen by name.

Scaling past one device goes through ``tf.distribute`` only; this module maps
the CLI's ``--strategy`` and ``--mixed-precision`` onto it.
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator

from kerascomp.backend import keras, tf
from kerascomp.errors import ConfigError, KerascompError

STRATEGIES = ("default", "mirrored", "multiworker")


def limit_threads(threads: int) -> None:
    """Hold TensorFlow to ``threads`` threads per op and between ops, instead of one per core of the machine.

    For processes that share a machine's cores on purpose (Ray trials packed onto a node, a benchmark giving
    every runtime the same budget). TensorFlow accepts this only before its first op.
    """
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def get_strategy(name: str) -> tf.distribute.Strategy:
    """``default`` (one device), ``mirrored`` (all local GPUs, else all logical CPUs) or ``multiworker`` (TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:  # CPUs only: mirror over the logical CPUs (two in the tests)
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")


@contextlib.contextmanager
def peers_watched(name: str) -> Iterator[None]:
    """Under ``multiworker``, a worker that dies ends the others' collectives (TensorFlow's coordination service
    misses its heartbeats: measured, the survivor stopped 11 s after its peer's ``kill -9``); say so in one line
    instead of an op's error dump, and stop this worker too (a ring with a hole cannot go on)."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as exc:
        if name != "multiworker":
            raise
        peer = re.search(r"(?:reported from|remote target) (/job:\w+/(?:replica:\d+/)?task:\d+)", str(exc))
        raise KerascompError(f"a multiworker peer stopped ({peer.group(1) if peer else 'see its log'}); this worker "
                             "stops too: start every worker of TF_CONFIG again to train") from None


@contextlib.contextmanager
def precision(mixed: bool) -> Iterator[str]:
    """Build and train under ``mixed_float16`` (GPU) or ``mixed_bfloat16`` (CPU); restore the policy after."""
    previous = keras.mixed_precision.global_policy()
    name = "float32"
    if mixed:
        name = "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(name)
    try:
        yield name
    finally:
        keras.mixed_precision.set_global_policy(previous)


def to_float32(model: keras.Model) -> keras.Model:
    """A float32 copy of a mixed-precision model: what ships is float32, mixed precision is a training detail."""

    def float32_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    clone = keras.models.clone_model(model, clone_function=float32_layer)
    clone.set_weights(model.get_weights())
    return clone
