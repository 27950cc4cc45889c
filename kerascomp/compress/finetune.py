"""What pruning, clustering and QAT share on top of tensorflow-model-optimization.

tfmot's entry points are easy to misuse in ways that fail silently:
``prune_low_magnitude`` wraps the *same* layer objects (so the input model is
masked in place), schedules written for ImageNet-sized runs never reach their
target on a small dataset, early stopping can restore weights from before the
target was reached, and unsupported layers raise deep inside a clone. This
module holds the answers once: a pre-flight plan of which layers get wrapped
and why others do not, wrapping on a private clone, step counts derived from
the real run, a fine-tuning loop that keeps only weights at the final
compression, wrapper stripping, and the custom objects that let compressed
models load from ``.keras`` files (each technique registers its own scope). tfmot itself is imported on first use only.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Collection, Sequence

import numpy as np

from kerascomp.backend import keras
from kerascomp.compress.registry import Budgeted
from kerascomp.console import echo
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError, KerascompError, ModelError
from kerascomp.options import option
from kerascomp.saving import load_model
from kerascomp.training import TrainConfig, train
from kerascomp.training.distillation import FROM_INPUT, NO_TEACHER, DistillConfig
from kerascomp.training.distribute import STRATEGIES

__all__ = [
    "FineTuneConfig", "LayerPlan", "tfmot", "check_model", "clone", "compile_pattern",
    "plan_layers", "layer_answers", "format_plan", "wrap", "chosen", "schedule_steps", "fine_tune",
    "prunable_weights", "prunable", "weight_count", "teacher_for", "teacher_option",
]


def tfmot():
    """The ``tensorflow_model_optimization`` package, imported on first use (it loads slowly)."""
    import tensorflow_model_optimization

    return tensorflow_model_optimization


def teacher_option(default: str | None):
    """The ``distill_from`` field, with a technique's own default."""
    return option(default, "Fine-tune with this uncompressed model as teacher: a .keras file, 'input' (the model "
                            "being compressed) or 'none'.", metavar="ORIGINAL.keras|input|none")


@dataclasses.dataclass(kw_only=True)
class FineTuneConfig(Budgeted):
    """Fine-tuning options shared by prune, cluster and QAT.

    ``learning_rate`` is lower than for training from scratch because the
    model starts trained; there is no warm-up and no early stopping, so the
    compression schedule always runs to its end (see :class:`kerascomp.training.callbacks.KeepBest`).
    ``distill_from`` names the original model, used as teacher: a ``.keras``
    path, ``"input"`` (the model being compressed, before compression) or
    None/``"none"``.
    """

    epochs: int = option(10, "Fine-tuning epochs.")
    batch_size: int = option(64, "Global batch size.")
    learning_rate: float = option(1e-3, "Peak fine-tuning learning rate.")
    seed: int = 0
    verbose: int = 1
    distill_from: str | None = teacher_option(None)
    temperature: float = option(4.0, "Distillation temperature (with --distill-from).")
    alpha: float = option(0.1, "Weight of the hard-label loss (with --distill-from).")
    strategy: str = option("default", "tf.distribute strategy of the fine-tuning.", choices=STRATEGIES)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.distill_from in (NO_TEACHER, ""):
            self.distill_from = None
        self.train_config()
        self.distill_config()

    def train_config(self):
        """The :class:`~kerascomp.training.TrainConfig` of the fine-tuning run (validates the shared fields)."""
        return TrainConfig.fine_tuning(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                                       seed=self.seed, verbose=self.verbose, strategy=self.strategy)

    def distill_config(self):
        """The :class:`~kerascomp.training.distillation.DistillConfig` used with a teacher (validates T and alpha)."""
        return DistillConfig(temperature=self.temperature, alpha=self.alpha)


@dataclasses.dataclass
class LayerPlan:
    """What a technique will do to one layer, decided before any work (``weights``: how many it changes)."""

    name: str
    kind: str
    weights: int
    action: str  # the technique's verb ("prune", "cluster", "quantize") or "skip"
    reason: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_model(model: object) -> keras.Model:
    """Refuse what tfmot cannot wrap: non-tf_keras objects (e.g. Keras 3) and subclassed models."""
    if not isinstance(model, keras.Model):
        raise ModelError(f"expected a tf_keras model (Keras 2), got {type(model).__module__}.{type(model).__name__}; "
                         "Keras 3 models cannot be compressed with tfmot")
    functional = model._is_graph_network  # noqa: SLF001 (tf_keras has no public test)
    if not (functional or isinstance(model, keras.Sequential)):
        raise ModelError(f"{model.name}: subclassed models cannot be wrapped by tfmot; build it as a functional model")
    return model


