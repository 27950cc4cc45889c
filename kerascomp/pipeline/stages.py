"""The pipeline's stages: each checks its options up front and then calls the library function.

A handler's ``check`` validates options against the library's own config
class (so config errors name the YAML path) and says which models and
artifacts the stage will produce; ``run`` calls the same function the CLI
command calls. Adding a stage kind is one handler here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from kerascomp import models as zoo
from kerascomp.bench import bench, deployed_outputs
from kerascomp.bench.auto import convert_auto
from kerascomp.compress import registry
from kerascomp.console import echo
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError, KerascompError
from kerascomp.export import FORMATS, export
from kerascomp.export.modes import BACKENDS, DEFAULT_BACKEND, MODES_BY_LABEL
from kerascomp.files import scaling_of
from kerascomp.pipeline.config import StageSpec, build_dataclass, check_keys
from kerascomp.pipeline.runner import compress_file
from kerascomp.report import scored
from kerascomp.saving import load_meta, load_model, load_with_data, save_model
from kerascomp.training import TrainConfig, evaluate, train
from kerascomp.training.distillation import FROM_INPUT, NO_TEACHER

__all__ = ["HANDLERS", "Context", "StageResult", "handler", "reads"]



@dataclasses.dataclass
class StageResult:
    """What a stage produced, as paths relative to the run folder."""

    model: str | None = None
    artifacts: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    fingerprint: str = ""

    @property
    def outputs(self) -> list[str]:
        return ([self.model] if self.model else []) + list(self.artifacts.values())

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "outputs": self.outputs}

    @classmethod
    def from_dict(cls, raw: dict) -> "StageResult":
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class Context:
    """The run so far: the data, every model and artifact by name, and the bench document."""

    out: Path
    data: Dataset
    seed: int = 0
    verbose: int = 1
    models: dict = dataclasses.field(default_factory=dict)
    artifacts: dict = dataclasses.field(default_factory=dict)
    bench: dict = dataclasses.field(default_factory=dict)
    sources: dict = dataclasses.field(default_factory=dict)  # artifact -> model it was converted from
    last_fingerprint: str = ""

    def record(self, stage: StageSpec, result: StageResult) -> None:
        if "input_scaling" in result.metrics:  # a loaded model that scales raw pixels itself
            self.data = self.data.with_scaling(result.metrics["input_scaling"])
        if result.model:
            self.models[stage.name] = result.model
        self.artifacts.update(result.artifacts)
        if stage.kind == "convert":
            self.sources.update({name: m["model"] for name, m in result.metrics.items()})
        if stage.kind == "bench":
            self.bench = result.metrics
        self.last_fingerprint = result.fingerprint

    def path(self, relative: str) -> Path:
        return self.out / relative

    def model_path(self, name: str | None) -> Path:
        """The named model, or the latest one."""
        return self.path(self.models[name] if name else list(self.models.values())[-1])

    def final_details(self, final: str) -> dict:
        """The final artifact scored as ``bench`` scores it: see :func:`kerascomp.report.scored` (for several outputs, each one's
        under ``outputs``)."""
        if final not in self.artifacts:
            return {}
        outputs, data = deployed_outputs(self.path(self.artifacts[final]), self.data), self.data
        if data.task.heads:
            details = {"name": final, "outputs": {head: scored(data.head(head), outputs[head])
                                                  for head in data.task.head_tasks}}
        else:
            details = {"name": final, **scored(data, outputs)}
        source = self.sources.get(final)
        if source:
            details["layer_sparsity"] = layer_sparsity(self.model_path(source))
        return details


def layer_sparsity(path: Path) -> dict:
    """Share of exactly-zero weights in each layer's kernel, read from the saved model."""
    sparsity = {}
    for layer in load_model(path).layers:
        kernels = [w.numpy() for w in layer.weights if "kernel" in w.name and w.shape.rank and w.shape.rank > 1]
        if kernels:
            sparsity[layer.name] = float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels))
    return sparsity


