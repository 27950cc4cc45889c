"""Distillation sweeps: a grid over temperature, alpha and student size, resumable.

The question a sweep answers is "how much smaller can the student be?": every
grid point distils one student, and every student architecture is also trained
once from scratch with the same budget, so the table and plot show distilled
and scratch accuracy side by side as the student shrinks. The state file is
rewritten atomically after every point; running the same sweep again skips
the points already there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Callable, Mapping

from kerascomp import __version__, models
from kerascomp.analysis._sweep_ray import SCHEDULERS, TRIAL_RETRIES, run_trials
from kerascomp.backend import keras
from kerascomp.compress.distill import default_budget, gap_closed, summarise
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError, Interrupted
from kerascomp.tasks import classifiers_only
from kerascomp.files import write_json
from kerascomp.training import TrainConfig, evaluate, train
from kerascomp.training.distillation import DistillConfig, check_compatible

__all__ = ["sweep", "parse_grid", "with_samples", "sweep_table", "BACKENDS", "SCHEDULERS", "TRIAL_RETRIES"]

BACKENDS = ("local", "ray")
STUDENT_PREFIX = "student."
DISTILL_KEYS = ("temperature", "alpha", "augment", "hint_weight")
SEED = "seed"  # a grid key too: repeats every run (and its scratch twin) with another seed


def parse_grid(grid: Mapping[str, object]) -> dict[str, tuple]:
    """Check grid keys (``temperature``, ``alpha``, ``augment``, ``hint_weight``, ``seed``, ``student.<arg>``);
    values become tuples."""
    parsed = {}
    for key, values in grid.items():
        if key not in (*DISTILL_KEYS, SEED) and not (key.startswith(STUDENT_PREFIX) and len(key) > len(STUDENT_PREFIX)):
            raise ConfigError(f"unknown grid key {key!r}; use {', '.join(DISTILL_KEYS)}, {SEED} or "
                              "student.<model argument>")
        values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        if not values:
            raise ConfigError(f"grid key {key!r} has no values")
        parsed[key] = values
    return parsed


def with_samples(grid: Mapping[str, tuple], num_samples: int, seed: int) -> dict[str, tuple]:
    """``grid`` with every point repeated ``num_samples`` times, with seeds ``seed``, ``seed + 1``, ...

    Ray Tune's ``num_samples`` repeats a grid with the same configuration; our
    runs are deterministic per seed, so a repeat only measures something with a
    seed of its own. The repeats are the ``seed`` grid key, on either backend.
    """
    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
    if num_samples == 1:
        return dict(grid)
    if SEED in grid:
        raise ConfigError(f"num_samples={num_samples} sets the seeds itself; drop the '{SEED}' grid key or num_samples")
    return {**grid, SEED: tuple(range(seed, seed + num_samples))}


def sweep(teacher: keras.Model, data: Dataset, grid: Mapping[str, object], state_path: str | os.PathLike, *,
          student: str = "cnn", student_args: dict | None = None, train_config: TrainConfig | None = None,
          distill: DistillConfig | None = None, compare_scratch: bool = True,
          progress: Callable[[str], None] | None = None, backend: str = "local", ray: dict | None = None) -> dict:
    """Distil ``teacher`` into ``student`` at every grid point; state (and results) go to ``state_path``.

    Every point is validated before the first run, so a bad value fails at
    once. The teacher's outputs are computed once and shared by every run.
    ``backend="ray"`` runs the points as Ray Tune trials (``ray``: the options
    of :func:`kerascomp.analysis._sweep_ray.run_trials`: ``address``,
    ``scheduler``, ``cpus_per_trial``, ``gpus_per_trial``, ``retries``). Returns the state:
    settings, ``teacher_accuracy``, ``scratch`` results per student
    architecture and ``points`` (one dict per grid point with
    ``student_accuracy``, ``scratch_accuracy``, ``gap_closed``,
    ``student_params``), and ``stopped``: points a scheduler ended early.
    Repeats with seeds of their own: :func:`with_samples`.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: use one of {', '.join(BACKENDS)}, got {backend!r}")
    grid = parse_grid(grid)
    classifiers_only(data.task, "sweep")
    train_config, distill = train_config or default_budget(), distill or DistillConfig()
    runs = [_point(dict(zip(grid, values)), student, student_args or {}, distill)
            for values in itertools.product(*grid.values())]
    for _, args, _ in runs:
        check_compatible(teacher, models.build(student, data.input_shape, data.num_outputs, **args), data)
    settings = {"kerascomp_version": __version__, "student": student, "student_args": student_args or {},
                "data": data.describe(), "train": dataclasses.asdict(train_config),
                "distill": dataclasses.asdict(distill), "teacher_params": int(teacher.count_params()),
                "teacher_sha1": _fingerprint(teacher)}
    state = _resume(Path(state_path), settings) or {**settings, "grid": {}, "scratch": {}, "points": []}
    state["grid"] = {k: sorted({*state["grid"].get(k, ()), *v}, key=lambda v: (isinstance(v, str), v))
                     for k, v in {**state["grid"], **grid}.items()}
    state["teacher_accuracy"] = evaluate(teacher, data, train_config.batch_size)["test_accuracy"]
    done = {p["key"] for p in state["points"]}
    todo = [run for run in runs if _key(run[0]) not in done]
    from kerascomp.training.distiller import teacher_cache  # the Keras side, imported with TensorFlow

    cache = teacher_cache(teacher, data, distill, train_config.batch_size) if todo else None
    try:
        if backend == "local":
            _run_local(todo, len(runs), state, state_path, teacher, data, student, train_config, cache,
                       compare_scratch, progress)
        else:
            _run_ray(todo, state, state_path, teacher, data, student, train_config, cache, compare_scratch, progress,
                     ray or {})
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through the CLI: the finished points are in the state already
        raise Interrupted(f"sweep stopped: {len(state['points'])} of {len(runs)} points finished, kept in "
                          f"{state_path}; the same sweep goes on from there") from None
    write_json(state_path, state)
    return state


