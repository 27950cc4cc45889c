"""Bring your own model: Keras 3 ``.keras``, tf_keras ``.keras`` and legacy ``.h5`` files, as tf_keras models.

A file's format is read from its own metadata, never from its name. Keras 3
models are loaded by Keras 3 in safe mode and rebuilt layer by layer as a
flat tf_keras functional model (:mod:`._keras3`); the rebuild must reproduce
the Keras 3 outputs within :data:`TOLERANCE` on the user's data, or nothing
is returned. kerascomp fine-tunes on logits, so a final softmax is split off
and recorded (``output_activation``); :func:`save_keras3` puts it back.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from kerascomp.backend import keras, unsafe_deserialization
from kerascomp.data import Dataset, Scaling
from kerascomp.errors import ModelError, first_line
from kerascomp.interop._back import save_keras3
from kerascomp.interop._graph import check_graph, dicts
from kerascomp.interop._keras3 import TOLERANCE, check_parity, format_unsupported, load_keras3, read_member, rebuild
from kerascomp.interop._layers import DROPPED, PREPROCESSING, SUPPORTED, layer_table

__all__ = ["FORMATS", "TOLERANCE", "trusting_code", "code_trusted", "refuse_code", "check_graph", "read_member", "detect_format", "import_model", "save_keras3", "to_logits", "preprocessing_layers",
           "SUPPORTED", "DROPPED", "PREPROCESSING", "layer_table", "check_parity", "load_keras3", "rebuild"]

FORMATS = ("keras3", "tf_keras", "h5")
PARITY_SAMPLES = 64
RAW = Scaling()  # the identity: pixels as stored
_TRUSTED = contextvars.ContextVar("kerascomp_trusted_code", default=False)


@contextlib.contextmanager
def trusting_code() -> Iterator[None]:
    """Load models whose ``Lambda`` layers run Python code stored in the file, inside this block only.

    By default kerascomp refuses such files before anything is loaded (opening a file must not run code from
    it); ``kerascomp --trust-code COMMAND`` is the CLI's way in, for files from a source you trust.
    """
    token = _TRUSTED.set(True)
    try:
        with unsafe_deserialization():
            yield
    finally:
        _TRUSTED.reset(token)


def code_trusted() -> bool:
    """Whether the caller said the model files it opens may run their code (:func:`trusting_code`)."""
    return _TRUSTED.get()


def refuse_code(path: str | os.PathLike, config: object) -> None:
    """Refuse a model ``config`` (read as JSON, nothing run) that holds ``Lambda`` layers, unless trusted."""
    names = [str(layer["config"].get("name", "?")) if isinstance(layer.get("config"), dict) else "?"
             for layer in dicts(config) if layer.get("class_name") == "Lambda"]
    if names and not code_trusted():
        raise ModelError(f"{path} has Lambda layer(s) {', '.join(names)}: loading it runs Python code stored in the "
                         "file; if you trust the file, pass --trust-code (kerascomp --trust-code COMMAND ...; in "
                         "Python: with kerascomp.trusting_code(): ...), or replace them by built-in layers")


def detect_format(path: str | os.PathLike) -> tuple[str, str]:
    """``(format, keras_version)`` of a model file, from the file's own metadata."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} not found")
    if zipfile.is_zipfile(path):
        metadata = read_member(path, "metadata.json")
        version = metadata.get("keras_version", "") if isinstance(metadata, dict) else ""
        version = version if isinstance(version, str) else ""
        return ("keras3" if version.startswith("3") else "tf_keras"), version
    import h5py

    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as handle:
                version = handle.attrs.get("keras_version", "")
        except (OSError, ValueError) as exc:  # a damaged HDF5 file
            raise ModelError(f"cannot load {path} as a Keras .h5 model: {first_line(exc)}") from None
        version = version.decode(errors="replace") if isinstance(version, bytes) else str(version)
        return "h5", version
    raise ModelError(f"cannot load {path}: neither a .keras archive nor an HDF5 (.h5) Keras model")


def import_model(path: str | os.PathLike, data: Dataset | None = None, *,
                 loaded: keras.Model | None = None) -> tuple[keras.Model, dict]:
    """A Keras 3, ``.h5`` or foreign tf_keras model as a tf_keras functional model on logits, and what was done.

    A Keras 3 rebuild is checked on ``data``'s validation inputs (random
    inputs of the model's input shape without data), scaled as the model
    expects: raw pixels when it starts with its own preprocessing
    (``Rescaling``, ``Normalization``), else ``data``'s scaling. ``loaded`` is
    the tf_keras model when the caller has loaded it already.
    """
    path = Path(path)
    start = time.perf_counter()
    fmt, version = detect_format(path)
    dropped, diff = [], 0.0
    if loaded is not None:
        model = loaded
    elif fmt == "h5" and not version.startswith("3"):
        model = _load_h5(path)
    else:
        model3 = load_keras3(path)
        built = rebuild(model3)
        model, dropped = built.model, built.dropped
        diff = check_parity(model3, built, _sample(model, _fitted(data, model)))
    model, activation = to_logits(model)
    preprocessing = preprocessing_layers(model)
    meta = {"import": {
        "format": fmt, "keras_version": version, "source": str(path), "output_activation": activation,
        "dropped": dropped, "max_abs_diff": diff, "seconds": round(time.perf_counter() - start, 3),
        "preprocessing": preprocessing,
    }}
    if _takes_raw_input(preprocessing):
        meta["scaling"] = RAW.to_dict()
    return model, meta