def reads(stage: StageSpec, ctx: Context) -> dict[str, Path]:
    """The files a stage depends on: the user's model for ``load``, else everything the run produced so far.

    Depending on every earlier output rather than only the ones a stage opens
    costs nothing extra: an earlier output changes only when its stage re-ran,
    which re-runs everything after it anyway.
    """
    if stage.kind == "load":
        return {stage.options["path"]: Path(stage.options["path"])}
    return {relative: ctx.path(relative) for relative in (*ctx.models.values(), *ctx.artifacts.values())}


@dataclasses.dataclass(frozen=True)
class Handler:
    check: Callable[[StageSpec, list, list], dict]
    run: Callable[[StageSpec, Context], StageResult]


def _split(options: dict, own: set[str]) -> tuple[dict, dict]:
    """Stage-level options (``own``) apart from those handed to the library config."""
    return {k: v for k, v in options.items() if k in own}, {k: v for k, v in options.items() if k not in own}


def _train_config(options: dict, ctx_seed: int, verbose: int, where: str):
    config = build_dataclass(TrainConfig, options, where)
    return dataclasses.replace(config, seed=options.get("seed", ctx_seed), verbose=verbose)


def _save(model, ctx: Context, name: str, meta: dict) -> str:
    relative = f"models/{name}.keras"
    save_model(model, ctx.path(relative), meta={"data": ctx.data.describe(), **meta})
    return relative


# --- train / load -------------------------------------------------------------------------------------------------

def _check_train(stage: StageSpec, models: list, artifacts: list) -> dict:
    own, rest = _split(stage.options, {"model", "args"})
    if "model" not in own:
        raise ConfigError(f"{stage.where}: 'model' (a zoo name) is required")
    try:
        zoo.check_args(own["model"], own.get("args") or {})
    except KerascompError as exc:
        raise ConfigError(f"{stage.where}: {exc}") from None
    _train_config(rest, 0, 0, stage.where)
    return {"models": [stage.name]}


def _run_train(stage: StageSpec, ctx: Context) -> StageResult:
    own, rest = _split(stage.options, {"model", "args"})
    config = _train_config(rest, ctx.seed, ctx.verbose, stage.where)
    model, metrics = train(own["model"], ctx.data, config, model_args=own.get("args") or {})
    info = {"name": own["model"], "args": own.get("args") or {}}
    return StageResult(model=_save(model, ctx, stage.name, {"model": info}), metrics={"model": info, **metrics})


def _check_load(stage: StageSpec, models: list, artifacts: list) -> dict:
    if not Path(stage.options["path"]).is_file():
        raise ConfigError(f"{stage.where}.path: model file {stage.options['path']} not found")
    return {"models": [stage.name]}


def _run_load(stage: StageSpec, ctx: Context) -> StageResult:
    """Copy the user's model (any format, e.g. Keras 3) into the run as tf_keras, and measure it.

    A model that scales raw pixels itself records ``input_scaling``; the run
    then feeds every later stage raw pixels (see :meth:`Context.record`).
    """
    path = stage.options["path"]
    model, meta, data = load_with_data(path, ctx.data)
    data.check_model(model, what=str(path))  # one line, not a fit's traceback
    scaling = scaling_of(meta)
    metrics = {**evaluate(model, data), "params": int(model.count_params())}
    if scaling:
        metrics["input_scaling"] = scaling
    return StageResult(model=_save(model, ctx, stage.name, {"source": str(path), **meta, "data": data.describe()}),
                       metrics=metrics)


# --- every registered technique: a model in, a compressed model out ---------------------------------------------------

