"""The Keras side of distillation: the loss, the :class:`Distiller` model, and what ``train`` needs to use it.

Kept apart from :mod:`kerascomp.training.distillation` (the settings) because defining a
Keras model class imports TensorFlow, and the settings are read by the CLI,
which should start without it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from kerascomp.backend import keras, tf
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError
from kerascomp.tasks import CLASSIFICATION, REGRESSION, Task
from kerascomp.training.distill_data import cache_outputs, datasets
from kerascomp.training.distillation import DistillConfig, check_compatible

__all__ = ["Distiller", "distillation_losses", "prepare"]


def distillation_losses(y, student_logits, teacher_logits, temperature: float):
    """Per-example ``(ce, kd)``: hard-label cross-entropy and ``T^2 * KL(teacher_T || student_T)``.

    ``y`` holds integer labels, or probability rows (MixUp/CutMix soft labels).
    Computed in float32 whatever the compute policy, because the softmax of
    mixed-precision logits loses the small probabilities KD learns from.
    """
    s = tf.cast(student_logits, tf.float32)
    t = tf.cast(teacher_logits, tf.float32)
    if y.shape.rank == s.shape.rank:
        ce = keras.losses.categorical_crossentropy(tf.cast(y, tf.float32), s, from_logits=True)
    else:
        ce = keras.losses.sparse_categorical_crossentropy(y, s, from_logits=True)
    log_p_teacher = tf.nn.log_softmax(t / temperature)
    log_p_student = tf.nn.log_softmax(s / temperature)
    kl = tf.reduce_sum(tf.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    return ce, temperature**2 * kl


class Distiller(keras.Model):
    """Wraps a student and a frozen teacher; ``fit`` trains the student by distillation.

    ``call`` is the student, so ``evaluate``/``predict`` measure the student.
    Batches are ``(x, y)`` (the teacher runs on ``x`` with ``training=False``)
    or ``(x, y, teacher_outputs)`` with outputs from :meth:`teacher_outputs`
    computed beforehand (the teacher cache); sample weights are not used.
    Metrics: ``loss``, ``ce_loss``, ``kd_loss``, ``hint_loss`` (with hints) and
    the student's ``accuracy``. The loss is averaged over the *global* batch so
    gradients are right under any ``tf.distribute`` strategy.

    A regression ``task`` replaces both terms by mean squared errors (to the
    targets, and to the teacher's outputs: no temperature) and reports ``mae``.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, temperature: float = DistillConfig.temperature,
                 alpha: float = DistillConfig.alpha, hints: Sequence[tuple[str, str]] = (),
                 hint_weight: float = DistillConfig.hint_weight, task: Task = CLASSIFICATION, **kwargs):
        super().__init__(**kwargs)
        config = DistillConfig(temperature=temperature, alpha=alpha, hints=tuple(hints), hint_weight=hint_weight)
        check_compatible(teacher, student)
        self.temperature, self.alpha, self.hint_weight = config.temperature, config.alpha, config.hint_weight
        self.student = student
        self.teacher = teacher  # frozen by never handing its variables to the optimizer; the caller's flag stays as it was
        self.hints = config.hints
        self.teacher_features = _feature_view(teacher, [t for t, _ in self.hints], "teacher")
        self._student_view = _feature_view(student, [s for _, s in self.hints], "student")
        self.projections = [_projection(s, t, pair) for s, t, pair in zip(
            self._student_view.outputs[1:], self.teacher_features.outputs[1:], self.hints)]
        names = ["loss", "ce_loss", "kd_loss"] + (["hint_loss"] if self.hints else [])
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.task = task
        self._accuracy = (keras.metrics.SparseCategoricalAccuracy(name="accuracy") if task == CLASSIFICATION
                          else keras.metrics.MeanAbsoluteError(name=task.metric) if task == REGRESSION
                          else task.keras_metrics(student.output_shape[-1])[0])

    def compile(self, optimizer="rmsprop", **kwargs):
        """Compile with only an optimizer: the loss and metrics are the distiller's own."""
        kwargs.setdefault("weighted_metrics", [])  # cached batches are 3-tuples that Keras mistakes for sample weights
        super().compile(optimizer=optimizer, **kwargs)

    @property
    def metrics(self):
        return [*self._trackers.values(), self._accuracy]

    def call(self, x, training=None):
        return self.student(x, training=training)

    def teacher_outputs(self, x) -> tuple:
        """What the loss needs from the teacher: its logits, then one feature per hint."""
        outputs = self.teacher_features(x, training=False)
        return tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)

    def train_step(self, data):
        x, y, teacher_out = self._unpack(data)
        with tf.GradientTape() as tape:
            parts, logits = self._loss_parts(x, y, teacher_out, training=True)
            loss = tf.nn.compute_average_loss(parts["loss"])
            if self.student.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.student.losses))
        learned = self.student.trainable_variables + [v for p in self.projections for v in p.trainable_variables]
        self.optimizer.minimize(loss, learned, tape=tape)
        return self._update_metrics(y, logits, parts)

    def test_step(self, data):
        x, y, teacher_out = self._unpack(data)
        parts, logits = self._loss_parts(x, y, teacher_out, training=False)
        return self._update_metrics(y, logits, parts)

    def _unpack(self, data):
        if len(data) == 3:
            x, y, teacher_out = data
            return x, y, tuple(teacher_out) if isinstance(teacher_out, (list, tuple)) else (teacher_out,)
        x, y = data
        return x, y, self.teacher_outputs(x)

    def _loss_parts(self, x, y, teacher_out, training: bool):
        student_out = self._student_view(x, training=training) if self.hints else [self.student(x, training=training)]
        logits = student_out[0]
        if self.task != REGRESSION:  # a segmenter's logits are a classifier's per pixel
            ce, kd = distillation_losses(y, logits, teacher_out[0], self.temperature)
        else:
            ce, kd = _mse(logits, tf.reshape(y, tf.shape(logits))), _mse(logits, teacher_out[0])
        parts = {"ce_loss": ce, "kd_loss": kd}
        total = self.alpha * ce + (1.0 - self.alpha) * kd
        if self.hints:
            pairs = zip(self.projections, student_out[1:], teacher_out[1:])
            hint = tf.add_n([_mse(projection(s), t) for projection, s, t in pairs])
            parts["hint_loss"] = hint
            total += self.hint_weight * hint
        parts["loss"] = total
        return parts, logits

    def _update_metrics(self, y, logits, parts) -> dict:
        for name, tracker in self._trackers.items():
            tracker.update_state(parts[name])
        if self.task == REGRESSION:
            self._accuracy.update_state(tf.reshape(y, tf.shape(logits)), logits)
        else:
            labels = tf.argmax(y, axis=-1) if y.shape.rank == logits.shape.rank else y
            self._accuracy.update_state(labels, logits)
        return {m.name: m.result() for m in self.metrics}


