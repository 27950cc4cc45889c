"""Block swap: replace a trained model's blocks one at a time by lighter ones, keeping only what holds accuracy.

With every original weight frozen, each block in turn is offered its
replacements (see :mod:`kerascomp.compress.swap.candidates`), the lightest first.
A replacement is first fitted locally, by regression onto the original block's
outputs on cached training activations (cheap: one small block, no labels),
then trained end to end with everything else frozen by distillation from the
original model. It is kept if the validation accuracy stays within
``tolerance`` percentage points of the original model's; otherwise the block
is left exactly as it was. Only validation data decides; the test split is
measured once, at the end. An optional short unfrozen fine-tune follows.

The result is a plain functional model: the pipeline's later stages (prune,
QAT, convert, bench) take it like any other. New replacements are added with
:func:`register_candidate` (see :mod:`kerascomp.compress.swap.candidates`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from kerascomp.backend import keras
from kerascomp.compress.registry import Budgeted, Strength, Technique, register
from kerascomp.compress.swap import candidates as catalogue
from kerascomp.compress.swap.blocks import Block, Swap, compile_pattern, find_blocks, model_flops, replay
from kerascomp.compress.swap.candidates import NotApplicable
from kerascomp.compress.swap.candidates import register as register_candidate
from kerascomp.console import echo
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError
from kerascomp.tasks import classifiers_only
from kerascomp.options import at_least, option
from kerascomp.training import TrainConfig, evaluate, train
from kerascomp.training.distillation import DistillConfig
from kerascomp.training.distribute import STRATEGIES

__all__ = ["SwapConfig", "apply", "plan", "format_plan", "swap_table", "register_candidate", "NotApplicable", "ORDERS",
           "find_blocks", "model_flops"]

ORDERS = ("forward", "backward", "cheapest-first")


def _names(text: str) -> tuple[str, ...]:
    """``--candidates a,b``: a comma-separated list."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


@dataclasses.dataclass(kw_only=True)
class SwapConfig(Budgeted):
    """Options of one block swap; validated on creation.

    Attributes:
        tolerance: largest accepted validation accuracy drop, in percentage
            points, of the swapped model below the original.
        epochs_per_block: end-to-end epochs per replacement (0: local fit only).
        order: ``forward``, ``backward``, or ``cheapest-first`` (blocks with the
            fewest parameters first).
        blocks: regular expression on layer names that defines the blocks
            (default: the zoo's ``block_<i>_`` names, else residual structure).
        candidates: replacement names to try (default: all that fit a block).
        fit_samples: training examples whose activations the local fit uses.
        fit_epochs: epochs of the local fit (0: skip it).
        finetune_epochs: epochs of the final unfrozen fine-tune (0: none).
        temperature, alpha: distillation settings (``None``: ``DistillConfig``'s defaults).
        bench_runs: timed LiteRT calls per model for the latency totals (0: no
            ``.tflite`` measurement).
    """

    tolerance: float = option(1.0, "Largest accepted drop of validation accuracy below the original "
                                   "(percentage points).")
    epochs_per_block: int = option(1, "End-to-end distillation epochs per replacement (0: local fit only).")
    order: str = option("forward", "Order in which blocks are visited.", choices=ORDERS)
    blocks: str | None = option(None, "Layer-name regex defining blocks; the match (or its first group) names the "
                                      "block.", metavar="REGEX")
    candidates: tuple[str, ...] | None = option(None, "Replacements to try, comma separated (default: every one that "
                                                      "fits).", type=_names)
    fit_samples: int = option(2048, "Training examples for the local fit of each replacement.")
    fit_epochs: int = option(20, "Local fit epochs (0: skip).")
    finetune_epochs: int = option(0, "Final unfrozen fine-tune epochs.")
    batch_size: int = option(64, "Global batch size.")
    learning_rate: float = option(3e-3, "Peak learning rate of the fits.")
    temperature: float | None = option(None, "Distillation temperature [default: DistillConfig's].")
    alpha: float | None = option(None, "Weight of the hard-label loss [default: DistillConfig's].")
    bench_runs: int = option(100, "Timed .tflite calls per model for the latency totals (0: skip).")
    strategy: str = option("default", "tf.distribute strategy of the fits.", choices=STRATEGIES)
    seed: int = 0
    verbose: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tolerance >= 0:
            raise ConfigError(f"tolerance must be at least 0 percentage points, got {self.tolerance}")
        at_least(self, 0, "epochs_per_block", "fit_epochs", "finetune_epochs", "bench_runs")
        at_least(self, 1, "fit_samples", "batch_size")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.order not in ORDERS:
            raise ConfigError(f"unknown order {self.order!r}; use one of {', '.join(ORDERS)}")
        self.fine_tuning(1, self.learning_rate)  # validates the strategy
        if self.blocks is not None:
            compile_pattern(self.blocks)
        if self.candidates is not None:
            self.candidates = tuple(self.candidates)
            known = {name for names in catalogue.available().values() for name in names}
            unknown = sorted(set(self.candidates) - known)
            if unknown or not self.candidates:
                raise ConfigError(f"unknown candidate(s) {', '.join(unknown) or '(none given)'}; "
                                  f"known: {', '.join(sorted(known))}")
        self.distill_config()

    def fine_tuning(self, epochs: int, learning_rate: float) -> TrainConfig:
        """A short run (no warm-up, no early stopping) with this swap's batch size and seed."""
        return TrainConfig.fine_tuning(epochs=epochs, batch_size=self.batch_size, learning_rate=learning_rate,
                                       seed=self.seed, verbose=self.verbose, strategy=self.strategy)

    def distill_config(self) -> DistillConfig:
        given = {"temperature": self.temperature, "alpha": self.alpha}
        return DistillConfig(**{k: v for k, v in given.items() if v is not None})


