"""TFLiteConverter in a child process, for the modes whose conversion can abort the whole process.

TensorFlow 2.21's converter kills its process with SIGABRT, printing nothing
Python can catch, when it converts the seed ViT to int16x8. In-process that
ends ``kerascomp convert`` (or a whole pipeline) without an ``Error:`` line.
In a child, the crash becomes one :class:`ExportError`. The child costs a
TensorFlow start and a SavedModel round trip (seconds), so only the modes
known to abort take this path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from kerascomp.export._verify import ExportError

__all__ = ["ISOLATED_MODES", "convert_isolated"]

ISOLATED_MODES = ("int16x8",)
_TIMEOUT_S = 3600


def convert_isolated(function, model, quantize: str, calibration: np.ndarray | None) -> bytes:
    """The flatbuffer of the concrete ``function`` of ``model`` in ``quantize`` mode, converted in a child process."""
    from kerascomp._compat import tf

    with tempfile.TemporaryDirectory(prefix="kerascomp-convert-") as work:
        work = Path(work)
        tf.saved_model.save(model, str(work / "saved"), signatures=function)
        if calibration is not None:
            np.save(work / "calibration.npy", np.asarray(calibration, dtype=np.float32))
        try:
            child = subprocess.run([sys.executable, "-m", __name__, str(work), quantize], capture_output=True,
                                   text=True, timeout=_TIMEOUT_S, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except subprocess.TimeoutExpired:
            raise ExportError(f"TFLite conversion ({quantize}) ran over {_TIMEOUT_S} s; stopped") from None
        if child.returncode < 0:
            raise ExportError(f"TFLite conversion ({quantize}) crashed TensorFlow's converter "
                              f"({signal.Signals(-child.returncode).name}); try --backend litert-quantizer")
        if child.returncode != 0:
            lines = [line for line in child.stderr.splitlines() if line.startswith("Error:")] or ["no message"]
            raise ExportError(f"TFLite conversion ({quantize}) failed: {lines[-1].removeprefix('Error: ')}")
        return (work / "model.tflite").read_bytes()


def _main(work: Path, quantize: str) -> int:
    from kerascomp._compat import tf
    from kerascomp.errors import first_line
    from kerascomp.export.tflite import _configure

    calibration = work / "calibration.npy"
    converter = tf.lite.TFLiteConverter.from_saved_model(str(work / "saved"))
    _configure(converter, quantize, np.load(calibration) if calibration.exists() else None, False)
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # the converter raises ConverterError and plain exceptions alike
        print(f"Error: {first_line(exc, prefer='error')}", file=sys.stderr)
        return 1
    (work / "model.tflite").write_bytes(flatbuffer)
    return 0


if __name__ == "__main__":
    sys.exit(_main(Path(sys.argv[1]), sys.argv[2]))
