"""Distillation as a technique: train a new, smaller student from a frozen teacher.

The training itself is :mod:`kerascomp.training.distillation` (the loss, the
:class:`~kerascomp.training.distillation.Distiller` and its input pipelines); this
module picks the student, its budget, and optionally trains the same student
from scratch to measure what the teacher adds.
"""

from __future__ import annotations

import dataclasses

from kerascomp import models
from kerascomp.backend import keras
from kerascomp.compress.registry import Budgeted, Strength, Technique, register
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError
from kerascomp.options import key_value, option
from kerascomp.tasks import single_output
from kerascomp.training import ModelSpec, TrainConfig, evaluate, train
from kerascomp.training.distillation import DistillConfig, check_compatible

__all__ = ["apply", "default_budget", "gap_closed", "summarise", "StudentConfig", "distil"]


def default_budget(**overrides) -> TrainConfig:
    """The training budget of a distillation run unless told otherwise: long, without early stopping.

    A student keeps learning from a patient teacher long after hard labels stop
    helping it (Beyer et al. 2022); the best epoch by validation loss is still
    restored at the end. Measured on digits in ``scripts/distill_digits.py``.
    """
    return TrainConfig(**{"epochs": 150, "patience": 0, **overrides})


def apply(student: ModelSpec, data: Dataset, config: DistillConfig | None = None, *, teacher: keras.Model,
          train_config: TrainConfig | None = None, student_args: dict | None = None, compare_scratch: bool = False,
          callbacks: list | None = None) -> tuple[keras.Model, dict]:
    """Distil ``teacher`` into ``student`` on ``data``; optionally train the same student from scratch too.

    Args:
        student: a zoo name (built with ``student_args``), a builder function or a model.
        data: the dataset; the teacher must match its input shape and class count.
        config: distillation settings.
        teacher: the trained teacher (left unchanged).
        train_config: the training budget, shared by the scratch run
            (:func:`default_budget` when None).
        compare_scratch: also train the student architecture from scratch with the
            same seed (for a zoo name or builder: the same initial weights) and the
            same budget, to measure what distillation adds.
        callbacks: extra Keras callbacks for the distillation run.

    Returns:
        The distilled student and metrics in the data's task's test metric (a
        classifier's named here, a regressor's ``teacher_mae`` and so on):
        ``teacher_accuracy``, ``student_accuracy``, ``teacher_params``,
        ``student_params``, ``student_seconds_per_epoch``, ``metric`` (its
        name) and ``student`` (the full :func:`~kerascomp.training.train`
        metrics, history included); with ``compare_scratch`` also
        ``scratch_accuracy``, ``scratch_seconds_per_epoch``, ``scratch`` (its
        full metrics) and ``gap_closed = (student - scratch) / (teacher -
        scratch)`` (None when the scratch student already matches the teacher).
    """
    config = config or DistillConfig()
    train_config = train_config or default_budget()
    single_output(data.task, "distill")  # the Distiller matches one output's logits
    if isinstance(student, keras.Model):
        check_compatible(teacher, student, data)
    task, test = data.task, data.task.keys[1]
    teacher_metrics = evaluate(teacher, data, train_config.batch_size)
    fresh = _fresh_copy(student) if compare_scratch else None
    model, distilled = train(student, data, train_config, model_args=student_args, callbacks=callbacks,
                             teacher=teacher, distill=config)
    metrics = {
        f"teacher_{task.metric}": teacher_metrics[test],
        f"student_{task.metric}": distilled[test],
        "metric": task.metric,
        "teacher_params": int(teacher.count_params()),
        "student_params": distilled["params"],
        "student_seconds_per_epoch": distilled["seconds_per_epoch"],
        "student": distilled,
    }
    if compare_scratch:
        _, scratch = train(fresh, data, train_config, model_args=student_args)
        metrics.update({f"scratch_{task.metric}": scratch[test], "scratch_seconds_per_epoch":
                        scratch["seconds_per_epoch"], "scratch": scratch,
                        "gap_closed": gap_closed(teacher_metrics[test], distilled[test], scratch[test],
                                                 task.higher_is_better)})
    return model, metrics


def gap_closed(teacher: float, student: float, scratch: float, higher_is_better: bool = True) -> float | None:
    """Share of the teacher-over-scratch gap that distillation recovers (an error's gap runs the other way);
    None without a gap."""
    gap = teacher - scratch if higher_is_better else scratch - teacher
    gained = student - scratch if higher_is_better else scratch - student
    return gained / gap if gap > 0 else None


