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

from kerascomp.bench import compare_deployed, latency_ms
from kerascomp.budget import baseline_val, check
from kerascomp.compress import registry
from kerascomp.compress.search import search
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError, Interrupted, ModelError
from kerascomp.files import sidecar_path, write_json
from kerascomp.interop import save_keras3
from kerascomp.options import option_fields
from kerascomp.report import technique_plots
from kerascomp.saving import load, load_with_data, save_model
from kerascomp.tasks import CLASSIFICATION
from kerascomp.training import evaluate
from kerascomp.training.compiled import compiled_as
from kerascomp.training.compiled import describe as describe_compile
from kerascomp.training.distillation import FROM_INPUT

__all__ = ["compress_file", "config_from", "default_out", "planned_config", "measurement", "MEASUREMENTS",
           "SAVE_FORMATS", "output_format", "interrupted_path"]


def compress_file(
    name: str,
    model_path: str | os.PathLike,
    data: Dataset,
    config: object,
    out: str | os.PathLike,
    *,
    save_format: str = "auto",
    echo: Callable[[str], None] | None = None,
    extra_meta: dict | None = None,
    plots_dir: str | os.PathLike | None = None,
    strict: bool = True,
) -> dict:
    """Apply technique ``name`` with ``config`` to the model at ``model_path`` and save it to ``out``.

    Returns the technique's metrics plus ``source``, ``out`` and ``summary``
    (the headline text). ``save_format``: ``"auto"`` follows the input (a Keras 3
    file in gives a Keras 3 file out, with its softmax back; a QAT result stays
    tf_keras, said once), ``"keras"`` (tf_keras) or ``"keras3"``;
    ``plots_dir`` receives the run's figures (see :func:`kerascomp.report.technique_plots`).
    With ``config.max_drop`` set, a result over the budget is an error unless ``strict`` is False (the
    pipeline's way): then the result is saved with ``budget.met`` False, and a search that found nothing
    passes its input on unchanged; the run's final choice then weighs it.
    """
    technique = registry.get(name)
    model, meta, data = load_with_data(model_path, data)
    data.check_model(model, what=str(model_path))  # before any plan or work
    _warn_on_other_split(meta, data)
    fmt = output_format(save_format, meta, technique, echo)
    teacher_path = getattr(config, "distill_from", None) if technique.teacher else None
    # "input": the model as loaded here, so a search's warm restarts still learn from the uncompressed original
    kwargs = {"teacher": model if teacher_path == FROM_INPUT else load(teacher_path, data)[0]} if teacher_path else {}
    measured = measurement(technique)  # one per file: the plan printed and the search share its timings
    kwargs.update(measured)
    if technique.plan is not None and echo is not None:
        echo(technique.plan(model, planned_config(technique, config), **measured))
    own = meta.get("compile") or {}
    if own and echo is not None:
        echo(f"fine-tuning as {Path(model_path).name} was compiled: {describe_compile(own)} (cross-entropy stays the "
             "task's, from logits)")
    kept = interrupted_path(out)

    def save(result, path, config, metrics):
        side = {**meta, **(extra_meta or {}), **({"model": metrics["model"]} if "model" in metrics else {}),
                "data": data.describe(),
                "compression": [*meta.get("compression", []), _history_entry(name, config, metrics)]}
        _save(result, path, side, meta, data, fmt, fallback=save_format == "auto", echo=echo)

    with compiled_as(own):
        try:
            result, metrics, config = _apply(technique, model, meta, data, config, echo, kwargs, strict)
        except Interrupted as stop:  # a search stopped: its strongest pass is kept beside the output
            if stop.kept is None or stop.kept[0] is None:
                raise
            result, metrics, record = stop.kept
            save(result, kept, technique.strength.set(config, record["chosen"]), {**metrics, "search": record})
            raise Interrupted(f"{stop}; the strongest model within the budget so far ({record['field']}="
                              f"{record['chosen']}) is kept in {kept}") from None
    metrics = {"source": str(model_path), "out": str(out), "params": int(result.count_params()), **metrics}
    save(result, out, config, metrics)
    for stale in (kept, sidecar_path(kept)):  # an earlier stopped search's keep: this result supersedes it
        stale.unlink(missing_ok=True)
    metrics["summary"] = ("input passed on unchanged: no setting held the budget" if metrics.get("unchanged")
                          else technique.summary(metrics))
    if plots_dir is not None:
        technique_plots(result, metrics, data, plots_dir, runs=technique.runs)
    return metrics


