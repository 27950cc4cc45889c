"""Keras -> ``.tflite`` in every post-training mode, verified in the LiteRT interpreter.

Modes: ``none`` (float32), ``float16`` (float16 weights), ``dynamic`` (int8
weights, float activations quantized on the fly), ``int8`` (full integer,
calibrated on training data) and ``int16x8`` (int16 activations, int8
weights). The file is verified against the Keras model before it is moved into
place, so a broken conversion never lands.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerascomp._compat import keras, tf
from kerascomp._io import atomic_path
from kerascomp.registry import strip as strip_wrappers
from kerascomp.export._verify import ExportError, check, compare
from kerascomp.errors import first_line

__all__ = ["QUANTIZE_MODES", "CALIBRATED_MODES", "to_tflite", "strip_wrappers"]

QUANTIZE_MODES = ("none", "float16", "dynamic", "int8", "int16x8")
CALIBRATED_MODES = ("int8", "int16x8")


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
        batch_size: fix the batch dimension (None: dynamic). Layers that read
            the batch at run time (attention heads, class tokens) then convert
            without SHAPE/GATHER/PACK nodes that XNNPACK cannot take: the seed
            ViT goes from 19 XNNPACK partitions to 2, and its int8 file from
            6.9 to 4.8 ms (2-core AMD EPYC, 1 thread).

    Returns:
        ``{"path", "quantization", "int8_io", "verification"}``.
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
    converter = _converter(model, batch_size)
    _configure(converter, quantize, calibration, int8_io)
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # the converter raises ConverterError and plain exceptions alike
        raise ExportError(f"TFLite conversion ({quantize}) failed: {first_line(exc, prefer='error')}") from None
    sample = _default_sample(model) if sample is None else sample
    with atomic_path(path) as tmp:
        tmp.write_bytes(flatbuffer)
        verification = check(compare(model.predict(sample, verbose=0), _run(tmp, sample)),
                             "int8" if _is_quantization_aware(model) else quantize, min_agreement)
    return {"path": str(path), "quantization": quantize, "int8_io": int8_io, "verification": verification}


def _converter(model: keras.Model, batch_size: int | None):
    """The converter of ``model``, with its batch dimension fixed to ``batch_size`` unless None."""
    if batch_size is None:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    spec = tf.TensorSpec([batch_size, *model.input_shape[1:]], model.inputs[0].dtype)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return tf.lite.TFLiteConverter.from_concrete_functions([function], model)


def _is_quantization_aware(model: keras.Model) -> bool:
    """QAT models carry fake-quant ranges: every mode yields integer kernels, so they are checked as int8."""
    return any(cls.__module__.startswith("tensorflow_model_optimization.python.core.quantization")
               for layer in model.layers for cls in type(layer).__mro__)


def _configure(converter, quantize: str, calibration: np.ndarray | None, int8_io: bool) -> None:
    if quantize == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize in CALIBRATED_MODES:
        converter.representative_dataset = _representative(calibration)
        if quantize == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8


def _representative(calibration: np.ndarray):
    """One sample per step, as the converter's calibrator expects."""
    calibration = np.asarray(calibration, dtype=np.float32)

    def generate():
        for x in calibration:
            yield [x[None]]

    return generate


def _default_sample(model: keras.Model, n: int = 64) -> np.ndarray:
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(0).uniform(0.0, 1.0, size=(n, *shape)).astype(np.float32)


def _run(path: Path, sample: np.ndarray) -> np.ndarray:
    from kerascomp import runtime

    return runtime.load(path).predict(sample)
