"""Load and run a ``.tflite`` classifier with ``ai_edge_litert`` and numpy only: the edge-device path.

This module never imports TensorFlow, so what it measures is what a device
that ships only the LiteRT runtime would run. The optional sidecar
``model.tflite.json`` (written by the exporter) supplies class names and the
scaling from raw pixels to model inputs; without it the model still runs with
class names ``"0".."K-1"`` and identity scaling.

Kernel paths (``op_resolver``), as found with ai_edge_litert 2.3.0 by listing
the interpreter's nodes after ``allocate_tensors``:

* ``"auto"``: the default resolver, which applies the XNNPACK delegate. XNNPACK
  *is* applied to full-int8 models (int8 I/O included), to dynamic-range and
  float16 models: the whole graph of a Conv2D/Dense model becomes one XNNPACK
  node. It is *not* applied to int16x8 models (those run on the built-in
  kernels), and ops XNNPACK lacks (e.g. ``CUMSUM``) stay on the built-in
  kernels, so ``kernel_path`` is measured, not assumed: ``"xnnpack"``,
  ``"xnnpack+builtin"`` or ``"builtin"``.
* ``"builtin"``: the optimized built-in kernels without default delegates
  (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``). LiteRT's own ``BUILTIN`` type is an
  alias of ``AUTO`` (same resolver id) and would still apply XNNPACK.
* ``"reference"``: the reference kernels (``BUILTIN_REF``), slow but simple;
  for checking that an optimized path does not change results.
"""

from __future__ import annotations

import json
import os

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from kerascomp.console import quiet_native_stderr
from kerascomp.data import Scaling  # one definition; kerascomp.data imports no TensorFlow either
from kerascomp.errors import ConfigError, ModelError, first_line
from kerascomp.files import scaling_of, sidecar_path
from kerascomp.runtime.kernels import kernel_record
from kerascomp.runtime.tensors import check_sizes

__all__ = ["load", "TFLiteModel", "Scaling", "softmax"]

_RESOLVERS = {
    "auto": OpResolverType.AUTO,
    "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "reference": OpResolverType.BUILTIN_REF,
}


def load(
    path: str | os.PathLike, threads: int = 1, op_resolver: str = "auto", meta: dict | None = None
) -> TFLiteModel:
    """Load a ``.tflite`` file and its sidecar, ready to predict.

    Args:
      path: the ``.tflite`` file.
      threads: CPU threads for the interpreter (and XNNPACK). Benchmarks use 1
        so latency is comparable across machines.
      op_resolver: ``"auto"``, ``"builtin"`` or ``"reference"``; see the module
        docstring for which kernels each one runs.
      meta: metadata to use instead of reading ``path + ".json"``.

    Raises:
      ModelError: the file is missing or not a usable TFLite model, or the
        sidecar is unreadable or disagrees with the model.
      ConfigError: ``threads`` or ``op_resolver`` is out of range.
    """
    return TFLiteModel(path, threads=threads, op_resolver=op_resolver, meta=meta)


