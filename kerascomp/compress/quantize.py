"""Quantization-aware training (QAT) with tfmot, alone or preserving earlier sparsity or clusters.

The model learns with int8 fake-quantization in the loop, so that
``kerascomp convert --quantize int8`` loses (almost) nothing. ``preserve``
picks tfmot's scheme: ``none`` (default 8-bit), ``sparsity`` (PQAT: pruned
zeros stay zero) or ``clusters`` (CQAT: clustered kernels keep their shared
values, and zeros). Layers tfmot cannot quantize are listed before any work;
with ``float_fallback`` they stay float inside the QAT model instead of
failing it. The result keeps its QAT wrappers (the converter needs them) and
loads from ``.keras`` without any user scope.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Iterator

from kerascomp.backend import keras
from kerascomp.compress import finetune
from kerascomp.compress.finetune import FineTuneConfig, LayerPlan
from kerascomp.compress.registry import Technique, register
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError, ModelError, first_line
from kerascomp.interop import PREPROCESSING
from kerascomp.options import option
from kerascomp.training import evaluate

__all__ = ["QATConfig", "plan", "apply", "PRESERVE"]

PRESERVE = ("none", "sparsity", "clusters")


@dataclasses.dataclass(kw_only=True)
class QATConfig(FineTuneConfig):
    """QAT options: the ``preserve`` scheme and ``float_fallback`` for layers QAT cannot quantize.

    Fewer epochs and a lower learning rate than pruning: the weights only
    need to adapt to the quantization grid.
    """

    epochs: int = option(5, "Fine-tuning epochs.")
    learning_rate: float = option(5e-4, "Peak fine-tuning learning rate.")
    preserve: str = option("none", "QAT scheme: plain, sparsity-preserving (PQAT) or cluster-preserving (CQAT).",
                           choices=PRESERVE)
    float_fallback: bool = option(False, "Leave layers QAT cannot quantize in float instead of failing.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preserve not in PRESERVE:
            raise ConfigError(f"unknown preserve {self.preserve!r}; use one of {', '.join(PRESERVE)}")
        if self.strategy != "default":  # measured: the QAT wrappers do not clone into a strategy's scope
            raise ConfigError(f"QAT runs on one device only (strategy 'default'), got {self.strategy!r}: tfmot's "
                              "quantize wrappers cannot be copied into a tf.distribute scope")


def plan(model: keras.Model, config: QATConfig) -> list[LayerPlan]:
    """Every layer with weights, and every layer QAT cannot quantize with the reason.

    Raises :class:`ModelError` for unsupported layers unless
    ``config.float_fallback`` is set, in which case they are planned as
    ``skip`` (left float).
    """
    finetune.check_model(model)
    unsupported = _unsupported(model, _scheme(config.preserve))
    plans = finetune.plan_layers(model, "quantize", lambda layer: _decide(layer, unsupported), weightless=True)
    skipped = [p for p in plans if p.action == "skip" and p.kind not in PREPROCESSING]
    if skipped and not config.float_fallback:
        names = "; ".join(f"{p.name} ({p.reason})" for p in skipped)
        raise ModelError(f"QAT cannot quantize {len(skipped)} layer(s): {names}. "
                         "Pass --float-fallback to leave them in float")
    return plans


def apply(
    model: keras.Model, data: Dataset, config: QATConfig, *, teacher: keras.Model | None = None
) -> tuple[keras.Model, dict]:
    """Quantization-aware fine-tuning of a copy of ``model``; returns the QAT model and its metrics.

    Metrics: ``val_accuracy``/``test_accuracy`` of the fake-quantized model
    and the input model's (``baseline``), ``kernel_sparsity`` before and after
    (what PQAT must preserve), the ``scheme``, the ``preflight`` plan and the
    fine-tuning record.
    """
    plans = plan(model, config)
    data.check_model(model)
    quantization = finetune.tfmot().quantization.keras
    skipped = {p.name for p in plans if p.action == "skip" and p.kind not in PREPROCESSING}
    annotated = finetune.wrap(model, {layer.name for layer in model.layers if layer.name not in skipped}, _annotate)
    try:
        with quantization.quantize_scope():
            qat = quantization.quantize_apply(annotated, _scheme(config.preserve))
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:  # tfmot's transforms fail with plain exceptions
        raise ModelError(f"QAT could not wrap the model: {first_line(exc)}") from None
    kernels = [p.name for p in plans if p.action != "skip" and finetune.prunable_weights(model.get_layer(p.name))]
    before = _sparsity(model, kernels)
    tuned, fit = finetune.fine_tune(qat, data, config, teacher=finetune.teacher_for(config, model, teacher))
    if config.preserve != "none":
        tuned = _portable(tuned, annotated, quantization)
    metrics = {
        "scheme": config.preserve,
        **{k: fit[k] for k in data.task.keys},
        "baseline": evaluate(model, data, config.batch_size),
        "kernel_sparsity": {"before": before, "after": _sparsity(model, kernels, tuned)},
        "float_layers": sorted(skipped),
        "preflight": [p.to_dict() for p in plans],
        "fine_tune": fit,
    }
    return tuned, metrics


def _annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
    """tfmot's QAT annotation; preprocessing layers (which tfmot rejects, #647) get their output's range learned.

    With a no-op config the converter had no range for a ``Rescaling``'s
    output and dropped the scale: the int8 file of a model taking raw pixels
    (0..255) saw inputs 255 times too large and agreed with Keras on 9 % of
    digits. Quantizing the output (no weights) keeps the scale in the file.
    """
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_configs import (
        Default8BitOutputQuantizeConfig,
    )

    config = Default8BitOutputQuantizeConfig() if type(layer).__name__ in PREPROCESSING else None
    return finetune.tfmot().quantization.keras.quantize_annotate_layer(layer, quantize_config=config)


def _unsupported(model: keras.Model, scheme) -> set[str]:
    """Layers the scheme leaves without a quantize config, found by a dry run of its layout transform.

    The transform is what lets, e.g., a BatchNormalization after a Conv2D be
    folded although the registry itself does not list BatchNormalization.
    """
    requested = {layer.name: {} for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)}
    transformed, configs = scheme.get_layout_transformer().apply(finetune.clone(model), requested)
    registry = scheme.get_quantize_registry()
    return {layer.name for layer in transformed.layers if layer.name in requested
            and not configs.get(layer.name, {}).get("quantize_config") and not registry.supports(layer)}


def _decide(layer: keras.layers.Layer, unsupported: set[str]) -> tuple[int, str]:
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_aware_activation import (
        QuantizeAwareActivation as activations,
    )

    if type(layer).__name__ in PREPROCESSING:
        return 0, "input preprocessing: no weights; its output range is learned"
    if layer.name in unsupported:
        return 0, f"{type(layer).__name__} is not supported by tfmot's 8-bit QAT scheme"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", type(activation).__name__)
    known = activations._PRE_QUANT_ACTIVATIONS | activations._POST_QUANT_ACTIVATIONS  # noqa: SLF001
    if activation is not None and name not in known | {"NoOpActivation"}:
        return 0, f"activation {name!r} has no QAT support"
    return int(sum(w.shape.num_elements() for w in layer.weights)), ""


def _scheme(preserve: str):
    quantization = finetune.tfmot().quantization.keras
    if preserve == "sparsity":
        return quantization.collab_opts.Default8BitPrunePreserveQuantizeScheme()
    if preserve == "clusters":  # not exported by tfmot 0.8's public API
        from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
            default_8bit_cluster_preserve_quantize_scheme as cluster_preserve,
        )

        return cluster_preserve.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    return quantization.default_8bit.Default8BitQuantizeScheme()


def _portable(trained: keras.Model, annotated: keras.Model, quantization) -> keras.Model:
    """The default-scheme QAT model holding ``trained``'s values.

    The preserving schemes keep training-only state (centroids, indices,
    masks) in quantizers that tfmot does not serialize, so their models do not
    load back. What inference and conversion use (kernels, ranges, batch-norm
    statistics) is the same in the default scheme, built here the same way as
    during training (so the saved variable layout is the one the loader
    expects) and filled with the trained values, matched per layer by
    variable name without the layer-name prefix Keras may have made unique.
    """
    with quantization.quantize_scope():
        plain = quantization.quantize_apply(annotated, _scheme("none"))
    for target, source in zip(plain.layers, trained.layers, strict=True):
        values = {_short(w, source): w for w in source.weights}
        for w in target.weights:
            w.assign(values[_short(w, target)])
    return plain


def _short(variable, layer: keras.layers.Layer) -> str:
    return variable.name.split("/")[-1].replace(layer.name, "")


def _sparsity(model: keras.Model, names: list[str], qat: keras.Model | None = None) -> float:
    """Share of zeros in the prunable kernels of the named layers of ``model``, or of their QAT copies in ``qat``.

    Inside a QAT wrapper (``quant_<name>``) the kernel attribute is replaced by
    its fake-quantized tensor and the variables move to the wrapper, which
    lists the wrapped layer's weights first and in order; variables are found
    by that position.
    """
    zeros = total = 0
    for name in names:
        layer = model.get_layer(name)
        targets = {id(w) for w in finetune.prunable_weights(layer)}
        positions = [i for i, w in enumerate(layer.weights) if id(w) in targets]
        holder = layer if qat is None else qat.get_layer(f"quant_{name}")
        for i in positions:
            values = holder.weights[i].numpy()
            zeros, total = zeros + int((values == 0).sum()), total + values.size
    return zeros / total if total else 0.0



@contextlib.contextmanager
def load_scope() -> Iterator[None]:
    """Custom objects that load QAT models from ``.keras`` files in safe mode.

    ``quantize_scope`` alone is not enough in tf_keras 2.21: ``QuantizeLayer``
    does not mark itself built, so the loader builds it twice, and
    ``QuantizeWrapperV2`` lists its inner layer's weights only when that layer
    was built first. The two subclasses below (same class names, so the saved
    weight paths match) restore the variable layout the model was saved with.
    """
    with finetune.tfmot().quantization.keras.quantize_scope(), keras.utils.custom_object_scope(_loadable_quantize_layers()):
        yield


@functools.cache
def _loadable_quantize_layers() -> dict:
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer, quantize_wrapper

    class QuantizeLayer(quantize_layer.QuantizeLayer):
        def build(self, input_shape):
            super().build(input_shape)
            self.built = True

    class QuantizeWrapperV2(quantize_wrapper.QuantizeWrapperV2):
        def build(self, input_shape):
            if not self.layer.built:
                self.layer.build(input_shape)
            super().build(input_shape)

    return {"QuantizeLayer": QuantizeLayer, "QuantizeWrapperV2": QuantizeWrapperV2}


def summary(metrics: dict) -> str:
    """The headline ``kerascomp qat`` prints: whether the kernels' zeros survived, and what stayed float."""
    sparsity = metrics["kernel_sparsity"]
    return (f"kernel sparsity {sparsity['before']:.4f} -> {sparsity['after']:.4f}"
            + (f"; left in float: {', '.join(metrics['float_layers'])}" if metrics["float_layers"] else ""))


TECHNIQUE = register(Technique(
    name="qat", config=QATConfig, apply=apply, summary=summary, load_scope=load_scope,
    plan=lambda model, config: finetune.format_plan(plan(model, config)),
    layers=lambda model: finetune.layer_answers(model, lambda: plan(model, QATConfig(float_fallback=True)), "yes"), suffix="qat", keeps_wrappers=True,
    help="Quantization-aware fine-tuning; the saved model converts with `convert --quantize int8`."))
