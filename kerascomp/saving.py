"""Save and load ``.keras`` models with a JSON sidecar, safely and atomically.

The sidecar (``model.keras.json``) carries what the model file cannot: class
names, the input scaling and where the model came from, so that later stages
(convert, bench, the edge runtime) need neither the training code nor the
original data spec.

Models saved mid-compression hold a technique's training wrappers (tfmot's
QAT, pruning or clustering layers). This layer knows no technique: the
technique registry installs, once, how to load such files and how to strip
those wrappers (:func:`install_technique_hooks`), and saving and export call
them through :func:`technique_scope` and :func:`strip_wrappers`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import weakref
from pathlib import Path
from typing import Callable, ContextManager

from kerascomp import __version__, interop
from kerascomp.backend import keras
from kerascomp.data import Dataset
from kerascomp.errors import ModelError, first_line
from kerascomp.files import atomic_path, scaling_of, sidecar_path, write_json

__all__ = ["save_model", "load", "load_with_data", "load_model", "load_meta", "compile_config", "sidecar_path",
           "check_output_path", "install_technique_hooks", "technique_scope", "strip_wrappers", "as_tf_keras",
           "fit_data", "carry_scaling"]

_HOOKS: dict[str, Callable] = {}  # "scope", "strip": installed by kerascomp.compress.registry
_EXPECTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> the input scaling it was loaded with


def install_technique_hooks(*, scope: Callable[[], ContextManager], strip: Callable) -> None:
    """Install how to load files that hold techniques' wrappers (``scope``) and how to remove them (``strip``)."""
    _HOOKS.update(scope=scope, strip=strip)


def technique_scope() -> ContextManager:
    """Every technique's custom objects at once, for loading a model whatever compressed it."""
    if "scope" not in _HOOKS:
        raise ModelError("this model holds a compression technique's wrappers: import kerascomp.compress first "
                         "(kerascomp.load and the CLI do)")
    return _HOOKS["scope"]()


def strip_wrappers(model):
    """``model`` without any technique's training-only wrappers (what export converts)."""
    strip = _HOOKS.get("strip")
    return model if strip is None else strip(model)


def check_output_path(path: str | os.PathLike, suffix: str) -> Path:
    """Fail before any work is done if ``path`` cannot receive a ``suffix`` artifact."""
    path = Path(path)
    if path.suffix != suffix:
        raise ModelError(f"output {path} must end in {suffix}")
    if path.is_dir():
        raise ModelError(f"output {path} is a folder")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise ModelError(f"cannot write to {parent}")
    return path


