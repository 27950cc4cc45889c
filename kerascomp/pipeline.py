"""Run a config's stages in order, resumably, and write the report.

Each stage is the library function its CLI command calls (see
:mod:`kerascomp._stages`); this module only orders them, records what each
produced, and skips on ``resume`` every stage whose inputs (options, data bytes, the files it
reads, the stage before it; see :mod:`kerascomp._fingerprint`) are unchanged and
whose outputs exist; a stage that runs again says which input changed.
State is written atomically after every stage, so a killed run resumes from
the last finished stage and never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from kerascomp import __version__
from kerascomp._io import write_json
from kerascomp._fingerprint import changes, data_digest, key, stage_inputs
from kerascomp._stages import Context, StageResult, handler, reads
from kerascomp.config import PipelineConfig, StageSpec, TeacherSpec
from kerascomp.errors import ConfigError

__all__ = ["run_pipeline", "validate", "STATE_FILE"]

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


def run_pipeline(config: PipelineConfig, out: str | os.PathLike, *, resume: bool = False, verbose: int = 1) -> dict:
    """Run ``config`` into ``out`` and return the report document (also written as ``report.json``)."""
    from kerascomp.data import load_data
    from kerascomp._pipeline_report import write_pipeline_report

    validate(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = _read_state(out) if resume else {}
    spec = config.data
    data = load_data(spec.spec, val_fraction=spec.val_fraction, seed=config.seed, image_size=spec.image_size,
                     color_mode=spec.color_mode)
    ctx = Context(out=out, data=data, seed=config.seed, verbose=verbose)
    described = {"content": data_digest(spec.spec), **data.describe()}
    done = {}
    for stage in (_teacher_stage(config.teacher), *config.stages):
        inputs = stage_inputs(stage.kind, stage.options, seed=config.seed, data=described,
                              reads=reads(stage, ctx), before=ctx.last_fingerprint)
        fingerprint = key(inputs)
        previous = state.get(stage.name)
        if previous and previous["fingerprint"] == fingerprint and all((out / p).exists() for p in previous["outputs"]):
            click.echo(f"[{stage.name}] unchanged, skipped (--resume)")
            result = StageResult.from_dict(previous)
        else:
            why = f" ({changes(previous.get('inputs'), inputs)})" if previous else ""
            click.echo(f"[{stage.name}] {stage.kind} ...{why}")
            start = time.perf_counter()
            result = handler(stage.kind).run(stage, ctx)
            result.seconds = time.perf_counter() - start
            result.fingerprint = fingerprint
            click.echo(f"[{stage.name}] done in {result.seconds:.1f} s")
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
    return {
        "kerascomp_version": __version__,
        "config": config.raw,
        "dataset": ctx.data.describe(),
        "machine": ctx.bench.get("machine"),
        "stages": [{"name": name, **{k: v for k, v in stage.items() if k not in ("fingerprint", "inputs")}}
                   for name, stage in done.items()],
        "results": results,
        "summary": _summary(config, results),
        "final": ctx.final_details(config.final),
    }


def _summary(config: PipelineConfig, results: list[dict]) -> dict:
    """Baseline vs final as ratios: how much smaller and faster, at what accuracy cost."""
    rows = {r["name"]: r for r in results if r.get("threads", 1) == results[0]["threads"]} if results else {}
    summary = {"baseline": config.baseline, "final": config.final}
    base, final = rows.get(config.baseline), rows.get(config.final)
    if base and final:
        summary.update(
            gzip_ratio=base["gzip_bytes"] / final["gzip_bytes"],
            size_ratio=base["size_bytes"] / final["size_bytes"],
            accuracy_drop_pp=100 * (base["accuracy"] - final["accuracy"]),
            latency_ratio=base["latency_ms"]["p50"] / final["latency_ms"]["p50"],
            params_ratio=base["params"] / max(final["params"], 1),
        )
    return summary
