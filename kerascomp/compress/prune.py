"""Magnitude pruning with tfmot: a schedule that really reaches its target, then stripped sparse weights.

``apply`` wraps the chosen layers of a *clone* with ``prune_low_magnitude``
(the input model stays dense), derives the schedule's begin/end/frequency
from the run's real step count, fine-tunes with ``UpdatePruningStep`` (and
optionally the original model as teacher), strips the wrappers and measures
the sparsity on the stripped weights. ``sparsity="auto"`` picks one sparsity
per layer from a one-shot sensitivity scan (:mod:`kerascomp.compress.sensitivity`)
so that overall sparsity is as high as the allowed accuracy drop permits.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from kerascomp.backend import keras
from kerascomp.compress import finetune, sensitivity
from kerascomp.compress.finetune import FineTuneConfig, LayerPlan
from kerascomp.compress.registry import Strength, Technique, register
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError, ModelError
from kerascomp.options import option
from kerascomp.training import evaluate
from kerascomp.training.distillation import FROM_INPUT

__all__ = ["PruneConfig", "plan", "apply", "strip", "sparsity_of", "erk_sparsities", "SCHEDULES", "STRUCTURES",
           "DISTRIBUTIONS"]

SCHEDULES = ("polynomial", "constant")
DISTRIBUTIONS = ("uniform", "erk")
STRUCTURES = ("unstructured", "2:4", "block:RxC")
AUTO_SPARSITIES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


def strip(model: keras.Model) -> keras.Model:
    """``model`` without pruning wrappers (their masks are training-only state)."""
    if not any(type(layer).__name__ == "PruneLowMagnitude" for layer in model.layers):
        return model
    return finetune.tfmot().sparsity.keras.strip_pruning(model)


def load_scope():
    """Custom objects of pruned models saved with their wrappers."""
    return finetune.tfmot().sparsity.keras.prune_scope()


def _sparsity(text: str | float) -> float | str:
    """``--sparsity``: a number or ``auto``."""
    try:
        return text if text == "auto" else float(text)
    except ValueError:
        raise ValueError(f"a number in [0, 1) or 'auto', got {text!r}") from None


@dataclasses.dataclass(kw_only=True)
class PruneConfig(FineTuneConfig):
    """Pruning options.

    ``sparsity`` is the share of zeros over all prunable kernels, in [0, 1),
    shared among layers by ``distribution`` (``"erk"``: larger layers
    sparser; ``"uniform"``: the same share in each), or ``"auto"``:
    per-layer sparsities chosen from a sensitivity scan over
    ``auto_sparsities`` so that the summed one-shot validation drop stays
    within ``max_drop`` percentage points. ``structure`` ``"2:4"`` (two zeros
    in every four consecutive input weights, fixed at 50%) and ``"block:RxC"``
    (zeros in whole RxC blocks of Dense kernels) are the patterns sparse
    kernels can exploit. ``layers`` is a regular expression on layer names.
    """

    # Pruning needs the training run's peak rate to recover (``scripts/finetune_recipes.py``, 3 seeds, the main
    # job's student at 0.875 sparsity, 10 epochs: validation drop 33.6 pp at 1e-3, 6.4 pp at 3e-3, 60 pp at 3e-4).
    learning_rate: float = option(3e-3, "Peak fine-tuning learning rate (pruned weights need a high one to recover).")
    # The dense input as teacher kept the pruned digits teacher closer to its validation accuracy at every sparsity
    # (mean drop 0.20 vs 0.39 pp at 0.875, 3 seeds; test alike): a budget search then stops less often on a fluke.
    distill_from: str | None = finetune.teacher_option(FROM_INPUT)
    sparsity: float | str | None = option(
        None, "Share of zeros over all prunable kernels, in [0, 1), shared by --distribution; or 'auto' (per layer, "
              "from a sensitivity scan). Required unless --max-drop searches it or --structure 2:4 fixes it at 0.5.",
        metavar="S|auto", type=_sparsity)
    schedule: str = option("polynomial", "How sparsity ramps up during fine-tuning.", choices=SCHEDULES)
    # ERK: the main job's student at 0.875 sparsity lost 0.49 pp of validation accuracy where uniform lost 3.56
    # (scripts/finetune_recipes.py); the digits teacher's 0.5 pp budget chain reached 19.8x gzip vs 12.2x
    # (scripts/prune_qat_digits.py, 40% validation); 3 seeds each.
    distribution: str = option(
        "erk", "How one sparsity is shared among layers: 'erk' (Erdős–Rényi-kernel: the same total, larger layers "
               "sparser, small ones dense) or 'uniform' (the same share in each). 'auto' and 2:4 set each "
               "layer's share themselves.", choices=DISTRIBUTIONS)
    structure: str = option("unstructured", "Zero pattern.", metavar="unstructured|2:4|block:RxC")
    layers: str | None = option(None, "Prune only layers whose name matches.", metavar="REGEX")
    auto_sparsities: tuple[float, ...] = AUTO_SPARSITIES

    def __post_init__(self) -> None:
        super().__post_init__()
        finetune.compile_pattern(self.layers)
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(f"unknown distribution {self.distribution!r}; use one of {', '.join(DISTRIBUTIONS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        self.block_size  # noqa: B018  (validates the structure)
        if self.structure == "2:4":
            if self.sparsity not in (None, 0.5):
                raise ConfigError(f"2:4 structure fixes sparsity at 0.5, got {self.sparsity}")
            self.sparsity = 0.5
        if self.sparsity is None and self.max_drop is None:
            raise ConfigError("sparsity is required: a value in [0, 1) or 'auto', or give max_drop to search for it")
        if self.sparsity == "auto":
            if self.structure != "unstructured":
                raise ConfigError("sparsity 'auto' works with unstructured pruning only")
            if self.max_drop is None:
                raise ConfigError("sparsity 'auto' chooses per-layer sparsities within max_drop: give max_drop")
            self.auto_sparsities = sensitivity.SensitivityConfig(sparsities=self.auto_sparsities).sparsities
        elif self.sparsity is not None and (isinstance(self.sparsity, str) or not 0 <= self.sparsity < 1):
            raise ConfigError(f"sparsity must be in [0, 1) or 'auto', got {self.sparsity!r}")

    @property
    def block_size(self) -> tuple[int, int]:
        """``(R, C)`` of ``block:RxC``, ``(1, 1)`` otherwise."""
        if self.structure in ("unstructured", "2:4"):
            return (1, 1)
        match = re.fullmatch(r"block:(\d+)x(\d+)", self.structure)
        if not match or min(int(match[1]), int(match[2])) < 1:
            raise ConfigError(f"unknown structure {self.structure!r}; use unstructured, 2:4 or block:RxC "
                              "(e.g. block:1x4)")
        return int(match[1]), int(match[2])


def plan(model: keras.Model, config: PruneConfig) -> list[LayerPlan]:
    """Which layers will be pruned and, for every other layer with weights, why not."""
    return _share(model, config, _candidates(model, config))[0]


def _share(model: keras.Model, config: PruneConfig, candidates: list[LayerPlan]):
    """The plan and each pruned layer's target sparsity: one sparsity, shared among layers by ``distribution``."""
    prunable = finetune.chosen(candidates)
    targets = {name: config.sparsity for name in prunable}
    if config.distribution != "erk" or config.sparsity in (None, "auto") or config.structure == "2:4":
        return candidates, targets
    shares = erk_sparsities(model, prunable, config.sparsity)
    if not shares:  # sparsity 0: nothing to share
        return candidates, targets
    plans = _skip_untargeted(candidates, shares, "erk: kept dense (a small layer)")
    return [dataclasses.replace(p, reason=f"erk: sparsity {shares[p.name]:.3f}") if p.name in shares else p
            for p in plans], shares


