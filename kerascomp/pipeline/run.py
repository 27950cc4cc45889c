"""Run a config's stages in order, resumably, and write the report.

Each stage is the library function its CLI command calls (see
:mod:`kerascomp.pipeline.stages`); this module only orders them, records what each
produced, and skips on ``resume`` every stage whose inputs (options, data bytes, the files it
reads, the stage before it; see :mod:`kerascomp.pipeline.fingerprint`) are unchanged and
whose outputs exist; a stage that runs again says which input changed.
State is written atomically after every stage, so a killed run resumes from
the last finished stage and never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from kerascomp import __version__
from kerascomp.budget import OBJECTIVES, choose_within, metric_of, tie_words
from kerascomp.console import echo
from kerascomp.data import load_data
from kerascomp.errors import ConfigError, Interrupted
from kerascomp.tasks import CLASSIFICATION, Task
from kerascomp.files import one_writer, write_json
from kerascomp.pipeline.config import PipelineConfig, StageSpec, TeacherSpec, load_config
from kerascomp.pipeline.fingerprint import changes, data_digest, key, stage_inputs
from kerascomp.pipeline.report import write_pipeline_report
from kerascomp.pipeline.stages import Context, StageResult, handler, reads

__all__ = ["run_pipeline", "validate", "choose", "STATE_FILE"]

STATE_FILE = "state.json"


def validate(config: PipelineConfig) -> None:
    """Check every stage's options and references before anything trains."""
    models, artifacts = [], []
    for stage in (_teacher_stage(config.teacher), *config.stages):
        produced = handler(stage.kind).check(stage, models, artifacts)
        models += produced.get("models", [])
        artifacts += produced.get("artifacts", [])
    for role, name in (("baseline", config.baseline), ("final", config.final)):
        if name and name not in artifacts + models:
            raise ConfigError(f"summary.{role}: {name!r} is not produced by any stage "
                              f"(artifacts: {', '.join(artifacts) or 'none'})")


