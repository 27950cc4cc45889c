"""The way back: a compressed tf_keras model as a Keras 3 ``.keras`` file.

Pruned and clustered models hold plain weights once stripped, so Keras 3
can read them through its own loader for tf_keras-era ``.h5`` files; a
softmax split off on import is put back, and the saved file is loaded again
by Keras 3 in safe mode and checked against the tf_keras model before it is
moved into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from kerascomp.backend import import_keras3, keras
from kerascomp.errors import ModelError, first_line
from kerascomp.files import atomic_path
from kerascomp.interop._keras3 import max_diff

__all__ = ["save_keras3"]


def save_keras3(model: keras.Model, path: str | os.PathLike, *, output_activation: str = "logits",
                sample: np.ndarray | None = None, tolerance: float = 1e-4) -> Path:
    """Write ``model`` as a Keras 3 ``.keras`` file at ``path``, checked against ``model`` (max |diff| <= tolerance)."""
    keras3 = import_keras3()

    if any("quantize" in type(layer).__module__ for layer in model.layers):
        raise ModelError("a QAT model stays tf_keras (its fake-quant layers are tfmot's): ship its .tflite "
                         "(kerascomp convert --quantize int8) instead of --save-format keras3")
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        legacy = Path(tmp) / "model.h5"
        model.save(legacy, save_format="h5", include_optimizer=False)
        try:
            model3 = keras3.models.load_model(legacy, compile=False)
        except Exception as exc:  # Keras 3's legacy loader raises many types
            raise ModelError(f"Keras 3 cannot rebuild this model: {first_line(exc)}") from None
    if output_activation == "softmax":
        model3 = keras3.Model(model3.inputs, keras3.layers.Softmax(name="softmax")(model3.outputs[0]), name=model.name)
    sample = _sample(model) if sample is None else np.asarray(sample[:64], dtype=np.float32)
    expected = model.predict(sample, verbose=0)
    if output_activation == "softmax":
        expected = keras.activations.softmax(keras.backend.constant(expected)).numpy()
    with atomic_path(path) as tmp:
        model3.save(tmp)
        reloaded = keras3.models.load_model(tmp, safe_mode=True, compile=False)
        diff = max_diff(reloaded.predict(sample, verbose=0), expected)
        if diff > tolerance:
            raise ModelError(f"the Keras 3 copy differs from the model by {diff:.3g} (> {tolerance:g}); not written")
    return path


def _sample(model: keras.Model) -> np.ndarray:
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(0).normal(size=(8, *shape)).astype(np.float32)
