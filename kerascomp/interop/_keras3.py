"""Rebuild a Keras 3 model as one flat tf_keras functional model, weights copied, outputs checked.

tfmot wraps only tf_keras layers, and its QAT refuses models nested in
models, so the rebuilt graph inlines every nested Sequential or Functional
model: each Keras 3 layer becomes one tf_keras layer (shared layers stay
shared), called on the same inputs as in the original graph. The graph is
replayed from Keras 3's own serialized config (``inbound_nodes`` with
``keras_history``), the documented format, rather than from private graph
attributes.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np

from kerascomp.backend import import_keras3, keras
from kerascomp.errors import ModelError, first_line
from kerascomp.interop._layers import DROPPED, MODEL_CLASSES, SUPPORTED, Untranslatable, translate

__all__ = ["Rebuilt", "unsupported_layers", "read_member", "load_keras3", "rebuild", "check_parity", "TOLERANCE", "max_diff"]

TOLERANCE = 1e-4  # largest accepted |output difference| between the Keras 3 model and its rebuild


@dataclasses.dataclass
class Rebuilt:
    """A rebuilt model, the Keras 3 layers it left out, and where each top-level output came from."""

    model: keras.Model
    dropped: list[dict]
    renamed: dict[str, str]
    pairs: list[tuple[object, keras.layers.Layer]]
    checkpoints: list[tuple[object, object]]  # (top-level Keras 3 layer, its tf_keras output), in graph order


def unsupported_layers(config: dict) -> list[dict]:
    """Every layer of a serialized Keras 3 model kerascomp cannot rebuild, with what the user can do.

    Read from the file's config before anything is loaded, so that a model
    with a ``Lambda`` or a custom class is refused in one message and no code
    from the file ever runs.
    """
    found = []
    _walk(config, found, top=True)
    return found


def _walk(entry: dict, found: list, top: bool = False) -> None:
    name = entry.get("config", {}).get("name", "?")
    cls, module = entry.get("class_name"), str(entry.get("module") or "")
    if cls in MODEL_CLASSES and module.startswith("keras") and ">" not in str(entry.get("registered_name") or ""):
        for layer in entry["config"].get("layers", []):
            _walk(layer, found)
        return
    if top:
        found.append({"name": name, "class": cls, "why": "a subclassed model: kerascomp needs Sequential or Functional",
                      "fix": "rebuild it with the functional API (keras.Model(inputs, outputs)) and save that"})
    elif cls == "InputLayer" or (module == "keras.layers" and cls in SUPPORTED | DROPPED):
        return
    elif cls == "Lambda":
        found.append({"name": name, "class": cls, "why": "runs Python code stored in the file (unsafe)",
                      "fix": "replace it by a built-in layer (Activation, Rescaling, Reshape, ...)"})
    else:
        custom = module != "keras.layers"
        found.append({"name": name, "class": cls,
                      "why": "a custom (user-registered) class" if custom else "a Keras 3 layer kerascomp does not rebuild",
                      "fix": "replace it by built-in layers" if custom else
                      "open an issue; or replace it by supported layers (kerascomp inspect lists them)"})


def read_member(path: Path, name: str) -> object:
    """A JSON member of a ``.keras`` archive, read as JSON (nothing in it runs); a missing or damaged one (a bad
    CRC, an unknown compression method, a truncated member) is one :class:`ModelError`."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(name))
    except (KeyError, ValueError, OSError, EOFError, NotImplementedError, zipfile.BadZipFile) as exc:
        raise ModelError(f"cannot load {path}: a zip archive but not a readable Keras model ({name}: "
                         f"{first_line(exc)})") from None


def _unsupported_in(path: Path) -> list[dict]:
    """What :func:`unsupported_layers` finds in the archive's config; a config of another shape is refused."""
    config = read_member(path, "config.json")
    try:
        return unsupported_layers(config)
    except (AttributeError, TypeError, KeyError):  # a list where a layer's dict should be, and the like
        raise ModelError(f"cannot load {path}: its config.json is not a Keras model's") from None


