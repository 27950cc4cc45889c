"""The checks of arrays that a dataset is made of: images, class labels, regression targets, masks.

Every loader (an ``.npz``, arrays, an image folder, tfds) reads its arrays
through these, so one kind of bad input gets one message wherever it comes
from.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from kerascomp.errors import DataError
from kerascomp.tasks import CLASSIFICATION, SEGMENTATION, Task

__all__ = ["head_names", "images", "labels", "targets", "masks", "check_pair", "class_names_of", "held_out"]


def head_names(arrays: dict) -> list[str]:
    """The outputs an ``.npz`` holds targets for by name: ``y_<output>`` beside ``x`` (or ``y_train_<output>``
    and ``y_test_<output>`` beside ``x_train`` and ``x_test``)."""
    split = {"x_train", "x_test"} <= arrays.keys()
    prefix = "y_train_" if split else "y_"
    if not split and ("x" not in arrays or "y" in arrays):
        return []
    return [key[len(prefix):] for key in arrays if key.startswith(prefix) and key not in ("y_train", "y_test")]


def images(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise DataError(f"{path}: {key} must be images shaped (N, H, W) or (N, H, W, C), got {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: {key} has non-numeric dtype {x.dtype}")
    bad = int(x.size - np.isfinite(x).sum()) if np.issubdtype(x.dtype, np.floating) else 0
    if bad:
        raise DataError(f"{path}: {key} holds {bad:,} NaN or Inf values; clean or impute them before training")
    return x


def labels(y: np.ndarray, path: Path, key: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)  # one-hot
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1 or y.size == 0:
        raise DataError(f"{path}: {key} must be integer labels (N,) or one-hot (N, K), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{path}: {key} must hold integer class labels, got {y.dtype}")
    if y.min() < 0:
        raise DataError(f"{path}: {key} has negative labels")
    return y.astype(np.int64)


def targets(y: np.ndarray, path, key: str, task: Task) -> np.ndarray:
    """Class labels as :func:`labels` reads them, masks as :func:`masks` does, or finite float32 regression
    targets ``(N,)``/``(N, K)``."""
    if task == CLASSIFICATION:
        return labels(y, path, key)
    if task == SEGMENTATION:
        return masks(y, path, key)
    y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim not in (1, 2) or y.size == 0:
        raise DataError(f"{path}: {key} must be regression targets (N,) or (N, K), got shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{path}: {key} has non-numeric dtype {y.dtype}")
    y = y.astype(np.float32)
    if not np.isfinite(y).all():
        raise DataError(f"{path}: {key} holds NaN or Inf targets; clean or impute them before training")
    return y


def masks(y: np.ndarray, path, key: str) -> np.ndarray:
    """Integer masks ``(N, H, W)``, a class per pixel, from masks with or without a last axis of 1, or one-hot."""
    if y.ndim == 4:
        y = y[..., 0] if y.shape[-1] == 1 else y.argmax(axis=-1)
    if y.ndim != 3 or y.size == 0:
        raise DataError(f"{path}: {key} must be masks of class labels (N, H, W) or one-hot (N, H, W, K), got "
                        f"shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0))):
        raise DataError(f"{path}: {key} must hold integer class labels per pixel, got {y.dtype}")
    if y.min() < 0:
        raise DataError(f"{path}: {key} has negative labels")
    return y.astype(np.int64)


def check_pair(x: np.ndarray, y: np.ndarray, path: Path, split: str) -> None:
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels ({split})")
    if y.ndim == 3 and y.shape[1:] != x.shape[1:3]:
        raise DataError(f"{path}: images are {x.shape[1]}x{x.shape[2]} but masks {y.shape[1]}x{y.shape[2]} ({split})")


def class_names_of(names: np.ndarray | None, num_classes: int, path: Path) -> tuple[str, ...]:
    if names is None:
        return tuple(str(i) for i in range(num_classes))
    names = tuple(str(n) for n in np.asarray(names).reshape(-1))
    if len(names) < num_classes:
        raise DataError(f"{path}: 'classes' names {len(names)} classes but labels go up to {num_classes - 1}")
    return names


def held_out(x: np.ndarray, y: np.ndarray, fraction: float, seed: int, what: str, task: Task):
    """Split off ``fraction`` of the data: stratified by class where every class allows it, at random for
    regression targets."""
    from sklearn.model_selection import train_test_split  # sklearn takes a second to import: on use

    n_held = int(np.ceil(len(x) * fraction))
    if n_held < 1 or len(x) - n_held < 1:
        raise DataError(f"too few examples ({len(x)}) to hold out a {what} split")
    if isinstance(y, dict):  # one random split of the examples, every output's targets along
        kept, held = train_test_split(np.arange(len(x)), test_size=fraction, random_state=seed)
        return x[kept], x[held], {k: v[kept] for k, v in y.items()}, {k: v[held] for k, v in y.items()}
    if task != CLASSIFICATION:
        return train_test_split(x, y, test_size=fraction, random_state=seed)
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 and n_held >= np.count_nonzero(counts) else None
    if stratify is None:
        warnings.warn(f"some classes are too rare for a stratified {what} split; splitting at random", stacklevel=3)
    return train_test_split(x, y, test_size=fraction, random_state=seed, stratify=stratify)