def _run_local(todo, total, state, state_path, teacher, data, student, train_config, cache, compare_scratch,
               progress) -> None:
    """One run after another in this process; the state is written after every point."""
    for number, (point, args, config) in enumerate(todo, total - len(todo) + 1):
        if progress:
            progress(f"[{number}/{total}] {_key(point)}")
        budget = _budget(train_config, point)
        scratch = state["scratch"].get(_scratch_key(point, args))
        if compare_scratch and scratch is None:
            _, metrics = train(student, data, budget, model_args=args)
            scratch = state["scratch"][_scratch_key(point, args)] = summarise(metrics)
        _, metrics = train(student, data, budget, model_args=args, teacher=teacher, distill=config,
                           teacher_outputs=cache if config.use_cache else None)
        state["points"].append(_result(point, args, config, summarise(metrics), scratch, state["teacher_accuracy"]))
        write_json(state_path, state)


def _run_ray(todo, state, state_path, teacher, data, student, train_config, cache, compare_scratch, progress,
             options: dict) -> None:
    """Every point (and every missing scratch twin) as a Ray Tune trial; the experiment lives beside the state."""
    def spec(kind: str, key: str, point: dict, args: dict, **more) -> dict:
        return {"kind": kind, "key": key, "args": args, "seed": _budget(train_config, point).seed, **more}

    scratch = {} if not compare_scratch else {
        _scratch_key(point, args): spec("scratch", _scratch_key(point, args), point, args)
        for point, args, _ in todo if _scratch_key(point, args) not in state["scratch"]}
    specs = [*scratch.values(), *(spec("distill", _key(point), point, args, distill=dataclasses.asdict(config))
                                  for point, args, config in todo)]
    outcome = run_trials(specs, teacher=teacher, data=data, student=student, train_config=train_config, cache=cache,
                         storage=Path(state_path).parent / "ray", progress=progress, **options) if specs else {}
    state.setdefault("stopped", [])
    for key in scratch:
        if "stopped" not in outcome[key]:
            state["scratch"][key] = outcome[key]
    for point, args, config in todo:
        result = outcome[_key(point)]
        if "stopped" in result:
            state["stopped"].append({"key": _key(point), **point, **result["stopped"]})
        else:
            state["points"].append(_result(point, args, config, result,
                                           state["scratch"].get(_scratch_key(point, args)), state["teacher_accuracy"]))


