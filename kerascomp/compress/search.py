"""Find the strongest setting of a technique that holds an accuracy budget.

A technique's registered :class:`~kerascomp.compress.registry.Strength` names its knob
(sparsity, number of clusters, student width) and a ladder of values from
weakest to strongest. The search climbs the ladder. Where the technique can
start from its own output (pruning a pruned model further, clustering a
clustered one into fewer values) each try starts from the last model that
passed, a warm restart that costs one fine-tuning per step; otherwise each try
starts from the input.

A failure alone does not end the climb. On a validation split of a few
hundred images one or two images decide a sub-point budget, and measured on
the digits teacher such a fluke stopped the climb at 50-62.5% sparsity where
the next steps passed (``scripts/prune_qat_digits.py``). The climb stops at
two failures in a row, at one clearly over the budget (more than twice
it), or at a step the model cannot reach (:class:`~kerascomp.errors.Unreachable`:
a shrink below its smallest form), which ends the ladder. One bisection step between the strongest pass and the failed step above
it refines the answer. Every try is recorded and the strongest passing model
is kept, also when Ctrl-C or SIGTERM stops the climb (:class:`~kerascomp.errors.Interrupted`
carries it, with the tries so far, to whoever saves it).

The budget is in percentage points of *validation* accuracy below the
baseline (the model before any compression); the test split plays no part.
"""

from __future__ import annotations

import gzip
import time
from typing import Callable

import numpy as np

from kerascomp.budget import check
from kerascomp.compress.registry import Technique
from kerascomp.data import Dataset
from kerascomp.errors import Interrupted, Unreachable
from kerascomp.tasks import CLASSIFICATION

__all__ = ["search", "weights_gzip_bytes"]


def weights_gzip_bytes(model) -> int:
    """gzip size of the model's weights as float32: zeros and repeated values show, as in a shipped file."""
    raw = b"".join(np.asarray(w, dtype=np.float32).tobytes() for w in model.get_weights())
    return len(gzip.compress(raw, compresslevel=6))


def search(technique: Technique, model, data: Dataset, config, *, max_drop: float, baseline: float,
           echo: Callable[[str], None] | None = None, **kwargs) -> tuple[object | None, dict, dict]:
    """Climb ``technique``'s strength ladder within ``max_drop`` pp of ``baseline`` validation accuracy.

    Returns the strongest passing model (None when no step passes), its
    metrics, and the search record: ``field``, ``tries`` (each with
    ``strength``, ``val_accuracy``, ``drop_pp``, ``passed``, ``params``,
    ``weights_gzip_bytes``, ``seconds``, ``warm_start``), ``chosen`` and
    ``unreachable`` (the first step the model cannot reach, with why, or None).
    A first step the model cannot reach raises.
    """
    strength, task = technique.strength, data.task
    echo = echo or (lambda text: None)
    tries, best = [], (None, None, None)  # (strength, model, metrics)
    first_fail, inputs, unreachable = None, {}, {}

    def attempt(value, start, warm):
        """One try: (model, metrics, passed), or passed None for a step the model cannot reach."""
        begun = time.perf_counter()
        echo(f"{technique.name}: trying {strength.field}={value}" + (" (from the last passing model)" if warm else ""))
        try:
            result, metrics = technique.apply(start, data, strength.set(config, value), **kwargs)
        except Unreachable as error:
            if not tries:  # not even the weakest step: nothing to search
                raise
            echo(f"{technique.name}: {strength.field}={value} cannot be reached: {error}")
            unreachable.setdefault("strength", value)
            unreachable.setdefault("why", str(error))
            return None, None, None
        inputs.setdefault("baseline", metrics.get("baseline"))  # the first try starts from the input
        budget = check(metrics, baseline, max_drop, task)  # the search record holds baseline and budget
        record = {"strength": value, **{k: budget[k] for k in ("val", "drop", "val_accuracy", "drop_pp") if k in budget},
                  "passed": budget["met"], "params": int(result.count_params()),
                  "weights_gzip_bytes": weights_gzip_bytes(result), "seconds": time.perf_counter() - begun,
                  "warm_start": warm}
        tries.append(record)
        echo(f"{technique.name}: {strength.field}={value}: val {task.metric} {record['val']:.4f}, drop "
             f"{task.amount(record['drop'])} (budget {task.budget(max_drop)}) -> "
             + ("pass" if record["passed"] else "fail"))
        return result, metrics, record["passed"]

    def outcome():
        """(strongest passing model or None, its metrics, the search record): at the end, or where stopped."""
        record = {"field": strength.field, "metric": task.metric, "max_drop": max_drop, "baseline_val": baseline,
                  "tries": tries, "chosen": best[0], "unreachable": unreachable or None}
        if task == CLASSIFICATION:  # the names report.json has always used
            record.update(max_drop_pp=max_drop, baseline_val_accuracy=baseline)
        metrics = {**best[2], "baseline": inputs["baseline"]} if best[2] is not None else {}
        return best[1], metrics, record

    try:
        for value in strength.steps:
            warm = strength.warm_start and best[1] is not None
            result, metrics, passed = attempt(value, best[1] if warm else model, warm)
            if passed:
                best, first_fail = (value, result, metrics), None
                continue
            # two fails in a row, one clearly over, or the end of what the model can reach
            stop = passed is None or first_fail is not None or tries[-1]["drop"] > 2 * max_drop
            first_fail = value if first_fail is None else first_fail
            if stop:
                break
        if best[1] is not None and first_fail is not None:
            middle = strength.between(best[0], first_fail)
            if middle is not None:
                warm = strength.warm_start
                result, metrics, passed = attempt(middle, best[1] if warm else model, warm)
                if passed:
                    best = (middle, result, metrics)
    except KeyboardInterrupt:
        raise Interrupted(f"{technique.name}: search stopped after {len(tries)} tries", kept=outcome()) from None
    return outcome()