def _apply(technique, model, meta: dict, data: Dataset, config, echo, kwargs: dict, strict: bool):
    """Apply once, or search the strength within ``config.max_drop``; check the result against the budget.

    Returns the result, its metrics (with ``budget``, and ``search`` when it
    searched) and the config that produced it (the chosen strength filled in).
    """
    max_drop = getattr(config, "max_drop", None)
    if max_drop is None:
        return (*technique.apply(model, data, config, **kwargs), config)
    baseline = baseline_val(meta, model, data)
    image_pp = 100 / len(data.x_val)
    if max_drop < image_pp and data.task == CLASSIFICATION:
        _warn(echo, f"--max-drop {max_drop} pp is less than one validation image ({image_pp:.2f} pp of "
                    f"{len(data.x_val)}): a single image lost fails it; hold out more with --val-fraction")
    strength = technique.strength
    if strength is not None and strength.get(config) is None:
        result, metrics, record = search(technique, model, data, config, max_drop=max_drop, baseline=baseline,
                                         echo=echo, **kwargs)
        if result is None:
            weakest, task = record["tries"][0], data.task
            message = (f"{technique.name}: no {strength.field} holds --max-drop {task.budget(max_drop)}; the "
                       f"weakest, {weakest['strength']}, costs {task.amount(weakest['drop'])} of validation "
                       f"{task.metric}")
            if strict:
                raise ModelError(message)
            _warn(echo, f"{message}; its input passes on unchanged")
            measured = evaluate(model, data)
            result, metrics = model, {**measured, "baseline": measured, "unchanged": True}
        else:
            config = strength.set(config, record["chosen"])
        metrics["search"] = record
    else:
        result, metrics = technique.apply(model, data, config, **kwargs)
    task = data.task
    metrics["budget"] = check(metrics, baseline, max_drop, task)
    drop = task.amount(metrics["budget"]["drop"])
    if not metrics["budget"]["met"] and not strict:
        _warn(echo, f"{technique.name}: {drop} of validation {task.metric} below the baseline, over the "
                    f"{task.budget(max_drop)} budget")
    elif not metrics["budget"]["met"]:
        hint = f"; leave {strength.field} unset to search for one that holds" if strength is not None else ""
        raise ModelError(f"{technique.name} costs {drop} of validation {task.metric}, over "
                         f"--max-drop {task.budget(max_drop)}; nothing was saved{hint}")
    return result, metrics, config


SAVE_FORMATS = ("auto", "keras", "keras3")  # auto: the input's
MEASUREMENTS = {"deployed": compare_deployed, "latency": latency_ms}  # a technique's ``measures`` -> the callable


def measurement(technique: registry.Technique) -> dict:
    """``{"measure": ...}`` for a technique that measures (compress imports no bench, so it is given one), else {}.

    Latency depends on the architecture, not the weights: one compression
    (its pre-flight plan, the cut, every try of a search) times each
    architecture once, so the plan printed is the plan applied and the input is
    not re-timed at every try.
    """
    if not technique.measures:
        return {}
    measure = MEASUREMENTS[technique.measures]
    return {"measure": _per_architecture(measure) if technique.measures == "latency" else measure}


def _per_architecture(measure: Callable) -> Callable:
    """``measure`` remembered per architecture: layer types and weight shapes (input shape included)."""
    seen: dict = {}

    def remembered(model) -> float:
        key = (tuple(model.input_shape), tuple((type(layer).__name__, tuple(tuple(w.shape) for w in layer.weights))
                                               for layer in model.layers))
        if key not in seen:
            seen[key] = measure(model)
        return seen[key]
    return remembered


def planned_config(technique: registry.Technique, config: object) -> object:
    """The config the pre-flight plan describes: a search's first try where the strength is left to search."""
    strength = technique.strength
    searching = strength is not None and getattr(config, "max_drop", None) is not None and strength.get(config) is None
    return strength.set(config, strength.steps[0]) if searching else config


def _warn(echo, message: str) -> None:
    (echo or warnings.warn)(f"Warning: {message}")


def interrupted_path(out: str | os.PathLike) -> Path:
    """Where a search stopped by Ctrl-C keeps its strongest passing model: beside ``out``, never as ``out``
    (a resumed run must not take a half-climbed search for a finished stage)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.interrupted{out.suffix}")


def _history_entry(name: str, config: object, metrics: dict) -> dict:
    """What a sidecar remembers of one step: the technique, its options, and its scalar results (no timings)."""
    options = {f.name: getattr(config, f.name) for f in option_fields(type(config))}
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (bool, int, float, str)) and "seconds" not in k}
    return {"stage": name, **scalars, "config": options, "baseline": metrics.get("baseline"),
            **({"budget": metrics["budget"]} if "budget" in metrics else {})}


def output_format(requested: str, meta: dict, technique: registry.Technique, echo) -> str:
    """``requested``, or for ``"auto"`` the input's format: Keras 3 in, Keras 3 out, where Keras 3 can hold it."""
    if requested not in SAVE_FORMATS:
        raise ConfigError(f"unknown save format {requested!r}; use one of {', '.join(SAVE_FORMATS)}")
    if requested != "auto":
        return requested
    if not meta.get("import", {}).get("keras_version", "").startswith("3"):
        return "keras"
    if technique.keeps_wrappers:
        _warn(echo, f"{technique.name}: the result stays a tf_keras file (tfmot's wrappers have no Keras 3 form); "
                    "its deployable form is the .tflite of `kerascomp convert`")
        return "keras"
    return "keras3"


def _save(model, out, side: dict, meta: dict, data: Dataset, fmt: str, *, fallback: bool, echo) -> None:
    """Write ``model`` as ``fmt``; a Keras 3 file that Keras 3 cannot hold (e.g. kerascomp's own swap blocks)
    becomes a tf_keras file where the format was only the input's (``fallback``), with a warning."""
    if fmt == "keras3":
        try:
            save_keras3(model, out, output_activation=meta.get("import", {}).get("output_activation", "logits"),
                        sample=data.x_val)
            write_json(sidecar_path(out), side)
            return
        except ModelError as exc:
            if not fallback:
                raise
            _warn(echo, f"the result cannot be a Keras 3 file ({exc}); wrote a tf_keras file")
    save_model(model, out, meta=side)


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
