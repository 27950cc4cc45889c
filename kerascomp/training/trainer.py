"""Train a baseline or teacher model from the zoo (or any tf_keras model) on a :class:`Dataset`.

Defaults are chosen to work without tuning on small data: AdamW with a linear
warm-up and cosine decay, early stopping on the validation loss that restores
the best weights, and per-epoch wall time recorded for the reports.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Callable, Iterator, Sequence, Union

from kerascomp import models
from kerascomp.backend import keras, tf
from kerascomp.data import Dataset, output_names
from kerascomp.data.augment import augmented, mixes_labels, parse_augment
from kerascomp.errors import ConfigError
from kerascomp.options import at_least, option
from kerascomp.tasks import CLASSIFICATION
from kerascomp.training import distillation
from kerascomp.training.compiled import own_loss
from kerascomp.training.distribute import STRATEGIES, get_strategy, peers_watched, precision, to_float32

__all__ = ["TrainConfig", "train", "evaluate", "predict", "user_callbacks"]

_USER_CALLBACKS: contextvars.ContextVar[tuple] = contextvars.ContextVar("user_callbacks", default=())


@contextlib.contextmanager
def user_callbacks(callbacks: Sequence) -> Iterator[None]:
    """Every training run inside this block also calls ``callbacks`` (a technique's fine-tuning included).

    How ``kerascomp.prune(..., callbacks=[...])`` reaches the ``fit`` deep
    inside a technique without each technique passing it along.
    """
    token = _USER_CALLBACKS.set(tuple(callbacks))
    try:
        yield
    finally:
        _USER_CALLBACKS.reset(token)


@dataclasses.dataclass
class TrainConfig:
    """Options of one training run; validated on creation."""

    epochs: int = option(30, "Training epochs.")
    batch_size: int = option(64, "Global batch size.")
    learning_rate: float = option(3e-3, "Peak AdamW learning rate.")
    weight_decay: float = option(1e-4, "AdamW weight decay.")
    warmup_epochs: int = option(1, "Linear learning-rate warm-up epochs before the cosine decay.")
    patience: int = option(10, "Early-stopping patience on val loss (0: off).")
    seed: int = 0
    strategy: str = option("default", "tf.distribute strategy.", choices=STRATEGIES)
    mixed_precision: bool = option(False, "mixed_float16 on GPU, mixed_bfloat16 on CPU; the saved model is float32.")
    augment: str = option("none", "Augment the training batches: none, or a comma list of flip, crop, shift, "
                                  "rotation, randaugment, mixup, cutmix (distilling: teacher and student see the "
                                  "same batch).")
    verbose: int = 1

    @classmethod
    def fine_tuning(cls, *, epochs: int, batch_size: int, learning_rate: float, seed: int = 0, verbose: int = 1,
                    strategy: str = "default") -> "TrainConfig":
        """A short run from trained weights: no warm-up and no early stopping (the best epoch is still restored).

        Every technique that fine-tunes a trained model builds its run here.
        """
        return cls(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, warmup_epochs=0, patience=0,
                   seed=seed, verbose=verbose, strategy=strategy)

    def __post_init__(self) -> None:
        at_least(self, 1, "epochs", "batch_size")
        at_least(self, 0, "warmup_epochs", "patience")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}")
        self.augment = ",".join(parse_augment(self.augment)) or "none"


ModelSpec = Union[str, Callable[[], "keras.Model"], "keras.Model"]


def train(
    model: ModelSpec,
    data: Dataset,
    config: TrainConfig | None = None,
    *,
    model_args: dict | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    teacher: keras.Model | None = None,
    distill: distillation.DistillConfig | None = None,
    teacher_outputs: dict | None = None,
) -> tuple[keras.Model, dict]:
    """Train ``model`` on ``data`` and measure it on the held-out test split.

    Args:
        model: a zoo name (built for the data's input shape and class count
            with ``model_args``), a function returning a fresh model, or a
            model (copied into the strategy's scope when one is used).
        data: the dataset; its test split is used once, after training.
        config: training options.
        model_args: keyword arguments for the zoo builder.
        callbacks: extra Keras callbacks.
        teacher: when given, the model is trained as a student by
            distillation from this frozen teacher (see
            :class:`kerascomp.training.distiller.Distiller`); the callbacks see the
            distiller, whose ``layers`` include the student.
        distill: distillation settings (defaults of ``DistillConfig`` when None).
        teacher_outputs: the teacher's cached outputs from
            :func:`kerascomp.training.distiller.teacher_cache`, computed once and shared
            by the runs of a sweep; None: computed here when the cache is used.

    Returns:
        The trained float32 model (best validation epoch; the student when
        distilling) and a metrics dict with ``test_accuracy``, ``val_accuracy``,
        ``params``, ``epochs``, ``seconds_per_epoch`` and the per-epoch
        ``history`` (plus ``distill`` settings and ``teacher_cache_seconds``).
    """
    config = config or TrainConfig()
    if distill is not None and teacher is None:
        raise ConfigError("distillation settings need a teacher")
    keras.utils.set_random_seed(config.seed)
    strategy = get_strategy(config.strategy)
    with precision(config.mixed_precision) as policy, strategy.scope():
        net = _instantiate(model, data, model_args or {}, config)
        data.check_model(net)  # one line, not a fit's shape error
        steps = math.ceil(len(data.x_train) / config.batch_size)
        optimizer = keras.optimizers.AdamW(_schedule(config, steps), weight_decay=config.weight_decay)
        if teacher is None:
            fitted, extra = net, {}
            names = output_names(net)
            train_data, val_data, loss = _plain_data(data, config, names)
            loss, weights = own_loss(loss, names)  # the model file's own, inside compiled_as
            fitted.compile(optimizer=optimizer, loss=loss, loss_weights=weights,
                           metrics=data.task.keras_metrics(data.num_outputs, names))
        else:
            from kerascomp.training.distiller import prepare  # the Keras side, imported with TensorFlow

            fitted, train_data, val_data, extra = prepare(net, _copy_into_scope(teacher, config), data,
                                                          distill, config, teacher_outputs)
            fitted.compile(optimizer=optimizer)
    # defines Keras classes, so importing it imports TensorFlow: on use
    from kerascomp.training.callbacks import EpochLog, EpochTimer, StopOnSignal

    timer = EpochTimer()
    progress = [EpochLog(config.epochs)] if config.verbose else []
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience or config.epochs, restore_best_weights=True)
    with peers_watched(config.strategy):
        history = fitted.fit(
            train_data,
            validation_data=val_data,
            epochs=config.epochs,
            callbacks=[timer, stop, *progress, *(callbacks or []), *_USER_CALLBACKS.get(), StopOnSignal()],
            verbose=0,  # EpochLog writes one short line per epoch instead of Keras's bar
        )
    if config.mixed_precision:
        net = to_float32(net)
    metrics = {
        **evaluate(net, data, config.batch_size),
        "params": int(net.count_params()),
        "epochs": len(timer.seconds),
        "best_epoch": int(stop.best_epoch) + 1,
        "seconds_per_epoch": sum(timer.seconds) / len(timer.seconds),
        "epoch_seconds": timer.seconds,
        "train_seconds": sum(timer.seconds),
        "precision_policy": policy,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "config": dataclasses.asdict(config),
        **extra,
    }
    return net, metrics


def _plain_data(data: Dataset, config: TrainConfig, outputs: list[str]):
    """Training and validation pipelines and the loss of a run without a teacher.

    MixUp and CutMix turn labels into soft one-hot rows, so the loss is then the
    categorical cross-entropy and validation labels are one-hot too.
    """
    train = data.as_tf("train", config.batch_size, shuffle=True, seed=config.seed, outputs=outputs)
    val = data.as_tf("val", config.batch_size, outputs=outputs)
    if config.augment == "none":
        return train, val, data.task.loss(outputs)
    if data.task != CLASSIFICATION:  # a flipped or mixed image keeps its regression target: wrong, silently
        raise ConfigError(f"augment {config.augment!r} transforms the images but not {data.task.name} targets; "
                          "use augment none")
    train = augmented(train, config.augment, data, config.seed)
    if not mixes_labels(config.augment):
        return train, val, keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    val = val.map(lambda x, y: (x, tf.one_hot(y, data.num_classes)))
    return train, val, keras.losses.CategoricalCrossentropy(from_logits=True)


def evaluate(model: keras.Model, data: Dataset, batch_size: int = 256) -> dict:
    """Validation and test metric (``val_accuracy``, ``val_mae``, ``val_mean_iou``: the data's task's; every
    output's, ``val_digit_accuracy``, for several outputs) and loss of a Keras model."""
    task = data.task
    results = {}
    for split in ("val", "test"):
        x, y = data.split(split)
        outputs = predict(model, x, batch_size)
        results.update({f"{split}_{key}": value for key, value in task.scores(outputs, y).items()})
        results[f"{split}_loss"] = task.loss_value(y, outputs)
    return results


def predict(model: keras.Model, x, batch_size: int = 256):
    """A model's outputs for ``x``: one array, or a dict of arrays by output name for a model with several."""
    outputs = model.predict(x, batch_size=batch_size, verbose=0)
    return dict(zip(output_names(model), outputs)) if isinstance(outputs, list) else outputs


def _instantiate(model: ModelSpec, data: Dataset, model_args: dict, config: TrainConfig) -> keras.Model:
    if isinstance(model, str):
        return models.build(model, input_shape=data.input_shape, num_classes=data.num_outputs, **model_args)
    if model_args:
        raise ConfigError("model_args apply only to zoo model names")
    if isinstance(model, keras.Model):
        if config.mixed_precision:
            raise ConfigError("mixed precision needs a zoo name or a builder function, not a built model")
        return _copy_into_scope(model, config)
    return model()


def _copy_into_scope(model: keras.Model, config: TrainConfig) -> keras.Model:
    """The model itself on one device; under a strategy, a copy whose variables the strategy owns."""
    if config.strategy == "default":
        return model
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _schedule(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up to the peak rate, then cosine decay to 1% of it over the whole run."""
    total = config.epochs * steps_per_epoch
    warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10 if warmup else config.learning_rate,
        decay_steps=max(total - warmup, 1),
        alpha=0.01,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
