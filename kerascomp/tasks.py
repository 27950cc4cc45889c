"""What a model predicts and how it is scored: the one home of every task's loss, metric and direction.

A classifier is trained with cross-entropy and judged by accuracy, higher
better, its budget in percentage points; a regressor is trained with the mean
squared error and judged by the mean absolute error, lower better, its budget
in the targets' own units. Training, evaluation, the accuracy budget and the
strength search read a :class:`Task` here instead of assuming accuracy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kerascomp.errors import ConfigError

__all__ = ["Task", "TASKS", "CLASSIFICATION", "REGRESSION", "get_task", "infer_task", "classifiers_only"]


@dataclasses.dataclass(frozen=True)
class Task:
    """A task's loss, its metric (the stem of its keys: ``mae`` gives ``val_mae``) and the metric's direction."""

    name: str
    metric: str
    higher_is_better: bool
    unit: str  # of a budget: "pp" (percentage points of the metric) or "" (the metric's own units)
    outputs: str  # what a model's output units are, as a message names them

    @property
    def keys(self) -> tuple[str, str]:
        """The validation and test metric keys of an evaluation (``val_accuracy``, ``test_accuracy``)."""
        return f"val_{self.metric}", f"test_{self.metric}"

    def loss(self):
        """The Keras loss the model is trained with: cross-entropy from logits, or the mean squared error."""
        from kerascomp.backend import keras  # imports TensorFlow: only where a model trains

        if self.name == "classification":
            return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return keras.losses.MeanSquaredError()

    def score(self, outputs: np.ndarray, y: np.ndarray) -> float:
        """The metric of ``outputs`` (a model's, logits for a classifier) against the targets ``y``."""
        outputs = np.asarray(outputs, dtype=np.float64)
        if self.name == "classification":
            return float((outputs.argmax(axis=-1) == y).mean())
        return float(np.abs(outputs.reshape(len(y), -1) - np.asarray(y).reshape(len(y), -1)).mean())

    def drop(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline``, in budget units (negative: better)."""
        if self.unit == "pp":
            return 100 * (baseline - value) if self.higher_is_better else 100 * (value - baseline)
        return baseline - value if self.higher_is_better else value - baseline

    def amount(self, drop: float) -> str:
        """A measured drop as a person reads it: ``-0.70 pp`` of accuracy, ``0.0123`` of MAE."""
        return f"{drop:.2f} pp" if self.unit == "pp" else f"{drop:.4g}"

    def budget(self, max_drop: float) -> str:
        """A budget as the user gave it: ``1.0 pp``, ``0.02``."""
        return f"{max_drop} pp" if self.unit == "pp" else f"{max_drop}"


CLASSIFICATION = Task("classification", "accuracy", True, "pp", "classes")
REGRESSION = Task("regression", "mae", False, "", "regression targets")
TASKS = {task.name: task for task in (CLASSIFICATION, REGRESSION)}


def get_task(name: str) -> Task:
    """The task called ``name``; ConfigError naming the known ones otherwise."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; use one of {', '.join(TASKS)}")
    return TASKS[name]


def classifiers_only(task: Task, what: str) -> None:
    """ConfigError, in one line, where ``what`` still judges models by accuracy and ``task`` is another."""
    if task != CLASSIFICATION:
        raise ConfigError(f"{what} works on classifiers only so far; this data is {task.name} "
                          "(train, prune, cluster, qat, shrink, convert, bench and run take it)")


def infer_task(y: np.ndarray) -> str:
    """``regression`` for float targets that are not whole numbers or one-hot rows, else ``classification``.

    Integer labels, whole-number floats and one-hot rows are class labels, as
    every loader read them before regression existed.
    """
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.floating):
        return "classification"
    if y.ndim == 2 and y.shape[1] > 1:
        one_hot = np.isin(y, (0, 1)).all() and np.allclose(y.sum(axis=1), 1)
        return "classification" if one_hot else "regression"
    return "classification" if np.all(np.mod(y, 1) == 0) else "regression"