def _candidates(model: keras.Model, config: PruneConfig) -> list[LayerPlan]:
    """Every layer the structure and ``--layers`` allow to prune, before sparsity is shared among them."""
    finetune.check_model(model)
    return finetune.plan_layers(model, "prune", lambda layer: _decide(layer, config), config.layers)


def apply(
    model: keras.Model, data: Dataset, config: PruneConfig, *, teacher: keras.Model | None = None
) -> tuple[keras.Model, dict]:
    """Prune ``model`` (left untouched) and fine-tune; returns the stripped sparse model and its metrics.

    Metrics: ``sparsity`` (zeros over all prunable kernels, dense ones
    included, measured on the stripped weights), ``per_layer`` sparsity,
    ``target`` per layer,
    ``val_accuracy``/``test_accuracy`` and those of the input model
    (``baseline``), the derived ``schedule``, the ``preflight`` plan, the
    fine-tuning record and, for ``auto``, the sensitivity scan.
    """
    candidates = _candidates(model, config)
    plans, targets = _share(model, config, candidates)
    data.check_model(model)
    scan = None
    if config.sparsity == "auto":
        targets, scan = _auto_targets(model, data, config, plans)
        plans = _skip_untargeted(plans, targets, f"auto: no sparsity fits --max-drop {config.max_drop} pp")
    steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
    begin, end, frequency = finetune.schedule_steps(steps_per_epoch, config.epochs)
    prune = finetune.tfmot().sparsity.keras
    wrapped = finetune.wrap(model, targets, lambda layer: prune.prune_low_magnitude(
        layer, pruning_schedule=_schedule(config.schedule, targets[layer.name], begin, end, frequency),
        block_size=config.block_size, sparsity_m_by_n=(2, 4) if config.structure == "2:4" else None))
    tuned, fit = finetune.fine_tune(wrapped, data, config, callbacks=[prune.UpdatePruningStep()],
                                  keep_from_epoch=(end - 1) // steps_per_epoch,
                                  teacher=finetune.teacher_for(config, model, teacher))
    stripped = strip(tuned)
    metrics = {
        **sparsity_of(stripped, finetune.chosen(candidates)),
        "target": targets,
        **{k: fit[k] for k in data.task.keys},
        "baseline": evaluate(model, data, config.batch_size),
        "schedule": {"kind": config.schedule, "begin_step": begin, "end_step": end, "frequency": frequency,
                     "steps_per_epoch": steps_per_epoch, "structure": config.structure},
        "preflight": [p.to_dict() for p in plans],
        "fine_tune": fit,
    }
    if scan is not None:
        metrics["sensitivity"] = scan
    return stripped, metrics


