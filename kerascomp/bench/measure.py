"""Measure every artifact as it will be deployed: size, gzip size, parameters, accuracy, latency.

Accuracy is that of the artifact itself over the whole held-out test split,
run by its own runtime (the LiteRT interpreter for ``.tflite``, onnxruntime for
``.onnx``, TensorFlow for ``.keras``). Latency is batch 1, after warm-up, as
percentiles over many single calls, per thread count.
"""

from __future__ import annotations

import gzip
import os
import platform
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from kerascomp import __version__, runtime
from kerascomp.backend import tf
from kerascomp.data import Dataset
from kerascomp.errors import ModelError
from kerascomp.export import export
from kerascomp.export.tflite import to_tflite
from kerascomp.files import scaling_of
from kerascomp.runtime.footprint import footprint
from kerascomp.runtime.timing import measure_latency
from kerascomp.saving import load, load_meta, strip_wrappers
from kerascomp.tasks import CLASSIFICATION
from kerascomp.training.trainer import predict

__all__ = ["bench", "compare_deployed", "latency_ms", "deployed_outputs", "machine_info", "FORMATS"]

FORMATS = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}


def bench(
    artifacts: Sequence[str | os.PathLike],
    data: Dataset,
    *,
    threads: Sequence[int] = (1,),
    runs: int = 200,
    warmup: int = 20,
    op_resolver: str = "auto",
) -> dict:
    """Benchmark ``artifacts`` on ``data``'s test split; returns the bench document (docs/architecture.md).

    One result row per artifact and thread count. TensorFlow fixes its thread
    pool when it starts, so ``.keras`` rows are measured once, at the thread
    count TensorFlow runs with.
    """
    if not artifacts:
        raise ModelError("no artifacts to benchmark")
    if runs < 1 or warmup < 0 or not threads or min(threads) < 1:
        raise ModelError("runs and thread counts must be at least 1, warm-up at least 0")
    paths = [_check_path(p) for p in artifacts]
    results = []
    for path in paths:
        results.extend(_bench_one(path, data, threads, runs, warmup, op_resolver))
    return {
        "kerascomp_version": __version__,
        "dataset": {"name": data.name, "n_test": int(len(data.x_test))},
        "machine": machine_info(threads[0]),
        "results": results,
    }


