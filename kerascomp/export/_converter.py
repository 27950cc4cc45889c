"""TFLiteConverter set up for one post-training mode, and its failures as one error.

Shared by the in-process conversion and the child process of :mod:`kerascomp.export._isolated`.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from kerascomp.backend import tf
from kerascomp.console import quiet_native_stderr
from kerascomp.errors import first_line
from kerascomp.export._verify import ExportError
from kerascomp.export.modes import CALIBRATED_MODES

__all__ = ["configure", "convert"]


def configure(converter, quantize: str, calibration: np.ndarray | None, int8_io: bool) -> None:
    """Set ``converter`` up for ``quantize`` (calibrated on ``calibration``; int8 tensors at the edges if ``int8_io``)."""
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


def convert(converter, quantize: str) -> bytes:
    """``converter.convert()``, its failures as one :class:`ExportError`, its chatter off the console.

    The calibrator prints ``fully_quantize: 0, inference_type: 6 ...`` from C++
    and a UserWarning about input statistics on every int8 conversion
    (``KERASCOMP_DEBUG=1`` shows them).
    """
    try:
        with warnings.catch_warnings(), quiet_native_stderr():
            if not os.environ.get("KERASCOMP_DEBUG"):
                warnings.simplefilter("ignore", UserWarning)
            return converter.convert()
    except Exception as exc:  # the converter raises ConverterError and plain exceptions alike
        raise ExportError(f"TFLite conversion ({quantize}) failed: {first_line(exc, prefer='error')}") from None
