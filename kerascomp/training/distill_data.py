"""Input pipelines of a distillation run: the teacher cache, or augmentation shared by teacher and student.

Without augmentation the teacher's outputs for a training example never change,
so they are computed once and travel with the example; an epoch then costs
about what plain training costs. With augmentation each batch is augmented
here, in tf.data, before the step, so teacher and student get the same tensor.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from kerascomp.backend import keras, tf
from kerascomp.data import Dataset
from kerascomp.data.augment import augmented

if TYPE_CHECKING:
    from kerascomp.training.distillation import DistillConfig

__all__ = ["datasets", "cache_outputs"]


def datasets(teacher_features: keras.Model, data: Dataset, config: DistillConfig, batch_size: int, seed: int,
             cached: dict | None = None):
    """Training and validation tf.data pipelines for a distiller, plus seconds spent filling the cache.

    Cached: ``(x, y, teacher_outputs)`` with ``teacher_features`` (a distiller's
    :attr:`Distiller.teacher_features`) run once over each split.
    ``cached`` (from :func:`cache_outputs`) is used instead of running the teacher.
    Otherwise: ``(x, y)``, augmented in the pipeline so that the one augmented
    tensor is what both teacher and student receive inside the step.
    """
    if config.use_cache:
        start = time.perf_counter()
        cached = cached or cache_outputs(teacher_features, data, batch_size)
        seconds = time.perf_counter() - start
        return (_pipeline((data.x_train, data.y_train, cached["train"]), batch_size, seed),
                _pipeline((data.x_val, data.y_val, cached["val"]), batch_size), seconds)
    train = data.as_tf("train", batch_size, shuffle=True, seed=seed)
    if config.augment != "none":
        train = augmented(train, config.augment, data, seed)
    return train, data.as_tf("val", batch_size), 0.0


def cache_outputs(teacher_features: keras.Model, data: Dataset, batch_size: int) -> dict[str, tuple[np.ndarray, ...]]:
    """``{"train": outputs, "val": outputs}``: the teacher run once over each split."""
    return {split: _predict(teacher_features, data.split(split)[0], batch_size) for split in ("train", "val")}


def _predict(teacher_features: keras.Model, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, ...]:
    outputs = teacher_features.predict(x, batch_size=4 * batch_size, verbose=0)
    return tuple(outputs) if isinstance(outputs, list) else (outputs,)


def _pipeline(tensors: tuple, batch_size: int, seed: int | None = None):
    """Batched, shuffled when seeded, sharded by data under tf.distribute (as ``Dataset.as_tf``)."""
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if seed is not None:
        ds = ds.shuffle(len(tensors[0]), seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)
