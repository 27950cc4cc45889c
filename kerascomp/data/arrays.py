"""Datasets from what a Python user already holds: numpy arrays or a ``tf.data.Dataset``.

The same checks as an ``.npz`` file (image shapes, finite values, integer or
one-hot labels) and the same splits (stratified, seeded) as :func:`load_data`,
so a notebook's data and a file's give the same :class:`Dataset`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from kerascomp.data.datasets import (Dataset, Scaling, _assemble, _check_pair, _class_names, _images, _labels,
                                     _scaling_for, _Source)
from kerascomp.errors import DataError

__all__ = ["from_arrays", "from_tf_dataset"]


def from_arrays(x, y, *, test: tuple | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                class_names: Sequence[str] | None = None, scaling: Scaling | dict | None = None, seed: int = 0,
                name: str = "arrays") -> Dataset:
    """A :class:`Dataset` of images ``x`` (N, H, W[, C]) and labels ``y`` (integer or one-hot).

    Validation (``val_fraction``) and, without ``test=(x_test, y_test)``, test
    (``test_fraction``) splits are held out as :func:`load_data` does.
    ``scaling`` maps the raw values to the model's inputs; by default 8-bit
    pixels (integers, or floats up to 255) become ``[0, 1]`` and other floats
    stay as they are.
    """
    x, y = _images(np.asarray(x), name, "x"), _labels(np.asarray(y), name, "y")
    _check_pair(x, y, name, "x/y")
    x_test = y_test = None
    if test is not None:
        if len(test) != 2:
            raise DataError(f"{name}: test must be a pair (x_test, y_test)")
        x_test, y_test = _images(np.asarray(test[0]), name, "x_test"), _labels(np.asarray(test[1]), name, "y_test")
        _check_pair(x_test, y_test, name, "x_test/y_test")
        if x.shape[1:] != x_test.shape[1:]:
            raise DataError(f"{name}: x images are {x.shape[1:]} but x_test images are {x_test.shape[1:]}")
    labels = y if y_test is None else np.concatenate([y, y_test])
    names = _class_names(None if class_names is None else np.asarray(class_names), int(labels.max()) + 1, name)
    if scaling is None:
        scaling = _scaling_for(x)
    elif isinstance(scaling, dict):
        scaling = Scaling(**scaling)
    return _assemble(name, _Source(x, y, names, scaling, x_test, y_test), val_fraction, test_fraction, seed)


def from_tf_dataset(dataset, *, test=None, name: str = "tf.data", **kwargs) -> Dataset:
    """A :class:`Dataset` from a ``tf.data.Dataset`` of ``(x, y)`` (batched or not), read into memory once.

    ``test`` may be another such dataset or an ``(x, y)`` pair; the other
    arguments are :func:`from_arrays`'s.
    """
    x, y = _materialize(dataset, name)
    if test is not None and not isinstance(test, tuple):
        test = _materialize(test, f"{name} test")
    return from_arrays(x, y, test=test, name=name, **kwargs)


def _materialize(dataset, name: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for element in dataset.as_numpy_iterator():
        if not isinstance(element, tuple) or len(element) != 2:
            raise DataError(f"{name}: elements must be (x, y) pairs")
        xs.append(element[0])
        ys.append(element[1])
    if not xs:
        raise DataError(f"{name} is empty")
    spec = dataset.element_spec[0].shape  # .batch() leaves the batch axis unknown
    batched = xs[0].ndim == 4 or (spec.rank is not None and spec.rank > 0 and spec[0] is None)
    stack = np.concatenate if batched else np.stack
    return stack(xs), stack(ys)
