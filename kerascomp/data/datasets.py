"""Datasets from one spec string: ``digits``, ``file.npz``, ``folder/`` or ``tfds:NAME``.

Every loader returns a :class:`~kerascomp.data.dataset.Dataset` with three splits. The test split is
either the source's own or a stratified, seeded hold-out; the validation split
is always carved from the training data, so nothing that tunes a model
(early stopping, block swap decisions, sensitivity scans) ever sees the test
split. The pixel scaling applied here is recorded in :class:`Scaling` so that
export and the edge runtime can feed a deployed model exactly what it saw.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from kerascomp.data._arrays import images, labels
from kerascomp.data.dataset import (SPLITS, Dataset, Scaling, _assemble, _scaling_for, _Source,
                                    _source_of)
from kerascomp.data.shapes import CLASSES as SHAPE_CLASSES, make_shapes
from kerascomp.errors import DataError, first_line
from kerascomp.tasks import CLASSIFICATION, REGRESSION, SEGMENTATION, multi_output

__all__ = ["Dataset", "Scaling", "load_data", "SPLITS", "IMAGE_SUFFIXES", "EMBEDDED"]

DIGITS_TEST_FRACTION = 0.25  # 450 of sklearn's 1,797 digits
DIGITS_CENTROID = "digits-centroid"  # the digits, each with where its ink's centre lies: an embedded regression
DIGITS_MULTI = "digits-multi"  # the digits with two targets, the class and the ink's centre: two outputs
SHAPES = "shapes"  # synthetic shapes with a class per pixel: an embedded segmentation
EMBEDDED = ("digits", DIGITS_CENTROID, DIGITS_MULTI, SHAPES)  # data specs that need no file and no network
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def load_data(
    spec: str | os.PathLike,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_size: Sequence[int] | None = None,
    color_mode: str = "rgb",
    task: str | None = None,
) -> Dataset:
    """Load the dataset named by ``spec``.

    Args:
        spec: ``digits`` (scikit-learn's embedded 8x8 digits, no network),
            ``digits-centroid`` (the same images; target: the ink's centre of
            mass, row and column in pixels: a regression, no network),
            ``digits-multi`` (the same images with both targets, the
            class as output ``digit`` and the centre as output ``centre``:
            a model with two outputs, no network),
            ``shapes`` (1,200 synthetic 32x32 images of squares, discs and
            triangles with a class per pixel: a segmentation, no network),
            a ``.npz`` path, an image folder, or ``tfds:NAME`` (needs network
            the first time).
        val_fraction: share of the training data held out for validation
            (stratified, seeded).
        test_fraction: share held out for testing when the source has no test
            split of its own.
        seed: fixes both hold-outs.
        image_size: ``(height, width)`` to resize folder images to; by default
            the size of the first image.
        color_mode: ``rgb`` or ``grayscale`` for folder images.
        task: ``classification``, ``regression`` (an ``.npz`` of float
            targets) or ``segmentation`` (an ``.npz`` of masks); inferred
            from an ``.npz``'s targets when None. Digits, image folders and
            tfds are classification, the embedded specs their own task.
    """
    spec = os.fspath(spec)  # a path object names a file as its string does
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if task not in (None, "classification") and (spec == "digits" or spec.startswith("tfds:")
                                                  or Path(spec).expanduser().is_dir()):
        raise DataError(f"dataset {spec!r} holds class labels: task {task!r} needs an .npz of its targets")
    if spec in EMBEDDED:
        source = {"digits": _digits, DIGITS_CENTROID: _digits_centroid, DIGITS_MULTI: _digits_multi,
                  SHAPES: _shapes}[spec]()
        if task is not None and task != source.task.name:
            raise DataError(f"dataset {spec!r} is {source.task.name}, not {task}")
        test_fraction = DIGITS_TEST_FRACTION if spec.startswith("digits") else test_fraction
    elif spec.startswith("tfds:"):
        source = _tfds(spec[len("tfds:"):])
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(f"dataset {spec!r} not found: expected {' or '.join(map(repr, EMBEDDED))}, 'tfds:NAME', "
                            "a .npz file or an image folder")
        if path.is_dir():
            source = _folder(path, image_size, color_mode)
        else:
            source = _npz(path, task)
    return _assemble(spec, source, val_fraction, test_fraction, seed)


def _digits() -> _Source:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[..., None]  # (N, 8, 8, 1), values 0..16
    return _Source(images, digits.target.astype(np.int64), tuple(str(c) for c in digits.target_names), Scaling(1.0 / 16.0))


def _digits_centroid() -> _Source:
    """The digits with a regression target: where the ink's centre of mass lies, (row, column) in pixels.

    Two numbers per image, like a keypoint; offline, as the digits are, so
    regression has an embedded default too.
    """
    digits = _digits()
    ink = digits.x[..., 0]
    rows, cols = np.indices(ink.shape[1:], dtype=np.float32)
    total = ink.sum(axis=(1, 2))
    centre = np.stack([(ink * rows).sum(axis=(1, 2)) / total, (ink * cols).sum(axis=(1, 2)) / total], axis=1)
    return _Source(digits.x, centre.astype(np.float32), (), digits.scaling, task=REGRESSION)


def _digits_multi() -> _Source:
    """The digits with two targets: the class (output ``digit``) and the ink's centre (output ``centre``)."""
    digits, centre = _digits(), _digits_centroid()
    return _Source(digits.x, {"digit": digits.y, "centre": centre.y}, (), digits.scaling,
                   task=multi_output({"digit": CLASSIFICATION, "centre": REGRESSION}))


def _shapes() -> _Source:
    images, masks = make_shapes()
    return _Source(images, masks, SHAPE_CLASSES, Scaling(1.0 / 255.0), task=SEGMENTATION)


def _npz(path: Path, task: str | None) -> _Source:
    if not zipfile.is_zipfile(path):
        raise DataError(f"cannot read {path} as .npz: not a NumPy .npz archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, EOFError) as exc:
        # a damaged archive: bad CRC, an unknown compression method, a truncated member
        raise DataError(f"cannot read {path} as .npz: {first_line(exc)}") from None
    return _source_of(arrays, path, task)


def _folder(path: Path, image_size: Sequence[int] | None, color_mode: str) -> _Source:
    if color_mode not in ("rgb", "grayscale"):
        raise DataError(f"color_mode must be 'rgb' or 'grayscale', got {color_mode!r}")
    split = (path / "train").is_dir() and (path / "test").is_dir()
    train_root = path / "train" if split else path
    class_names = _class_subfolders(train_root)
    size = _image_size(train_root, image_size)
    x, y = _read_folder(train_root, size, color_mode, class_names)
    if not split:
        return _Source(x, y, class_names, Scaling(1.0 / 255.0))
    x_test, y_test = _read_folder(path / "test", size, color_mode, class_names)
    return _Source(x, y, class_names, Scaling(1.0 / 255.0), x_test, y_test)


def _class_subfolders(root: Path) -> tuple[str, ...]:
    subdirs = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if not subdirs:
        raise DataError(f"{root} has no class subfolders (expected {root}/<class name>/<images>)")
    return subdirs


def _image_size(root: Path, image_size: Sequence[int] | None) -> tuple[int, int]:
    if image_size is not None:
        if len(image_size) != 2 or min(image_size) < 1:
            raise DataError(f"image_size must be (height, width), got {tuple(image_size)}")
        return int(image_size[0]), int(image_size[1])
    first = next((p for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES), None)
    if first is None:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class subfolders of {root}")
    # kerascomp.runtime (the edge path) reads Scaling from this module: it must not load the TensorFlow module
    from kerascomp.backend import keras

    try:
        width, height = keras.utils.load_img(first).size
    except Exception as exc:  # PIL raises several types for a file that is no image
        raise DataError(f"cannot read image {first}: {first_line(exc)}") from None
    return height, width


def _read_folder(root: Path, size: tuple[int, int], color_mode: str, class_names: tuple[str, ...]):
    """Read ``root/<class>/*.png`` into arrays with Keras' image utilities."""
    from kerascomp.backend import keras  # see _image_size

    try:
        pairs = list(keras.utils.image_dataset_from_directory(
            root, labels="inferred", label_mode="int", class_names=list(class_names),
            color_mode=color_mode, image_size=size, batch_size=None, shuffle=False,
        ).as_numpy_iterator())
    except Exception as exc:  # a missing class folder (ValueError) or an undecodable file (TF op error)
        bad = _first_unreadable(root, class_names)
        raise DataError(f"cannot read image {bad[0]}: {bad[1]}" if bad else
                        f"cannot read images from {root}: {first_line(exc)}") from None
    if not pairs:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class subfolders of {root}")
    x = np.stack([p[0] for p in pairs]).astype(np.float32)
    return x, np.array([p[1] for p in pairs], dtype=np.int64)


def _first_unreadable(root: Path, class_names: tuple[str, ...]) -> tuple[Path, str] | None:
    """The first image under ``root``'s class folders that TensorFlow's decoder refuses, and why: the error of
    the dataset's decoding ("Invalid PNG data, size 134") names no file, and a folder may hold thousands."""
    from kerascomp.backend import tf  # see _image_size

    for name in class_names:
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:  # the decoder image_dataset_from_directory uses, so the file named is the one that failed
                tf.io.decode_image(tf.io.read_file(str(path)), expand_animations=False)
            except (tf.errors.OpError, ValueError) as exc:
                return path, first_line(exc.message if isinstance(exc, tf.errors.OpError) else exc)
    return None


def _tfds(name: str) -> _Source:
    """Load a TensorFlow Datasets name; needs network the first time, fails clearly offline."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError("tfds: datasets need tensorflow-datasets (pip install tensorflow-datasets)") from None
    try:
        builder = tfds.builder(name)
    except Exception as exc:  # tfds raises its own DatasetNotFoundError and friends
        raise DataError(f"unknown tfds dataset {name!r}: {first_line(exc)}") from None
    try:
        builder.download_and_prepare()
    except Exception as exc:  # network errors surface as many types, all meaning "could not fetch"
        raise DataError(f"could not download tfds dataset {name!r} (offline? tfds: needs network the first time): {first_line(exc)}") from None
    splits = builder.info.splits
    if "train" not in splits:
        raise DataError(f"tfds dataset {name!r} has no 'train' split")
    x, y = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1, as_supervised=True))
    x_test = y_test = None
    if "test" in splits:
        x_test, y_test = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1, as_supervised=True))
        x_test, y_test = images(x_test, Path(name), "test"), labels(y_test, Path(name), "test labels")
    label = builder.info.supervised_keys[1]
    class_names = tuple(builder.info.features[label].names)
    x = images(x, Path(name), "train")
    return _Source(x, labels(y, Path(name), "train labels"), class_names, _scaling_for(x), x_test, y_test)