def load_keras3(path: Path):
    """The Keras 3 model in safe mode, after refusing anything that cannot be rebuilt."""
    keras3 = import_keras3()

    bad = _unsupported_in(path) if path.suffix == ".keras" else []
    if bad:
        raise ModelError(format_unsupported(path, bad))
    try:
        return keras3.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras 3 raises many types for files it cannot read
        raise ModelError(f"cannot load {path} with Keras 3: {first_line(exc)}") from None


def format_unsupported(path: Path, bad: list[dict]) -> str:
    listed = "; ".join(f"{b['name']} ({b['class']}: {b['why']}; {b['fix']})" for b in bad)
    return f"{path} has {len(bad)} layer(s) kerascomp cannot import: {listed}"


def rebuild(model3) -> Rebuilt:
    """The flat tf_keras twin of a Keras 3 ``model3``, weights copied (outputs not yet checked)."""
    state = _State()
    inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=state.unique(_input_name(t)))
              for t in model3.inputs]
    outputs = _replay(model3, inputs, state, prefix="")
    model = keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model3.name)
    for source, target in state.pairs:
        _copy_weights(source, target)
    return Rebuilt(model, state.dropped, state.renamed, state.pairs, state.checkpoints)


def _input_name(tensor) -> str:
    history = getattr(tensor, "_keras_history", None)
    return history[0].name if history is not None else "input"


class _State:
    """What the replay shares across nesting levels: layer twins, used names, dropped layers."""

    def __init__(self):
        self.twins: dict[int, keras.layers.Layer] = {}
        self.names: set[str] = set()
        self.pairs: list = []
        self.dropped: list[dict] = []
        self.renamed: dict[str, str] = {}
        self.checkpoints: list = []

    def unique(self, name: str, prefix: str = "") -> str:
        candidate = name
        if candidate in self.names and prefix:
            candidate = f"{prefix}_{name}"
        base, i = candidate, 1
        while candidate in self.names:
            candidate, i = f"{base}_{i}", i + 1
        self.names.add(candidate)
        if candidate != name:
            self.renamed[f"{prefix}/{name}" if prefix else name] = candidate
        return candidate


def _replay(model3, inputs: list, state: _State, prefix: str) -> list:
    """Call tf_keras twins of ``model3``'s layers on ``inputs``; returns the output tensors."""
    if type(model3).__name__ == "Sequential":
        (tensor,) = inputs
        for layer in model3.layers:
            tensor = _call(layer, [tensor], {}, state, prefix)[0]
        return [tensor]
    config = model3.get_config()
    known = dict(zip((tuple(k[:3]) for k in _histories(config["input_layers"])), inputs))
    pending = [(entry, i, node) for entry in config["layers"] if entry["class_name"] != "InputLayer"
               for i, node in enumerate(entry.get("inbound_nodes", []))]
    while pending:
        waiting = []
        for entry, index, node in pending:
            refs = _histories(node)
            if not all(tuple(r[:3]) in known for r in refs):
                waiting.append((entry, index, node))
                continue
            args, kwargs = _resolve(node.get("args", []), known), _resolve(node.get("kwargs", {}), known)
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            layer = model3.get_layer(entry["config"]["name"])
            for j, tensor in enumerate(_call(layer, args, kwargs, state, prefix)):
                known[(entry["config"]["name"], index, j)] = tensor
        if len(waiting) == len(pending):
            raise ModelError(f"{model3.name}: the graph of this model could not be replayed "
                             f"(layer {waiting[0][0]['config']['name']!r} waits on an input that never appears)")
        pending = waiting
    return [known[tuple(k[:3])] for k in _histories(config["output_layers"])]


