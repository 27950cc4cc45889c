"""Keras -> ``.onnx`` with tf2onnx, verified in onnxruntime; plus onnxruntime's own int8 as a peer.

:func:`to_onnx` writes a float model that onnxruntime has run and compared with
Keras before it is moved into place. :func:`quantize_onnx_int8` is
onnxruntime's static QDQ quantization, the baseline our int8 ``.tflite`` is
benchmarked against. :class:`OnnxModel` runs either file the way the benchmark
measures it, and :func:`onnx_constant_params` counts what the file stores.

tf2onnx 1.17 runs under the numpy 2 and protobuf installed here: its one use
of ``np.product`` (removed in numpy 2) sits in the ``large_model`` path for
files over 2 GB, which we never take, so no workaround is needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from kerascomp.backend import keras, tf
from kerascomp.errors import ModelError, first_line
from kerascomp.export._verify import ExportError, check, compare
from kerascomp.files import atomic_path
from kerascomp.saving import strip_wrappers

__all__ = ["to_onnx", "quantize_onnx_int8", "OnnxModel", "onnx_constant_params"]

# TensorFlow ops tf2onnx cannot map, with the model change that avoids them.
_OP_FIXES = {"Erfc": "Erfc comes from exact GELU: build the model with gelu_approximate=True"}
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def to_onnx(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    opset: int = 17,
    sample: np.ndarray | None = None,
    min_agreement: float | None = None,
    classifier: bool = True,
) -> dict:
    """Convert ``model`` to a float ``.onnx`` at ``path`` and verify it in onnxruntime.

    Args:
        model: a tf_keras model with one input; pruning and clustering
            wrappers are stripped first.
        opset: ONNX opset to target.
        sample: inputs to verify on (default: 64 seeded uniform inputs in [0, 1)).
        min_agreement: override the top-1 agreement threshold.
        classifier: False for a regressor (see :func:`kerascomp.export.tflite.to_tflite`).

    Returns:
        ``{"path", "quantization", "opset", "verification"}``.
    """
    model = strip_wrappers(model)
    proto = _convert(model, opset)
    sample = _default_sample(model) if sample is None else np.asarray(sample, dtype=np.float32)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, tmp)
        report = compare(model.predict(sample, verbose=0), OnnxModel(tmp).predict(sample))
        verification = check(report, "none", min_agreement, classifier=classifier)
    return {"path": str(path), "quantization": "none", "opset": opset, "verification": verification}


def quantize_onnx_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calibration: np.ndarray,
    *,
    per_channel: bool = True,
    reduce_range: bool = True,
    sample: np.ndarray | None = None,
    min_agreement: float | None = None,
    classifier: bool = True,
) -> dict:
    """Quantize the float ``.onnx`` at ``src`` with onnxruntime's static QDQ quantization.

    Weights and activations are int8 (symmetric weights, MinMax activation
    ranges from ``calibration``, which should come from the training split).
    ``quant_pre_process`` runs first: its shape inference and constant folding
    let more tensors be quantized. The result is checked against the float
    model on ``sample`` (default: the calibration inputs; :func:`export`
    passes held-out validation inputs) before it is moved to ``dst``.

    ``reduce_range`` keeps weights to 7 bits, as onnxruntime advises for x86
    CPUs without VNNI: their int8 kernels add pairs of products in int16, which
    saturates with full-range weights. On such a CPU (AVX2 only) the digits cnn
    agreed with its float model on 87% of test inputs with 8-bit weights and
    99% with 7-bit ones; elsewhere the 7-bit weights cost little.

    Returns:
        ``{"path", "quantization", "per_channel", "reduce_range", "calibration_samples", "verification"}``.
    """
    from onnxruntime import quantization

    calibration = np.asarray(calibration, dtype=np.float32)
    float_model = OnnxModel(src)
    with tempfile.TemporaryDirectory(prefix="kerascomp-onnx-") as scratch, atomic_path(dst) as tmp:
        prepared = os.path.join(scratch, "prepared.onnx")
        source = str(Path(src).resolve())
        with _working_directory(scratch):  # onnxruntime leaves shape-inference temp files in the cwd
            try:
                quantization.quant_pre_process(source, prepared)
            except Exception:  # symbolic shape inference gives up on some graphs (the ViT's); ONNX's own suffices
                quantization.quant_pre_process(source, prepared, skip_symbolic_shape=True)
        quantization.quantize_static(
            prepared,
            tmp,
            _CalibrationReader(float_model.input_name, calibration),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=quantization.QuantType.QInt8,
            weight_type=quantization.QuantType.QInt8,
        )
        sample = calibration if sample is None else np.asarray(sample, dtype=np.float32)
        report = compare(float_model.predict(sample), OnnxModel(tmp).predict(sample))
        verification = check(report, "int8", min_agreement, classifier=classifier)
    return {
        "path": str(dst),
        "quantization": "int8",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "calibration_samples": int(len(calibration)),
        "verification": verification,
    }


class OnnxModel:
    """An ``.onnx`` file in an onnxruntime CPU session, set up for repeatable latency.

    One inter-op thread and sequential execution keep the measured thread
    count the only source of parallelism.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        self.path = Path(path)
        self.threads = threads
        if not self.path.is_file():
            raise ModelError(f"ONNX model file {self.path} not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: optimizer notes would bury the CLI's output
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises a different type per failure
            raise ModelError(f"cannot load {self.path} as an ONNX model: {first_line(exc)}") from None
        (model_input,) = self._session.get_inputs()
        self.input_name = model_input.name
        self.input_shape = tuple(model_input.shape[1:])

    def predict(self, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Float32 logits for ``x``, run ``batch_size`` inputs at a time."""
        x = np.asarray(x, dtype=np.float32)
        return np.concatenate([self.run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    def run(self, x: np.ndarray) -> np.ndarray:
        """One session call on exactly the float32 batch ``x``: what latency is timed on."""
        return self._session.run(None, {self.input_name: x})[0]


def onnx_constant_params(path: str | os.PathLike) -> list[np.ndarray]:
    """The weights stored in an ``.onnx`` file, as numpy arrays.

    A weight is a floating-point initializer with at least one axis, or, in a
    QDQ model, the integer initializer a ``DequantizeLinear`` turns into a
    weight. Scales and zero points, integer shape and axis constants, and
    scalar constants (such as GELU's coefficients) are not weights. The count
    is what the file holds, so it differs from Keras' ``count_params`` where
    tf2onnx rewrites the graph: batch norm folds into the preceding
    convolution (its 4 vectors become one bias), all-zero biases are dropped,
    and some weights (e.g. ``MultiHeadAttention``'s) are stored again reshaped.
    A QDQ model of a float file holds as many weights as the float file.
    """
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # missing file, truncated protobuf, not ONNX at all
        raise ModelError(f"cannot load {path} as an ONNX model: {first_line(exc)}") from None
    quantization_params = {name for node in graph.node if node.op_type in _QDQ_OPS for name in node.input[1:]}
    quantized_weights = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    params = []
    for initializer in graph.initializer:
        if initializer.name in quantization_params:
            continue
        array = numpy_helper.to_array(initializer)
        if initializer.name in quantized_weights or (array.dtype.kind == "f" and array.ndim > 0):
            params.append(array)
    return params


class _CalibrationReader:
    """Feeds ``quantize_static`` the calibration inputs, a batch per call."""

    def __init__(self, input_name: str, calibration: np.ndarray, batch_size: int = 32):
        self._batches = iter(
            [{input_name: calibration[i : i + batch_size]} for i in range(0, len(calibration), batch_size)]
        )

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def _convert(model: keras.Model, opset: int) -> onnx.ModelProto:
    """Run tf2onnx and refuse graphs that still hold TensorFlow ops it could not map.

    tf2onnx only logs an unmappable op and copies it into the graph, which then
    fails when onnxruntime loads it; we name the op in one error line instead.
    """
    import tf2onnx

    signature = [tf.TensorSpec((None, *model.input_shape[1:]), model.inputs[0].dtype, name="input")]
    tf2onnx_logger = logging.getLogger("tf2onnx")
    level = tf2onnx_logger.level
    tf2onnx_logger.setLevel(logging.CRITICAL)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception as exc:  # tf2onnx raises whatever its handlers hit
        raise ExportError(f"ONNX conversion failed: {first_line(exc)}") from None
    finally:
        tf2onnx_logger.setLevel(level)
    onnx_ops = [node.op_type for node in proto.graph.node if node.domain in ("", "ai.onnx")]
    unmapped = sorted({op for op in onnx_ops if not onnx.defs.has(op)})
    if unmapped:
        fixes = [_OP_FIXES[op] for op in unmapped if op in _OP_FIXES] or ["replace the layers that use them"]
        raise ExportError(
            f"ONNX conversion failed: tf2onnx cannot convert TensorFlow op(s) {', '.join(unmapped)}; {'; '.join(fixes)}"
        )
    return proto


def _default_sample(model: keras.Model, n: int = 64) -> np.ndarray:
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(0).uniform(0.0, 1.0, size=(n, *shape)).astype(np.float32)


@contextlib.contextmanager
def _working_directory(path: str) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
