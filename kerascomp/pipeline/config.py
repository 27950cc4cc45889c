"""Pipeline configs: YAML read with ``yaml.safe_load`` into validated objects.

A config names the data, the teacher (a zoo model to train or a ``.keras`` to
load) and an ordered list of stages. Every mistake is reported with the path
of the key that holds it (``stages[2].prune: unknown key 'sparsty'``) before
anything trains, so a typo never costs a long run.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from kerascomp.budget import DEFAULT_OBJECTIVE, OBJECTIVES
from kerascomp.compress import registry
from kerascomp.errors import ConfigError

__all__ = ["PipelineConfig", "StageSpec", "DataSpec", "TeacherSpec", "stage_kinds", "load_config", "parse_config",
           "apply_overrides", "build_dataclass", "check_keys"]



def stage_kinds() -> tuple[str, ...]:
    """Every stage kind a config may use, in chain order: train, each registered technique, convert, bench."""
    first, *last = registry.FIXED_KINDS
    return (first, *registry.techniques(), *last)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how it is split (see :func:`kerascomp.load_data`)."""

    spec: str = "digits"
    val_fraction: float = 0.1
    image_size: tuple[int, int] | None = None
    color_mode: str = "rgb"
    task: str | None = None  # classification | regression; None: inferred from an .npz's targets


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    """The starting model: ``path`` to a ``.keras`` file, or a zoo ``model`` trained with ``train`` options."""

    model: str | None = None
    args: dict = dataclasses.field(default_factory=dict)
    path: str | None = None
    train: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage: its ``kind``, a unique ``name`` and the options passed to the library."""

    kind: str
    name: str
    options: dict
    where: str  # the config path, for error messages


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline, validated."""

    data: DataSpec
    teacher: TeacherSpec
    stages: tuple[StageSpec, ...]
    baseline: str
    final: str
    seed: int = 0
    max_drop: float | None = None  # budget.max_drop_pp: validation accuracy drop allowed below the baseline
    objective: str = DEFAULT_OBJECTIVE  # what the final choice minimises within the budget
    raw: dict = dataclasses.field(default_factory=dict, compare=False)  # as written, for the report


def load_config(path: str | os.PathLike, overrides: tuple[str, ...] = ()) -> PipelineConfig:
    """Read ``path``, apply ``--set key.path=value`` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_config(apply_overrides(raw, overrides))


def apply_overrides(raw: Any, overrides: tuple[str, ...]) -> Any:
    """Set ``a.b.0.c=value`` paths in the raw mapping; values are YAML scalars or lists."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = _child(node, part, key)
        value = yaml.safe_load(text)
        if isinstance(node, list):
            node[_index(node, last, key)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parents)} is not a mapping or list")
    return raw


def parse_config(raw: Any) -> PipelineConfig:
    """Validate a raw mapping (as read from YAML) into a :class:`PipelineConfig`."""
    raw = _mapping(raw, "config")
    original = copy.deepcopy(raw)
    check_keys(raw, {"data", "teacher", "stages", "summary", "seed", "budget"}, "config")
    data = build_dataclass(DataSpec, _mapping(raw.get("data", {}), "data"), "data")
    if data.image_size is not None:
        data = dataclasses.replace(data, image_size=tuple(data.image_size))
    teacher = _teacher(_mapping(raw.get("teacher"), "teacher"))
    max_drop = _budget(_mapping(raw.get("budget", {}), "budget"))
    stages = _stages(raw.get("stages") or [], max_drop)
    summary = _mapping(raw.get("summary", {}), "summary")
    check_keys(summary, {"baseline", "final", "objective"}, "summary")
    objective = summary.get("objective", DEFAULT_OBJECTIVE)
    if objective not in OBJECTIVES:
        raise ConfigError(f"summary.objective: use one of {', '.join(OBJECTIVES)}, got {objective!r}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    return PipelineConfig(data, teacher, stages, summary.get("baseline", "teacher_fp32"),
                          summary.get("final", ""), seed, max_drop, objective, original)


def _budget(raw: dict) -> float | None:
    """``max_drop_pp`` (a classifier's, in percentage points) or ``max_drop`` (any task, in its metric's units)."""
    check_keys(raw, {"max_drop_pp", "max_drop"}, "budget")
    if len(raw) > 1:
        raise ConfigError("budget: give max_drop_pp (pp of accuracy) or max_drop (the task's metric), not both")
    key, value = next(iter(raw.items()), ("max_drop", None))
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise ConfigError(f"budget.{key}: expected a non-negative number, got {value!r}")
    return None if value is None else float(value)


def _teacher(raw: dict) -> TeacherSpec:
    teacher = build_dataclass(TeacherSpec, raw, "teacher")
    if (teacher.model is None) == (teacher.path is None):
        raise ConfigError("teacher: give either 'model' (a zoo name to train) or 'path' (a .keras file)")
    _mapping(teacher.args, "teacher.args")
    _mapping(teacher.train, "teacher.train")
    return teacher


def _stages(raw: Any, max_drop: float | None = None) -> tuple[StageSpec, ...]:
    if not isinstance(raw, list):
        raise ConfigError("stages: expected a list of one-key mappings like '- prune: {sparsity: 0.8}'")
    stages, names = [], {"teacher"}
    for i, item in enumerate(raw):
        where = f"stages[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}: expected a one-key mapping like '- prune: {{sparsity: 0.8}}'")
        (kind, options), = item.items()
        if kind not in stage_kinds():
            raise ConfigError(f"{where}: unknown stage {kind!r}; stages are {', '.join(stage_kinds())}")
        options = dict(_mapping(options or {}, f"{where}.{kind}"))
        name = options.pop("name", kind)
        if name in names:
            raise ConfigError(f"{where}.{kind}: stage name {name!r} is used twice; give it a unique 'name'")
        names.add(name)
        if max_drop is not None and "max_drop" not in options and _searches(kind, options, max_drop):
            options["max_drop"] = max_drop
        stages.append(StageSpec(kind, name, options, f"{where}.{kind}"))
    return tuple(stages)


def _searches(kind: str, options: dict, max_drop: float) -> bool:
    """Whether a stage would search under the pipeline's budget: a technique that leaves its strength unset,
    or a convert stage with ``quantize: [auto]``. Stages that fix their strength are left alone: the final
    choice weighs their artifacts."""
    if kind == "convert":
        return "auto" in (options.get("quantize") or [])

    technique = registry.techniques().get(kind)
    if technique is None or technique.strength is None:
        return False
    name, _, key = technique.strength.field.partition(".")
    field = {f.name: f for f in dataclasses.fields(technique.config)}[name]
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    given = options.get(name, default)
    return given is None if not key else key not in (given or {})


def build_dataclass(cls, raw: dict, where: str):
    """Build ``cls`` from ``raw``, naming the offending key when one is unknown or a value is invalid."""
    check_keys(raw, {f.name for f in dataclasses.fields(cls)}, where)
    try:
        return cls(**raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_keys(raw: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _child(node: Any, part: str, key: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if isinstance(node, dict):
        return node.setdefault(part, {})
    raise ConfigError(f"--set {key}: {part!r} is inside a value, not a mapping")


def _index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {key}: {part!r} is not an index of a {len(node)}-item list")
    return int(part)