def _histories(value) -> list:
    """Every ``[layer, node, tensor]`` reference in a node or an input/output list, in order."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value["config"]["keras_history"]]
        return [h for v in value.values() for h in _histories(v)]
    if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str) and isinstance(value[1], int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [h for v in value for h in _histories(v)]
    return []


def _resolve(value, known: dict):
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return known[tuple(value["config"]["keras_history"][:3])]
        return {k: _resolve(v, known) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_resolve(v, known) for v in value]
    return value


def _call(layer, args: list, kwargs: dict, state: _State, prefix: str) -> list:
    """Call ``layer``'s tf_keras twin (or inline a nested model, or skip an augmentation layer)."""
    cls = type(layer).__name__
    if cls in MODEL_CLASSES:
        nested = args[0] if isinstance(args[0], list) else [args[0]]
        outputs = _replay(layer, list(nested), state, prefix=layer.name)
    elif cls in DROPPED:
        state.dropped.append({"name": layer.name, "class": cls})
        outputs = [args[0]]
    else:
        twin = state.twins.get(id(layer))
        if twin is None:
            twin = state.twins[id(layer)] = _twin(layer, state, prefix)
            state.pairs.append((layer, twin))
        result = twin(*args, **kwargs)
        outputs = list(result) if isinstance(result, (list, tuple)) else [result]
    if not prefix:
        state.checkpoints.append((layer, outputs[0]))
    return outputs


def _twin(layer, state: _State, prefix: str) -> keras.layers.Layer:
    cls = type(layer).__name__
    try:
        config = translate(cls, layer.get_config(), type(layer))
    except Untranslatable as exc:
        raise ModelError(f"layer {layer.name} ({cls}): {exc}") from None
    config["name"] = state.unique(layer.name, prefix)
    try:
        return getattr(keras.layers, cls).from_config(config)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"layer {layer.name} ({cls}) cannot be rebuilt in tf_keras: {first_line(exc)}") from None


def check_parity(model3, built, sample: np.ndarray) -> float:
    """Largest |output difference|; over :data:`TOLERANCE`, a ModelError naming the first layer that differs."""
    diff = max_diff(model3(sample, training=False), built.model(sample, training=False))
    if diff <= TOLERANCE:
        return diff

    layers3 = [layer for layer, _ in built.checkpoints]
    probe = keras.Model(built.model.inputs, [tensor for _, tensor in built.checkpoints])
    for layer, a, b in zip(layers3, _intermediates(model3, layers3, sample), probe(sample, training=False)):
        if max_diff(a, b) > TOLERANCE:
            raise ModelError(f"the tf_keras rebuild differs from the Keras 3 model by {diff:.3g} (> {TOLERANCE:g}); "
                             f"first at layer {layer.name} ({type(layer).__name__}, max |diff| {max_diff(a, b):.3g})")
    raise ModelError(f"the tf_keras rebuild differs from the Keras 3 model by {diff:.3g} (> {TOLERANCE:g})")


def _intermediates(model3, layers3: list, sample: np.ndarray) -> list:
    """Each top-level Keras 3 layer's output on ``sample`` (a Sequential is stepped through by hand)."""
    keras3 = import_keras3()

    if type(model3).__name__ != "Sequential":
        return keras3.Model(model3.inputs, [layer.output for layer in layers3])(sample, training=False)
    outputs, tensor = [], sample
    for layer in layers3:
        tensor = layer(tensor, training=False)
        outputs.append(tensor)
    return outputs


def max_diff(a, b) -> float:
    """Largest |difference| of two outputs, or of the pairs of outputs of a model with several."""
    if isinstance(a, (list, tuple, dict)):
        pairs = zip(a.values(), b.values()) if isinstance(a, dict) else zip(a, b)
        return max(max_diff(x, y) for x, y in pairs)
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def _copy_weights(source, target: keras.layers.Layer) -> None:
    values = [np.asarray(w) for w in source.get_weights()]
    shapes = [tuple(w.shape) for w in target.weights]
    if [v.shape for v in values] != shapes:
        raise ModelError(f"layer {source.name} ({type(source).__name__}): weights {[v.shape for v in values]} do not "
                         f"fit the tf_keras layer's {shapes}")
    target.set_weights(values)
