"""A dataset in memory: three splits, the input scaling they record, and how arrays become one.

:class:`Dataset` holds train/validation/test arrays (inputs already scaled,
integer labels). :func:`from_arrays` and :func:`from_tf_dataset` build one
from what a Python user holds, with the checks and the splits every file
loader of :mod:`kerascomp.data.datasets` uses too (image shapes, finite
values, integer or one-hot labels; stratified, seeded hold-outs), so a
notebook's data and a file's give the same :class:`Dataset`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from kerascomp.data._arrays import check_pair, class_names_of, head_names, held_out, images, targets
from kerascomp.errors import DataError
from kerascomp.tasks import CLASSIFICATION, REGRESSION, SEGMENTATION, Task, get_task, infer_task, multi_output

__all__ = ["Dataset", "Scaling", "SPLITS", "from_arrays", "from_tf_dataset", "output_names"]

SPLITS = ("train", "val", "test")


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
    """Train/validation/test arrays (inputs already scaled) plus metadata.

    Targets are integer labels for ``task`` classification, float arrays
    ``(N,)`` or ``(N, K)`` for regression (``class_names`` then empty), and
    integer masks ``(N, H, W)``, a class per pixel, for segmentation; for a
    model with several outputs, a dict of such arrays by output name (the
    task then has one task per output, :func:`kerascomp.tasks.multi_output`).
    """

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
    task: Task = CLASSIFICATION

    @classmethod
    def from_arrays(cls, x, y, **kwargs) -> "Dataset":
        """From numpy arrays: see :func:`from_arrays` (``test=(x, y)``, ``val_fraction``, ``class_names``...)."""
        return from_arrays(x, y, **kwargs)

    @classmethod
    def from_tf_dataset(cls, dataset, **kwargs) -> "Dataset":
        """From a ``tf.data.Dataset`` of ``(x, y)``, batched or not: see :func:`from_tf_dataset`."""
        return from_tf_dataset(dataset, **kwargs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_outputs(self):
        """The units a model's output needs: one per class (per pixel for a segmenter), or one per regression
        target; by output name for several outputs."""
        if self.task.heads:
            return {name: self._head_units(name) for name in self.task.head_tasks}
        if self.task != REGRESSION:
            return self.num_classes
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])

    @property
    def output_shape(self):
        """The shape of a model's output for one example: ``(units,)``, or a segmenter's ``(H, W, classes)``;
        by output name for several outputs."""
        if self.task.heads:
            return {name: self.head(name).output_shape for name in self.task.head_tasks}
        if self.task == SEGMENTATION:
            return (*(int(d) for d in self.y_train.shape[1:3]), self.num_classes)
        return (self.num_outputs,)

    def head(self, name: str) -> "Dataset":
        """The same examples with one output's targets and task: how that output is scored and checked."""
        task = self.task.head_tasks[name]
        names = tuple(str(i) for i in range(self._head_units(name))) if task != REGRESSION else ()
        return dataclasses.replace(self, y_train=self.y_train[name], y_val=self.y_val[name], y_test=self.y_test[name],
                                   task=task, class_names=names)

    def _head_units(self, name: str) -> int:
        task, y = self.task.head_tasks[name], self.y_train[name]
        if task == REGRESSION:
            return 1 if y.ndim == 1 else int(y.shape[1])
        return 1 + max(int(getattr(self, f"y_{split}")[name].max(initial=0)) for split in SPLITS)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x, y)`` of the ``train``, ``val`` or ``test`` split."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def as_tf(self, split: str, batch_size: int, shuffle: bool = False, seed: int | None = None,
              outputs: Sequence[str] | None = None):
        """A batched ``tf.data.Dataset`` of ``(x, y)``, sharded by data under ``tf.distribute``; several outputs'
        targets as a tuple in the order of ``outputs`` (a model's, :func:`output_names`)."""
        from kerascomp.backend import tf  # see _image_size

        x, y = self.split(split)
        if isinstance(y, dict):  # by position: a compression wrapper renames an output layer, not its place
            y = tuple(y[name] for name in outputs or self.task.head_tasks)
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(x), seed=self.seed if seed is None else seed, reshuffle_each_iteration=True)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)

    def check_model(self, model, what: str = "the model") -> None:
        """:meth:`check_fits` of a Keras model: its input, and its output or its outputs by name."""
        shapes = model.output_shape
        outputs = dict(zip(output_names(model), (s[1:] for s in shapes))) if isinstance(shapes, list) else shapes[1:]
        self.check_fits(model.input_shape[1:], outputs, what)

    def check_fits(self, input_shape, output_shape=None, what: str = "the model") -> None:
        """DataError unless these examples fit ``what``'s input shape (and output shape, batch axis left out; a
        dict of them by name for several outputs): the one check of it."""
        shape = tuple(int(d) for d in input_shape)
        if shape != self.input_shape:
            raise DataError(f"data {self.name!r} has inputs {self.input_shape} but {what} expects inputs {shape}"
                            f"{_shape_hint(self.input_shape, shape)}")
        if output_shape is None:
            return
        if isinstance(output_shape, dict) or self.task.heads:
            named = output_shape if isinstance(output_shape, dict) else {}
            if set(named) != set(self.task.head_tasks):
                raise DataError(f"data {self.name!r} has targets for {_names(self.task.head_tasks)} but {what} "
                                f"outputs {_names(named) if named else 'one unnamed output'}")
            for name, shape in named.items():
                self.head(name).check_fits(input_shape, shape, f"{what} (output {name!r})")
            return
        outputs = tuple(-1 if d is None else int(d) for d in output_shape)
        if len(outputs) != len(self.output_shape):
            raise DataError(f"data {self.name!r} is {self.task.name} (outputs {self.output_shape} per example) but "
                            f"{what} outputs {outputs}; state the task (--task) or pick a model made for it")
        if outputs[-1] != self.num_outputs:
            raise DataError(f"data {self.name!r} has {self.num_outputs} {self.task.outputs} but {what} outputs "
                            f"{outputs[-1]}")
        if any(d not in (w, -1) for d, w in zip(outputs[:-1], self.output_shape[:-1])):
            raise DataError(f"data {self.name!r} has masks of {self.output_shape[:-1]} pixels but {what} outputs "
                            f"{outputs[:-1]}")

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
            **({} if self.task == CLASSIFICATION else {"task": self.task.name}),
            **({"heads": {name: head.name for name, head in self.task.heads}} if self.task.heads else {}),
            "n_train": len(self.x_train),
            "n_val": len(self.x_val),
            "n_test": len(self.x_test),
            "seed": self.seed,
            "input_range": self.raw_range(),
        }

    def raw_range(self) -> list[float]:
        """``[min, max]`` of the training inputs before scaling: what a deployed model expects to be fed."""
        lo, hi = (float(v - self.scaling.offset) / self.scaling.scale for v in (self.x_train.min(), self.x_train.max()))
        return [round(lo, 4), round(hi, 4)]