def plan(model: keras.Model, config: SwapConfig | None = None) -> list[dict]:
    """The blocks :func:`apply` would visit, in its order, each with its replacements and their sizes."""
    config = config or SwapConfig()
    return [{**block.describe(), "candidates": [_summary(option) for option in _options(block, model, config)]}
            for block in _ordered(find_blocks(model, config.blocks), config.order)]


def format_plan(entries: list[dict]) -> str:
    """The plan as indented text: one line per block, one per replacement."""
    lines = []
    for entry in entries:
        lines.append(f"{entry['name']} ({entry['kind'] or 'unknown kind'}, {len(entry['layers'])} layers, "
                     f"{entry['params']:,} params, {entry['flops'] / 1e6:.2f} MFLOPs): "
                     f"{tuple(entry['input_shape'])} -> {tuple(entry['output_shape'])}")
        for c in entry["candidates"] or [{"candidate": "-", "skipped": "no replacement for this kind of block"}]:
            if "skipped" in c:
                lines.append(f"    {c['candidate']:<14} skipped: {c['skipped']}")
            else:
                lines.append(f"    {c['candidate']:<14} {c['params']:>10,} params ({c['params_saved_pct']:+.0f}%), "
                             f"{c['flops'] / 1e6:.2f} MFLOPs")
    return "\n".join(lines)