def _technique_parts(stage: StageSpec, models: list, seed: int = 0, verbose: int = 0):
    """The technique, its validated config, the input model's name and the teacher's (or None)."""
    technique = registry.get(stage.kind)
    own, rest = _split(stage.options, {technique.input_key, "distill_from"})
    if own.get("distill_from") in (FROM_INPUT, NO_TEACHER):  # not model names: the config's own values
        rest["distill_from"] = own.pop("distill_from")
    for key in own:
        if own[key] not in models:
            raise ConfigError(f"{stage.where}.{key}: no model named {own[key]!r} before this stage "
                              f"(models: {', '.join(models)})")
    if "distill_from" in own and not technique.teacher:
        raise ConfigError(f"{stage.where}.distill_from: {stage.kind} fine-tunes with no separate teacher")
    config = build_dataclass(technique.config, {"seed": seed, "verbose": verbose, **rest}, stage.where)
    default = "teacher" if technique.input_key == "teacher" else models[-1]  # a teacher stage starts from the teacher
    return config, own.get(technique.input_key, default), own.get("distill_from")


def _check_technique(stage: StageSpec, models: list, artifacts: list) -> dict:
    _technique_parts(stage, models)
    return {"models": [stage.name]}


def _run_technique(stage: StageSpec, ctx: Context) -> StageResult:
    config, source, teacher = _technique_parts(stage, list(ctx.models), ctx.seed, ctx.verbose)
    if teacher:
        config = dataclasses.replace(config, distill_from=str(ctx.model_path(teacher)))
    relative = f"models/{stage.name}.keras"
    metrics = compress_file(stage.kind, ctx.model_path(source), ctx.data, config, ctx.path(relative),
                            extra_meta={"source_stage": source}, echo=echo if ctx.verbose else None,
                            save_format="keras",  # the run's own models: tf_keras, read by the next stage as is
                            strict=False)  # over the budget is the final choice's to weigh
    tuned = metrics.get("fine_tune") or {}  # lifted so every stage's curves and epoch times read alike
    metrics = {"history": tuned.get("history"), "seconds_per_epoch": tuned.get("seconds_per_epoch"), **metrics}
    return StageResult(model=relative, metrics=metrics)


# --- convert / bench ----------------------------------------------------------------------------------------------

SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}


def _conversions(stage: StageSpec, models: list) -> list[tuple[str, str, str, str]]:
    """(model, mode, format, artifact name) for every conversion the stage asks for.

    A ``.tflite`` artifact is named ``<model>_<mode>``, an ``.onnx`` one
    ``<model>_onnx_<mode>``: names are the bench rows' and must not collide.
    """
    own, rest = _split(stage.options, {"models", "quantize", "formats", "int8_io", "calibration_size", "batch_size",
                                       "backend", "keep_float", *AUTO_KEYS})
    check_keys(rest, set(), stage.where)
    names = own.get("models") or ["teacher", models[-1]]
    modes = own.get("quantize") or ["fp32"]
    formats = own.get("formats") or ["tflite"]
    for name in names:
        if name not in models:
            raise ConfigError(f"{stage.where}.models: no model named {name!r} before this stage "
                              f"(models: {', '.join(models)})")
    for fmt in formats:
        if fmt not in SUFFIXES:
            raise ConfigError(f"{stage.where}.formats: unknown format {fmt!r}; use {', '.join(SUFFIXES)}")
    if own.get("backend", DEFAULT_BACKEND) not in BACKENDS:
        raise ConfigError(f"{stage.where}.backend: use one of {', '.join(BACKENDS)}, got {own['backend']!r}")
    if "auto" in modes and formats != ["tflite"]:
        raise ConfigError(f"{stage.where}.quantize: auto measures LiteRT files: use it with formats [tflite]")
    for mode in (m for m in modes if m != "auto"):
        if mode not in MODES_BY_LABEL:
            raise ConfigError(f"{stage.where}.quantize: unknown mode {mode!r}; use {', '.join(MODES_BY_LABEL)} or auto")
        for fmt in formats:
            if MODES_BY_LABEL[mode] not in FORMATS[SUFFIXES[fmt]]:
                supported = [m for m, q in MODES_BY_LABEL.items() if q in FORMATS[SUFFIXES[fmt]]]
                raise ConfigError(f"{stage.where}.quantize: {fmt} supports {', '.join(supported)}, not {mode!r}")
    return [(name, mode, fmt, f"{name}_{mode}" if fmt == "tflite" else f"{name}_{fmt}_{mode}")
            for name in dict.fromkeys(names) for fmt in formats for mode in modes]