def save_model(model: keras.Model, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Save ``model`` in the native ``.keras`` format and its sidecar, each atomically."""
    path = check_output_path(path, ".keras")
    with atomic_path(path) as tmp:
        model.save(tmp)
    meta = {"kerascomp_version": __version__, **(meta or {})}
    if scaling_of(meta) is not None:
        meta["scaling"] = scaling_of(meta)
    write_json(sidecar_path(path), meta)
    return path


def load(path: str | os.PathLike, data: Dataset | None = None) -> tuple[keras.Model, dict]:
    """Any Keras model file as a tf_keras model, and its metadata.

    kerascomp's own files (tf_keras ``.keras`` with a sidecar) load as saved.
    A Keras 3 ``.keras``, a legacy ``.h5`` or a foreign tf_keras file is
    imported (:func:`kerascomp.interop.import_model`, checked on ``data``'s
    validation inputs); its metadata says what the import did, and under
    ``scaling`` which input scaling the model expects.
    """
    path = Path(path)
    fmt, _ = interop.detect_format(path)  # also says when the file does not exist
    meta = load_meta(path)
    if fmt == "tf_keras" and meta is not None:
        model = _load_tf_keras(path)  # its sidecar carries the compile config of the user's file it came from
    else:
        model, meta = interop.import_model(path, data, loaded=_load_tf_keras(path) if fmt == "tf_keras" else None)
        meta = {**meta, **({"compile": own} if (own := compile_config(path)) else {})}
    if scaling_of(meta):
        _EXPECTS[model] = scaling_of(meta)
    return model, meta


def compile_config(source) -> dict:
    """The ``loss`` and ``loss_weights`` a ``.keras`` file (Keras 3 and tf_keras both keep them in its
    ``config.json``, read as JSON: nothing in the file runs) or a model in memory was compiled with. Empty for
    other files and uncompiled models.
    """
    if hasattr(source, "get_compile_config"):  # a model in memory, Keras 3 or tf_keras
        config = source.get_compile_config() or {}
    else:
        config = _config_json(Path(source)).get("compile_config") or {}
    if not isinstance(config, dict):
        return {}
    return {key: config[key] for key in ("loss", "loss_weights") if config.get(key) is not None}


def fit_data(model: keras.Model, data: Dataset | None) -> Dataset | None:
    """``data`` in the input scaling ``model`` was loaded with (raw pixels for a model that rescales itself).

    The scaling travels with a model :func:`load` returned (and with what a
    technique made of it, :func:`carry_scaling`), so the Python API cannot feed
    a raw-pixel model scaled data: it once measured such a model at 28.9 %
    against the CLI's 88 %.
    """
    scaling = _EXPECTS.get(model)
    return data.with_scaling(scaling) if data is not None and scaling else data


def carry_scaling(result: keras.Model, source: keras.Model) -> None:
    """``result`` (made from ``source``) expects the inputs ``source`` expects."""
    if source in _EXPECTS and result is not source:
        _EXPECTS[result] = _EXPECTS[source]


def as_tf_keras(model, data: Dataset | None = None) -> keras.Model:
    """A Keras 3 model in memory imported as a file is (rebuilt in tf_keras, parity-checked); others as they are."""
    if not type(model).__module__.startswith("keras."):
        return model
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return load(path, data)[0]


def load_with_data(path: str | os.PathLike, data: Dataset | None) -> tuple[keras.Model, dict, Dataset | None]:
    """Any model file, its metadata, and ``data`` in the input scaling the model expects.

    A model that rescales raw pixels itself (a Keras 3 model with ``Rescaling``
    inside) records that in its sidecar; feeding it data scaled for another
    model would be silently wrong, so every caller that pairs a file with data
    goes through here.
    """
    model, meta = load(path, data)
    return model, meta, fit_data(model, data)


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a tf_keras ``.keras`` model in Keras safe mode (no code from the file is executed).

    Other formats (Keras 3, ``.h5``) go through :func:`load`.
    """
    path = Path(path)
    if interop.detect_format(path)[0] != "tf_keras":  # also says when the file does not exist
        return load(path)[0]
    return _load_tf_keras(path)


def _load_tf_keras(path: Path) -> keras.Model:
    """A tf_keras ``.keras`` file in safe mode, with the techniques' custom objects where it uses tfmot."""
    import kerascomp.models.layers  # noqa: F401  (registers the zoo's layers; defining them imports TensorFlow)

    config = _config_json(path)
    interop.refuse_code(path, config)
    interop.check_graph(path, config)
    try:
        with _custom_objects(config):
            return keras.models.load_model(path, safe_mode=not interop.code_trusted(), compile=False)
    except Exception as exc:  # Keras raises many types for unreadable or foreign files
        raise ModelError(f"cannot load {path} as a Keras model: {first_line(exc)}") from None


def _config_json(path: Path) -> dict:
    """The model config of a ``.keras`` archive, read as JSON (nothing in it runs); {} where unreadable (the
    loader then says why)."""
    try:
        config = interop.read_member(path, "config.json")  # not a zip, or no config in it: a ModelError too
    except ModelError:
        return {}
    return config if isinstance(config, dict) else {}


def _custom_objects(config: dict) -> contextlib.AbstractContextManager:
    """The techniques' custom objects (QAT wrappers, quantizers) for files that use tfmot; imported only then."""
    uses_tfmot = "tensorflow_model_optimization" in json.dumps(config)
    return technique_scope() if uses_tfmot else contextlib.nullcontext()


def load_meta(path: str | os.PathLike) -> dict | None:
    """The sidecar of an artifact, or ``None`` when it has none."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read sidecar {side}: {exc}") from None