def apply(model: keras.Model, data: Dataset, config: SwapConfig | None = None, *,
          measure: Callable | None = None) -> tuple[keras.Model, dict]:
    """Swap ``model``'s blocks for lighter ones where validation accuracy allows.

    ``model`` itself is left untouched. Returns the swapped model (a plain
    functional copy, all layers trainable) and the metrics: one entry per
    block in ``blocks``, parameter, FLOP and accuracy totals before and
    after, and, given ``measure(original, swapped, data, runs)`` (e.g.
    :func:`kerascomp.bench.compare_deployed`), the deployed files' size and
    latency before and after.
    """
    config = config or SwapConfig()
    start = time.perf_counter()
    classifiers_only(data.task, "swap")
    data.check_model(model)
    keras.utils.set_random_seed(config.seed)  # replacement initialisers and local-fit shuffles
    search = _Search(model, data, config)
    records = [search.visit(block) for block in _ordered(find_blocks(search.base, config.blocks), config.order)]
    swapped, finetune = _finetune(_copy(search.current, trainable=True), search.teacher, search.tuning, config)
    before, after = evaluate(model, data, config.batch_size), evaluate(swapped, data, config.batch_size)
    return swapped, {
        "blocks": records,
        "replaced": [r["block"] for r in records if r["decision"] == "replaced"],
        "params_before": int(model.count_params()),
        "params_after": int(swapped.count_params()),
        "flops_before": model_flops(model),
        "flops_after": model_flops(swapped),
        **{f"{key}_before": value for key, value in before.items()},
        **{f"{key}_after": value for key, value in after.items()},
        "baseline": before,
        "val_accuracy": after["val_accuracy"],
        "test_accuracy": after["test_accuracy"],
        "finetune": finetune,
        "tflite": measure(model, swapped, data, config.bench_runs) if measure and config.bench_runs else None,
        "seconds": time.perf_counter() - start,
        "config": dataclasses.asdict(config),
        "data": data.describe(),
    }


class _Search:
    """The state of one swap: the frozen original graph, the swaps kept so far and the model they make."""

    def __init__(self, model: keras.Model, data: Dataset, config: SwapConfig):
        self.config = config
        self.base, self.teacher = _copy(model, trainable=False), _copy(model, trainable=False)
        # Training runs inside the search never see the test split: their "test" split is the validation split.
        self.tuning = dataclasses.replace(data, x_test=data.x_val, y_test=data.y_val)
        self.reference = self.accuracy = _accuracy(self.base, data.x_val, data.y_val)
        order = np.random.default_rng(config.seed).permutation(len(data.x_train))
        self.fit_x = data.x_train[order[:config.fit_samples]]
        self.swaps: list[Swap] = []
        self.current, self.tmap = self.base, {}

    def visit(self, block: Block) -> dict:
        """Try ``block``'s replacements, lightest first, and keep the first that holds accuracy."""
        start = time.perf_counter()
        every = _options(block, self.base, self.config)
        options = [o for o in every if "model" in o]
        record = {"block": block.name, "kind": block.kind, "decision": "kept original" if options else "no candidate",
                  "candidate": None, "tried": [], "skipped": [o for o in every if "model" not in o],
                  "params_before": block.params, "params_after": block.params, "flops_before": block.flops,
                  "flops_after": block.flops, "val_accuracy_before": self.accuracy,
                  "val_accuracy_after": self.accuracy, "model_params_after": int(self.current.count_params())}
        cache = self._activations(block) if options else None
        for choice in options:
            tried, swap, candidate = self._try(block, choice, cache)
            record["tried"].append(tried)
            if tried["kept"]:
                choice["model"].trainable = False
                self.swaps.append(swap)
                self.current, self.tmap = candidate
                self.accuracy = tried["val_accuracy"]
                record.update(decision="replaced", candidate=choice["candidate"], params_after=choice["params"],
                              flops_after=choice["flops"], val_accuracy_after=self.accuracy,
                              model_params_after=int(self.current.count_params()))
                break
        record["seconds"] = time.perf_counter() - start
        return record

    def _try(self, block: Block, choice: dict, cache) -> tuple[dict, Swap, tuple]:
        """Fit one replacement locally, then end to end with the rest frozen; judge it on validation accuracy."""
        config, start, new = self.config, time.perf_counter(), choice["model"]
        _log(config, f"{block.name}: trying {choice['candidate']} ({choice['params']:,} params, was {block.params:,})")
        fit_error = _fit_locally(new, cache, config)
        swap = Swap(block, lambda x: replay(new, [x])[0][0])
        outputs, tmap = replay(self.base, self.base.inputs, [*self.swaps, swap])
        candidate = keras.Model(self.base.inputs, outputs, name=self.base.name)
        fitted = _accuracy(candidate, self.tuning.x_val, self.tuning.y_val)
        _log(config, f"{block.name}: {choice['candidate']} fitted locally on {len(cache[0])} examples in "
                     f"{time.perf_counter() - start:.1f} s, relative error {fit_error:.3f}, val accuracy {fitted:.4f}")
        if config.epochs_per_block:
            train(candidate, self.tuning, config.fine_tuning(config.epochs_per_block, config.learning_rate),
                  teacher=self.teacher, distill=config.distill_config())
        accuracy = _accuracy(candidate, self.tuning.x_val, self.tuning.y_val)
        drop = 100.0 * (self.reference - accuracy)
        tried = {"candidate": choice["candidate"], "params": choice["params"], "flops": choice["flops"],
                 "fit_relative_error": fit_error, "val_accuracy_after_fit": fitted, "val_accuracy": accuracy,
                 "drop_pp": drop, "kept": drop <= config.tolerance, "seconds": time.perf_counter() - start}
        _log(config, f"{block.name}: {choice['candidate']} val accuracy {accuracy:.4f} (original "
                     f"{self.reference:.4f}, drop {drop:+.2f} pp) -> {'kept' if tried['kept'] else 'reverted'}")
        return tried, swap, (candidate, tmap)

    def _activations(self, block: Block) -> tuple[np.ndarray, np.ndarray]:
        """The block's input in the current (partly swapped) model and the original block's output."""
        entry = keras.Model(self.base.inputs, self.tmap.get(id(block.input), block.input))
        target = keras.Model(self.base.inputs, block.output)
        return (entry.predict(self.fit_x, batch_size=256, verbose=0),
                target.predict(self.fit_x, batch_size=256, verbose=0))