def sparsity_of(model: keras.Model, names: list[str]) -> dict:
    """Share of exact zeros over the prunable kernels of the named layers: overall and per layer."""
    per_layer, zeros, total = {}, 0, 0
    for name in names:
        arrays = [np.asarray(w.numpy()) for w in finetune.prunable_weights(model.get_layer(name)) or []]
        layer_zeros, layer_total = sum(int((a == 0).sum()) for a in arrays), sum(a.size for a in arrays)
        per_layer[name] = layer_zeros / layer_total if layer_total else 0.0
        zeros, total = zeros + layer_zeros, total + layer_total
    return {"sparsity": zeros / total if total else 0.0, "per_layer": per_layer, "pruned_weights": total}


def erk_sparsities(model: keras.Model, names: list[str], sparsity: float) -> dict[str, float]:
    """Per-layer sparsities, Erdős–Rényi-kernel style, with as many zeros in total as ``sparsity`` everywhere.

    Evci et al. (2020, RigL) make a kernel's density proportional to the sum
    of its dimensions over their product. Uniform pruning takes as large a
    share from a 288-weight first convolution or a 640-weight classifier as
    from a 37k-weight one, where every lost weight costs far more accuracy and
    saves almost no bytes. Layers whose density would exceed 1 stay dense
    (and are left out of the result); the others share what is left.
    """
    shapes = {name: [tuple(w.shape) for w in finetune.prunable_weights(model.get_layer(name))] for name in names}
    size = {name: sum(math.prod(s) for s in kernels) for name, kernels in shapes.items()}
    score = {name: sum(sum(s) for s in kernels) for name, kernels in shapes.items()}
    keep, dense = (1 - sparsity) * sum(size.values()), set()
    while True:
        sparse = [name for name in names if name not in dense]
        scale = (keep - sum(size[n] for n in dense)) / max(sum(score[n] for n in sparse), 1)
        full = {n for n in sparse if scale * score[n] >= size[n]}
        if not full:
            return {n: 1 - scale * score[n] / size[n] for n in sparse}
        dense |= full