def _mse(student_feature, teacher_feature):
    """Per-example mean squared error over all feature axes."""
    diff = tf.square(tf.cast(student_feature, tf.float32) - tf.cast(teacher_feature, tf.float32))
    return tf.reduce_mean(tf.reshape(diff, [tf.shape(diff)[0], -1]), axis=-1)


def _feature_view(model: keras.Model, layer_names: list[str], role: str) -> keras.Model:
    """The model itself, or a functional view of it that also returns the named layers' outputs."""
    if not layer_names:
        return model
    features = []
    for name in layer_names:
        try:
            features.append(model.get_layer(name).output)
        except ValueError:
            known = ", ".join(layer.name for layer in model.layers)
            raise ConfigError(f"hint: {role} has no layer {name!r}; its layers are: {known}") from None
        except AttributeError:
            raise ConfigError(f"hint: {role} layer {name!r} has no single output (subclassed model?)") from None
    return keras.Model(model.inputs, [model.outputs[0], *features], name=f"{role}_features")


def _projection(student_feature, teacher_feature, pair: tuple[str, str]) -> keras.layers.Layer:
    """A Dense on the channel axis (a 1x1 convolution for feature maps) from student to teacher width."""
    s_shape, t_shape = tuple(student_feature.shape[1:]), tuple(teacher_feature.shape[1:])
    if s_shape[:-1] != t_shape[:-1]:
        raise ConfigError(f"hint {pair[0]}:{pair[1]}: teacher feature {t_shape} and student feature {s_shape} "
                          "must match in every axis but channels")
    projection = keras.layers.Dense(t_shape[-1], name=f"hint_{pair[1]}_to_{pair[0]}", dtype="float32")
    projection.build((None, *s_shape))
    return projection


def prepare(student: keras.Model, teacher: keras.Model, data: Dataset, config: DistillConfig | None,
            train_config, teacher_outputs: dict | None = None) -> tuple[Distiller, object, object, dict]:
    """What :func:`kerascomp.training.train` needs to distil: the distiller (built in the caller's
    strategy scope), training and validation data, and the settings for the metrics.

    ``teacher_outputs`` (from :func:`teacher_cache`) replaces running the teacher over the splits."""
    config = config or DistillConfig()
    check_compatible(teacher, student, data)
    distiller = Distiller(student, teacher, temperature=config.temperature, alpha=config.alpha,
                          hints=config.hints, hint_weight=config.hint_weight, task=data.task)
    train, val, seconds = datasets(distiller.teacher_features, data, config, train_config.batch_size,
                                   train_config.seed, teacher_outputs)
    settings = {**dataclasses.asdict(config), "teacher_cache": config.use_cache}
    return distiller, train, val, {"distill": settings, "teacher_params": int(teacher.count_params()),
                                   "teacher_cache_seconds": seconds}


def teacher_cache(teacher: keras.Model, data: Dataset, config: DistillConfig, batch_size: int) -> dict | None:
    """The teacher's outputs (logits, then one feature per hint) on the training and validation splits.

    A sweep computes them once and hands them to every run (through Ray's
    object store on a cluster): they depend only on the teacher, the data and
    the hints. None when ``config`` does not use the cache (augmentation).
    """
    if not config.use_cache:
        return None
    return cache_outputs(_feature_view(teacher, [t for t, _ in config.hints], "teacher"), data, batch_size)
