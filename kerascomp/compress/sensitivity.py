"""Per-layer pruning sensitivity: how much validation accuracy each layer loses when pruned alone.

Each prunable layer of a private copy of the model is pruned one-shot (the
smallest-magnitude weights zeroed, the rule tfmot uses, no fine-tuning) at
every sparsity of the scan while all other layers stay dense; the validation
drop says where sparsity is cheap. :func:`choose_sparsities` turns a scan into
per-layer sparsities that maximise the overall sparsity while the summed drops
stay within a budget, which is what ``prune --sparsity auto`` uses. Only the
validation split is used, never the test split.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from kerascomp.backend import keras
from kerascomp.compress import finetune
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError

__all__ = ["SensitivityConfig", "apply", "choose_sparsities", "magnitude_mask"]


@dataclasses.dataclass(kw_only=True)
class SensitivityConfig:
    """Sparsities to try (each in (0, 1)), a regular expression on layer names, and the evaluation batch size."""

    sparsities: tuple[float, ...] = (0.5, 0.7, 0.9)
    layers: str | None = None
    batch_size: int = 256

    def __post_init__(self) -> None:
        self.sparsities = tuple(sorted(set(float(s) for s in self.sparsities)))
        if not self.sparsities or any(not 0 < s < 1 for s in self.sparsities):
            raise ConfigError(f"sensitivity sparsities must lie in (0, 1), got {self.sparsities}")
        finetune.compile_pattern(self.layers)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")


def apply(model: keras.Model, data: Dataset, config: SensitivityConfig) -> tuple[keras.Model, dict]:
    """Scan every prunable layer; returns ``model`` unchanged (an analysis stage) and the scan.

    The scan holds the ``baseline`` validation accuracy and loss, ``n_val``,
    the ``sparsities``, one entry per layer (``val_accuracy``, ``drop_pp`` and
    ``loss_increase`` per sparsity) and the ``ranking`` from most to least
    sensitive (mean drop, then mean loss increase, then name: stable).
    """
    finetune.check_model(model)
    plans = finetune.plan_layers(model, "prune", finetune.prunable, config.layers)
    data.check_model(model)
    work = finetune.clone(model)
    base_accuracy, base_loss = _score(work, data, config.batch_size)
    layers = []
    for p in (p for p in plans if p.action != "skip"):
        variables = finetune.prunable_weights(work.get_layer(p.name))
        originals = [v.numpy() for v in variables]
        scores = []
        for sparsity in config.sparsities:
            for variable, weights in zip(variables, originals):
                variable.assign(weights * magnitude_mask(weights, sparsity))
            scores.append(_score(work, data, config.batch_size))
        for variable, weights in zip(variables, originals):
            variable.assign(weights)
        layers.append({
            "name": p.name, "kind": p.kind, "weights": p.weights,
            "val_accuracy": [a for a, _ in scores],
            "drop_pp": [100 * (base_accuracy - a) for a, _ in scores],
            "loss_increase": [loss - base_loss for _, loss in scores],
        })
    ranking = sorted(layers, key=lambda e: (-np.mean(e["drop_pp"]), -np.mean(e["loss_increase"]), e["name"]))
    scan = {
        "baseline": {"val_accuracy": base_accuracy, "val_loss": base_loss},
        "n_val": int(len(data.x_val)),
        "sparsities": list(config.sparsities),
        "layers": layers,
        "ranking": [e["name"] for e in ranking],
        "skipped": [p.to_dict() for p in plans if p.action == "skip"],
    }
    return model, scan


def choose_sparsities(scan: dict, max_drop: float) -> dict[str, float]:
    """Per-layer sparsities (0: leave dense) that prune the most weights within ``max_drop`` pp.

    Drops are assumed to add up across layers (they usually add up to more
    than the one-shot sum once fine-tuning recovers, so this is cautious).
    Costs are counted in validation examples lost, which makes the choice an
    exact multiple-choice knapsack solved by dynamic programming.
    """
    n_val = scan["n_val"]
    budget = math.floor(max_drop * n_val / 100 + 1e-9)
    best: dict[int, tuple[float, dict]] = {0: (0.0, {})}
    for layer in scan["layers"]:
        drops = zip(scan["sparsities"], layer["drop_pp"])
        options = [(0, 0.0)] + [(max(0, round(d * n_val / 100)), s) for s, d in drops]
        grown: dict[int, tuple[float, dict]] = {}
        for cost, (pruned, choice) in best.items():
            for extra, sparsity in options:
                total, value = cost + extra, pruned + sparsity * layer["weights"]
                if total <= budget and value > grown.get(total, (-1.0,))[0]:
                    grown[total] = (value, {**choice, layer["name"]: sparsity})
        best = grown
    return max(best.values(), key=lambda entry: entry[0])[1]


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """1 for the ``round(n * (1 - sparsity))`` largest magnitudes (at least one), 0 elsewhere."""
    flat = np.abs(weights).ravel()
    keep = max(int(round(flat.size * (1 - sparsity))), 1)
    mask = np.zeros(flat.size, dtype=weights.dtype)
    mask[np.argsort(-flat, kind="stable")[:keep]] = 1
    return mask.reshape(weights.shape)


def _score(model: keras.Model, data: Dataset, batch_size: int) -> tuple[float, float]:
    """Validation accuracy and cross-entropy of a logits model."""
    logits = model.predict(data.x_val, batch_size=batch_size, verbose=0).astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(data.x_val)), data.y_val].mean())
    return float((logits.argmax(axis=1) == data.y_val).mean()), loss
