"""How much smaller can the student be? The CIFAR-10 subset, through the CLI as a user runs it.

1. The teacher: ``kerascomp train`` (zoo CNN, width 64, depth 3, crop+flip augmentation, no early stopping),
   unless ``--teacher`` gives a trained one.
2. ``kerascomp sweep`` over ``seed`` x ``student.width``: every student distilled with the distillation
   defaults (T=4, alpha=0.5, no augmentation, so the teacher's outputs are computed once) and trained from
   scratch with the same budget and data, per seed, on the local backend or on Ray Tune (``--backend ray``).
   ``--student-augment crop,flip`` augments both instead (the teacher then runs on every batch).
3. Means over seeds per student size: parameters (and the fraction of the teacher's), distilled and scratch
   test accuracy, gap closed, seconds per epoch; a plot of accuracy against parameters for both.

Development benchmark only: the data is ``../shared/data/cifar10_subset.npz``, which users do not have.

    python scripts/student_sizes_cifar10.py --data ../shared/data/cifar10_subset.npz [--teacher T.keras] \\
        [--teacher-epochs 60] [--epochs 20] [--student-augment none] [--seeds 1,2,3] \\
        [--widths 45,32,23,16,11] [--backend local|ray] [--out scripts/results]

Writes student_sizes_cifar10.json, .md and .png into --out (and the teacher and sweep under --out/work).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _cli import run, write_results

TEACHER = ("--model", "cnn", "--model-arg", "width=64", "--model-arg", "depth=3")
STUDENT = ("--student", "cnn", "--student-arg", "depth=3")
AUGMENT = "crop,flip"


def by_size(state: dict) -> list[dict]:
    """One row per student width: means (and spread) over the seeds of the sweep."""
    rows = []
    for width in sorted({p["student_args"]["width"] for p in state["points"]}, reverse=True):
        points = [p for p in state["points"] if p["student_args"]["width"] == width]
        distilled = [p["student_accuracy"] for p in points]
        scratch = [p["scratch_accuracy"] for p in points if p["scratch_accuracy"] is not None]
        gaps = [p["gap_closed"] for p in points if p["gap_closed"] is not None]
        rows.append({"width": width, "params": points[0]["student_params"],
                     "fraction": points[0]["student_params"] / state["teacher_params"], "seeds": len(points),
                     "distilled": statistics.mean(distilled), "distilled_sd": _sd(distilled),
                     "scratch": statistics.mean(scratch) if scratch else None, "scratch_sd": _sd(scratch),
                     "gap_closed": statistics.mean(gaps) if gaps else None,
                     "seconds_per_epoch": statistics.mean(p["seconds_per_epoch"] for p in points)})
    return rows


def _sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _mean_sd(mean: float, sd: float | None) -> str:
    return f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}"


def table(rows: list[dict], state: dict) -> str:
    lines = [f"Teacher: {state['teacher_params']:,} parameters, test accuracy {state['teacher_accuracy']:.4f}.", "",
             "| student width | params (of teacher) | distilled | scratch | gap closed | s/epoch | seeds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        scratch = "-" if r["scratch"] is None else _mean_sd(r["scratch"], r["scratch_sd"])
        gap = "-" if r["gap_closed"] is None else f"{r['gap_closed']:.2f}"
        lines.append(f"| {r['width']} | {r['params']:,} (1/{1 / r['fraction']:.1f}) | "
                     f"{_mean_sd(r['distilled'], r['distilled_sd'])} | {scratch} | {gap} | "
                     f"{r['seconds_per_epoch']:.1f} | {r['seeds']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], state: dict, path: Path) -> None:
    from kerascomp.report import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    params = [r["params"] for r in rows]
    ax.errorbar(params, [r["distilled"] for r in rows], [r["distilled_sd"] or 0 for r in rows], marker="o",
                capsize=3, label="distilled")
    ax.errorbar(params, [r["scratch"] for r in rows], [r["scratch_sd"] or 0 for r in rows], marker="s", capsize=3,
                label="from scratch")
    ax.axhline(state["teacher_accuracy"], color="black", ls=":", label=f"teacher ({state['teacher_params']:,})")
    ax.set_xscale("log")
    ax.set_xlabel("student parameters")
    ax.set_ylabel("test accuracy (mean ± sd over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("CIFAR-10 subset: how much smaller can the student be?")
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--teacher", help="A trained teacher .keras (default: train one)")
    parser.add_argument("--teacher-epochs", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=20, help="Student epochs (distilled and scratch alike)")
    parser.add_argument("--student-augment", default="none", help="Augmentation of the students [the distillation "
                                                                  "default: none]")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--widths", default="45,32,23,16,11", help="Student widths (~1/2 ... 1/32 of the teacher)")
    parser.add_argument("--backend", default="local", choices=("local", "ray"))
    parser.add_argument("--out", default="scripts/results")
    args = parser.parse_args()
    out = Path(args.out)
    work = out / "student_sizes_cifar10_work"
    teacher = Path(args.teacher) if args.teacher else work / "teacher.keras"
    if not teacher.exists() and run("train", *TEACHER, "--data", args.data, "--augment", AUGMENT, "--epochs",
                                    str(args.teacher_epochs), "--patience", "0", "--out", str(teacher)):
        raise SystemExit("training the teacher failed")
    if run("sweep", "--teacher", str(teacher), "--data", args.data, *STUDENT, "--augment", args.student_augment,
           "--epochs", str(args.epochs), "--patience", "0", "--grid", f"seed={args.seeds}",
           "--grid", f"student.width={args.widths}", "--backend", args.backend, "--out", str(work / "sweep")):
        raise SystemExit("the sweep failed")
    state = json.loads((work / "sweep" / "sweep.json").read_text())
    rows = by_size(state)
    write_results(out, "student_sizes_cifar10", {"teacher": str(teacher), "rows": rows, "sweep": state},
                  table(rows, state))
    plot(rows, state, out / "student_sizes_cifar10.png")


if __name__ == "__main__":
    main()
