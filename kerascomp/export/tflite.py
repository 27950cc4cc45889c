"""Keras -> ``.tflite`` in every post-training mode, verified in the LiteRT interpreter.

Modes: ``none`` (float32), ``float16`` (float16 weights), ``dynamic`` (int8
weights, float activations quantized on the fly), ``int8`` (full integer,
calibrated on training data) and ``int16x8`` (int16 activations, int8
weights); with LiteRT Quantizer as the backend also ``dynamic-int4``,
``int8-weights`` and ``int4-weights`` (weight-only: float compute, smaller
file). The file is verified against the Keras model before it is moved into
place, so a broken conversion never lands.
"""

from __future__ import annotations

import os

import numpy as np

from kerascomp.backend import keras, tf
from kerascomp.data import output_names
from kerascomp.export import litert_quantizer
from kerascomp.export._converter import configure, convert
from kerascomp.export._isolated import ISOLATED_MODES, convert_isolated, run_isolated
from kerascomp.export._verify import ExportError, check, compare, run_file
from kerascomp.export.modes import (
    BACKENDS,
    CALIBRATED_MODES,
    CONVERTER_MODES,
    DEFAULT_BACKEND,
    KEEP_FLOAT_AUTO,
    QUANTIZE_MODES,
)
from kerascomp.files import atomic_path
from kerascomp.saving import strip_wrappers

__all__ = ["QUANTIZE_MODES", "CALIBRATED_MODES", "BACKENDS", "DEFAULT_BACKEND", "to_tflite"]


def to_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    quantize: str = "none",
    calibration: np.ndarray | None = None,
    int8_io: bool = False,
    sample: np.ndarray | None = None,
    min_agreement: float | None = None,
    batch_size: int | None = None,
    backend: str = DEFAULT_BACKEND,
    keep_float: tuple[str, ...] = (KEEP_FLOAT_AUTO,),
    layer_sample: np.ndarray | None = None,
    classifier: bool = True,
) -> dict:
    """Convert ``model`` to a ``.tflite`` at ``path`` and verify it.

    Args:
        model: a tf_keras model; pruning and clustering wrappers are stripped
            first, QAT models convert to integer kernels as they are.
        quantize: one of :data:`QUANTIZE_MODES`.
        calibration: model-space inputs from the *training* split, needed by
            ``int8`` and ``int16x8`` to choose activation ranges.
        int8_io: int8 input and output tensors (``int8`` only), for
            integer-only devices; the runtime quantizes inputs for you.
        sample: inputs to verify on (default: 64 seeded uniform inputs).
        min_agreement: override the per-mode top-1 agreement threshold.
        classifier: False for a regressor: the file is judged by its mean
            output error against the outputs' spread, not by top-1 agreement.
        batch_size: fix the batch dimension (None: dynamic). Layers that read
            the batch at run time (attention heads, class tokens) then convert
            without SHAPE/GATHER/PACK nodes that XNNPACK cannot take: the seed
            ViT goes from 19 XNNPACK partitions to 2, and its int8 file from
            6.9 to 4.8 ms (2-core AMD EPYC, 1 thread).
        backend: who quantizes: ``converter`` (TFLiteConverter's built-in
            post-training quantization) or ``litert-quantizer``, which
            quantizes the converter's float file op by op (see
            :mod:`kerascomp.export.litert_quantizer`). float32 and float16
            always come from the converter.
        keep_float: with ``litert-quantizer``, ops (``SOFTMAX``) or layer-name
            regexes kept in float; ``"auto"`` keeps the ops that would leave
            XNNPACK in integer form.
        layer_sample: with ``litert-quantizer``, inputs on which every
            layer's error against the float file is measured (``layer_errors``).

    Returns:
        ``{"path", "quantization", "int8_io", "backend", "keep_float", "verification"}``,
        plus ``layer_errors`` when ``layer_sample`` is given.
    """
    if quantize not in QUANTIZE_MODES:
        raise ExportError(f"unknown quantization {quantize!r}; use one of {', '.join(QUANTIZE_MODES)}")
    if quantize in CALIBRATED_MODES and calibration is None:
        raise ExportError(f"--quantize {quantize} needs data to calibrate on (pass --data)")
    if int8_io and quantize != "int8":
        raise ExportError("int8 input/output needs --quantize int8")
    if batch_size is not None and batch_size < 1:
        raise ExportError(f"--batch-size must be at least 1, got {batch_size}")
    model = strip_wrappers(model)
    quantizer = _backend(model, quantize, backend, int8_io)
    report = {"path": str(path), "quantization": quantize, "int8_io": int8_io, "backend": quantizer, "keep_float": []}
    if quantizer == "litert-quantizer":
        float_model = _convert(model, "none", None, False, batch_size)
        flatbuffer, report["keep_float"] = litert_quantizer.quantize(float_model, quantize, calibration=calibration,
                                                                     keep_float=keep_float)
        if layer_sample is not None:
            report["layer_errors"] = litert_quantizer.layer_errors(float_model, flatbuffer, layer_sample)
    elif quantize in ISOLATED_MODES:
        flatbuffer = convert_isolated(_function(model, batch_size), model, quantize, calibration)
    else:
        flatbuffer = _convert(model, quantize, calibration, int8_io, batch_size)
    sample = _default_sample(model) if sample is None else sample
    with atomic_path(path, needs=len(flatbuffer)) as tmp:
        tmp.write_bytes(flatbuffer)
        logits = (run_isolated if quantize in ISOLATED_MODES else run_file)(tmp, sample, quantize)
        report["verification"] = check(compare(_outputs(model, sample), logits),
                                       "int8" if _is_quantization_aware(model) else quantize, min_agreement,
                                       classifier=classifier)
    return report


