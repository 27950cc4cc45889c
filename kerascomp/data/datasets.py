"""Datasets from one spec string: ``digits``, ``file.npz``, ``folder/`` or ``tfds:NAME``.

Every loader returns a :class:`Dataset` with three splits. The test split is
either the source's own or a stratified, seeded hold-out; the validation split
is always carved from the training data, so nothing that tunes a model
(early stopping, block swap decisions, sensitivity scans) ever sees the test
split. The pixel scaling applied here is recorded in :class:`Scaling` so that
export and the edge runtime can feed a deployed model exactly what it saw.
"""

from __future__ import annotations

import dataclasses
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from kerascomp.errors import DataError, first_line

__all__ = ["Dataset", "Scaling", "load_data", "SPLITS"]

SPLITS = ("train", "val", "test")
DIGITS_TEST_FRACTION = 0.25  # 450 of sklearn's 1,797 digits
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclasses.dataclass(frozen=True)
class Scaling:
    """How raw pixels become model inputs: ``model_input = raw * scale + offset``."""

    scale: float = 1.0
    offset: float = 0.0

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return (np.asarray(raw, dtype=np.float32) * self.scale + self.offset).astype(np.float32)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "offset": self.offset}


@dataclasses.dataclass
class Dataset:
    """Train/validation/test arrays (inputs already scaled, integer labels) plus metadata."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    scaling: Scaling
    seed: int = 0

    @classmethod
    def from_arrays(cls, x, y, **kwargs) -> "Dataset":
        """From numpy arrays: see :func:`kerascomp.data.arrays.from_arrays` (``test=(x, y)``, ``val_fraction``...)."""
        from kerascomp.data.arrays import from_arrays  # it builds on this module
        return from_arrays(x, y, **kwargs)

    @classmethod
    def from_tf_dataset(cls, dataset, **kwargs) -> "Dataset":
        """From a ``tf.data.Dataset`` of ``(x, y)``: see :func:`kerascomp.data.arrays.from_tf_dataset`."""
        from kerascomp.data.arrays import from_tf_dataset  # it builds on this module
        return from_tf_dataset(dataset, **kwargs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x, y)`` of the ``train``, ``val`` or ``test`` split."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def as_tf(self, split: str, batch_size: int, shuffle: bool = False, seed: int | None = None):
        """A batched ``tf.data.Dataset`` of ``(x, y)``, sharded by data under ``tf.distribute``."""
        from kerascomp.backend import tf  # see _image_size

        x, y = self.split(split)
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(x), seed=self.seed if seed is None else seed, reshuffle_each_iteration=True)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)

    def check_fits(self, input_shape, num_classes: int | None = None, what: str = "the model") -> None:
        """DataError unless these examples fit ``what``'s input shape (and class count): the one check of it."""
        shape = tuple(int(d) for d in input_shape)
        if shape != self.input_shape:
            raise DataError(f"data {self.name!r} has inputs {self.input_shape} but {what} expects inputs {shape}"
                            f"{_shape_hint(self.input_shape, shape)}")
        if num_classes is not None and int(num_classes) != self.num_classes:
            raise DataError(f"data {self.name!r} has {self.num_classes} classes but {what} outputs {num_classes}")

    def with_scaling(self, scaling: Scaling | dict) -> "Dataset":
        """The same examples under another input scaling (e.g. raw pixels for a model that rescales itself)."""
        scaling = scaling if isinstance(scaling, Scaling) else Scaling(**scaling)
        if scaling == self.scaling:
            return self
        def convert(x: np.ndarray) -> np.ndarray:
            return scaling.apply((x - self.scaling.offset) / self.scaling.scale)
        return dataclasses.replace(self, x_train=convert(self.x_train), x_val=convert(self.x_val),
                                   x_test=convert(self.x_test), scaling=scaling)

    def describe(self) -> dict:
        """The facts a report, a sidecar or a resumed run needs about this data."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "scaling": self.scaling.to_dict(),
            "n_train": len(self.y_train),
            "n_val": len(self.y_val),
            "n_test": len(self.y_test),
            "seed": self.seed,
        }


def _shape_hint(have: tuple, want: tuple) -> str:
    """The loading option that makes image data fit a model, where one does."""
    if len(have) != 3 or len(want) != 3:
        return ""
    if have[:2] == want[:2] and {have[2], want[2]} == {1, 3}:
        mode = "grayscale" if want[2] == 1 else "rgb"
        return f"; load the images as {mode} (--color-mode {mode}, or color_mode={mode!r})"
    if have[2] == want[2]:
        return (f"; resize the images to {want[0]}x{want[1]} (--image-size {want[0]}x{want[1]} for an image folder, "
                f"or image_size=({want[0]}, {want[1]}))")
    return ""


def load_data(
    spec: str,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_size: Sequence[int] | None = None,
    color_mode: str = "rgb",
) -> Dataset:
    """Load the dataset named by ``spec``.

    Args:
        spec: ``digits`` (scikit-learn's embedded 8x8 digits, no network),
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
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if spec == "digits":
        source = _digits()
        test_fraction = DIGITS_TEST_FRACTION
    elif spec.startswith("tfds:"):
        source = _tfds(spec[len("tfds:"):])
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(f"dataset {spec!r} not found: expected 'digits', 'tfds:NAME', a .npz file or an image folder")
        if path.is_dir():
            source = _folder(path, image_size, color_mode)
        else:
            source = _npz(path)
    return _assemble(spec, source, val_fraction, test_fraction, seed)


@dataclasses.dataclass
class _Source:
    """What a loader found: raw arrays, and a test split only if the source has one."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    scaling: Scaling
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def _assemble(name: str, source: _Source, val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    x, y = source.x, source.y
    if len(np.unique(y)) < 2:
        raise DataError(f"{name}: every training label is {y[0]}; a classifier needs at least two classes")
    if source.x_test is None:
        x, x_test, y, y_test = _stratified_split(x, y, test_fraction, seed, "test")
    else:
        x_test, y_test = source.x_test, source.y_test
    x_train, x_val, y_train, y_val = _stratified_split(x, y, val_fraction, seed, "validation")
    return Dataset(
        name=name,
        x_train=source.scaling.apply(x_train),
        y_train=y_train,
        x_val=source.scaling.apply(x_val),
        y_val=y_val,
        x_test=source.scaling.apply(x_test),
        y_test=y_test,
        class_names=source.class_names,
        scaling=source.scaling,
        seed=seed,
    )


def _stratified_split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int, what: str):
    """Split off ``fraction`` of the data, stratified by class where every class allows it."""
    from sklearn.model_selection import train_test_split

    n_held = int(np.ceil(len(y) * fraction))
    if n_held < 1 or len(y) - n_held < 1:
        raise DataError(f"too few examples ({len(y)}) to hold out a {what} split")
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 and n_held >= np.count_nonzero(counts) else None
    if stratify is None:
        warnings.warn(f"some classes are too rare for a stratified {what} split; splitting at random", stacklevel=3)
    return train_test_split(x, y, test_size=fraction, random_state=seed, stratify=stratify)


def _digits() -> _Source:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[..., None]  # (N, 8, 8, 1), values 0..16
    return _Source(images, digits.target.astype(np.int64), tuple(str(c) for c in digits.target_names), Scaling(1.0 / 16.0))


def _npz(path: Path) -> _Source:
    if not zipfile.is_zipfile(path):
        raise DataError(f"cannot read {path} as .npz: not a NumPy .npz archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path} as .npz: {first_line(exc)}") from None
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        x, y = _images(arrays["x_train"], path, "x_train"), _labels(arrays["y_train"], path, "y_train")
        x_test, y_test = _images(arrays["x_test"], path, "x_test"), _labels(arrays["y_test"], path, "y_test")
        _check_pair(x, y, path, "x_train/y_train")
        _check_pair(x_test, y_test, path, "x_test/y_test")
        if x.shape[1:] != x_test.shape[1:]:
            raise DataError(f"{path}: x_train images are {x.shape[1:]} but x_test images are {x_test.shape[1:]}")
    elif {"x", "y"} <= arrays.keys():
        x, y = _images(arrays["x"], path, "x"), _labels(arrays["y"], path, "y")
        _check_pair(x, y, path, "x/y")
        x_test = y_test = None
    else:
        raise DataError(f"{path} must hold x_train, y_train, x_test, y_test (or x, y); found {', '.join(sorted(arrays)) or 'nothing'}")
    all_labels = y if y_test is None else np.concatenate([y, y_test])
    class_names = _class_names(arrays.get("classes"), int(all_labels.max()) + 1, path)
    if all_labels.max() >= len(class_names):
        raise DataError(f"{path}: label {all_labels.max()} but only {len(class_names)} class names")
    return _Source(x, y, class_names, _scaling_for(x), x_test, y_test)


def _images(x: np.ndarray, path: Path, key: str) -> np.ndarray:
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


def _labels(y: np.ndarray, path: Path, key: str) -> np.ndarray:
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


def _check_pair(x: np.ndarray, y: np.ndarray, path: Path, split: str) -> None:
    if len(x) != len(y):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels ({split})")


def _class_names(names: np.ndarray | None, num_classes: int, path: Path) -> tuple[str, ...]:
    if names is None:
        return tuple(str(i) for i in range(num_classes))
    names = tuple(str(n) for n in np.asarray(names).reshape(-1))
    if len(names) < num_classes:
        raise DataError(f"{path}: 'classes' names {len(names)} classes but labels go up to {num_classes - 1}")
    return names


def _scaling_for(x: np.ndarray) -> Scaling:
    """Map 8-bit pixels (integer, or float in 0..255) to [0, 1]; leave already-scaled floats alone."""
    if np.issubdtype(x.dtype, np.integer) or 1.0 < float(x.max()) <= 255.0:
        return Scaling(1.0 / 255.0)
    return Scaling()


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

    width, height = keras.utils.load_img(first).size
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
        raise DataError(f"cannot read images from {root}: {first_line(exc)}") from None
    if not pairs:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class subfolders of {root}")
    x = np.stack([p[0] for p in pairs]).astype(np.float32)
    return x, np.array([p[1] for p in pairs], dtype=np.int64)


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
        x_test, y_test = _images(x_test, Path(name), "test"), _labels(y_test, Path(name), "test labels")
    label = builder.info.supervised_keys[1]
    class_names = tuple(builder.info.features[label].names)
    x = _images(x, Path(name), "train")
    return _Source(x, _labels(y, Path(name), "train labels"), class_names, _scaling_for(x), x_test, y_test)
