"""Distillation on digits, measured: how much of the teacher's lead does a tiny student recover, and what
does an epoch cost with the teacher cache?

Teacher: the zoo cnn at its defaults (width 32, 66,218 params), trained with `kerascomp train`'s defaults.
Student: cnn width=4 dropout=0 (1,230 params, 1.9% of the teacher). For every seed the student is
distilled with the library defaults (``DistillConfig()``, ``default_budget()``) and trained from scratch
from the same initialisation with the same budget; ``gap_closed = (student - scratch) / (teacher - scratch)``.
Epoch time: a plain (from-scratch) student epoch vs a distillation epoch with the teacher cache and without
it, median of epochs 2.. (epoch 1 traces), runs interleaved and repeated because the machine is shared.
Sweep: students of width 2..8 distilled and from scratch, for the accuracy-vs-size plot.

    python scripts/distill_digits.py [--seeds 0,1,2] [--out scripts/results] [--no-sweep]

Writes distill_digits.json and distill_digits.md (plus distill_digits_sweep.{json,md,png}) into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from kerascomp.analysis import sweep
from kerascomp.backend import tf
from kerascomp.compress import distill
from kerascomp.data import load_data
from kerascomp.files import atomic_path, write_json
from kerascomp.report import plot_sweep
from kerascomp.training import TrainConfig, distillation, train

STUDENT, STUDENT_ARGS = "cnn", {"width": 4, "dropout": 0.0}
SWEEP_WIDTHS = (2, 3, 4, 6, 8)
TIMING_EPOCHS, TIMING_REPEATS = 15, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="scripts/results")
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    data = load_data("digits")
    teacher, teacher_metrics = train("cnn", data, TrainConfig(verbose=0))
    runs = [_seed_run(teacher, data, int(seed)) for seed in args.seeds.split(",")]
    result = {
        "machine": {"cpus": len(tf.config.list_physical_devices("CPU")), "note": "2 shared CPU cores"},
        "teacher": {"model": "cnn", "args": {}, "params": teacher_metrics["params"],
                    "test_accuracy": teacher_metrics["test_accuracy"]},
        "student": {"model": STUDENT, "args": STUDENT_ARGS, "params": runs[0]["student_params"]},
        "distill": dataclasses.asdict(distillation.DistillConfig()),
        "budget": dataclasses.asdict(distill.default_budget()),
        "seeds": runs,
        "mean": {k: statistics.mean(r[k] for r in runs) for k in ("student_accuracy", "scratch_accuracy")},
        "epoch_time": _epoch_times(teacher, data),
    }
    mean = result["mean"]
    mean["gap_closed"] = distill.gap_closed(teacher_metrics["test_accuracy"], mean["student_accuracy"],
                                            mean["scratch_accuracy"])
    mean["gap_closed_per_seed"] = statistics.mean(r["gap_closed"] for r in runs)
    if not args.no_sweep:
        result["sweep"] = _sweep(teacher, data, out)
    write_json(out / "distill_digits.json", result)
    with atomic_path(out / "distill_digits.md") as tmp:
        tmp.write_text(_markdown(result))
    print(_markdown(result))


def _seed_run(teacher, data, seed: int) -> dict:
    budget = distill.default_budget(seed=seed, verbose=0)
    _, m = distill.apply(STUDENT, data, teacher=teacher, train_config=budget, student_args=STUDENT_ARGS,
                         compare_scratch=True)
    keys = ("teacher_accuracy", "student_accuracy", "scratch_accuracy", "gap_closed", "student_params",
            "student_seconds_per_epoch", "scratch_seconds_per_epoch")
    return {"seed": seed, **{k: m[k] for k in keys}, "student_best_epoch": m["student"]["best_epoch"],
            "scratch_best_epoch": m["scratch"]["best_epoch"]}


def _epoch_times(teacher, data) -> dict:
    """Median epoch seconds (epochs 2..) of plain, cached and uncached runs, interleaved and repeated."""
    config = TrainConfig(epochs=TIMING_EPOCHS, patience=0, verbose=0)
    modes = {"plain": None, "cached": distillation.DistillConfig(teacher_cache=True),
             "uncached": distillation.DistillConfig(teacher_cache=False)}
    medians = {mode: [] for mode in modes}
    for _ in range(TIMING_REPEATS):
        for mode, settings in modes.items():
            extra = {} if settings is None else {"teacher": teacher, "distill": settings}
            _, m = train(STUDENT, data, config, model_args=STUDENT_ARGS, **extra)
            medians[mode].append(statistics.median(m["epoch_seconds"][1:]))
    seconds = {mode: statistics.median(values) for mode, values in medians.items()}
    return {"seconds_per_epoch": seconds, "runs": medians,
            "cached_over_plain": seconds["cached"] / seconds["plain"],
            "uncached_over_plain": seconds["uncached"] / seconds["plain"]}


def _sweep(teacher, data, out: Path) -> dict:
    state = sweep.sweep(teacher, data, {"student.width": SWEEP_WIDTHS}, out / "distill_digits_sweep.json",
                        student=STUDENT, student_args={"dropout": 0.0},
                        train_config=distill.default_budget(verbose=0), progress=print)
    with atomic_path(out / "distill_digits_sweep.md") as tmp:
        tmp.write_text(sweep.sweep_table(state) + "\n")
    plot_sweep(state["points"], out / "distill_digits_sweep.png", title="digits: distilled vs scratch students",
               teacher_accuracy=state["teacher_accuracy"])
    return {"points": state["points"], "scratch": state["scratch"]}


def _markdown(r: dict) -> str:
    t, s, m, e = r["teacher"], r["student"], r["mean"], r["epoch_time"]
    cfg, budget = r["distill"], r["budget"]
    lines = [
        "# Distillation on digits", "",
        f"Teacher: cnn (width 32), {t['params']:,} params, test accuracy {t['test_accuracy']:.4f}. "
        f"Student: cnn {s['args']}, {s['params']:,} params ({s['params'] / t['params']:.1%} of the teacher).",
        f"Defaults: T={cfg['temperature']}, alpha={cfg['alpha']}, augment={cfg['augment']}, teacher cache on; "
        f"{budget['epochs']} epochs, patience {budget['patience'] or 'off'}, lr {budget['learning_rate']}. "
        "Scratch: same student, same initialisation, same budget.", "",
        "| seed | teacher | distilled | scratch | gap closed | best epoch (distilled / scratch) |",
        "|---|---|---|---|---|---|",
    ]
    for run in r["seeds"]:
        lines.append(f"| {run['seed']} | {run['teacher_accuracy']:.4f} | {run['student_accuracy']:.4f} | "
                     f"{run['scratch_accuracy']:.4f} | {_fmt(run['gap_closed'])} | "
                     f"{run['student_best_epoch']} / {run['scratch_best_epoch']} |")
    lines += [f"| mean | {t['test_accuracy']:.4f} | {m['student_accuracy']:.4f} | {m['scratch_accuracy']:.4f} | "
              f"{_fmt(m['gap_closed'])} (mean of seeds {_fmt(m['gap_closed_per_seed'])}) | |", "",
              "Seconds per epoch (median of epochs 2.., median of "
              f"{TIMING_REPEATS} interleaved runs, shared 2-core CPU):", "",
              "| plain student | distilled, teacher cache | distilled, teacher every step |", "|---|---|---|",
              f"| {e['seconds_per_epoch']['plain']:.3f} | {e['seconds_per_epoch']['cached']:.3f} "
              f"({e['cached_over_plain']:.2f}x) | {e['seconds_per_epoch']['uncached']:.3f} "
              f"({e['uncached_over_plain']:.2f}x) |"]
    if "sweep" in r:
        lines += ["", "Student size sweep (distilled vs scratch, same budget):", "",
                  "| width | params | distilled | scratch | gap closed |", "|---|---|---|---|---|"]
        for p in sorted(r["sweep"]["points"], key=lambda p: p["student_params"]):
            lines.append(f"| {p['student.width']} | {p['student_params']:,} | {p['student_accuracy']:.4f} | "
                         f"{p['scratch_accuracy']:.4f} | {_fmt(p['gap_closed'])} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
