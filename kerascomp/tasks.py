"""What a model predicts and how it is scored: the one home of every task's loss, metric and direction.

A classifier is trained with cross-entropy and judged by accuracy, higher
better, its budget in percentage points; a regressor is trained with the mean
squared error and judged by the mean absolute error, lower better, its budget
in the targets' own units; a segmenter (dense prediction: a class per pixel)
is trained with cross-entropy per pixel and judged by the mean intersection
over union of its classes, higher better, in percentage points. Training,
evaluation, the budget, the strength search and every report read a
:class:`Task` here instead of assuming accuracy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kerascomp.errors import ConfigError

__all__ = ["Task", "TASKS", "METRICS", "CLASSIFICATION", "REGRESSION", "SEGMENTATION", "MULTI_OUTPUT", "get_task",
           "multi_output", "task_of", "task_of_metric", "infer_task", "classifiers_only", "single_output", "per_class_iou"]


@dataclasses.dataclass(frozen=True)
class Task:
    """A task's loss, its metric (the stem of its keys: ``mae`` gives ``val_mae``) and the metric's direction."""

    name: str
    metric: str
    higher_is_better: bool
    unit: str  # of a budget: "pp" (percentage points of the metric) or "" (the metric's own units)
    outputs: str  # what a model's output units are, as a message names them
    heads: tuple = ()  # of a model with several outputs: (output name, Task) pairs, the budget's first

    @property
    def head_tasks(self) -> dict[str, "Task"]:
        """Each output's task by name (empty for a model with one output)."""
        return dict(self.heads)

    @property
    def keys(self) -> tuple[str, str]:
        """The validation and test metric keys of an evaluation (``val_accuracy``, ``test_accuracy``)."""
        return f"val_{self.metric}", f"test_{self.metric}"

    @property
    def percent(self) -> bool:
        """Whether the metric is a share in [0, 1] that people read in per cent (its drops in pp)."""
        return self.unit == "pp"

    def loss(self, outputs=None):
        """The Keras loss the model is trained with: cross-entropy from logits (per pixel for a segmenter), or
        the mean squared error; for several outputs, a list of each one's in the order of ``outputs`` (the
        model's output names)."""
        from kerascomp.backend import keras  # imports TensorFlow: only where a model trains

        if self.heads:
            return [self.head_tasks[name].loss() for name in outputs or self.head_tasks]
        if self == REGRESSION:
            return keras.losses.MeanSquaredError()
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_value(self, y: np.ndarray, outputs: np.ndarray) -> float:
        """The loss of ``outputs`` against the targets ``y`` (a regressor's ``(N,)`` targets meet ``(N, 1)``; the
        sum of every output's, as Keras sums them, for several outputs)."""
        if self.heads:
            return sum(head.loss_value(y[name], outputs[name]) for name, head in self.heads)
        if self == REGRESSION:
            y = np.asarray(y).reshape(len(y), -1)
        return float(self.loss()(y, outputs).numpy())

    def keras_metrics(self, num_outputs, outputs=None):
        """The ``metrics`` of ``compile``, tracked per epoch and named as this task's metric (``val_mean_iou`` in
        a history); for several outputs, a list of each one's in the order of ``outputs`` (``num_outputs``:
        each one's units by name), which Keras names ``val_<output>_<metric>``."""
        if self.heads:
            return [self.head_tasks[name].keras_metrics(num_outputs[name]) for name in outputs or self.head_tasks]
        if self != SEGMENTATION:
            return [self.metric]
        from kerascomp.backend import keras  # see loss

        return [keras.metrics.MeanIoU(num_outputs, sparse_y_pred=False, name=self.metric)]

    def score(self, outputs: np.ndarray, y: np.ndarray) -> float:
        """The metric of ``outputs`` (a model's, logits for a classifier or segmenter) against the targets ``y``."""
        if self.heads:  # the budget's output, the first
            name, head = self.heads[0]
            return head.score(outputs[name], y[name])
        outputs = np.asarray(outputs, dtype=np.float64)
        if self == CLASSIFICATION:
            return float((outputs.argmax(axis=-1) == y).mean())
        if self == SEGMENTATION:
            return float(per_class_iou(outputs.argmax(axis=-1), y, outputs.shape[-1])[1])
        return float(np.abs(outputs.reshape(len(y), -1) - np.asarray(y).reshape(len(y), -1)).mean())

    def scores(self, outputs, y) -> dict[str, float]:
        """Every output's metric by its key stem (``digit_accuracy``, ``centre_mae``); this task's alone for one
        output."""
        if not self.heads:
            return {self.metric: self.score(outputs, y)}
        return {f"{name}_{head.metric}": head.score(outputs[name], y[name]) for name, head in self.heads}

    def drop(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline``, in budget units (negative: better)."""
        worse = baseline - value if self.higher_is_better else value - baseline
        return 100 * worse if self.percent else worse

    def number(self, value: float) -> str:
        """A metric's value as a person reads it: ``75.30%`` of accuracy, ``0.0654`` of MAE."""
        return f"{100 * value:.2f}%" if self.percent else f"{value:.4g}"

    def amount(self, drop: float, signed: bool = False, unit: bool = True) -> str:
        """A drop or difference in budget units: ``-0.70 pp`` of accuracy, ``0.0123`` of MAE (``unit`` False:
        the number alone, for a table whose header names the unit)."""
        text = format(drop, ("+" if signed else "") + (".2f" if self.percent else ".4g"))
        return f"{text} pp" if self.percent and unit else text

    def budget(self, max_drop: float) -> str:
        """A budget as the user gave it: ``1.0 pp``, ``0.02``."""
        return f"{max_drop} pp" if self.percent else f"{max_drop}"


def per_class_iou(predicted: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[np.ndarray, float]:
    """Intersection over union of each class over a whole split, and their mean over the classes that occur.

    A class absent from both the masks and the predictions has no IoU (NaN)
    and does not count in the mean, as in Keras's ``MeanIoU``.
    """
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.int64).reshape(-1)
    confusion = np.bincount(y * num_classes + predicted, minlength=num_classes ** 2).reshape(num_classes, -1)
    hits = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, hits / union, np.nan)
    return iou, float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