def output_names(model) -> list[str]:
    """The names of a Keras model's outputs as its targets are keyed: an output layer wrapped by a compression
    technique (``prune_low_magnitude_digit``, ``quant_digit``) answers to the layer it wraps (``digit``)."""
    layers = (model.get_layer(name) for name in model.output_names)
    return [getattr(layer, "layer", layer).name for layer in layers]


def _names(names) -> str:
    return ", ".join(repr(n) for n in names)


def _shape_hint(have: tuple, want: tuple) -> str:
    """The loading options that make image data fit a model, where they can: its colour mode, its size, or both."""
    if len(have) != 3 or len(want) != 3 or (have[2] != want[2] and {have[2], want[2]} != {1, 3}):
        return ""
    fixes = []
    if have[2] != want[2]:
        mode = "grayscale" if want[2] == 1 else "rgb"
        fixes.append(f"load the images as {mode} (--color-mode {mode}, or color_mode={mode!r})")
    if have[:2] != want[:2]:
        fixes.append(f"resize them to {want[0]}x{want[1]} (--image-size {want[0]}x{want[1]} for an image folder, "
                     f"or image_size=({want[0]}, {want[1]}))")
    return "; " + " and ".join(fixes)


def from_arrays(x, y, *, test: tuple | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                class_names: Sequence[str] | None = None, scaling: Scaling | dict | None = None, seed: int = 0,
                name: str = "arrays", task: str | None = None) -> Dataset:
    """A :class:`Dataset` of images ``x`` (N, H, W[, C]) and targets ``y``: integer or one-hot labels, or floats.

    Validation (``val_fraction``) and, without ``test=(x_test, y_test)``, test
    (``test_fraction``) splits are held out as :func:`load_data` does.
    ``scaling`` maps the raw values to the model's inputs; by default 8-bit
    pixels (integers, or floats up to 255) become ``[0, 1]`` and other floats
    stay as they are. ``task`` (``classification`` or ``regression``) is
    inferred from ``y`` when not given (:func:`kerascomp.tasks.infer_task`):
    float targets that are whole numbers read as class labels, so state
    ``task="regression"`` for those.
    """
    if isinstance(scaling, dict):
        scaling = Scaling(**scaling)
    if isinstance(y, dict):  # targets of several outputs by name, stored as an .npz stores them
        arrays = {"x": x, **{f"y_{k}": v for k, v in y.items()}} if test is None else {
            "x_train": x, "x_test": _test_pair(test, name)["x_test"], **{f"y_train_{k}": v for k, v in y.items()},
            **{f"y_test_{k}": v for k, v in dict(test[1]).items()}}
    else:
        arrays = {"x": x, "y": y} if test is None else {"x_train": x, "y_train": y, **_test_pair(test, name)}
    if class_names is not None:
        arrays["classes"] = np.asarray(class_names)
    return _assemble(name, _source_of(arrays, name, task, scaling), val_fraction, test_fraction, seed)


def _test_pair(test: tuple, name: str) -> dict:
    if len(test) != 2:
        raise DataError(f"{name}: test must be a pair (x_test, y_test)")
    return {"x_test": test[0], "y_test": test[1]}


