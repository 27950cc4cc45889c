"""Compare an exported artifact with its Keras source, and refuse broken conversions.

A conversion is only called a success when the artifact, run by the runtime
that will deploy it, agrees with the Keras model on a sample: top-1 agreement
for every mode, and the size of the logit error for the float modes.
"""

from __future__ import annotations

import numpy as np

from kerascomp import runtime
from kerascomp.errors import KerascompError, first_line

# Lowest top-1 agreement accepted per quantization mode, and the largest
# absolute logit error (relative to the largest reference logit) for float modes.
MIN_AGREEMENT = {"none": 0.99, "float16": 0.98, "dynamic": 0.9, "int8": 0.9, "int16x8": 0.9,
                 "dynamic-int4": 0.8, "int8-weights": 0.95, "int4-weights": 0.8}
MAX_RELATIVE_ERROR = {"none": 1e-3, "float16": 2e-2}


class ExportError(KerascompError):
    """A conversion failed or produced an artifact that disagrees with its source."""


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Top-1 agreement and absolute logit differences of two ``(N, classes)`` outputs."""
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    if reference.shape != candidate.shape:
        raise ExportError(f"artifact outputs shape {candidate.shape}, Keras model {reference.shape}")
    diff = np.abs(reference - candidate)
    return {
        "samples": int(len(reference)),
        "top1_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "reference_max_abs": float(np.abs(reference).max()),
    }


def check(report: dict, mode: str, min_agreement: float | None = None) -> dict:
    """Raise :class:`ExportError` unless ``report`` (from :func:`compare`) is good enough for ``mode``."""
    needed = MIN_AGREEMENT[mode] if min_agreement is None else min_agreement
    if report["top1_agreement"] < needed:
        raise ExportError(
            f"{mode} artifact agrees with the Keras model on only {report['top1_agreement']:.1%} of "
            f"{report['samples']} samples (need {needed:.0%}); not writing it"
        )
    if mode in MAX_RELATIVE_ERROR:
        allowed = MAX_RELATIVE_ERROR[mode] * max(1.0, report["reference_max_abs"])
        if report["max_abs_diff"] > allowed:
            raise ExportError(
                f"{mode} artifact's logits differ from the Keras model's by up to {report['max_abs_diff']:.3g} "
                f"(allowed {allowed:.3g}); not writing it"
            )
    return {**report, "passed": True, "min_agreement": needed}


def run_file(path, sample: np.ndarray, quantize: str) -> np.ndarray:
    """The file's logits on ``sample``; a file LiteRT cannot run (an op without a kernel for its types) is refused."""
    try:
        return runtime.load(path).predict(sample)
    except RuntimeError as e:
        raise ExportError(f"the {quantize} file does not run in LiteRT ({first_line(e)}); not writing it") from None