def _backend(model: keras.Model, quantize: str, backend: str, int8_io: bool) -> str:
    """Who quantizes this file: float files and QAT models (fake-quant ranges) always go through the converter."""
    if backend not in BACKENDS:
        raise ExportError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "converter" and quantize not in CONVERTER_MODES:
        raise ExportError(f"--quantize {quantize} is a LiteRT Quantizer recipe: add --backend litert-quantizer")
    if backend == "converter" or quantize not in litert_quantizer.RECIPES:
        return "converter"
    if _is_quantization_aware(model):
        raise ExportError("a quantization-aware model carries its own ranges: convert it with --backend converter")
    if int8_io:
        raise ExportError("--int8-io is the converter's option: use --backend converter")
    return backend


def _convert(model: keras.Model, quantize: str, calibration, int8_io: bool, batch_size: int | None) -> bytes:
    converter = _converter(model, batch_size)
    configure(converter, quantize, calibration, int8_io)
    return convert(converter, quantize)


def _converter(model: keras.Model, batch_size: int | None):
    """The converter of ``model``, with its batch dimension fixed to ``batch_size`` unless None."""
    if batch_size is None and len(model.outputs) == 1:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    return tf.lite.TFLiteConverter.from_concrete_functions([_function(model, batch_size)], model)


def _function(model: keras.Model, batch_size: int | None):
    """The inference function of ``model`` traced for batches of ``batch_size`` (None: any); several outputs
    come out by name, so the file's signature names them as the data's targets do (a compression wrapper's
    layer name, ``quant_digit``, would not)."""
    spec = tf.TensorSpec([batch_size, *model.input_shape[1:]], model.inputs[0].dtype)
    if len(model.outputs) == 1:
        return tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    names = output_names(model)
    return tf.function(lambda x: dict(zip(names, model(x, training=False)))).get_concrete_function(spec)


def _outputs(model: keras.Model, sample: np.ndarray):
    """The Keras model's outputs on ``sample``: one array, or a dict by output name as the file gives them."""
    outputs = model.predict(sample, verbose=0)
    return dict(zip(output_names(model), outputs)) if isinstance(outputs, list) else outputs


def _is_quantization_aware(model: keras.Model) -> bool:
    """QAT models carry fake-quant ranges: every mode yields integer kernels, so they are checked as int8."""
    return any(cls.__module__.startswith("tensorflow_model_optimization.python.core.quantization")
               for layer in model.layers for cls in type(layer).__mro__)


def _default_sample(model: keras.Model, n: int = 64) -> np.ndarray:
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(0).uniform(0.0, 1.0, size=(n, *shape)).astype(np.float32)