def _source_of(arrays: dict, path, task: str | None = None, scaling: Scaling | None = None) -> "_Source":
    """What an ``.npz`` (or the arrays of :func:`from_arrays`) holds: ``x_train, y_train, x_test, y_test`` or
    ``x, y``, with ``classes`` names optional; checked, with the task stated or inferred from the targets."""
    heads = head_names(arrays)
    if len(heads) > 1:
        return _multi_source(arrays, path, heads, task, scaling)
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        keys = ("x_train", "y_train")
    elif {"x", "y"} <= arrays.keys():
        keys = ("x", "y")
    else:
        raise DataError(f"{path} must hold x_train, y_train, x_test, y_test (or x, y); found "
                        f"{', '.join(sorted(arrays)) or 'nothing'}")
    kind = get_task(task if task is not None else infer_task(np.asarray(arrays[keys[1]])))
    x, y = images(np.asarray(arrays[keys[0]]), path, keys[0]), targets(np.asarray(arrays[keys[1]]), path, keys[1], kind)
    check_pair(x, y, path, "/".join(keys))
    x_test = y_test = None
    if keys[0] == "x_train":
        x_test = images(np.asarray(arrays["x_test"]), path, "x_test")
        y_test = targets(np.asarray(arrays["y_test"]), path, "y_test", kind)
        check_pair(x_test, y_test, path, "x_test/y_test")
        if x.shape[1:] != x_test.shape[1:]:
            raise DataError(f"{path}: x_train images are {x.shape[1:]} but x_test images are {x_test.shape[1:]}")
        if y.shape[1:] != y_test.shape[1:]:
            raise DataError(f"{path}: y_train targets are {y.shape[1:]} but y_test targets are {y_test.shape[1:]}")
    names: tuple[str, ...] = ()
    if kind != REGRESSION:
        top = int(y.max()) if y_test is None else max(int(y.max()), int(y_test.max()))
        names = class_names_of(arrays.get("classes"), top + 1, path)
    return _Source(x, y, names, scaling or _scaling_for(x), x_test, y_test, kind)


def _multi_source(arrays: dict, path, heads: list[str], task: str | None, scaling: Scaling | None) -> "_Source":
    """Targets for several outputs, each checked as its own task (inferred from its targets)."""
    if task not in (None, "multi-output"):
        raise DataError(f"{path} holds targets for {len(heads)} outputs ({_names(heads)}): task {task!r} names one")
    split = {"x_train", "x_test"} <= arrays.keys()  # as head_names reads it
    x = images(np.asarray(arrays["x_train" if split else "x"]), path, "x_train" if split else "x")
    x_test = images(np.asarray(arrays["x_test"]), path, "x_test") if split else None
    kinds, y, y_test = {}, {}, {}
    for name in heads:
        key = f"y_train_{name}" if split else f"y_{name}"
        kinds[name] = get_task(infer_task(np.asarray(arrays[key])))
        y[name] = targets(np.asarray(arrays[key]), path, key, kinds[name])
        check_pair(x, y[name], path, f"{'x_train' if split else 'x'}/{key}")
        if split:
            if f"y_test_{name}" not in arrays:
                raise DataError(f"{path} has {key} but no y_test_{name}")
            y_test[name] = targets(np.asarray(arrays[f"y_test_{name}"]), path, f"y_test_{name}", kinds[name])
            check_pair(x_test, y_test[name], path, f"x_test/y_test_{name}")
    return _Source(x, y, (), scaling or _scaling_for(x), x_test, y_test if split else None, multi_output(kinds))


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


@dataclasses.dataclass
class _Source:
    """What a loader found: raw arrays, and a test split only if the source has one."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    scaling: Scaling
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    task: Task = CLASSIFICATION


def _assemble(name: str, source: _Source, val_fraction: float, test_fraction: float, seed: int) -> Dataset:
    x, y = source.x, source.y
    for output, values in (y.items() if isinstance(y, dict) else ()):
        if len(np.unique(values, axis=0)) < 2:
            raise DataError(f"{name}: every training target of output {output!r} is {values[0]}; there is nothing "
                            "to learn")
    if not isinstance(y, dict) and len(np.unique(y, axis=0)) < 2:
        if source.task == CLASSIFICATION:
            raise DataError(f"{name}: every training label is {y[0]}; a classifier needs at least two classes")
        raise DataError(f"{name}: every training target is {y[0]}; there is nothing to learn")
    if source.x_test is None:
        x, x_test, y, y_test = held_out(x, y, test_fraction, seed, "test", source.task)
    else:
        x_test, y_test = source.x_test, source.y_test
    x_train, x_val, y_train, y_val = held_out(x, y, val_fraction, seed, "validation", source.task)
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
        task=source.task,
    )


def _scaling_for(x: np.ndarray) -> Scaling:
    """Map 8-bit pixels (integer, or float in 0..255) to [0, 1]; leave already-scaled floats alone."""
    if np.issubdtype(x.dtype, np.integer) or 1.0 < float(x.max()) <= 255.0:
        return Scaling(1.0 / 255.0)
    return Scaling()
