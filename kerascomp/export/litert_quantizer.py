"""Post-training quantization by LiteRT Quantizer (``ai-edge-quantizer``), the converter's maintained successor.

It quantizes a float ``.tflite`` file by recipe, op by op, so some ops can stay
in float while the rest run in integer kernels. That is what makes an int8 file
fast where the converter's is slow: LiteRT's XNNPACK delegate has no int8
kernels for LayerNorm's pieces, BATCH_MATMUL, SOFTMAX or GELU, so the
converter's int8 seed ViT runs those on reference kernels across 38 partitions
(4.6-4.8 ms against 3.3 ms in float32, 2-core AMD EPYC, 1 thread). Kept in
float (``keep_float="auto"``), the same file runs in 2 partitions at 1.19 ms.

``keep_float`` entries are TFLite op names (``SOFTMAX``) or regular
expressions on layer (output tensor) names. ``"auto"`` measures instead of
guessing: it quantizes everything, reads which ops the interpreter leaves
outside XNNPACK that the float file ran inside, keeps those in float, and
repeats until no new op falls out.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import warnings
from typing import Sequence

import numpy as np

from kerascomp.console import quiet_native_stderr
from kerascomp.errors import first_line
from kerascomp.export._verify import ExportError
from kerascomp.export.modes import CALIBRATED_MODES as STATIC_MODES
from kerascomp.export.modes import KEEP_FLOAT_AUTO as AUTO
from kerascomp.export.modes import RECIPES
from kerascomp.runtime.kernels import kernel_record

__all__ = ["quantize", "layer_errors"]

# keep_float="auto" applies to int8 only: XNNPACK has no int16 kernels at all, so int16x8 would end all float.
AUTO_MODES = ("int8",)
_MAX_ROUNDS = 4  # auto keep-float: each round can only add ops; the seed ViT settles in two


def quantize(float_model: bytes, mode: str, *, calibration: np.ndarray | None = None,
             keep_float: Sequence[str] = (AUTO,)) -> tuple[bytes, list[str]]:
    """Quantize the float flatbuffer ``float_model`` with the recipe of ``mode``.

    Returns the quantized flatbuffer and the ``keep_float`` entries it applied
    (with ``"auto"`` resolved to op names). ``calibration`` (training inputs)
    is needed by the static modes.
    """
    if mode not in RECIPES:
        raise ExportError(f"LiteRT Quantizer has no {mode!r} recipe; use one of {', '.join(RECIPES)}")
    if mode in STATIC_MODES and calibration is None:
        raise ExportError(f"--quantize {mode} needs data to calibrate on (pass --data)")
    explicit = [entry for entry in keep_float if entry != AUTO]
    _check_patterns(explicit)
    quantized = _quantize(float_model, mode, calibration, explicit)
    if AUTO not in keep_float or mode not in AUTO_MODES:
        return quantized, explicit
    float_ops, float_outside = _ops(float_model)
    kept = list(explicit)
    for _ in range(_MAX_ROUNDS):  # QUANTIZE/DEQUANTIZE are the quantizer's own: only the model's ops can stay float
        fallen = sorted((set(_ops(quantized)[1]) & set(float_ops)) - set(float_outside) - set(kept))
        if not fallen:
            break
        kept += fallen
        quantized = _quantize(float_model, mode, calibration, kept)
    return quantized, kept


def layer_errors(float_model: bytes, quantized: bytes, sample: np.ndarray) -> list[dict]:
    """Per-layer error of ``quantized`` against ``float_model`` on ``sample``, in graph order.

    One row per intermediate and output tensor both files have: its
    signal-to-noise ratio in dB (low: the layer hurts) and cosine similarity,
    from LiteRT Quantizer's own validation, which runs both files and compares
    every tensor. All-zero tensors carry no signal and are left out.
    """
    from ai_edge_quantizer import model_validator
    from ai_edge_quantizer.utils.validation_utils import ValidationErrorMetric

    metrics = [ValidationErrorMetric.SNR, ValidationErrorMetric.COSINE_SIMILARITY]
    key, data = _signature_data(float_model, sample)
    with _quiet():
        result = model_validator.compare_model(float_model, quantized, data, metrics, compare_fns=None,
                                               use_xnnpack=True, num_threads=1)
    signature = result.get_signature_comparison_result(key)
    tensors = {**signature.intermediate_tensors, **signature.output_tensors}
    order = _tensor_order(float_model)
    rows = [{"layer": name, "snr_db": 10 * math.log10(values["snr"]), "cosine": values["cosine_similarity"],
             "output": name in signature.output_tensors}
            for name, values in tensors.items() if values["snr"] > 0]  # 0: all zeros in the float file, no signal
    return sorted(rows, key=lambda row: order.get(row["layer"], len(order)))


def _quantize(float_model: bytes, mode: str, calibration, keep_float: Sequence[str]) -> bytes:
    from ai_edge_quantizer import quantizer, recipe

    recipe_rows = list(getattr(recipe, RECIPES[mode])())
    recipe_rows += [_float_row(entry) for entry in keep_float]  # later rows win in a recipe
    try:
        with _quiet():
            q = quantizer.Quantizer(float_model, recipe_rows)
            calibrated = None
            if q.need_calibration:
                calibrated = q.calibrate(_signature_data(float_model, calibration)[1], num_threads=1)
            result = q.quantize(calibrated, enable_progress_bar=False, enable_progress_report=False)
    except (ValueError, RuntimeError, KeyError, NotImplementedError) as e:
        raise ExportError(f"LiteRT Quantizer ({mode}) failed: {first_line(e)}") from None
    return bytes(result.quantized_model)


def _float_row(entry: str) -> dict:
    """A recipe row keeping ``entry`` (an op name, or a regex on layer names) in float."""
    from ai_edge_quantizer.qtyping import TFLOperationName

    if entry in TFLOperationName.__members__:
        return {"regex": ".*", "operation": entry, "algorithm_key": "no_quantize"}
    return {"regex": entry, "operation": "*", "algorithm_key": "no_quantize"}


def _check_patterns(entries: Sequence[str]) -> None:
    for entry in entries:
        try:
            re.compile(entry)
        except re.error as e:
            raise ExportError(f"--keep-float {entry!r} is neither a TFLite op name nor a valid regex: {e}") from None


def _interpreter(model: bytes, preserve: bool = False):
    from ai_edge_litert.interpreter import Interpreter

    with quiet_native_stderr():
        interpreter = Interpreter(model_content=model, num_threads=1,
                                  experimental_preserve_all_tensors=preserve)
        interpreter.allocate_tensors()
    return interpreter


def _ops(model: bytes) -> tuple[dict, dict]:
    """All ops of ``model``, and those LiteRT runs outside XNNPACK (built-in or reference kernels)."""
    record = kernel_record(_interpreter(model), "auto")
    return record["ops"], record["outside_ops"]


def _signature(model: bytes) -> tuple[str, str]:
    """The (signature key, input name) LiteRT Quantizer feeds data through."""
    signatures = _interpreter(model).get_signature_list()
    if not signatures:
        raise ExportError("the float .tflite file has no signature for LiteRT Quantizer to run")
    key, io_names = next(iter(signatures.items()))
    return key, io_names["inputs"][0]


def _signature_data(model: bytes, x: np.ndarray) -> tuple[str, dict]:
    """The signature key, and ``x`` as LiteRT Quantizer's calibrator and validator take it: one feed per example,
    each a batch of one, under that key."""
    key, name = _signature(model)
    return key, {key: [{name: example[None].astype(np.float32)} for example in np.asarray(x)]}


def _tensor_order(model: bytes) -> dict[str, int]:
    """Tensor name -> index of the node that produces it: graph order for the per-layer table."""
    interpreter = _interpreter(model)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    order: dict[str, int] = {}
    for op in interpreter._get_ops_details():  # the only view of the node list in the Python API
        for t in op["outputs"]:
            order.setdefault(names.get(int(t), ""), op["index"])
    return order


@contextlib.contextmanager
def _quiet():
    """LiteRT Quantizer prints tqdm bars, a debugging warning and native lines per call; kerascomp reports itself."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), quiet_native_stderr():
        warnings.simplefilter("ignore")
        yield
