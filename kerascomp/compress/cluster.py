"""Weight clustering with tfmot: every clustered kernel keeps at most K distinct values.

Shared weights compress well (gzip, or palette formats) and combine with int8:
clustering runs on a clone of the model, fine-tunes the centroids, strips the
wrappers and reports the distinct values per layer measured on the stripped
weights. ``preserve_sparsity`` keeps the zeros of a pruned model at zero.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kerascomp.backend import keras
from kerascomp.compress import finetune
from kerascomp.compress.finetune import FineTuneConfig, LayerPlan
from kerascomp.compress.registry import Strength, Technique, register
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError
from kerascomp.options import option
from kerascomp.training import evaluate

__all__ = ["ClusterConfig", "plan", "apply", "strip", "target_weights", "unique_values", "INITS"]

INITS = {"kmeans++": "KMEANS_PLUS_PLUS", "linear": "LINEAR", "density": "DENSITY_BASED"}
DEFAULT_CLUSTERS = 16


def strip(model: keras.Model) -> keras.Model:
    """``model`` without clustering wrappers (their centroids and indices are training-only state)."""
    if not any(type(layer).__name__.startswith("ClusterWeights") for layer in model.layers):
        return model
    return finetune.tfmot().clustering.keras.strip_clustering(model)


def load_scope():
    """Custom objects of clustered models saved with their wrappers."""
    return finetune.tfmot().clustering.keras.cluster_scope()


@dataclasses.dataclass(kw_only=True)
class ClusterConfig(FineTuneConfig):
    """Clustering options: ``clusters`` (K) per kernel, centroid ``init``, ``preserve_sparsity``, a ``layers`` regex."""

    clusters: int | None = option(None, f"Distinct values per clustered kernel (K) [default: {DEFAULT_CLUSTERS}, or "
                                        "the fewest that hold --max-drop].")
    init: str = option("kmeans++", "Centroid initialisation.", choices=tuple(INITS))
    preserve_sparsity: bool = option(False, "Keep the zeros of a pruned model at zero.")
    layers: str | None = option(None, "Cluster only layers whose name matches.", metavar="REGEX")

    def __post_init__(self) -> None:
        super().__post_init__()
        finetune.compile_pattern(self.layers)
        if self.clusters is None and self.max_drop is None:
            self.clusters = DEFAULT_CLUSTERS
        if self.clusters is None:
            return  # searched within max_drop
        if not isinstance(self.clusters, int) or self.clusters < 2:
            raise ConfigError(f"clusters must be an integer of at least 2, got {self.clusters!r}")
        if self.preserve_sparsity and self.clusters < 3:
            raise ConfigError("preserving sparsity needs at least 3 clusters (one is reserved for zero)")
        if self.init not in INITS:
            raise ConfigError(f"unknown init {self.init!r}; use one of {', '.join(INITS)}")


def plan(model: keras.Model, config: ClusterConfig) -> list[LayerPlan]:
    """Which layers will be clustered and, for every other layer with weights, why not."""
    finetune.check_model(model)
    return finetune.plan_layers(model, "cluster", lambda layer: _decide(layer, config), config.layers)


def apply(
    model: keras.Model, data: Dataset, config: ClusterConfig, *, teacher: keras.Model | None = None
) -> tuple[keras.Model, dict]:
    """Cluster ``model`` (left untouched) and fine-tune; returns the stripped model and its metrics.

    Metrics: ``unique_values`` per clustered layer (at most ``clusters``, plus
    zero when sparsity is preserved), ``val_accuracy``/``test_accuracy`` and
    the input model's (``baseline``), the ``preflight`` plan and the
    fine-tuning record.
    """
    plans = plan(model, config)
    data.check_model(model)
    clustering = finetune.tfmot().clustering.keras
    init = getattr(clustering.CentroidInitialization, INITS[config.init])
    wrapped = finetune.wrap(model, finetune.chosen(plans), lambda layer: clustering.cluster_weights(
        layer, number_of_clusters=config.clusters, cluster_centroids_init=init,
        preserve_sparsity=config.preserve_sparsity))
    tuned, fit = finetune.fine_tune(wrapped, data, config, teacher=finetune.teacher_for(config, model, teacher))
    stripped = strip(tuned)
    metrics = {
        "clusters": config.clusters,
        "unique_values": unique_values(stripped, finetune.chosen(plans)),
        **{k: fit[k] for k in data.task.keys},
        "baseline": evaluate(model, data, config.batch_size),
        "preflight": [p.to_dict() for p in plans],
        "fine_tune": fit,
    }
    return stripped, metrics


def target_weights(layer: keras.layers.Layer) -> list | None:
    """The variables tfmot clusters in ``layer`` (``[]``: none), or ``None`` when it cannot cluster it."""
    from tensorflow_model_optimization.python.core.clustering.keras import clusterable_layer, clustering_registry

    if isinstance(layer, clusterable_layer.ClusterableLayer):
        return [w for _, w in layer.get_clusterable_weights()]
    registry = clustering_registry.ClusteringRegistry
    if not registry.supports(layer):
        return None
    return [w for _, w in registry.make_clusterable(layer).get_clusterable_weights()]


def unique_values(model: keras.Model, names: list[str]) -> dict[str, int]:
    """Most distinct values in any clustered kernel of each named layer."""
    return {name: max(len(np.unique(w.numpy())) for w in target_weights(model.get_layer(name))) for name in names}


def _decide(layer: keras.layers.Layer, config: ClusterConfig) -> tuple[int, str]:
    count, reason = finetune.weight_count(layer, target_weights(layer), "cluster",
                                        "not in its registry, not a ClusterableLayer")
    if count and count <= config.clusters:
        return 0, f"only {count} weights for {config.clusters} clusters"
    return count, reason


def summary(metrics: dict) -> str:
    """The headline ``kerascomp cluster`` prints: distinct values per clustered layer."""
    return "distinct values per layer: " + ", ".join(f"{k} {v}" for k, v in metrics["unique_values"].items())


TECHNIQUE = register(Technique(
    name="cluster", config=ClusterConfig, apply=apply, summary=summary, strip=strip,
    load_scope=load_scope, plan=lambda model, config: finetune.format_plan(plan(model, config)),
    layers=lambda model: finetune.layer_answers(model, lambda: plan(model, ClusterConfig()), "no weights"),
    suffix="clustered", strength=Strength("clusters", (32, 16, 8, 4), warm_start=True),
    help="Cluster the weights of a .keras model (tfmot), fine-tune, and save the stripped model."))
