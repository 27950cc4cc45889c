"""Export a Keras model to the files that ship: ``.tflite`` (LiteRT) or ``.onnx``.

:func:`export` picks the format from the file suffix, calibrates on the
training split, verifies the artifact against the Keras model, and writes a
JSON sidecar beside it (class names, input shape and scaling, quantization,
source model hash) so the edge runtime needs neither the training code nor the
data spec.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerascomp import __version__
from kerascomp.data import Dataset
from kerascomp.export._isolated import ISOLATED_MODES
from kerascomp.export._verify import MIN_AGREEMENT, ExportError
from kerascomp.export.modes import BACKENDS, CALIBRATED_MODES, DEFAULT_BACKEND, KEEP_FLOAT_AUTO, LABELS, QUANTIZE_MODES
from kerascomp.export.tflite import to_tflite
from kerascomp.files import file_sha256, scaling_of, sidecar_path, write_json
from kerascomp.saving import as_tf_keras, fit_data
from kerascomp.tasks import REGRESSION

__all__ = ["export", "ExportError", "MIN_AGREEMENT", "QUANTIZE_MODES", "BACKENDS", "DEFAULT_BACKEND", "FORMATS", "default_output",
           "file_sha256"]

FORMATS = {".tflite": QUANTIZE_MODES, ".onnx": ("none", "int8")}
VERIFY_SAMPLES = 256


def default_output(source: str | os.PathLike, quantize: str, suffix: str = ".tflite") -> Path:
    """``<model name>_<mode>.tflite`` beside the model: where ``convert`` writes when not told, as every
    technique writes ``<model name>_<technique>.keras`` beside its input."""
    return Path(source).with_name(f"{Path(source).stem}_{LABELS.get(quantize, quantize)}{suffix}")


def export(
    model,
    out: str | os.PathLike,
    *,
    quantize: str = "none",
    data: Dataset | None = None,
    meta: dict | None = None,
    int8_io: bool = False,
    calibration_size: int = 500,
    opset: int = 17,
    min_agreement: float | None = None,
    source: str | os.PathLike | None = None,
    batch_size: int | None = None,
    backend: str = DEFAULT_BACKEND,
    keep_float: tuple[str, ...] = (KEEP_FLOAT_AUTO,),
    layer_errors: int = 0,
) -> dict:
    """Convert ``model`` to ``out`` (``.tflite`` or ``.onnx``), verify it, and write its sidecar.

    Args:
        model: the tf_keras model.
        out: destination; its suffix selects the format.
        quantize: a mode of :data:`QUANTIZE_MODES` (ONNX: ``none`` or ``int8``,
            the latter by onnxruntime's static QDQ quantization).
        data: supplies calibration inputs (training split), verification
            inputs (validation split), class names and input scaling.
        meta: the source model's sidecar, used when ``data`` is not given.
        calibration_size: training examples used to calibrate integer modes.
        source: path of the source ``.keras`` file, hashed into the sidecar.
        batch_size: fix the ``.tflite`` batch dimension (see :func:`~kerascomp.export.tflite.to_tflite`).
        backend: who quantizes a ``.tflite`` file: the converter or LiteRT
            Quantizer (see :func:`~kerascomp.export.tflite.to_tflite`).
        keep_float: ops or layer-name patterns left in float (see
            :func:`~kerascomp.export.tflite.to_tflite`).
        layer_errors: with ``backend="litert-quantizer"``, measure every
            layer's error against the float file on this many validation
            examples (``report["layer_errors"]``).

    Returns:
        The conversion report (also stored in the sidecar under ``verification``).
    """
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ExportError(f"output {out} must end in {' or '.join(FORMATS)}")
    if quantize not in FORMATS[out.suffix]:
        raise ExportError(f"{out.suffix} supports --quantize {', '.join(FORMATS[out.suffix])}, not {quantize!r}")
    if batch_size is not None and out.suffix != ".tflite":
        raise ExportError("--batch-size fixes the batch of a .tflite file; ONNX keeps it dynamic")
    if backend != DEFAULT_BACKEND and out.suffix != ".tflite":
        raise ExportError(f"--backend {backend} quantizes .tflite files; ONNX uses onnxruntime's quantizer")
    if layer_errors and (backend != "litert-quantizer" or quantize in ("none", "float16")):
        raise ExportError("per-layer errors compare LiteRT Quantizer's file with its float twin: "
                          "use --backend litert-quantizer with a quantized mode")
    if layer_errors and data is None:
        raise ExportError("per-layer errors are measured on validation data: give --data")
    model = as_tf_keras(model, data)
    data = fit_data(model, data)  # a model loaded with its own input scaling (raw pixels) is calibrated on that
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    if len(model.outputs) > 1 and (out.suffix != ".tflite" or quantize in ISOLATED_MODES):
        raise ExportError(f"a model with {len(model.outputs)} outputs converts to .tflite in the modes "
                          f"{', '.join(m for m in FORMATS['.tflite'] if m not in ISOLATED_MODES)} so far, "
                          f"not to {out.suffix} {quantize}")
    if data is not None:
        data.check_fits(input_shape)
    needs_calibration = quantize in CALIBRATED_MODES or (out.suffix == ".onnx" and quantize == "int8")
    if needs_calibration and data is None:
        raise ExportError(f"--quantize {quantize} needs --data to calibrate on the training split")
    if needs_calibration and calibration_size < 1:
        raise ExportError(f"--calibration-size must be at least 1, got {calibration_size}")
    calibration = _calibration(data, calibration_size) if needs_calibration else None
    sample = data.x_val[:VERIFY_SAMPLES] if data is not None else None
    classifier = _judged_by_agreement(data)
    if out.suffix == ".tflite":
        report = to_tflite(model, out, quantize=quantize, calibration=calibration, int8_io=int8_io,
                           sample=sample, min_agreement=min_agreement, batch_size=batch_size, backend=backend,
                           keep_float=tuple(keep_float), classifier=classifier,
                           layer_sample=data.x_val[:layer_errors] if layer_errors else None)
    else:
        report = {**_to_onnx(model, out, quantize, calibration, sample, opset, min_agreement, classifier),
                  "backend": "onnxruntime", "keep_float": []}
    write_json(sidecar_path(out), _sidecar(out, quantize, int8_io, input_shape, data, meta, source, report))
    return {**report, "size_bytes": out.stat().st_size}


def _judged_by_agreement(data: Dataset | None):
    """Whether a file's outputs are checked by top-1 agreement (classes, a class per pixel) rather than by their
    error against the outputs' spread (a regressor's); by output name for several outputs."""
    if data is None:
        return True
    if data.task.heads:
        return {name: head != REGRESSION for name, head in data.task.heads}
    return data.task != REGRESSION


def _calibration(data: Dataset, size: int) -> np.ndarray:
    """A seeded random subset of the training split: calibration never sees validation or test data."""
    order = np.random.default_rng(data.seed).permutation(len(data.x_train))[:size]
    return data.x_train[order]


def _to_onnx(model, out: Path, quantize: str, calibration, sample, opset: int, min_agreement, classifier: bool) -> dict:
    from kerascomp.export import onnx  # onnx and onnxruntime take most of a second to import: on use

    if quantize == "none":
        return onnx.to_onnx(model, out, opset=opset, sample=sample, min_agreement=min_agreement, classifier=classifier)
    float_path = out.with_name(out.stem + ".float.tmp.onnx")
    try:
        onnx.to_onnx(model, float_path, opset=opset, sample=sample, min_agreement=min_agreement, classifier=classifier)
        report = onnx.quantize_onnx_int8(float_path, out, calibration, sample=sample, min_agreement=min_agreement,
                                         classifier=classifier)
    finally:
        float_path.unlink(missing_ok=True)
    return report


def _sidecar(out: Path, quantize: str, int8_io: bool, input_shape, data: Dataset | None, meta: dict | None,
             source, report: dict) -> dict:
    described = data.describe() if data is not None else (meta or {}).get("data", {})
    num_classes, task = described.get("num_classes"), described.get("task", "classification")
    scaling = described.get("scaling") or scaling_of(meta)  # None: unknown, said so by bench, never guessed
    return {
        "kerascomp_version": __version__,
        "format": out.suffix[1:],
        "quantization": quantize,
        "int8_io": int8_io,
        "backend": report["backend"],
        "keep_float": report["keep_float"],
        "input_shape": list(input_shape),
        "task": task,
        "output": "values" if task == "regression" else "logits",  # a segmenter: logits per pixel
        **({"outputs": list(described["heads"]), "heads": described["heads"]} if described.get("heads") else {}),
        "class_names": described.get("class_names") or ([str(i) for i in range(num_classes)] if num_classes else None),
        "scaling": scaling,
        "input_range": described.get("input_range"),  # raw values the model trained on: predict warns far off
        "dataset": described.get("name"),
        "source_model": None if source is None else {"path": str(source), "sha256": file_sha256(source)},
        "verification": report.get("verification"),
    }
