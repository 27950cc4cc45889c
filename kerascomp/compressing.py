"""One way to run a registered technique on a model file, for the CLI and the pipeline alike.

``compress_file`` loads the model (any format; the data follows the model's
input scaling), loads the teacher when the config names one, prints the
technique's pre-flight plan, applies it, and saves the result with a sidecar
that carries the input's metadata plus a ``compression`` history entry. The
``kerascomp NAME`` command and the pipeline's ``NAME`` stage both call it, so
the same options give the same file, sidecar and metrics either way.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Callable

from kerascomp import registry
from kerascomp.data import Dataset

__all__ = ["compress_file", "config_from", "default_out"]


def compress_file(
    name: str,
    model_path: str | os.PathLike,
    data: Dataset,
    config: object,
    out: str | os.PathLike,
    *,
    save_format: str = "keras",
    echo: Callable[[str], None] | None = None,
    extra_meta: dict | None = None,
    plots_dir: str | os.PathLike | None = None,
) -> dict:
    """Apply technique ``name`` with ``config`` to the model at ``model_path`` and save it to ``out``.

    Returns the technique's metrics plus ``source``, ``out`` and ``summary``
    (the headline text). ``save_format="keras3"`` writes a Keras 3 file;
    ``plots_dir`` receives the run's figures (see :func:`kerascomp.report.technique_plots`).
    """
    from kerascomp.saving import load, save_model

    technique = registry.get(name)
    model, meta = load(model_path, data)
    scaling = meta.get("data", {}).get("scaling")
    data = data.with_scaling(scaling) if scaling else data
    _warn_on_other_split(meta, data)
    teacher_path = getattr(config, "distill_from", None) if technique.teacher else None
    kwargs = {"teacher": load(teacher_path, data)[0]} if teacher_path else {}
    if technique.measures:
        from kerascomp.bench import compare_deployed

        kwargs["measure"] = compare_deployed
    if technique.plan is not None and echo is not None:
        echo(technique.plan(model, config))
    result, metrics = technique.apply(model, data, config, **kwargs)
    metrics = {"source": str(model_path), "out": str(out), "params": int(result.count_params()), **metrics}
    side = {**meta, **(extra_meta or {}), **({"model": metrics["model"]} if "model" in metrics else {}),
            "data": data.describe(), "compression": [*meta.get("compression", []), _history_entry(name, config, metrics)]}
    if save_format == "keras3":
        _save_keras3(result, out, side, meta, data)
    else:
        save_model(result, out, meta=side)
    metrics["summary"] = technique.summary(metrics)
    if plots_dir is not None:
        from kerascomp.report import technique_plots

        technique_plots(result, metrics, data, plots_dir)
    return metrics


def _history_entry(name: str, config: object, metrics: dict) -> dict:
    """What a sidecar remembers of one step: the technique, its options, and its scalar results (no timings)."""
    from kerascomp._options import option_fields

    options = {f.name: getattr(config, f.name) for f in option_fields(type(config))}
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (bool, int, float, str)) and "seconds" not in k}
    return {"stage": name, **scalars, "config": options, "baseline": metrics.get("baseline")}


def _save_keras3(model, out, side: dict, meta: dict, data: Dataset) -> None:
    from kerascomp._io import sidecar_path, write_json
    from kerascomp.interop import save_keras3

    save_keras3(model, out, output_activation=meta.get("import", {}).get("output_activation", "logits"),
                sample=data.x_val)
    write_json(sidecar_path(out), side)


def _warn_on_other_split(meta: dict, data: Dataset) -> None:
    """A model trained on other splits of the same data may have seen today's validation and test images."""
    split = meta.get("data", {})
    if split.get("name") == data.name and split.get("seed", data.seed) != data.seed:
        warnings.warn(f"seed {data.seed} splits {data.name} unlike the model's training run (seed {split['seed']}): "
                      "validation and test images may have been trained on", stacklevel=3)


def config_from(name: str, options: dict) -> object:
    """The technique's config from option values (``None`` leaves a field at its default)."""
    config_class = registry.get(name).config
    fields = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{k: v for k, v in options.items() if k in fields and v is not None})


def default_out(name: str, model_path: str | os.PathLike) -> Path:
    """``MODEL_<suffix>.keras`` beside the input when no output is named."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}_{registry.get(name).suffix or name}.keras")