def _options(block: Block, source: keras.Model, config: SwapConfig) -> list[dict]:
    """Every registered replacement of ``block``: built ones lightest first, then those skipped and why."""
    built, skipped = [], []
    for candidate in catalogue.candidates(block.kind):
        if config.candidates is not None and candidate.name not in config.candidates:
            continue
        entry = {"candidate": candidate.name, "description": candidate.description}
        try:
            new = candidate.instantiate(block, source, f"{block.name}_{candidate.name}_")
        except NotApplicable as exc:
            skipped.append({**entry, "skipped": str(exc)})
            continue
        params = int(new.count_params())
        if params >= block.params:
            skipped.append({**entry, "skipped": f"{params:,} params, no saving"})
            continue
        built.append({**entry, "model": new, "params": params, "flops": model_flops(new),
                      "params_saved_pct": -100.0 * (block.params - params) / max(block.params, 1)})
    return sorted(built, key=lambda o: o["params"]) + skipped


def _summary(option: dict) -> dict:
    return {k: v for k, v in option.items() if k != "model"}


def _ordered(blocks: list[Block], order: str) -> list[Block]:
    if order == "backward":
        return blocks[::-1]
    if order == "cheapest-first":
        return sorted(blocks, key=lambda b: b.params)
    return blocks


def _fit_locally(new: keras.Model, cache, config: SwapConfig) -> float:
    """Regress the replacement onto the original block's outputs; returns MSE relative to their variance."""
    x, target = cache
    if config.fit_epochs:
        new.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
        new.fit(x, target, epochs=config.fit_epochs, batch_size=config.batch_size, shuffle=True, verbose=0)
    error = np.mean((new.predict(x, batch_size=256, verbose=0) - target) ** 2)
    return float(error / max(float(np.var(target)), 1e-12))