def _result(point: dict, args: dict, config: DistillConfig, distilled: dict, scratch: dict | None,
            teacher_accuracy: float) -> dict:
    """One finished grid point as stored and tabled."""
    return {"key": _key(point), **point, "temperature": config.temperature, "alpha": config.alpha,
            "student_args": args, "student_params": distilled["params"], "student_accuracy": distilled["accuracy"],
            "scratch_accuracy": scratch and scratch["accuracy"], "student_val_accuracy": distilled["val_accuracy"],
            "scratch_val_accuracy": scratch and scratch.get("val_accuracy"),
            "gap_closed": scratch and gap_closed(teacher_accuracy, distilled["accuracy"], scratch["accuracy"]),
            "seconds_per_epoch": distilled["seconds_per_epoch"], "epochs": distilled["epochs"]}


def sweep_table(state: dict) -> str:
    """Markdown: one row per grid point, best distilled accuracy first."""
    keys = list(state["grid"])
    columns = [*keys, "student params", "distilled", "scratch", "gap closed", "s/epoch"]
    lines = [f"Teacher: {state['teacher_params']:,} params, test accuracy {state['teacher_accuracy']:.4f}.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for p in sorted(state["points"], key=lambda p: -p["student_accuracy"]):
        cells = [p.get(k, "-") for k in keys] + [f"{p['student_params']:,}", f"{p['student_accuracy']:.4f}",
                                         _fmt(p["scratch_accuracy"]), _fmt(p["gap_closed"], ".2f"),
                                         f"{p['seconds_per_epoch']:.2f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if state.get("stopped"):
        lines += ["", "Stopped early by the scheduler: " + "; ".join(
            f"{p['key']} (validation {_fmt(p['val_accuracy'])} after epoch {p['epoch']})" for p in state["stopped"])]
    return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _point(point: dict, student: str, base_args: dict, base: DistillConfig) -> tuple[dict, dict, DistillConfig]:
    """One grid point -> (its settings, student arguments, distillation config), all validated."""
    args = {**base_args, **{k[len(STUDENT_PREFIX):]: v for k, v in point.items() if k.startswith(STUDENT_PREFIX)}}
    models.check_args(student, args)
    config = dataclasses.replace(base, **{k: v for k, v in point.items() if k in DISTILL_KEYS})
    return point, args, config


def _budget(train_config: TrainConfig, point: dict) -> TrainConfig:
    """The run's budget: the sweep's, with the point's seed when the grid has one."""
    return dataclasses.replace(train_config, seed=int(point[SEED])) if SEED in point else train_config


def _scratch_key(point: dict, args: dict) -> str:
    """Scratch twins are shared by every point with the same student (and seed)."""
    return _key({**args, **({SEED: point[SEED]} if SEED in point else {})})


def _key(settings: Mapping[str, object]) -> str:
    return ",".join(f"{k}={settings[k]}" for k in sorted(settings))


def _fingerprint(model: keras.Model) -> str:
    """A digest of the weights: resuming with another teacher of the same shape must not mix results."""
    digest = hashlib.sha1()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()


def _resume(path: Path, settings: dict) -> dict | None:
    """The earlier state at ``path`` if it was made with the same settings; ConfigError if not."""
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot resume from {path}: {exc}") from None
    earlier = json.loads(json.dumps({k: state.get(k) for k in settings if k != "kerascomp_version"}))
    now = json.loads(json.dumps({k: v for k, v in settings.items() if k != "kerascomp_version"}))
    changed = sorted(k for k in now if earlier.get(k) != now[k])
    if changed:
        raise ConfigError(f"{path} holds a sweep with different {', '.join(changed)}; use another output or delete it")
    return state