def clone(model: keras.Model) -> keras.Model:
    """A copy with fresh layer objects and the same weights, so wrapping never touches ``model``."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def plan_layers(
    model: keras.Model,
    action: str,
    decide: Callable[[keras.layers.Layer], tuple[int, str]],
    pattern: str | None = None,
    weightless: bool = False,
) -> list[LayerPlan]:
    """One :class:`LayerPlan` per layer with weights (with ``weightless``, also per weightless layer skipped).

    ``decide(layer)`` returns ``(number of weights the technique would change,
    reason it cannot)``; an empty reason means the layer is wrapped. Layers
    whose name does not match ``pattern`` (``re.search``) are skipped.
    """
    matcher = compile_pattern(pattern)
    plans = []
    for layer in model.layers:
        total = int(sum(np.prod(w.shape) for w in layer.weights))
        if isinstance(layer, keras.layers.InputLayer) or not (total or weightless):
            continue
        if isinstance(layer, keras.Model):
            count, reason = 0, "nested model: tfmot wraps top-level layers only"
        elif matcher and not matcher.search(layer.name):
            count, reason = 0, f"name does not match --layers {pattern!r}"
        else:
            count, reason = decide(layer)
        if total or reason:
            verb = "skip" if reason else action
            plans.append(LayerPlan(layer.name, type(layer).__name__, count or total, verb, reason))
    if not any(p.action != "skip" for p in plans):
        why = "; ".join(f"{p.name} ({p.reason})" for p in plans) or "the model has no weights"
        raise ModelError(f"no layer can be {_past(action)}: {why}")
    return plans


def layer_answers(model: keras.Model, make_plan: Callable[[], Sequence[LayerPlan]], unlisted: str) -> dict[str, str]:
    """Per layer ``"yes"``, ``"no: why"``, or ``unlisted`` for layers the plan leaves out (``kerascomp inspect``)."""
    try:
        plans = {p.name: "yes" if p.action != "skip" else f"no: {p.reason}" for p in make_plan()}
    except KerascompError as exc:
        return {layer.name: f"no: {exc}" for layer in model.layers}
    return {layer.name: plans.get(layer.name, unlisted) for layer in model.layers}


def format_plan(plans: Sequence[LayerPlan]) -> str:
    """The pre-flight summary printed before fine-tuning: every listed layer, wrapped or why not."""
    wrapped = [p for p in plans if p.action != "skip"]
    lines = [f"pre-flight: {len(wrapped)} layers will be {_past(wrapped[0].action)} "
             f"({sum(p.weights for p in wrapped):,} weights), {len(plans) - len(wrapped)} skipped"]
    width = max(len(p.name) for p in plans)
    for p in plans:
        lines.append(f"  {p.action:<8} {p.name:<{width}} {p.kind:<20} {p.weights:>9,}  {p.reason}".rstrip())
    return "\n".join(lines)


def wrap(model: keras.Model, names: Collection[str], wrapper: Callable[[keras.layers.Layer], keras.layers.Layer]):
    """A clone of ``model`` whose layers named in ``names`` are wrapped by ``wrapper``; ``model`` is left untouched."""
    copy = clone(model)
    return keras.models.clone_model(copy, clone_function=lambda layer: wrapper(layer) if layer.name in names else layer)


def chosen(plans: Sequence[LayerPlan]) -> list[str]:
    """Names of the layers a plan wraps."""
    return [p.name for p in plans if p.action != "skip"]


def schedule_steps(steps_per_epoch: int, epochs: int, ramp: float = 2 / 3, updates: int = 20) -> tuple[int, int, int]:
    """``(begin, end, frequency)`` in optimizer steps for a tfmot schedule over this very run.

    tfmot's default frequency of 100 steps with an open end suits ImageNet; on
    a small dataset the run can end before the target is ever applied. Here
    the masks change ``updates`` times over the first ``ramp`` of the steps,
    ``end`` falls exactly on an update (so the final sparsity is applied), and
    the remaining epochs fine-tune with fixed masks. The wrappers count steps
    from 1.
    """
    total = steps_per_epoch * epochs
    last = max(1, int(total * ramp))
    frequency = max(1, (last - 1) // updates) if last > 1 else 1
    end = 1 + (last - 1) // frequency * frequency
    return 1, end, frequency


def fine_tune(
    model: keras.Model,
    data: Dataset,
    config: FineTuneConfig,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    keep_from_epoch: int = 0,
    teacher: keras.Model | None = None,
) -> tuple[keras.Model, dict]:
    """Fine-tune a wrapped model with ``training.train``, optionally distilled from ``teacher``.

    ``teacher`` (or the model at ``config.distill_from``) is the original,
    uncompressed model; it trains the student through the shared Distiller.
    """
    if teacher is None and config.distill_from not in (None, FROM_INPUT):
        teacher = load_model(config.distill_from)
    if teacher is not None and data.task.heads:  # the Distiller matches one output's logits
        echo(f"note: {len(data.task.heads)} outputs: fine-tuning on the targets, without distillation")
        teacher = None
    # the Distiller freezes its teacher; a copy keeps the caller's model (often the one being compressed) trainable
    extra = {} if teacher is None else {"teacher": clone(check_model(teacher)), "distill": config.distill_config()}
    # defines Keras classes, so importing it imports TensorFlow: on use
    from kerascomp.training.callbacks import KeepBest

    keep = KeepBest(keep_from_epoch)
    tuned, metrics = train(model, data, config.train_config(), callbacks=[*callbacks, keep], **extra)
    summary = {k: metrics[k] for k in (*data.task.keys, "epochs", "seconds_per_epoch", "train_seconds",
                                       "epoch_seconds")}
    summary["kept_epoch"] = None if keep.best_epoch is None else keep.best_epoch + 1
    summary["distill"] = metrics.get("distill")  # the settings when distilled, else None
    summary["history"] = metrics["history"]
    return tuned, summary


def teacher_for(config: FineTuneConfig, model: keras.Model, teacher: keras.Model | None) -> keras.Model | None:
    """The teacher of a fine-tuning: ``teacher`` when given, else ``model`` itself (the input, before it is
    wrapped) for ``distill_from="input"``, else None (a path in ``distill_from`` is loaded by :func:`fine_tune`)."""
    return model if teacher is None and config.distill_from == FROM_INPUT else teacher


def prunable_weights(layer: keras.layers.Layer) -> list | None:
    """The variables tfmot prunes in ``layer`` (``[]``: none), or ``None`` when tfmot cannot prune it.

    Registry layers get tfmot's ``get_prunable_weights`` attached, as
    ``prune_low_magnitude`` itself does; the weights are not changed.
    """
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    if hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    registry = prune_registry.PruneRegistry
    if not registry.supports(layer):
        return None
    return list(registry.make_prunable(layer).get_prunable_weights())


def prunable(layer: keras.layers.Layer) -> tuple[int, str]:
    """How many weights unstructured pruning would zero in ``layer``, or 0 and why none."""
    return weight_count(layer, prunable_weights(layer), "prune", "not in its registry, no get_prunable_weights")


def weight_count(layer: keras.layers.Layer, weights: list | None, verb: str, unsupported: str) -> tuple[int, str]:
    """How many of ``layer``'s weights a technique changes (``weights``: None when tfmot cannot wrap it), or 0 and why."""
    kind = type(layer).__name__
    if weights is None:
        return 0, f"tfmot cannot {verb} {kind} ({unsupported})"
    if not weights:
        return 0, f"tfmot {verb}s no weights of {kind}"
    return int(sum(np.prod(w.shape) for w in weights)), ""


def compile_pattern(pattern: str | None) -> re.Pattern | None:
    """The ``--layers`` regular expression, or a ConfigError that says why it is invalid."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--layers {pattern!r} is not a valid regular expression: {exc}") from None


def _past(action: str) -> str:
    return action + ("d" if action.endswith("e") else "ed")