class TFLiteModel:
    """A single-input TFLite model that returns float32 outputs (a classifier's logits; by name for several).

    Quantization is hidden from callers of :meth:`predict` and :meth:`classify`:
    float inputs are quantized and integer outputs dequantized with the tensors'
    own parameters, so every artifact of a model is compared on the same footing.
    :meth:`quantize_input` and :meth:`run` expose the raw path for latency timing.

    Attributes:
      path, threads: as loaded.
      meta: the sidecar (or the ``meta`` argument); None when there is neither.
      has_sidecar: whether ``path + ".json"`` was found and read.
      class_names: from the sidecar, else ``"0".."K-1"``.
      scaling: :class:`Scaling` from the sidecar, else identity.
      quantization: from the sidecar, else ``"int8"`` for integer input, else ``"unknown"``.
      input_shape: per-sample input shape (``None`` for a dynamic axis).
      input_dtype, output_dtype: numpy scalar types of the I/O tensors.
      input_quantization, output_quantization: their ``(scale, zero_point)``;
        scale 0 means not quantized.
      num_classes: length of the logit vector.
      kernel_path: ``"xnnpack"``, ``"xnnpack+builtin"``, ``"builtin"`` or ``"reference"``.
      kernels: the kernel path with its XNNPACK ``partitions``, ``nodes``,
        ``delegated_nodes``, every op's count (``ops``) and the ops left to
        built-in kernels (``outside_ops``).
    """

    def __init__(
        self, path: str | os.PathLike, threads: int = 1, op_resolver: str = "auto", meta: dict | None = None
    ):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ModelError(f"no such TFLite file: {self.path}")
        if op_resolver not in _RESOLVERS:
            raise ConfigError(f"unknown op_resolver {op_resolver!r}; use one of: {', '.join(_RESOLVERS)}")
        if not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
        self.threads = threads
        check_sizes(self.path)
        try:
            with quiet_native_stderr():  # LiteRT announces its XNNPACK delegate on stderr
                self._interpreter = Interpreter(
                    model_path=self.path, num_threads=threads, experimental_op_resolver_type=_RESOLVERS[op_resolver]
                )
                self._interpreter.allocate_tensors()
                # names are decoded here: a damaged file's are not UTF-8 (UnicodeDecodeError is a ValueError)
                inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
                signatures = self._interpreter.get_signature_list()
                self.kernels = kernel_record(self._interpreter, op_resolver)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{self.path} is not a usable TFLite model: {first_line(e)}") from None
        if len(inputs) != 1:
            raise ModelError(f"{self.path} has {len(inputs)} inputs; only single-input models are supported")
        side = sidecar_path(self.path)
        self.has_sidecar = meta is None and side.is_file()
        self.meta = _read_sidecar(side) if self.has_sidecar else meta
        meta = self.meta or {}
        self._input = inputs[0]
        self.output_names, self._outputs = self._named_outputs(outputs, signatures, meta.get("outputs"))
        self._output = self._outputs[0]
        self._shape = self._base_shape = tuple(int(d) for d in self._input["shape"])
        self._resizable = True
        self.input_shape = tuple(None if d < 0 else int(d) for d in self._input["shape_signature"][1:])
        self.input_dtype = np.dtype(self._input["dtype"]).type
        self.output_dtype = np.dtype(self._output["dtype"]).type
        self.output_shape = tuple(int(d) for d in self._output["shape"][1:])  # per example: (classes,), (H, W, classes)
        self.num_classes = self.output_shape[-1]
        self.input_quantization = tuple(self._input["quantization"])
        self.output_quantization = tuple(self._output["quantization"])

        self.class_names = [str(c) for c in meta.get("class_names") or range(self.num_classes)]
        if len(self.class_names) != self.num_classes and not self.output_names:
            raise ModelError(
                f"sidecar of {self.path} names {len(self.class_names)} classes, the model outputs {self.num_classes}"
            )
        scaling = scaling_of(meta) or {}
        self.scaling = Scaling(float(scaling.get("scale", 1.0)), float(scaling.get("offset", 0.0)))
        is_int8 = self.input_dtype in (np.int8, np.uint8)
        self.quantization = meta.get("quantization") or ("int8" if is_int8 else "unknown")

    def _named_outputs(self, outputs: list[dict], signatures: dict,
                       order: list[str] | None) -> tuple[list[str], list[dict]]:
        """The output tensors in the order of the model's outputs, with their names where there are several.

        The converter orders a file's output tensors by its signature's output
        names, not as the Keras model listed them; the signature maps names to
        tensors, and the sidecar's ``outputs`` keeps the model's order.
        """
        if len(outputs) == 1:
            return [], outputs
        if len(signatures) != 1:
            raise ModelError(f"{self.path} has {len(outputs)} outputs but {len(signatures)} signatures to name them")
        named = self._interpreter.get_signature_runner(next(iter(signatures))).get_output_details()
        by_index = {o["index"]: o for o in outputs}
        names = list(order) if order and set(order) == set(named) else sorted(named)
        return names, [by_index[named[name]["index"]] for name in names]

    @property
    def kernel_path(self) -> str:
        """The ``path`` of :attr:`kernels`."""
        return self.kernels["path"]

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Raw pixels to model-space float32 inputs, with the sidecar's scaling."""
        return np.asarray(raw, dtype=np.float32) * np.float32(self.scaling.scale) + np.float32(self.scaling.offset)

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Model-space floats to the input tensor's dtype, as the deployed app must do before ``run``.

        Integer inputs use the tensor's own ``(scale, zero_point)``, rounding
        half away from zero like TFLite's QUANTIZE kernel, then clipping.
        """
        x = np.asarray(x, dtype=np.float32)
        if not np.issubdtype(self.input_dtype, np.integer):
            return x.astype(self.input_dtype)
        scale, zero_point = self.input_quantization
        if scale:
            x = x / np.float32(scale)
        q = np.sign(x) * np.floor(np.abs(x) + 0.5) + zero_point
        info = np.iinfo(self.input_dtype)
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def run(self, x: np.ndarray) -> np.ndarray:
        """One invoke on exactly this batch, already in the input dtype; returns the raw output tensor.

        This is the timed call of a latency benchmark: nothing but
        ``set_tensor``/``invoke``/``get_tensor``. Call it once before timing,
        since a new batch size re-plans the interpreter.
        """
        if x.shape != self._shape:
            try:
                self._resize(x.shape)
            except (ValueError, RuntimeError) as e:
                self._resize(self._base_shape)
                raise ModelError(f"{self.path} cannot run a batch shaped {x.shape}: {first_line(e)}") from None
        self._interpreter.set_tensor(self._input["index"], x)
        self._interpreter.invoke()
        if self.output_names:
            return [self._interpreter.get_tensor(o["index"]) for o in self._outputs]
        return self._interpreter.get_tensor(self._output["index"])

    def predict(self, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Float32 outputs ``(N, *output_shape)`` (logits ``(N, classes)`` of a classifier) for model-space inputs
        ``x`` shaped ``(N, *input_shape)``; a dict of them by :attr:`output_names` for several outputs.

        Batches of ``batch_size`` run in one invoke each (the last one padded);
        a model whose graph fixes the batch size runs one sample per invoke.
        """
        x = np.asarray(x)
        self._check_shape(x.shape[1:])
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        q = self.quantize_input(x)
        batch = self._batch_size(q.shape, min(batch_size, len(q))) if len(q) else 1
        chunks = []
        for start in range(0, len(q), batch):
            chunk = q[start : start + batch]
            n = len(chunk)
            if n < batch:  # pad rather than re-plan the interpreter for one short batch
                chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
            out = self.run(chunk)
            chunks.append([o[:n] for o in out] if self.output_names else [out[:n]])
        outputs = [self._dequantize(np.concatenate([c[i] for c in chunks]) if chunks else
                                    np.zeros((0, *o["shape"][1:]), np.float32), o)
                   for i, o in enumerate(self._outputs)]
        return dict(zip(self.output_names, outputs)) if self.output_names else outputs[0]

    def classify(self, raw: np.ndarray, top_k: int = 3) -> list[list[tuple[str, float]]]:
        """Top-k ``(class name, probability)`` pairs per raw image, most likely first.

        A single image (no batch axis) is treated as a batch of one.
        """
        if self.output_names:
            raise ModelError(f"{self.path} has {len(self.output_names)} outputs; predict gives each of them")
        raw = np.asarray(raw)
        if raw.ndim == len(self.input_shape):
            raw = raw[None]
        probs = softmax(self.predict(self.preprocess(raw)))
        top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        return [[(self.class_names[i], float(p[i])) for i in row] for p, row in zip(probs, top)]

    def _check_shape(self, shape: tuple) -> None:
        expected = self.input_shape
        if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
            shown = tuple("?" if e is None else e for e in expected)
            raise ModelError(f"model expects inputs {shown}, got {tuple(shape)}")

    def _batch_size(self, shape: tuple, batch: int) -> int:
        """``batch`` if the interpreter can be resized to it, else the model's fixed batch size."""
        if self._resizable and batch != self._base_shape[0]:
            try:
                self._resize((batch, *shape[1:]))
                if self._interpreter.get_output_details()[0]["shape"][0] == batch:
                    return batch
            except (ValueError, RuntimeError):
                pass
            self._resizable = False  # e.g. a RESHAPE to a constant batch-1 shape
            self._resize(self._base_shape)
        return batch if self._resizable else self._base_shape[0]

    def _resize(self, shape: tuple) -> None:
        self._shape = None  # unknown until allocation succeeds
        self._interpreter.resize_tensor_input(self._input["index"], list(shape))
        self._interpreter.allocate_tensors()
        self._shape = tuple(shape)

    def _dequantize(self, out: np.ndarray, details: dict) -> np.ndarray:
        scale, zero_point = details["quantization"]
        if np.issubdtype(out.dtype, np.integer) and scale:
            return (out.astype(np.float32) - zero_point) * np.float32(scale)
        return out.astype(np.float32)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities from logits; the max is subtracted first so large logits do not overflow."""
    z = np.asarray(logits, dtype=np.float32)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _read_sidecar(path: str | os.PathLike) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read sidecar {path}: {first_line(e)}") from None
    if not isinstance(meta, dict):
        raise ModelError(f"sidecar {path} must hold a JSON object")
    return meta