CLASSIFICATION = Task("classification", "accuracy", True, "pp", "classes")
REGRESSION = Task("regression", "mae", False, "", "regression targets")
SEGMENTATION = Task("segmentation", "mean_iou", True, "pp", "classes per pixel")
TASKS = {task.name: task for task in (CLASSIFICATION, REGRESSION, SEGMENTATION)}
METRICS = tuple(task.metric for task in TASKS.values())  # what a history logs; an output's as digit_accuracy
MULTI_OUTPUT = "multi-output"  # a task made of one per output: see multi_output
_OTHER_TASKS_TAKE = "train, prune, cluster, qat, shrink, distill, convert, bench and run"  # beyond classification
_SEVERAL_OUTPUTS_TAKE = "train, prune, cluster, qat, shrink, convert to .tflite, bench and run"


def get_task(name: str) -> Task:
    """The task called ``name``; ConfigError naming the known ones otherwise."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; use one of {', '.join(TASKS)}")
    return TASKS[name]


def multi_output(heads: dict[str, Task]) -> Task:
    """The task of a model with several outputs, each with its own task; the first output's metric is the one a
    budget reads (its key: ``val_<output>_<metric>``, as Keras names it)."""
    if len(heads) < 2:
        raise ConfigError(f"several outputs need at least two targets, got {len(heads)}")
    if any(head.heads for head in heads.values()):
        raise ConfigError("an output of a multi-output model cannot have outputs of its own")
    (name, first), *_ = heads.items()
    return Task(MULTI_OUTPUT, f"{name}_{first.metric}", first.higher_is_better, first.unit, "outputs",
                tuple(heads.items()))


def task_of(described: dict) -> Task:
    """The task a dataset's description (``Dataset.describe``, a report's ``dataset``) names."""
    name = described.get("task", "classification")
    if name != MULTI_OUTPUT:
        return get_task(name)
    return multi_output({output: get_task(task) for output, task in described["heads"].items()})


def task_of_metric(metric: str) -> Task:
    """The task judged by ``metric`` (a record names its metric, not its task; an output's metric ends in its
    task's, ``centre_mae``); classification by default."""
    exact = next((task for task in TASKS.values() if task.metric == metric), None)
    return exact or next((task for task in TASKS.values() if metric.endswith(f"_{task.metric}")), CLASSIFICATION)


def classifiers_only(task: Task, what: str) -> None:
    """ConfigError, in one line, where ``what`` still judges models by accuracy and ``task`` is another."""
    if task != CLASSIFICATION:
        raise ConfigError(f"{what} works on classifiers only so far; this data is {task.name} "
                          f"({_SEVERAL_OUTPUTS_TAKE if task.heads else _OTHER_TASKS_TAKE} take it)")


def single_output(task: Task, what: str) -> None:
    """ConfigError, in one line, where ``what`` matches one output's logits and ``task`` has several outputs."""
    if task.heads:
        raise ConfigError(f"{what} works on models with one output so far; this data has {len(task.heads)} "
                          f"({', '.join(task.head_tasks)}): {_SEVERAL_OUTPUTS_TAKE} take it")


def infer_task(y: np.ndarray) -> str:
    """The task that targets ``y`` imply: a class per pixel (``(N, H, W)`` whole numbers, or one-hot per pixel)
    is ``segmentation``; float targets that are not whole numbers or one-hot rows are ``regression``; the rest
    is ``classification``.

    Integer labels, whole-number floats and one-hot rows are class labels, as
    every loader read them before regression existed.
    """
    y = np.asarray(y)
    whole = not np.issubdtype(y.dtype, np.floating) or bool(np.all(np.mod(y, 1) == 0))
    if y.ndim == 3 or (y.ndim == 4 and y.shape[-1] == 1):
        return "segmentation" if whole else "regression"
    if y.ndim == 4:
        return "segmentation" if _one_hot(y) else "regression"
    if y.ndim == 2 and y.shape[1] > 1:
        return "classification" if _one_hot(y) else "regression"
    return "classification" if whole else "regression"


def _one_hot(y: np.ndarray) -> bool:
    return bool(np.isin(y, (0, 1)).all() and np.allclose(y.sum(axis=-1), 1))