def _finetune(model: keras.Model, teacher, tuning: Dataset, config: SwapConfig):
    """Optional short unfrozen fine-tune, kept only if it does not lower validation accuracy."""
    if not config.finetune_epochs:
        return model, None
    before = _accuracy(model, tuning.x_val, tuning.y_val)
    tuned = _copy(model, trainable=True)
    train(tuned, tuning, config.fine_tuning(config.finetune_epochs, config.learning_rate / 10),
          teacher=teacher, distill=config.distill_config())
    after = _accuracy(tuned, tuning.x_val, tuning.y_val)
    kept = after >= before
    return (tuned if kept else model), {"epochs": config.finetune_epochs, "val_accuracy_before": before,
                                        "val_accuracy_after": after, "kept": kept}


def _copy(model: keras.Model, trainable: bool) -> keras.Model:
    """An independent functional copy (own layers and weights), every layer ``trainable`` or frozen."""
    clone = keras.models.clone_model(model)
    for layer in clone.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
        layer.trainable = trainable
    return clone


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(x, batch_size=256, verbose=0).argmax(axis=1) == y).mean())


def _log(config: SwapConfig, message: str) -> None:
    if config.verbose:
        echo(message)


def swap_table(metrics: dict) -> str:
    """Markdown of a block swap: one row per block in the order visited, then before/after totals."""
    lines = ["| block | kind | decision | replacement | tried | params before | params after | val acc before "
             "| val acc after | seconds |", "|" + "---|" * 10]
    for b in metrics["blocks"]:
        tried = ", ".join(f"{t['candidate']} {100 * t['val_accuracy']:.1f}%" for t in b["tried"]) or "-"
        lines.append(f"| {b['block']} | {b['kind'] or '-'} | {b['decision']} | {b['candidate'] or '-'} | {tried} "
                     f"| {b['params_before']:,} | {b['params_after']:,} | {b['val_accuracy_before']:.4f} "
                     f"| {b['val_accuracy_after']:.4f} | {b['seconds']:.1f} |")
    rows = [("params", f"{metrics['params_before']:,}", f"{metrics['params_after']:,}"),
            ("FLOPs (estimate)", f"{metrics['flops_before']:,}", f"{metrics['flops_after']:,}"),
            ("val accuracy", f"{metrics['val_accuracy_before']:.4f}", f"{metrics['val_accuracy_after']:.4f}"),
            ("test accuracy", f"{metrics['test_accuracy_before']:.4f}", f"{metrics['test_accuracy_after']:.4f}")]
    if metrics.get("tflite"):
        before, after = metrics["tflite"]["before"], metrics["tflite"]["after"]
        rows += [(".tflite KB (gzip KB)", f"{before['size_bytes'] / 1024:.1f} ({before['gzip_bytes'] / 1024:.1f})",
                  f"{after['size_bytes'] / 1024:.1f} ({after['gzip_bytes'] / 1024:.1f})"),
                 (".tflite p50 ms, batch 1", f"{before['latency_ms']['p50']:.3f}", f"{after['latency_ms']['p50']:.3f}"),
                 (".tflite test accuracy", f"{before['accuracy']:.4f}", f"{after['accuracy']:.4f}")]
    lines += ["", "| total | before | after |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def summary(metrics: dict) -> str:
    """The per-block table, then the headline: blocks replaced, parameters and accuracy before and after."""
    return (f"{swap_table(metrics)}\nreplaced {len(metrics['replaced'])} of {len(metrics['blocks'])} blocks: "
            f"{metrics['params_before']:,} -> {metrics['params_after']:,} params, val accuracy "
            f"{metrics['val_accuracy_before']:.4f} -> {metrics['val_accuracy_after']:.4f}, test "
            f"{metrics['test_accuracy_before']:.4f} -> {metrics['test_accuracy_after']:.4f}")


TECHNIQUE = register(Technique(
    name="swap", config=SwapConfig, apply=apply, summary=summary, teacher=False, suffix="swapped", measures="deployed",
    plan=lambda model, config, measure=None: format_plan(plan(model, config)), strength=Strength("tolerance", (0.25, 0.5, 1.0, 2.0)),
    help="Swap a model's blocks for lighter ones, one at a time, keeping those that hold validation accuracy."))
