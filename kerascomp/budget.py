"""The accuracy budget: how far a result may fall below the original, and which artifact to ship within it.

A budget is in percentage points of *validation* accuracy below the baseline,
the model before any compression (for a regressor: in the units of its
validation MAE above the baseline's; see :mod:`kerascomp.tasks`): the test
split plays no part in any choice.
The strength search of a technique (:mod:`kerascomp.compress.search`), the
choice of ``convert --quantize auto`` (:mod:`kerascomp.bench.auto`) and the
pipeline's final choice all read it here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable

from kerascomp.data import Dataset
from kerascomp.tasks import CLASSIFICATION, Task
from kerascomp.training import evaluate

__all__ = ["Objective", "OBJECTIVES", "DEFAULT_OBJECTIVE", "check", "choose_within", "tie_words", "baseline_val",
           "metric_of"]


@dataclasses.dataclass(frozen=True)
class Objective:
    """What a choice minimises within the budget: how a person says it, and the bench row's number for it."""

    words: str
    key: Callable[[dict], float]


OBJECTIVES = {  # the download (gzip), the file the device maps, the work per call, the measured p50 latency
    "size": Objective("smallest (gzip)", lambda row: row["gzip_bytes"]),
    "bytes": Objective("smallest file (bytes the device maps)", lambda row: row["size_bytes"]),
    "macs": Objective("least work (MACs)", lambda row: math.inf if row.get("macs") is None else row["macs"]),
    "latency": Objective("fastest (p50)", lambda row: row["latency_ms"]["p50"]),
}
DEFAULT_OBJECTIVE = "size"


def check(metrics: dict, baseline: float, max_drop: float, task: Task = CLASSIFICATION) -> dict:
    """The budget record of one result: how far its validation metric fell below ``baseline`` and whether it holds.

    ``metric``, ``val``, ``baseline_val``, ``drop`` and ``max_drop`` are in
    the task's terms (``unit``: ``pp``, or the metric's own units); a
    classifier's record also carries the names report.json has always used
    (``val_accuracy``, ``baseline_val_accuracy``, ``drop_pp``, ``max_drop_pp``).
    """
    value = metrics[task.keys[0]]
    drop = task.drop(baseline, value)
    record = {"metric": task.metric, "unit": task.unit, "max_drop": max_drop, "baseline_val": baseline, "val": value,
              "drop": drop, "met": drop <= max_drop + 1e-9}
    if task == CLASSIFICATION:
        record.update(max_drop_pp=max_drop, baseline_val_accuracy=baseline, val_accuracy=value, drop_pp=drop)
    return record


def choose_within(rows: dict[str, dict], baseline_val: float, max_drop: float, objective: str,
                  task: Task = CLASSIFICATION) -> dict:
    """The bench row (by name) that best meets ``objective`` (see :data:`OBJECTIVES`) among those whose validation
    accuracy is within ``max_drop`` pp of ``baseline_val``.

    Returns ``chosen`` (None when nothing holds) and every ``candidate`` with
    its validation metric (``val``) and drop (``val_drop``, in the task's units;
    a classifier's also as ``val_accuracy`` and ``val_drop_pp``), gzip size,
    p50 latency and whether it is ``within``.
    For ``latency``, p50s closer than the timings' spread (p90 - p50) are a tie
    (``tied``), broken by the smaller gzip size: measured timing noise does not
    decide (every candidate of a small model ran at 0.002 ms, and float16 won).
    """
    key = OBJECTIVES[objective].key
    candidates = []
    for name, row in rows.items():
        budget = check(row, baseline_val, max_drop, task)
        candidates.append({"name": name, "val": budget["val"], "val_drop": budget["drop"],
                           **({"val_accuracy": budget["val"], "val_drop_pp": budget["drop"]} if task == CLASSIFICATION
                              else {}),
                           "gzip_bytes": row["gzip_bytes"], "size_bytes": row.get("size_bytes"), "macs": row.get("macs"),
                           "p50_ms": row["latency_ms"]["p50"], "within": budget["met"]})
    passing = [c["name"] for c in candidates if c["within"]]
    if not passing:
        return {"chosen": None, "candidates": candidates}
    best = min(passing, key=lambda name: key(rows[name]))
    if objective == "latency":  # a difference within the timing noise is no difference: the smaller file wins
        tied = [name for name in passing if key(rows[name]) <= key(rows[best]) + _noise(rows[name], rows[best])]
        best = min(tied, key=lambda name: (rows[name]["gzip_bytes"], key(rows[name])))
        return {"chosen": best, "candidates": candidates, "tied": sorted(tied) if len(tied) > 1 else []}
    return {"chosen": best, "candidates": candidates}


def metric_of(row: dict) -> float:
    """A bench row's test metric (rows written before ``metric`` existed: their accuracy)."""
    return (row.get("metric") or {}).get("value", row.get("accuracy"))


def tie_words(choice: dict) -> str:
    """What a person reads when timing noise tied the fastest candidates (empty otherwise)."""
    others = [name for name in choice.get("tied", []) if name != choice["chosen"]]
    return f" (its p50 ties with {', '.join(others)} within the timing noise; the smaller file wins)" if others else ""


def _noise(a: dict, b: dict) -> float:
    """How far apart two p50 latencies may be by chance: the larger spread (p90 - p50) of their timings."""
    return max(row["latency_ms"]["p90"] - row["latency_ms"]["p50"] for row in (a, b))


def baseline_val(meta: dict, model, data: Dataset) -> float:
    """The validation metric (the data's task's) of the model before any compression: the first step's input, as
    its sidecar recorded it on these very splits, else ``model`` measured now (a budget is spent along the whole
    chain, not per step)."""
    key = data.task.keys[0]
    history = meta.get("compression") or []
    recorded = (history[0].get("baseline") or {}).get(key) if history else None
    same_splits = json.dumps(meta.get("data"), sort_keys=True) == json.dumps(data.describe(), sort_keys=True)
    if recorded is not None and same_splits:
        return recorded
    return evaluate(model, data)[key]