def run_pipeline(config: PipelineConfig | str | os.PathLike, out: str | os.PathLike, *, overrides: tuple[str, ...] = (),
                 resume: bool = False, verbose: int = 1) -> dict:
    """Run ``config`` (a loaded config, or a YAML file with ``KEY.PATH=VALUE`` ``overrides``) into ``out`` and
    return the report document (also written as ``report.json``): ``kerascomp run`` in Python."""
    if not isinstance(config, PipelineConfig):
        config = load_config(config, tuple(overrides))
    validate(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with one_writer(out):
        try:
            return _run(config, out, resume, verbose)
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM through the CLI: say what is kept and how to go on
            finished = ", ".join(_read_state(out)) or "none"
            raise Interrupted(f"{str(stop) or 'interrupted'}; finished stages kept in {out / STATE_FILE}: {finished}; "
                              "run it again with --resume to go on from there") from None


def _run(config: PipelineConfig, out: Path, resume: bool, verbose: int) -> dict:
    """The stages in order, each skipped on ``resume`` when its inputs are unchanged; then the report."""
    state = _read_state(out) if resume else {}
    spec = config.data
    data = load_data(spec.spec, val_fraction=spec.val_fraction, seed=config.seed, image_size=spec.image_size,
                     color_mode=spec.color_mode, task=spec.task)
    ctx = Context(out=out, data=data, seed=config.seed, verbose=verbose)
    described = {"content": data_digest(spec.spec), **data.describe()}
    done = {}
    for stage in (_teacher_stage(config.teacher), *config.stages):
        inputs = stage_inputs(stage.kind, stage.options, seed=config.seed, data=described,
                              reads=reads(stage, ctx), before=ctx.last_fingerprint)
        fingerprint = key(inputs)
        previous = state.get(stage.name)
        if previous and previous["fingerprint"] == fingerprint and all((out / p).exists() for p in previous["outputs"]):
            echo(f"[{stage.name}] unchanged, skipped (--resume)")
            result = StageResult.from_dict(previous)
        else:
            why = f" ({changes(previous.get('inputs'), inputs)})" if previous else ""
            echo(f"[{stage.name}] {stage.kind} ...{why}")
            start = time.perf_counter()
            result = handler(stage.kind).run(stage, ctx)
            result.seconds = time.perf_counter() - start
            result.fingerprint = fingerprint
            echo(f"[{stage.name}] done in {result.seconds:.1f} s")
        ctx.record(stage, result)
        done[stage.name] = {"kind": stage.kind, **result.to_dict(), "inputs": inputs}
        write_json(out / STATE_FILE, {**state, **done})
    document = _document(config, ctx, done)
    write_pipeline_report(document, out)
    return document


def _teacher_stage(teacher: TeacherSpec) -> StageSpec:
    """The teacher is the first stage: a zoo model trained with its options, or a file loaded as is."""
    if teacher.path is not None:
        return StageSpec("load", "teacher", {"path": teacher.path}, "teacher")
    return StageSpec("train", "teacher", {"model": teacher.model, "args": teacher.args, **teacher.train}, "teacher")


def _read_state(out: Path) -> dict:
    path = out / STATE_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def _document(config: PipelineConfig, ctx: Context, done: dict) -> dict:
    results = ctx.bench.get("results", [])
    task = ctx.data.task
    choice = (choose(results, config.baseline, config.max_drop, config.objective, task) if config.max_drop is not None
              else None)
    if choice is not None:
        echo(choice["message"])
    final = config.final or (choice or {}).get("chosen") or ""
    return {
        "kerascomp_version": __version__,
        "config": config.raw,
        "dataset": ctx.data.describe(),
        "machine": ctx.bench.get("machine"),
        "stages": [{"name": name, **{k: v for k, v in stage.items() if k not in ("fingerprint", "inputs")}}
                   for name, stage in done.items()],
        "results": results,
        "summary": _summary(config.baseline, final, results, task),
        "choice": choice,
        "final": ctx.final_details(final),
    }


def choose(results: list[dict], baseline: str, max_drop: float, objective: str, task: Task = CLASSIFICATION) -> dict:
    """The artifact that best meets ``objective`` (see :data:`kerascomp.budget.OBJECTIVES`) among those whose
    *validation* metric (the task's), measured on the deployed file, is within ``max_drop`` of the baseline's
    (the baseline itself is not a candidate: shipping it is what "nothing meets the budget" means).

    The test split decides nothing here; the chosen artifact's test metric is reported once, after.
    """
    rows = _first_threads(results)
    base, key = rows.get(baseline), task.keys[0]
    if base is None or base.get(key) is None:
        raise ConfigError(f"budget: the baseline {baseline!r} has no validation {task.metric} to measure drops against")
    choice = choose_within({n: r for n, r in rows.items() if n != baseline}, base[key], max_drop, objective, task)
    chosen, candidates = choice["chosen"], choice["candidates"]
    best = next((c for c in candidates if c["name"] == chosen), None)
    measure = OBJECTIVES[objective].words
    if chosen is None:
        message = (f"Nothing meets the budget: every compressed artifact loses more than {task.budget(max_drop)} of "
                   f"validation {task.metric} below {baseline}.")
    else:
        row = rows[chosen]
        message = (f"Within the {task.budget(max_drop)} budget, the {measure} artifact is {chosen}: "
                   f"{row['gzip_bytes']:,} bytes gzip, p50 {row['latency_ms']['p50']:.3f} ms, validation drop "
                   f"{task.amount(best['val_drop'])}, test {task.metric} {task.number(metric_of(row))}"
                   f"{tie_words(choice)}.")
    return {"objective": objective, "max_drop": max_drop, "metric": task.metric, "baseline": baseline,
            "chosen": chosen, "path": rows[chosen]["path"] if chosen else None, "candidates": candidates,
            "message": message, **({"max_drop_pp": max_drop} if task == CLASSIFICATION else {})}


def _first_threads(results: list[dict]) -> dict[str, dict]:
    """The rows measured at the first thread count, by artifact name."""
    return {r["name"]: r for r in results if r.get("threads", 1) == results[0]["threads"]} if results else {}


def _summary(baseline: str, final: str, results: list[dict], task: Task = CLASSIFICATION) -> dict:
    """Baseline vs final as ratios: how much smaller and faster, at what cost in the task's test metric
    (``metric_drop``; a classifier's also as ``accuracy_drop_pp``, the contract's name)."""
    rows = _first_threads(results)
    summary = {"baseline": baseline, "final": final}
    base, final = rows.get(baseline), rows.get(final)
    if base and final:
        drop = task.drop(metric_of(base), metric_of(final))
        summary.update(
            gzip_ratio=base["gzip_bytes"] / final["gzip_bytes"],
            size_ratio=base["size_bytes"] / final["size_bytes"],
            metric=task.metric, metric_drop=drop,
            accuracy_drop_pp=drop if task == CLASSIFICATION else None,
            latency_ratio=base["latency_ms"]["p50"] / final["latency_ms"]["p50"],
            params_ratio=base["params"] / max(final["params"], 1),
            path=final["path"],
        )
    return summary