def _skip_untargeted(plans: list[LayerPlan], targets: dict[str, float], reason: str) -> list[LayerPlan]:
    """The plan with every wrapped layer that got no target marked as skipped, saying why."""
    return [p if p.name in targets or p.action == "skip" else dataclasses.replace(p, action="skip", reason=reason)
            for p in plans]


def _decide(layer: keras.layers.Layer, config: PruneConfig) -> tuple[int, str]:
    count, reason = finetune.prunable(layer)
    if not count:
        return count, reason
    kind, shapes = type(layer).__name__, [tuple(w.shape) for w in finetune.prunable_weights(layer)]
    if config.structure == "2:4" and any(len(s) not in (2, 4) or s[-2] % 4 for s in shapes):
        return 0, f"2:4 needs 2-D/4-D kernels with input channels divisible by 4 (got {shapes})"
    if config.block_size != (1, 1) and any(len(s) != 2 for s in shapes):
        return 0, f"block sparsity needs 2-D kernels (Dense); {kind} has {shapes}"
    return int(sum(np.prod(s) for s in shapes)), ""


def _schedule(kind: str, target: float, begin: int, end: int, frequency: int):
    schedules = finetune.tfmot().sparsity.keras
    if kind == "polynomial" and end > begin:
        return schedules.PolynomialDecay(0.0, target, begin, end, frequency=frequency)
    return schedules.ConstantSparsity(target, begin, end, frequency=frequency)


def _auto_targets(model: keras.Model, data: Dataset, config: PruneConfig, plans: list[LayerPlan]):
    names = finetune.chosen(plans)
    scan_config = sensitivity.SensitivityConfig(sparsities=config.auto_sparsities, layers=config.layers,
                                                batch_size=max(config.batch_size, 256))
    _, scan = sensitivity.apply(model, data, scan_config)
    targets = {name: s for name, s in sensitivity.choose_sparsities(scan, config.max_drop).items()
               if name in names and s > 0}
    if not targets:
        raise ModelError(f"auto: no layer can be pruned within --max-drop {config.max_drop} pp; raise --max-drop")
    return targets, scan


def summary(metrics: dict) -> str:
    """The headline ``kerascomp prune`` prints: the sparsity measured on the stripped weights."""
    return (f"sparsity {metrics['sparsity']:.4f} over {metrics['pruned_weights']:,} prunable weights; per layer: "
            + ", ".join(f"{name} {s:.3f}" for name, s in metrics["per_layer"].items()))


TECHNIQUE = register(Technique(
    name="prune", config=PruneConfig, apply=apply, summary=summary, strip=strip, load_scope=load_scope,
    plan=lambda model, config: finetune.format_plan(plan(model, config)),
    layers=lambda model: finetune.layer_answers(model, lambda: _candidates(model, PruneConfig(sparsity=0.5)), "no weights"),
    suffix="pruned",
    strength=Strength("sparsity", (0.5, 0.75, 0.875, 0.9375), warm_start=True),
    help="Magnitude-prune a .keras model (tfmot), fine-tune, and save the stripped sparse model."))
