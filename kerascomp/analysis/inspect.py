"""``kerascomp inspect``: what a user reads before compressing a model they brought.

Every answer comes from the tools that will do the work: the import that
every command runs, the per-layer answers of every registered technique that
has them (pruning, clustering and QAT ask tfmot's own registries), and the
TFLite converter's op list.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kerascomp import __version__
from kerascomp.backend import keras
from kerascomp.compress import registry
from kerascomp.data import Dataset
from kerascomp.errors import KerascompError, first_line
from kerascomp.export.tflite import to_tflite
from kerascomp.files import scaling_of
from kerascomp.interop import detect_format, preprocessing_layers
from kerascomp.runtime import op_names
from kerascomp.saving import load

__all__ = ["inspect_model", "format_inspection"]


def inspect_model(path: str | os.PathLike, data: Dataset | None = None) -> dict:
    """The pre-flight report of a model file (the ``inspect --json`` contract, see README)."""
    model, meta = load(path, data)
    if data is not None:  # a pre-flight that passes on data the model cannot take would be no pre-flight
        data.check_model(model, what=str(path))
    imported = meta.get("import", {})

    fmt, version = detect_format(path)
    plans = {name: t.layers(model) for name, t in registry.techniques().items() if t.layers is not None}
    layers = [{"name": layer.name, "class": type(layer).__name__, "params": int(layer.count_params()),
               **{name: answers[layer.name] for name, answers in plans.items()}}
              for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    return {
        "kerascomp_version": __version__,
        "path": str(path),
        "format": fmt,
        "keras_version": version,
        "input_shape": list(model.input_shape[1:]),
        "output_shape": list(model.output_shape[1:]),
        "output_activation": imported.get("output_activation", "logits"),
        "params": int(model.count_params()),
        "import": {k: imported[k] for k in ("max_abs_diff", "seconds", "dropped") if k in imported} or None,
        "input_scaling": scaling_of(meta),
        "preprocessing": preprocessing_layers(model),
        "layers": layers,
        "tflite_ops": _tflite_ops(model),
    }


def _tflite_ops(model: keras.Model) -> list[str] | str:
    """The builtin ops of the float ``.tflite`` this model converts to (or why it does not convert)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        try:
            to_tflite(model, path)
        except KerascompError as exc:
            return f"does not convert: {first_line(exc)}"
        return sorted(set(op_names(path)) - {"DELEGATE"})


def format_inspection(report: dict) -> str:
    """The report as the console shows it."""
    lines = [f"{report['path']}: {report['format']} (Keras {report['keras_version'] or '?'}), input "
             f"{tuple(report['input_shape'])}, output {tuple(report['output_shape'])} ({report['output_activation']}), "
             f"{report['params']:,} params"]
    if report["import"]:
        dropped = ", ".join(f"{d['name']} ({d['class']})" for d in report["import"]["dropped"]) or "none"
        lines.append(f"import: rebuilt in tf_keras in {report['import']['seconds']:.1f} s, max |diff| "
                     f"{report['import']['max_abs_diff']:.2g}; dropped (identity at inference): {dropped}")
    scaling = report["input_scaling"]
    if scaling == {"scale": 1.0, "offset": 0.0}:
        lines.append("input: raw pixels (the model scales them itself)")
    elif scaling:
        lines.append(f"input: raw pixels x {scaling['scale']:g} + {scaling['offset']:g} (as trained)")
    for p in report["preprocessing"]:
        lines.append(f"preprocessing: {p['name']} ({p['class']}): {p['treatment']}")
    width = max([len(layer["name"]) for layer in report["layers"]] + [5])
    techniques = [k for k in report["layers"][0] if k not in ("name", "class", "params")] if report["layers"] else []
    lines.append(f"  {'layer':<{width}} {'class':<24} {'params':>9}  {' / '.join(techniques)}")
    for layer in report["layers"]:
        answers = " / ".join(layer[t] for t in techniques)
        lines.append(f"  {layer['name']:<{width}} {layer['class']:<24} {layer['params']:>9,}  {answers}")
    ops = report["tflite_ops"]
    lines.append("tflite ops: " + (", ".join(ops) if isinstance(ops, list) else ops))
    return "\n".join(lines)
