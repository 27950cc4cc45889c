"""Structured shrinking: remove whole filters, units and channels so the device does less work.

Unstructured pruning leaves zeros that gzip removes but the file the device
maps, its memory and its latency keep. ``shrink`` cuts channels out instead:
it finds the channel dependency groups of the graph (:mod:`.graph`), scores
every channel, removes the weakest in chunks across the whole model until its
parameters or multiply-accumulates are within ``keep`` of the input's
(:mod:`.allocate`), or its latency measured here is (:mod:`.latency`), cuts
the weights (:mod:`.surgery`) and fine-tunes the plain, smaller Keras model
with the input as teacher. No masks and no
wrappers remain: every other technique, ``convert``, ``bench`` and the
Keras 3 way back take the result as any model.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from kerascomp.backend import keras
from kerascomp.compress import finetune
from kerascomp.compress.finetune import FineTuneConfig
from kerascomp.compress.registry import Strength, Technique, register
from kerascomp.compress.shrink.allocate import IMPORTANCES, TARGETS, allocate, cost, magnitude, taylor
from kerascomp.compress.shrink.graph import Graph, analyse
from kerascomp.compress.shrink.latency import fit_latency
from kerascomp.compress.shrink.surgery import mask, rebuild
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError
from kerascomp.options import at_least, option
from kerascomp.training import evaluate
from kerascomp.training.distillation import FROM_INPUT

__all__ = ["ShrinkConfig", "ShrinkPlan", "apply", "plan", "format_plan", "analyse", "rebuild", "mask", "cost", "TARGETS"]


@dataclasses.dataclass(kw_only=True)
class ShrinkConfig(FineTuneConfig):
    """Shrinking options: what to count (``target``), how much of it to keep, and the channel chunk size."""

    distill_from: str | None = finetune.teacher_option(FROM_INPUT)
    target: str = option("params", "What --keep counts: the parameters, the multiply-accumulates per example, or "
                                   "the latency (p50 of the float32 LiteRT file, 1 thread, measured on this "
                                   "machine while cutting).", choices=TARGETS)
    keep: float | None = option(None, "Share of the target kept, in (0, 1] (e.g. 0.5: half the parameters). "
                                      "Required unless --max-drop searches it.", metavar="SHARE")
    round_to: int = option(8, "Channels leave in chunks of this many; a kept count is a multiple of it (or the "
                              "whole group), so kept channels fill the CPU's vector registers.")
    importance: str = option("magnitude", "How channels are ranked: filter norms ('magnitude') or the first-order "
                                          "Taylor estimate of the loss change on calibration batches ('taylor').",
                             choices=IMPORTANCES)
    calibration_size: int = option(512, "Training examples the 'taylor' importance reads.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keep is None and self.max_drop is None:
            raise ConfigError("keep is required: a share in (0, 1], or give max_drop to search for it")
        if self.keep is not None and not 0 < self.keep <= 1:
            raise ConfigError(f"keep must be in (0, 1], got {self.keep}")
        at_least(self, 1, "round_to", "calibration_size")
        if self.target not in TARGETS:
            raise ConfigError(f"unknown target {self.target!r}; use one of {', '.join(TARGETS)}")
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"unknown importance {self.importance!r}; use one of {', '.join(IMPORTANCES)}")


@dataclasses.dataclass
class ShrinkPlan:
    """The groups of a model and the channels each keeps (``kept``: sorted indices of every group that shrinks)."""

    graph: Graph
    kept: dict
    groups: list[dict]  # producers, members, channels, kept, frozen
    before: dict  # params and MACs of the input (and its measured latency_ms with target latency)
    after: dict  # ... of the shrunk model
    latency: dict | None = None  # the latency search: goal, tries (MAC share, p50)

    @property
    def unfollowed(self) -> dict[str, str]:
        return dict(self.graph.unfollowed)


def plan(model: keras.Model, config: ShrinkConfig, data: Dataset | None = None, *,
         measure: Callable[[keras.Model], float] | None = None) -> ShrinkPlan:
    """What shrinking will do, decided before any training: every group, its channels kept, and what stays whole.

    ``taylor`` importance reads ``data``'s training split; without data (the
    pre-flight ``--plan``) channels are ranked by magnitude. ``target``
    latency times candidate cuts with ``measure(model) -> p50 ms``
    (:func:`kerascomp.bench.latency_ms`; the CLI and the pipeline pass it).
    """
    finetune.check_model(model)
    graph = analyse(model)
    groups = graph.groups()
    if config.importance == "taylor" and data is not None:
        pick = np.random.default_rng(config.seed).permutation(len(data.x_train))[:config.calibration_size]
        x, y = data.x_train[pick], data.y_train[pick]
        scores = taylor(graph, groups, x, y, config.batch_size, data.task)
    else:
        scores = magnitude(graph, groups)
    keep, measured = config.keep or 1.0, None
    if config.target == "latency":
        if measure is None:
            raise ConfigError("target latency times candidate files: pass measure=kerascomp.bench.latency_ms "
                              "(kerascomp.compress_file and the CLI do)")
        kept, measured = fit_latency(graph, groups, scores, keep, config.round_to, measure)
    else:
        kept = allocate(graph, groups, scores, config.target, keep, config.round_to)
    sizes = {root: len(indices) for root, indices in kept.items()}
    rows = [{"producers": g.producers, "members": g.members, "channels": g.size,
             "kept": sizes.get(g.root, g.size), "frozen": g.frozen}
            for g in groups if g.producers or g.members]
    before, after = cost(graph), cost(graph, sizes)
    if measured:
        before["latency_ms"], after["latency_ms"] = measured["before"], measured["after"]
    return ShrinkPlan(graph, kept, rows, before, after, measured)


def format_plan(planned: ShrinkPlan) -> str:
    """The pre-flight table: channels kept per group, then the layers whose channels cannot be followed."""
    before, after = planned.before, planned.after
    lines = [f"pre-flight: {sum(r['kept'] < r['channels'] for r in planned.groups)} of "
             f"{len(planned.groups)} channel groups shrink; params {before['params']:,} -> {after['params']:,}, "
             f"MACs {before['macs']:,} -> {after['macs']:,}" + _latency(before, after)]
    for row in planned.groups:
        state = f"keep {row['kept']:>4}/{row['channels']:<4}" if not row["frozen"] else f"whole {row['channels']:>4}    "
        why = f"  ({row['frozen']})" if row["frozen"] else ""
        lines.append(f"  {state} {', '.join(row['producers']) or '-'} -> {', '.join(row['members'])}{why}")
    for name, why in planned.unfollowed.items():
        lines.append(f"  left whole: {name}: {why}")
    return "\n".join(lines)


def _latency(before: dict, after: dict) -> str:
    """The measured float32 p50, where the target was latency."""
    if "latency_ms" not in before:
        return ""
    return f", p50 {before['latency_ms']:.4f} -> {after['latency_ms']:.4f} ms (float32 LiteRT, 1 thread, here)"


def apply(model: keras.Model, data: Dataset, config: ShrinkConfig, *, teacher: keras.Model | None = None,
          measure: Callable[[keras.Model], float] | None = None) -> tuple[keras.Model, dict]:
    """Shrink ``model`` (left untouched) to ``config.keep`` of its ``config.target`` and fine-tune it.

    Metrics: ``params``/``macs`` ``before`` and ``after``, the ``groups``
    (channels and kept), the ``unfollowed`` layers with why,
    ``val_accuracy``/``test_accuracy``, the input's (``baseline``) and the
    fine-tuning record.
    """
    data.check_model(model)
    planned = plan(model, config, data, measure=measure)
    small = rebuild(planned.graph, planned.kept)
    tuned, fit = finetune.fine_tune(small, data, config, teacher=finetune.teacher_for(config, model, teacher))
    metrics = {
        **{k: fit[k] for k in data.task.keys},
        "baseline": evaluate(model, data, config.batch_size),
        "target": config.target, "keep": config.keep,
        "before": planned.before, "after": planned.after, "latency_search": planned.latency,
        "groups": planned.groups, "unfollowed": planned.unfollowed,
        "fine_tune": fit,
    }
    return tuned, metrics


def layers(model: keras.Model) -> dict[str, str]:
    """Per layer, whether shrinking can cut its channels (``kerascomp inspect``)."""
    graph = analyse(model)
    answers = {layer.name: "no: holds no channel group" for layer in model.layers}
    for group in graph.groups():
        for name in group.members:
            if group.shrinkable:
                answers[name] = "yes"
            elif answers[name] != "yes":
                answers[name] = f"no: {group.frozen}"
    for name, why in graph.unfollowed.items():
        answers[name] = f"no: {why}"
    return answers


def summary(metrics: dict) -> str:
    """The headline ``kerascomp shrink`` prints."""
    before, after = metrics["before"], metrics["after"]
    shrunk = sum(r["kept"] < r["channels"] for r in metrics["groups"])
    return (f"params {before['params']:,} -> {after['params']:,} ({after['params'] / before['params']:.2f}x), "
            f"MACs {before['macs']:,} -> {after['macs']:,} ({after['macs'] / max(before['macs'], 1):.2f}x)"
            f"{_latency(before, after)}; {shrunk} channel groups shrunk")


TECHNIQUE = register(Technique(
    name="shrink", config=ShrinkConfig, apply=apply, summary=summary,
    plan=lambda model, config, measure=None: format_plan(plan(model, config, measure=measure)), layers=layers,
    suffix="shrunk", measures="latency",
    strength=Strength("keep", (0.75, 0.5, 0.35, 0.25, 0.15, 0.1)),
    help="Remove whole filters, units and channels (a plain, smaller model the device runs faster), fine-tune."))
