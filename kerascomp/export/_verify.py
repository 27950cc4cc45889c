"""Compare an exported artifact with its Keras source, and refuse broken conversions.

A conversion is only called a success when the artifact, run by the runtime
that will deploy it, agrees with the Keras model on a sample: top-1 agreement
for every mode, and the size of the logit error for the float modes. Where
top-1 says nothing (a regressor, or any model with one output unit) the mean
error, relative to the spread of the Keras model's outputs, decides instead.
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
# Largest mean absolute output error, relative to the outputs' standard deviation on the sample, where top-1
# agreement cannot judge: a quantized regressor may err by a tenth of how much its outputs vary.
MAX_SPREAD_ERROR = {"none": 1e-3, "float16": 2e-2}
DEFAULT_SPREAD_ERROR = 0.1


class ExportError(KerascompError):
    """A conversion failed or produced an artifact that disagrees with its source."""


def compare(reference, candidate) -> dict:
    """Top-1 agreement and absolute logit differences of two ``(N, classes)`` outputs (of each output by name, for
    dicts of them: ``{"outputs": {name: report}}``)."""
    if isinstance(reference, dict):
        if set(reference) != set(candidate):
            raise ExportError(f"artifact outputs {sorted(candidate)}, Keras model {sorted(reference)}")
        return {"outputs": {name: compare(reference[name], candidate[name]) for name in reference}}
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    if reference.shape != candidate.shape:
        raise ExportError(f"artifact outputs shape {candidate.shape}, Keras model {reference.shape}")
    diff = np.abs(reference - candidate)
    return {
        "samples": int(len(reference)),
        "outputs": int(reference.shape[-1]),
        "top1_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).mean()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "reference_max_abs": float(np.abs(reference).max()),
        "reference_std": float(reference.std()),
    }


def check(report: dict, mode: str, min_agreement: float | None = None, *, classifier=True) -> dict:
    """Raise :class:`ExportError` unless ``report`` (from :func:`compare`) is good enough for ``mode``.

    ``classifier`` False (a regressor), or a single output unit, judges the
    mean error against the outputs' spread instead of top-1 agreement; for
    several outputs it is a dict by output name, and every output must pass.
    """
    if "outputs" in report and isinstance(report["outputs"], dict):
        checked = {}
        for name, part in report["outputs"].items():
            try:
                checked[name] = check(part, mode, min_agreement, classifier=classifier[name])
            except ExportError as error:
                raise ExportError(f"output {name!r}: {error}") from None
        return {"outputs": checked, "passed": True}
    needed = MIN_AGREEMENT[mode] if min_agreement is None else min_agreement
    if not classifier or report["outputs"] == 1:
        return _check_spread(report, mode, needed)
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


def _check_spread(report: dict, mode: str, needed: float) -> dict:
    """The mean output error within a share of the outputs' spread (``min_agreement`` 0 accepts any file)."""
    allowed = MAX_SPREAD_ERROR.get(mode, DEFAULT_SPREAD_ERROR) * report["reference_std"]
    if needed > 0 and report["mean_abs_diff"] > max(allowed, 1e-6):
        raise ExportError(
            f"{mode} artifact's outputs differ from the Keras model's by {report['mean_abs_diff']:.3g} on average "
            f"(allowed {allowed:.3g}: {MAX_SPREAD_ERROR.get(mode, DEFAULT_SPREAD_ERROR):.0%} of their spread "
            f"{report['reference_std']:.3g}); not writing it"
        )
    return {**report, "passed": True, "judged_by": "spread", "max_spread_error": allowed}


def run_file(path, sample: np.ndarray, quantize: str):
    """The file's logits on ``sample``; a file LiteRT cannot run (an op without a kernel for its types) is refused."""
    try:
        return runtime.load(path).predict(sample)
    except RuntimeError as e:
        raise ExportError(f"the {quantize} file does not run in LiteRT ({first_line(e)}); not writing it") from None