def _takes_raw_input(preprocessing: list[dict]) -> bool:
    return any(p["at_input"] and p["class"] in ("Rescaling", "Normalization") for p in preprocessing)


def _fitted(data: Dataset | None, model: keras.Model) -> np.ndarray | None:
    """``data``'s validation inputs, in the scaling ``model`` expects."""
    if data is None:
        return None
    raw = _takes_raw_input(preprocessing_layers(model))
    return (data.with_scaling(RAW) if raw else data).x_val


def _load_h5(path: Path) -> keras.Model:
    """A tf_keras-saved ``.h5``, refused before loading when it holds custom classes, or code (Lambda) unless
    trusted."""
    import h5py

    with h5py.File(path, "r") as handle:
        raw = handle.attrs.get("model_config")
    if raw is None:
        raise ModelError(f"{path} holds weights only, not a model (no model_config)")
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    refuse_code(path, config)
    check_graph(path, config)
    bad = [{"name": layer["config"].get("name", "?"), "class": layer["class_name"], "why": "a custom class",
            "fix": "replace it by built-in layers"}
           for layer in _h5_layers(config) if not hasattr(keras.layers, layer["class_name"])]
    if bad:
        raise ModelError(format_unsupported(path, bad))
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # h5py and Keras raise many types for foreign files
        raise ModelError(f"cannot load {path} as a Keras .h5 model: {first_line(exc)}") from None


def _h5_layers(config: dict) -> list[dict]:
    layers = []
    for layer in config.get("config", {}).get("layers", []):
        if layer["class_name"] in ("Sequential", "Functional", "Model"):
            layers += _h5_layers(layer)
        else:
            layers.append(layer)
    return layers


def _sample(model: keras.Model, sample: np.ndarray | None) -> np.ndarray:
    expected = tuple(model.input_shape[1:])
    if sample is not None and tuple(sample.shape[1:]) == expected:
        return np.asarray(sample[:PARITY_SAMPLES], dtype=np.float32)
    if None in expected:
        raise ModelError(f"{model.name}: input shape {expected} has free dimensions; pass --data to check the import")
    rng = np.random.default_rng(0)
    if model.inputs[0].dtype.is_integer:  # token ids: small ones exist in every vocabulary
        return rng.integers(0, 2, size=(8, *expected)).astype(model.inputs[0].dtype.as_numpy_dtype)
    return rng.normal(size=(8, *expected)).astype(np.float32)


def to_logits(model: keras.Model) -> tuple[keras.Model, str]:
    """``model`` without a final softmax, and ``"softmax"`` if one was split off (else ``"logits"``).

    kerascomp's losses and distillation work on logits; the argmax, and so
    the accuracy, is unchanged.
    """
    last = model.layers[-1]
    if len(model.outputs) != 1:
        return model, "logits"
    if _is_softmax_layer(last):
        return keras.Model(model.inputs, last.input, name=model.name), "softmax"
    if getattr(last, "activation", None) is keras.activations.softmax:
        copy = keras.models.clone_model(model, clone_function=lambda layer: _linear(layer) if layer is last
                                        else layer.__class__.from_config(layer.get_config()))
        copy.set_weights(model.get_weights())
        return copy, "softmax"
    return model, "logits"


def _is_softmax_layer(layer) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    return isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.softmax


def _linear(layer):
    config = layer.get_config()
    config["activation"] = "linear"
    return layer.__class__.from_config(config)


def preprocessing_layers(model: keras.Model) -> list[dict]:
    """The model's preprocessing layers, whether each acts on the raw input, and how techniques treat it."""
    first = {layer.name for layer in model.layers for node in layer._inbound_nodes  # noqa: SLF001
             if any(isinstance(t._keras_history.layer, keras.layers.InputLayer) for t in _tensors(node.input_tensors))}
    return [{"name": layer.name, "class": type(layer).__name__, "at_input": layer.name in first,
             "treatment": PREPROCESSING[type(layer).__name__]}
            for layer in model.layers if type(layer).__name__ in PREPROCESSING]


def _tensors(value) -> list:
    return [t for v in value for t in _tensors(v)] if isinstance(value, (list, tuple)) else [value]
