"""The converter, and a file's first run, in a child process: for the modes that can abort the whole process.

In int16x8, TensorFlow 2.21's converter killed its process with SIGABRT,
printing nothing Python can catch, converting the seed ViT; and LiteRT aborts
the same way invoking an int16x8 graph with an op that has no int16 kernel
(SQUARED_DIFFERENCE, LayerNorm's variance) where it does not raise. In-process
either ends ``kerascomp convert`` (or a whole pipeline) without an ``Error:``
line. In a child, the crash becomes one :class:`ExportError`. A conversion
child costs a TensorFlow start and a SavedModel round trip (seconds), so only
the modes known to abort take this path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from kerascomp.backend import tf
from kerascomp.export._converter import configure, convert
from kerascomp.export._verify import ExportError, run_file

__all__ = ["ISOLATED_MODES", "convert_isolated", "run_isolated"]

ISOLATED_MODES = ("int16x8",)
_TIMEOUT_S = 3600


def convert_isolated(function, model, quantize: str, calibration: np.ndarray | None) -> bytes:
    """The flatbuffer of the concrete ``function`` of ``model`` in ``quantize`` mode, converted in a child process."""
    with tempfile.TemporaryDirectory(prefix="kerascomp-convert-") as work:
        work = Path(work)
        tf.saved_model.save(model, str(work / "saved"), signatures=function)
        if calibration is not None:
            np.save(work / "calibration.npy", np.asarray(calibration, dtype=np.float32))
        _child(["convert", str(work), quantize], f"TFLite conversion ({quantize})")
        return (work / "model.tflite").read_bytes()


def run_isolated(path: str | os.PathLike, sample: np.ndarray, quantize: str) -> np.ndarray:
    """The logits of the ``.tflite`` at ``path`` on ``sample``, run in a child process (no TensorFlow there)."""
    with tempfile.TemporaryDirectory(prefix="kerascomp-run-") as work:
        work = Path(work)
        np.save(work / "sample.npy", np.asarray(sample, dtype=np.float32))
        _child(["run", str(work), quantize, os.fspath(path)], f"the {quantize} file's first run in LiteRT")
        return np.load(work / "logits.npy")


def _child(args: list[str], what: str) -> None:
    """Run this module with ``args``; a crash, a timeout or an ``Error:`` line there is an :class:`ExportError`."""
    try:
        child = subprocess.run([sys.executable, "-m", __name__, *args], capture_output=True, text=True,
                               timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ExportError(f"{what} ran over {_TIMEOUT_S} s; stopped") from None
    if child.returncode < 0:
        raise ExportError(f"{what} crashed its process ({signal.Signals(-child.returncode).name}); "
                          "try --backend litert-quantizer or another mode")
    if child.returncode != 0:
        lines = [line for line in child.stderr.splitlines() if line.startswith("Error:")] or ["Error: no message"]
        raise ExportError(lines[-1].removeprefix("Error: "))


def _convert(work: Path, quantize: str) -> None:
    calibration = work / "calibration.npy"
    converter = tf.lite.TFLiteConverter.from_saved_model(str(work / "saved"))
    configure(converter, quantize, np.load(calibration) if calibration.exists() else None, False)
    (work / "model.tflite").write_bytes(convert(converter, quantize))


def _run(work: Path, quantize: str, path: str) -> None:
    np.save(work / "logits.npy", run_file(path, np.load(work / "sample.npy"), quantize))


def _main(command: str, work: str, *rest: str) -> int:
    try:
        {"convert": _convert, "run": _run}[command](Path(work), *rest)
    except ExportError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:]))