def compare_deployed(original, compressed, data: Dataset, runs: int) -> dict:
    """Float32 ``.tflite`` size, gzip size, test accuracy and batch-1 latency of two Keras models (LiteRT, 1 thread).

    Techniques that change the architecture (block swap) report what the change
    is worth once deployed; they receive this function rather than importing
    export and bench themselves.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / "original.tflite", Path(folder) / "compressed.tflite"]
        for net, path in zip((original, compressed), paths):
            export(net, path, data=data)
        results = bench(paths, data, runs=runs, warmup=min(20, runs))["results"]
    keys = ("size_bytes", "gzip_bytes", "accuracy", "latency_ms")
    return {"before": {k: results[0][k] for k in keys}, "after": {k: results[1][k] for k in keys}}


def latency_ms(model, runs: int = 200) -> float:
    """Median milliseconds of one batch-1 call of a Keras ``model`` as a float32 LiteRT file, one thread, here.

    What ``shrink --target latency`` compares its candidate cuts with: the
    weights do not matter, so an untrained cut is timed as it is.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "candidate.tflite"
        to_tflite(model, path, min_agreement=0.0)
        runner = runtime.load(path, threads=1)
        x = np.zeros((1, *model.input_shape[1:]), runner.input_dtype)
        return measure_latency(runner.run, x, runs, warmup=runs // 10)["p50"]


def machine_info(threads: int) -> dict:
    """CPU model and the SIMD features that decide which int8 kernels are fast."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    simd = sorted(flags & {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16"})
    return {"cpu": cpu, "threads": int(threads), "cores": os.cpu_count(), "simd": simd}


def _check_path(path) -> Path:
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ModelError(f"{path}: cannot benchmark {path.suffix or 'a file without suffix'}; use .keras, .tflite or .onnx")
    if not path.is_file():
        raise ModelError(f"artifact {path} not found")
    return path


def deployed_outputs(path: str | os.PathLike, data: Dataset, *, op_resolver: str = "auto") -> np.ndarray:
    """What ``path`` outputs for the test split, by its own runtime and input scaling.

    This is how :func:`bench` scores an artifact, so a report that quotes it
    states the metric bench would measure on the same file.
    """
    path = _check_path(path)
    return _logits(path, _runners(path, (1,), op_resolver)[0], data)


def _bench_one(path: Path, data: Dataset, threads: Sequence[int], runs: int, warmup: int, op_resolver: str) -> list[dict]:
    raw = path.read_bytes()
    common = {
        "name": path.stem,
        "path": str(path),
        "format": FORMATS[path.suffix],
        "size_bytes": len(raw),
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9)),
        "batch_size": 1,
    }
    runners = _runners(path, threads, op_resolver)
    first = runners[0]
    if first.scaling:
        data = data.with_scaling(first.scaling)
    params = first.params()
    task = data.task
    outputs = _logits(path, first, data)
    test = task.score(outputs, data.y_test)
    val = task.score(_logits(path, first, data, "val"), data.y_val) if len(data.x_val) else None
    classifier = task == CLASSIFICATION
    device = footprint(path) if common["format"] == "tflite" else {"macs": None, "peak_activation_bytes": None}
    rows = []
    for runner in runners:
        x1 = runner.prepare(data.x_test[:1])
        latency = measure_latency(runner.run, x1, runs, warmup)
        rows.append({
            **common,
            "quantization": runner.quantization,
            "params": int(sum(p.size for p in params)),
            "nonzero_params": int(sum(np.count_nonzero(p) for p in params)),
            "accuracy": test if classifier else None,
            "val_accuracy": val if classifier else None,
            task.keys[0]: val,  # what a budget reads: val_accuracy, or val_mae
            "metric": {"name": task.metric, "value": test, "val": val, "higher_is_better": task.higher_is_better},
            **({"outputs": task.scores(outputs, data.y_test)} if task.heads else {}),  # every output's test metric
            "latency_ms": latency,
            **device,
            "macs_per_s": device["macs"] / (latency["p50"] / 1e3) if device["macs"] and latency["p50"] > 0 else None,
            "threads": runner.threads,
            "runtime": runner.runtime,
            "kernel_path": runner.kernel_path,
            "kernels": runner.kernels,
        })
    return rows


def _runners(path: Path, threads: Sequence[int], op_resolver: str) -> list:
    """One runner per thread count (``.keras``: one, at TensorFlow's own thread count)."""
    kind = FORMATS[path.suffix]
    if kind == "keras":
        return [_KerasRunner(path)]
    return [_open_artifact(path, kind, t, op_resolver) for t in threads]


def _logits(path: Path, runner, data: Dataset, split: str = "test") -> np.ndarray:
    """A split's logits; an artifact that expects other input scaling (e.g. raw pixels) gets the data that way."""
    if runner.scaling:
        data = data.with_scaling(runner.scaling)
    data.check_fits(runner.input_shape, what=str(path))
    logits = runner.predict(data.split(split)[0])
    shapes = {k: v.shape[1:] for k, v in logits.items()} if isinstance(logits, dict) else logits.shape[1:]
    data.check_fits(runner.input_shape, shapes, what=str(path))
    return logits


def _open_artifact(path: Path, kind: str, threads: int, op_resolver: str):
    if kind == "tflite":
        model = runtime.load(path, threads=threads, op_resolver=op_resolver)
        if not model.has_sidecar:
            warnings.warn(f"{path} has no sidecar ({path.name}.json): input scaling is taken from --data", stacklevel=2)
        elif scaling_of(model.meta) is None:
            warnings.warn(f"{path}: the input scaling it expects is unknown (converted without --data): taken from "
                          "--data; convert it with --data to record it", stacklevel=2)
        return _TFLiteRunner(model)

    from kerascomp.export.onnx import OnnxModel  # onnx and onnxruntime take most of a second to import: on use

    return _OnnxRunner(OnnxModel(path, threads=threads))


class _TFLiteRunner:
    runtime = "litert"

    def __init__(self, model):
        self.model, self.threads, self.input_shape = model, model.threads, model.input_shape
        self.quantization, self.kernel_path, self.kernels = model.quantization, model.kernel_path, model.kernels
        self.scaling = scaling_of(model.meta)

    def params(self):
        return runtime.constant_tensors(self.model.path)

    def predict(self, x):
        return self.model.predict(x)

    def prepare(self, x):
        return self.model.quantize_input(x)

    def run(self, x):
        return self.model.run(x)


class _OnnxRunner:
    runtime = "onnxruntime"
    kernel_path, kernels = "onnxruntime-cpu", None

    def __init__(self, model):
        self.model, self.threads, self.input_shape = model, model.threads, model.input_shape
        meta = load_meta(model.path) or {}
        self.quantization, self.scaling = meta.get("quantization", "unknown"), scaling_of(meta)

    def params(self):
        from kerascomp.export.onnx import onnx_constant_params  # see _open_artifact

        return onnx_constant_params(self.model.path)

    def predict(self, x):
        return self.model.predict(x)

    def prepare(self, x):
        return np.ascontiguousarray(x, dtype=np.float32)

    def run(self, x):
        return self.model.run(x)


class _KerasRunner:
    """A ``.keras`` model called through one traced ``tf.function``, as TensorFlow serving would."""

    runtime = "tensorflow"
    quantization = "none"
    kernel_path, kernels = "tensorflow", None

    def __init__(self, path: Path):
        model, meta = load(path)
        self.model, self.scaling = strip_wrappers(model), scaling_of(meta)
        self.input_shape = tuple(self.model.input_shape[1:])
        self.threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        self._call = tf.function(lambda x: self.model(x, training=False))

    def params(self):
        return [w.numpy() for w in self.model.weights]

    def predict(self, x):
        return predict(self.model, x)

    def prepare(self, x):
        return tf.constant(x, dtype=tf.float32)

    def run(self, x):
        outputs = self._call(x)
        return [o.numpy() for o in outputs] if isinstance(outputs, list) else outputs.numpy()
