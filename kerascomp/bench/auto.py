"""``convert --quantize auto``: convert to every LiteRT mode, measure each here, keep the best within the budget.

int8 is not automatically faster. On a 2-core Xeon with AVX-512 VNNI/AMX the
seed ViT runs 2.75 ms in float32 and 7.70 ms in full int8, MobileNetV2-0.35
0.43 ms in float32, 0.34 ms in float16 and 0.55 ms in int8, while the digits
CNN in int8 is 2.7x faster than in float32. Which mode wins depends on the
model, the CPU and the thread count, so the choice is measured: every mode is
converted, run by LiteRT on this machine at the requested threads, and scored
on the *validation* split; the fastest (or smallest) file whose validation
accuracy holds ``max_drop`` is kept. The test split only reports.

Both quantizers compete: the converter's own post-training modes, and LiteRT
Quantizer's dynamic and int8 recipes (int8 with the ops XNNPACK cannot run in
integer form kept float). On the seed ViT the latter's int8 runs 1.19 ms
against the converter's 4.7 and float32's 3.3.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from kerascomp.bench.measure import bench
from kerascomp.budget import OBJECTIVES, baseline_val as original_val, choose_within
from kerascomp.data import Dataset
from kerascomp.errors import ConfigError, DataError, KerascompError, ModelError
from kerascomp.tasks import CLASSIFICATION, task_of_metric
from kerascomp.export import export
from kerascomp.files import sidecar_path

__all__ = ["convert_auto", "table", "AUTO_CANDIDATES"]

# (mode, backend) pairs. int16x8 is left out: it runs on LiteRT's reference kernels (digits CNN 0.67 ms vs 0.011
# dynamic, 2-core AMD EPYC) at int8's size, so it never wins on latency or size, and TensorFlow 2.21's converter
# aborts the whole process (SIGABRT, no message) converting the seed ViT to it. Weight-only recipes compute in float
# with a DEQUANTIZE per weight outside XNNPACK (digits CNN int4 weights 0.10 ms vs 0.037 fp32): never faster, and
# float16 is as small per accuracy point for these models.
AUTO_CANDIDATES = (("none", "converter"), ("float16", "converter"), ("dynamic", "converter"), ("int8", "converter"),
                   ("dynamic", "litert-quantizer"), ("int8", "litert-quantizer"))


def convert_auto(
    model,
    out: str | os.PathLike,
    *,
    data: Dataset | None,
    meta: dict | None = None,
    source: str | os.PathLike | None = None,
    baseline_val: float | None = None,
    max_drop: float = 1.0,
    objective: str = "latency",
    threads: int = 1,
    runs: int = 100,
    candidates: tuple[tuple[str, str], ...] = AUTO_CANDIDATES,
    calibration_size: int = 500,
    batch_size: int | None = None,
    echo: Callable[[str], None] | None = None,
    strict: bool = True,
) -> dict:
    """Convert ``model`` to every (mode, backend) of ``candidates``, bench each, and write the chosen one to ``out``.

    ``baseline_val`` is the validation accuracy drops are measured against;
    None: the original model's (:func:`kerascomp.budget.baseline_val`,
    from ``meta``'s compression history or ``model`` itself).
    Returns ``chosen`` (a candidate name: the mode, with ``@litert-quantizer``
    for that backend), ``candidates`` (one per file, with ``within``),
    ``skipped`` (candidates that failed to convert, with why), the ``bench``
    document, and the budget and objective. When no candidate holds the budget,
    nothing is written, unless ``strict`` is False (the pipeline's way): then
    the most accurate candidate is kept, with a warning and ``met`` False.
    """
    if data is None:
        raise DataError("--quantize auto measures every mode on validation data: give --data")
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective: use one of {', '.join(OBJECTIVES)}, got {objective!r}")
    out, echo = Path(out), echo or (lambda text: None)
    if out.suffix != ".tflite":
        raise ConfigError(f"--quantize auto writes a .tflite file, not {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".auto-") as work:
        files, skipped = {}, {}
        for mode, backend in candidates:
            name = mode if backend == "converter" else f"{mode}@{backend}"
            path = Path(work) / f"{name}.tflite"  # the bench row's name is the file's stem
            echo(f"auto: converting {name}")
            try:
                export(model, path, quantize=mode, data=data, meta=meta, calibration_size=calibration_size,
                       source=source, batch_size=batch_size, backend=backend)
            except KerascompError as e:
                skipped[name] = str(e)
                continue
            files[name] = path
        if not files:
            reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items())
            raise ModelError(f"--quantize auto: no candidate converted ({reasons})")
        echo(f"auto: measuring {len(files)} files at {threads} thread(s)")
        document = bench(list(files.values()), data, threads=(threads,), runs=runs, warmup=max(1, runs // 10))
        rows = {row["name"]: row for row in document["results"]}
        if baseline_val is None:
            baseline_val = original_val(meta or {}, model, data)
        choice = choose_within(rows, baseline_val, max_drop, objective, data.task)
        met = choice["chosen"] is not None
        if not met:
            best, task = min(choice["candidates"], key=lambda c: c["val_drop"]), data.task
            message = (f"--quantize auto: no candidate holds --max-drop {task.budget(max_drop)} (the best, "
                       f"{best['name']}, loses {task.amount(best['val_drop'])} of validation {task.metric})")
            if strict:
                raise ModelError(f"{message}; nothing was written")
            echo(f"Warning: {message}; keeping {best['name']}")
            choice["chosen"] = best["name"]
        chosen = files[choice["chosen"]]
        shutil.move(sidecar_path(chosen), sidecar_path(out))  # same folder as out: a rename, never a half file
        os.replace(chosen, out)
    return {"chosen": choice["chosen"], "tied": choice.get("tied", []), "met": met,
            "candidates": choice["candidates"], "skipped": skipped,
            "bench": document, "objective": objective, "max_drop": max_drop, "baseline_val": baseline_val,
            "metric": data.task.metric, "threads": threads,
            **({"max_drop_pp": max_drop, "baseline_val_accuracy": baseline_val} if data.task == CLASSIFICATION else {})}


def table(result: dict) -> str:
    """The candidates as a Markdown table, the chosen one marked."""
    metric = result["metric"]
    task = task_of_metric(metric)
    unit = " (pp)" if task.percent else ""
    lines = [f"| candidate | val {metric} | val drop{unit} | gzip KB | p50 ms | within budget |", "|---|---|---|---|---|---|"]
    for c in result["candidates"]:
        mark = " **(chosen)**" if c["name"] == result["chosen"] else ""
        lines.append(f"| {c['name']}{mark} | {c['val']:.4f} | {task.amount(c['val_drop'], signed=True, unit=False)} | "
                     f"{c['gzip_bytes'] / 1024:.1f} | {c['p50_ms']:.3f} | {'yes' if c['within'] else 'no'} |")
    lines += [f"| {name} | skipped: {why} | | | | |" for name, why in result["skipped"].items()]
    return "\n".join(lines)