def _check_convert(stage: StageSpec, models: list, artifacts: list) -> dict:
    return {"artifacts": [artifact for *_, artifact in _conversions(stage, models)]}


def _run_convert(stage: StageSpec, ctx: Context) -> StageResult:
    result = StageResult()
    for name, mode, fmt, artifact in _conversions(stage, list(ctx.models)):
        source = ctx.model_path(name)
        relative = f"{fmt}_models/{artifact}{SUFFIXES[fmt]}"
        if mode == "auto":
            metrics = _convert_auto(stage, ctx, source, ctx.path(relative), name)
        else:
            report = export(load_model(source), ctx.path(relative), quantize=MODES_BY_LABEL[mode], data=ctx.data,
                            meta=load_meta(source), source=source,
                            int8_io=bool(stage.options.get("int8_io")) and mode == "int8" and fmt == "tflite",
                            calibration_size=stage.options.get("calibration_size", 500),
                            batch_size=stage.options.get("batch_size") if fmt == "tflite" else None,
                            **_backend_options(stage.options, fmt))
            metrics = {"model": name, "size_bytes": report["size_bytes"], "verification": report["verification"]}
        result.artifacts[artifact] = relative
        result.metrics[artifact] = metrics
    return result


def _backend_options(options: dict, fmt: str) -> dict:
    """``backend`` and ``keep_float`` as given (``.tflite`` only); unset ones keep the exporter's defaults."""
    return {key: options[key] for key in ("backend", "keep_float") if key in options} if fmt == "tflite" else {}


AUTO_KEYS = ("max_drop", "objective", "threads")  # quantize: [auto]; the budget fills max_drop; unset: convert_auto's


def _convert_auto(stage: StageSpec, ctx: Context, source: Path, out: Path, name: str) -> dict:
    """``quantize: [auto]``: every LiteRT mode measured here; the best within the budget is the artifact."""
    options = {key: stage.options[key] for key in AUTO_KEYS if key in stage.options}
    result = convert_auto(load_model(source), out, data=ctx.data, meta=load_meta(source), source=source, **options,
                          calibration_size=stage.options.get("calibration_size", 500),
                          batch_size=stage.options.get("batch_size"), echo=echo if ctx.verbose else None,
                          strict=False)
    return {"model": name, "size_bytes": out.stat().st_size,
            "auto": {k: result[k] for k in ("chosen", "met", "candidates", "skipped", "objective", "max_drop")}}


_BENCH_KEYS = {"threads", "runs", "warmup", "op_resolver", "keras"}


def _check_bench(stage: StageSpec, models: list, artifacts: list) -> dict:
    check_keys(stage.options, _BENCH_KEYS, stage.where)
    if not artifacts and not stage.options.get("keras"):
        raise ConfigError(f"{stage.where}: nothing to benchmark; put a convert stage before it")
    return {}


def _run_bench(stage: StageSpec, ctx: Context) -> StageResult:
    options = stage.options
    paths = [ctx.path(p) for p in ctx.artifacts.values()]
    if options.get("keras"):
        paths = [ctx.path(p) for p in ctx.models.values()] + paths
    threads = options.get("threads", [1])
    document = bench(paths, ctx.data, threads=threads if isinstance(threads, list) else [threads],
                     runs=options.get("runs", 200), warmup=options.get("warmup", 20),
                     op_resolver=options.get("op_resolver", "auto"))
    for row in document["results"]:
        row["path"] = str(Path(row["path"]).resolve().relative_to(ctx.out.resolve()))
    return StageResult(metrics=document)


HANDLERS: dict[str, Handler] = {
    "load": Handler(_check_load, _run_load),
    "train": Handler(_check_train, _run_train),
    "convert": Handler(_check_convert, _run_convert),
    "bench": Handler(_check_bench, _run_bench),
}


def handler(kind: str) -> Handler:
    """The handler of a stage kind: a fixed one above, or the shared one of every registered technique."""
    return HANDLERS.get(kind) or Handler(_check_technique, _run_technique)