def summarise(metrics: dict) -> dict:
    """What a sweep keeps of one run's metrics (the local and the Ray backend alike)."""
    return {"accuracy": metrics["test_accuracy"], "val_accuracy": metrics["val_accuracy"], "params": metrics["params"],
            "seconds_per_epoch": metrics["seconds_per_epoch"], "epochs": metrics["epochs"]}


def _fresh_copy(student: ModelSpec) -> ModelSpec:
    """The same architecture for the scratch run: names and builders rebuild, a model is cloned
    (fresh weights, from the seed that :func:`train` sets just before)."""
    if not isinstance(student, keras.Model):
        return student
    return lambda: keras.models.clone_model(student)


@dataclasses.dataclass(kw_only=True)
class StudentConfig(TrainConfig, DistillConfig, Budgeted):
    """Distillation as a technique: the student to build, its training budget and the distillation settings.

    The budget is :class:`~kerascomp.training.TrainConfig`'s, long and without
    early stopping by default (see :func:`default_budget`); the settings are
    :class:`DistillConfig`'s. ``compare_scratch`` also trains the student from
    scratch with the same budget, to measure what the teacher adds.
    """

    epochs: int = option(150, "Training epochs.")
    patience: int = option(0, "Early-stopping patience on val loss (0: off, a patient teacher trains to the end).")
    student: str | None = option(None, "Zoo model name of the student (required).")
    student_args: dict = option({}, "Student model argument, repeatable (e.g. width=4).", flag="--student-arg",
                                multiple=True, type=key_value, metavar="K=V")
    compare_scratch: bool = option(False, "Also train the student from scratch with the same budget.")

    def __post_init__(self) -> None:
        TrainConfig.__post_init__(self)
        DistillConfig.__post_init__(self)
        Budgeted.__post_init__(self)
        if not self.student:
            raise ConfigError("student (a zoo model name) is required")
        self.student_args = dict(self.student_args)

    def budget(self) -> TrainConfig:
        """The training budget alone (shared by the scratch run)."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})

    def settings(self) -> DistillConfig:
        """The distillation settings alone."""
        return DistillConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(DistillConfig)})


def distil(model: keras.Model, data: Dataset, config: StudentConfig, *, teacher: keras.Model | None = None):
    """The registered form of :func:`apply`: ``model`` is the trained teacher, the result the distilled student."""
    check_compatible(model, models.build(config.student, data.input_shape, data.num_outputs, **config.student_args),
                     data)
    student, metrics = apply(config.student, data, config.settings(), teacher=model, train_config=config.budget(),
                             student_args=config.student_args, compare_scratch=config.compare_scratch)
    run = metrics["student"]
    return student, {**metrics, **{key: run[key] for key in data.task.keys},
                     "baseline": evaluate(model, data, config.batch_size), "fine_tune": run,
                     "model": {"name": config.student, "args": config.student_args}}


def summary(metrics: dict) -> str:
    """Teacher and student test metric and size; with ``compare_scratch``, what the teacher added."""
    metric = metrics.get("metric", "accuracy")
    text = (f"teacher {metrics[f'teacher_{metric}']:.4f} ({metrics['teacher_params']:,} params) -> student "
            f"{metrics[f'student_{metric}']:.4f} ({metrics['student_params']:,} params), test {metric}")
    if f"scratch_{metric}" in metrics:
        gap = metrics["gap_closed"]
        text += (f"\nscratch {metrics[f'scratch_{metric}']:.4f}; gap closed "
                 f"{'n/a (scratch matches the teacher)' if gap is None else f'{gap:.2f}'}; s/epoch distilled "
                 f"{metrics['student_seconds_per_epoch']:.2f}, scratch {metrics['scratch_seconds_per_epoch']:.2f}")
    return text


TECHNIQUE = register(Technique(
    name="distill", config=StudentConfig, apply=distil, summary=summary, input_key="teacher", teacher=False,
    suffix="student", strength=Strength("student_args.width", (16, 8, 4, 2)),
    runs=(("distilled", "student"), ("scratch", "scratch")),
    help="Distil a teacher into a smaller zoo student (optionally compared with the student from scratch)."))
